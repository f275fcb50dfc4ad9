"""The ``wsgate`` command line: one subcommand per module, user mistakes as one line.

Each command module offers ``add_arguments(parser)`` and ``run(args) -> int``. Only the
module of the command actually run is imported (the proxy must not load the client's
prompt_toolkit, nor ``wsgate --help`` anything). Every failure is one line on stderr,
``error: MESSAGE``: a usage mistake adds a pointer to the command's ``--help`` and exits 2,
a mistake inside a configuration file exits 2 without it, a failure at run time exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from wsgate import __version__, signals
from wsgate.errors import ConfigError, Failure, UsageError
from wsgate.terminal import escape

#: Each command: the module that implements it, and its line in ``wsgate --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("wsgate.up", "run the seed's whole system: two echo servers behind the proxy"),
    "echo": ("wsgate.echo", "run the seed's echo server (Node ws server.js)"),
    "connect": ("wsgate.client.connect", "connect to a WebSocket server (like wscat -c)"),
    "listen": ("wsgate.client.listen",
               "accept WebSocket clients, one at a time, and talk to each (like wscat -l)"),
    "proxy": ("wsgate.proxy.command",
              "reverse proxy and load balancer for WebSocket and HTTP (like nginx)"),
    "convert": ("wsgate.convert", "print an nginx configuration as wsgate's TOML"),
    "bench": ("wsgate.bench.command",
              "load a WebSocket echo service and measure it (like thor or tcpkali)"),
}

SERVERS = frozenset({"up", "echo", "proxy"})
"""Commands that serve until a signal: it is caught before their code is even loaded."""

_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_ROLE = re.compile(r":[a-z]+:`~?(.+?)`")


def plain(docstring: str | None) -> str:
    """A module docstring as ``--help`` text: reStructuredText markup taken out."""
    text = inspect.cleandoc(docstring or "")
    return _ROLE.sub(r"\1", _LITERAL.sub(r"\1", text))


def _error_line(message: str, help_of: str | None = None) -> str:
    """The one error form: ``error: MESSAGE``, with a pointer to ``--help`` for usage
    mistakes; control characters (from a server's reply, say) escaped."""
    pointer = f" (see {help_of} --help)" if help_of else ""
    return f"error: {escape(message)}{pointer}\n"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and a pointer to --help), exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(_error_line(message, self.prog))
        sys.exit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with ``command``'s flags: the others are named but never imported."""
    parser = _Parser(
        prog="wsgate",
        description="A WebSocket gateway: echo server, client, and reverse proxy.",
    )
    parser.add_argument("--version", action="version", version=f"wsgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, summary) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        module = importlib.import_module(module_name)
        chosen = sub.add_parser(name, help=summary, description=plain(module.__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(chosen)
        chosen.set_defaults(run=module.run)
    return parser


def _wscat_habits(argv: list[str]) -> list[str]:
    """``wsgate [OPTIONS] -c URL`` and ``wsgate -l PORT`` work as ``wscat`` does: wscat's
    ``-c``/``-l`` anywhere before a subcommand pick ``connect`` or ``listen``."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"):
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
    command = args_list[0] if args_list and args_list[0] in COMMANDS else None
    if command == "proxy":
        signals.PROXY.catch()
    elif command in SERVERS:
        signals.STOP.catch()
    parser = build_parser(command)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = args_list  # what an in-place upgrade runs again
    try:
        status: int = args.run(args)
    except ConfigError as error:
        sys.stderr.write(_error_line(str(error)))
        return 2
    except UsageError as error:
        sys.stderr.write(_error_line(str(error), f"wsgate {args.command}"))
        return 2
    except Failure as error:
        sys.stderr.write(_error_line(str(error)))
        return 1
    except KeyboardInterrupt:
        return 130
    return status
