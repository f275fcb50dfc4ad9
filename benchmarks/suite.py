"""wsgate proxy against its peers, side by side in one run, written to docs/benchmarks.md.

Usage: python benchmarks/suite.py [--rounds 3] [--seconds 5] [--output docs/benchmarks.md]
                                  [--targets nginx,haproxy,caddy]
       python benchmarks/suite.py --smoke --output /tmp/smoke.md   (seconds; what CI runs)

It sets up what it needs: the peers nginx, HAProxy and Caddy (benchmarks/peers.py: Debian's
packages, each run from its own prefix and config with one worker, thread or core, and the
seed's semantics) and Node's ws from the npm registry (for the Node reference row). In one
run it measures the same load, driven by ``wsgate bench``, against: the upstream directly;
each peer; and ``wsgate proxy`` (the seed's config translated, one worker), every proxy in
front of the same two upstream ports of one ``wsgate echo`` process. Targets are
interleaved (A B C A B C ...) for every round; medians are reported side by side, the best
peer in each cell in bold: that peer is wsgate's goal there.

By default every peer runs, installed by apt-get (as root) if missing, else skipped with a
note; nginx is required. ``--smoke`` installs only nginx, and runs the others if present.

Measured: messages/s and round-trip latency at 32 B and 4 KiB with 1, 50 and 500
connections; each proxy's CPU seconds per 100k messages (utime+stime of its processes,
children included, from /proc, inside the bench's measured window) and the whole
machine's; on fresh proxies, RSS per idle proxied connection at 1k and ~10k connections,
and RSS fresh, holding them, and a couple of seconds after they close; handshakes/s.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from peers import KINDS, Peer, choose_peers

# Re-exported: reload.py, faults*.py, soak.py and ab.py use them as suite.X.
from peers import NGINX_CONF as NGINX_CONF
from peers import Service as Service
from peers import ensure_nginx as ensure_nginx
from peers import free_port as free_port
from peers import say as say

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WSGATE = [str(Path(sys.executable).parent / "wsgate")]
TICKS = os.sysconf("SC_CLK_TCK")
MARK_START = "<!-- results: written by benchmarks/suite.py -->"
MARK_END = "<!-- end of results -->"
OURS = "wsgate proxy"
NAN = float("nan")

WSGATE_CONF = """\
listen = ["127.0.0.1:{port}"]
worker_processes = 1
access_log = "{prefix}/access.log"

[upstream.websocket]
server = ["127.0.0.1:{up1}", "127.0.0.1:{up2}"]

[location."/"]
proxy_pass = "http://websocket"
proxy_read_timeout = "300s"
"""
STATUS_CONF = """\
status_listen = "127.0.0.1:{status}"
"""
HEALTH_CHECK_CONF = """
[upstream.websocket.health_check]
interval = "1s"
"""


def wsgate_conf(prefix: Path, port: int, up1: int, up2: int, status: int | None = None) -> str:
    """The suite's wsgate config; with ``status``, a status listener on that port and a
    health check every second on both upstreams (what visibility costs)."""
    text = WSGATE_CONF.format(prefix=prefix, port=port, up1=up1, up2=up2)
    if status is None:
        return text
    return STATUS_CONF.format(status=status) + text.replace(
        '\n[location."/"]', HEALTH_CHECK_CONF + '\n[location."/"]')


class Scraper:
    """Reads /metrics and /status once a second, as a (very eager) Prometheus and an open
    status page would, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopping.wait(1.0):
            for path in ("/metrics", "/status"):
                with contextlib.suppress(OSError), urllib.request.urlopen(
                        f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                    answer.read()


# -- setting up ---------------------------------------------------------------------------------

def ensure_node_ws(cache: Path) -> Path | None:
    """Node's ws from the npm registry (for the reference row); None without Node."""
    configured = os.environ.get("WSGATE_NODE_MODULES")
    if configured and (Path(configured) / "ws").exists():
        return Path(configured)
    if not shutil.which("node") or not shutil.which("npm"):
        return None
    modules = cache / "node_modules"
    if not (modules / "ws").exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                        str(cache), "ws"], check=True, timeout=300)
    return modules


# -- measuring ----------------------------------------------------------------------------------

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


