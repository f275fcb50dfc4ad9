"""``wsgate proxy`` end to end: real proxies, real upstreams, real clients, port 0."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import Proc, Spawn, run_held_open, run_wsgate, start_echo, wsgate_command
from proxy_helpers import (
    Recorder,
    exchange,
    handshake_request,
    listening,
    ok_response,
    read_answer,
    refusing_port,
    simple_config,
    start_proxy,
    status_of,
    stuck_port,
    switching_response,
)
from wsgate.proxy.frames import close_frame

SEED = "Server received from client: "


@pytest.fixture
def two_echoes(wsgate: Spawn) -> tuple[Proc, int, Proc, int]:
    """Two echo servers that say who they are: replies start with "A: " or "B: "."""
    a, port_a = start_echo(wsgate, "--prefix", "A: ")
    b, port_b = start_echo(wsgate, "--prefix", "B: ")
    return a, port_a, b, port_b


def who(port: int, message: str = "hi", source: str | None = None,
        headers: dict[str, str] | None = None) -> str:
    """Which echo server answered one new connection through the proxy: "A" or "B"."""
    sock = None
    if source is not None:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
    with connect(f"ws://127.0.0.1:{port}/", sock=sock, additional_headers=headers,
                 open_timeout=5) as ws:
        ws.send(message)
        reply = ws.recv(timeout=5)
    assert isinstance(reply, str) and reply.endswith(": " + message), reply
    return reply[0]


# -- the seed's topology ------------------------------------------------------------------------

def test_seed_topology_wscat_and_wsgate_connect(wsgate: Spawn, tmp_path: Path,
                                                node_echo: tuple[Proc, int],
                                                wscat: list[str]) -> None:
    """The seed's nginx setup: wsgate echo and Node's server.js behind the proxy."""
    _echo, echo_port = start_echo(wsgate)
    _node, node_port = node_echo
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{echo_port}", f"127.0.0.1:{node_port}",
        location='proxy_read_timeout = "300s"'))
    url = f"ws://127.0.0.1:{port}"
    for _ in range(2):  # round robin: each client reaches each upstream once
        result = run_held_open([*wscat, "-c", url, "-x", "Hello Nginx", "-w", "1"])
        assert result.stdout.splitlines() == [SEED + "Hello Nginx"], result.stderr
    for _ in range(2):
        piped = run_wsgate("connect", url, input="Hello\nWelcome to www.hi-linux.com\n")
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout.splitlines() == [SEED + "Hello", SEED + "Welcome to www.hi-linux.com"]
    proxy.expect(r'"GET / HTTP/1.1" 101 \d+')
    for upstream in (_node, _echo):
        upstream.expect(r"^Received from client: Hello Nginx$")
        upstream.expect(r"^Received from client: Welcome to www.hi-linux.com$")


# -- balancing ----------------------------------------------------------------------------------

def test_round_robin_alternates(wsgate: Spawn, tmp_path: Path,
                                two_echoes: tuple[Proc, int, Proc, int]) -> None:
    _a, port_a, _b, port_b = two_echoes
    _proxy, port = start_proxy(wsgate, tmp_path,
                               simple_config(f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"))
    seen = [who(port) for _ in range(6)]
    assert seen in (list("ABABAB"), list("BABABA"))


def test_weights_hold_over_many_connections(wsgate: Spawn, tmp_path: Path,
                                            two_echoes: tuple[Proc, int, Proc, int]) -> None:
    _a, port_a, _b, port_b = two_echoes
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{port_a} weight=3", f"127.0.0.1:{port_b}"))
    seen = [who(port) for _ in range(40)]
    assert seen.count("A") == 30 and seen.count("B") == 10
    assert "AAAA" not in "".join(seen)  # smooth: B is spread out, not bunched


def test_ip_hash_sticks_per_network(wsgate: Spawn, tmp_path: Path,
                                    two_echoes: tuple[Proc, int, Proc, int]) -> None:
    _a, port_a, _b, port_b = two_echoes
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}", upstream='balance = "ip_hash"'))
    by_network = {}
    for network in range(1, 9):
        first = who(port, source=f"127.0.{network}.1")
        assert who(port, source=f"127.0.{network}.2") == first  # same /24, same server
        assert who(port, source=f"127.0.{network}.1") == first
        by_network[network] = first
    assert set(by_network.values()) == {"A", "B"}


def test_consistent_hash_sticks_per_key(wsgate: Spawn, tmp_path: Path,
                                        two_echoes: tuple[Proc, int, Proc, int]) -> None:
    _a, port_a, _b, port_b = two_echoes
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}",
        upstream='balance = "hash"\nhash = "$http_x_user"\nconsistent = true'))
    servers = {}
    for user in range(12):
        first = who(port, headers={"X-User": f"user-{user}"})
        assert who(port, headers={"X-User": f"user-{user}"}) == first
        servers[user] = first
    assert set(servers.values()) == {"A", "B"}


def test_least_conn_prefers_the_idle_server(wsgate: Spawn, tmp_path: Path,
                                            two_echoes: tuple[Proc, int, Proc, int]) -> None:
    _a, port_a, _b, port_b = two_echoes
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}", upstream='balance = "least_conn"'))
    with connect(f"ws://127.0.0.1:{port}/") as busy:
        busy.send("x")
        busy_server = str(busy.recv(timeout=5))[0]
        for _ in range(4):  # every new connection goes to the server without one
            assert who(port) != busy_server


def test_backup_only_when_the_others_are_down(wsgate: Spawn, tmp_path: Path,
                                              two_echoes: tuple[Proc, int, Proc, int]) -> None:
    a, port_a, _b, port_b = two_echoes
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b} backup"))
    assert [who(port) for _ in range(4)] == list("AAAA")
    a.stop()
    assert [who(port) for _ in range(4)] == list("BBBB")


# -- failures -----------------------------------------------------------------------------------

def test_killed_upstream_is_skipped_and_comes_back(wsgate: Spawn, tmp_path: Path,
                                                   two_echoes: tuple[Proc, int, Proc, int]) -> None:
    a, port_a, _b, port_b = two_echoes
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{port_a} fail_timeout=1s", f"127.0.0.1:{port_b} fail_timeout=1s"))
    assert sorted(who(port) for _ in range(2)) == ["A", "B"]
    a.stop()
    assert [who(port) for _ in range(6)] == list("BBBBBB")  # no error reaches any client
    start_echo(wsgate, "--prefix", "A: ", "--port", str(port_a))  # A is back on its port
    time.sleep(1.2)  # past fail_timeout
    assert "A" in {who(port) for _ in range(4)}
    assert "Traceback" not in "\n".join(proxy.err)


def test_an_upstream_killed_mid_tunnel_gives_its_clients_close_1014(
        wsgate: Spawn, tmp_path: Path, two_echoes: tuple[Proc, int, Proc, int]) -> None:
    """A dead upstream is a gateway failure the client's library can name (1014, "bad
    gateway"), not an abnormal closure (1006); the other server's clients go on."""
    a, port_a, _b, port_b = two_echoes
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"))
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"ws://127.0.0.1:{port}/")) for _ in range(4)]
        names = []
        for ws in clients:
            ws.send("x")
            names.append(str(ws.recv(timeout=5))[0])
        assert sorted(names) == list("AABB")
        a.stop()  # SIGKILL: its sockets close with no Close frame
        for ws, name in zip(clients, names, strict=True):
            if name == "A":
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=5)
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                    1014, "bad gateway")
            else:
                ws.send("still here")
                assert ws.recv(timeout=5) == "B: still here"


