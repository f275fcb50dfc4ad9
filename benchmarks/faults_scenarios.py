"""The scenarios of benchmarks/faults.py (which lists them, and writes the report), and what
they share: the two proxies' configs (the suite's, changed only where a scenario needs it),
the upstreams, and the clients.

Each scenario runs against one proxy at a time and returns an :class:`Outcome`; everything it
starts is registered on its :class:`Bed`, which stops it all when the scenario ends, however
it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import reload
import suite

T = TypeVar("T")
HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
WS_OPTIONS: dict[str, Any] = {"proxy": None, "compression": None, "ping_interval": None,
                              "open_timeout": 10, "close_timeout": 3, "max_size": None}
LIMIT_LINE = re.compile(r"too many open files|emfile|descriptor|nofile|rlimit|"
                        r"worker_connections", re.IGNORECASE)
RSS_SLACK_MIB = 16.0  # the slow consumer: what "RSS stays flat" allows
P99_LIMIT_MS = 50.0  # the slow consumer: the other tunnels' p99 round trip under the flood
IDLE_CLOSE = 0.1  # the pooled-connection race: the upstream closes idle connections after this


@dataclass
class Sizes:
    """Every count and time a scenario uses (the command line's, or --smoke's)."""

    tunnels: int = 40
    rate: float = 20.0
    warm: float = 1.0  # seconds of load before the fault
    watch: float = 2.0  # seconds watched after it
    probes: int = 10
    flood: float = 4.0
    flood_rate: float = 16.0
    fd_limit: int = 256
    fd_clients: int = 400
    fd_rounds: int = 7
    handshake_timeout: float = 3.0
    idle: int = 5000
    storm: int = 2000
    hold: float = 10.0
    requests: int = 50
    memory: int = 10000
    settle: float = 5.0
    grace: float = 5.0


@dataclass
class Outcome:
    """One scenario against one proxy: pass/fail (None: informational), the key figure for
    the table, and details for the scenario's paragraph."""

    passed: bool | None
    figure: str
    notes: list[str] = field(default_factory=list)


def counts(found: Counter[str]) -> str:
    return ", ".join(f"{what} x{n:,}" for what, n in found.most_common()) or "none"


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def raise_nofile() -> None:
    """The soft descriptor limit up to the hard one (thousands of sockets in one process)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hard_nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def swap(text: str, old: str, new: str) -> str:
    """A config change that must apply: the suite's config changing under us is an error."""
    if old not in text:
        raise ValueError(f"{old!r} is no longer in the suite's config")
    return text.replace(old, new)


def nginx_conf(nofile: int | None, grace: float | None, keepalive: bool) -> str:
    """The suite's (the seed's) nginx config; without ``nofile`` no worker_rlimit_nofile, so
    the limit the process was started with holds."""
    text = swap(suite.NGINX_CONF, "{connections}", str(hard_nofile()))
    text = (swap(text, "worker_rlimit_nofile {nofile};\n", "") if nofile is None
            else swap(text, "{nofile}", str(nofile)))
    if grace is not None:
        text = swap(text, "worker_processes 1;\n",
                    f"worker_processes 1;\nworker_shutdown_timeout {round(grace * 1000)}ms;\n")
    if keepalive:  # nginx's documented WebSocket + keep-alive pattern: an empty Connection
        text = swap(text, "server 127.0.0.1:{up2};\n", "server 127.0.0.1:{up2};\n"
                                                        "        keepalive 32;\n")
        text = swap(text, "'' close;", "'' '';")
    return text


def wsgate_conf(grace: float | None, keepalive: bool) -> str:
    text = suite.WSGATE_CONF
    if grace is not None:
        text = swap(text, "worker_processes = 1\n", "worker_processes = 1\n"
                    f'worker_shutdown_timeout = "{round(grace * 1000)}ms"\n')
    if keepalive:  # wsgate's default, written out
        line = 'server = ["127.0.0.1:{up1}", "127.0.0.1:{up2}"]\n'
        text = swap(text, line, line + "keepalive = 32\n")
    return text


