"""Running a server's coroutine: on the fastest event loop this platform has (uvloop where it
exists), with standard streams libuv can live with, and SIGINT/SIGTERM caught from the first
instant."""

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def ensure_standard_fds() -> None:
    """Put /dev/null on stdin/stdout/stderr if the program was started with one closed.

    Otherwise the first socket would get fd 0, 1 or 2, and libuv (uvloop) aborts the
    process when it closes a descriptor that low.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new uvloop (or the default loop without uvloop)."""
    ensure_standard_fds()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


class StopSignals:
    """SIGINT and SIGTERM, from the first instant: a signal sent right after start-up is a
    clean stop, never a death by the default action."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received = False

    def catch(self) -> None:
        """Remember the signals until an event loop takes over (:meth:`attach`)."""
        for signum in self.SIGNALS:
            signal.signal(signum, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.received = True

    def attach(self, stop: asyncio.Event) -> None:
        """From now on the running loop sets ``stop``; a signal that came earlier does it now."""
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        if self.received:
            stop.set()
