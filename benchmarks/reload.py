"""Zero-drop operations: do open WebSockets survive a proxy's reloads and binary upgrade?

Usage: python benchmarks/reload.py [--targets nginx,wsgate] [--connections 100] [--rate 50]
                                   [--duration 60] [--interval 5] [--output FILE]
       python benchmarks/reload.py --quick          (12 s, a reload every 4 s, 20 WebSockets)

Two Node ``ws`` echo upstreams (benchmarks/node_echo.js) on free ports; in front of them, one
target after the other: nginx (the seed's config, one worker, worker_shutdown_timeout 5s) and
``wsgate proxy -c FILE`` (the same config in TOML, one worker). Through each, N WebSockets
(Python ``websockets``, one process) each send sequence-numbered text messages, --rate a
second, and check every echo comes back, in order, without a gap. Every --interval seconds
the target is reloaded (SIGHUP to its master), and once, at the middle, upgraded instead:
nginx's binary upgrade (USR2, wait for nginx.pid and nginx.pid.oldbin, then WINCH and QUIT
to the old master); wsgate's SIGUSR2 to its master (which keeps its PID).

Measured per target: tunnels dropped (closed or failed before the end, with close code and
time), messages sent, echoed and lost (sent, never echoed), gaps and out-of-order echoes;
every 0.5 s the processes of the target (every process whose command line names the
target's config file, and all their descendants) and their total RSS. Markdown on stdout,
and in --output FILE. Every child process is killed at the end, on error or Ctrl+C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.version import version as websockets_version

import suite

# The suite's nginx config (the seed's), daemonized: nginx ignores USR2 in a master whose
# parent is still the process that started it. worker_shutdown_timeout as in the issue.
NGINX_CONF = suite.NGINX_CONF.replace("daemon off;", "daemon on;").replace(
    "worker_processes 1;\n", "worker_processes 1;\nworker_shutdown_timeout 5s;\n")
SAMPLE_EVERY = 0.5
ECHO_PREFIX = "Server received from client: "  # node_echo.js's reply to a text message


# -- the targets --------------------------------------------------------------------------------

def process_tree(marker: str) -> list[int]:
    """Live processes whose command line contains marker, and all their descendants."""
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z":
                continue
            children.setdefault(int(stat[1]), []).append(int(entry.name))
            if marker.encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                roots.append(int(entry.name))
    found: set[int] = set()
    while roots:
        pid = roots.pop()
        if pid not in found:
            found.add(pid)
            roots.extend(children.get(pid, []))
    return sorted(found)


def alive(pid: int | None) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Proxy:
    """A target run in the foreground (wsgate's way): its master is the process started, a
    reload is SIGHUP to it, an upgrade SIGUSR2 (the master keeps its PID). Its processes are
    every process whose command line names its config file, and their descendants."""

    name = "wsgate proxy"

    def __init__(self, folder: Path, command: list[str], conf: str, text: str,
                 upstreams: list[int]) -> None:
        folder.mkdir(parents=True)
        self.folder, self.port, self.conf = folder, suite.free_port(), folder / conf
        self.conf.write_text(text.format(prefix=folder, port=self.port, up1=upstreams[0],
                                         up2=upstreams[1], connections=4096, nofile=8192))
        self.command = [*command, str(self.conf)]
        self.log = folder / "output.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def master(self) -> int | None:
        """The PID to signal now."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def exit_reason(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if alive(self.master()):
                with contextlib.suppress(OSError), \
                        socket.create_connection(("127.0.0.1", self.port), 0.5):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start listening on {self.port}: {self.tail()}")

    def tree(self) -> list[int]:
        return process_tree(str(self.conf))

    def signal(self, signum: int) -> int:
        pid = self.master()
        if pid is None or not alive(pid):
            raise ProcessLookupError("master is gone")
        os.kill(pid, signum)
        return pid

    def reload(self) -> str:
        return f"reload: HUP to {self.signal(signal.SIGHUP)}"

    def upgrade(self) -> str:
        before = self.tree()
        pid = self.signal(signal.SIGUSR2)
        time.sleep(1.0)
        if not alive(self.master()):
            raise RuntimeError(f"USR2 to {pid}, master {self.exit_reason()}")
        return f"upgrade: USR2 to {pid}, master kept, processes {before} -> {self.tree()}"

    def stop(self) -> None:
        """SIGTERM to every process of the target, then SIGKILL to what is left after 10 s."""
        def started() -> list[int]:  # the process started, if it still runs (not reaped)
            return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

        for signum, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.tree() + started():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (self.tree() or started()):
                time.sleep(0.05)

    def tail(self, lines: int = 3) -> str:
        """The last lines the target wrote (its output, and nginx's error log)."""
        text: list[str] = []
        for log in (self.log, self.folder / "error.log"):
            with contextlib.suppress(OSError):
                text += log.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(text[-lines:]).replace("|", "/") or "(no output)"


class Nginx(Proxy):
    """nginx daemonized: its master is in nginx.pid; an upgrade is its binary upgrade."""

    name = "nginx"

    def master(self) -> int | None:
        # nginx.pid, or .oldbin in an upgrade's first instants (renamed, not yet rewritten)
        for name in ("nginx.pid", "nginx.pid.oldbin"):
            with contextlib.suppress(OSError, ValueError):
                return int((self.folder / name).read_text().strip())
        return None

    def exit_reason(self) -> str:
        return "gone"

    def upgrade(self) -> str:
        old = self.signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = self.master()
            if (self.folder / "nginx.pid.oldbin").exists() and new != old and alive(new):
                os.kill(old, signal.SIGWINCH)
                time.sleep(0.2)
                os.kill(old, signal.SIGQUIT)
                return f"upgrade: USR2 to {old}, new master {new}, WINCH + QUIT to {old}"
            time.sleep(0.05)
        raise RuntimeError(f"USR2 to {old}, no new master within 10 s ({self.tail(1)})")


def make(name: str, folder: Path, nginx: str, upstreams: list[int]) -> Proxy:
    """The target; only the commands, the config and finding the master differ."""
    if name == "nginx":
        return Nginx(folder, [nginx, "-p", str(folder), "-c"], "nginx.conf", NGINX_CONF,
                     upstreams)
    return Proxy(folder, [*suite.WSGATE, "proxy", "-c"], "wsgate.toml", suite.WSGATE_CONF,
                 upstreams)


# -- the load -----------------------------------------------------------------------------------

@dataclass
class Tunnel:
    cid: int
    sent: int = 0
    echoed: int = 0
    expected: int = 0
    gaps: int = 0
    disorder: int = 0
    dropped: str | None = None
    dropped_at: float | None = None
    clean_close: bool = False


def why(error: BaseException, what: str) -> str:
    """A close code (1006 without a Close frame), or what failed."""
    if isinstance(error, ConnectionClosed):
        return str(error.rcvd.code) if error.rcvd else "1006"
    return f"{what} ({type(error).__name__})"


@dataclass
class Load:
    url: str
    count: int
    rate: float
    t0: float = 0.0
    sending: bool = True
    closing: bool = False
    tunnels: list[Tunnel] = field(default_factory=list)
    sockets: dict[int, ClientConnection] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def drop(self, tunnel: Tunnel, reason: str) -> None:
        if tunnel.dropped is None and not self.closing:
            tunnel.dropped = reason
            tunnel.dropped_at = time.monotonic() - self.t0

    async def open(self) -> None:
        async def one(tunnel: Tunnel) -> None:
            try:
                self.sockets[tunnel.cid] = await connect(
                    self.url, proxy=None, compression=None, ping_interval=None,
                    open_timeout=10, close_timeout=5)
            except Exception as error:  # any failure to open is a drop
                self.drop(tunnel, why(error, "open failed"))

        self.tunnels = [Tunnel(cid) for cid in range(self.count)]
        self.t0 = time.monotonic()  # a failure to open is a drop at a negative time
        await asyncio.wait_for(asyncio.gather(*(one(t) for t in self.tunnels)), 30)
        self.t0 = time.monotonic()
        for tunnel in self.tunnels:
            if tunnel.cid in self.sockets:
                self.tasks += [asyncio.create_task(self.send(tunnel)),
                               asyncio.create_task(self.receive(tunnel))]

    async def send(self, tunnel: Tunnel) -> None:
        ws, period = self.sockets[tunnel.cid], 1.0 / self.rate
        due = time.monotonic() + period * tunnel.cid / self.count  # spread the sends out
        while self.sending and tunnel.dropped is None:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not self.sending:
                return
            try:  # no timeout: a stalled tunnel shows as messages not sent, or lost
                await ws.send(f"{tunnel.cid} {tunnel.sent}")
            except Exception as error:
                self.drop(tunnel, why(error, "send failed"))
                return
            tunnel.sent += 1
            due = max(due + period, time.monotonic() - period)  # no burst after a stall

    async def receive(self, tunnel: Tunnel) -> None:
        ws = self.sockets[tunnel.cid]
        try:
            while True:
                text = await ws.recv()
                cid, _, seq = str(text).removeprefix(ECHO_PREFIX).partition(" ")
                number = int(seq) if cid == str(tunnel.cid) and seq.isdigit() else -1
                tunnel.echoed += 1
                if number > tunnel.expected:
                    tunnel.gaps += number - tunnel.expected
                elif number < tunnel.expected:
                    tunnel.disorder += 1
                    continue
                tunnel.expected = number + 1
        except Exception as error:  # the end of the tunnel: expected only once closing
            tunnel.clean_close = self.closing and why(error, "") == "1000"
            self.drop(tunnel, why(error, "receive failed"))

    async def finish(self) -> None:
        """Stop sending, wait for the echoes in flight (3 s at most), close every tunnel."""
        self.sending = False
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(
                t.dropped is None and t.echoed < t.sent for t in self.tunnels):
            await asyncio.sleep(0.05)
        self.closing = True
        live = [ws for cid, ws in self.sockets.items() if self.tunnels[cid].dropped is None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in live),
                                                  return_exceptions=True), 10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 5)
        for task in self.tasks:
            task.cancel()
        for ws in self.sockets.values():
            ws.transport.abort()