def test_all_upstreams_down_is_502(wsgate: Spawn, tmp_path: Path) -> None:
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{refusing_port()}", f"127.0.0.1:{refusing_port()}"))
    for request in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", handshake_request()):
        answer = exchange(port, request)
        assert status_of(answer) == 502
        assert b"127.0.0.1" not in answer
    result = run_wsgate("connect", f"ws://127.0.0.1:{port}", input="")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: server rejected the WebSocket handshake: HTTP 502 Bad Gateway")


def test_upstream_connect_timeout_is_504(wsgate: Spawn, tmp_path: Path) -> None:
    with stuck_port() as port_stuck:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
            f"127.0.0.1:{port_stuck}", location='proxy_connect_timeout = "0.5s"'))
        answer = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) in (502, 504)


# -- headers ------------------------------------------------------------------------------------

def test_upstream_sees_forwarded_headers_and_no_hop_by_hop(wsgate: Spawn, tmp_path: Path) -> None:
    recorder = Recorder(ok_response())
    try:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        answer = exchange(port, (
            b"GET /path?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
            b"Connection: close, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
            b"Proxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"))
        assert status_of(answer) == 200 and answer.endswith(b"hello")
        assert recorder.heads[0].startswith(b"GET /path?q=1 HTTP/1.1\r\n")
        assert recorder.header(0, "Host") == ["example.com"]
        assert recorder.header(0, "X-Real-IP") == ["127.0.0.1"]
        assert recorder.header(0, "X-Forwarded-For") == ["127.0.0.1"]  # spoof replaced
        assert recorder.header(0, "X-Forwarded-Proto") == ["http"]
        assert recorder.header(0, "Accept") == ["*/*"]
        for hop in ("X-Secret", "Keep-Alive", "TE", "Proxy-Connection", "Upgrade"):
            assert recorder.header(0, hop) == [], hop
        assert recorder.header(0, "Connection") in ([], ["keep-alive"])
    finally:
        recorder.close()


