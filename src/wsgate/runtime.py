"""Running a coroutine on the fastest event loop this platform has (uvloop where it exists),
with standard streams libuv can live with."""

import asyncio
import os
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

