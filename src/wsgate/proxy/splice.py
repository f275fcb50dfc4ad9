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

Without the compiled module (no compiler at install, not Linux), or with
``WSGATE_SPLICE=0`` in the environment, every tunnel runs in Python, as it always could.
TLS tunnels always do: their bytes are not the socket's.
"""

from __future__ import annotations

import asyncio
import os
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


def join(loop: asyncio.AbstractEventLoop, client_fd: int, upstream_fd: int,
         on_event: Callable[[int, int, int], None], cursor: Cursor) -> Splice:
    """Serve two sockets from the loop's core, from ``cursor``'s frame position on.
    Raises OSError, ValueError or OverflowError (then nothing changed) where the core
    cannot: an fd it cannot poll, a cursor past 64 bits."""
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
        splice: Splice = _core.Splice(core, client_fd, upstream_fd, on_event, cursor.left,
                                      cursor.held, cursor.closed)
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