# -- one scenario -------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    tunnels: list[Tunnel] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # s, processes, KiB
    events: list[str] = field(default_factory=list)
    done: Counter[str] = field(default_factory=Counter)
    failure: str | None = None
    died: str | None = None


def schedule(duration: float, interval: float) -> list[tuple[float, str]]:
    """A reload every interval; the first one at or past the middle is an upgrade instead."""
    times = [interval * k for k in range(1, int(duration / interval) + 1)
             if interval * k < duration - 1e-9]
    middle = next((t for t in times if t >= duration / 2), times[-1] if times else None)
    return [(t, "upgrade" if t == middle else "reload") for t in times]


async def scenario(proxy: Proxy, args: argparse.Namespace, result: Result) -> None:
    await asyncio.to_thread(proxy.start)
    load = Load(f"ws://127.0.0.1:{proxy.port}/", args.connections, args.rate)
    suite.say(f"{proxy.name}: master {proxy.master()}, opening {args.connections} WebSockets")
    await load.open()
    result.tunnels = load.tunnels
    master_seen = proxy.master()

    def note(text: str, at: float | None = None) -> None:
        line = f"{time.monotonic() - load.t0 if at is None else at:5.1f} s: {text}"
        result.events.append(line)
        suite.say(f"  {proxy.name}: {line}")

    async def sampler() -> None:
        nonlocal master_seen
        while True:
            pids = await asyncio.to_thread(proxy.tree)
            rss = await asyncio.to_thread(suite.rss_kib, pids)
            result.samples.append((time.monotonic() - load.t0, len(pids), rss))
            master = proxy.master()
            if master_seen is not None and not alive(master):
                result.died = f"master {proxy.exit_reason()} at {result.samples[-1][0]:.1f} s"
                note(f"master {master_seen} {proxy.exit_reason()}: {proxy.tail(2)}")
                master_seen = None
            elif master is not None:
                master_seen = master
            await asyncio.sleep(SAMPLE_EVERY - (time.monotonic() - load.t0) % SAMPLE_EVERY)

    async def operator() -> None:
        for at, what in schedule(args.duration, args.interval):
            await asyncio.sleep(max(0.0, at - (time.monotonic() - load.t0)))
            began = time.monotonic() - load.t0
            action = proxy.upgrade if what == "upgrade" else proxy.reload
            try:
                note(await asyncio.wait_for(asyncio.to_thread(action), 15), began)
                result.done[what] += 1
            except (OSError, TimeoutError, RuntimeError) as error:
                note(f"{what} failed: {type(error).__name__}: {error}", began)

    tasks = [asyncio.create_task(sampler()), asyncio.create_task(operator())]
    try:
        await asyncio.sleep(max(0.0, args.duration - (time.monotonic() - load.t0)))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    dropped = sum(t.dropped is not None for t in load.tunnels)
    suite.say(f"{proxy.name}: closing ({dropped} of {args.connections} tunnels dropped)")
    await load.finish()


