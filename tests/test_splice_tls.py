"""A ``wss://`` client's :class:`~wsgate.proxy.tunnel.Tunnel` served by the C core's TLS
side (``_splice_tls.c``): a real TLS connection on uvloop (the far client is uvloop's own
TLS client) and a plain loopback upstream. The core decrypts and encrypts with uvloop's
own session; whatever takes the tunnel back (a shutdown, the client's close_notify, a
stall and its end) leaves uvloop a session it goes on with, byte for byte."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import trustme
from websockets.sync.client import connect

from conftest import Spawn, start_echo
from test_splice import one_frame, tcp_pair, until
from test_splice_tunnel import CLIENT_CLOSE, GOING_AWAY, splicing_chunk
from wsgate import runtime
from wsgate.proxy import splice as splicing
from wsgate.proxy.tunnel import State, Tunnel, Why

needs_core = pytest.mark.skipif(not splicing.TLS, reason="the C core's TLS side is off")

AUTHORITY = trustme.CA()
CERT = AUTHORITY.issue_cert("localhost", "127.0.0.1")


class Far(asyncio.Protocol):
    """The far client: what its TLS transport delivered, and how it ended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: asyncio.Future[Exception | None] = (
            asyncio.get_running_loop().create_future())

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        if not self.ended.done():
            self.ended.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(exc)

    async def read(self, size: int, limit: float = 10.0) -> bytes:
        await until(lambda: len(self.data) >= size or self.ended.done(), limit)
        data = bytes(self.data[:size])
        del self.data[:size]
        return data