def measure_throughput(targets: list[Target], sizes: list[int], connections: list[int],
                       args: argparse.Namespace) -> dict[tuple[int, int, str], Cell]:
    cells: dict[tuple[int, int, str], Cell] = {}
    for size in sizes:
        for count in connections:
            say(f"throughput: {size} B, {count} connections")
            for _round in range(args.rounds):
                for target in targets:
                    pids = target.service.pids() if target.service else []
                    with CpuSampler(pids) as sampler:
                        result = bench(f"ws://127.0.0.1:{target.port}/", "-c", str(count),
                                       "-s", str(size), "-t", str(args.seconds),
                                       "--warmup", str(args.warmup))
                    cell = cells.setdefault((size, count, target.name), Cell())
                    rate = float(result["rate"])  # type: ignore[arg-type]
                    latency: dict[str, float] = result["latency_us"]  # type: ignore[assignment]
                    cell.rates.append(rate)
                    cell.p50.append(latency["p50"])
                    cell.p99.append(latency["p99"])
                    window: list[float] = result["window"]  # type: ignore[assignment]
                    proc_cpu, machine_cpu = sampler.between(window[0], window[1])
                    messages = float(result["messages"])  # type: ignore[arg-type]
                    if messages and pids:
                        cell.cpu.append(proc_cpu / messages * 1e5)
                    if messages:
                        cell.machine.append(machine_cpu / messages * 1e5)
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


def measure_storm(targets: list[Target], count: int,
                  rounds: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    say(f"handshakes: {count} per run")
    for _round in range(rounds):
        for target in targets:
            result = bench(f"ws://127.0.0.1:{target.port}/", "--mode", "storm", "-c",
                           str(count))
            found.setdefault(target.name, []).append(float(result["rate"]))  # type: ignore[arg-type]
    return found


# -- writing ------------------------------------------------------------------------------------

def versions(nginx: str, node_modules: Path | None) -> list[str]:
    def first_line(argv: list[str]) -> str:
        with contextlib.suppress(Exception):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    ws_version = "-"
    if node_modules is not None:
        with contextlib.suppress(OSError, ValueError):
            ws_version = json.loads((node_modules / "ws" / "package.json").read_text())["version"]
    package = importlib.metadata.version
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}",
        f"- nginx: {first_line([nginx, '-v'])}",
        f"- wsgate: Python {platform.python_version()}, uvloop {package('uvloop')}, "
        f"picows {package('picows')} (the echo upstream and the load generator)",
        f"- node: {first_line(['node', '--version'])}, ws {ws_version}",
    ]


def plot(cells: dict[tuple[int, int, str], Cell], names: list[str], sizes: list[int],
         connections: list[int], folder: Path) -> list[str]:
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for metric, label, file in (("rates", "messages/s", "throughput.png"),
                                ("cpu", "proxy CPU s per 100k messages", "cpu.png"),
                                ("p99", "p99 round trip (µs)", "latency.png")):
        figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
        for column, size in enumerate(sizes):
            axis = axes[0][column]
            shown = [n for n in names if any((size, c, n) in cells and getattr(
                cells[(size, c, n)], metric) for c in connections)]
            width = 0.8 / max(1, len(shown))
            for index, name in enumerate(shown):
                values = [cells[(size, c, name)].median(metric) if (size, c, name) in cells
                          else 0 for c in connections]
                axis.bar([x + index * width for x in range(len(connections))], values, width,
                         label=name, color=f"C{names.index(name)}")  # one colour per target
            axis.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(connections))],
                            [f"{c} conn" for c in connections])
            axis.set_title(f"{size} B messages")
            axis.set_ylabel(label)
            axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(folder / file, dpi=90)
        plt.close(figure)
        written.append(file)
    return written


def ratio(ours: float, theirs: float) -> str:
    return "-" if not theirs or theirs != theirs or ours != ours else f"{ours / theirs:.2f}x"


def best_peer(values: dict[str, float], peers: list[str], higher: bool) -> str | None:
    """The peer with the best figure (the highest, or the lowest unless ``higher``)."""
    known = [name for name in peers if values.get(name, NAN) == values.get(name, NAN)]
    return (max if higher else min)(known, key=values.__getitem__) if known else None