# -- the report ---------------------------------------------------------------------------------

def row(result: Result) -> str:
    if result.failure is not None:
        return f"| {result.name} | not measured: {result.failure} | - | - | - | - | - | - |"
    tunnels = result.tunnels
    drops = [t for t in tunnels if t.dropped is not None]
    sent, echoed = sum(t.sent for t in tunnels), sum(t.echoed for t in tunnels)
    lost = sum(max(0, t.sent - t.echoed) for t in tunnels)
    dropped = f"{len(drops)}"
    if drops:
        codes = Counter(t.dropped for t in drops).most_common()
        when = sorted(t.dropped_at or 0.0 for t in drops)
        dropped += (f" ({', '.join(f'{code} x{n}' for code, n in codes)}; "
                    f"at {when[0]:.1f}-{when[-1]:.1f} s)")
    procs = [n for _t, n, _r in result.samples] or [0]
    rss = [r / 1024 for _t, _n, r in result.samples] or [0.0]
    unclean = len(tunnels) - len(drops) - sum(t.clean_close for t in tunnels)
    ops = [", ".join(f"{result.done[what]} {what}{'' if result.done[what] == 1 else 's'}"
                     for what in ("reload", "upgrade")) + " signalled"]
    ops += [result.died] if result.died else []
    ops += [f"{unclean} not closed cleanly at the end"] if unclean else []
    return (f"| {result.name} | {dropped} | {lost:,} | {sent:,} / {echoed:,} | "
            f"{sum(t.gaps for t in tunnels):,} / {sum(t.disorder for t in tunnels):,} | "
            f"{min(procs)} / {max(procs)} / {procs[-1]} | "
            f"{rss[0]:.1f} / {max(rss):.1f} / {rss[-1]:.1f} | {'; '.join(ops)} |")


