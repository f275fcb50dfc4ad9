"""Sending a byte range of an open file to a client's transport, as nginx's ``sendfile on``.

uvloop has no ``loop.sendfile`` (it inherits ``AbstractEventLoop.sendfile``, which raises
NotImplementedError: not even asyncio's read-and-write fallback), so for plain TCP this
does the zero-copy itself: ``os.sendfile`` into a duplicate of the transport's socket,
waiting on that duplicate with ``add_writer`` (uvloop refuses add_writer on the
transport's own fd). That is sound only while the transport has nothing buffered, so it
starts once the transport's buffer is empty and the transport must not be written until
``done`` runs. TLS transports (whose "socket" extra is the raw TCP socket: sendfile there
would put plaintext on a TLS stream) and anything without a socket get the fallback:
chunks read with ``os.pread`` and written through the transport while it is not paused.
Either way at most one chunk plus the transport's buffer is in memory, a slow reader
costs nothing while it does not read, and the file is closed by the sender.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

CHUNK = 256 * 1024
"""Bytes read per ``os.pread`` in the fallback; above the transport's high-water mark, so
one write fills it and the protocol is paused until the client has taken most of it."""
BURST = 4 * 1024 * 1024
"""Bytes sent per event-loop callback at most, so one fast client cannot starve the others
(the writer callback, or a ``call_soon``, comes back for the rest)."""

Done = Callable[[BaseException | None], None]


class FileTruncated(OSError):
    """The file ended before ``offset + count``: the response promised bytes it lacks, so
    the caller must close the connection (nginx: "file was truncated")."""


def can_zero_copy(transport: asyncio.BaseTransport) -> bool:
    """True for a transport whose bytes go to its socket unchanged (not TLS)."""
    if transport.get_extra_info("ssl_object") is not None:
        return False
    if transport.get_extra_info("sslcontext") is not None:
        return False
    return hasattr(os, "sendfile") and transport.get_extra_info("socket") is not None


def _duplicate(fd: int) -> socket.socket:
    """A second fd for the transport's socket: the loop polls it apart from the transport's
    (same open file, so the same O_NONBLOCK; the socket object leaves that flag alone)."""
    copy = os.dup(fd)
    try:
        return socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        raise


class FileSender:
    """Sends ``count`` bytes of ``fd`` from ``offset`` to ``transport`` (``head`` first,
    if given), then calls ``done(None)``; on failure ``done(error)``. ``done`` runs exactly
    once, never inside the constructor, and ``fd`` is closed before it runs.

    The owning protocol forwards ``resume_writing`` to :meth:`resume` (and
    ``pause_writing`` to :meth:`pause`; only the fallback uses them), calls :meth:`cancel`
    from ``connection_lost`` (and before it closes the transport itself), and writes
    nothing to the transport until ``done``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport,
                 fd: int, offset: int, count: int, done: Done, *, head: bytes = b"",
                 zero_copy: bool | None = None) -> None:
        self.loop = loop
        self.transport = transport
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.sent = 0
        """File bytes handed to the kernel (zero-copy) or to the transport (fallback)."""
        self._done: Done | None = done
        self._paused = False
        self._head = head
        self._scheduled: asyncio.Handle | None = None
        self._sock: socket.socket | None = None
        if zero_copy is None:
            zero_copy = can_zero_copy(transport)
        if zero_copy:
            try:
                self._sock = _duplicate(transport.get_extra_info("socket").fileno())
            except OSError:  # out of fds: the fallback needs none
                zero_copy = False
        self.zero_copy: bool = zero_copy
        """Sending with ``os.sendfile`` rather than through the transport."""
        if self._sock is not None:
            loop.add_writer(self._sock.fileno(), self._on_writable)
        else:
            self._head = b""
            if head:
                self._write(head)
            self._scheduled = loop.call_soon(self._pump)

    @property
    def finished(self) -> bool:
        """``done`` has run."""
        return self._done is None

    def pause(self) -> None:
        """The transport's buffer is over its high-water mark: stop writing to it."""
        self._paused = True

    def resume(self) -> None:
        """The transport's buffer drained: go on (from the loop, not inside the callback)."""
        self._paused = False
        if self._done is not None and self._sock is None and self._scheduled is None:
            self._scheduled = self.loop.call_soon(self._pump)

    def cancel(self, error: BaseException | None = None) -> None:
        """Stop now (the connection is gone): close the file; ``done`` gets ``error``, or a
        ConnectionAbortedError. Nothing happens once finished."""
        self._finish(error or ConnectionAbortedError("file send cancelled"))

    # -- zero-copy ---------------------------------------------------------------------------

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None or self._done is None:
            return
        if self.transport.get_write_buffer_size():
            return  # the transport's bytes go first: it is sending them now, and the
            # socket wakes this again when it takes more (a few wakeups, not a spin)
        out = sock.fileno()
        budget = BURST
        try:
            if self._head:
                written = sock.send(self._head, socket.MSG_MORE if self.remaining else 0)
                self._head = self._head[written:]
                if self._head:
                    return
            while self.remaining and budget > 0:
                size = os.sendfile(out, self.fd, self.offset, min(self.remaining, budget))
                if size == 0:
                    raise FileTruncated(f"file ended {self.remaining} bytes early")
                self.offset += size
                self.remaining -= size
                self.sent += size
                budget -= size
        except BlockingIOError:
            return  # the socket is full: the writer callback comes back when it is not
        except OSError as error:
            self._finish(error)
            return
        if not self.remaining:
            self._finish(None)

    # -- the fallback: read and write through the transport --------------------------------

    def _pump(self) -> None:
        self._scheduled = None
        if self._done is None:
            return
        budget = BURST
        try:
            while self.remaining and not self._paused and budget > 0:
                if self.transport.is_closing():
                    raise ConnectionResetError("the transport is closing")
                data = os.pread(self.fd, min(self.remaining, CHUNK), self.offset)
                if not data:
                    raise FileTruncated(f"file ended {self.remaining} bytes early")
                self.offset += len(data)
                self.remaining -= len(data)
                self.sent += len(data)
                budget -= len(data)
                self._write(data)
        except OSError as error:
            self._finish(error)
            return
        if not self.remaining:
            self._finish(None)
        elif not self._paused:
            self._scheduled = self.loop.call_soon(self._pump)  # the burst is spent: yield

    def _write(self, data: bytes) -> None:
        """Write, and stop when the transport is over its high-water mark. The protocol's
        pause_writing comes inside write() only when it was not paused already, so the
        sender looks itself; a buffer over the mark means resume_writing will come."""
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.transport.get_write_buffer_limits()[1]:
            self._paused = True

    # -- the end -----------------------------------------------------------------------------

    def _finish(self, error: BaseException | None) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._sock is not None:
            # Stop polling before closing: epoll would keep reporting a closed duplicate.
            self.loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        try:
            os.close(self.fd)
        except OSError as close_error:
            error = error or close_error
        done(error)
