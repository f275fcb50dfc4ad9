"""Two transports joined after a 101: bytes both ways, backpressure, idle timer, close.

This is the data path of every proxied WebSocket, so a read does the least there is: hand
the bytes to the other transport and count them; upstream→client, also move a
:class:`~wsgate.proxy.frames.Cursor` past them, so the proxy always knows where the next
frame starts and can end the tunnel with a Close frame that splits none
(:meth:`Tunnel.going_away`). Backpressure is the transports' own
(:mod:`~wsgate.proxy.flow`): when one side's write buffer passes its high-water mark, the
other side stops reading, so no more than a fixed bound is ever buffered per direction.
The idle timer does not re-arm per read; it wakes every quarter of ``read_timeout`` and
compares byte counts. Why a tunnel ended (:class:`Why`) is decided once, by its first
cause, on the closing path only.

Where the compiled core is built, a tunnel's steady state runs in C (plain TCP, or a TLS
client's over uvloop: :mod:`~wsgate.proxy.splice`): its transports are paused with empty
write buffers while the core moves and counts the bytes and moves the cursor. Everything
else is decided here: any other event takes the tunnel back to its transports first
(:meth:`_take_back`), and this code goes on as if it had read every byte itself.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from wsgate.proxy import splice as splicing
from wsgate.proxy.flow import WRITE_HIGH_WATER, Stall
from wsgate.proxy.frames import Cursor, close_frame

if TYPE_CHECKING:
    from wsgate.proxy._splice import Splice

IDLE_TICKS = 4
CLOSE_TIMEOUT = 10.0
"""After the proxy's Close frame, how long the close handshake may take (websockets'
default close_timeout): a client that never answers does not hold the tunnel."""


class Why(enum.Enum):
    """Why a tunnel ended, as the metrics count it (the first cause wins)."""

    CLIENT = "client"
    """The client began the end: its Close frame came first, or its side closed first."""
    UPSTREAM = "upstream"
    IDLE_TIMEOUT = "idle_timeout"
    """No byte either way for ``read_timeout``."""
    SEND_TIMEOUT = "send_timeout"
    """A side took no byte for ``send_timeout``."""
    SHUTDOWN = "shutdown"
    DRAIN = "drain"
    """Its server was removed, marked down or drained."""
    ERROR = "error"
    """A socket error (a reset), or an end with no other cause."""


class State(enum.Enum):
    OPEN = "open"
    FROZEN = "frozen"
    """Neither side is read, so its sockets can move to another process."""
    ENDING = "ending"
    """A Close frame went (or is about to go) to the client; only its answer passes."""
    CLOSED = "closed"


class TunnelEnd(asyncio.Protocol):
    """One side of a tunnel: what it reads goes to ``other``, what it cannot write stops
    ``other`` from reading."""

    __slots__ = ("closing", "count", "full", "other", "side", "splice", "transport", "tunnel")

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport,
                 side: int = splicing.CLIENT) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.other: asyncio.Transport = transport
        self.count = 0
        """Bytes this protocol read (:attr:`received` adds the C core's)."""
        self.side = side
        self.splice: Splice | None = None
        """The tunnel's splice while the C core serves it (both ends hold it)."""
        self.closing = False
        self.full = False
        """Our transport paused writing: ``other`` is not read until it resumes."""

    @property
    def received(self) -> int:
        """Bytes read from this side, by the transport or by the C core (read, not taken
        back, so the idle timer and the metrics cost the core nothing)."""
        splice = self.splice
        if splice is None:
            return self.count
        if self.side == splicing.CLIENT:
            return self.count + splice.client_received
        return self.count + splice.upstream_received

    @received.setter
    def received(self, value: int) -> None:
        self.count += value - self.received

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        self.other.write(data)

    def eof_received(self) -> bool:
        """Half-close: pass the EOF on after what is buffered (TLS cannot: close both)."""
        self.tunnel.unsplice()  # told directly after a handover (handover.adopt)
        self.tunnel.ended_by(self, None)
        if self.other.can_write_eof() and not self.other.is_closing():
            self.other.write_eof()
            self.closing = True
            if self.tunnel.both_closing():
                self.tunnel.close()
            # A TLS side closes itself whatever this says (and asyncio warns at True).
            return self.transport.can_write_eof()
        self.tunnel.close()
        return False

    def pause_writing(self) -> None:
        self.full = True
        self.other.pause_reading()
        self.tunnel.stall.begin(self.tunnel.send_timed_out)

    def resume_writing(self) -> None:
        self.full = False
        if not self.other.is_closing() and self.tunnel.state is not State.FROZEN:
            self.other.resume_reading()
        self.tunnel.stall.end()
        self.tunnel._try_splice()

    def connection_lost(self, exc: Exception | None) -> None:
        tunnel = self.tunnel
        tunnel.unsplice()
        self.closing = True
        tunnel.ended_by(self, exc)
        tunnel.close()
        self.let_go()

    def let_go(self) -> None:
        """Its transport is gone, so nothing calls this end again: it lets go of the
        tunnel, which ends their reference cycle. A tunnel and its ends then go by
        reference count as it closes, not at a collection that they would have survived
        into the older generations for (a storm of handshakes spent 39 µs per handshake in
        the collector with them, 22 without)."""
        del self.tunnel


class UpstreamEnd(TunnelEnd):
    """The upstream's side: it also knows where the frames it relays end."""

    __slots__ = ("cursor",)

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport) -> None:
        super().__init__(tunnel, transport, splicing.UPSTREAM)
        self.cursor = Cursor()

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.count += n
        self.other.write(data)
        cursor = self.cursor
        i = cursor.left
        if i >= n:  # inside one frame
            cursor.left = i - n
        elif (n - i > 1 and data[i + 1] < 126 and i + 2 + data[i + 1] == n
              and data[i] != 0x88 and not cursor.held):
            cursor.left = 0  # the usual small message: one short frame ends the read
        else:
            cursor.advance(data)

    def eof_received(self) -> bool:
        self.tunnel.unsplice()
        if self.cursor.closed:  # after its Close frame: the usual end, passed on
            return super().eof_received()
        self.tunnel.upstream_died(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.unsplice()
        if exc is not None and not self.closing and not self.cursor.closed:
            self.closing = True
            self.tunnel.upstream_died(exc)
            self.let_go()
            return
        super().connection_lost(exc)


class _Ending(asyncio.Protocol):
    """The upstream's side once the tunnel is ending: the rest of the frame in flight, then
    the proxy's Close frame, then nothing (the upstream's own Close answers the client's).
    If the upstream's Close went first, that one ends the stream and the proxy adds none."""

    __slots__ = ("end", "frame", "passing")

    def __init__(self, end: UpstreamEnd, frame: bytes | None) -> None:
        self.end = end
        self.frame = frame
        self.passing = True
        """Until the frame in flight has passed."""

    def relay(self, data: bytes = b"") -> None:
        if not self.passing:
            return
        end = self.end
        cut = end.cursor.boundary_in(data)
        if cut > len(data):
            if data:
                end.data_received(data)
            return
        if cut:
            end.data_received(data[:cut])
        self.passing = False
        if self.frame is not None and not end.cursor.closed:  # the upstream's went first
            end.other.write(self.frame)
        self.frame = None

    def data_received(self, data: bytes) -> None:
        self.relay(data)

    def eof_received(self) -> bool:
        self.end.tunnel.ended_by(self.end, None)
        self.end.tunnel.close()
        return False

    def pause_writing(self) -> None:
        self.end.pause_writing()

    def resume_writing(self) -> None:
        self.end.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.end.connection_lost(exc)


class Tunnel:
    """A client and an upstream transport joined; ``on_close`` runs once, at the end."""

    __slots__ = ("_close_timer", "_idle", "_last", "_loop", "_mark", "_splicable", "_timer",
                 "_tls", "client", "on_close", "read_timeout", "reason", "stall", "state",
                 "upstream")

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
        self.upstream = UpstreamEnd(self, upstream)
        self.client.other = upstream
        self.upstream.other = client
        self.read_timeout = read_timeout
        self.stall = Stall(send_timeout)
        """nginx's send_timeout: a side that takes no byte for that long ends the tunnel."""
        self.on_close = on_close
        self.state = State.OPEN
        self._last = -1
        self._idle = 0
        self._timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self.reason: Why | None = None
        self._mark = -1
        """The client's byte count when the upstream's Close frame passed (-1: none has)."""
        self.upstream.cursor.on_close = self._upstream_close_frame
        self._splicable = False
        """Whether the C core may serve both sockets (known at start)."""
        self._tls: splicing.TlsSession | None = None
        """The client's TLS session, for the core (where the client speaks TLS)."""

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def splice(self) -> Splice | None:
        """The C core's hold on this tunnel, while it has one."""
        return self.client.splice

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
        ct = self.client.transport
        if splicing.ENABLED and splicing.plain_socket(self.upstream.transport) is not None:
            self._tls = splicing.tls_session(ct)
            self._splicable = self._tls is not None or splicing.plain_socket(ct) is not None
        if not self._try_splice():
            self._resume()
        if self.read_timeout > 0:
            self._timer = self._loop.call_later(self.read_timeout / IDLE_TICKS, self._tick)

    def _resume(self) -> None:
        for end, other in ((self.client, self.upstream), (self.upstream, self.client)):
            if not end.transport.is_closing() and not other.full:
                end.transport.resume_reading()

    def _tick(self) -> None:
        """Close after ``read_timeout`` with no byte either way, as nginx's tunnel does."""
        moved = self.client.received + self.upstream.received
        if moved != self._last or self.state is State.FROZEN:  # frozen is not idle
            self._last = moved
            self._idle = 0
        else:
            self._idle += 1
            if self._idle >= IDLE_TICKS:
                self._timer = None
                self.reason = self.reason or Why.IDLE_TIMEOUT
                self.close()
                return
        self._timer = self._loop.call_later(self.read_timeout / IDLE_TICKS, self._tick)
        if self.splice is None:  # one that could not be spliced at its last chance
            self._try_splice()

    # -- the C core ------------------------------------------------------------------------

    def _try_splice(self) -> bool:
        """Hand the tunnel to the C core if it can take it now: open, both sides read,
        nothing waiting in a write buffer (so its sends cannot overtake the transports'),
        and no Close frame from the upstream yet (the end is this code's). Returns whether
        it did. Tried at the start, at a thaw, when a stalled side drains, at idle ticks."""
        if not self._splicable or self.splice is not None or self.state is not State.OPEN:
            return False
        client, upstream = self.client, self.upstream
        if client.full or upstream.full or client.closing or upstream.closing:
            return False
        ct, ut, tls = client.transport, upstream.transport, self._tls
        if (upstream.cursor.closed or ct.is_closing() or ut.is_closing()
                or ut.get_write_buffer_size()
                or (ct.get_write_buffer_size() if tls is None else tls.backlog(ct))):
            return False
        client_fd = tls.fd if tls is not None else splicing.plain_socket(ct)
        upstream_fd = splicing.plain_socket(ut)
        if client_fd is None or upstream_fd is None:
            self._splicable = False
            return False
        try:
            splice = splicing.join(self._loop, client_fd, upstream_fd, self._spliced,
                                   upstream.cursor, tls)
        except (OSError, ValueError, OverflowError):
            # a cursor it cannot hold, an fd limit, TLS records buffered: the next chance
            return False
        client.splice = upstream.splice = splice
        ct.pause_reading()
        ut.pause_reading()
        if tls is not None:
            tls.raw.pause_reading()  # uvloop's TLS reads on while only its app is paused
        return True

    def _take_back(self) -> None:
        """The tunnel goes back to its transports: the core's byte counts and frame
        position become the ends' own, and the bytes it read but could not send go first
        into the write buffers (empty while it served them, so the order holds). Reading
        stays paused: what comes next decides (:meth:`_resume`, or not)."""
        client, upstream = self.client, self.upstream
        splice = client.splice
        if splice is None:
            return
        client.splice = upstream.splice = None
        client.count += splice.client_received
        upstream.count += splice.upstream_received
        to_client, to_upstream = splicing.part(self._loop, splice)
        cursor = upstream.cursor
        cursor.left, cursor.held = splice.left, splice.held
        if splice.closed and not cursor.closed:
            cursor.closed = True
            self._upstream_close_frame()
        tls = self._tls
        if tls is not None:  # to_client is TLS records: under uvloop's TLS, never through it
            if not tls.raw.is_closing():
                if to_client:
                    tls.raw.write(to_client)
                tls.raw.resume_reading()  # uvloop's TLS buffers; its app's reading tells
            to_client = b""
        for end, kept in ((client, to_client), (upstream, to_upstream)):
            if kept and not end.transport.is_closing():
                end.transport.write(kept)
            if end.full:  # the core's stall: from here the transport's flow control tells
                end.full = False
                self.stall.end()

    def unsplice(self) -> None:
        """Back to the transports, reading as they would be had they read every byte: for
        an event they were told directly (an EOF or a close that came during a handover)."""
        if self.splice is not None:
            self._take_back()
            self._resume()

    def _spliced(self, kind: int, side: int, error: int) -> None:
        """What the C core tells: a side stopped or started taking bytes (the Stall timer
        is the same as the transports'), or it stopped serving the tunnel: the transports
        read the EOF, or the rest, themselves; a socket error it met is the transport's,
        as if its own read or write had failed."""
        end = self.client if side == splicing.CLIENT else self.upstream
        if kind == splicing.STALLED:
            end.full = True
            self.stall.begin(self.send_timed_out)
            return
        if kind == splicing.FLOWING:
            end.full = False
            self.stall.end()
            return
        splice = self.splice
        self._take_back()
        if kind == splicing.FAILED:
            # uvloop's own path for a failed read or write: closed, connection_lost(exc);
            # a TLS client's socket is its TCP transport's, whose loss uvloop's TLS hears.
            tls = self._tls if end is self.client else None
            failed = end.transport if tls is None else tls.raw
            force = getattr(failed, "_force_close", None)  # (private: may go)
            if force is not None:
                force(OSError(error, os.strerror(error)))
            else:
                failed.abort()
        elif (splice is not None and splice.tls_closed
              and not self.client.transport.is_closing()):
            # The core read the client's close_notify, which uvloop's reads will never
            # meet: its shutdown does (SSL_read answers it again), and calls our
            # eof_received once, as it would have.
            self.client.transport.close()
        self._resume()

    # -- endings ---------------------------------------------------------------------------

    def _upstream_close_frame(self) -> None:
        self._mark = self.client.received

    def ended_by(self, end: TunnelEnd, exc: Exception | None) -> None:
        """Note why, if this is the first cause: ``end``'s side ended (with ``exc``).

        Both sides close the same way whoever began (the server closes TCP first, RFC 6455
        7.1.1), so the Close frames tell: if the client sent anything after the upstream's
        Close frame passed, that was its answer, and the upstream began."""
        if self.reason is not None:
            return
        if exc is not None:
            self.reason = Why.ERROR
        elif self._mark >= 0:
            self.reason = Why.UPSTREAM if self.client.received > self._mark else Why.CLIENT
        else:
            self.reason = Why.CLIENT if end is self.client else Why.UPSTREAM

    def upstream_died(self, exc: Exception | None) -> None:
        """The upstream ended without a Close frame (a reset, or EOF): the client gets
        Close 1014 "bad gateway" (RFC 6455's registry) if the upstream stopped between
        frames, so that its library reports a gateway failure, not an abnormal close.
        Mid-frame nothing valid can follow, and the bare TCP close stays."""
        self._take_back()
        self.ended_by(self.upstream, exc)
        client = self.client.transport
        if ((self.state is State.OPEN or self.state is State.FROZEN)
                and self.upstream.cursor.at_boundary() and not client.is_closing()):
            client.write(close_frame(1014, "bad gateway"))
        self.close()

    def send_timed_out(self) -> None:
        self.reason = self.reason or Why.SEND_TIMEOUT
        self.abort()

    def going_away(self, code: int = 1001, reason: str = "going away",
                   why: Why = Why.SHUTDOWN) -> None:
        """End as a WebSocket server would: a Close frame to the client, right after the
        frame in flight; the client's answer still goes upstream, so the server sees the
        close too; the sockets close when the upstream is done, or after CLOSE_TIMEOUT."""
        if self.state is State.CLOSED or self.state is State.ENDING:
            return
        self.reason = self.reason or why
        if self.upstream.closing or self.client.transport.is_closing():
            self.close()  # the stream to the client has ended: no frame can follow it
            return
        if self.splice is not None or self.state is State.FROZEN:
            self._take_back()
            self.state = State.OPEN
            self._resume()
        self.state = State.ENDING
        upstream = self.upstream
        ending = _Ending(upstream, None if upstream.cursor.closed else close_frame(code, reason))
        upstream.transport.set_protocol(ending)
        ending.relay()
        self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self.abort)

    def freeze(self) -> None:
        """Stop reading both sides (to move the tunnel); what is buffered still drains."""
        if self.state is not State.OPEN:
            return
        self._take_back()
        self.state = State.FROZEN
        self.client.transport.pause_reading()
        self.upstream.transport.pause_reading()

    def thaw(self) -> None:
        if self.state is State.FROZEN:
            self.state = State.OPEN
            if not self._try_splice():
                self._resume()

    def drained(self) -> bool:
        """Whether nothing waits in either write buffer (the moment to move a frozen one)."""
        splice = self.splice
        return ((splice is None or splice.pending == 0)
                and self.client.transport.get_write_buffer_size() == 0
                and self.upstream.transport.get_write_buffer_size() == 0)

    def detach(self) -> None:
        """Forget both transports without touching their sockets (another process holds
        them now, from duplicates): no close, no report."""
        self._finish()
        for end in (self.client, self.upstream):
            end.transport.set_protocol(asyncio.Protocol())
            end.transport.abort()
            end.let_go()

    def abort(self) -> None:
        """End now, dropping what is buffered: the side that stalled will not take it."""
        self.close(abort=True)

    def both_closing(self) -> bool:
        return self.client.closing and self.upstream.closing

    def _finish(self) -> None:
        """What every end does (a close or a detach): back from the core, CLOSED, no timer
        left, and no callback from the cursor into this object (a cycle otherwise)."""
        self._take_back()
        self.state = State.CLOSED
        for timer in (self._timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._close_timer = None
        self.stall.cancel()
        self.upstream.cursor.on_close = None

    def close(self, abort: bool = False) -> None:
        """Close both sides after their buffered bytes are written (or at once, with
        ``abort``); report once."""
        if self.state is State.CLOSED:
            return
        self._finish()
        for end in (self.client, self.upstream):
            if abort:
                end.transport.abort()
            else:
                end.transport.close()
        self.on_close(self)
