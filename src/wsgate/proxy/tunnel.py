"""Two transports joined after a 101: bytes both ways, backpressure, idle timer, close.

This is the data path of every proxied WebSocket, so a read does the least there is: hand
the bytes to the other transport and count them. Backpressure is the transports' own
(:mod:`~wsgate.proxy.flow`): when one side's write buffer passes its high-water mark, the
other side stops reading, so no more than a fixed bound is ever buffered per direction.
The idle timer does not re-arm per read; it wakes every quarter of ``read_timeout`` and
compares byte counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wsgate.proxy.flow import WRITE_HIGH_WATER, Stall

IDLE_TICKS = 4


class TunnelEnd(asyncio.Protocol):
    """One side of a tunnel: what it reads goes to ``other``, what it cannot write stops
    ``other`` from reading."""

    __slots__ = ("closing", "full", "other", "received", "transport", "tunnel")

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.other: asyncio.Transport = transport
        self.received = 0
        self.closing = False
        self.full = False
        """Our transport paused writing: ``other`` is not read until it resumes."""

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.other.write(data)

    def eof_received(self) -> bool:
        """Half-close: pass the EOF on after what is buffered (TLS cannot: close both)."""
        if self.other.can_write_eof() and not self.other.is_closing():
            self.other.write_eof()
            self.closing = True
            if self.tunnel.both_closing():
                self.tunnel.close()
            return True
        self.tunnel.close()
        return False

    def pause_writing(self) -> None:
        self.full = True
        self.other.pause_reading()
        self.tunnel.stall.begin(self.tunnel.abort)

    def resume_writing(self) -> None:
        self.full = False
        if not self.other.is_closing():
            self.other.resume_reading()
        self.tunnel.stall.end()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.tunnel.close()


class Tunnel:
    """A client and an upstream transport joined; ``on_close`` runs once, at the end."""

    __slots__ = ("_idle", "_last", "_loop", "_timer", "client", "closed", "on_close",
                 "read_timeout", "stall", "upstream")

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        read_timeout: float,
        send_timeout: float,
        on_close: Callable[[Tunnel], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.client = TunnelEnd(self, client)
        self.upstream = TunnelEnd(self, upstream)
        self.client.other = upstream
        self.upstream.other = client
        self.read_timeout = read_timeout
        self.stall = Stall(send_timeout)
        """nginx's send_timeout: a side that takes no byte for that long ends the tunnel."""
        self.on_close = on_close
        self.closed = False
        self._last = -1
        self._idle = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, from_client: bytes, from_upstream: bytes,
              full: tuple[bool, bool] = (False, False)) -> None:
        """Switch both transports to the tunnel and deliver bytes pipelined after the heads.

        Both are paused when this is called. ``full``: whether the client's and the
        upstream's transports had paused writing under their old protocols (asyncio keeps
        a transport paused until it drains under its low-water mark, then tells only the
        new protocol): such a side is counted as stuck from the start. Reading resumes
        only where the other side can take more, the pipelined bytes counted.
        """
        for end in (self.client, self.upstream):
            end.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            end.transport.set_protocol(end)
        for end, was_full in zip((self.client, self.upstream), full, strict=True):
            if was_full:
                end.pause_writing()
        if from_client:
            self.client.data_received(from_client)
        if from_upstream:
            self.upstream.data_received(from_upstream)
        for end, other in ((self.client, self.upstream), (self.upstream, self.client)):
            if not end.transport.is_closing() and not other.full:
                end.transport.resume_reading()
        if self.read_timeout > 0:
            self._timer = self._loop.call_later(self.read_timeout / IDLE_TICKS, self._tick)

    def _tick(self) -> None:
        """Close after ``read_timeout`` with no byte either way, as nginx's tunnel does."""
        moved = self.client.received + self.upstream.received
        if moved != self._last:
            self._last = moved
            self._idle = 0
        else:
            self._idle += 1
            if self._idle >= IDLE_TICKS:
                self._timer = None
                self.close()
                return
        self._timer = self._loop.call_later(self.read_timeout / IDLE_TICKS, self._tick)

    def close_idle(self) -> None:
        """For shutdown: a tunnel is never idle in nginx's sense; it runs until the grace
        period is over (or it ends on its own)."""

    def abort(self) -> None:
        """End now, dropping what is buffered: the side that stalled will not take it."""
        self.close(abort=True)

    def both_closing(self) -> bool:
        return self.client.closing and self.upstream.closing

    def close(self, abort: bool = False) -> None:
        """Close both sides after their buffered bytes are written (or at once, with
        ``abort``); report once."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.stall.cancel()
        for end in (self.client, self.upstream):
            if abort:
                end.transport.abort()
            else:
                end.transport.close()
        self.on_close(self)
