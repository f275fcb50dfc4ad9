"""``wsgate bench URL``: load a WebSocket echo service and report what it sustained.

Modes: ``throughput`` (C connections, S-byte messages, D in flight on each, measured for
a time T after a warm-up), ``storm`` (open N connections as fast as possible: handshakes/s
and failures), ``idle`` (open N connections and hold them for a time H). Times are 500ms,
10s, 1m30s or a bare number of seconds; sizes 32, 4k or 1m. Every reply is checked: it must be
the payload sent, after the same prefix on every reply (the seed's server adds one).
For wss://, --ca trusts a CA file and -n checks no certificate, as in ``wsgate connect``;
no TLS session is resumed, so every handshake is a full one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from multiprocessing.queues import Queue
from threading import BrokenBarrierError

from wsgate import values
from wsgate.bench.plan import MODES, Plan, share
from wsgate.bench.stats import Summary, WorkerResult, report, summarize
from wsgate.client.options import normalize_url
from wsgate.client.tls import build_context
from wsgate.errors import Failure, UsageError

SETUP_TIMEOUT = 120.0


def _count(text: str) -> int:
    try:
        return values.integer(text.strip(), minimum=1)
    except values.Invalid:  # say what was typed: "0", as the other flags do
        values.must("", "a positive integer", text)


def _processes(text: str) -> int:
    if text.strip() == "auto":
        return os.cpu_count() or 1
    return _count(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    count = values.flag(_count, "count")
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// URL of an echo service")
    parser.add_argument("--mode", choices=MODES, default="throughput",
                        help="throughput (default), storm or idle")
    parser.add_argument("-c", "--connections", type=count, default=50, metavar="N",
                        help="connections (default 50; in storm and idle: how many to open)")
    parser.add_argument("-s", "--size", type=values.size_flag(zero=False), default=32,
                        metavar="SIZE", help="message size, e.g. 32, 4k or 1m (default 32 bytes)")
    parser.add_argument("-d", "--depth", type=count, default=1, metavar="N",
                        help="messages in flight per connection (default 1)")
    parser.add_argument("-t", "--seconds", type=values.duration_flag(zero=False), default=10.0,
                        metavar="TIME",
                        help="measured time in throughput mode, e.g. 10s or 1m (default 10s)")
    parser.add_argument("--warmup", type=values.duration_flag(zero=True), default=2.0,
                        metavar="TIME", help="load before measuring (default 2s; 0: none)")
    parser.add_argument("--hold", type=values.duration_flag(zero=False), default=10.0,
                        metavar="TIME",
                        help="how long to hold the connections in idle mode (default 10s)")
    parser.add_argument("--concurrency", type=count, default=200, metavar="N",
                        help="handshakes under way at once, per process (default 200)")
    parser.add_argument("-p", "--processes", type=values.flag(_processes, "count"), default=1,
                        metavar="N|auto", help="load processes (default 1; auto: one per core)")
    parser.add_argument("-b", "--binary", action="store_true", help="send binary messages")
    parser.add_argument("--ca", "--cacert", metavar="FILE",
                        help="wss://: trust this CA (PEM) instead of the system's")
    parser.add_argument("-n", "--no-check", action="store_false", dest="check",
                        help="wss://: do not check the server's TLS certificate")
    parser.add_argument("--connect-timeout", type=values.duration_flag(zero=False),
                        default=10.0, metavar="TIME",
                        help="how long a handshake may take (default 10s)")
    parser.add_argument("--json", action="store_true",
                        help="print one line of JSON instead of the report")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the latency distribution and throughput over time")


def _plans(args: argparse.Namespace, url: str) -> list[Plan]:
    whole = Plan(url=url, mode=args.mode, connections=args.connections, size=args.size,
                 depth=args.depth, seconds=args.seconds, warmup=args.warmup, hold=args.hold,
                 concurrency=args.concurrency, binary=args.binary,
                 connect_timeout=args.connect_timeout, ca=args.ca, check=args.check)
    return share(whole, args.processes)


def _progress(done: int, elapsed: float, total: float, unit: str) -> None:
    fraction = min(1.0, elapsed / total) if total > 0 else 0.0
    bar = "#" * int(fraction * 30)
    rate = done / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(f"\r[{bar:<30}] {fraction:4.0%} {elapsed:5.1f} s {rate:>12,.0f} {unit}")
    sys.stderr.flush()


def _run(args: argparse.Namespace, url: str) -> Summary:
    from wsgate.bench.load import worker  # picows: only where the load is made

    plans = _plans(args, url)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(plans) + 1)
    progress = context.Array("q", len(plans), lock=False)
    results: Queue[WorkerResult] = context.Queue()
    processes = [
        context.Process(target=worker, args=(plan, barrier, progress, index, results),
                        daemon=True)
        for index, plan in enumerate(plans)
    ]
    for process in processes:
        process.start()
    with contextlib.suppress(BrokenBarrierError):  # a process could not connect: it says why
        barrier.wait(timeout=SETUP_TIMEOUT)
    if args.mode == "idle":
        opened = sum(progress)
        sys.stderr.write(f"holding {opened:,} connections for {args.hold:g} s\n")
        sys.stderr.flush()
    total = {"throughput": args.warmup + args.seconds, "idle": args.hold}.get(args.mode, 0.0)
    unit = "msg/s" if args.mode == "throughput" else "/s"
    started = time.monotonic()
    collected: list[WorkerResult] = []
    show = sys.stderr.isatty() and not args.json
    while len(collected) < len(processes):
        try:
            collected.append(results.get(timeout=0.25))
        except Exception:
            if not any(process.is_alive() for process in processes) and results.empty():
                break
        if show:
            _progress(sum(progress), time.monotonic() - started, total, unit)
    if show:
        sys.stderr.write("\n")
    for process in processes:
        process.join(timeout=5)
    if len(collected) < len(processes):
        raise Failure("a load process died without a result")
    return summarize(args.mode, collected)


def run(args: argparse.Namespace) -> int:
    url = normalize_url(args.url)
    build_context(ca=args.ca, cert=None, key=None, passphrase=None, check=args.check)  # readable?
    if args.plot and args.mode != "throughput":
        raise UsageError("--plot draws a throughput run: use it with --mode throughput")
    if args.plot:
        from wsgate.bench import plot

        plot.check_available()
    summary = _run(args, url)
    if summary.opened == 0:
        raise Failure(f"no connection could be opened to {url}: {summary.first_error}")
    if args.json:
        fields = dataclasses.asdict(summary)
        fields.update(url=url, connections=args.connections, size=args.size,
                      depth=args.depth, processes=args.processes)
        print(json.dumps(fields, separators=(",", ":")))
    else:
        what = {
            "throughput": f"{args.connections} connections, {args.size} B, {args.depth} in "
                          f"flight, {args.seconds:g} s after {args.warmup:g} s warm-up",
            "storm": f"{args.connections} handshakes, {args.concurrency} at once per process",
            "idle": f"{args.connections} connections held {args.hold:g} s",
        }[args.mode]
        print(report(summary, f"wsgate bench {url}  {args.mode}: {what}, "
                              f"{args.processes} process(es)"))
    if args.plot:
        from wsgate.bench import plot

        plot.draw(summary, args.plot, f"{url}: {args.connections} connections, {args.size} B")
    return 1 if summary.errors or summary.failed else 0
