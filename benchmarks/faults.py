"""Faults, side by side: what wsgate proxy and nginx do when things go wrong.

Usage: python benchmarks/faults.py [--output docs/faults.md] [--only NAME,...] [sizes...]
       python benchmarks/faults.py --smoke --output /tmp/faults.md   (under a minute; CI)

Scenarios (details in the report): upstream-killed, slow-consumer, fd-exhaustion,
idle-storm, pooled-reuse, idle-memory, shutdown, reload. Each runs once against
``wsgate proxy`` and once against nginx (the seed's config as benchmarks/suite.py writes it,
one worker, run from its own prefix), each time with fresh upstreams (``wsgate echo``, or an
HTTP upstream in this script) on ports the OS picked, and a fresh proxy. The table (scenario |
wsgate | nginx: pass/fail and the key figure) and a paragraph per scenario go to --output and
stdout. Every process started is stopped when its scenario ends, on failure and Ctrl+C too.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faults_scenarios as fs
import suite

TARGETS = {"wsgate": "wsgate proxy", "nginx": "nginx"}
SMOKE = fs.Sizes(tunnels=6, warm=0.5, watch=1.0, probes=3, flood=1.0, fd_clients=300,
                 fd_rounds=1, handshake_timeout=1.0, idle=200, storm=200, hold=2.0,
                 requests=8, memory=500, settle=0.5, grace=1.0)


@dataclass(frozen=True)
class Scenario:
    """A scenario's name (for --only), its title (the table's row), the function that runs it
    against one proxy, and its paragraph in the report (what was done and measured)."""

    name: str
    title: str
    run: Callable[[fs.Bed, fs.Sizes], fs.Outcome]
    about: Callable[[fs.Sizes], str]


SCENARIOS = [
    Scenario("upstream-killed", "Upstream killed mid-tunnel", fs.upstream_killed, lambda s: (
        "Two `wsgate echo` upstreams, each with its own reply prefix (so every echo names its "
        f"upstream); {s.tunnels} tunnels send {s.rate:g} numbered messages/s each. After "
        f"{s.warm:g} s one upstream gets SIGKILL; 0.5 s later {s.probes} new WebSockets are "
        f"opened one by one; the tunnels are watched {s.watch:g} s more. Pass: the tunnels on "
        "the survivor lose and drop nothing, and every new WebSocket echoes through the "
        "survivor. Recorded: what the cut clients saw, a Close "
        "frame's code (1014: bad gateway) or 1006 (a bare TCP close).")),
    Scenario("slow-consumer", "Slow consumer", fs.slow_consumer, lambda s: (
        f"{s.tunnels} tunnels echo {s.rate:g} messages/s each; after {s.warm:g} s one more client "
        f"writes 16 KiB text frames at {s.flood_rate:g} MiB/s for {s.flood:g} s and never "
        "reads the echoes (the upstream keeps sending them). Proxy RSS (master and worker) "
        f"is sampled every 0.2 s. Pass: RSS grows by at most {fs.RSS_SLACK_MIB:g} MiB, the other "
        f"tunnels lose nothing and their p99 round trip stays under {fs.P99_LIMIT_MS:g} ms "
        f"during the flood and {s.watch / 2:g} s after it.")),
    Scenario("fd-exhaustion", "File-descriptor exhaustion", fs.fd_exhaustion, lambda s: (
        f"The proxy runs under `prlimit --nofile={s.fd_limit}` (nginx without "
        f"worker_rlimit_nofile). Each round opens {s.fd_clients} WebSocket handshakes at "
        f"once (a client waits {s.handshake_timeout:g} s for an answer), then closes them all; "
        f"1 s later one new WebSocket must echo. {s.fd_rounds} rounds; pass: every round "
        "recovers. Recorded: what the handshakes got (HTTP status, reset, close, no answer) "
        "and how many log lines speak of the limit.")),
    Scenario("idle-storm", "Idle WebSockets plus a handshake storm", fs.idle_storm, lambda s: (
        f"`wsgate bench --mode idle` holds {s.idle:,} WebSockets; while they are held, "
        f"`wsgate bench --mode storm` opens {s.storm:,} more (200 handshakes under way at "
        "once). Pass: every handshake succeeds and no idle WebSocket is dropped; the figure is "
        "the storm's handshakes/s.")),
    Scenario("pooled-reuse", "Pooled upstream connection closed as it is reused", fs.pooled_reuse,
             lambda s: (
        "Plain HTTP through a keep-alive pool (nginx: `keepalive 32`, `proxy_http_version "
        "1.1` and an empty Connection header; wsgate: `keepalive = 32`) to an asyncio HTTP "
        f"upstream in the script. {s.requests} GETs with `refuse`: every upstream connection "
        "answers once and closes, unanswered, when the next request arrives on it (the race "
        f"lost, every time); then {s.requests} with `idle`: the upstream closes connections "
        f"idle for {fs.IDLE_CLOSE * 1000:g} ms, and requests come {fs.IDLE_CLOSE * 250:g}-"
        f"{fs.IDLE_CLOSE * 750:g} ms apart (round robin over two servers: a pooled connection "
        f"is reused after {fs.IDLE_CLOSE * 500:g}-{fs.IDLE_CLOSE * 1500:g} ms, on either side "
        "of the close); each mode against a fresh proxy. Pass: every "
        "request gets 200 (an idempotent request retried on a fresh connection).")),
    Scenario("idle-memory", "Memory after idle connections close", fs.idle_memory, lambda s: (
        f"A fresh proxy's RSS; with {s.memory:,} idle WebSockets held by `wsgate bench`; "
        f"and {s.settle:g} s after they all closed (fresh / held / after), master and worker. "
        "Informational: no verdict, since what an allocator keeps after a peak is not a leak "
        "(nginx keeps the pages its connections touched); 1.5x fresh is the figure to "
        "compare with.")),
    Scenario("shutdown", "Graceful shutdown (SIGQUIT)", fs.shutdown, lambda s: (
        f"Both proxies with worker_shutdown_timeout {s.grace:g} s; {s.tunnels} tunnels echo "
        f"{s.rate:g} messages/s each; after {s.warm:g} s the master gets SIGQUIT. Pass: every "
        "tunnel ends with a Close frame 1001 (going away), not a bare TCP close, and no echo is "
        "corrupt or out of order. Recorded: echoes still received after QUIT, and when the "
        "master exited.")),
    Scenario("reload", "Reload (SIGHUP)", fs.reloading, lambda s: (
        f"As for shutdown (worker_shutdown_timeout {s.grace:g} s), but after {s.warm:g} s the "
        "config file is changed (proxy_read_timeout 300s to 299s) and the master gets SIGHUP; new "
        f"WebSockets are opened one after another for {s.grace + s.watch:g} s from the HUP on. "
        "Pass: no tunnel is dropped, every one still echoes in the last 0.5 s, nothing is "
        "lost, every new WebSocket echoes.")),
]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = fs.Sizes()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(suite.ROOT / "docs" / "faults.md"))
    parser.add_argument("--only", help="scenarios to run, comma-separated: "
                        + ",".join(s.name for s in SCENARIOS))
    parser.add_argument("--targets", default="wsgate,nginx", help="wsgate, nginx or both")
    parser.add_argument("--smoke", action="store_true",
                        help="small sizes, short times: checks that the script works")
    parser.add_argument("--keep", action="store_true",
                        help="keep the configs and logs (they are kept anyway after an error)")
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value:g}")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in (args.only or "").split(",") if name.strip()]
    unknown = set(chosen) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    if not targets or set(targets) - set(TARGETS):
        parser.error("--targets takes wsgate, nginx or wsgate,nginx")
    base = SMOKE if args.smoke else defaults
    args.sizes = fs.Sizes(**{name: value if getattr(args, name) is None else getattr(args, name)
                             for name, value in vars(base).items()})
    args.scenarios = [s for s in SCENARIOS if not chosen or s.name in chosen]
    args.target_names = targets
    return args


def clamp(sizes: fs.Sizes, names: set[str]) -> list[str]:
    """Counts the machine cannot hold, lowered: one proxied WebSocket is two descriptors in
    the proxy's worker, which cannot have more than the hard limit."""
    room = (fs.hard_nofile() - 200) // 2
    said: list[str] = []
    for name, scenario in (("memory", "idle-memory"), ("idle", "idle-storm")):
        asked = getattr(sizes, name)
        if asked > room and scenario in names:
            setattr(sizes, name, room // 100 * 100)
            said.append(f"--{name} {asked:,} lowered to {getattr(sizes, name):,}: the hard "
                        f"limit of descriptors here is {fs.hard_nofile():,}, two per "
                        "proxied WebSocket")
    if sizes.idle + sizes.storm > room and "idle-storm" in names:
        sizes.storm = max(100, room - sizes.idle)
        said.append(f"--storm lowered to {sizes.storm:,} (descriptors)")
    return said


def cell(outcome: fs.Outcome | None) -> str:
    if outcome is None:
        return "-"
    verdict = {True: "**pass**", False: "**FAIL**", None: "info"}[outcome.passed]
    return f"{verdict}: {outcome.figure}".replace("|", "/")


def render(results: dict[str, dict[str, fs.Outcome]], args: argparse.Namespace,
           info: list[str], seconds: float) -> str:
    command = "python benchmarks/faults.py " + " ".join(sys.argv[1:])
    out = ["# Faults: wsgate proxy and nginx side by side", "",
           f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
           f"`{command.strip()}` (the whole run: {seconds:.0f} s), by benchmarks/faults.py.",
           "", *info, "",
           "| scenario | " + " | ".join(TARGETS[t] for t in args.target_names) + " |",
           "|---|" + "---|" * len(args.target_names)]
    for scenario in args.scenarios:
        found = results.get(scenario.name, {})
        out.append(f"| {scenario.title} | "
                   + " | ".join(cell(found.get(t)) for t in args.target_names) + " |")
    for scenario in args.scenarios:
        out += ["", f"## {scenario.title}", "", scenario.about(args.sizes), "",
                f"`python benchmarks/faults.py --only {scenario.name}"
                + (" --smoke" if args.smoke else "") + "`", ""]
        for target in args.target_names:
            outcome = results.get(scenario.name, {}).get(target)
            if outcome is not None:
                out.append(f"- {TARGETS[target]}: " + "; ".join(outcome.notes or ["-"]))
    return "\n".join(out) + "\n"


def run_one(scenario: Scenario, target: str, prefix: Path, nginx: str,
            sizes: fs.Sizes) -> fs.Outcome:
    """One scenario against one target; whatever it started is stopped before this returns,
    and an error is its outcome."""
    suite.say(f"{scenario.name}: {TARGETS[target]}")
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        bed = fs.Bed(target, prefix / scenario.name, nginx, stack)
        try:
            outcome = scenario.run(bed, sizes)
        except Exception as error:
            tail = bed.target.tail(2) if bed.target is not None else ""
            outcome = fs.Outcome(False, f"error: {type(error).__name__}: {error}"[:200],
                                 [tail] if tail else [])
    suite.say(f"  {cell(outcome)} ({time.monotonic() - began:.1f} s)")
    return outcome


def main() -> None:
    args = parse()
    started = time.monotonic()
    fs.raise_nofile()
    notes = clamp(args.sizes, {scenario.name for scenario in args.scenarios})
    for note in notes:
        suite.say(note)

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    nginx = suite.ensure_nginx() if "nginx" in args.target_names else "nginx"
    prefix = Path(tempfile.mkdtemp(prefix="wsgate-faults-"))
    results: dict[str, dict[str, fs.Outcome]] = {}
    try:
        for scenario in args.scenarios:
            for target in args.target_names:
                results.setdefault(scenario.name, {})[target] = run_one(
                    scenario, target, prefix, nginx, args.sizes)
    except KeyboardInterrupt:
        suite.say("interrupted: everything started has been stopped")
        if not args.keep:
            shutil.rmtree(prefix, ignore_errors=True)
        raise SystemExit(130) from None
    machine, nginx_version, wsgate_line, _node = suite.versions(nginx, None)
    info = [machine, nginx_version, wsgate_line.replace(
        "(the echo upstream and the load generator)",
        "(`wsgate echo` upstreams, `wsgate bench` for the idle and storm loads)"),
        "- other clients: this script (Python websockets and asyncio, on uvloop)",
        *[f"- {note}" for note in notes]]
    report = render(results, args, info, time.monotonic() - started)
    print(report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    suite.say(f"wrote {output}")
    if args.keep or any(o.figure.startswith("error") for r in results.values()
                        for o in r.values()):
        suite.say(f"configs and logs kept in {prefix}")
    else:
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()
