"""SIGINT and SIGTERM for the servers (``echo``, ``up``, ``proxy``), caught from the start.

Left alone, Python dies of SIGTERM and raises KeyboardInterrupt for SIGINT wherever the
program happens to be, start-up included. A server must instead stop cleanly on either,
whenever it comes. So the CLI catches both before it loads a server's code (this module
imports nothing else, to cost nothing), a plain handler remembers them, and once the
server's event loop runs, the loop's own handlers take over (:meth:`StopSignals.attach`).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop


class StopSignals:
    """SIGINT and SIGTERM as a request to stop: remembered until a loop takes them over."""

    __slots__ = ("received",)
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received = False

    def catch(self) -> None:
        """Remember the signals from now on, until :meth:`attach`."""
        for signum in self.SIGNALS:
            signal.signal(signum, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.received = True

    def attach(self, loop: AbstractEventLoop, stop: Callable[[], None]) -> None:
        """From now on ``loop`` calls ``stop`` on either signal; one that came earlier
        calls it now."""
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, stop)
        if self.received:
            stop()


STOP = StopSignals()
"""This process's: the CLI catches it for a server command, and the server attaches it."""