def test_forwarded_for_is_appended_from_trusted_proxies(wsgate: Spawn, tmp_path: Path) -> None:
    recorder = Recorder(ok_response())
    try:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address),
                                   extra='trusted_proxies = ["127.0.0.0/8"]')
        exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\n"
                       b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
        assert recorder.header(0, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
        assert recorder.header(0, "X-Forwarded-Proto") == ["https"]
    finally:
        recorder.close()


def test_handshake_goes_upstream_with_upgrade_headers(wsgate: Spawn, tmp_path: Path) -> None:
    recorder = Recorder(lambda head: switching_response())
    try:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        answer = exchange(port, handshake_request(extra="Sec-WebSocket-Protocol: chat\r\n"),
                          until_close=False)
        assert status_of(answer) == 101
        assert recorder.header(0, "Upgrade") == ["websocket"]
        assert recorder.header(0, "Connection") == ["upgrade"]
        assert recorder.header(0, "Sec-WebSocket-Protocol") == ["chat"]
    finally:
        recorder.close()


# -- tunnels ------------------------------------------------------------------------------------

def test_idle_tunnel_is_closed_at_read_timeout(wsgate: Spawn, tmp_path: Path) -> None:
    _echo, echo_port = start_echo(wsgate, "--ping-interval", "0")
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{echo_port}", location='proxy_read_timeout = "1s"'))
    with connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
        ws.send("hi")
        ws.recv(timeout=5)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert 0.9 < time.monotonic() - started < 2.5


def test_server_pings_keep_a_tunnel_open(wsgate: Spawn, tmp_path: Path) -> None:
    _echo, echo_port = start_echo(wsgate, "--ping-interval", "0.3")
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{echo_port}", location='proxy_read_timeout = "1s"'))
    with connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
        time.sleep(2.5)
        ws.send("still here")
        assert ws.recv(timeout=5) == SEED + "still here"


def test_bytes_pipelined_after_the_handshake_are_tunnel_data(wsgate: Spawn,
                                                             tmp_path: Path) -> None:
    greeting = b"\x81\x05hello"  # an unmasked text frame the upstream sends with its 101
    recorder = Recorder(lambda head: switching_response() + greeting)
    try:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(handshake_request() + b"early bytes")
            answer = read_answer(sock, timeout=1.5)
        # The upstream then closes with no Close frame: its client hears 1014.
        assert answer.endswith(b"\r\n\r\n" + greeting + close_frame(1014, "bad gateway"))
    finally:
        recorder.close()


class Flood:
    """An upstream that answers the handshake and then sends as fast as it can, counting
    what the kernel accepted: with backpressure the count stalls."""

    def __init__(self) -> None:
        self.sock = listening()
        self.sent = 0
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        conn.recv(65536)
        conn.sendall(switching_response())
        conn.settimeout(0.2)
        chunk = b"\x82\x7e\xff\xff" + b"x" * 65535
        while not self.stop.is_set():
            try:
                self.sent += conn.send(chunk)
            except TimeoutError:
                continue
            except OSError:
                return


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_is_bounded_and_does_not_slow_others(wsgate: Spawn, tmp_path: Path) -> None:
    flood = Flood()
    _echo, echo_port = start_echo(wsgate)
    config = (simple_config(f"127.0.0.1:{flood.sock.getsockname()[1]}")
              + f'[upstream.echo]\nserver = ["127.0.0.1:{echo_port}"]\n'
              + '[location."/echo"]\nproxy_pass = "http://echo"\n')
    proxy, port = start_proxy(wsgate, tmp_path, config)
    before = rss_kib(proxy.popen.pid)
    slow = socket.create_connection(("127.0.0.1", port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        slow.sendall(handshake_request())
        time.sleep(1.5)  # the flood fills every buffer there is, then must stall
        stalled_at = flood.sent
        with connect(f"ws://127.0.0.1:{port}/echo") as ws:
            started = time.monotonic()
            for i in range(50):
                ws.send(f"m{i}")
                assert ws.recv(timeout=5) == f"{SEED}m{i}"
            assert time.monotonic() - started < 2.0
        time.sleep(0.5)
        assert flood.sent - stalled_at < 4 * 1024 * 1024  # stalled, not still pouring in
        assert flood.sent < 32 * 1024 * 1024
        assert rss_kib(proxy.popen.pid) - before < 16 * 1024
    finally:
        flood.stop.set()
        slow.close()


def test_a_stalled_reader_is_cut_at_send_timeout(wsgate: Spawn, tmp_path: Path) -> None:
    flood = Flood()
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{flood.sock.getsockname()[1]}",
        location='proxy_send_timeout = "1s"\nproxy_read_timeout = "30s"'))
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        slow.sendall(handshake_request())
        time.sleep(2.5)  # takes nothing: the proxy's writes stall, then it gives up
        slow.settimeout(5)
        received = 0
        while chunk := slow.recv(1 << 20):  # what was buffered, then the close
            received += len(chunk)
    flood.stop.set()
    assert received < 32 * 1024 * 1024


def test_half_close_propagates_after_pending_bytes(wsgate: Spawn, tmp_path: Path) -> None:
    upstream = listening()
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(switching_response())
            data = b""
            while chunk := conn.recv(65536):  # until the client's half-close arrives
                data += chunk
            seen.append(data)
            conn.sendall(b"after your EOF")

    threading.Thread(target=serve, daemon=True).start()
    _proxy, port = start_proxy(wsgate, tmp_path,
                               simple_config(f"127.0.0.1:{upstream.getsockname()[1]}"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake_request())
        assert status_of(read_answer(sock, until_close=False)) == 101
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        rest = read_answer(sock, timeout=5)
    upstream.close()
    assert seen == [b"last words"]
    assert rest == b"after your EOF"


def test_ipv6_listener(wsgate: Spawn, tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    _echo, echo_port = start_echo(wsgate)
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(f"127.0.0.1:{echo_port}"),
                               listen='"[::1]:0"')
    with connect(f"ws://[::1]:{port}/") as ws:
        ws.send("Hello")
        assert ws.recv(timeout=5) == SEED + "Hello"


# -- plain HTTP ---------------------------------------------------------------------------------

def test_http_get_and_chunked_post_with_keep_alive_reuse(wsgate: Spawn, tmp_path: Path) -> None:
    recorder = Recorder(ok_response(b"done"), keep=True)
    try:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
            first = read_answer(sock, timeout=1)
            sock.sendall(b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            second = read_answer(sock, timeout=1)
        for answer in (first, second):
            assert status_of(answer) == 200 and answer.endswith(b"done")
        assert recorder.connections == 1  # the upstream connection was kept and reused
        assert recorder.heads[1].startswith(b"POST /b HTTP/1.1\r\n")
        assert recorder.header(1, "Transfer-Encoding") == ["chunked"]
        assert recorder.bodies[-1] == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    finally:
        recorder.close()


def test_get_on_a_kept_connection_the_upstream_closes_goes_again(wsgate: Spawn,
                                                                  tmp_path: Path) -> None:
    """The upstream answers one request per connection and closes it 0.2 s later without
    reading on: each next request reaches the kept connection as it dies. As nginx, the
    proxy sends the request again on a new connection; the client sees only 200s."""
    recorder = Recorder(ok_response(b"done"))
    try:
        proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for number in range(3):
                sock.sendall(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % number)
                answer = b""
                while not answer.endswith(b"done"):
                    chunk = sock.recv(65536)
                    assert chunk, answer
                    answer += chunk
                assert status_of(answer) == 200, answer
        assert [head.split(b" ")[1] for head in recorder.heads] == [b"/0", b"/1", b"/2"]
        assert recorder.connections == 3  # /1 and /2 each met a dying one, then a new one
    finally:
        recorder.close()
    assert "502" not in "\n".join(proxy.err)


def test_chunked_response_and_content_length_body_stream_through(wsgate: Spawn,
                                                                 tmp_path: Path) -> None:
    parts = (b"abc", b"defgh")
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    recorder = Recorder(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + body)
    try:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        answer = exchange(port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                                b"Connection: close\r\n\r\nbody")
        assert status_of(answer) == 200
        assert answer.split(b"\r\n\r\n", 1)[1] == body
        assert recorder.bodies[0] == b"body"
    finally:
        recorder.close()


class EagerUpstream:
    """Answers each request as soon as its head arrives, before any body, and keeps every
    connection open, recording what each one received."""

    def __init__(self) -> None:
        self.sock = listening()
        self.received: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.received.append(b"")
            threading.Thread(target=self._serve, args=(conn, len(self.received) - 1),
                             daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        with conn:
            while chunk := conn.recv(65536):
                self.received[index] += chunk
                if b"\r\n\r\n" in chunk:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_an_answer_before_the_body_never_smuggles_the_body(wsgate: Spawn,
                                                          tmp_path: Path) -> None:
    upstream = EagerUpstream()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    proxy, port = start_proxy(wsgate, tmp_path,
                              simple_config(f"127.0.0.1:{upstream.sock.getsockname()[1]}"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as first:
        first.sendall(b"POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
                      % len(smuggled))
        assert status_of(read_answer(first, timeout=1, until_close=False)) == 200
        first.sendall(smuggled)  # the body, late: it must not become a request
        read_answer(first, timeout=2)
        assert first.recv(1) == b""  # closed: the late body is not read as a request
    answer = exchange(port, b"GET /public HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200
    assert len(upstream.received) == 2  # the first upstream connection was not reused
    assert b"GET /public" in upstream.received[1]
    assert b"GET /public" not in upstream.received[0]
    assert "Traceback" not in "\n".join(proxy.err)
    upstream.sock.close()


def test_a_pipelined_request_keeps_the_first_ones_read_timeout(wsgate: Spawn,
                                                               tmp_path: Path) -> None:
    silent = listening()  # accepts (in the kernel) and never answers
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{silent.getsockname()[1]}", location='proxy_read_timeout = "1s"'))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(0.3)
        sock.sendall(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        assert status_of(read_answer(sock, timeout=4, until_close=False)) == 504
        assert time.monotonic() - started < 2.5
    silent.close()


def test_a_client_leaving_during_connect_gives_its_slot_back(wsgate: Spawn,
                                                            tmp_path: Path) -> None:
    with stuck_port() as port_stuck:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(
            f"127.0.0.1:{port_stuck} max_conns=1", location='proxy_connect_timeout = "1s"'))
        with socket.create_connection(("127.0.0.1", port)) as leaving:
            leaving.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.3)  # connecting upstream now; the client goes
        time.sleep(0.2)
        started = time.monotonic()
        answer = exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        # max_conns=1 is free again, so this one tries (and times out), not 502 at once.
        assert status_of(answer) == 504
        assert time.monotonic() - started > 0.8


def test_http10_clients_get_bodies_without_chunked_framing(wsgate: Spawn,
                                                          tmp_path: Path) -> None:
    recorder = Recorder(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n")
    try:
        _proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        answer = exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert status_of(answer) == 200 and body == b"hello"
        assert b"transfer-encoding" not in head.lower()
    finally:
        recorder.close()


@pytest.mark.parametrize(("path", "status"), [
    ("/api/../secret", 404), ("/api/%2e%2e/secret", 404), ("/api/.%2E/secret", 404),
    ("/api/..%2fsecret", 404), ("/api/../../secret", 400), ("/api/a%00", 400),
    ("/api/%zz", 400), ("http://other/api/x", 400)])
def test_paths_that_escape_their_location_do_not_reach_it(wsgate: Spawn, tmp_path: Path,
                                                          path: str, status: int) -> None:
    """Locations match the normalised path, as nginx's: one that leaves /api/ is not /api/'s
    (404 here, with no other location); one that cannot be normalised is 400."""
    recorder = Recorder(ok_response())
    try:
        config = (f'[upstream.api]\nserver = ["{recorder.address}"]\n'
                  '[location."/api/"]\nproxy_pass = "http://api"\n')
        _proxy, port = start_proxy(wsgate, tmp_path, config)
        answer = exchange(port, f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                                f"\r\n".encode())
        assert status_of(answer) == status
        assert recorder.heads == []
    finally:
        recorder.close()


@pytest.mark.parametrize(("target", "location"), [
    ("/api/a%2Fb/c", "api"), ("/api/v1;jsessionid=x/items", "api"),
    ("/api/search?q=a+b&x=%2F..%2F", "api"), ("/x/../api/y", "api"), ("//api//y", "api"),
    ("/api/%2e%2e/other", "other"), ("/%61pi/z", "api")])
def test_the_target_goes_upstream_byte_for_byte_and_matches_normalised(
        wsgate: Spawn, tmp_path: Path, target: str, location: str) -> None:
    """RFC 9110 7.7: a proxy passes the target as it came (nginx, with no URI part in
    proxy_pass); the location is chosen by the normalised path."""
    api, other = Recorder(ok_response()), Recorder(ok_response())
    try:
        config = (f'[upstream.api]\nserver = ["{api.address}"]\n'
                  f'[upstream.other]\nserver = ["{other.address}"]\n'
                  '[location."/api/"]\nproxy_pass = "http://api"\n'
                  '[location."/"]\nproxy_pass = "http://other"\n')
        _proxy, port = start_proxy(wsgate, tmp_path, config)
        answer = exchange(port, f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                                f"\r\n".encode())
        assert status_of(answer) == 200
        chosen = api if location == "api" else other
        assert chosen.heads[0].split(b"\r\n")[0] == f"GET {target} HTTP/1.1".encode()
        assert (other if location == "api" else api).heads == []
    finally:
        api.close()
        other.close()


# -- TLS ----------------------------------------------------------------------------------------

def test_wss_through_the_proxy(wsgate: Spawn, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    _echo, echo_port = start_echo(wsgate)
    _proxy, port = start_proxy(
        wsgate, tmp_path, simple_config(f"127.0.0.1:{echo_port}"),
        listen='"127.0.0.1:0 ssl"',
        extra='ssl_certificate = "cert.pem"\nssl_certificate_key = "key.pem"\n'
              'error_log = "stderr info"')
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with connect(f"wss://127.0.0.1:{port}/", ssl=client_context) as ws:
        ws.send("Hello")
        assert ws.recv(timeout=5) == SEED + "Hello"
    # No kernel TLS here (no tls module; Python 3.11): the fallback, said once at start.
    said = r"\[info\] \d+: kernel TLS is off: .+; TLS is done in user space"
    if not any(re.search(said, line) for line in _proxy.err):
        _proxy.expect(said)


# -- access log, workers, signals ---------------------------------------------------------------

def test_access_log_combined_and_json(wsgate: Spawn, tmp_path: Path) -> None:
    _echo, echo_port = start_echo(wsgate)
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(f"127.0.0.1:{echo_port}"))
    with connect(f"ws://127.0.0.1:{port}/chat", user_agent_header="tester") as ws:
        ws.send("Hello")
        ws.recv(timeout=5)
    line = proxy.expect(r'"GET /chat HTTP/1.1" 101').string
    assert line.startswith("127.0.0.1 - - [") and line.endswith('"-" "tester"')
    log = tmp_path / "logs" / "access.json"
    log.parent.mkdir()
    json_dir = tmp_path / "j"
    json_dir.mkdir()
    _proxy2, port2 = start_proxy(wsgate, json_dir, simple_config(f"127.0.0.1:{echo_port}"),
                                 extra=f'[access_log]\npath = "{log}"\nformat = "json"\n')
    with connect(f"ws://127.0.0.1:{port2}/") as ws:
        ws.send("Hello")
        ws.recv(timeout=5)
    deadline = time.monotonic() + 5
    while not log.exists() or not log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    entry = json.loads(log.read_text().splitlines()[0])
    assert entry["status"] == 101
    assert entry["upstream_addr"] == f"127.0.0.1:{echo_port}"
    assert entry["body_bytes_sent"] > len(SEED) and entry["bytes_received"] > 5


def test_two_workers_serve_and_stop_on_sigterm(wsgate: Spawn, tmp_path: Path) -> None:
    _echo, echo_port = start_echo(wsgate)
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(f"127.0.0.1:{echo_port}"),
                              extra="worker_processes = 2")
    for _ in range(6):
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("Hello")
            assert ws.recv(timeout=5) == SEED + "Hello"
    proxy.signal(signal.SIGTERM)
    assert proxy.popen.wait(timeout=10) == 0


def test_sigterm_lets_an_open_request_finish(wsgate: Spawn, tmp_path: Path) -> None:
    def slow(head: bytes) -> bytes:
        time.sleep(1.0)
        return ok_response(b"late")(head)

    recorder = Recorder(slow)
    try:
        proxy, port = start_proxy(wsgate, tmp_path, simple_config(recorder.address))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.3)
            proxy.signal(signal.SIGTERM)
            answer = read_answer(sock, timeout=5)
        assert status_of(answer) == 200 and answer.endswith(b"late")
        assert proxy.popen.wait(timeout=10) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        recorder.close()


# -- configuration mistakes ---------------------------------------------------------------------

def test_check_validates_and_exits(tmp_path: Path) -> None:
    config = tmp_path / "wsgate.toml"
    config.write_text('listen = "127.0.0.1:0"\n' + simple_config("127.0.0.1:8010"))
    result = run_wsgate("proxy", "--check", "-c", str(config))
    assert result.returncode == 0
    assert "ok" in result.stdout
    config.write_text('listen = "127.0.0.1:0"\n' + simple_config("127.0.0.1:8010 weight=two"))
    result = run_wsgate("proxy", "--check", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {config}: upstream.backend.server[0]")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-c", "/nonexistent/wsgate.toml"], "error: /nonexistent/wsgate.toml: cannot read"),
        ([], "error: give -c FILE, or at least one --upstream HOST:PORT"),
        (["--upstream", "127.0.0.1"], 'error: --upstream "127.0.0.1": missing port'),
        (["--upstream", "h:1", "--balance", "random"],
         'error: --balance "random": must be one of "round_robin", "least_conn", "ip_hash", '
         '"hash", got "random"'),
        (["-c", "x.toml", "--upstream", "h:1"], "error: --upstream cannot be combined with -c"),
    ],
)
def test_bad_flags_are_one_line_and_status_2(argv: list[str], message: str) -> None:
    result = run_wsgate("proxy", *argv)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_port_in_use_is_status_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_wsgate("proxy", "--listen", f"127.0.0.1:{port}", "--upstream", "h:1")
    assert result.returncode == 1
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"


def test_seed_example_config_checks(tmp_path: Path) -> None:
    """The seed's config checks out once the folder of its access log exists (--check opens
    it, as running would: /var/log/nginx is not on every machine)."""
    example = Path(__file__).parent.parent / "examples" / "seed.toml"
    text = example.read_text()
    assert '"/var/log/nginx/yourdomain.log"' in text
    copy = tmp_path / "seed.toml"
    copy.write_text(text.replace("/var/log/nginx/yourdomain.log", str(tmp_path / "seed.log")))
    result = run_wsgate("proxy", "--check", "-c", str(copy))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{copy}: ok: 1 listener, 1 upstream (2 servers), 1 location\n"
    assert (tmp_path / "seed.log").exists()


# -- wsgate up ----------------------------------------------------------------------------------

@pytest.fixture
def up(wsgate: Spawn) -> Iterator[tuple[Proc, int]]:
    proc = wsgate(["up", "--port", "0", "--echo-port", "0", "--echo-port", "0"])
    port = int(proc.expect(r"Proxy listening on ws://127\.0\.0\.1:(\d+)").group(1))
    proc.expect(r"Connect with: wsgate connect ws://127\.0\.0\.1:\d+")
    yield proc, port


def test_up_runs_the_seed_topology(up: tuple[Proc, int]) -> None:
    proc, port = up
    seen = set()
    for _ in range(2):
        result = run_wsgate("connect", f"ws://127.0.0.1:{port}", input="Hello\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == SEED + "Hello\n"
    proc.expect(r"^Received from client: Hello$")
    seen.add(proc.expect(r'"GET / HTTP/1.1" 101').string)
    ws: ClientConnection
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send("x")
        ws.recv(timeout=5)
        proc.signal(signal.SIGINT)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proc.popen.wait(timeout=10) == 0


def test_wsgate_command_is_installed() -> None:
    assert subprocess.run([*wsgate_command(), "--version"], capture_output=True,
                          text=True, timeout=20).stdout.startswith("wsgate ")