def timeline(result: Result) -> str:
    per_second: dict[int, int] = {}
    for seconds, count, _rss in result.samples:
        per_second.setdefault(int(seconds + 0.25), count)
    return ",".join(str(per_second[s]) for s in sorted(per_second)) or "-"


def render(results: list[Result], args: argparse.Namespace, info: list[str]) -> str:
    upgrade = next((t for t, what in schedule(args.duration, args.interval)
                    if what == "upgrade"), None)
    out = [f"### Zero-drop operations: {args.connections} WebSockets, "
           f"{args.connections * args.rate:,.0f} msg/s, a reload every {args.interval:g} s "
           f"for {args.duration:g} s" + (f", an upgrade at {upgrade:g} s" if upgrade else ""),
           "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
           f"`python benchmarks/reload.py {' '.join(sys.argv[1:])}`.", "", *info, "",
           f"| target | tunnels dropped (of {args.connections}) | messages lost | "
           "sent / echoed | gaps / out of order | processes min / max / end | "
           "RSS MiB start / max / end | operations |",
           "|---|---|---:|---:|---:|---|---|---|"]
    out += [row(result) for result in results]
    out += ["", "Processes alive, one sample a second from the first message:", ""]
    out += [f"- {result.name}: {timeline(result)}" for result in results]
    out += ["", "<details><summary>Operations and events</summary>", ""]
    for result in results:
        out += [f"- {result.name}:", *[f"  - {event}" for event in result.events]]
    return "\n".join([*out, "", "</details>"])


