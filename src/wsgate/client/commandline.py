"""What ``wsgate connect`` and ``wsgate listen`` share as commands: the flags of a
conversation, the console and session options read from them, and running with the
console open (a second CTRL+C, giving up on a clean close, is exit status 130)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable

from wsgate import runtime, values
from wsgate.client.console import (
    Console,
    ConsoleOptions,
    default_history_path,
    make_console,
    wants_color,
)
from wsgate.client.options import parse_wait
from wsgate.client.session import SessionOptions

#: ``-w/--wait``'s type: a duration, or -1 (hold the connection open).
WAIT = values.flag(parse_wait, "duration")


def add_session_arguments(wscat: argparse._ActionsContainer,
                          more: argparse._ActionsContainer) -> None:
    """The flags of a conversation, the same for ``connect`` and ``listen``: wscat's in
    ``wscat``, wsgate's additions in ``more``."""
    wscat.add_argument("--slash", action="store_true",
                       help="slash commands: /ping [data], /pong [data], /close [code [reason]]")
    wscat.add_argument("-P", "--show-ping-pong", action="store_true",
                       help="print a line for every ping and pong received")
    wscat.add_argument("--no-color", action="store_true", help="run without colour")
    more.add_argument("-b", "--binary", action="store_true",
                      help="send lines as binary frames (binary messages received are "
                           "hex on a terminal, raw bytes plus a newline in pipe mode)")
    more.add_argument("--json", action="store_true",
                      help="pretty-print incoming JSON messages (others are shown as is)")
    more.add_argument("--ping-interval", type=values.duration_flag(zero=True), default=0.0,
                      metavar="TIME", help="send a ping this often, e.g. 20s (default 0: never)")
    more.add_argument("--history-file", metavar="FILE",
                      help="where the prompt keeps its history (default "
                           "$XDG_STATE_HOME/wsgate/history; '' keeps none)")
    more.add_argument("-q", "--quiet", action="store_true",
                      help="pipe mode: no status lines on stderr (errors still are)")


def session_options(args: argparse.Namespace, *, wait: float,
                    execute: tuple[str, ...] = ()) -> SessionOptions:
    """How to talk, from the flags of :func:`add_session_arguments`."""
    return SessionOptions(binary=args.binary, slash=args.slash,
                          show_ping_pong=args.show_ping_pong, execute=execute, wait=wait)


def console_options(args: argparse.Namespace, *, interactive: bool,
                    read_stdin: bool = True) -> ConsoleOptions:
    """Which console, from the flags of :func:`add_session_arguments`."""
    history: str = args.history_file
    if history is None:
        history = str(default_history_path())
    return ConsoleOptions(interactive=interactive, color=wants_color(args.no_color),
                          quiet=args.quiet, history_file=history or None,
                          json_pretty=args.json, read_stdin=read_stdin)


def run(options: ConsoleOptions, main: Callable[[Console], Awaitable[int]]) -> int:
    """``main(console)`` on wsgate's event loop, with the console open around it."""
    logging.getLogger("websockets").addHandler(logging.NullHandler())
    return runtime.run(_with_console(options, main))


async def _with_console(options: ConsoleOptions,
                        main: Callable[[Console], Awaitable[int]]) -> int:
    console = make_console(options)
    async with console:
        try:
            return await main(console)
        except asyncio.CancelledError:
            return 130
