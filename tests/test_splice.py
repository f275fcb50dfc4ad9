"""The C tunnel core (``wsgate.proxy._splice``) on its own, over real loopback TCP sockets:
bytes both ways and their counts, backpressure with at most one read kept, EOF and errors
left to the transports, the upstream's Close frame, the kept bytes handed back in order,
and its frame cursor, step for step the same as :class:`~wsgate.proxy.frames.Cursor`.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_frames import SETTINGS, Case, cut_streams
from wsgate import runtime
from wsgate.proxy import splice as splicing
from wsgate.proxy.frames import Cursor

core_module = pytest.importorskip("wsgate.proxy._splice")
Core, Splice = core_module.Core, core_module.Splice
CLIENT, UPSTREAM = splicing.CLIENT, splicing.UPSTREAM
Event = tuple[int, int, int]


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection (the connecting end first)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        connecting = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return connecting, accepted


class Rig:
    """A client and an upstream connection, their proxy-side ends joined by a Splice on a
    Core that the running loop polls. ``client`` and ``upstream`` are the far ends."""

    def __init__(self, left: int = 0, held: bytes = b"", closed: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.client, self.client_near = tcp_pair()
        self.upstream_near, self.upstream = tcp_pair()
        self.socks = [self.client, self.client_near, self.upstream_near, self.upstream]
        for sock in self.socks:
            sock.setblocking(False)
        self.core = Core()
        self.loop.add_reader(self.core.fileno(), self.core.poll)
        self.events: list[Event] = []
        self.splice = Splice(self.core, self.client_near.fileno(), self.upstream_near.fileno(),
                             self.on_event, left, held, closed)

    def on_event(self, kind: int, side: int, error: int) -> None:
        self.events.append((kind, side, error))

    def close(self) -> None:
        self.splice.stop()
        self.loop.remove_reader(self.core.fileno())
        self.core.close()
        for sock in self.socks:
            sock.close()

    async def send(self, sock: socket.socket, data: bytes) -> None:
        await self.loop.sock_sendall(sock, data)

    async def read(self, sock: socket.socket, size: int, limit: float = 5.0) -> bytes:
        data = bytearray()
        async with asyncio.timeout(limit):
            while len(data) < size:
                chunk = await self.loop.sock_recv(sock, size - len(data))
                if not chunk:
                    break
                data += chunk
        return bytes(data)


def one_frame(size: int) -> bytes:
    """A binary frame of ``size`` random bytes (the upstream direction is read as frames:
    random bytes would soon hold a Close frame's first byte)."""
    return b"\x82\x7f" + size.to_bytes(8, "big") + os.urandom(size)


def run(test: Callable[[Rig], Awaitable[None]], **cursor: Any) -> None:
    """Run ``test`` on uvloop (as the proxy does) with a fresh rig, closed afterwards."""
    async def main() -> None:
        rig = Rig(**cursor)
        try:
            await test(rig)
        finally:
            rig.close()

    runtime.run(main())


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.002)


def test_the_python_side_numbers_events_and_sides_as_the_core_does() -> None:
    names = ("CLIENT", "UPSTREAM", "WAKE", "FAILED", "STALLED", "FLOWING")
    assert [getattr(splicing, name) for name in names] == [getattr(core_module, name)
                                                            for name in names]


def test_bytes_pass_both_ways_in_order_and_are_counted() -> None:
    async def test(rig: Rig) -> None:
        up = [bytes([n % 256]) * n for n in range(1, 200)]
        down = [one_frame(n * 37) for n in range(1, 100)]
        for piece in up:
            await rig.send(rig.client, piece)
        for piece in down:
            await rig.send(rig.upstream, piece)
        assert await rig.read(rig.upstream, sum(map(len, up))) == b"".join(up)
        assert await rig.read(rig.client, sum(map(len, down))) == b"".join(down)
        assert rig.splice.client_received == sum(map(len, up))
        assert rig.splice.upstream_received == sum(map(len, down))
        assert rig.events == [] and rig.splice.running and rig.splice.pending == 0
        assert rig.splice.stop() == (b"", b"")
        assert rig.core.members == 0 and not rig.splice.running
        await rig.send(rig.client, b"after")  # no longer served: it waits in the socket
        await asyncio.sleep(0.05)
        assert rig.client_near.recv(100) == b"after"

    run(test)