@dataclass
class Figure:
    """A figure in one cell: every target's median, and which way is better."""

    lead: list[str]
    values: dict[str, float]
    shown: Callable[[float], str]
    higher: bool

    def row(self, names: list[str], peers: list[str]) -> str:
        """Every target's figure side by side, the best peer's in bold."""
        best = best_peer(self.values, peers, self.higher)
        row = list(self.lead)
        for name in names:
            value = self.values.get(name, NAN)
            text = self.shown(value) if value == value else "-"
            row.append(f"**{text}**" if name == best else text)
        return "| " + " | ".join(row) + " |"

    def goal(self, peers: list[str]) -> str:
        """wsgate against the best peer (and nginx)."""
        best = best_peer(self.values, peers, self.higher)
        ours = self.values.get(OURS, NAN)
        target = f"{best} {self.shown(self.values[best])}" if best else "-"
        against = ratio(ours, self.values[best]) if best else "-"
        sign = "≥ 1" if self.higher else "≤ 1"
        return (f"| {', '.join(self.lead)} ({sign}) | {target} | {against} | "
                f"{ratio(ours, self.values.get('nginx', NAN))} |")


def render(cells: dict[tuple[int, int, str], Cell], names: list[str], peers: list[str],
           sizes: list[int], connections: list[int], memory: dict[tuple[int, str], Memory],
           storm: dict[str, list[float]], info: list[str], command: str,
           plots: list[str], args: argparse.Namespace) -> str:
    count, one, three = "{:,.0f}".format, "{:.1f}".format, "{:.3f}".format
    goals: list[Figure] = []

    def table(heading: str, lead: list[str], figures: list[Figure], names: list[str]) -> list[str]:
        return [f"### {heading}", "", "| " + " | ".join([*lead, *names]) + " |",
                "|" + "---|" * len(lead) + "---:|" * len(names),
                *[figure.row(names, peers) for figure in figures], ""]

    throughput = []
    for size in sizes:
        for conns in connections:
            for metric, label, shown, higher in (
                    ("rates", "msg/s", count, True), ("p50", "p50 µs", count, False),
                    ("p99", "p99 µs", count, False), ("cpu", "proxy CPU s/100k", three, False),
                    ("machine", "machine CPU s/100k", three, False)):
                values = {name: cells[(size, conns, name)].median(metric) for name in names
                          if (size, conns, name) in cells}
                throughput.append(Figure([f"{size} B", f"C={conns}", label], values, shown,
                                         higher))
                goals += [throughput[-1]] if metric in ("rates", "p99", "cpu") else []
    held = []
    for conns in sorted({c for c, _ in memory}):
        for metric, label, shown in (
                ("per_connection", "KiB per idle connection", one),
                ("fresh", "RSS fresh, MiB", one), ("holding", "RSS holding, MiB", one),
                ("closed", "RSS after close, MiB", one),
                ("after/fresh", "RSS after close / fresh", "{:.2f}x".format)):
            values = {name: (memory[(conns, name)].median(metric) if metric != "after/fresh"
                             else memory[(conns, name)].median("closed")
                             / memory[(conns, name)].median("fresh"))
                      for name in names if (conns, name) in memory}
            held.append(Figure([f"{conns:,} idle", label], values, shown, False))
            goals += [held[-1]] if metric in ("per_connection", "closed", "after/fresh") else []
    handshakes = Figure(["handshakes/s"], {name: statistics.median(rates) for name, rates
                                           in storm.items()}, count, True)
    goals.append(handshakes)
    proxies = [name for name in names if name in [*peers, OURS]]
    out = [MARK_START, "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
           f"with `{command}` ({args.rounds} interleaved rounds, medians; the best peer in "
           "each cell in **bold**: wsgate's goal there).", "", *info, "",
           *table("Messages per second, latency and CPU", ["size", "conns", "figure"],
                  throughput, names),
           *table(f"Idle memory and RSS after close (fresh proxies: RSS fresh, holding the idle "
                  f"connections, and {args.settle:g} s after they close)",
                  ["connections", "figure"], held, proxies),
           *table("Handshakes per second", ["figure"], [handshakes], proxies),
           "### Goals: wsgate proxy against the best peer in each cell (ratios of medians)", "",
           "| cell, figure | best peer | wsgate / best peer | wsgate / nginx |",
           "|---|---|---:|---:|", *[figure.goal(peers) for figure in goals]]
    if plots:
        out += ["", *[f"![{plot}](benchmarks/{plot})" for plot in plots]]
    out += ["", MARK_END]
    return "\n".join(out)


def write(path: Path, results: str) -> None:
    """Replace the results between the markers; keep the rest (the optimisation log)."""
    if path.exists() and MARK_START in path.read_text():
        text = path.read_text()
        head, _, rest = text.partition(MARK_START)
        _, _, tail = rest.partition(MARK_END)
        path.write_text(head + results + tail)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmarks\n\n" + results + "\n")


# -- the run ------------------------------------------------------------------------------------

