"""``wsgate up``: the seed's whole system in one command.

Two echo servers (the seed's server.js on 8010 and 8011) and the proxy on 8080 in front of
both (the seed's nginx), in one process and one event loop. Ctrl+C stops all of it.
"""

from __future__ import annotations

import argparse
import sys

from wsgate import echo, runtime, values
from wsgate.proxy import flags, listeners, preflight
from wsgate.proxy.limits import raise_open_file_limit
from wsgate.proxy.server import Serving
from wsgate.signals import STOP, Signals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def read_timeout(text: str) -> str:
        """Checked here, passed on as written: the proxy's configuration reads it."""
        values.duration(text)
        return text

    parser.add_argument("--host", default="127.0.0.1",
                        help="address everything listens on (default: 127.0.0.1)")
    parser.add_argument("--port", type=values.port_flag(zero=True), default=8080,
                        help="the proxy's port (default: 8080; 0 picks one)")
    parser.add_argument("--echo-port", type=values.port_flag(zero=True), action="append",
                        metavar="PORT",
                        help="an echo server's port; repeat for several (default: 8010 and 8011)")
    parser.add_argument("--balance", default="round_robin",
                        choices=["round_robin", "least_conn", "ip_hash"],
                        help="how the proxy spreads connections (default: round_robin)")
    parser.add_argument("--read-timeout", type=values.flag(read_timeout, "duration"),
                        default="300s", metavar="TIME",
                        help="the proxy closes a connection idle this long (default: 300s, "
                             "the seed's proxy_read_timeout)")
    parser.add_argument("--quiet", action="store_true",
                        help="no log line per message (the echo servers') and none per "
                             "request or WebSocket (the proxy's access log)")


async def _up(args: argparse.Namespace, signals: Signals) -> None:
    echo_options = echo.EchoOptions(host=args.host, ports=tuple(args.echo_port or (8010, 8011)),
                                    quiet=args.quiet)
    upstream = echo.EchoServer(echo_options)
    await upstream.start()
    try:
        addresses = [url.removeprefix("ws://") for url in upstream.urls()]
        host = f"[{args.host}]" if ":" in args.host else args.host
        config = flags.from_flags({
            "--listen": [f"{host}:{args.port}"], "--upstream": addresses,
            "--balance": args.balance, "--read-timeout": args.read_timeout,
            "--access-log": "off" if args.quiet else "stdout",
        })
        resources = preflight.open_resources(config)
        resources.error_log.install()
        sockets = listeners.bind_all(config)
    except BaseException:
        await upstream.shutdown()
        raise
    first = next(iter(sockets.values()))
    proxy_url = listeners.url_of(first.sock, tls=False).replace("http://", "ws://")

    def announce() -> None:
        print("Server started")
        for url in upstream.urls():
            print(f"Echo server listening on {url}")
        print(f"Proxy listening on {proxy_url} -> {', '.join(addresses)}")
        print(f"Connect with: wsgate connect {proxy_url}")
        sys.stdout.flush()

    serving = Serving(config, sockets, {}, resources.access_log, resources.error_log)
    await serving.run(signals, ready=announce, on_stop=upstream.shutdown)


def run(args: argparse.Namespace) -> int:
    STOP.catch()
    raise_open_file_limit()
    runtime.run(_up(args, STOP))
    return 0
