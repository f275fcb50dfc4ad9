"""wsgate proxy: an nginx-class WebSocket reverse proxy and load balancer.

Either a TOML file (-c wsgate.toml) or flags for the simple case
(--listen :8080 --upstream 127.0.0.1:8010 --upstream 127.0.0.1:8011).
--check validates the configuration and everything it names, and exits, like nginx -t.
"""

from __future__ import annotations

import argparse

from wsgate.errors import UsageError
from wsgate.proxy import configfile, flags
from wsgate.proxy.config import ProxyConfig, describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration and the files it names, and exit "
                             "(like nginx -t)")
    flags.add_arguments(parser.add_argument_group("the simple case, without a file"))


def load(args: argparse.Namespace) -> ProxyConfig:
    given = flags.given(args)
    if args.config is not None:
        if given:
            raise UsageError(f"{next(iter(given))} cannot be combined with -c; "
                             "put it in the configuration file")
        return configfile.load(args.config)
    if not args.upstream:
        raise UsageError("give -c FILE, or at least one --upstream HOST:PORT")
    return flags.from_flags({"--listen": [":8080"], **given})


def run(args: argparse.Namespace) -> int:
    config = load(args)
    if args.check:
        from wsgate.proxy import preflight

        preflight.check(config)
        print(describe(config))
        return 0
    from wsgate.proxy import server

    return server.run(config)
