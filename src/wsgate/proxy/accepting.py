"""A worker's accepting on its listening sockets, which can stop for a moment and resume.

uvloop has no way to pause a server, and closes the socket a server was made from when the
server closes (as it does by itself, silently, when accept() fails in a way libuv does not
absorb: ENOBUFS, ENOMEM). So each server is made from a copy (``dup``) of the listening
socket, and the worker keeps the original: a pause closes the servers, and the resume makes
new ones from new copies. Meanwhile clients wait in the kernel's listen backlog, as they do
while nginx has turned its accept events off. A server that uvloop closed is noticed by
:meth:`Accepting.check` (its copy is gone), once a second, and made anew the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from wsgate.proxy.limits import FIRST_PAUSE, LAST_PAUSE, Limits
from wsgate.proxy.listeners import Bound, Sockets

log = logging.getLogger(__name__)

Listen = Callable[[Bound, socket.socket], Awaitable[asyncio.Server]]
"""Makes a server accepting on the given copy of a bound socket."""



class Accepting:
    __slots__ = ("_copies", "_listen", "_resume", "limits", "servers", "sockets", "stopped")

    def __init__(self, listen: Listen, sockets: Sockets, limits: Limits) -> None:
        self._listen = listen
        self.sockets = sockets
        """The originals, kept open for the worker's life (or until a reload)."""
        self.servers: list[asyncio.Server] = []
        self._copies: list[tuple[int, int]] = []
        """The descriptor and inode of each server's copy: uvloop closing one shows."""
        self.limits = limits
        self.stopped = False
        self._resume: asyncio.TimerHandle | None = None
        limits.pause = self.pause

    async def start(self, sockets: Sockets) -> None:
        """Accept on ``sockets``, then stop on the ones before: never a moment without
        (unless paused: then the resume takes the new ones). If no server can be made
        for them (no file left for a copy), the ones before go on."""
        if self._resume is None and not self.stopped:
            try:
                servers = await self._made(sockets)
            except OSError as error:
                if sockets is self.sockets:  # the first start: the worker cannot serve
                    raise
                log.error("cannot accept on the new listening sockets (%s); the old ones "
                          "go on", error)
                for bound in sockets.values():
                    bound.sock.close()
                return
            old_servers, self.servers = self.servers, servers
            for server in old_servers:
                server.close()
            if self.stopped:  # stopped while those were being set up
                self._close_servers()
        old_sockets, self.sockets = self.sockets, sockets
        if old_sockets is not sockets:
            for bound in old_sockets.values():
                bound.sock.close()

    async def _made(self, sockets: Sockets) -> list[asyncio.Server]:
        servers: list[asyncio.Server] = []
        copies: list[tuple[int, int]] = []
        try:
            for bound in sockets.values():
                copy = bound.sock.dup()
                try:
                    copies.append((copy.fileno(), os.fstat(copy.fileno()).st_ino))
                    servers.append(await self._listen(bound, copy))
                except BaseException:
                    copy.close()
                    raise
        except BaseException:
            for server in servers:
                server.close()
            raise
        self._copies = copies
        return servers

    def check(self) -> None:
        """Make the servers anew if uvloop closed one (its copy is gone or is now another
        file): after an accept error it closes a server without a word."""
        if self.stopped or self._resume is not None:
            return
        for fd, inode in self._copies:
            try:
                same = os.fstat(fd).st_ino == inode
            except OSError:
                same = False
            if not same:
                log.error("a listening socket stopped accepting (accept() failed); "
                          "accepting again in %gs", FIRST_PAUSE)
                self._copies = []
                self.pause(FIRST_PAUSE)
                return

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
        except Exception as error:  # no file left even for the copy: wait longer
            loop = asyncio.get_running_loop()
            log.log(logging.DEBUG if isinstance(error, OSError) else logging.ERROR,
                    "accepting not resumed yet: %s", error)
            self._resume = loop.call_later(LAST_PAUSE,
                                           lambda: loop.create_task(self._resumed()))
            return
        self._resume = None
        if self.stopped:
            for server in servers:
                server.close()
        else:
            self.servers = servers

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
