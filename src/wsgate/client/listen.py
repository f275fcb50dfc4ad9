"""Accept WebSocket clients, one at a time, and talk to each, like wscat -l PORT.

Prints "Listening on port N (press CTRL+C to quit)" with the port really bound (so port 0
works), "Client connected", what the client sends as "< msg", and "Disconnected (code:
..., reason: ...)"; sends what you type. A second client while one is connected is
dropped, as wscat does; once the first has gone, another may connect.

When stdin is not a terminal (pipe mode) it works as connect does: every stdin line is
sent to the connected client (lines wait for a client to connect), every message
received is one bare stdout line, and status lines go to stderr (or nowhere with -q). At
the end of piped input wsgate waits --wait (default 0), closes the client with 1000,
prints its replies until the close handshake is over, and exits 0. On a terminal,
CTRL+D, CTRL+C or SIGTERM end it, closing the client with 1000 first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from wsgate import __version__, values
from wsgate.client import commandline
from wsgate.client.commandline import (
    WAIT,
    add_session_arguments,
    console_options,
    session_options,
)
from wsgate.client.console import Console, ConsoleOptions, Line, is_terminal
from wsgate.client.dial import MAX_MESSAGE
from wsgate.client.observe import WatchedServerConnection
from wsgate.client.options import format_close
from wsgate.client.session import SessionOptions, talk
from wsgate.errors import Failure, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """wscat's -l, plus the session flags that make sense on the accepting side."""
    port = values.port_flag(zero=True)
    parser.add_argument("port", nargs="?", type=port, metavar="PORT",
                        help="TCP port (0: any free one)")
    parser.add_argument("-l", "--listen", type=port, metavar="PORT", dest="listen_port",
                        help="the port, as wscat takes it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("-s", "--subprotocol", action="append", default=[], metavar="PROTOCOL",
                        help="subprotocols to accept (default: accept the client's first)")
    wscat = parser.add_argument_group("wscat options")
    more = parser.add_argument_group("wsgate options")
    more.add_argument("-w", "--wait", type=WAIT, default=0.0, metavar="TIME",
                      help="pipe mode: how long to wait after the end of input before "
                           "closing the client, e.g. 500ms (default 0); -1 waits for the "
                           "client to close")
    add_session_arguments(wscat, more)


@dataclass(frozen=True)
class _Plan:
    host: str
    port: int
    subprotocols: tuple[str, ...]
    ping_interval: float | None
    session: SessionOptions
    console: ConsoleOptions


def _plan(args: argparse.Namespace) -> _Plan:
    if args.port is not None and args.listen_port is not None:
        raise UsageError("give the port once (either PORT or -l PORT)")
    port: int | None = args.port if args.port is not None else args.listen_port
    if port is None:
        raise UsageError("a port is needed: wsgate listen PORT")
    interactive = is_terminal()
    return _Plan(
        host=args.host,
        port=port,
        subprotocols=tuple(args.subprotocol),
        ping_interval=args.ping_interval or None,
        session=session_options(args, wait=0.0 if interactive else args.wait),
        console=console_options(args, interactive=interactive),
    )


def run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    return commandline.run(plan.console, lambda console: _Listener(plan, console).serve())


class _Listener:
    """The server's state: at most one client, and where typed lines go meanwhile."""

    def __init__(self, plan: _Plan, console: Console) -> None:
        self.plan = plan
        self.console = console
        self.client: ServerConnection | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        #: At a prompt, typed lines go through here, so that a line typed with nobody
        #: connected is answered at once instead of waiting for the next client.
        self.typed: asyncio.Queue[Line | None] = asyncio.Queue()

    def select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """Like Node's ws server (wscat -l): accept the client's first choice, or ours."""
        if not self.plan.subprotocols:
            return offered[0] if offered else None
        for name in offered:
            if name in self.plan.subprotocols:
                return name
        return None

    async def handle(self, connection: ServerConnection) -> None:
        if self.client is not None:
            # wscat terminates a second client as soon as it has connected.
            connection.transport.abort()
            return
        self.client = connection
        self.idle.clear()
        try:
            self.console.status("Client connected")
            lines = self.typed.get if self.console.interactive else None
            ending = await talk(connection, self.console, self.plan.session, lines)
            self.console.status(format_close(ending.code, ending.reason))
            if self.console.input_ended:
                # Piped input is over and its last client served: wscat exits here too.
                self.console.quit.set()
        finally:
            self.client = None
            self.idle.set()

    async def _route_typed_lines(self) -> None:
        while True:
            line = await self.console.next_line()
            if line is None:
                return
            if self.client is None:
                self.console.warn("no client connected")
            else:
                self.typed.put_nowait(line)

    async def serve(self) -> int:
        plan = self.plan
        try:
            server = await serve(
                self.handle,
                plan.host,
                plan.port,
                create_connection=WatchedServerConnection,
                select_subprotocol=self.select_subprotocol,
                ping_interval=plan.ping_interval,
                ping_timeout=20 if plan.ping_interval else None,
                close_timeout=5,
                max_size=MAX_MESSAGE,
                server_header=f"wsgate/{__version__}",
            )
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                reason = "address already in use"
            else:
                reason = (error.strerror or str(error)).lower()
            address = values.join_address(plan.host, plan.port)
            raise Failure(f"cannot listen on {address}: {reason}") from None
        router: asyncio.Task[None] | None = None
        try:
            port = server.sockets[0].getsockname()[1]
            self.console.status(f"Listening on port {port} (press CTRL+C to quit)")
            self.console.start_input()
            if self.console.interactive:
                router = asyncio.create_task(self._route_typed_lines())
            await self.console.quit.wait()
            # The client's session sees the quit too and closes with 1000: let it finish.
            await self.idle.wait()
        finally:
            if router is not None:
                router.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await router
            server.close()
            await server.wait_closed()
        return 0
