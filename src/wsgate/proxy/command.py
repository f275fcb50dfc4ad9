"""wsgate proxy: an nginx-class WebSocket reverse proxy and load balancer.

Either a TOML file (-c wsgate.toml) or flags for the simple case
(--listen :8080 --upstream 127.0.0.1:8010 --upstream 127.0.0.1:8011).
--check validates the configuration and everything it names, and exits, like nginx -t.

-s SIGNAL sends a signal to the running master, like nginx -s, and exits: reload (SIGHUP:
reread the configuration), reopen (SIGUSR1: reopen the log files), quit (SIGQUIT: graceful
stop), stop (SIGTERM: fast stop). The master is found through its pid file, so the
configuration must name one: pid = "/run/wsgate.pid" in the file given with -c, or
--pid FILE without a file (e.g. wsgate proxy -c wsgate.toml -s reload).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from wsgate.errors import Failure, UsageError
from wsgate.proxy import configload, flags, pidfile
from wsgate.proxy.config import ProxyConfig, describe, resolve_paths
from wsgate.proxy.directives import file_path
from wsgate.values import Invalid

SIGNALS: dict[str, signal.Signals] = {
    "reload": signal.SIGHUP,
    "reopen": signal.SIGUSR1,
    "quit": signal.SIGQUIT,
    "stop": signal.SIGTERM,
}
"""``-s NAME`` -> the signal the master takes it as (nginx's names and signals)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="configuration file: TOML (.toml) or nginx's syntax (any other "
                             "name, e.g. nginx.conf)")
    parser.add_argument("--format", choices=("toml", "nginx"),
                        help="the file's syntax, whatever its name")
    parser.add_argument("-t", "--check", action="store_true",
                        help="check the configuration and the files it names, and exit "
                             "(like nginx -t)")
    parser.add_argument("-s", "--signal", choices=tuple(SIGNALS), metavar="SIGNAL",
                        help="send reload, reopen, quit or stop to the running master, found "
                             "through the pid file, and exit (like nginx -s)")
    flags.add_arguments(parser.add_argument_group("the simple case, without a file"))


def load(args: argparse.Namespace) -> ProxyConfig:
    given = flags.given(args)
    if args.config is not None:
        if given:
            raise UsageError(f"{next(iter(given))} cannot be combined with -c; "
                             "put it in the configuration file")
        return configload.read(args.config, args.format)
    if not args.upstream:
        raise UsageError("give -c FILE, or at least one --upstream HOST:PORT")
    return flags.from_flags({"--listen": [":8080"], **given})


def load_for_signal(args: argparse.Namespace) -> ProxyConfig:
    """The configuration ``-s`` finds the pid file in: the file (checked, as nginx -s
    does), or the flags. Without a file only ``--pid`` is needed, but a whole command line
    that could start the proxy works too (the one that did, with ``-s`` added)."""
    if args.config is not None or set(flags.given(args)) - {"--pid"}:
        return load(args)
    if args.pid is None:
        return ProxyConfig()
    try:
        pid = file_path(args.pid)
    except Invalid as error:
        raise UsageError(f"--pid: {error}") from None
    return resolve_paths(ProxyConfig(pid=pid), Path.cwd())


def send(config: ProxyConfig, name: str) -> None:
    """Send ``-s name`` (a key of :data:`SIGNALS`) to the master whose PID is in
    ``config.pid``. UsageError when no pid file is configured; Failure when the file
    cannot be read or the process is not there (a stale pid file) or cannot be signalled."""
    number = SIGNALS[name]
    if config.pid is None:
        where = ("give --pid FILE, or -c FILE with pid set in it"
                 if config.source == "command line"
                 else f'set pid in {config.source} (e.g. pid = "/run/wsgate.pid")')
        raise UsageError(f"-s needs the pid file: {where}")
    pid = pidfile.read(config.pid)
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        raise Failure(f"no process {pid} (from {config.pid}): is wsgate proxy running?"
                      ) from None
    except OSError as error:
        raise Failure(f"cannot send {number.name} to process {pid} (from {config.pid}): "
                      f"{error.strerror}") from None


def run(args: argparse.Namespace) -> int:
    if args.signal is not None:
        if args.check:
            raise UsageError("-s cannot be combined with --check")
        send(load_for_signal(args), args.signal)
        return 0
    config = load(args)
    if config.ignored:
        sys.stderr.write(f"notice: {config.source}: without effect in wsgate, accepted and "
                         f"ignored: {', '.join(config.ignored)}\n")
    if args.check:
        from wsgate.proxy import preflight

        preflight.check(config)
        print(describe(config))
        return 0
    from wsgate import signals
    from wsgate.proxy import master
    from wsgate.proxy.limits import raise_open_file_limit

    raise_open_file_limit()
    return master.run(config, args.config, args.argv, signals.PROXY)
