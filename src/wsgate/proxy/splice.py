"""The steady state of a plain-TCP tunnel in C, where the compiled core is there.

At small messages most of the proxy's CPU is the kernel's, and what is left is the
event loop's and Python's per read: a bytes object, ``data_received``, the transport's
write path. The C core (``_splice.c``) reads into one buffer and sends at once, many
tunnels per loop wake-up: one ``loop.add_reader`` on its own epoll fd serves them all, on
the loop's thread. Both transports stay alive, paused, with empty write buffers, so the
loop does not poll their sockets while the core does; any rarer event (EOF, an error, the
upstream's Close frame, a freeze or shutdown) hands the tunnel back to them, with the
bytes the core could not send yet (:meth:`Tunnel._take_back
<wsgate.proxy.tunnel.Tunnel._take_back>`). What a tunnel does stays in one place, the
tunnel's Python; this core only moves bytes and counts them.

A ``wss://`` client's tunnel is served too (``_splice_tls.c``): uvloop keeps a TLS
session's records in two OpenSSL memory buffers, so after the handshake the core can
decrypt and encrypt with that same session, through the OpenSSL that Python's ``_ssl``
links, and hand it back to uvloop as it found it (:func:`tls_session` says when it can).
A TLS upstream (``proxy_pass https://``) keeps the Python tunnel.

Without the compiled module (no compiler at install, not Linux), or with
``WSGATE_SPLICE=0`` in the environment, every tunnel runs in Python, as it always could.
"""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from wsgate.proxy.frames import Cursor

if TYPE_CHECKING:
    from wsgate.proxy._splice import Core, Splice

_core: ModuleType | None
try:
    from wsgate.proxy import _splice as _core
except ImportError:  # pragma: no cover - built at install where a compiler is
    _core = None

ENABLED = _core is not None and os.environ.get("WSGATE_SPLICE", "1") != "0"
"""Whether tunnels are spliced in this process (tests switch it)."""


def _bind_openssl() -> bool:
    """Whether the core found the OpenSSL that Python's ``_ssl`` links (through the file
    of that module: none where ssl is missing or built into the interpreter)."""
    try:
        import _ssl
    except ImportError:  # pragma: no cover - a Python built without ssl
        return False
    path = getattr(_ssl, "__file__", None)
    return _core is not None and path is not None and bool(_core.tls_bind(path))


TLS = ENABLED and _bind_openssl()
"""Whether TLS clients' tunnels may be spliced: the core found Python's OpenSSL."""

CLIENT, UPSTREAM = 0, 1
"""The sides, as the core numbers them."""
WAKE, FAILED, STALLED, FLOWING = 0, 1, 2, 3
"""What the core tells a splice's owner (the same numbers as _splice.c's): WAKE, it
stopped for the loop to look (EOF, the upstream's Close frame); FAILED, a side's socket
failed (with its errno); STALLED and FLOWING, a side stopped and started taking bytes."""

_hubs: dict[asyncio.AbstractEventLoop, Core] = {}
"""Each loop's Core while it serves a splice (so none outlives its loop's tunnels)."""


def plain_socket(transport: asyncio.BaseTransport) -> int | None:
    """The fd of ``transport`` if the core may serve it: a uvloop TCP transport (not TLS;
    its reading stops at ``pause_reading`` at once: libuv forgets the fd, and nothing it
    read is queued)."""
    kind = type(transport)
    if kind.__name__ != "TCPTransport" or kind.__module__ != "uvloop.loop":
        return None
    sock = transport.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


class TlsSession:
    """What the core needs of a uvloop TLS transport: the TCP transport under it (whose
    socket the core reads, and whose reading it pauses), the OpenSSL session, and the
    BIO of records written but not yet sent."""

    __slots__ = ("context", "fd", "outgoing", "raw", "session")

    def __init__(self, fd: int, raw: asyncio.Transport, session: object, context: object,
                 outgoing: ssl.MemoryBIO) -> None:
        self.fd = fd
        self.raw = raw
        self.session = session
        self.context = context
        self.outgoing = outgoing

    def backlog(self, transport: asyncio.WriteTransport) -> int:
        """Bytes that ``transport`` (the TLS one) and its TCP transport hold, but for the
        records in the BIO (the core sends those first itself: uvloop leaves TLS 1.3's
        tickets there until its first write)."""
        return (transport.get_write_buffer_size() - self.outgoing.pending
                + self.raw.get_write_buffer_size())


def tls_session(transport: asyncio.BaseTransport) -> TlsSession | None:
    """``transport``'s TLS session if it is a uvloop TLS transport over TCP (the only
    kind whose records sit in memory BIOs the core can take). uvloop keeps its protocol
    and TCP transport in C fields; ``gc.get_referents`` is the public way to them."""
    if type(transport).__name__ != "_SSLProtocolTransport" or not TLS:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    session = getattr(ssl_object, "_sslobj", None)
    protocol = next((o for o in gc.get_referents(transport)
                     if type(o).__name__ == "SSLProtocol"), None)
    fields = gc.get_referents(protocol)
    raw: asyncio.Transport | None = next(
        (o for o in fields if type(o).__name__ == "TCPTransport"), None)
    outgoing = next((o.__self__ for o in fields if getattr(o, "__name__", "") == "read"
                     and isinstance(getattr(o, "__self__", None), ssl.MemoryBIO)), None)
    fd = None if raw is None else plain_socket(raw)
    if session is None or raw is None or fd is None or outgoing is None:
        return None
    return TlsSession(fd, raw, session, ssl_object.context, outgoing)


def join(loop: asyncio.AbstractEventLoop, client_fd: int, upstream_fd: int,
         on_event: Callable[[int, int, int], None], cursor: Cursor,
         tls: TlsSession | None = None) -> Splice:
    """Serve two sockets from the loop's core, from ``cursor``'s frame position on (the
    client's through ``tls`` where it speaks TLS). Raises OSError, ValueError or
    OverflowError (then nothing changed) where the core cannot: an fd it cannot poll, a
    cursor past 64 bits, a TLS session with bytes buffered or of a layout it does not
    know."""
    assert _core is not None
    core = _hubs.get(loop)
    if core is None:
        core = _core.Core()
        try:
            loop.add_reader(core.fileno(), core.poll)
        except BaseException:
            core.close()
            raise
        _hubs[loop] = core
    try:
        splice: Splice = _core.Splice(
            core, client_fd, upstream_fd, on_event, cursor.left, cursor.held, cursor.closed,
            None if tls is None else (tls.session, tls.context))
    except BaseException:
        _release(loop, core)
        raise
    return splice


def part(loop: asyncio.AbstractEventLoop, splice: Splice) -> tuple[bytes, bytes]:
    """Stop serving ``splice``; returns the bytes it read and could not send yet (to the
    client, to the upstream). The loop's core goes with its last splice."""
    kept = splice.stop()
    core = _hubs.get(loop)
    if core is not None:
        _release(loop, core)
    return kept


def _release(loop: asyncio.AbstractEventLoop, core: Core) -> None:
    if core.members:
        return
    del _hubs[loop]
    if not loop.is_closed():
        loop.remove_reader(core.fileno())
    core.close()
