"""The status listener end to end: real proxy processes (2 workers and the monitor), real
upstreams and clients, and the figures checked against a known load: /metrics (parsed by
prometheus_client's own parser), /status, active health checks and the admin actions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from conftest import Proc, Spawn
from ops_helpers import Background, Upstream, children, wait_for, who, write_config
from proxy_helpers import closed_port
from wsgate.proxy.master import STARTUP_GRACE

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
STATUS = 'status_listen = "127.0.0.1:0"\nworker_processes = 2'


def start(wsgate: Spawn, config: Path) -> tuple[Proc, int, str]:
    proxy = wsgate(["proxy", "-c", str(config)])
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)").group(1))
    status = proxy.expect(r"Status page on (http://\S+)/").group(1)
    return proxy, port, status


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None
          ) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metrics(status: str) -> Samples:
    code, body = fetch(status + "/metrics")
    assert code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(value for (sample, found), value in samples.items()
               if sample == name and set(labels.items()) <= set(found))


def settle(status: str, check: Any, what: str, timeout: float = 10.0) -> Samples:
    """The metrics once ``check(samples)`` holds (workers report every second)."""
    found: list[Samples] = []

    def ready() -> bool:
        found[:] = [metrics(status)]
        return bool(check(found[0]))

    wait_for(ready, timeout, what)
    return found[0]


def admin(status: str, action: str, query: str = "") -> tuple[int, dict[str, Any]]:
    code, body = fetch(f"{status}/admin/{action}{'?' + query if query else ''}", "POST")
    return code, json.loads(body)


def test_open_tunnels_bytes_and_closes_add_up_over_workers(wsgate: Spawn, tmp_path: Path,
                                                         bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address, b.address], extra=STATUS)
    proxy, port, status = start(wsgate, config)
    assert len(children(proxy.popen.pid)) == 3  # two workers and the monitor

    async def open_seven() -> list[ClientConnection]:
        clients = []
        for _ in range(7):
            ws = await connect(f"ws://127.0.0.1:{port}/", ping_interval=None,
                               compression=None)
            await ws.send("hello")  # 11 bytes upstream (masked), "A:hello" 9 back
            assert (await ws.recv()).endswith(":hello")
            clients.append(ws)
        return clients

    clients = bg.run(open_seven())
    samples = settle(status, lambda s: total(s, "wsgate_tunnels_open") == 7, "7 open")
    for upstream in (a, b):
        assert total(samples, "wsgate_tunnels_open", server=upstream.address) == \
            upstream.connections
    assert a.connections and b.connections  # round robin over both, across two workers
    assert total(samples, "wsgate_tunnel_bytes_total", direction="to_upstream") == 7 * 11
    assert total(samples, "wsgate_tunnel_bytes_total", direction="to_client") == 7 * 9
    assert total(samples, "wsgate_http_requests_total", status="101") == 7
    assert total(samples, "wsgate_upstream_server_up") == 2

    async def close_three() -> None:
        for ws in clients[:3]:
            await ws.close()

    bg.run(close_three())
    samples = settle(status, lambda s: total(s, "wsgate_tunnels_open") == 4, "4 open")
    assert total(samples, "wsgate_tunnels_closed_total") == 3
    assert total(samples, "wsgate_tunnels_closed_total", reason="client") == 3
    assert total(samples, "wsgate_tunnel_duration_seconds_count") == 3
    assert total(samples, "wsgate_upstream_connect_seconds_count") == 7
    # The status listener is not on the proxied port: /metrics there goes upstream.
    assert b"wsgate_build_info" not in fetch(f"http://127.0.0.1:{port}/metrics")[1]

    # /status says the same, as JSON.
    document = json.loads(fetch(status + "/status")[1])
    assert document["tunnels"] == {"open": 4, "closed": 3}
    servers = {s["address"]: s for u in document["upstreams"] for s in u["servers"]}
    assert set(servers) == {a.address, b.address}
    assert sum(s["open"] for s in servers.values()) == 4
    assert len(document["workers"]) == 2
    assert [close["reason"] for close in document["recent_closes"]] == ["client"] * 3
    bg.run(close_three_more(clients[3:]))


async def open_one(port: int) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{port}/", ping_interval=None)


async def close_three_more(clients: list[ClientConnection]) -> None:
    for ws in clients:
        await ws.close()


def test_requests_counted_by_status_and_rejections_by_cause(wsgate: Spawn, tmp_path: Path,
                                                          bg: Background) -> None:
    def refuse(connection: object, request: object) -> Response:
        return Response(426, "Upgrade Required", Headers([("Content-Length", "0")]))

    async def start_refusing() -> int:
        server = await serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0,
                             process_request=refuse)
        return int(server.sockets[0].getsockname()[1])

    a = bg.run(Upstream("A").start())
    refusing = bg.run(start_refusing())
    config = tmp_path / "wsgate.toml"
    config.write_text(f'listen = ["127.0.0.1:0"]\n{STATUS}\n'
                      f'[upstream.ok]\nserver = ["{a.address}"]\n'
                      f'[upstream.no]\nserver = ["127.0.0.1:{refusing}"]\n'
                      '[location."/"]\nproxy_pass = "http://ok"\n'
                      '[location."/refused"]\nproxy_pass = "http://no"\n')
    _proxy, port, status = start(wsgate, config)
    assert who(port) == "A"
    handshake = (b"GET /refused HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    bad_key = handshake.replace(b"/refused", b"/").replace(b"dGhlIHNhbXBsZSBub25jZQ==",
                                                           b"short")
    for request, expected in ((handshake, b" 426 "), (bad_key, b" 400 ")):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            assert expected in sock.recv(4096).split(b"\r\n")[0] + b" "
    samples = settle(status, lambda s: total(s, "wsgate_http_requests_total") == 3,
                     "3 responses")
    for code in ("101", "426", "400"):
        assert total(samples, "wsgate_http_requests_total", status=code) == 1, code
    assert total(samples, "wsgate_handshake_rejections_total", cause="upstream_refused") == 1
    assert total(samples, "wsgate_handshake_rejections_total", cause="bad_handshake") == 1


def test_health_checks_take_a_dead_server_out_and_bring_it_back(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    interval, fails = 0.3, 2
    write_config(config, [a.address, b.address], extra=STATUS,
                 upstream=f'[upstream.backend.health_check]\ninterval = "{interval}s"\n'
                          f'fails = {fails}\npasses = 2\nuri = "/health"\n')
    _proxy, port, status = start(wsgate, config)
    settle(status, lambda s: total(s, "wsgate_health_checks_total", result="pass") >= 4,
           "first probes")
    assert {who(port) for _ in range(4)} == {"A", "B"}
    assert b.server is not None
    bg.run(close_server(b))
    killed = time.monotonic()
    samples = settle(status, lambda s: total(s, "wsgate_upstream_server_up",
                                             server=b.address) == 0, "B out")
    assert time.monotonic() - killed < interval * fails + 1.5
    assert total(samples, "wsgate_upstream_server_up", server=a.address) == 1
    # New connections avoid it, and not one handshake fails (every who() would raise).
    assert {who(port) for _ in range(20)} == {"A"}
    bg.run(b.restart())
    settle(status, lambda s: total(s, "wsgate_upstream_server_up", server=b.address) == 1,
           "B back")
    wait_for(lambda: who(port) == "B", what="a connection to B again")
    document = json.loads(fetch(status + "/status")[1])
    health = [s["health"] for u in document["upstreams"] for s in u["servers"]]
    assert all(item["healthy"] for item in health)


def test_a_failing_health_check_cuts_no_open_tunnel(wsgate: Spawn, tmp_path: Path,
                                                    bg: Background) -> None:
    sick = {"now": False}

    def health(connection: object, request: Any) -> Response | None:
        if request.path == "/health" and sick["now"]:
            return Response(503, "Service Unavailable", Headers([("Content-Length", "0")]))
        return None

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(f"S:{message}")

    async def start_server() -> int:
        server = await serve(echo, "127.0.0.1", 0, process_request=health)
        return int(server.sockets[0].getsockname()[1])

    a = bg.run(Upstream("A").start())
    s_port = bg.run(start_server())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address, f"127.0.0.1:{s_port}"], extra=STATUS,
                 upstream='[upstream.backend.health_check]\ninterval = "0.2s"\nfails = 1\n'
                          'uri = "/health"\n')
    _proxy, port, status = start(wsgate, config)

    async def open_on_s() -> ClientConnection:
        while True:  # round robin: every other connection
            ws = await open_one(port)
            await ws.send("x")
            if await ws.recv() == "S:x":
                return ws
            await ws.close()

    ws = bg.run(open_on_s())
    sick["now"] = True
    settle(status, lambda s: total(s, "wsgate_upstream_server_up",
                                   server=f"127.0.0.1:{s_port}") == 0, "S unhealthy")
    assert {who(port) for _ in range(4)} == {"A"}

    async def still_open() -> str:
        await ws.send("y")
        return str(await ws.recv())

    assert bg.run(still_open()) == "S:y"  # its tunnel is untouched
    bg.run(ws.close())


async def close_server(upstream: Upstream) -> None:
    assert upstream.server is not None
    upstream.server.close()
    await upstream.server.wait_closed()


def test_admin_drain_down_up_and_reload(wsgate: Spawn, tmp_path: Path,
                                        bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address, b.address], extra=STATUS,
                 upstream='drain_timeout = "0.5s"')
    _proxy, port, status = start(wsgate, config)
    spare = f"127.0.0.1:{closed_port()} down"

    async def open_some() -> list[ClientConnection]:
        return [await connect(f"ws://127.0.0.1:{port}/", ping_interval=None)
                for _ in range(6)]

    clients = bg.run(open_some())
    settle(status, lambda s: total(s, "wsgate_tunnels_open") == 6, "6 open")
    code, answer = admin(status, "drain", f"server={b.address}")
    assert code == 200, answer
    on_b = b.connections  # round robin in each worker: at least 2 of the 6
    assert on_b >= 2
    assert answer == {"ok": True, "action": "drain", "upstream": "backend",
                      "server": b.address, "state": "draining", "open": on_b}
    wait_for(lambda: len(b.close_codes) == on_b, what="B's tunnels to close")
    wait_for(lambda: sum(ws.close_code is not None for ws in clients) == on_b,
             what="their clients to see the close")
    closed = [ws.close_code for ws in clients if ws.close_code is not None]
    assert closed == [1001] * on_b
    samples = settle(status, lambda s: total(s, "wsgate_tunnels_closed_total",
                                             reason="drain") == on_b, "B's drained")
    assert total(samples, "wsgate_tunnels_open", server=a.address) == 6 - on_b
    assert {who(port) for _ in range(6)} == {"A"}
    assert admin(status, "up", f"server={b.address}&upstream=backend")[1]["state"] == "up"
    wait_for(lambda: who(port) == "B", what="B to take connections again")
    assert admin(status, "down", f"server={a.address}")[1]["state"] == "down"
    wait_for(lambda: {who(port) for _ in range(4)} == {"B"}, what="only B")
    assert sum(ws.close_code is None for ws in clients) == 6 - on_b  # "down" cuts nothing

    # Mistakes get a JSON answer that says what is wrong.
    assert admin(status, "drain", "server=127.0.0.1:1")[0] == 404
    assert admin(status, "drain")[0] == 400
    assert admin(status, "explode")[0] == 404
    assert fetch(status + "/admin/drain")[0] == 405
    assert fetch(f"{status}/admin/reload", "POST", {"Origin": "http://evil.example"})[0] == 403

    # Reload: a good file is taken (an admin's mark on a server it keeps stays), a
    # broken one is refused with the reason.
    write_config(config, [a.address, b.address, spare], extra=STATUS)
    code, answer = admin(status, "reload")
    assert (code, answer) == (200, {"ok": True, "error": None})
    assert {who(port) for _ in range(4)} == {"B"}
    admin(status, "up", f"server={a.address}")
    write_config(config, [a.address], extra=STATUS)
    assert admin(status, "reload") == (200, {"ok": True, "error": None})
    assert {who(port) for _ in range(4)} == {"A"}
    config.write_text(config.read_text().replace("worker_processes = 2",
                                                 'worker_processes = "two"'))
    code, answer = admin(status, "reload")
    assert code == 409 and not answer["ok"] and "worker_processes" in answer["error"]
    samples = metrics(status)
    assert total(samples, "wsgate_reloads_total", result="success") == 2
    assert total(samples, "wsgate_reloads_total", result="failure") == 1
    bg.run(close_three_more(clients))


def test_a_dead_monitor_is_replaced_and_goes_on_from_where_it_was(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    proxy = wsgate(["proxy", "--listen", "127.0.0.1:0", "--upstream", a.address,
                    "--upstream", b.address, "--status", "127.0.0.1:0"])
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)").group(1))
    began = time.monotonic()  # the master's start-up began before it said so
    status = proxy.expect(r"Status page on (http://\S+)/").group(1)
    assert {who(port), who(port)} == {"A", "B"}
    settle(status, lambda s: total(s, "wsgate_http_requests_total", status="101") == 2,
           "two requests")

    def pids() -> tuple[int, int]:
        workers = [int(w["pid"]) for w in json.loads(fetch(status + "/status")[1])["workers"]]
        monitor = next((pid for pid in children(proxy.popen.pid) if pid not in workers), 0)
        return (workers or [0])[0], monitor  # none until a new worker's first report

    # A worker killed outright: its counts stay (the monitor keeps what it last said).
    worker, monitor = pids()
    time.sleep(max(0.0, began + STARTUP_GRACE + 0.2 - time.monotonic()))  # else: "at start-up"
    os.kill(worker, signal.SIGKILL)
    proxy.expect("worker process .* exited on signal 9; started", stream="err")
    wait_for(lambda: len(children(proxy.popen.pid)) == 2 and pids()[0] not in (0, worker),
             what="a new worker")
    assert admin(status, "down", f"server={b.address}")[0] == 200
    time.sleep(2.5)  # the monitor tells the master its state within a second or two
    os.kill(monitor, signal.SIGKILL)
    proxy.expect("monitor process .* exited on signal 9; starting another", stream="err")
    wait_for(lambda: len(children(proxy.popen.pid)) == 2 and pids()[1] not in (0, monitor),
             what="a new monitor")
    # The new one has the dead worker's counts and the admin's mark.
    samples = settle(status, lambda s: total(s, "wsgate_http_requests_total",
                                             status="101") == 2, "the counts kept")
    assert total(samples, "wsgate_upstream_server_up", server=b.address) == 0
    assert {who(port) for _ in range(4)} == {"A"}


@pytest.mark.parametrize("value", ['"127.0.0.1:9145 ssl"', '"nowhere"'])
def test_status_listen_mistakes_name_the_key(tmp_path: Path, value: str) -> None:
    from conftest import run_wsgate

    config = tmp_path / "wsgate.toml"
    write_config(config, ["127.0.0.1:1"], extra=f"status_listen = {value}")
    done = run_wsgate("proxy", "-c", str(config), "--check")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "status_listen" in done.stderr


def test_the_page_in_chromium_names_each_server_and_updates_itself(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    from browser import Chromium, require_chromium

    path = require_chromium()
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address, b.address], extra=STATUS)
    _proxy, port, status = start(wsgate, config)
    with Chromium(path) as browser:
        browser.set_viewport(390, 844, mobile=True)
        browser.goto(status + "/")
        browser.wait_for("document.getElementById('connection').textContent === 'live'")
        for upstream in (a, b):
            row = f"document.querySelector('[data-server=\"{upstream.address}\"]')"
            assert browser.wait_for(f"{row} && {row}.textContent")
        assert browser.evaluate("document.getElementById('tunnels-open').textContent") == "0"
        updates = browser.evaluate("Number(document.body.dataset.updates)")
        ws = bg.run(open_one(port))
        browser.wait_for("document.getElementById('tunnels-open').textContent === '1'")
        assert browser.evaluate("Number(document.body.dataset.updates)") > updates
        assert browser.evaluate("document.documentElement.scrollWidth") <= 391
        assert browser.page_errors == []
        bg.run(ws.close())
