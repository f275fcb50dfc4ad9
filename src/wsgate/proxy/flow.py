"""Flow control shared by the client connection and the tunnel: who may read, and how long a
writer may stay stuck.

Backpressure is the transports' own: when a transport's write buffer passes its high-water
mark its protocol's ``pause_writing`` runs, and the side feeding it must stop reading until
``resume_writing``. :class:`Stall` counts the writers stuck that way and ends the
connection when one stays stuck for nginx's ``send_timeout``; :class:`ReadGate` keeps a
transport paused while any of several reasons holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

WRITE_HIGH_WATER = 64 * 1024
"""Per-direction bound on bytes waiting to be written before the other side stops reading."""


class Stall:
    """Writers that cannot write right now, and the timer that gives up on them.

    ``begin`` when a transport pauses writing, ``end`` when it resumes; the ``on_timeout``
    given to the first ``begin`` runs once ``timeout`` seconds pass with any writer still
    stuck (0: wait forever). The timer is armed on the first stuck writer and cancelled
    when none is left, so a peer that reads slowly but steadily is never cut. The callback
    is held only while the timer is armed: no reference cycle keeps the owner alive.
    """

    __slots__ = ("_timer", "count", "timeout")

    def __init__(self, timeout: float) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self.count = 0
        self.timeout = timeout

    def begin(self, on_timeout: Callable[[], None]) -> None:
        self.count += 1
        if self._timer is None and self.timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(
                self.timeout, self._expire, on_timeout)

    def end(self) -> None:
        """A writer got going again. One that was stuck before this count began (a
        transport handed over while paused) is not counted, so it is not uncounted."""
        if self.count > 0:
            self.count -= 1
            if self.count == 0:
                self.cancel()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, on_timeout: Callable[[], None]) -> None:
        self._timer = None
        on_timeout()


class ReadGate:
    """A transport's reading, paused while any reason holds.

    Reasons are bits (``1 << n``) chosen by the user; holding one twice is holding it once.
    Reading resumes only when the last reason is released, so two independent pauses (a
    queue of pipelined requests, a slow upstream) never undo each other.
    """

    __slots__ = ("_transport", "reasons")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.reasons = 0

    def hold(self, reason: int) -> None:
        if not self.reasons:
            self._transport.pause_reading()
        self.reasons |= reason

    def release(self, reason: int) -> None:
        if not self.reasons & reason:
            return
        self.reasons &= ~reason
        if not self.reasons and not self._transport.is_closing():
            self._transport.resume_reading()

    def holds(self, reason: int) -> bool:
        return bool(self.reasons & reason)