def test_a_slow_reader_stops_the_core_reading_with_one_read_kept_at_most() -> None:
    async def test(rig: Rig) -> None:
        payload = one_frame(16 << 20)
        sender = asyncio.ensure_future(rig.send(rig.upstream, payload))
        await until(lambda: (splicing.STALLED, CLIENT, 0) in rig.events)
        stuck = rig.splice.upstream_received
        kept = rig.splice.pending
        assert 0 < kept <= core_module.CHUNK
        await asyncio.sleep(0.1)
        assert rig.splice.upstream_received == stuck  # the upstream is not read meanwhile
        assert not sender.done()
        received = bytearray()
        while len(received) < len(payload):
            received += await rig.read(rig.client, min(1 << 16, len(payload) - len(received)))
            assert rig.splice.pending <= core_module.CHUNK
        await sender
        assert bytes(received) == payload
        assert rig.splice.upstream_received == len(payload)
        await until(lambda: rig.splice.pending == 0)
        stalls = [event for event in rig.events if event[0] == splicing.STALLED]
        flows = [event for event in rig.events if event[0] == splicing.FLOWING]
        assert stalls and flows == [(splicing.FLOWING, CLIENT, 0)] * len(stalls)
        assert rig.events[0][0] == splicing.STALLED and rig.events[-1][0] == splicing.FLOWING

    run(test)


def test_taken_back_while_stalled_the_kept_bytes_come_in_order() -> None:
    async def test(rig: Rig) -> None:
        payload = one_frame(16 << 20)
        sender = asyncio.ensure_future(rig.send(rig.upstream, payload))
        await until(lambda: rig.splice.pending > 0)
        read_by_core = rig.splice.upstream_received
        to_client, to_upstream = rig.splice.stop()
        assert to_upstream == b"" and 0 < len(to_client) <= core_module.CHUNK
        assert rig.splice.pending == 0 and rig.core.members == 0
        delivered = await rig.read(rig.client, read_by_core - len(to_client))
        assert delivered + to_client == payload[:read_by_core]
        # The rest was never read: it is still the upstream socket's.
        rest = await rig.read(rig.upstream_near, len(payload) - read_by_core)
        await sender
        assert delivered + to_client + rest == payload

    run(test)


def test_eof_halts_the_splice_and_stays_for_the_transport() -> None:
    async def test(rig: Rig) -> None:
        await rig.send(rig.client, b"last words")
        rig.client.shutdown(socket.SHUT_WR)
        await until(lambda: bool(rig.events))
        assert rig.events == [(splicing.WAKE, CLIENT, 0)]
        assert not rig.splice.running and rig.core.members == 1  # until its owner stops it
        assert await rig.read(rig.upstream, 10) == b"last words"
        assert rig.client_near.recv(10) == b""  # the EOF was not taken
        assert rig.splice.stop() == (b"", b"")

    run(test)


@pytest.mark.parametrize("side", [CLIENT, UPSTREAM])
def test_a_reset_halts_the_splice_and_the_error_stays_the_sockets(side: int) -> None:
    async def test(rig: Rig) -> None:
        far, near = (rig.client, rig.client_near) if side == CLIENT else (rig.upstream,
                                                                           rig.upstream_near)
        far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        far.close()
        await until(lambda: bool(rig.events))
        assert rig.events == [(splicing.WAKE, side, 0)]
        with pytest.raises(ConnectionResetError):
            near.recv(10)

    run(test)


def test_a_failed_send_is_told_with_its_errno() -> None:
    async def test(rig: Rig) -> None:
        rig.upstream_near.shutdown(socket.SHUT_WR)
        await rig.send(rig.client, b"nowhere to go")
        await until(lambda: bool(rig.events))
        assert rig.events == [(splicing.FAILED, UPSTREAM, errno.EPIPE)]
        assert rig.splice.client_received == 13  # read and counted, as the transports would

    run(test)


def test_the_upstreams_close_frame_halts_the_splice_after_passing() -> None:
    async def test(rig: Rig) -> None:
        stream = b"\x81\x02hi" + b"\x88\x02\x03\xe8"
        await rig.send(rig.upstream, stream)
        assert await rig.read(rig.client, len(stream)) == stream
        await until(lambda: bool(rig.events))
        assert rig.events == [(splicing.WAKE, UPSTREAM, 0)]
        assert (rig.splice.left, rig.splice.held, rig.splice.closed) == (0, b"", True)

    run(test)


