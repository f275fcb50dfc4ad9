"""Two builds of wsgate proxy against each other: did a change cost speed?

Usage: python benchmarks/ab.py OLD_WSGATE NEW_WSGATE [--rounds 8] [--connections 50]
                               [--size 32] [--seconds 5] [--storm 3000] [--status]

OLD_WSGATE and NEW_WSGATE are two ``wsgate`` executables (e.g. a virtualenv with the
previous commit installed: ``git worktree add /tmp/old HEAD~1 && python -m venv
/tmp/old/.venv && /tmp/old/.venv/bin/pip install /tmp/old``). Both proxy the same two
upstream ports of one ``wsgate echo`` process, with the benchmark suite's config (one
worker, access log to a file). Each round measures both, old and new in ABBA order
(the second of two runs reads a few per cent worse on two shared cores), with this
checkout's ``wsgate bench``: messages/s and the proxy's CPU per 100k messages (all its
processes, from /proc, over the measured window) at ``--size`` bytes and ``--connections``;
then handshakes/s (``--mode storm``) and the proxy's CPU per handshake (its close
included). Medians, and every run, on stdout.

``--status`` gives the new build's proxy a status listener (scraped once a second, as a
Prometheus server would do it far less often) and a health check every second on both
upstreams: what turning the visibility on costs, the monitor's own CPU included.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import suite


def proxy(name: str, wsgate: str, folder: Path, upstreams: tuple[int, int],
          status: int | None = None) -> suite.Service:
    port = suite.free_port()
    prefix = folder / name
    prefix.mkdir(exist_ok=True)
    config = prefix / "wsgate.toml"
    config.write_text(suite.wsgate_conf(prefix, port, upstreams[0], upstreams[1], status))
    return suite.Service(name, [wsgate, "proxy", "-c", str(config)], port)


def one_run(service: suite.Service, args: argparse.Namespace,
            status: int | None = None) -> tuple[float, float, float, float]:
    """messages/s, proxy CPU seconds per 100k messages, handshakes/s, and proxy CPU
    microseconds per handshake."""
    service.start()
    scraping = contextlib.ExitStack()
    if status is not None:
        scraping.enter_context(suite.Scraper(status))
    try:
        url = f"ws://127.0.0.1:{service.port}/"
        # The master listens before its worker exists: measure once the worker does (else
        # a run reads about 0 CPU, as one in a few did).
        processes = 2 if status is None else 3  # master, worker (and monitor)
        deadline = time.monotonic() + 10
        while len(service.pids()) < processes and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = service.pids()
        before = suite.cpu_seconds(pids)
        result = suite.bench(url, "-c", str(args.connections), "-s", str(args.size),
                             "-t", str(args.seconds), "--warmup", "1")
        cpu = suite.cpu_seconds(pids) - before
        rate = float(result["rate"])  # type: ignore[arg-type]
        # The window is warm-up plus the measured seconds: count the messages of both.
        messages = rate * (args.seconds + 1)
        before = suite.cpu_seconds(pids)
        storm = suite.bench(url, "--mode", "storm", "-c", str(args.storm))
        time.sleep(0.5)  # the storm's connections close as the bench exits: count that too
        per_handshake = (suite.cpu_seconds(pids) - before) / args.storm * 1e6
        return (rate, cpu / messages * 1e5, float(storm["rate"]),  # type: ignore[arg-type]
                per_handshake)
    finally:
        scraping.close()
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the old build's wsgate executable")
    parser.add_argument("new", help="the new build's wsgate executable")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--storm", type=int, default=3000)
    parser.add_argument("--status", action="store_true",
                        help="the new build runs with a status listener and health checks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsgate-ab-") as name:
        folder = Path(name)
        up1, up2 = suite.free_port(), suite.free_port()
        echo = suite.Service("echo", [*suite.WSGATE, "echo", "--quiet", "--ping-interval",
                                      "0", "--port", str(up1), "--port", str(up2)], up1)
        builds = {"old": args.old, "new": args.new}
        found: dict[str, list[tuple[float, float, float, float]]] = {"old": [], "new": []}
        with suite.running(echo):
            for index in range(args.rounds):
                order = ["old", "new"] if index % 2 == 0 else ["new", "old"]
                for build in order:
                    status = suite.free_port() if args.status and build == "new" else None
                    run = one_run(proxy(build, builds[build], folder, (up1, up2), status),
                                  args, status)
                    found[build].append(run)
                    suite.say(f"round {index + 1} {build}: {run[0]:,.0f} msg/s, "
                              f"{run[1]:.3f} CPU s/100k, {run[2]:,.0f} handshakes/s, "
                              f"{run[3]:.0f} CPU µs/handshake")
    print(f"{args.size} B, {args.connections} connections, {args.rounds} rounds (ABBA), "
          "medians:")
    for build in ("old", "new"):
        runs = found[build]
        print(f"  {build}: {statistics.median(r[0] for r in runs):,.0f} msg/s, "
              f"{statistics.median(r[1] for r in runs):.3f} CPU s per 100k messages, "
              f"{statistics.median(r[2] for r in runs):,.0f} handshakes/s, "
              f"{statistics.median(r[3] for r in runs):.0f} CPU µs per handshake")


if __name__ == "__main__":
    main()