class Bed:
    """What one scenario starts against one proxy; the ExitStack stops it all."""

    def __init__(self, kind: str, folder: Path, nginx: str,
                 stack: contextlib.ExitStack) -> None:
        self.kind, self.folder, self.nginx, self.stack = kind, folder, nginx, stack
        self.target: reload.Proxy | None = None
        self.started = 0

    def echo(self, label: str | None = None) -> suite.Service:
        """A ``wsgate echo`` upstream of its own (one can be killed alone); a label replaces
        the seed's reply prefix, so each echo says which upstream it came from."""
        port = suite.free_port()
        argv = [*suite.WSGATE, "echo", "--quiet", "--ping-interval", "0", "--port", str(port)]
        service = suite.Service(f"echo {port}", argv + (["--prefix", f"{label} "] if label
                                                        else []), port)
        self.stack.callback(service.stop)
        service.start()
        return service

    def echoes(self) -> list[int]:
        """Two upstream ports of one ``wsgate echo`` (one process starts faster than two)."""
        ports = [suite.free_port(), suite.free_port()]
        service = suite.Service(f"echo {ports}", [
            *suite.WSGATE, "echo", "--quiet", "--ping-interval", "0", "--port", str(ports[0]),
            "--port", str(ports[1])], ports[1])
        self.stack.callback(service.stop)
        service.start()
        return ports

    def proxy(self, upstreams: list[int], nofile: int | None = None, grace: float | None = None,
              keepalive: bool = False) -> reload.Proxy:
        """The proxy, one worker, in front of two upstream ports; ``nofile`` None keeps the
        inherited limit, a number starts it under prlimit with that limit."""
        limit = [] if nofile is None else [shutil.which("prlimit") or "prlimit",
                                           f"--nofile={nofile}:{nofile}"]
        self.started += 1
        folder = self.folder / (self.kind if self.started == 1 else f"{self.kind}-{self.started}")
        if self.kind == "nginx":
            self.target = reload.Nginx(
                folder, [*limit, self.nginx, "-p", str(folder), "-c"], "nginx.conf",
                nginx_conf(hard_nofile() if nofile is None else None, grace, keepalive),
                upstreams)
        else:
            self.target = reload.Proxy(folder, [*limit, *suite.WSGATE, "proxy", "-c"],
                                       "wsgate.toml", wsgate_conf(grace, keepalive), upstreams)
        self.stack.callback(self.target.stop)
        self.target.start()
        return self.target

    def popen(self, argv: list[str]) -> subprocess.Popen[str]:
        """A load process (``wsgate bench``) with every descriptor it may have."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=raise_nofile, start_new_session=True)

        def stop() -> None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        self.stack.callback(stop)
        return proc

    def logs(self) -> dict[Path, int]:
        """The proxy's log files and their sizes now (its output, and nginx's error.log)."""
        assert self.target is not None
        files = [self.target.log, self.target.folder / "error.log"]
        return {path: path.stat().st_size if path.exists() else 0 for path in files}

    def log_lines(self, since: dict[Path, int]) -> list[str]:
        lines: list[str] = []
        for path, offset in since.items():
            with contextlib.suppress(OSError), path.open("rb") as log:
                log.seek(offset)
                lines += log.read().decode(errors="replace").splitlines()
        return lines


def rss_mib(proxy: reload.Proxy) -> float:
    return suite.rss_kib(proxy.tree()) / 1024


# -- clients ------------------------------------------------------------------------------------

def failure(error: BaseException) -> str:
    """What ended a WebSocket: the Close code received (1006: none), or what failed."""
    if isinstance(error, ConnectionClosed):
        return str(error.rcvd.code) if error.rcvd else "1006"
    if isinstance(error, InvalidStatus):
        return f"HTTP {error.response.status_code}"
    if isinstance(error, TimeoutError):
        return "timeout"
    return type(error).__name__


@dataclass
class Tunnel:
    cid: int
    ws: ClientConnection | None = None
    upstream: str = "?"
    sent: int = 0
    echoed: int = 0
    bad: int = 0
    rtts: list[tuple[float, float]] = field(default_factory=list)  # (when, ms)
    end: str | None = None
    ended_at: float = 0.0

    @property
    def unanswered(self) -> int:
        return self.sent - self.echoed


class Tunnels:
    """WebSockets through the proxy, each sending ``rate`` numbered messages a second and
    checking every echo (in order, intact, its round trip); each keeps how it ended."""

    def __init__(self, url: str, count: int, rate: float) -> None:
        self.url, self.rate = url, rate
        self.tunnels = [Tunnel(cid) for cid in range(count)]
        self.sending, self.closing = True, False
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        async def one(tunnel: Tunnel) -> None:
            try:
                tunnel.ws = await connect(self.url, **WS_OPTIONS)
            except Exception as error:
                tunnel.end, tunnel.ended_at = failure(error), time.monotonic()

        await asyncio.gather(*(one(tunnel) for tunnel in self.tunnels))
        for tunnel in self.tunnels:
            if tunnel.ws is not None:
                self.tasks += [asyncio.create_task(self._send(tunnel)),
                               asyncio.create_task(self._receive(tunnel))]

    async def _send(self, tunnel: Tunnel) -> None:
        assert tunnel.ws is not None
        period = 1.0 / self.rate
        due = time.monotonic() + period * tunnel.cid / len(self.tunnels)
        while self.sending and tunnel.end is None:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not self.sending:
                return
            try:
                await tunnel.ws.send(f"{tunnel.cid} {tunnel.sent} {time.monotonic_ns()}")
            except Exception:  # the receiver records how the tunnel ended
                return
            tunnel.sent += 1
            due = max(due + period, time.monotonic() - period)

    async def _receive(self, tunnel: Tunnel) -> None:
        assert tunnel.ws is not None
        try:
            while True:
                parts = str(await tunnel.ws.recv()).rsplit(" ", 3)
                now = time.monotonic()
                if (len(parts) != 4 or parts[1] != str(tunnel.cid)
                        or parts[2] != str(tunnel.echoed)):
                    tunnel.bad += 1
                else:
                    tunnel.upstream = parts[0]
                    tunnel.rtts.append((now, (time.monotonic_ns() - int(parts[3])) / 1e6))
                tunnel.echoed += 1
        except Exception as error:
            if not self.closing:
                tunnel.end, tunnel.ended_at = failure(error), time.monotonic()

    def open_ones(self) -> list[Tunnel]:
        return [tunnel for tunnel in self.tunnels if tunnel.end is None]

    async def stop(self, drain: float = 2.0) -> None:
        """Stop sending, wait for the echoes in flight, close what is open."""
        self.sending = False
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and any(t.unanswered for t in self.open_ones()):
            await asyncio.sleep(0.05)
        self.closing = True
        sockets = [t.ws for t in self.open_ones() if t.ws is not None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets),
                                                  return_exceptions=True), 5)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for tunnel in self.tunnels:
            if tunnel.ws is not None:
                tunnel.ws.transport.abort()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[round(share * (len(ordered) - 1))] if ordered else float("nan")


async def probe(url: str, timeout: float = 5.0) -> str:
    """A new WebSocket and one echo through it: "ok LABEL" (the upstream's prefix), or why
    not."""
    try:
        async with asyncio.timeout(timeout), connect(url, **WS_OPTIONS) as ws:
            await ws.send("0 0 0")
            return "ok " + str(await ws.recv()).rsplit(" ", 3)[0]
    except Exception as error:
        return failure(error)


async def ready(url: str) -> None:
    """The listener is bound before the worker accepts: wait for a real echo."""
    deadline = time.monotonic() + 15
    while not (answer := await probe(url, 3.0)).startswith("ok"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no echo through the proxy: {answer}")
        await asyncio.sleep(0.1)


async def raw_open(port: int, timeout: float) -> tuple[str, asyncio.StreamWriter | None]:
    """A handshake without a WebSocket library, to see exactly what came back: the status
    code, or how the connection ended without one."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HANDSHAKE)
            head = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        status = "no answer"
    except asyncio.IncompleteReadError as error:
        status = "cut head" if error.partial else "closed"
    except ConnectionResetError:
        status = "reset"
    except OSError as error:
        status = type(error).__name__
    else:
        status = "HTTP " + head.split(b" ", 2)[1].decode(errors="replace")
        if status == "HTTP 101":
            return status, writer
    if writer is not None:
        writer.transport.abort()
    return status, None


def text_frame(size: int) -> bytes:
    """A masked text frame of ``size`` (< 64 KiB) bytes; mask key 0, which RFC 6455 allows,
    so the payload goes as it is."""
    return b"\x81\xfe" + size.to_bytes(2, "big") + b"\0\0\0\0" + b"x" * size


async def http_get(port: int, path: str) -> str:
    """One plain request on a new client connection: the status, or why none came."""
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                         .encode())
            answer = await reader.read()
            writer.close()
    except TimeoutError:
        return "timeout"
    except OSError as error:
        return type(error).__name__
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "no answer"


