"""The worker's own limits: open files, kernel socket memory, local ports.

When the worker runs out of one of them, no upstream is at fault, so such an error never
counts against a server's health and never moves a request to the next server: the client
gets 503 at once. What ran out is said in one error-log line a second at most, naming the
limit, and accepting pauses for a moment, as nginx's does (``accept4() failed (24: Too many
open files)``, then no accepting for 500 ms): new clients wait in the listen backlog,
instead of being taken with no file left to serve them. The pause doubles while the limit
keeps being hit, up to a second, and accepting resumes by itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

LOCAL = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                   errno.EADDRNOTAVAIL})
"""Errors that are this machine's or this process's, never an upstream's. (A connect's
EADDRNOTAVAIL is per destination, no IPv6 or no free port toward it: the connector tries
the next server, blaming none, rather than answering 503.)"""
RESERVE = 16
"""Files kept free: a client accepted with fewer left pauses accepting, since each client
needs a second file for its upstream."""
LOG_EVERY = 1.0
FIRST_PAUSE = 0.05
LAST_PAUSE = 1.0


def is_local(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in LOCAL


def open_file_limit() -> int | None:
    """The process's RLIMIT_NOFILE (soft), or None when unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> None:
    """Take the hard open-file limit as the soft one, as Go's runtime and so Caddy do at
    start: the usual soft 1,024 is a relic of select(), a proxy needs two files per
    connection, and the hard limit is what the operator allows (nginx needs
    ``worker_rlimit_nofile`` for this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):  # an infinite hard one may be refused
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def limit_name(code: int) -> str:
    """Which limit an errno of :data:`LOCAL` means, in words an operator can act on."""
    if code == errno.EMFILE:
        return f"the worker's open-file limit (RLIMIT_NOFILE {open_file_limit()})"
    if code == errno.ENFILE:
        return "the system's open-file limit (fs.file-max)"
    if code == errno.EADDRNOTAVAIL:
        return "the free local ports (net.ipv4.ip_local_port_range)"
    return "the kernel's memory for sockets"


class Limits:
    """One worker's record of hitting a limit: the rate-limited line and the pause."""

    __slots__ = ("_last_hit", "_pause", "_said", "_unsaid", "high_fd", "hits", "pause")

    def __init__(self) -> None:
        soft = open_file_limit()
        self.high_fd = soft - RESERVE if soft is not None else 1 << 62
        """A client accepted on this descriptor or a higher one pauses accepting: the
        kernel hands out the lowest free number, so every one below it is in use."""
        self.pause: Callable[[float], None] = lambda seconds: None
        """Stops accepting for that many seconds (the worker's :class:`Accepting`)."""
        self.hits = 0
        self._said = float("-inf")
        self._unsaid = 0
        self._last_hit = float("-inf")
        self._pause = FIRST_PAUSE

    def accepted(self, fd: int) -> None:
        """A client was accepted on descriptor ``fd``: pause if few are left."""
        if fd >= self.high_fd:
            self.hit(errno.EMFILE, f"accepted a client on fd {fd}")

    def hit(self, code: int, event: str) -> None:
        """``event`` (what failed, as the start of a log line) ran into limit ``code``."""
        now = time.monotonic()
        streak = now - self._last_hit < LAST_PAUSE + self._pause
        self._pause = min(LAST_PAUSE, self._pause * 2) if streak else FIRST_PAUSE
        self._last_hit = now
        self.hits += 1
        if now - self._said >= LOG_EVERY:
            more = f" ({self._unsaid} more since the last line)" if self._unsaid else ""
            log.error("%s: %s is reached (%s); new clients wait while accepting pauses "
                      "for %gs, and those taken get 503%s", event, limit_name(code),
                      os.strerror(code), self._pause, more)
            self._said = now
            self._unsaid = 0
        else:
            self._unsaid += 1
        self.pause(self._pause)
