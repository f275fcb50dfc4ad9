"""FileSender over real sockets on 127.0.0.1 with uvloop: both ways of sending (zero-copy
``os.sendfile`` and the chunked fallback, which TLS always takes) deliver the exact bytes,
hold little while a reader stalls, do not spin, and stop cleanly when the client goes."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import trustme
import uvloop

from wsgate.proxy.filesend import FileSender, FileTruncated, can_zero_copy

T = TypeVar("T")
MODES = [pytest.param(True, id="zero-copy"), pytest.param(False, id="chunked")]
MiB = 1024 * 1024


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main`` on a uvloop loop, bounded in time; a callback's error fails the test."""
    errors: list[dict[str, Any]] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.get_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        result = runner.run(asyncio.wait_for(main(), 4))
    assert errors == []
    return result


def data_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(min(size, MiB)) * (size // MiB) + os.urandom(size % MiB)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


class CountingSender(FileSender):
    """Counts the sender's wakeups: a spinning sender would have thousands."""

    wakeups = 0

    def _on_writable(self) -> None:
        CountingSender.wakeups += 1
        super()._on_writable()

    def _pump(self) -> None:
        CountingSender.wakeups += 1
        super()._pump()


class Sending(asyncio.Protocol):
    """The owning protocol, as the client connection will be: forwards flow control and
    connection_lost to the sender; closes the connection when it is done."""

    def __init__(self, path: Path, offset: int, count: int, zero_copy: bool | None,
                 head: bytes = b"", close: bool = True, sndbuf: int = 0,
                 before: bytes = b"") -> None:
        self.loop = asyncio.get_running_loop()
        self.path, self.offset, self.count = path, offset, count
        self.zero_copy, self.head, self.close, self.sndbuf = zero_copy, head, close, sndbuf
        self.before = before
        self.paused = False
        self.buffered_before = 0
        self.finished: asyncio.Future[BaseException | None] = self.loop.create_future()
        self.fd_closed_at_done = False
        self.calls = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        transport.set_write_buffer_limits(high=64 * 1024)
        if self.sndbuf:
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        if self.before:  # what the connection wrote itself first (a head, a response)
            transport.write(self.before)
            self.buffered_before = transport.get_write_buffer_size()
        self.fd = os.open(self.path, os.O_RDONLY)
        self.sender = CountingSender(self.loop, transport, self.fd, self.offset, self.count,
                                     self.done, head=self.head, zero_copy=self.zero_copy)
        assert self.calls == 0  # never from inside the constructor

    def done(self, error: BaseException | None) -> None:
        self.calls += 1
        self.fd_closed_at_done = is_closed(self.fd)
        self.finished.set_result(error)
        if self.close:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True
        if hasattr(self, "sender"):
            self.sender.pause()

    def resume_writing(self) -> None:
        self.paused = False
        if hasattr(self, "sender"):
            self.sender.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sender.cancel(exc)


async def serve(factory: Callable[[], Sending], ssl_context: ssl.SSLContext | None = None,
                ) -> tuple[asyncio.Server, int, list[Sending]]:
    made: list[Sending] = []

    def protocol() -> Sending:
        made.append(factory())
        return made[-1]

    server = await asyncio.get_running_loop().create_server(
        protocol, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1], made


async def raw_client(port: int, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def receive(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = bytearray()
    while len(chunks) < size:
        chunk = await loop.sock_recv(sock, min(size - len(chunks), MiB))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


async def settle(until: Callable[[], bool] | Awaitable[object], limit: float = 2) -> None:
    if not callable(until):
        await asyncio.wait_for(until, limit)
        return
    deadline = time.monotonic() + limit
    while not until() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("zero_copy", MODES)
@pytest.mark.parametrize(("size", "offset", "count"), [
    (10, 0, 10), (5 * MiB + 123, 0, 5 * MiB + 123), (3 * MiB, 1000, 2 * MiB + 7), (10, 3, 0),
])
def test_the_bytes_arrive_intact(tmp_path: Path, zero_copy: bool, size: int, offset: int,
                                 count: int) -> None:
    path, data = data_file(tmp_path, size)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % count

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, offset, count, zero_copy, head))
        sock = await raw_client(port)
        got = await receive(sock, len(head) + count + 1)  # + 1: up to the close
        await settle(made[0].finished)
        sock.close()
        server.close()
        sending = made[0]
        assert got == head + data[offset:offset + count]
        assert sending.finished.result() is None and sending.calls == 1
        assert sending.fd_closed_at_done and sending.sender.sent == count
        assert sending.sender.zero_copy is zero_copy

    run(main)


@pytest.mark.parametrize("zero_copy", MODES)
def test_what_the_transport_holds_goes_first(tmp_path: Path, zero_copy: bool) -> None:
    """Zero-copy writes behind the transport's back: it must wait for the transport's
    buffer to drain, or the file would overtake the bytes written before it."""
    path, data = data_file(tmp_path, 2 * MiB)
    before = os.urandom(2 * MiB)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, 2 * MiB, zero_copy,
                                                         sndbuf=64 * 1024, before=before))
        sock = await raw_client(port, rcvbuf=64 * 1024)
        await settle(lambda: bool(made))
        await asyncio.sleep(0.05)
        got = await receive(sock, 4 * MiB + 1)
        await settle(made[0].finished)
        sock.close()
        server.close()
        assert made[0].buffered_before > MiB  # the transport really held it
        assert got == before + data and made[0].finished.result() is None

    run(main)


