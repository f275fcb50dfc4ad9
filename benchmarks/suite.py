"""wsgate proxy against its peers, side by side in one run, written to docs/benchmarks.md.

Usage: python benchmarks/suite.py [--rounds 3] [--seconds 5] [--output docs/benchmarks.md]
                                  [--targets nginx,haproxy,caddy]
       python benchmarks/suite.py --smoke --output /tmp/smoke.md   (seconds; what CI runs)

It sets up what it needs: the peers nginx, HAProxy and Caddy from Debian's packages (see
benchmarks/peers.py: each run as the current user from its own prefix and config, never as
a service, with one worker, thread or core, and the seed's semantics) and Node's ws from
the npm registry (for the Node reference row). In one run it measures the same load,
driven by ``wsgate bench``, against: the upstream directly; each peer; and ``wsgate proxy``
(the seed's config translated, one worker), every proxy in front of the same two upstream
ports of one ``wsgate echo`` process. Targets are interleaved (A B C A B C ...) for every
round, and medians are reported, every target side by side, the best peer in each cell in
bold: that peer is wsgate's goal in the cell.

By default every peer is measured: one that is missing is installed with apt-get when the
suite runs as root, and skipped (with a note in the report) when it cannot be; nginx is
required. ``--smoke`` installs nothing but nginx and adds HAProxy and Caddy only where they
are already installed.

Measured: messages/s and round-trip latency at 32 B and 4 KiB with 1, 50 and 500
connections; each proxy's CPU seconds per 100k messages (utime+stime of its processes,
children included, from /proc, inside the bench's measured window) and the whole
machine's; on fresh proxies, RSS per idle proxied connection at 1k and ~10k connections,
and RSS fresh, holding them, and a couple of seconds after they close; handshakes/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WSGATE = [str(Path(sys.executable).parent / "wsgate")]
TICKS = os.sysconf("SC_CLK_TCK")
MARK_START = "<!-- results: written by benchmarks/suite.py -->"
MARK_END = "<!-- end of results -->"

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections {connections}; }}
http {{
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    upstream websocket {{
        server 127.0.0.1:{up1};
        server 127.0.0.1:{up2};
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        access_log {prefix}/access.log;
        location / {{
            proxy_pass http://websocket;
            proxy_read_timeout 300s;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"""

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


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- setting up ---------------------------------------------------------------------------------

def ensure_nginx() -> str:
    """nginx from Debian's packages; the package's own service is never started."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("nginx is needed: apt-get install nginx-light (or nginx)")
    say("installing nginx-light from Debian's packages")
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:  # keep the package's post-install from starting a system service
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    finally:
        if created:
            policy.unlink()
    return shutil.which("nginx") or "/usr/sbin/nginx"


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=self.env,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                        timeout=0.5):
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited at start: {' '.join(self.argv)}")
            time.sleep(0.05)
        raise SystemExit(f"{self.name} did not start listening on {self.port}")

    def pids(self) -> list[int]:
        """The service's process and its children (nginx's master and worker)."""
        assert self.proc is not None
        found = [self.proc.pid]
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text(
            ).split():
                found.append(int(line))
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


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


@dataclass
class Cell:
    """Every round's figures for one target in one scenario."""

    rates: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    machine: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        values: list[float] = getattr(self, name)
        return statistics.median(values) if values else float("nan")


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