@contextlib.contextmanager
def running(*services: Service) -> Iterator[None]:
    try:
        for service in services:
            service.start()
        yield
    finally:
        for service in reversed(services):
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--idle", default="1000,9500",
                        help="idle connection counts (default 1000,9500: 10k proxied "
                             "connections need 20k descriptors, over this machine's limit)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after idle connections close before RSS is read again")
    parser.add_argument("--storm", type=int, default=3000, help="handshakes per storm run")
    parser.add_argument("--targets", default=None,
                        help="the peers, comma-separated, of " + ",".join(KINDS) + " (default: "
                             "every one here or installable; wsgate proxy always runs)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds that only checks the suite works (for CI)")
    parser.add_argument("--status", action="store_true",
                        help="wsgate runs with its status listener (read every second) and a "
                             "health check every second")
    args = parser.parse_args()
    sizes, connections = [32, 4096], [1, 50, 500]
    idle_counts = [int(c) for c in args.idle.split(",")]
    if args.smoke:
        args.rounds, args.seconds, args.warmup, args.storm, args.settle = 1, 0.5, 0.2, 50, 0.5
        sizes, connections, idle_counts = [32], [1, 20], [50]
    argv = sys.argv[1:]  # the command as run, less where its report went
    command = shlex.join(["python", "benchmarks/suite.py", *[
        arg for i, arg in enumerate(argv)
        if not (arg.startswith("--output") or (i and argv[i - 1] == "--output"))]])
    statuses: list[int] = []  # the status ports of the wsgate proxies made (the first measured)

    peers, skipped = choose_peers(args.targets, args.smoke)
    node_modules = ensure_node_ws(Path(tempfile.gettempdir()) / "wsgate-bench-npm")
    prefix = Path(tempfile.mkdtemp(prefix="wsgate-bench-"))
    up1, up2 = free_port(), free_port()
    upstream = Service("wsgate echo", [*WSGATE, "echo", "--quiet", "--ping-interval", "0",
                                       "--port", str(up1), "--port", str(up2)], up1)

    def maker(peer: Peer) -> Callable[[], Service]:
        def make() -> Service:
            port = free_port()
            return peer.make(prefix / f"{peer.kind.key}-{port}", port, up1, up2)
        return make

    def make_wsgate() -> Service:
        port = free_port()
        folder = prefix / f"wsgate-{port}"
        folder.mkdir()
        conf = folder / "wsgate.toml"
        status = free_port() if args.status else None
        statuses.extend([] if status is None else [status])
        conf.write_text(wsgate_conf(folder, port, up1, up2, status))
        return Service(OURS, [*WSGATE, "proxy", "-c", str(conf)], port)

    makers = {peer.name: maker(peer) for peer in peers} | {OURS: make_wsgate}
    node: Service | None = None
    if node_modules is not None:
        node_port = free_port()
        node = Service("node ws", ["node", str(HERE / "node_echo.js"), str(node_port)],
                       node_port, env={**os.environ, "NODE_PATH": str(node_modules)})
    proxies = [make() for make in makers.values()]
    services = [upstream, *proxies] + ([node] if node else [])
    with running(*services), contextlib.ExitStack() as scraping:
        if statuses:
            scraping.enter_context(Scraper(statuses[0]))
        targets = [Target("upstream direct", None, up1)] + (
            [Target("node ws direct", None, node.port)] if node is not None else []) + [
            Target(proxy.name, proxy, proxy.port) for proxy in proxies]
        cells = measure_throughput(targets, sizes, connections, args)
        storm = measure_storm(targets[-len(proxies):], args.storm, args.rounds)
    with running(upstream):
        memory = measure_memory(makers, idle_counts, hold=2.0 if not args.smoke else 0.5,
                                settle=args.settle, rounds=args.rounds)
    names = [t.name for t in targets]
    output = Path(args.output)
    plots = plot(cells, names, sizes, connections, output.parent / "benchmarks")
    nginx = next((peer.binary for peer in peers if peer.kind.key == "nginx"), "nginx")
    info = versions(nginx, node_modules)
    info[1:2] = [f"- {peer.name}: {peer.version()}" for peer in peers]
    info += [f"- not measured: {why}" for why in skipped]
    write(output, render(cells, names, [peer.name for peer in peers], sizes, connections,
                         memory, storm, info, command, plots, args))
    shutil.rmtree(prefix, ignore_errors=True)
    say(f"wrote {output}")


if __name__ == "__main__":
    main()
