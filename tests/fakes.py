"""A transport without a socket, for driving the proxy's protocols in-process (as uvicorn
tests its own): it records what the protocol does to it, and lets a test play the peer
(bytes, EOF, a reset) and the kernel (a full send buffer)."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeTransport(asyncio.Transport):
    """Records writes, closes and reading pauses; :meth:`block` (or :meth:`hold_writes`)
    and :meth:`unblock` play a send buffer filling past its high-water mark and draining.

    As asyncio's own transports: writes after ``close()`` are dropped, ``connection_lost``
    reaches the protocol current at that time on a later loop iteration, and only once;
    a protocol whose ``eof_received`` returns a false value gets its transport closed.
    Unlike them, a close does not wait for held bytes to drain.
    """

    def __init__(self, peername: tuple[str, int] = ("192.0.2.7", 50123),
                 sockname: tuple[str, int] = ("127.0.0.1", 8080), *,
                 can_eof: bool = True) -> None:
        super().__init__({"peername": peername, "sockname": sockname})
        self.protocol: asyncio.BaseProtocol | None = None
        self.written = bytearray()
        self.dropped = bytearray()
        """Bytes written after ``close()``: a real transport drops them too."""
        self.reading = True
        self.closing = False
        self.aborted = False
        self.eof_written = False
        self.high_water: int | None = None
        self.buffered = 0
        self.holding = False
        self.paused_writing = False
        self._can_eof = can_eof
        self._lost = False

    # -- the test's side ----------------------------------------------------------------------

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Give the transport to ``protocol``, as a connected socket does."""
        self.set_protocol(protocol)
        protocol.connection_made(self)

    def take(self) -> bytes:
        """What was written since the last ``take``."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def feed(self, data: bytes) -> None:
        """Bytes from the peer; a paused transport would not deliver them, so it is an error."""
        assert self.reading, "bytes fed to a transport whose reading is paused"
        assert not self.closing, "bytes fed to a closing transport"
        self._protocol().data_received(data)

    def feed_eof(self) -> None:
        """The peer shut down its side (a closing transport reads nothing, as uvloop's TCP
        transports; its TLS ones may still tell an EOF met while closing)."""
        if self.closing:
            return
        if not self._protocol().eof_received():
            self.close()

    def reset(self) -> None:
        """The peer went away at once (a reset)."""
        self.closing = True
        self._schedule_lost(ConnectionResetError("reset by the fake peer"))

    def block(self) -> None:
        """The send buffer passes the high-water mark: the protocol must stop feeding it."""
        assert not self.paused_writing, "already blocked"
        self.buffered = self._high() + 1
        self.paused_writing = True
        self._protocol().pause_writing()

    def hold_writes(self) -> None:
        """The peer stops reading: what is written stays buffered, and the write that takes
        the buffer past the high-water mark calls ``pause_writing`` (from inside
        ``write``, as asyncio's transports do)."""
        self.holding = True

    def unblock(self) -> None:
        """The peer reads everything: the buffer drains (``resume_writing`` if it was over)."""
        self.holding = False
        self.drain_to(0)

    def drain_to(self, size: int) -> None:
        """The peer reads some: ``size`` bytes stay buffered. As asyncio's transports, a
        paused transport resumes only once it is down to its low-water mark (a quarter of
        the high): above that it stays paused, though under the high-water mark."""
        self.buffered = size
        if self.paused_writing and size <= self._high() // 4:
            self.paused_writing = False
            self._protocol().resume_writing()

    def _high(self) -> int:
        return 64 * 1024 if self.high_water is None else self.high_water

    def _protocol(self) -> Any:
        assert self.protocol is not None, "no protocol attached"
        return self.protocol

    def _schedule_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            asyncio.get_running_loop().call_soon(self._call_lost, exc)

    def _call_lost(self, exc: Exception | None) -> None:
        """As uvloop's and asyncio's transports, it lets go of its protocol after telling
        it (no cycle between the two is left for the collector)."""
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)

    # -- asyncio.Transport --------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.closing:
            self.dropped.extend(data)
            return
        self.written.extend(data)
        if self.holding:
            self.buffered += len(data)
            if self.buffered > self._high() and not self.paused_writing:
                self.paused_writing = True
                self._protocol().pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if not self._can_eof:
            raise NotImplementedError("this transport cannot write EOF (TLS)")
        if not self.closing:
            self.eof_written = True

    def can_write_eof(self) -> bool:
        return self._can_eof

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self._schedule_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.closing = True
        self._schedule_lost(None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = high

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._high() // 4, self._high()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        protocol = self.protocol
        assert protocol is not None, "no protocol attached"
        return protocol
