"""A worker's accepting on its listening sockets, which can stop for a moment and resume.

uvloop has no way to pause a server, and closes the socket a server was made from when the
server closes (as it does by itself when accept() fails in a way libuv does not absorb).
So each server is made from a copy (``dup``) of the listening socket, and the worker keeps
the original: a pause closes the servers, and the resume makes new ones from new copies.
Meanwhile clients wait in the kernel's listen backlog, as they do while nginx has turned
its accept events off. A server that uvloop closed after an accept error is made anew the
same way (:meth:`Accepting.listen_failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from wsgate.proxy.limits import LAST_PAUSE, LOCAL, Limits
from wsgate.proxy.listeners import Bound, Sockets

log = logging.getLogger(__name__)

Listen = Callable[[Bound, socket.socket], Awaitable[asyncio.Server]]
"""Makes a server accepting on the given copy of a bound socket."""

LISTEN_FAILED = "error status in uv_stream_t.listen callback"
"""uvloop's message when accept() failed and it closed the server."""


class Accepting:
    __slots__ = ("_listen", "_resume", "limits", "servers", "sockets", "stopped")

    def __init__(self, listen: Listen, sockets: Sockets, limits: Limits) -> None:
        self._listen = listen
        self.sockets = sockets
        """The originals, kept open for the worker's life (or until a reload)."""
        self.servers: list[asyncio.Server] = []
        self.limits = limits
        self.stopped = False
        self._resume: asyncio.TimerHandle | None = None
        limits.pause = self.pause

    async def start(self, sockets: Sockets) -> None:
        """Accept on ``sockets``, then stop on the ones before: never a moment without
        (unless paused: then the resume takes the new ones)."""
        old_servers, old_sockets = self.servers, self.sockets
        self.sockets = sockets
        if self._resume is None:
            self.servers = await self._made(sockets)
            if self.stopped:  # stopped while those were being set up
                self._close_servers()
        else:
            self.servers = []
        for server in old_servers:
            server.close()
        if old_sockets is not sockets:
            for bound in old_sockets.values():
                bound.sock.close()

    async def _made(self, sockets: Sockets) -> list[asyncio.Server]:
        servers: list[asyncio.Server] = []
        try:
            for bound in sockets.values():
                copy = bound.sock.dup()
                try:
                    servers.append(await self._listen(bound, copy))
                except BaseException:
                    copy.close()
                    raise
        except BaseException:
            for server in servers:
                server.close()
            raise
        return servers

    def pause(self, seconds: float) -> None:
        """Accept nothing for ``seconds`` (nothing more if already paused or stopped)."""
        if self.stopped or self._resume is not None:
            return
        self._close_servers()
        loop = asyncio.get_running_loop()
        self._resume = loop.call_later(seconds, lambda: loop.create_task(self._resumed()))

    async def _resumed(self) -> None:
        try:
            servers = await self._made(self.sockets) if not self.stopped else []
        except OSError as error:  # no file left even for the copy: wait longer
            loop = asyncio.get_running_loop()
            log.debug("accepting not resumed yet: %s", error)
            self._resume = loop.call_later(LAST_PAUSE,
                                           lambda: loop.create_task(self._resumed()))
            return
        self._resume = None
        if self.stopped:
            for server in servers:
                server.close()
        else:
            self.servers = servers

    def listen_failed(self, context: dict[str, object]) -> bool:
        """The loop's exception handler: whether ``context`` was uvloop giving up on a
        server after an accept error; if so, accepting resumes after a pause."""
        error = context.get("exception")
        if context.get("message") != LISTEN_FAILED or not isinstance(error, OSError):
            return False
        if error.errno in LOCAL:
            self.limits.hit(error.errno, f"accept() failed ({error.errno}: {error.strerror})")
        else:
            log.error("accept() failed (%s: %s); accepting again in %gs", error.errno,
                      error.strerror, LAST_PAUSE)
            self.pause(LAST_PAUSE)
        return True

    def stop(self) -> None:
        """Accept no more, for good."""
        self.stopped = True
        if self._resume is not None:
            self._resume.cancel()
        self._close_servers()

    def close(self) -> None:
        """Stop, and let go of the listening sockets too."""
        self.stop()
        for bound in self.sockets.values():
            with contextlib.suppress(OSError):
                bound.sock.close()

    def _close_servers(self) -> None:
        for server in self.servers:
            server.close()
        self.servers = []
