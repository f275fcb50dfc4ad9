"""Connect to a WebSocket server and talk to it, like wscat -c URL.

On a terminal: "Connected (press CTRL+C to quit)", a "> " prompt with history, incoming
messages as "< msg" above the line being typed; CTRL+C, CTRL+D or /close (with --slash)
close the connection cleanly. When stdin is not a terminal (pipe mode), every input line
is one message and every message received is one bare stdout line (status lines go to
stderr, or nowhere with -q); at end of input wsgate waits --wait (default 0), sends
Close 1000, and keeps printing until the close handshake is over, so the replies to
everything sent are printed before it exits. With -x the output is as in pipe mode and
stdin is not read.

Binary messages received are shown as hex ("< [binary, 5 bytes] 68 65 6c 6c 6f") on a
terminal, and written raw, followed by a newline, to stdout in pipe mode. On a terminal,
control characters in what the server sends are shown escaped ("\\x1b"), so a message
cannot drive the terminal; pipe mode passes messages on byte for byte.

Durations are written 500ms, 10s, 1m30s, or a bare number of seconds.

As with wscat, proxies come only from --proxy, never from the environment.

Exit status: 0 after a clean close (1000, 1001, 1005, or a close you asked for), 1 when
the connection fails or closes abnormally (one "error: ..." line on stderr), 2 for
usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass

from wsgate import values
from wsgate.client import commandline
from wsgate.client.commandline import (
    WAIT,
    add_session_arguments,
    console_options,
    session_options,
)
from wsgate.client.console import Console, ConsoleOptions, is_terminal
from wsgate.client.dial import DialOptions, dial
from wsgate.client.failures import closed_abnormally
from wsgate.client.options import (
    backoff,
    basic_auth,
    format_close,
    normalize_proxy,
    normalize_url,
    parse_header,
)
from wsgate.client.session import SessionOptions, talk
from wsgate.client.tls import PROMPT, build_context
from wsgate.errors import Failure, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """wscat's connect flags (same names and meanings) and wsgate's own additions."""
    parser.add_argument("url", nargs="?", metavar="URL",
                        help="ws:// or wss:// URL (no scheme means ws://)")
    parser.add_argument("-c", "--connect", metavar="URL", dest="connect_url",
                        help="the URL, as wscat takes it")
    wscat = parser.add_argument_group("wscat options")
    wscat.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE",
                       help="set an HTTP header; repeat to set several")
    wscat.add_argument("--auth", metavar="USER:PASSWORD",
                       help="add a basic HTTP authentication header")
    wscat.add_argument("-o", "--origin", help="the Origin header")
    wscat.add_argument("--host", help="the Host header")
    wscat.add_argument("-s", "--subprotocol", action="append", default=[], metavar="PROTOCOL",
                       help="a subprotocol to offer; repeat to offer several")
    wscat.add_argument("-p", "--protocol", metavar="VERSION",
                       help="WebSocket protocol version (only 13 is supported)")
    wscat.add_argument("-n", "--no-check", action="store_false", dest="check",
                       help="do not check the server's TLS certificate")
    wscat.add_argument("--ca", metavar="FILE", help="trust this CA (PEM) instead of the system's")
    wscat.add_argument("--cert", metavar="FILE", help="client certificate (PEM)")
    wscat.add_argument("--key", metavar="FILE", help="the client certificate's key (PEM)")
    wscat.add_argument("--passphrase", nargs="?", const=PROMPT, metavar="PASSPHRASE",
                       help="the key's passphrase; asked for on the terminal if no value")
    wscat.add_argument("-x", "--execute", action="append", default=[], metavar="MESSAGE",
                       help="send MESSAGE after connecting (repeat to send several, in "
                            "order), then close after --wait seconds")
    wscat.add_argument("-w", "--wait", type=WAIT, metavar="TIME",
                       help="how long to wait after -x (default 2s) or after the end of piped "
                            "input (default 0) before closing, e.g. 500ms; -1 holds the "
                            "connection open")
    wscat.add_argument("-L", "--location", action="store_true", help="follow redirects")
    wscat.add_argument("--max-redirects", type=int, default=10, metavar="N",
                       help="with -L, follow at most N redirects (default 10)")
    wscat.add_argument("--proxy", metavar="[PROTOCOL://]HOST[:PORT]",
                       help="connect through an HTTP proxy (CONNECT method)")
    more = parser.add_argument_group("wsgate options")
    more.add_argument("--reconnect", action="store_true",
                      help="retry after a failed connect or when the server ends the "
                           "connection with a code other than 1000 (0.5 s, doubling up "
                           "to 30 s)")
    more.add_argument("--timeout", type=values.duration_flag(zero=False), default=10.0,
                      metavar="TIME",
                      help="give up opening the connection after this long (default 10s)")
    add_session_arguments(wscat, more)


@dataclass(frozen=True)
class _Plan:
    dial: DialOptions
    session: SessionOptions
    reconnect: bool
    console: ConsoleOptions


def _plan(args: argparse.Namespace) -> _Plan:
    """Check every flag before touching the network: a usage error is exit 2, one line."""
    if args.url and args.connect_url:
        raise UsageError("give the URL once (either URL or -c URL)")
    raw_url = args.url or args.connect_url
    if not raw_url:
        raise UsageError("a URL is needed: wsgate connect URL (or -c URL)")
    url = normalize_url(raw_url)
    if args.protocol is not None and args.protocol.strip() != "13":
        raise UsageError(f"bad --protocol {args.protocol} (only version 13 is supported)")
    headers = [parse_header(text) for text in args.header]
    if args.auth is not None:
        headers.append(("Authorization", basic_auth(args.auth)))
    if args.host is not None:
        headers.append(("Host", args.host))
    if args.max_redirects < 0:
        raise UsageError(f"bad --max-redirects {args.max_redirects} (expected 0 or more)")
    execute = tuple(args.execute)
    default_wait = 2.0 if execute else 0.0  # wscat's -x default; piped input: none
    wait: float = args.wait if args.wait is not None else default_wait
    interactive = not execute and is_terminal()
    context = build_context(ca=args.ca, cert=args.cert, key=args.key,
                            passphrase=args.passphrase, check=args.check)
    return _Plan(
        dial=DialOptions(
            url=url,
            headers=headers,
            origin=args.origin,
            subprotocols=list(args.subprotocol),
            ssl=context,
            proxy=normalize_proxy(args.proxy) if args.proxy is not None else None,
            follow_redirects=args.location,
            max_redirects=args.max_redirects,
            timeout=args.timeout,
            ping_interval=args.ping_interval or None,
        ),
        session=session_options(args, execute=execute, wait=0.0 if interactive else wait),
        reconnect=args.reconnect,
        console=console_options(args, interactive=interactive, read_stdin=not execute),
    )


def run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    return commandline.run(plan.console, lambda console: _connect_loop(plan, console))


def _retry(plan: _Plan, code: int) -> bool:
    """--reconnect retries whenever the server ends the connection other than on purpose.

    1000 and 1005 (a close without a code) are the server meaning to end the session;
    anything else, 1001 "going away" (a restart) included, is worth coming back after.
    """
    return plan.reconnect and code not in (1000, 1005)


async def _until_quit(console: Console, seconds: float) -> bool:
    """Sleep, unless the user quits first; whether they did."""
    try:
        await asyncio.wait_for(console.quit.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _connect_loop(plan: _Plan, console: Console) -> int:
    """Connect, talk, and with --reconnect do it again after failures, backing off."""
    delays = backoff()
    while not console.quit.is_set():
        dialing = asyncio.create_task(dial(plan.dial))
        quitting = asyncio.create_task(console.quit.wait())
        await asyncio.wait({dialing, quitting}, return_when=asyncio.FIRST_COMPLETED)
        quitting.cancel()
        if not dialing.done():
            dialing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Failure):
                await dialing
            return 0
        try:
            connection = dialing.result()
        except Failure as failure:
            if not plan.reconnect:
                raise
            problem = str(failure)
        else:
            delays = backoff()
            console.status("Connected (press CTRL+C to quit)")
            console.start_input()
            ending = await talk(connection, console, plan.session)
            console.status(format_close(ending.code, ending.reason))
            problem = closed_abnormally(ending.code, ending.reason)
            if ending.by_us or console.quit.is_set() or not _retry(plan, ending.code):
                if ending.ok or console.quit.is_set():
                    return 0
                raise Failure(problem)
        delay = next(delays)
        console.warn(problem)
        console.status(f"Reconnecting in {delay:.1f}s")
        if await _until_quit(console, delay):
            return 0
    return 0