@pytest.mark.parametrize("zero_copy", MODES)
def test_a_stalled_reader_costs_a_bounded_buffer_and_no_spinning(tmp_path: Path,
                                                                 zero_copy: bool) -> None:
    size = 16 * MiB
    path, data = data_file(tmp_path, size)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, size, zero_copy,
                                                         sndbuf=128 * 1024))
        sock = await raw_client(port, rcvbuf=64 * 1024)
        first = await receive(sock, 1000)
        await settle(lambda: bool(made))
        sending = made[0]
        peak = 0
        for _ in range(10):  # the reader is stalled: nothing more is read for 0.4 s
            await asyncio.sleep(0.01)
        wakeups, cpu = CountingSender.wakeups, time.process_time()
        for _ in range(30):
            await asyncio.sleep(0.01)
            peak = max(peak, sending.transport.get_write_buffer_size())
        assert CountingSender.wakeups - wakeups <= 5
        assert time.process_time() - cpu < 0.15
        assert peak < MiB and sending.sender.sent < size // 2
        assert not sending.finished.done()
        rest = await receive(sock, size - len(first))  # reading again: it goes on
        await settle(sending.finished)
        sock.close()
        server.close()
        assert first + rest == data and sending.finished.result() is None

    run(main)


def test_a_protocol_paused_before_the_sender_began_stops_it_too(tmp_path: Path) -> None:
    """The transport paused the protocol while writing what came before: no pause_writing
    will come again, and the fallback must still stop at the high-water mark."""
    size = 16 * MiB
    path, data = data_file(tmp_path, size)
    before = os.urandom(2 * MiB)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, size, False,
                                                         sndbuf=64 * 1024, before=before))
        sock = await raw_client(port, rcvbuf=64 * 1024)
        await settle(lambda: bool(made))
        await asyncio.sleep(0.2)
        sending = made[0]
        assert sending.paused and sending.sender.sent <= 256 * 1024
        got = await receive(sock, 2 * MiB + size + 1)
        await settle(sending.finished)
        sock.close()
        server.close()
        assert got == before + data and sending.finished.result() is None

    run(main)


@pytest.mark.parametrize("zero_copy", MODES)
def test_a_client_that_leaves_mid_file_ends_the_send(tmp_path: Path, zero_copy: bool) -> None:
    size = 32 * MiB
    path, _ = data_file(tmp_path, size)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, size, zero_copy,
                                                         sndbuf=128 * 1024))
        sock = await raw_client(port, rcvbuf=64 * 1024)
        await receive(sock, 100_000)
        sock.close()  # unread bytes left: the kernel resets the connection
        await settle(lambda: bool(made) and made[0].finished.done())
        server.close()
        sending = made[0]
        assert isinstance(sending.finished.result(), OSError)
        assert sending.fd_closed_at_done and sending.calls == 1
        assert sending.sender.sent < size

    run(main)


def test_cancel_closes_the_file_and_reports_once(tmp_path: Path) -> None:
    path, _ = data_file(tmp_path, 8 * MiB)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, 8 * MiB, False,
                                                         close=False))
        sock = await raw_client(port, rcvbuf=64 * 1024)
        await receive(sock, 1000)
        sending = made[0]
        sending.sender.cancel()
        sending.sender.cancel()
        assert isinstance(sending.finished.result(), ConnectionAbortedError)
        assert sending.calls == 1 and sending.fd_closed_at_done and sending.sender.finished
        sock.close()
        server.close()

    run(main)


@pytest.mark.parametrize("zero_copy", MODES)
def test_a_file_shorter_than_promised_is_an_error(tmp_path: Path, zero_copy: bool) -> None:
    path, _ = data_file(tmp_path, 1000)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, 5000, zero_copy))
        sock = await raw_client(port)
        got = await receive(sock, 5000)
        await settle(made[0].finished)
        sock.close()
        server.close()
        assert len(got) == 1000
        assert isinstance(made[0].finished.result(), FileTruncated)

    run(main)


def test_an_idle_connection_after_a_zero_copy_send_does_not_spin(tmp_path: Path) -> None:
    """The duplicate socket leaves the event loop's poll set before it is closed: a stale
    epoll registration would wake the loop for ever while the connection stays open."""
    path, data = data_file(tmp_path, MiB)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, MiB, True, close=False))
        sock = await raw_client(port)
        assert await receive(sock, MiB) == data
        await settle(made[0].finished)
        cpu = time.process_time()
        await asyncio.sleep(0.4)
        assert time.process_time() - cpu < 0.15
        sock.close()
        server.close()

    run(main)


def test_tls_takes_the_fallback_and_arrives_intact(tmp_path: Path) -> None:
    size = 3 * MiB + 5
    path, data = data_file(tmp_path, size)
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def main() -> None:
        server, port, made = await serve(lambda: Sending(path, 0, size, None), server_context)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="localhost")
        got = await reader.readexactly(size)
        await settle(made[0].finished)
        writer.close()
        server.close()
        assert got == data and made[0].finished.result() is None
        assert not can_zero_copy(made[0].transport) and not made[0].sender.zero_copy

    run(main)