@dataclass
class Rig:
    tunnel: Tunnel
    far: Far
    far_transport: asyncio.Transport
    upstream: socket.socket
    closed: list[Tunnel] = field(default_factory=list)

    async def send_up(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.upstream, data)

    async def read_up(self, size: int, limit: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        data = bytearray()
        async with asyncio.timeout(limit):
            while len(data) < size:
                chunk = await loop.sock_recv(self.upstream, size - len(data))
                if not chunk:
                    break
                data += chunk
        return bytes(data)


async def open_rig(read_timeout: float, send_timeout: float, early: bytes) -> Rig:
    loop = asyncio.get_running_loop()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CERT.configure_cert(server_context)
    client_context = ssl.create_default_context()
    AUTHORITY.configure_trust(client_context)
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            tls = cast(asyncio.Transport, transport)  # uvloop's: no asyncio subclass
            tls.pause_reading()  # as the proxy's connection is, at the 101
            accepted.set_result(tls)

    server = await loop.create_server(Accept, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    far_transport, far = await loop.create_connection(
        Far, "127.0.0.1", port, ssl=client_context, server_hostname="localhost")
    client = await asyncio.wait_for(accepted, 10)
    server.close()
    if early:  # records that uvloop reads before the tunnel starts: they sit in its BIO
        far_transport.write(early)
        await until(lambda: client.get_read_buffer_size() > 0)
    upstream_near, upstream_far = tcp_pair()
    upstream_near.setblocking(False)
    upstream_far.setblocking(False)
    upstream, _ = await loop.connect_accepted_socket(asyncio.Protocol, upstream_near)
    upstream.pause_reading()
    closed: list[Tunnel] = []
    tunnel = Tunnel(client, upstream, read_timeout, send_timeout, closed.append)
    tunnel.start(b"", b"")
    return Rig(tunnel, far, far_transport, upstream_far, closed)


def run(test: Callable[[Rig], Awaitable[None]], read_timeout: float = 60.0,
        send_timeout: float = 60.0, early: bytes = b"") -> None:
    async def main() -> None:
        rig = await open_rig(read_timeout, send_timeout, early)
        try:
            async with asyncio.timeout(40):
                await test(rig)
        finally:
            rig.tunnel.abort()
            rig.far_transport.abort()
            rig.upstream.close()
            await asyncio.sleep(0.01)
        assert not splicing._hubs, "a core outlived its splices"

    runtime.run(main())


def frame(payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes([0x82, size]) + payload
    if size < 65536:
        return b"\x82\x7e" + size.to_bytes(2, "big") + payload
    return b"\x82\x7f" + size.to_bytes(8, "big") + payload


@needs_core
def test_a_tls_clients_tunnel_is_spliced_and_moves_plaintext_both_ways() -> None:
    async def test(rig: Rig) -> None:
        tunnel = rig.tunnel
        assert tunnel.splice is not None
        up = b"".join(b"\x81\x84\x00\x00\x00\x00ping" for _ in range(50)) + os.urandom(70_000)
        rig.far_transport.write(up)
        assert await rig.read_up(len(up)) == up
        down = b"".join(frame(os.urandom(size)) for size in (1, 125, 16_384, 16_385, 200_000))
        await rig.send_up(down)
        assert await rig.far.read(len(down)) == down
        assert tunnel.splice is not None  # all of it in C
        assert (tunnel.client.received, tunnel.upstream.received) == (len(up), len(down))
        tunnel.close()  # uvloop's own TLS shutdown, on the session the core used
        assert await asyncio.wait_for(rig.far.ended, 5) is None
        assert await rig.read_up(1) == b""
        assert rig.closed == [tunnel]

    run(test)


@needs_core
def test_going_away_over_tls_waits_for_the_frame_in_flight() -> None:
    async def test(rig: Rig) -> None:
        message = frame(os.urandom(1000))
        await rig.send_up(message[:404])
        assert await rig.far.read(404) == message[:404]
        rig.tunnel.going_away()
        assert rig.tunnel.splice is None and rig.tunnel.state is State.ENDING
        await rig.send_up(message[404:] + b"\x81\x02no")
        assert await rig.far.read(600 + len(GOING_AWAY)) == message[404:] + GOING_AWAY
        rig.far_transport.write(CLIENT_CLOSE)  # the answer, through uvloop's TLS again
        assert await rig.read_up(len(CLIENT_CLOSE)) == CLIENT_CLOSE
        rig.upstream.shutdown(socket.SHUT_WR)
        await until(lambda: bool(rig.closed))
        assert rig.tunnel.reason is Why.SHUTDOWN

    run(test)


@needs_core
def test_a_tls_client_that_stops_reading_stalls_the_core_within_its_bound() -> None:
    async def test(rig: Rig) -> None:
        splice = rig.tunnel.splice
        assert splice is not None
        rig.far_transport.pause_reading()
        payload = one_frame(24 << 20)
        sender = asyncio.ensure_future(rig.send_up(payload))
        await until(lambda: rig.tunnel.client.full, 10.0)
        # One read kept, as TLS records: CHUNK at most, with what records add to it.
        assert rig.tunnel.splice is splice and 0 < splice.pending <= splicing_chunk()
        rig.far_transport.resume_reading()
        assert await rig.far.read(len(payload), 30.0) == payload
        await sender
        assert not rig.tunnel.client.full and rig.tunnel.splice is splice

    run(test)


@needs_core
def test_bytes_kept_as_records_go_first_when_the_tunnel_is_taken_back() -> None:
    async def test(rig: Rig) -> None:
        rig.far_transport.pause_reading()
        payload = one_frame(24 << 20)
        sender = asyncio.ensure_future(rig.send_up(payload))
        await until(lambda: rig.tunnel.client.full, 10.0)
        splice = rig.tunnel.splice
        assert splice is not None and splice.pending > 0
        rig.tunnel.going_away()  # taken back with records kept: uvloop's transport sends them
        assert rig.tunnel.splice is None
        rig.far_transport.resume_reading()
        assert (await rig.far.read(len(payload) + len(GOING_AWAY), 30.0)
                == payload + GOING_AWAY)
        await sender

    run(test)


@needs_core
def test_an_upstream_that_stops_reading_leaves_records_for_later_in_order() -> None:
    async def test(rig: Rig) -> None:
        payload = os.urandom(24 << 20)
        rig.far_transport.write(payload)  # far more than the upstream's socket takes
        await until(lambda: rig.tunnel.upstream.full, 10.0)
        assert rig.tunnel.splice is not None  # stalled in C, records left in the BIO
        first = await rig.read_up(4 << 20, 10.0)  # the core drains, then decrypts on
        await until(lambda: rig.tunnel.upstream.full, 10.0)
        rig.tunnel.freeze()  # taken back with plaintext kept and records in the BIO
        rig.tunnel.thaw()  # uvloop decrypts what the core left
        rest = await rig.read_up(len(payload) - len(first), 30.0)
        assert first + rest == payload
        assert rig.tunnel.client.received == len(payload)

    run(test)


@needs_core
def test_the_clients_close_notify_is_its_eof() -> None:
    async def test(rig: Rig) -> None:
        rig.far_transport.write(b"\x81\x80\x00\x00\x00\x00")
        assert await rig.read_up(6) == b"\x81\x80\x00\x00\x00\x00"
        assert rig.tunnel.splice is not None
        rig.far_transport.close()  # uvloop's TLS client: close_notify, then waits for ours
        assert await rig.read_up(1) == b""  # the EOF passed on upstream
        rig.upstream.close()
        assert await asyncio.wait_for(rig.far.ended, 5) is None  # our close_notify came
        await until(lambda: bool(rig.closed))
        assert rig.tunnel.reason is Why.CLIENT

    run(test)


@needs_core
def test_records_buffered_at_the_start_keep_python_until_an_idle_tick() -> None:
    early = b"\x81\x80\x00\x00\x00\x00"

    async def test(rig: Rig) -> None:
        assert rig.tunnel.splice is None  # uvloop's BIO held the early records
        assert await rig.read_up(len(early)) == early
        await until(lambda: rig.tunnel.splice is not None, 2.0)
        await rig.send_up(b"\x81\x02hi")
        assert await rig.far.read(4) == b"\x81\x02hi"

    run(test, read_timeout=0.4, early=early)


def test_the_tls_side_is_there_wherever_the_core_is() -> None:
    """A silent fallback (Python's OpenSSL not found) would skip every test above."""
    assert splicing.TLS == splicing.ENABLED


@needs_core
def test_a_session_the_core_does_not_know_is_refused() -> None:
    from wsgate.proxy import _splice

    a, b = tcp_pair()
    core = _splice.Core()
    try:
        for tls in ((object(), object()), (ssl.MemoryBIO(), ssl.create_default_context())):
            with pytest.raises(ValueError, match="not an _ssl session"):
                _splice.Splice(core, a.fileno(), b.fileno(), print, 0, b"", False, tls)
        with pytest.raises(ValueError, match="a pair"):
            _splice.Splice(core, a.fileno(), b.fileno(), print, 0, b"", False, ())  # type: ignore[arg-type]
        assert core.members == 0
    finally:
        core.close()
        a.close()
        b.close()


@pytest.mark.parametrize("spliced", ["0", "1"])
def test_wss_through_the_proxy_with_and_without_the_core(wsgate: Spawn, tmp_path: Path,
                                                         spliced: str) -> None:
    CERT.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    CERT.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    _echo, echo_port = start_echo(wsgate, "--raw")
    config = tmp_path / "wsgate.toml"
    config.write_text('listen = ["127.0.0.1:0 ssl"]\nssl_certificate = "cert.pem"\n'
                      'ssl_certificate_key = "key.pem"\n[upstream.backend]\n'
                      f'server = ["127.0.0.1:{echo_port}"]\n'
                      '[location."/"]\nproxy_pass = "http://backend"\n')
    env: dict[str, Any] = {**os.environ, "WSGATE_SPLICE": spliced}
    proxy = wsgate(["proxy", "-c", str(config)], env=env, cwd=tmp_path)
    port = int(proxy.expect(r"Listening on https://[^ ]+:(\d+)").group(1))
    client_context = ssl.create_default_context()
    AUTHORITY.configure_trust(client_context)
    with connect(f"wss://127.0.0.1:{port}/", ssl=client_context) as ws:
        for size in (1, 125, 126, 16_385, 70_000, 1 << 20):
            message = os.urandom(size)
            ws.send(message)
            assert ws.recv(timeout=10) == message, size
