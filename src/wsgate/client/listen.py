"""Accept one WebSocket client at a time and talk to it, like wscat -l PORT.

Prints "Listening on port N (press CTRL+C to quit)" with the port really bound (so port 0
works), "Client connected", what the client sends as "< msg", and "Disconnected (code:
..., reason: ...)"; sends what you type. A second client while one is connected is
dropped, as wscat does. Another client may connect once the first has gone.

When stdin is not a terminal (pipe mode) every stdin line is sent to the connected client
(lines wait for a client to connect), every message received is one bare stdout line,
and status lines go to stderr (or nowhere with -q). The end of piped input does not stop
the server; CTRL+C or SIGTERM does, closing the client with 1000 first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from wsgate import __version__, runtime
from wsgate.client.console import (
    Console,
    Line,
    default_history_path,
    is_terminal,
    make_console,
    wants_color,
)
from wsgate.client.dial import MAX_MESSAGE
from wsgate.client.observe import WatchedServerConnection
from wsgate.client.options import format_address, format_close, parse_port, parse_seconds
from wsgate.client.session import OnEof, SessionOptions, add_session_arguments, talk
from wsgate.errors import Failure, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """wscat's -l, plus the session flags that make sense on the accepting side."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("port", nargs="?", metavar="PORT", help="TCP port (0: any free one)")
    parser.add_argument("-l", "--listen", metavar="PORT", dest="listen_port",
                        help="the port, as wscat takes it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("-s", "--subprotocol", action="append", default=[], metavar="PROTOCOL",
                        help="subprotocols to accept (default: accept the client's first)")
    add_session_arguments(parser.add_argument_group("wscat options"),
                          parser.add_argument_group("wsgate options"))


@dataclass(frozen=True)
class _Plan:
    host: str
    port: int
    subprotocols: tuple[str, ...]
    ping_interval: float | None
    session: SessionOptions
    interactive: bool
    color: bool
    quiet: bool
    history_file: str | None
    json: bool


def _plan(args: argparse.Namespace) -> _Plan:
    if args.port is not None and args.listen_port is not None:
        raise UsageError("give the port once (either PORT or -l PORT)")
    raw_port = args.port if args.port is not None else args.listen_port
    if raw_port is None:
        raise UsageError("a port is needed: wsgate listen PORT")
    history: str = args.history_file if args.history_file is not None else str(
        default_history_path()
    )
    return _Plan(
        host=args.host,
        port=parse_port(raw_port),
        subprotocols=tuple(args.subprotocol),
        ping_interval=parse_seconds(args.ping_interval, "--ping-interval") or None,
        session=SessionOptions(
            binary=args.binary, slash=args.slash, show_ping_pong=args.show_ping_pong,
            on_eof=OnEof.IGNORE,
        ),
        interactive=is_terminal(),
        color=wants_color(args.no_color),
        quiet=args.quiet,
        history_file=history or None,
        json=args.json,
    )


def run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    logging.getLogger("websockets").addHandler(logging.NullHandler())
    return runtime.run(_main(plan))


async def _main(plan: _Plan) -> int:
    console = make_console(interactive=plan.interactive, color=plan.color, quiet=plan.quiet,
                           history_file=plan.history_file, json_pretty=plan.json)
    async with console:
        try:
            return await _Listener(plan, console).serve()
        except asyncio.CancelledError:
            return 130


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
            address = format_address(plan.host, plan.port)
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
