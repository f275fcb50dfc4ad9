"""The ``wsgate`` command line: one subcommand per module, user mistakes as one line.

Each command module offers ``add_arguments(parser)`` and ``run(args) -> int``; this module
only wires them together and turns :class:`UsageError` and :class:`Failure` into one line on
stderr with exit status 2 and 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

from wsgate import __version__
from wsgate.errors import Failure, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and a pointer to --help), exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _commands() -> dict[str, tuple[ModuleType, str]]:
    from wsgate import echo, up
    from wsgate.bench import command as bench
    from wsgate.client import connect, listen
    from wsgate.proxy import command as proxy

    return {
        "up": (up, "run the seed's whole system: two echo servers behind the proxy"),
        "echo": (echo, "run the seed's echo server (Node ws server.js)"),
        "connect": (connect, "connect to a WebSocket server (like wscat -c)"),
        "listen": (listen, "accept one WebSocket client and talk to it (like wscat -l)"),
        "proxy": (proxy, "reverse proxy and load balancer for WebSocket and HTTP (like nginx)"),
        "bench": (bench, "load a WebSocket echo service and measure it (like thor or tcpkali)"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsgate",
        description="A WebSocket gateway: echo server, client, and reverse proxy.",
    )
    parser.add_argument("--version", action="version", version=f"wsgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, summary) in _commands().items():
        command = sub.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(command)
        run: Callable[[argparse.Namespace], int] = module.run
        command.set_defaults(run=run)
    return parser


def _wscat_habits(argv: list[str]) -> list[str]:
    """``wsgate [OPTIONS] -c URL`` and ``wsgate -l PORT`` work as ``wscat`` does: wscat's
    ``-c``/``-l`` anywhere before a subcommand pick ``connect`` or ``listen``."""
    if not argv or argv[0] in _commands() or argv[0] in ("-h", "--help", "--version"):
        return argv
    for index, arg in enumerate(argv):
        if arg in ("-c", "--connect") or arg.startswith("--connect="):
            return ["connect", *argv]
        if arg in ("-l", "--listen"):
            return ["listen", *argv[:index], *argv[index + 1:]]
        if arg.startswith("--listen="):
            return ["listen", *argv[:index], arg.partition("=")[2], *argv[index + 1:]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_list = _wscat_habits(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