# -- the run ------------------------------------------------------------------------------------

def node_upstreams() -> tuple[list[suite.Service], Path]:
    if not shutil.which("node"):
        raise SystemExit("node is needed for the echo upstreams: apt-get install nodejs")
    modules: Path | None = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # npm install failed
        modules = suite.ensure_node_ws(Path(tempfile.gettempdir()) / "wsgate-bench-npm")
    if modules is None or not (modules / "ws").exists():
        raise SystemExit("Node's ws module is needed: install npm (it is fetched), or set "
                         "WSGATE_NODE_MODULES to a node_modules folder with ws in it")
    env = {**os.environ, "NODE_PATH": str(modules)}
    return [suite.Service(f"node ws {n}", ["node", str(suite.HERE / "node_echo.js"), str(port)],
                          port, env=env) for n, port in ((1, suite.free_port()),
                                                         (2, suite.free_port()))], modules


def run(proxy: Proxy, args: argparse.Namespace) -> Result:
    """One target's scenario; whatever goes wrong is in the Result, and the target stopped."""
    result = Result(proxy.name)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(asyncio.wait_for(scenario(proxy, args, result), args.duration + 120))
    except Exception as error:
        result.failure = f"{type(error).__name__}: {error}".replace("|", "/")
        suite.say(f"{proxy.name}: scenario failed: {result.failure}")
    finally:
        suite.say(f"{proxy.name}: stopping")
        proxy.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="nginx,wsgate", help="nginx, wsgate or both")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="messages a second per WebSocket (default 50: every 20 ms)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reloads")
    parser.add_argument("--output", help="also write the markdown to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 12 s, a reload every 4 s, 20 WebSockets")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.interval, args.connections = 12.0, 4.0, 20
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    if not names or set(names) - {"nginx", "wsgate"}:
        parser.error("--targets takes nginx, wsgate or nginx,wsgate")
    if min(args.rate, args.interval, args.duration, args.connections) <= 0:
        parser.error("--rate, --interval, --duration and --connections must be positive")
    nginx = suite.ensure_nginx() if "nginx" in names else "nginx"
    upstreams, modules = node_upstreams()
    prefix = Path(tempfile.mkdtemp(prefix="wsgate-reload-"))

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: list[Result] = []
    proxies: list[Proxy] = []
    try:
        for service in upstreams:
            service.start()
        ports = [service.port for service in upstreams]
        for name in names:
            proxies.append(make(name, prefix / name, nginx, ports))
            results.append(run(proxies[-1], args))
    except KeyboardInterrupt:
        suite.say("interrupted: stopping everything")
        raise SystemExit(130) from None
    finally:
        for proxy in proxies:
            proxy.stop()
        for service in reversed(upstreams):
            with contextlib.suppress(Exception):
                service.stop()
    machine, nginx_version, _wsgate, node = suite.versions(nginx, modules)
    load = (f"- load: Python {sys.version.split()[0]}, websockets {websockets_version}, "
            "one process; upstreams: two benchmarks/node_echo.js")
    report = render(results, args, [machine, nginx_version, node, load])
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")
        suite.say(f"wrote {args.output}")
    if any(result.failure for result in results):
        raise SystemExit(f"a target failed; its logs are in {prefix}")
    shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()
