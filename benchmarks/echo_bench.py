"""wsgate echo against Node ws, side by side in one run: messages/s at 32 B, 50 connections.

Usage: python benchmarks/echo_bench.py [--rounds 3] [--seconds 5] [--node-modules DIR]

Both servers answer with the seed's prefix and no per-message log. Rounds are interleaved
(Node, wsgate, Node, wsgate, ...) and the median of each is reported, so a noisy neighbour
hurts both alike. Needs Node with the ``ws`` package (``npm install ws`` into DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def _start(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"(?:port |:)(\d+)$", line.strip())
        if "Listening" in line and match:
            return proc, int(match.group(1))
    proc.kill()
    raise SystemExit(f"{argv[0]} did not start")


def _load(port: int, args: argparse.Namespace) -> float:
    out = subprocess.run(
        [sys.executable, str(HERE / "echo_load.py"), f"ws://127.0.0.1:{port}",
         "--connections", str(args.connections), "--size", str(args.size),
         "--seconds", str(args.seconds)],
        capture_output=True, text=True, check=True,
    ).stdout
    result = json.loads(out)
    if result["errors"]:
        raise SystemExit(f"{result['errors']} wrong replies from port {port}")
    rate: float = result["rate"]
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--node-modules", default=os.environ.get("WSGATE_NODE_MODULES", ""))
    args = parser.parse_args()
    env = {**os.environ, "NODE_PATH": args.node_modules}
    wsgate = [str(Path(sys.executable).parent / "wsgate"), "echo", "--quiet", "--port", "0"]
    servers = {
        "node ws": _start(["node", str(HERE / "node_echo.js"), "0"], env),
        "wsgate echo": _start(wsgate, env),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _ in range(args.rounds):
            for name, (_proc, port) in servers.items():
                rates[name].append(_load(port, args))
    finally:
        for proc, _port in servers.values():
            proc.terminate()
            proc.wait()
    node = statistics.median(rates["node ws"])
    print(f"{args.size} B messages, {args.connections} connections, one in flight each, "
          f"{args.rounds} interleaved rounds of {args.seconds:g} s")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:12} {median:>10,.0f} msg/s  ({median / node:.2f}x node ws)  "
              f"rounds: {', '.join(f'{v:,.0f}' for v in values)}")


if __name__ == "__main__":
    main()
