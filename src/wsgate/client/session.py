"""One WebSocket conversation between a console and an open connection.

Shared by ``connect`` and ``listen``: incoming messages (and, with ``-P``, pings and
pongs) are shown as they arrive; typed or piped lines are sent, or run as ``--slash``
commands; the session ends when the close handshake is over, and says who closed it
and how, so the caller can print wscat's ``Disconnected`` line and pick an exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConcurrencyError, ConnectionClosed

from wsgate.client.console import Console, Line
from wsgate.client.observe import WatchedClientConnection, WatchedServerConnection
from wsgate.client.options import (
    OK_CLOSE_CODES,
    CloseCommand,
    Ping,
    Pong,
    SlashError,
    control_notice,
    parse_slash,
)

Watched = WatchedClientConnection | WatchedServerConnection
LineSource = Callable[[], Awaitable[Line | None]]


@dataclass(frozen=True)
class SessionOptions:
    """How to talk: wscat's -b/--slash/-P/-x/-w."""

    binary: bool = False
    slash: bool = False
    show_ping_pong: bool = False
    execute: tuple[str, ...] = ()
    #: Seconds to linger after ``-x`` or after the end of input before closing; ``inf``
    #: holds the connection open until the peer closes it.
    wait: float = 0.0


@dataclass(frozen=True)
class Ending:
    """How a session ended: the close code and reason received, and who began the close."""

    code: int
    reason: str
    by_us: bool

    @property
    def ok(self) -> bool:
        """A clean end: 1000/1001/1005, or a close we asked for that the peer completed."""
        return self.code in OK_CLOSE_CODES or (self.by_us and self.code != 1006)


class _Session:
    def __init__(
        self, connection: Watched, console: Console, options: SessionOptions, lines: LineSource
    ) -> None:
        self.connection = connection
        self.console = console
        self.options = options
        self.lines = lines
        self.by_us = False
        self.printed = 0

    async def run(self) -> Ending:
        receiver = asyncio.create_task(self._receive())
        controls = asyncio.create_task(self._controls())
        driver = asyncio.create_task(self._drive())
        quitting = asyncio.create_task(self.console.quit.wait())
        try:
            await asyncio.wait({receiver, quitting}, return_when=asyncio.FIRST_COMPLETED)
            if not receiver.done():
                driver.cancel()
                await self._close(1000, "")
            await receiver
        finally:
            for task in (receiver, controls, driver, quitting):
                task.cancel()
            await asyncio.gather(receiver, controls, driver, quitting, return_exceptions=True)
        self._show_controls(before=self.connection.messages_received + 1)
        code = self.connection.close_code
        return Ending(1006 if code is None else code, self.connection.close_reason or "",
                      self.by_us)

    async def _close(self, code: int, reason: str) -> None:
        self.by_us = True
        await self.connection.close(code, reason)

    async def _receive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await self.connection.recv()
                self._show_controls(before=self.printed + 1)
                self.console.incoming(message)
                self.printed += 1
                self._show_controls(before=self.printed + 1)

    async def _controls(self) -> None:
        while True:
            await self.connection.control_arrived.wait()
            self.connection.control_arrived.clear()
            self._show_controls(before=self.printed + 1)

    def _show_controls(self, before: int) -> None:
        """Show the pings and pongs that arrived before message number ``before``."""
        frames = self.connection.control_frames
        while frames and frames[0][0] < before:
            _, kind, data = frames.popleft()
            if self.options.show_ping_pong:
                self.console.notice(control_notice(kind, data))

    async def _linger(self) -> None:
        if math.isinf(self.options.wait):
            await asyncio.Future()
        elif self.options.wait > 0:
            await asyncio.sleep(self.options.wait)

    async def _drive(self) -> None:
        """Send what the user gives, until input ends or the connection does."""
        with contextlib.suppress(ConnectionClosed):
            if self.options.execute:
                for text in self.options.execute:
                    await self._send(text)
                await self._linger()
                await self._close(1000, "")
                return
            while True:
                line = await self.lines()
                if line is None:
                    await self._linger()
                    await self._close(1000, "")
                    return
                if await self._line(line):
                    return

    async def _line(self, line: Line) -> bool:
        """Send or run one line; whether it closed the connection (then read no more)."""
        if self.options.slash:
            text = line if isinstance(line, str) else line.decode("utf-8", "replace")
            try:
                command = parse_slash(text)
            except SlashError as error:
                self.console.warn(str(error))
                return False
            if command is not None:
                return await self._slash(command)
        await self._send(line)
        return False

    async def _slash(self, command: Ping | Pong | CloseCommand) -> bool:
        if isinstance(command, Ping):
            try:
                await self.connection.ping(command.data)
            except ConcurrencyError:
                self.console.warn("still waiting for the pong to a ping with the same data")
        elif isinstance(command, Pong):
            await self.connection.pong(command.data)
        else:
            await self._close(command.code, command.reason)
            return True
        return False

    async def _send(self, line: Line) -> None:
        if self.options.binary:
            await self.connection.send(line.encode() if isinstance(line, str) else line)
        else:
            await self.connection.send(
                line if isinstance(line, str) else line.decode("utf-8", "replace")
            )


async def talk(
    connection: Connection,
    console: Console,
    options: SessionOptions,
    lines: LineSource | None = None,
) -> Ending:
    """Run one conversation to its end (close handshake done, or connection lost).

    Lines to send come from ``lines``, by default the console's own input.
    """
    assert isinstance(connection, WatchedClientConnection | WatchedServerConnection)
    return await _Session(connection, console, options, lines or console.next_line).run()
