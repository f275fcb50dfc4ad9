"""``wsgate proxy``: an nginx-class WebSocket reverse proxy and load balancer.

Either a TOML file (``-c wsgate.toml``) or flags for the simple case
(``--listen :8080 --upstream 127.0.0.1:8010 --upstream 127.0.0.1:8011``).
``--check`` validates the configuration and exits, like ``nginx -t``.
"""

from __future__ import annotations

import argparse

from wsgate.errors import UsageError
from wsgate.proxy import config as proxy_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration and exit (like nginx -t)")
    simple = parser.add_argument_group("the simple case, without a file")
    simple.add_argument("--listen", action="append", metavar="[HOST]:PORT",
                        help="address to listen on; repeat for several (default :8080)")
    simple.add_argument("--upstream", action="append", metavar="HOST:PORT",
                        help="upstream server; repeat for several")
    simple.add_argument("--balance", default="round_robin",
                        choices=["round_robin", "least_conn", "ip_hash"],
                        help="how to spread connections (default: round_robin)")
    simple.add_argument("--read-timeout", metavar="TIME",
                        help="close a connection idle this long (default: 60s)")
    simple.add_argument("--workers", metavar="N|auto", help="worker processes (default: 1)")
    simple.add_argument("--access-log", metavar="PATH",
                        help="stdout (default), stderr, off, or a file")
    simple.add_argument("--ssl-certificate", metavar="FILE", help="certificate for TLS")
    simple.add_argument("--ssl-certificate-key", metavar="FILE", help="key for TLS")


def load(args: argparse.Namespace) -> proxy_config.ProxyConfig:
    flags = [name for name in ("listen", "upstream", "read_timeout", "workers", "access_log",
                               "ssl_certificate", "ssl_certificate_key")
             if getattr(args, name) is not None]
    if args.config is not None:
        if flags:
            raise UsageError(f"--{flags[0].replace('_', '-')} cannot be combined with -c; "
                             "put it in the configuration file")
        return proxy_config.load(args.config)
    if not args.upstream:
        raise UsageError("give -c FILE, or at least one --upstream HOST:PORT")
    return proxy_config.from_flags(
        args.listen or [":8080"], args.upstream, balance=args.balance,
        read_timeout=args.read_timeout, workers=args.workers, access_log=args.access_log,
        ssl_certificate=args.ssl_certificate, ssl_certificate_key=args.ssl_certificate_key,
    )


def run(args: argparse.Namespace) -> int:
    config = load(args)
    if args.check:
        print(proxy_config.describe(config))
        return 0
    from wsgate.proxy import server

    return server.run(config)
