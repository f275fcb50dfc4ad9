"""The visibility pieces in-process: why a tunnel ended (fake transports), a worker's
counts, their sum over workers, the admin's marks, the exposition, and the status
listener's HTTP (a fake transport). The end-to-end tests are in test_status.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakes import FakeTransport
from test_tunnel import open_tunnel, settle
from wsgate.proxy import marks, report, status_server
from wsgate.proxy.config import ProxyConfig, ServerConfig, UpstreamConfig
from wsgate.proxy.exchange import Exchange
from wsgate.proxy.health import ServerHealth
from wsgate.proxy.http1 import RequestHead
from wsgate.proxy.stats import WorkerStats, rejection_cause
from wsgate.proxy.totals import Totals
from wsgate.proxy.tunnel import Why

CLOSE_1000 = b"\x88\x02\x03\xe8"
MASKED_CLOSE = b"\x88\x82abcd" + bytes(x ^ y for x, y in zip(b"\x03\xe8", b"ab", strict=True))


# -- why a tunnel ended --------------------------------------------------------------------


def ended(steps: Any) -> Why | None:
    async def main() -> Why | None:
        rig = open_tunnel(read_timeout=0.0)
        steps(rig)
        await settle()
        return rig.tunnel.reason

    return asyncio.run(main())


def test_the_client_began_when_nothing_follows_the_upstreams_close() -> None:
    def steps(rig: Any) -> None:
        rig.client.feed(MASKED_CLOSE)      # the client's Close
        rig.upstream.feed(CLOSE_1000)      # the server's answer
        rig.upstream.feed_eof()            # and the server closes TCP first
    assert ended(steps) is Why.CLIENT


def test_the_upstream_began_when_the_client_answers_its_close() -> None:
    def steps(rig: Any) -> None:
        rig.upstream.feed(CLOSE_1000)
        rig.client.feed(MASKED_CLOSE)      # the client's answer
        rig.upstream.feed_eof()
    assert ended(steps) is Why.UPSTREAM


def test_without_close_frames_the_side_that_ended_first_began() -> None:
    assert ended(lambda rig: rig.client.feed_eof()) is Why.CLIENT
    assert ended(lambda rig: rig.upstream.feed_eof()) is Why.UPSTREAM
    assert ended(lambda rig: rig.client.reset()) is Why.ERROR


def test_going_away_and_timeouts_name_themselves_and_the_first_cause_wins() -> None:
    def drained(rig: Any) -> None:
        rig.tunnel.going_away(1001, "x", Why.DRAIN)
        rig.upstream.feed_eof()
    assert ended(drained) is Why.DRAIN

    async def idle() -> Why | None:
        rig = open_tunnel(read_timeout=0.02)
        await asyncio.sleep(0.1)
        return rig.tunnel.reason

    assert asyncio.run(idle()) is Why.IDLE_TIMEOUT

    async def stuck() -> Why | None:
        rig = open_tunnel(send_timeout=0.02)
        rig.client.block()
        await asyncio.sleep(0.1)
        return rig.tunnel.reason

    assert asyncio.run(stuck()) is Why.SEND_TIMEOUT


# -- a worker's counts ------------------------------------------------------------------------


def exchange(status: int, upgrade: bool, cause: str = "") -> Exchange:
    headers = [(b"Host", b"x")]
    if upgrade:
        headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    made = Exchange(RequestHead(b"GET", b"/", "1.1", headers), False, 0.0, 0.0)
    made.status, made.cause = status, cause
    return made


def test_responses_and_rejections_are_counted_once_each() -> None:
    stats = WorkerStats()
    for status, upgrade, cause in ((101, True, ""), (400, True, ""), (404, True, ""),
                                   (426, True, "upstream_refused"), (200, False, ""),
                                   (502, False, "no_upstream")):
        stats.response(exchange(status, upgrade, cause))
    assert stats.requests == {101: 1, 400: 1, 404: 1, 426: 1, 200: 1, 502: 1}
    assert stats.rejections == {"bad_handshake": 1, "no_location": 1,
                                "upstream_refused": 1}
    assert rejection_cause(exchange(499, True)) == "client_gone"
    assert rejection_cause(exchange(502, True)) == "proxy_error"


def test_a_tunnel_handed_over_is_counted_once_over_both_workers() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.client.feed(b"x" * 10)
        rig.upstream.feed(b"\x81\x01y")
        old = WorkerStats()
        old.moved(rig.tunnel, "g", "s:1", (0, 0))  # it leaves the old worker with 10 and 3
        new = WorkerStats()
        rig.client.feed(b"z" * 5)                   # 5 more in the new worker
        counted = (10, 3)
        snapshot = new.snapshot([(rig.tunnel, "g", "s:1", counted)])
        assert old.bytes == {("g", "s:1"): [10, 3]}
        assert snapshot["bytes"] == [["g", "s:1", 5, 0]]
        new.tunnel_closed(rig.tunnel, "g", "s:1", counted, 1.0, "client")
        assert new.bytes == {("g", "s:1"): [5, 0]}
        assert new.snapshot([])["recent"][0]["bytes_to_upstream"] == 15  # the whole tunnel

    asyncio.run(main())


def snapshot(pid: int, requests: int, open_count: int, to_upstream: int) -> dict[str, Any]:
    return {"pid": pid, "requests": {"101": requests}, "rejections": {},
            "closed": [["g", "s:1", "client", 1]], "bytes": [["g", "s:1", to_upstream, 1]],
            "open": [["g", "s:1", open_count]],
            "histograms": {}, "recent": [{"reason": "client"}], "cpu_seconds": 0.0,
            "rss_bytes": 0}


def test_totals_add_workers_and_keep_what_an_exited_one_counted() -> None:
    totals = Totals()
    totals.update(snapshot(1, 3, 2, 100))
    totals.update(snapshot(2, 4, 5, 50))
    counts = totals.tick(0.0)
    assert (counts.requests, counts.tunnels_open, counts.bytes) == (
        {"101": 7}, 7, {("g", "s:1"): [150, 2]})
    totals.update(snapshot(1, 5, 1, 300))  # later counts replace earlier ones
    totals.gone(2)                          # its counts stay, its open tunnels do not
    counts = totals.tick(2.0)
    assert (counts.requests, counts.tunnels_open, counts.bytes[("g", "s:1")]) == (
        {"101": 9}, 1, [350, 2])
    assert totals.rates["bytes_to_upstream"] == 100.0  # 200 more bytes in 2 s
    assert totals.rates["tunnels_opened"] == 1.0
    assert len(totals.recent) == 3


# -- marks and the exposition ----------------------------------------------------------------


CONFIG = ProxyConfig(upstreams={
    "a": UpstreamConfig("a", (ServerConfig("h", 1), ServerConfig("h", 2, down=True))),
    "b": UpstreamConfig("b", (ServerConfig("h", 1),)),
})


def test_an_admin_names_a_server_and_marks_it() -> None:
    with pytest.raises(marks.NoSuchServer, match="several upstreams"):
        marks.find(CONFIG, None, "h:1")
    with pytest.raises(marks.NoSuchServer, match="no upstream named 'c'"):
        marks.find(CONFIG, "c", "h:1")
    with pytest.raises(marks.NoSuchServer, match="no server 'h:9'"):
        marks.find(CONFIG, "a", "h:9")
    assert marks.find(CONFIG, None, "h:2") == ("a", "h:2")
    found = marks.Marks()
    found.act("drain", ("a", "h:1"))
    sick = {("b", "h:1"): ServerHealth(healthy=False)}
    assert found.marks(CONFIG, sick) == {"a": {"h:1": "drain"}, "b": {"h:1": "unhealthy"}}
    found.act("up", ("a", "h:1"))
    assert found.marks(CONFIG, {}) == {}
    assert [marks.state(down, mark) for down, mark in (
        (False, None), (True, None), (False, "down"), (False, "drain"),
        (False, "unhealthy"))] == ["up", "down", "down", "draining", "unhealthy"]


def view() -> report.View:
    totals = Totals()
    totals.update(snapshot(1, 3, 2, 100))
    return report.View(
        config=CONFIG, counts=totals.tick(0.0), marks={"a": {"h:1": "down"}}, health={},
        admin={("a", "h:1"): "down"}, rates=totals.rates, recent=[], reloads={"success": 1,
                                                                              "failure": 0},
        processes=[report.Process("worker", 1, 1.5, 1000, 2)], listeners=[], time=0.0,
        uptime=1.0)


def test_the_exposition_parses_and_lists_every_server() -> None:
    body, content_type = report.metrics(view())
    assert content_type.startswith("text/plain")
    families = {family.name: family for family in
                text_string_to_metric_families(body.decode())}
    up = {sample.labels["server"] + "@" + sample.labels["upstream"]: sample.value
          for sample in families["wsgate_upstream_server_up"].samples}
    # s:1 in g is not configured (a reload removed it) but still has open tunnels.
    assert up == {"h:1@a": 0.0, "h:2@a": 0.0, "h:1@b": 1.0, "s:1@g": 0.0}
    opened = {sample.labels["server"] + "@" + sample.labels["upstream"]: sample.value
              for sample in families["wsgate_tunnels_open"].samples}
    assert opened == {"h:1@a": 0.0, "h:2@a": 0.0, "h:1@b": 0.0, "s:1@g": 2.0}
    assert "wsgate_tunnel_duration_seconds" in families


def test_the_document_shows_states_and_a_removed_server_with_tunnels() -> None:
    document = report.document(view())
    servers = {(u["name"], s["address"]): s for u in document["upstreams"]
               for s in u["servers"]}
    assert servers["a", "h:1"]["state"] == "down" and servers["a", "h:1"]["admin"] == "down"
    assert servers["a", "h:2"]["state"] == "down" and servers["a", "h:2"]["configured_down"]
    assert servers["g", "s:1"]["open"] == 2  # removed by a reload, its tunnels still open
    assert document["tunnels"] == {"open": 2, "closed": 1}
    json.dumps(document)


# -- the status listener's HTTP ----------------------------------------------------------------


class App:
    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, str]]] = []

    def page(self) -> bytes:
        return b"<html></html>"

    def status(self) -> dict[str, Any]:
        return {"ok": True}

    def metrics(self) -> tuple[bytes, str]:
        return b"wsgate_build_info 1\n", "text/plain"

    async def admin(self, action: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.actions.append((action, params))
        return 200, {"ok": True}

    def joined(self, live: status_server.Live) -> None:
        live.send('{"hello": 1}')

    def left(self, live: status_server.Live) -> None:
        pass


def ask(request: bytes, app: App | None = None) -> bytes:
    async def main() -> bytes:
        transport = FakeTransport()
        transport.attach(status_server.StatusConnection(app or App()))
        transport.feed(request)
        for _ in range(20):
            await asyncio.sleep(0)
        return transport.take()

    return asyncio.run(main())


def test_gets_and_posts_are_answered_and_the_connection_closed() -> None:
    assert ask(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b'{"ok": true}\n')
    assert b"wsgate_build_info" in ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ask(b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert ask(b"PUT /status HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert ask(b"GET /admin/up HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert ask(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3000).startswith(b"HTTP/1.1 431 ")
    assert ask(b"\x00\x01 nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    app = App()
    answer = ask(b"POST /admin/drain?server=h:1&upstream=a HTTP/1.1\r\nHost: 10.0.0.1:9\r\n"
                 b"Origin: http://10.0.0.1:9\r\nContent-Length: 2\r\n\r\n{}", app)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in answer
    assert app.actions == [("drain", {"server": "h:1", "upstream": "a"})]
    for refused in (b"Host: 10.0.0.1:9\r\nOrigin: http://evil.example",  # another site
                    b"Host: evil.example:9\r\nOrigin: http://evil.example:9"):  # rebinding
        answer = ask(b"POST /admin/reload HTTP/1.1\r\n" + refused + b"\r\n\r\n", app)
        assert answer.startswith(b"HTTP/1.1 403 ")
    assert ask(b"POST /admin/up HTTP/1.1\r\nHost: localhost:9\r\n\r\n", app).startswith(
        b"HTTP/1.1 200 ")
    assert len(app.actions) == 2


def test_a_pipelined_second_request_is_not_acted_on() -> None:
    app = App()
    answer = ask(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n"
                 b"POST /admin/drain?server=h:1 HTTP/1.1\r\nHost: a\r\n\r\n", app)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"ok": true}\n')
    assert app.actions == []


def test_live_switches_to_a_websocket_and_sends_updates() -> None:
    handshake = (b"GET /live HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    answer = ask(handshake)
    head, _, frames = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert frames == b"\x81\x0c" + b'{"hello": 1}'  # one text frame, and nothing else
    from_elsewhere = handshake.replace(b"\r\n\r\n", b"\r\nOrigin: http://evil.example\r\n\r\n")
    assert ask(from_elsewhere).startswith(b"HTTP/1.1 403 ")