class HttpUpstream:
    """A keep-alive HTTP upstream that closes connections at the worst moment. ``refuse``:
    each connection answers one request and then closes when the next one arrives on it,
    unanswered (the upstream's close crossed the request; the proxy cannot see it coming).
    ``idle``: connections close after IDLE_CLOSE idle, as keepalive_timeout does."""

    def __init__(self) -> None:
        self.mode = "refuse"
        self.seen: Counter[str] = Counter()
        self.writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        self.seen["connections"] += 1
        served = 0
        try:
            while True:
                wait = IDLE_CLOSE if self.mode == "idle" and served else None
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
                self.seen["requests"] += 1
                if served:
                    self.seen["pooled reuses"] += 1
                    if self.mode == "refuse":
                        break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            self.writers.discard(writer)
            writer.transport.abort()

    def drop_all(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()


def url_of(proxy: reload.Proxy) -> str:
    return f"ws://127.0.0.1:{proxy.port}/"


def bench(argv: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         preexec_fn=raise_nofile)
    if not out.stdout.strip():
        raise RuntimeError(f"wsgate bench failed: {out.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def hold(bed: Bed, url: str, count: int, seconds: float) -> tuple[subprocess.Popen[str], int]:
    """``count`` idle WebSockets held ``seconds`` by ``wsgate bench``; returns once they are
    open, with how many are."""
    proc = bed.popen([*suite.WSGATE, "bench", url, "--mode", "idle", "-c", str(count),
                      "--hold", f"{seconds:g}", "--json"])
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("holding "):
            return proc, int(re.sub(r"\D", "", line.split(" connections")[0]) or 0)
    return proc, 0


# -- the scenarios ------------------------------------------------------------------------------

def upstream_killed(bed: Bed, sizes: Sizes) -> Outcome:
    first, second = bed.echo("up1"), bed.echo("up2")
    proxy = bed.proxy([first.port, second.port])
    url = url_of(proxy)

    async def run() -> Outcome:
        await ready(url)
        load = Tunnels(url, sizes.tunnels, sizes.rate)
        await load.open()
        await asyncio.sleep(sizes.warm)
        assert first.proc is not None
        killed = time.monotonic()
        os.kill(first.proc.pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        new = Counter([await probe(url) for _ in range(sizes.probes)])
        await asyncio.sleep(max(0.0, killed + 0.5 + sizes.watch - time.monotonic()))
        await load.stop()
        cut = [t for t in load.tunnels if t.upstream == "up1"]
        kept = [t for t in load.tunnels if t.upstream == "up2"]
        lost = sum(t.unanswered + t.bad for t in kept)
        dropped = sum(t.end is not None for t in kept)
        seen = Counter(t.end or "still open" for t in cut)
        after = [t.ended_at - killed for t in cut if t.end]
        passed = (bool(cut) and bool(kept) and not lost and not dropped
                  and new["ok up2"] == sizes.probes)
        return Outcome(passed, f"cut: {counts(seen)}; survivors lost {lost}, dropped {dropped};"
                               f" new {new['ok up2']}/{sizes.probes}", [
            f"{len(cut)} tunnels on the killed upstream, {len(kept)} on the survivor, "
            f"{len(load.tunnels) - len(cut) - len(kept)} unknown (no echo before the kill)",
            f"cut tunnels saw {counts(seen)}, "
            + (f"{min(after):.2f}-{max(after):.2f} s after the kill" if after else "never"),
            f"new WebSockets after the kill: {counts(new)}"])
    return run_async(run())


def slow_consumer(bed: Bed, sizes: Sizes) -> Outcome:
    proxy = bed.proxy(bed.echoes())
    url = url_of(proxy)

    async def run() -> Outcome:
        await ready(url)
        load = Tunnels(url, sizes.tunnels, sizes.rate)
        await load.open()
        samples: list[tuple[float, float]] = []

        async def sample() -> None:
            while True:
                samples.append((time.monotonic(), await asyncio.to_thread(rss_mib, proxy)))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        await asyncio.sleep(sizes.warm)
        began = time.monotonic()
        status, writer = await raw_open(proxy.port, 5.0)
        pushed = 0
        if writer is not None:  # it writes at flood_rate, and never reads what comes back
            chunk = text_frame(16384) * 16
            every = len(chunk) / (sizes.flood_rate * 2**20)
            while (left := began + sizes.flood - time.monotonic()) > 0:
                writer.write(chunk)
                try:
                    await asyncio.wait_for(writer.drain(), left)
                except (TimeoutError, ConnectionError):
                    break
                pushed += len(chunk)
                await asyncio.sleep(max(0.0, began + pushed / len(chunk) * every
                                        - time.monotonic()))
        ended = time.monotonic()
        await asyncio.sleep(sizes.watch / 2)
        if writer is not None:
            writer.transport.abort()
        sampler.cancel()
        await load.stop()
        base = [mib for when, mib in samples if when < began] or [float("nan")]
        peak = max([mib for when, mib in samples if when >= began] or [float("nan")])
        rtts = [(when, ms) for t in load.tunnels for when, ms in t.rtts]
        before = percentile([ms for at, ms in rtts if began - sizes.warm <= at < began], 0.99)
        during = percentile([ms for at, ms in rtts if began <= at <= ended + sizes.watch / 2],
                            0.99)
        lost = sum(t.unanswered + t.bad for t in load.tunnels)
        dropped = sum(t.end is not None for t in load.tunnels)
        growth = peak - min(base)
        passed = (status == "HTTP 101" and growth <= RSS_SLACK_MIB and not lost and not dropped
                  and during <= P99_LIMIT_MS)
        return Outcome(passed, f"RSS +{growth:.1f} MiB; others' p99 {before:.1f} -> "
                               f"{during:.1f} ms, lost {lost}", [
            f"flood client: {status}, {pushed / 2**20:,.1f} MiB written in {ended - began:.1f} s"
            " (none read)",
            f"proxy RSS {min(base):.1f} MiB before, {peak:.1f} MiB at most during the flood",
            f"{len(load.tunnels)} other tunnels: {dropped} dropped, {lost} messages lost"])
    return run_async(run())


def fd_exhaustion(bed: Bed, sizes: Sizes) -> Outcome:
    proxy = bed.proxy(bed.echoes(), nofile=sizes.fd_limit)
    url = url_of(proxy)

    async def run() -> Outcome:
        await ready(url)
        since = bed.logs()
        seen: Counter[str] = Counter()
        probes: list[str] = []
        for _round in range(sizes.fd_rounds):
            results = await asyncio.gather(*(raw_open(proxy.port, sizes.handshake_timeout)
                                             for _ in range(sizes.fd_clients)))
            seen.update(status for status, _writer in results)
            for _status, writer in results:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(1.0)
            probes.append(await probe(url, 3.0))
        lines = [line for line in bed.log_lines(since) if LIMIT_LINE.search(line)]
        passes = sum(answer.startswith("ok") for answer in probes)
        opened = seen.pop("HTTP 101", 0)
        return Outcome(passes == sizes.fd_rounds, f"{passes}/{sizes.fd_rounds} recovered; "
                       f"excess: {counts(seen)}; {len(lines)} limit log lines", [
            f"per round {sizes.fd_clients} handshakes at once: {opened:,} opened in all, "
            f"the rest: {counts(seen)}",
            "new WebSocket 1 s after each round: "
            + counts(Counter("ok" if answer.startswith("ok") else answer for answer in probes)),
            "first limit log line: " + (f"`{lines[0].strip()[:160]}`" if lines else "none")])
    return run_async(run())


def idle_storm(bed: Bed, sizes: Sizes) -> Outcome:
    proxy = bed.proxy(bed.echoes())
    url = url_of(proxy)
    run_async(ready(url))
    idle, held = hold(bed, url, sizes.idle, sizes.hold)
    storm = bench([*suite.WSGATE, "bench", url, "--mode", "storm", "-c", str(sizes.storm),
                   "--json"], timeout=300)
    through = idle.poll() is None
    out, _err = idle.communicate(timeout=sizes.hold + 120)
    idle_result: dict[str, Any] = json.loads(out) if out.strip() else {}
    dropped = int(idle_result.get("dropped", held))
    passed = (held == sizes.idle and not dropped and through and not storm["failed"]
              and storm["opened"] == sizes.storm)
    return Outcome(passed, f"{storm['opened']:,}/{sizes.storm:,} at {storm['rate']:,.0f}/s; "
                           f"idle {held - dropped:,}/{sizes.idle:,} kept", [
        f"idle: {held:,} opened, {dropped:,} dropped during the hold",
        f"storm: {storm['opened']:,} opened, {storm['failed']:,} failed "
        f"({storm['first_error'] or 'no error'}) in {storm['seconds']:.2f} s"
        + ("" if through else "; the idle hold had ended before the storm did")])


async def requests(port: int, upstreams: list[int], mode: str,
                   count: int) -> tuple[Counter[str], Counter[str]]:
    """``count`` GETs through the proxy to an :class:`HttpUpstream` in ``mode``: the statuses
    the client got, and what the upstream saw."""
    upstream = HttpUpstream()
    upstream.mode = mode
    servers = [await asyncio.start_server(upstream.handle, "127.0.0.1", port)
               for port in upstreams]
    rng = random.Random(10)
    statuses: Counter[str] = Counter()
    try:
        for n in range(count):
            statuses[await http_get(port, f"/{mode}/{n}")] += 1
            # idle: round robin over two servers, so a pooled connection has been idle for
            # two of these gaps (50-150% of IDLE_CLOSE) when it is reused
            await asyncio.sleep(0.02 if mode == "refuse"
                                else rng.uniform(0.25, 0.75) * IDLE_CLOSE)
    finally:
        for server in servers:
            server.close()
        upstream.drop_all()
    return statuses, upstream.seen


def pooled_reuse(bed: Bed, sizes: Sizes) -> Outcome:
    ports = [suite.free_port(), suite.free_port()]
    found: dict[str, Counter[str]] = {}
    notes: list[str] = []
    for mode in ("refuse", "idle"):
        # A fresh proxy per mode: nginx's max_fails/fail_timeout would carry one mode's
        # failures into the next.
        proxy = bed.proxy(ports, keepalive=True)
        since = bed.logs()
        statuses, seen = run_async(requests(proxy.port, ports, mode, sizes.requests))
        found[mode] = statuses
        lines = [line for line in bed.log_lines(since) if "upstream" in line]
        notes.append(f"{mode}: {counts(statuses)}; upstream saw {counts(seen)}"
                     + (f"; first log line `{lines[0].strip()[:160]}`" if lines else ""))
        proxy.stop()
    others = sum(found.values(), Counter())
    others.pop("200", None)
    return Outcome(not others, ", ".join(f"{mode} {statuses['200']}/{statuses.total()}"
                                         for mode, statuses in found.items())
                   + f" got 200; other: {counts(others)}", notes)


def idle_memory(bed: Bed, sizes: Sizes) -> Outcome:
    proxy = bed.proxy(bed.echoes())
    url = url_of(proxy)
    run_async(ready(url))
    time.sleep(0.5)
    fresh = rss_mib(proxy)
    idle, held = hold(bed, url, sizes.memory, max(1.0, sizes.settle))
    time.sleep(0.5)
    during = rss_mib(proxy)
    idle.communicate(timeout=300)
    time.sleep(sizes.settle)
    after = rss_mib(proxy)
    short = "" if held == sizes.memory else f"only {held:,} opened; "
    return Outcome(False if short else None, f"{short}{fresh:.1f} / {during:.1f} / "
                   f"{after:.1f} MiB (after: {after / fresh:.2f}x fresh)", [
        f"{held:,} of {sizes.memory:,} connections opened; RSS fresh {fresh:.1f} MiB, "
        f"holding them {during:.1f} MiB, {sizes.settle:g} s after they closed {after:.1f} MiB "
        f"({after / fresh:.2f}x fresh)"])


def shutdown(bed: Bed, sizes: Sizes) -> Outcome:
    proxy = bed.proxy(bed.echoes(), grace=sizes.grace)
    url = url_of(proxy)

    async def run() -> Outcome:
        await ready(url)
        load = Tunnels(url, sizes.tunnels, sizes.rate)
        await load.open()
        await asyncio.sleep(sizes.warm)
        quit_at = time.monotonic()
        master = proxy.signal(signal.SIGQUIT)
        exited: float | None = None
        while time.monotonic() < quit_at + sizes.grace + 10 and (
                load.open_ones() or exited is None):
            if exited is None and not reload.alive(master):
                exited = time.monotonic() - quit_at
            await asyncio.sleep(0.05)
        codes = Counter(t.end or "still open" for t in load.tunnels)
        ends = sorted(t.ended_at - quit_at for t in load.tunnels if t.end)
        flowed = sum(at > quit_at for t in load.tunnels for at, _ms in t.rtts)
        unanswered = sum(t.unanswered for t in load.tunnels)
        bad = sum(t.bad for t in load.tunnels)
        await load.stop(drain=0)
        closed = f"at {ends[0]:.1f}-{ends[-1]:.1f} s" if ends else "never"
        return Outcome(codes["1001"] == len(load.tunnels) and not bad,
                       f"{counts(codes)} {closed}; {flowed:,} echoes after QUIT", [
            f"{len(load.tunnels)} tunnels: {counts(codes)} {closed} after QUIT "
            f"(worker_shutdown_timeout {sizes.grace:g} s)",
            f"{flowed:,} echoes received after QUIT; {unanswered} messages unanswered at the "
            f"close (sent while it came), {bad} corrupt or out of order",
            "master exited " + (f"{exited:.1f} s after QUIT" if exited is not None
                                else "not within the wait")])
    return run_async(run())


def reloading(bed: Bed, sizes: Sizes) -> Outcome:
    proxy = bed.proxy(bed.echoes(), grace=sizes.grace)
    url = url_of(proxy)

    async def run() -> Outcome:
        await ready(url)
        load = Tunnels(url, sizes.tunnels, sizes.rate)
        await load.open()
        await asyncio.sleep(sizes.warm)
        before = len(proxy.tree())
        proxy.conf.write_text(swap(proxy.conf.read_text(), "300s", "299s"))  # a changed file
        hup_at = time.monotonic()
        proxy.signal(signal.SIGHUP)
        new: Counter[str] = Counter()
        end = hup_at + sizes.grace + sizes.watch
        while time.monotonic() < end:
            new[(await probe(url, 3.0)).split(" ")[0]] += 1
            await asyncio.sleep(0.1)
        after = len(proxy.tree())
        stalled = sum(not any(when > end - 0.5 for when, _ms in t.rtts) for t in load.open_ones())
        await load.stop()
        codes = Counter(t.end for t in load.tunnels if t.end)
        lost = sum(t.unanswered + t.bad for t in load.open_ones())
        attempts = sum(new.values())
        passed = not codes and not stalled and not lost and new["ok"] == attempts
        return Outcome(passed, f"{sum(codes.values())}/{len(load.tunnels)} dropped "
                               f"({counts(codes)}); new {new['ok']}/{attempts}", [
            f"{len(load.tunnels)} tunnels across a HUP with a changed file, watched "
            f"{sizes.grace + sizes.watch:g} s: {sum(codes.values())} dropped ({counts(codes)}), "
            f"{stalled} open but silent in the last 0.5 s, {lost} messages lost",
            f"new WebSockets from the HUP on: {counts(new)}",
            f"processes {before} before, {after} at the end"])
    return run_async(run())
