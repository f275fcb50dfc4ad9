"""A :class:`~wsgate.proxy.tunnel.Tunnel` whose steady state the C core serves, over real
loopback TCP sockets on uvloop, as in the proxy: every rarer event takes it back to its
transports, and what follows is the Python tunnel's own behaviour (the shutdown's Close
frame between frames, freeze and detach for a handover, EOF and reset handling, the idle
and send timeouts); without the core the same tunnel runs in Python (a TLS client's
tunnel: test_splice_tls.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.sync.client import connect

from conftest import Spawn, start_echo
from test_splice import one_frame, tcp_pair, until
from wsgate import runtime
from wsgate.proxy import splice as splicing
from wsgate.proxy.frames import close_frame
from wsgate.proxy.tunnel import State, Tunnel, Why

GOING_AWAY = close_frame(1001, "going away")
BAD_GATEWAY = close_frame(1014, "bad gateway")
CLIENT_CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe9"
"""The client's answer: a masked Close 1001 (a zero mask)."""

needs_core = pytest.mark.skipif(not splicing.ENABLED, reason="the C core is not built")


@dataclass
class Rig:
    """A started tunnel between two real connections; ``client`` and ``upstream`` are the
    far ends (the client's and the upstream server's sockets)."""

    tunnel: Tunnel
    client: socket.socket
    upstream: socket.socket
    closed: list[Tunnel] = field(default_factory=list)

    async def send(self, sock: socket.socket, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(sock, data)

    async def read(self, sock: socket.socket, size: int, limit: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        data = bytearray()
        async with asyncio.timeout(limit):
            while len(data) < size:
                chunk = await loop.sock_recv(sock, size - len(data))
                if not chunk:
                    break
                data += chunk
        return bytes(data)

    async def nothing(self, sock: socket.socket, wait: float = 0.1) -> bool:
        """Whether ``sock`` receives nothing (not even an EOF) for ``wait`` seconds."""
        await asyncio.sleep(wait)
        try:
            sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        return False


async def open_rig(read_timeout: float = 60.0, send_timeout: float = 60.0) -> Rig:
    loop = asyncio.get_running_loop()
    client_far, client_near = tcp_pair()
    upstream_near, upstream_far = tcp_pair()
    for sock in (client_far, client_near, upstream_near, upstream_far):
        sock.setblocking(False)
    client, _ = await loop.connect_accepted_socket(asyncio.Protocol, client_near)
    upstream, _ = await loop.connect_accepted_socket(asyncio.Protocol, upstream_near)
    client.pause_reading()
    upstream.pause_reading()
    closed: list[Tunnel] = []
    tunnel = Tunnel(client, upstream, read_timeout, send_timeout, closed.append)
    tunnel.start(b"", b"")
    return Rig(tunnel, client_far, upstream_far, closed)


def run(test: Callable[[Rig], Awaitable[None]], **options: float) -> None:
    async def main() -> None:
        rig = await open_rig(**options)
        assert (rig.tunnel.splice is not None) == splicing.ENABLED
        try:
            await test(rig)
        finally:
            rig.tunnel.abort()
            rig.client.close()
            rig.upstream.close()
            await asyncio.sleep(0)
        assert not splicing._hubs, "a core outlived its splices"

    runtime.run(main())


@needs_core
def test_a_plain_tunnel_is_spliced_and_moves_and_counts_bytes() -> None:
    async def test(rig: Rig) -> None:
        tunnel = rig.tunnel
        assert tunnel.splice is not None
        assert not any(end.transport.is_reading()  # type: ignore[attr-defined]
                       for end in (tunnel.client, tunnel.upstream))
        up = b"".join(b"\x81\x84\x00\x00\x00\x00ping" for _ in range(50))
        down = b"".join(one_frame(n) for n in range(50))
        await rig.send(rig.client, up)
        await rig.send(rig.upstream, down)
        assert await rig.read(rig.upstream, len(up)) == up
        assert await rig.read(rig.client, len(down)) == down
        assert (tunnel.client.received, tunnel.upstream.received) == (len(up), len(down))
        tunnel.close()
        assert tunnel.splice is None and rig.closed == [tunnel]
        assert tunnel.client.received == len(up)
        assert await rig.read(rig.client, 1) == b"" and await rig.read(rig.upstream, 1) == b""

    run(test)


@needs_core
def test_the_idle_timer_reads_the_cores_counts() -> None:
    async def test(rig: Rig) -> None:
        for _ in range(12):  # 0.6 s of traffic, every 0.05 s: never idle for 0.3 s
            await rig.send(rig.client, b"\x81\x80\x00\x00\x00\x00")
            await asyncio.sleep(0.05)
        assert rig.closed == [] and rig.tunnel.splice is not None
        await until(lambda: bool(rig.closed), 2.0)
        assert rig.tunnel.reason is Why.IDLE_TIMEOUT

    run(test, read_timeout=0.3)


@needs_core
def test_going_away_waits_for_the_frame_in_flight() -> None:
    async def test(rig: Rig) -> None:
        frame = b"\x82\x7e\x03\xe8" + os.urandom(1000)
        await rig.send(rig.upstream, frame[:404])
        assert await rig.read(rig.client, 404) == frame[:404]
        rig.tunnel.going_away()
        assert rig.tunnel.splice is None and rig.tunnel.state is State.ENDING
        await rig.send(rig.upstream, frame[404:] + b"\x81\x02no")
        assert await rig.read(rig.client, 600 + len(GOING_AWAY)) == frame[404:] + GOING_AWAY
        await rig.send(rig.client, CLIENT_CLOSE)  # the answer still goes upstream
        assert await rig.read(rig.upstream, len(CLIENT_CLOSE)) == CLIENT_CLOSE
        rig.upstream.shutdown(socket.SHUT_WR)
        await until(lambda: bool(rig.closed))
        assert rig.tunnel.reason is Why.SHUTDOWN

    run(test)


@needs_core
def test_a_frozen_tunnel_reads_nothing_until_it_thaws() -> None:
    async def test(rig: Rig) -> None:
        tunnel = rig.tunnel
        tunnel.freeze()
        assert tunnel.splice is None and tunnel.state is State.FROZEN and tunnel.drained()
        await rig.send(rig.client, b"\x81\x80\x00\x00\x00\x00")
        assert await rig.nothing(rig.upstream)
        tunnel.thaw()
        assert tunnel.splice is not None and tunnel.state is State.OPEN
        assert await rig.read(rig.upstream, 6) == b"\x81\x80\x00\x00\x00\x00"
        tunnel.freeze()
        held = [os.dup(splicing.plain_socket(end.transport) or -1)  # as handover sends them
                for end in (tunnel.client, tunnel.upstream)]
        tunnel.detach()
        assert tunnel.state is State.CLOSED and rig.closed == []
        assert await rig.nothing(rig.client) and await rig.nothing(rig.upstream)
        for fd in held:
            os.close(fd)

    run(test)


@needs_core
def test_the_upstreams_close_frame_then_eof_ends_it_as_the_upstreams() -> None:
    async def test(rig: Rig) -> None:
        await rig.send(rig.upstream, b"\x81\x02hi\x88\x02\x03\xe8")
        assert await rig.read(rig.client, 8) == b"\x81\x02hi\x88\x02\x03\xe8"
        await until(lambda: rig.tunnel.splice is None)  # the end is the Python tunnel's
        assert rig.tunnel.upstream.cursor.closed
        await rig.send(rig.client, CLIENT_CLOSE)
        assert await rig.read(rig.upstream, len(CLIENT_CLOSE)) == CLIENT_CLOSE
        rig.upstream.shutdown(socket.SHUT_WR)
        assert await rig.read(rig.client, 1) == b""  # its EOF passed on
        rig.client.shutdown(socket.SHUT_WR)
        await until(lambda: bool(rig.closed))
        assert rig.tunnel.reason is Why.UPSTREAM

    run(test)


@needs_core
def test_an_upstream_reset_between_frames_sends_1014_to_the_client() -> None:
    async def test(rig: Rig) -> None:
        await rig.send(rig.upstream, b"\x81\x02hi")
        assert await rig.read(rig.client, 4) == b"\x81\x02hi"
        rig.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        rig.upstream.close()
        assert await rig.read(rig.client, len(BAD_GATEWAY) + 1) == BAD_GATEWAY
        await until(lambda: bool(rig.closed))
        assert rig.tunnel.reason is Why.ERROR

    run(test)


@needs_core
def test_a_send_the_core_could_not_make_fails_the_transport_as_its_own_would() -> None:
    async def test(rig: Rig) -> None:
        fd = splicing.plain_socket(rig.tunnel.upstream.transport)
        assert fd is not None
        with socket.socket(fileno=os.dup(fd)) as near:
            near.shutdown(socket.SHUT_WR)  # the core's send to the upstream meets EPIPE
        await rig.send(rig.client, b"\x81\x80\x00\x00\x00\x00")
        assert await rig.read(rig.client, len(BAD_GATEWAY) + 1) == BAD_GATEWAY
        await until(lambda: bool(rig.closed))
        assert rig.tunnel.reason is Why.ERROR
        assert rig.tunnel.client.received == 6

    run(test)


@needs_core
def test_an_eof_told_directly_takes_the_tunnel_back_first() -> None:
    """As :func:`~wsgate.proxy.handover.adopt` does with an EOF that came in flight."""
    async def test(rig: Rig) -> None:
        await rig.send(rig.upstream, b"\x81\x02hi")
        assert await rig.read(rig.client, 4) == b"\x81\x02hi"
        rig.tunnel.client.eof_received()
        assert rig.tunnel.splice is None and rig.tunnel.upstream.received == 4
        assert await rig.read(rig.upstream, 1) == b""  # passed on
        await rig.send(rig.upstream, b"\x88\x00")
        assert await rig.read(rig.client, 2) == b"\x88\x00"

    run(test)


@needs_core
def test_a_clients_half_close_passes_on_and_the_upstream_may_still_answer() -> None:
    async def test(rig: Rig) -> None:
        await rig.send(rig.client, b"\x81\x80\x00\x00\x00\x00")
        rig.client.shutdown(socket.SHUT_WR)
        assert await rig.read(rig.upstream, 7) == b"\x81\x80\x00\x00\x00\x00"  # then EOF
        await rig.send(rig.upstream, b"\x81\x03bye")
        assert await rig.read(rig.client, 5) == b"\x81\x03bye"
        rig.upstream.shutdown(socket.SHUT_WR)
        await until(lambda: bool(rig.closed))
        assert rig.tunnel.reason is Why.CLIENT

    run(test)


@needs_core
def test_a_client_that_takes_nothing_meets_the_send_timeout() -> None:
    async def test(rig: Rig) -> None:
        splice = rig.tunnel.splice
        assert splice is not None
        sender = asyncio.ensure_future(rig.send(rig.upstream, one_frame(32 << 20)))
        await until(lambda: rig.tunnel.client.full)
        assert rig.tunnel.splice is splice and 0 < splice.pending <= splicing_chunk()
        await until(lambda: bool(rig.closed), 3.0)
        assert rig.tunnel.reason is Why.SEND_TIMEOUT
        sender.cancel()

    run(test, send_timeout=0.3)


@needs_core
def test_bytes_the_core_kept_go_first_when_it_is_taken_back() -> None:
    async def test(rig: Rig) -> None:
        payload = one_frame(32 << 20)
        sender = asyncio.ensure_future(rig.send(rig.upstream, payload))
        await until(lambda: rig.tunnel.client.full)
        rig.tunnel.freeze()  # taken back with a read kept: it goes to the transport
        assert rig.tunnel.splice is None and not rig.tunnel.drained()
        rig.tunnel.thaw()  # not drained: it goes on in Python
        assert rig.tunnel.splice is None
        assert await rig.read(rig.client, len(payload), 20.0) == payload
        await sender
        assert rig.tunnel.upstream.received == len(payload)
        await until(lambda: rig.tunnel.splice is not None)  # the idle tick splices again

    run(test, read_timeout=0.4)


def splicing_chunk() -> int:
    from wsgate.proxy import _splice
    return _splice.CHUNK


def test_without_the_core_the_same_tunnel_runs_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splicing, "ENABLED", False)

    async def test(rig: Rig) -> None:
        assert rig.tunnel.splice is None
        await rig.send(rig.client, b"\x81\x80\x00\x00\x00\x00")
        await rig.send(rig.upstream, b"\x81\x02hi")
        assert await rig.read(rig.upstream, 6) == b"\x81\x80\x00\x00\x00\x00"
        assert await rig.read(rig.client, 4) == b"\x81\x02hi"
        rig.tunnel.going_away()
        assert await rig.read(rig.client, len(GOING_AWAY)) == GOING_AWAY
        assert (rig.tunnel.client.received, rig.tunnel.upstream.received) == (6, 4)

    run(test)


def test_tls_transports_are_no_plain_sockets() -> None:
    """The plain path takes no TLS transport (the core's TLS side takes it, by its session)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[asyncio.BaseTransport] = loop.create_future()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.set_result(transport)

        for context in (server_context, None):
            server = await loop.create_server(Accept, "127.0.0.1", 0, ssl=context)
            port = server.sockets[0].getsockname()[1]
            client, _ = await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", port, ssl=client_context if context else None,
                server_hostname="localhost" if context else None)
            transport = await accepted
            fd = splicing.plain_socket(transport)
            assert (fd is None) if context else isinstance(fd, int)
            assert (splicing.plain_socket(client) is None) == (context is not None)
            client.close()
            transport.close()
            server.close()
            await server.wait_closed()
            accepted = loop.create_future()

    runtime.run(main())


@pytest.mark.parametrize(("setup", "expected"), [
    ("", "True"),
    ("import os; os.environ['WSGATE_SPLICE'] = '0'; ", "False"),
    ("import sys; sys.modules['wsgate.proxy._splice'] = None; ", "False"),
])
def test_the_core_can_be_missing_or_switched_off(setup: str, expected: str) -> None:
    if expected == "True" and not splicing.ENABLED:
        pytest.skip("the C core is not built")
    script = f"{setup}from wsgate.proxy import splice, tunnel; print(splice.ENABLED)"
    env = {key: value for key, value in os.environ.items() if key != "WSGATE_SPLICE"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30, env=env)
    assert result.stdout.strip() == expected, result.stderr


@pytest.mark.parametrize("spliced", ["0", "1"])
def test_a_proxied_websocket_with_and_without_the_core(wsgate: Spawn, tmp_path: Path,
                                                       spliced: str) -> None:
    _echo, echo_port = start_echo(wsgate, "--raw")
    config = tmp_path / "wsgate.toml"
    config.write_text('listen = ["127.0.0.1:0"]\n[upstream.backend]\n'
                      f'server = ["127.0.0.1:{echo_port}"]\n'
                      '[location."/"]\nproxy_pass = "http://backend"\n')
    env: dict[str, Any] = {**os.environ, "WSGATE_SPLICE": spliced}
    proxy = wsgate(["proxy", "-c", str(config)], env=env)
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)").group(1))
    with connect(f"ws://127.0.0.1:{port}/") as ws:
        for size in (1, 125, 126, 70_000):
            message = os.urandom(size)
            ws.send(message)
            assert ws.recv(timeout=5) == message, size
