"""``wsgate up``: the seed's whole system in one command.

Two echo servers (the seed's server.js on 8010 and 8011) and the proxy on 8080 in front of
both (the seed's nginx), in one process and one event loop. Ctrl+C stops all of it.
"""

from __future__ import annotations

import argparse
import sys

from wsgate import echo, runtime
from wsgate.proxy import config as proxy_config
from wsgate.proxy import server
from wsgate.proxy.accesslog import AccessLog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address everything listens on (default: 127.0.0.1)")
    parser.add_argument("--port", type=echo.port_number, default=8080,
                        help="the proxy's port (default: 8080; 0 picks one)")
    parser.add_argument("--echo-port", type=echo.port_number, action="append", metavar="PORT",
                        help="an echo server's port; repeat for several (default: 8010 and 8011)")
    parser.add_argument("--balance", default="round_robin",
                        choices=["round_robin", "least_conn", "ip_hash"],
                        help="how the proxy spreads connections (default: round_robin)")
    parser.add_argument("--read-timeout", default="300s", metavar="TIME",
                        help="the proxy closes a connection idle this long (default: 300s, "
                             "the seed's proxy_read_timeout)")
    parser.add_argument("--quiet", action="store_true",
                        help="no log line per message or per request")


async def _up(args: argparse.Namespace) -> None:
    echo_options = echo.EchoOptions(host=args.host, ports=tuple(args.echo_port or (8010, 8011)),
                                    quiet=args.quiet)
    upstream = echo.EchoServer(echo_options)
    await upstream.start()
    try:
        addresses = [url.removeprefix("ws://") for url in upstream.urls()]
        host = f"[{args.host}]" if ":" in args.host else args.host
        config = proxy_config.from_flags(
            [f"{host}:{args.port}"], addresses, balance=args.balance,
            read_timeout=args.read_timeout, access_log="off" if args.quiet else "stdout",
        )
        sockets = server.bind_all(config)
        proxy_url = server.url_of(sockets[0][0], tls=False).replace("http://", "ws://")
        print("Server started")
        for url in upstream.urls():
            print(f"Echo server listening on {url}")
        print(f"Proxy listening on {proxy_url} -> {', '.join(addresses)}")
        print(f"Connect with: wsgate connect {proxy_url}")
        sys.stdout.flush()
    except BaseException:
        await upstream.shutdown()
        raise
    await server.serve_worker(config, sockets, None, AccessLog.open(config.access_log),
                              on_stop=upstream.shutdown)


def run(args: argparse.Namespace) -> int:
    runtime.run(_up(args))
    return 0