def measure_idle(make: dict[str, Callable[[], Service]], counts: list[int], hold: float,
                 rounds: int) -> dict[tuple[int, str], list[float]]:
    """RSS growth per idle proxied connection, each measurement on a fresh proxy."""
    found: dict[tuple[int, str], list[float]] = {}
    for count in counts:
        say(f"idle memory: {count} connections")
        for _round in range(rounds):
            for name, factory in make.items():
                service = factory()
                service.start()
                try:
                    time.sleep(0.3)
                    before = rss_kib(service.pids())
                    proc = subprocess.Popen(
                        [*WSGATE, "bench", f"ws://127.0.0.1:{service.port}/", "--mode",
                         "idle", "-c", str(count), "--hold", str(hold), "--json"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    assert proc.stderr is not None
                    line = proc.stderr.readline()
                    held = int(re.sub(r"\D", "", line.split(" connections")[0]) or 0)
                    during = rss_kib(service.pids())
                    proc.communicate(timeout=hold + 120)
                    if held:
                        found.setdefault((count, name), []).append(
                            (during - before) * 1024 / held)
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

    import picows
    import uvloop

    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    ws_version = "-"
    if node_modules is not None:
        with contextlib.suppress(OSError, ValueError):
            ws_version = json.loads((node_modules / "ws" / "package.json").read_text())["version"]
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}",
        f"- nginx: {first_line([nginx, '-v'])}",
        f"- wsgate: Python {platform.python_version()}, uvloop {uvloop.__version__}, "
        f"picows {picows.__version__} (the echo upstream and the load generator)",
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
    if not theirs or theirs != theirs or ours != ours:
        return "-"
    return f"{ours / theirs:.2f}x"


def render(cells: dict[tuple[int, int, str], Cell], names: list[str], sizes: list[int],
           connections: list[int], idle: dict[tuple[int, str], list[float]],
           storm: dict[str, list[float]], info: list[str], command: str,
           plots: list[str], args: argparse.Namespace) -> str:
    out = [MARK_START, "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
           f"with `{command}` ({args.rounds} interleaved rounds, medians).", "", *info, ""]
    out += ["### Messages per second, latency and CPU", "",
            "| size | conns | target | msg/s | p50 µs | p99 µs | proxy CPU s/100k | "
            "machine CPU s/100k |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for size in sizes:
        for count in connections:
            for name in names:
                cell = cells.get((size, count, name))
                if cell is None:
                    continue
                cpu = cell.median("cpu")
                out.append(
                    f"| {size} B | {count} | {name} | {cell.median('rates'):,.0f} | "
                    f"{cell.median('p50'):,.0f} | {cell.median('p99'):,.0f} | "
                    + (f"{cpu:.3f}" if cpu == cpu else "-")
                    + f" | {cell.median('machine'):.3f} |")
    out += ["", "### Goals: wsgate proxy against nginx (ratios of medians)", "",
            "| size | conns | msg/s (≥ 1) | p99 (≤ 1) | proxy CPU/msg (≤ 1) |",
            "|---|---|---:|---:|---:|"]
    for size in sizes:
        for count in connections:
            ours = cells.get((size, count, "wsgate proxy"))
            theirs = cells.get((size, count, "nginx"))
            if ours and theirs:
                out.append(f"| {size} B | {count} | "
                           f"{ratio(ours.median('rates'), theirs.median('rates'))} | "
                           f"{ratio(ours.median('p99'), theirs.median('p99'))} | "
                           f"{ratio(ours.median('cpu'), theirs.median('cpu'))} |")
    out += ["", "### Idle memory: RSS growth per proxied connection (fresh proxies)", "",
            "| connections | nginx | wsgate proxy | ratio |", "|---:|---:|---:|---:|"]
    for count in sorted({c for c, _ in idle}):
        theirs = statistics.median(idle.get((count, "nginx"), [float("nan")]))
        ours = statistics.median(idle.get((count, "wsgate proxy"), [float("nan")]))
        out.append(f"| {count:,} | {theirs / 1024:.1f} KiB | {ours / 1024:.1f} KiB | "
                   f"{ratio(ours, theirs)} |")
    out += ["", "### Handshakes per second", "", "| target | handshakes/s |", "|---|---:|"]
    for name, rates in storm.items():
        out.append(f"| {name} | {statistics.median(rates):,.0f} |")
    if "nginx" in storm and "wsgate proxy" in storm:
        shown = ratio(statistics.median(storm["wsgate proxy"]), statistics.median(storm["nginx"]))
        out.append(f"| ratio | {shown} |")
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
    parser.add_argument("--storm", type=int, default=3000, help="handshakes per storm run")
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
        args.rounds, args.seconds, args.warmup, args.storm = 1, 0.5, 0.2, 50
        sizes, connections, idle_counts = [32], [1, 20], [50]
    command = "python benchmarks/suite.py" + (" --smoke" if args.smoke else "") + (
        " --status" if args.status else "")
    statuses: list[int] = []
    """The status ports of the wsgate proxies made (the first is the one measured)."""

    nginx = ensure_nginx()
    node_modules = ensure_node_ws(Path(tempfile.gettempdir()) / "wsgate-bench-npm")
    prefix = Path(tempfile.mkdtemp(prefix="wsgate-bench-"))
    up1, up2 = free_port(), free_port()
    upstream = Service("wsgate echo", [*WSGATE, "echo", "--quiet", "--ping-interval", "0",
                                       "--port", str(up1), "--port", str(up2)], up1)

    def make_nginx() -> Service:
        port = free_port()
        folder = prefix / f"nginx-{port}"
        folder.mkdir()
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=folder, port=port, up1=up1, up2=up2,
                                          connections=20000, nofile=20000))
        return Service("nginx", [nginx, "-p", str(folder), "-c", str(conf)], port)

    def make_wsgate() -> Service:
        port = free_port()
        folder = prefix / f"wsgate-{port}"
        folder.mkdir()
        conf = folder / "wsgate.toml"
        status = free_port() if args.status else None
        statuses.extend([] if status is None else [status])
        conf.write_text(wsgate_conf(folder, port, up1, up2, status))
        return Service("wsgate proxy", [*WSGATE, "proxy", "-c", str(conf)], port)

    node: Service | None = None
    if node_modules is not None:
        node_port = free_port()
        node = Service("node ws", ["node", str(HERE / "node_echo.js"), str(node_port)],
                       node_port, env={**os.environ, "NODE_PATH": str(node_modules)})
    proxy_nginx, proxy_wsgate = make_nginx(), make_wsgate()
    services = [upstream, proxy_nginx, proxy_wsgate] + ([node] if node else [])
    with running(*services), contextlib.ExitStack() as scraping:
        if statuses:
            scraping.enter_context(Scraper(statuses[0]))
        targets = [Target("upstream direct", None, up1), Target("nginx", proxy_nginx,
                                                                 proxy_nginx.port),
                   Target("wsgate proxy", proxy_wsgate, proxy_wsgate.port)]
        if node is not None:
            targets.insert(1, Target("node ws direct", None, node.port))
        cells = measure_throughput(targets, sizes, connections, args)
        storm = measure_storm(targets[-2:], args.storm, args.rounds)
    with running(upstream):
        idle = measure_idle({"nginx": make_nginx, "wsgate proxy": make_wsgate}, idle_counts,
                            hold=2.0 if not args.smoke else 0.5, rounds=args.rounds)
    names = [t.name for t in targets]
    output = Path(args.output)
    plots = plot(cells, names, sizes, connections, output.parent / "benchmarks")
    info = versions(nginx, node_modules)
    write(output, render(cells, names, sizes, connections, idle, storm, info, command, plots,
                         args))
    shutil.rmtree(prefix, ignore_errors=True)
    say(f"wrote {output}")


if __name__ == "__main__":
    main()
