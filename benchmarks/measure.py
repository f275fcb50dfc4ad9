"""What benchmarks/suite.py measures, and how: CPU and RSS read from /proc, ``wsgate bench``
run against each target (throughput, handshake storms, idle connections), every round's
figures kept for the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peers import Service, say

WSGATE = [str(Path(sys.executable).parent / "wsgate")]
TICKS = os.sysconf("SC_CLK_TCK")
NAN = float("nan")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def machine_cpu_seconds() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(value) for i, value in enumerate(fields) if i not in (3, 4))  # not idle
    return busy / TICKS


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class CpuSampler:
    """CPU counters sampled every 20 ms with timestamps, read back for any window."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), cpu_seconds(self.pids), machine_cpu_seconds()))
            time.sleep(0.02)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> tuple[float, float]:
        def at(when: float, column: int) -> float:
            before = max((s for s in self.samples if s[0] <= when), default=self.samples[0])
            after = min((s for s in self.samples if s[0] >= when), default=self.samples[-1])
            if after[0] == before[0]:
                return before[column]
            share = (when - before[0]) / (after[0] - before[0])
            return before[column] + share * (after[column] - before[column])
        return at(end, 1) - at(start, 1), at(end, 2) - at(start, 2)


def bench(url: str, *extra: str) -> dict[str, object]:
    out = subprocess.run([*WSGATE, "bench", url, "--json", *extra], capture_output=True,
                         text=True, timeout=600)
    if not out.stdout.strip():
        raise SystemExit(f"wsgate bench {url} {' '.join(extra)} failed: {out.stderr.strip()}")
    result: dict[str, object] = json.loads(out.stdout)
    if result["errors"] or result["failed"]:
        say(f"  warning: {result['errors']} errors, {result['failed']} failed "
            f"({result['first_error']})")
    return result


class Rounds:
    def median(self, name: str) -> float:
        values: list[float] = getattr(self, name)
        return statistics.median(values) if values else NAN


@dataclass
class Cell(Rounds):
    """Every round's figures for one target in one scenario."""

    rates: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    machine: list[float] = field(default_factory=list)


@dataclass
class Memory(Rounds):
    """Every round's RSS figures for one proxy at one idle connection count: growth per
    connection (KiB), and RSS (MiB) fresh, holding them, and seconds after they closed."""

    per_connection: list[float] = field(default_factory=list)
    fresh: list[float] = field(default_factory=list)
    holding: list[float] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)


@dataclass
class Target:
    name: str
    service: Service | None
    port: int
    scheme: str = "ws"
    """wss: TLS terminated at the target."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"


def add_cpu(proxy: list[float], machine: list[float], sampler: CpuSampler,
            result: dict[str, object], unit: str, scale: float, pids: list[int]) -> None:
    """Note the proxy's and the machine's CPU over the bench's window, per ``scale`` of
    ``unit`` (the result's count of messages or of opened connections); none if it counted
    none (and no proxy figure for a target that is no proxy)."""
    window: list[float] = result["window"]  # type: ignore[assignment]
    proc_cpu, machine_cpu = sampler.between(window[0], window[1])
    count = float(result[unit])  # type: ignore[arg-type]
    if count and pids:
        proxy.append(proc_cpu / count * scale)
    if count:
        machine.append(machine_cpu / count * scale)


def measure_throughput(targets: list[Target], sizes: list[int], connections: list[int],
                       args: argparse.Namespace,
                       load: list[str]) -> dict[tuple[int, int, str], Cell]:
    """Messages/s, latency and CPU per 100k messages; ``load``: the load generator's own
    flags (its processes, the CA it trusts)."""
    cells: dict[tuple[int, int, str], Cell] = {}
    for size in sizes:
        for count in connections:
            say(f"throughput: {size} B, {count} connections")
            for _round in range(args.rounds):
                for target in targets:
                    pids = target.service.pids() if target.service else []
                    with CpuSampler(pids) as sampler:
                        result = bench(target.url, "-c", str(count), "-s", str(size),
                                       "-t", str(args.seconds), "--warmup", str(args.warmup),
                                       *load)
                    cell = cells.setdefault((size, count, target.name), Cell())
                    rate = float(result["rate"])  # type: ignore[arg-type]
                    latency: dict[str, float] = result["latency_us"]  # type: ignore[assignment]
                    cell.rates.append(rate)
                    cell.p50.append(latency["p50"])
                    cell.p99.append(latency["p99"])
                    add_cpu(cell.cpu, cell.machine, sampler, result, "messages", 1e5, pids)
    return cells


def measure_memory(make: dict[str, Callable[[], Service]], counts: list[int], hold: float,
                   settle: float, rounds: int) -> dict[tuple[int, str], Memory]:
    """RSS growth per idle proxied connection, and RSS fresh, holding them and ``settle``
    seconds after they close, each round on a fresh proxy."""
    found: dict[tuple[int, str], Memory] = {}
    for count in counts:
        say(f"idle memory: {count} connections")
        for _round in range(rounds):
            for name, factory in make.items():
                service = factory()
                service.start()
                try:
                    time.sleep(0.3)
                    fresh = rss_kib(service.pids())
                    proc = subprocess.Popen(
                        [*WSGATE, "bench", f"ws://127.0.0.1:{service.port}/", "--mode",
                         "idle", "-c", str(count), "--hold", str(hold), "--json"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    assert proc.stderr is not None
                    line = proc.stderr.readline()
                    held = int(re.sub(r"\D", "", line.split(" connections")[0]) or 0)
                    holding = rss_kib(service.pids())
                    proc.communicate(timeout=hold + 120)
                    time.sleep(settle)
                    closed = rss_kib(service.pids())
                    if held:
                        memory = found.setdefault((count, name), Memory())
                        memory.per_connection.append((holding - fresh) / held)
                        memory.fresh.append(fresh / 1024)
                        memory.holding.append(holding / 1024)
                        memory.closed.append(closed / 1024)
                finally:
                    service.stop()
    return found


@dataclass
class Storm(Rounds):
    """Every round's handshake figures for one proxy: handshakes/s, and the CPU (ms) each
    handshake cost the proxy and the whole machine (load generator included)."""

    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    machine: list[float] = field(default_factory=list)


def measure_storm(targets: list[Target], count: int, rounds: int,
                  load: list[str]) -> dict[str, Storm]:
    """Handshakes/s: ``count`` connections opened as fast as they go (over wss://, each a
    full TLS handshake: the load generator resumes no session), and what each cost."""
    found: dict[str, Storm] = {}
    say(f"handshakes: {count} per run")
    for _round in range(rounds):
        for target in targets:
            pids = target.service.pids() if target.service else []
            with CpuSampler(pids) as sampler:
                result = bench(target.url, "--mode", "storm", "-c", str(count), *load)
            storm = found.setdefault(target.name, Storm())
            storm.rates.append(float(result["rate"]))  # type: ignore[arg-type]
            add_cpu(storm.cpu, storm.machine, sampler, result, "opened", 1e3, pids)
    return found