def test_the_cursor_goes_in_and_comes_out() -> None:
    async def test(rig: Rig) -> None:
        # Half a header held (a 16-bit length cut after its first byte): 300 bytes to come.
        await rig.send(rig.upstream, b"\x01\x2c" + b"x" * 100)
        await rig.read(rig.client, 102)
        assert (rig.splice.left, rig.splice.held, rig.splice.closed) == (200, b"", False)
        assert rig.events == []

    run(test, held=b"\x82\x7e")


def test_a_cursor_no_cursor_can_be_in_is_refused() -> None:
    core = Core()
    a, b = socket.socketpair()
    with a, b:
        for left, held in ((0, b"\x81\x00"), (5, b"\x81"), (0, b"\x81\x7f" + b"\0" * 12)):
            with pytest.raises(ValueError):
                Splice(core, a.fileno(), b.fileno(), print, left, held, False)
        with pytest.raises(ValueError):
            Splice(core, a.fileno(), a.fileno(), print, 0, b"", False)
        for left in (-1, 1 << 64):  # past 64 bits (a Cursor can be): the tunnel stays Python
            with pytest.raises(OverflowError):
                Splice(core, a.fileno(), b.fileno(), print, left, b"", False)
        with pytest.raises(OSError):
            Splice(core, a.fileno(), 10_000, print, 0, b"", False)
        assert core.members == 0
        splice = Splice(core, a.fileno(), b.fileno(), print, 0, b"", False)
        assert core.members == 1  # the failed attempts left nothing in the epoll set
        splice.stop()
    core.close()


def test_no_reference_is_leaked_and_cycles_are_collected() -> None:
    def callback(kind: int, side: int, error: int) -> None:
        pass

    core = Core()
    a, b = socket.socketpair()
    before = sys.getrefcount(callback), sys.getrefcount(core)
    for _ in range(100):
        splice = Splice(core, a.fileno(), b.fileno(), callback, 0, b"", False)
        splice.stop()
        splice.stop()  # twice is once
    del splice
    assert (sys.getrefcount(callback), sys.getrefcount(core)) == before

    class Owner:
        splice: Any = None

        def on_event(self, kind: int, side: int, error: int) -> None:
            pass

    owner = Owner()
    owner.splice = Splice(core, a.fileno(), b.fileno(), owner.on_event, 0, b"", False)
    del owner  # a cycle through the bound method: only the collector frees it
    gc.collect()
    assert core.members == 0 and sys.getrefcount(core) == before[1]
    a.send(b"x")  # the collected splice left the epoll set, and the fds are open
    assert b.recv(1) == b"x"
    a.close()
    b.close()
    core.close()


def test_a_core_with_splices_does_not_close() -> None:
    core = Core()
    a, b = socket.socketpair()
    with a, b:
        splice = Splice(core, a.fileno(), b.fileno(), print, 0, b"", False)
        with pytest.raises(RuntimeError):
            core.close()
        splice.stop()
    core.close()
    core.close()
    core.poll()  # a closed core serves nothing


# -- the cursor, against frames.Cursor ------------------------------------------------------

def cursor_states(case: Case) -> Iterator[tuple[tuple[int, bytes, bool], tuple[int, bytes, bool]]]:
    """After each read: (frames.Cursor's state, the C cursor's state)."""
    cursor = Cursor()
    state: tuple[int, bytes, bool] = (0, b"", False)
    for read in case.reads:
        cursor.advance(read)
        state = core_module.advance(*state, read)
        yield (cursor.left, cursor.held, cursor.closed), state


@SETTINGS
@given(cut_streams())
def test_the_c_cursor_is_frames_cursor(case: Case) -> None:
    for python, c in cursor_states(case):
        assert c == python


@SETTINGS
@given(st.binary(max_size=64), st.lists(st.integers(1, 12), max_size=12))
def test_the_c_cursor_is_frames_cursor_on_any_bytes(data: bytes, cuts: list[int]) -> None:
    """Not only frames: whatever the upstream sends, both read it the same way."""
    cursor = Cursor()
    state: tuple[int, bytes, bool] = (0, b"", False)
    position = 0
    for size in [*cuts, len(data)]:
        read = data[position:position + size]
        position += len(read)
        cursor.advance(read)
        state = core_module.advance(*state, read)
        assert state == (cursor.left, cursor.held, cursor.closed)


def test_the_c_cursor_counts_past_64_bits() -> None:
    header = b"\x82\x7f" + b"\xff" * 8
    python = Cursor()
    python.advance(header)
    assert core_module.advance(0, b"", False, header) == (python.left, b"", False)
    assert python.left == (1 << 64) - 1
