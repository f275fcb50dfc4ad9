"""Giving memory back after a burst of connections closes.

A burst of thousands of connections leaves the heap big: freed blocks stay in the
allocator's free lists, and RSS stays at the peak (nginx's too: its pools keep the pages
its connections touched). When the open connections have fallen well below their peak and
stopped falling (and already when they are all gone), this collects what reference cycles
are left and asks glibc to return free pages (``malloc_trim``), so the next burst starts
from a small process again. It runs from the worker's once-a-second work, never on a
connection's path, once or twice per burst. Where there is no glibc, it does nothing.

A worker also freezes what it has at start (:func:`tune_collector`): the modules,
configuration and routes are never garbage, and a full collection no longer walks them.
The collection thresholds stay CPython's. A WebSocket leaves no reference cycle when it
ends (the tunnel's ends and the upstream connection let go of what refers back to them),
so its objects go as it closes, not at a collection.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

BURST = 1000
"""Open connections that count as a burst worth trimming after."""
FALL = 0.5
"""Trim once the open connections are below this share of their peak."""


def tune_collector() -> None:
    """Once the worker is set up: its startup objects move out of the collector's sight for
    good (``gc.freeze``), so the collections a busy worker makes walk only its
    connections."""
    gc.collect()
    gc.freeze()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim from the C library this process already has loaded (no
    ``find_library``, which runs ldconfig), or None (musl has none)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def _none(pad: int) -> int:
    """No malloc_trim here."""
    return 0


class Trimmer:
    """Watches a worker's open connections (:meth:`observe`, once a second) and trims the
    heap once after each burst has gone."""

    __slots__ = ("_trim", "last", "peak", "trims")

    def __init__(self, trim: Callable[[int], int] | None = None) -> None:
        self._trim = trim
        self.peak = 0
        """The most connections open since the last trim."""
        self.last = 0
        self.trims = 0

    def observe(self, open_now: int) -> bool:
        """Note the open connections; trim if a burst has fallen away and stopped falling
        (a trim while thousands are still closing would give back little: what they free
        afterwards stays). A burst that has gone altogether is trimmed at once as well, and
        again once the fall has stopped: a tunnel leaves the count at its close, and the
        last ones' memory goes only when their transports are lost, a moment later.
        Whether it trimmed."""
        falling, self.last = open_now < self.last, open_now
        self.peak = max(self.peak, open_now)
        if self.peak < BURST or open_now > self.peak * FALL or (falling and open_now):
            return False
        if not falling:
            self.peak = open_now  # this burst is done
        if self._trim is None:
            self._trim = _malloc_trim() or _none
        if self._trim is _none:
            return False
        started = time.monotonic()
        gc.collect()  # cycles some other path left (an error's traceback, say)
        self._trim(0)
        self.trims += 1
        log.info("gave memory back after a burst (%.1f ms)", (time.monotonic() - started) * 1e3)
        return True
