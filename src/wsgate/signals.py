"""Signals for the servers (``echo``, ``up``, ``proxy``), caught from the start.

Left alone, Python dies of SIGTERM, SIGHUP, SIGQUIT and SIGUSR1/2, and raises
KeyboardInterrupt for SIGINT, wherever the program happens to be, start-up included. A
server must instead act on each whenever it comes. So the CLI catches them before it loads
a server's code (this module imports nothing else, to cost nothing), a plain handler
remembers them in order, and once the server is ready it takes them over: an event loop's
own handlers (:meth:`Signals.attach`), or the proxy's master, which takes what was
remembered (:meth:`Signals.take`) and waits for the rest itself.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop


class Signals:
    """A set of signals, remembered in the order they come until a loop takes them over."""

    __slots__ = ("pending", "signals")

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self.signals = signals
        self.pending: list[int] = []

    def catch(self) -> None:
        """Remember the signals from now on, until :meth:`attach` or :meth:`take`."""
        for signum in self.signals:
            signal.signal(signum, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def take(self) -> list[int]:
        """What came so far, oldest first, forgotten here."""
        taken, self.pending = self.pending, []
        return taken

    def attach(self, loop: AbstractEventLoop, stop: Callable[[], None]) -> None:
        """From now on ``loop`` calls ``stop`` on any of the signals; one that came earlier
        calls it now."""
        for signum in self.signals:
            loop.add_signal_handler(signum, stop)
        if self.pending:
            stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PROXY_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP,
                 signal.SIGUSR1, signal.SIGUSR2)
"""nginx's: stop fast, stop gracefully, reload, reopen the logs, upgrade in place."""

STOP = Signals(STOP_SIGNALS)
"""This process's, for ``echo`` and ``up``: the CLI catches them, the server attaches them."""
PROXY = Signals(PROXY_SIGNALS)
"""This process's, for ``proxy``: the CLI catches them, the master takes them over."""

