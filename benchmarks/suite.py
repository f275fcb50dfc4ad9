"""wsgate proxy against its peers, side by side in one run, written to docs/benchmarks.md.

Usage: python benchmarks/suite.py [--rounds 3] [--seconds 5] [--output docs/benchmarks.md]
                                  [--targets nginx,haproxy,caddy] [--tls] [--workers N|auto]
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
and RSS fresh, holding them, and a couple of seconds after they close; handshakes/s and
each proxy's (and the machine's) CPU per handshake.

``--tls`` adds a section, "TLS terminated at the proxy": every proxy again, now with TLS
at its listener (an ECDSA P-256 certificate made for the run with trustme; nginx ``listen
... ssl``, HAProxy ``bind ... ssl crt``, Caddy ``tls CERT KEY``, wsgate ``listen =
["... ssl"]``), wss:// from ``wsgate bench --ca`` and plain ws to the same upstreams:
messages/s, latency and CPU per 100k messages at the same sizes and connection counts, and
TLS handshakes/s and CPU per handshake (full handshakes: the load generator resumes no
session, and costs more CPU per handshake than a proxy, so on a small machine the rate
is mostly its own and the proxy's CPU per handshake is what compares the proxies).

``--workers N|auto`` runs every proxy with that many workers (default 1; auto: one per core):
nginx ``worker_processes``, HAProxy ``nbthread``, Caddy ``GOMAXPROCS``, wsgate
``worker_processes``. With more than one, the load generator runs as many processes
(``wsgate bench -p N``) in the throughput and storm runs; the report's header says so.

The code: measure.py measures, report.py writes the tables, peers.py sets up the peers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

# The names imported "as" themselves are re-exported: reload.py, faults*.py, soak.py and
# ab.py use them as suite.X.
from measure import WSGATE as WSGATE
from measure import Target, measure_memory, measure_storm, measure_throughput
from measure import bench as bench
from measure import cpu_seconds as cpu_seconds
from measure import rss_kib as rss_kib
from peers import KINDS, ONE, Peer, Setup, Tls, choose_peers, swap
from peers import NGINX_CONF as NGINX_CONF
from peers import Service as Service
from peers import ensure_nginx as ensure_nginx
from peers import free_port as free_port
from peers import say as say
from report import OURS as OURS
from report import PYTHON_TUNNEL, Results, plot, render, rounds
from report import Figure as Figure
from report import versions as versions
from report import write as write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

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


def wsgate_conf(prefix: Path, port: int, up1: int, up2: int, status: int | None = None,
                setup: Setup = ONE) -> str:
    """The suite's wsgate config; with ``status``, a status listener on that port and a
    health check every second on both upstreams (what visibility costs); ``setup``: its
    workers, and TLS at its listener."""
    text = WSGATE_CONF.format(prefix=prefix, port=port, up1=up1, up2=up2)
    workers = '"auto"' if setup.workers == "auto" else str(setup.workers)
    text = swap(text, "worker_processes = 1\n", f"worker_processes = {workers}\n")
    if setup.tls is not None:
        text = swap(text, f'listen = ["127.0.0.1:{port}"]\n',
                    f'listen = ["127.0.0.1:{port} ssl"]\n'
                    f'ssl_certificate = "{setup.tls.cert}"\n'
                    f'ssl_certificate_key = "{setup.tls.key}"\n')
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


def make_certificate(folder: Path) -> tuple[Tls, Path]:
    """An ECDSA P-256 certificate for 127.0.0.1 and localhost from a CA made for this run:
    the proxies' files, and the CA's (which the load generator trusts)."""
    try:
        import trustme
    except ImportError:
        raise SystemExit("--tls makes its certificate with trustme: pip install trustme") \
            from None
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.ECDSA)
    folder.mkdir(parents=True, exist_ok=True)
    tls = Tls(folder / "cert.pem", folder / "key.pem", folder / "both.pem")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    tls.cert.write_bytes(chain)
    tls.key.write_bytes(leaf.private_key_pem.bytes())
    tls.both.write_bytes(chain + leaf.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return tls, folder / "ca.pem"


def negotiated(port: int, ca: Path) -> str:
    """The TLS version and cipher a client like the load generator gets from ``port``."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        cipher = sock.cipher()
        return f"{sock.version()} {cipher[0] if cipher else '?'}"


def workers_flag(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f'must be "auto" or a positive integer, got "{text}"')
    return int(text)


def setup_lines(setup: Setup, load: list[str], tls: list[str]) -> list[str]:
    """What the report's header says about the workers, the load generator and TLS."""
    count = setup.count
    each = (f"`--workers {setup.workers}`: {count} workers each" if setup.workers != 1
            else "1 worker each")
    wsgate = '"auto"' if setup.workers == "auto" else setup.workers
    generator = (f"`wsgate bench {shlex.join(load)}` ({count} processes) in the throughput "
                 "and handshake runs, one process holding the idle connections" if load
                 else "one `wsgate bench` process")
    return [f"- proxies: {each} (nginx `worker_processes {setup.workers}`, HAProxy "
            f"`nbthread {count}`, Caddy `GOMAXPROCS={count}`, wsgate `worker_processes = "
            f"{wsgate}`); the load generator: {generator}", *tls]


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
    parser.add_argument("--tls", action="store_true",
                        help='also measure every proxy with TLS at its listener (wss://, an '
                             'ECDSA P-256 certificate): the section "TLS terminated at the '
                             'proxy"')
    parser.add_argument("--workers", type=workers_flag, default=1, metavar="N|auto",
                        help="every proxy's workers (default 1; auto: one per core); with "
                             "more than one, the load generator runs as many processes")
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
    setup = Setup(workers=args.workers)
    load = ["-p", str(setup.count)] if setup.count > 1 else []  # the load generator's flags

    peers, skipped = choose_peers(args.targets, args.smoke)
    node_modules = ensure_node_ws(Path(tempfile.gettempdir()) / "wsgate-bench-npm")
    prefix = Path(tempfile.mkdtemp(prefix="wsgate-bench-"))
    up1, up2 = free_port(), free_port()
    upstream = Service("wsgate echo", [*WSGATE, "echo", "--quiet", "--ping-interval", "0",
                                       "--port", str(up1), "--port", str(up2)], up1)

    def makers(setup: Setup) -> dict[str, Callable[[], Service]]:
        """A maker of a fresh proxy of every kind, each run as ``setup`` says."""
        def maker(peer: Peer) -> Callable[[], Service]:
            def make() -> Service:
                port = free_port()
                return peer.make(prefix / f"{peer.kind.key}-{port}", port, up1, up2, setup)
            return make

        def make_wsgate() -> Service:
            port = free_port()
            folder = prefix / f"wsgate-{port}"
            folder.mkdir()
            conf = folder / "wsgate.toml"
            status = free_port() if args.status else None
            statuses.extend([] if status is None else [status])
            conf.write_text(wsgate_conf(folder, port, up1, up2, status, setup))
            return Service(OURS, [*WSGATE, "proxy", "-c", str(conf)], port)

        return {peer.name: maker(peer) for peer in peers} | {OURS: make_wsgate}

    def python_tunnel(setup: Setup) -> Service | None:
        """wsgate once more with its tunnels in Python (``WSGATE_SPLICE=0``), if this build
        has the compiled core: what the core is worth, in the throughput rows (and, over
        TLS, in the handshake rows: what joining the core costs a connection)."""
        if importlib.util.find_spec("wsgate.proxy._splice") is None:
            return None
        port = free_port()
        folder = prefix / f"wsgate-python-{port}"
        folder.mkdir()
        conf = folder / "wsgate.toml"
        conf.write_text(wsgate_conf(folder, port, up1, up2, None, setup))
        return Service(PYTHON_TUNNEL, [*WSGATE, "proxy", "-c", str(conf)], port,
                       env={**os.environ, "WSGATE_SPLICE": "0"})

    node: Service | None = None
    if node_modules is not None:
        node_port = free_port()
        node = Service("node ws", ["node", str(HERE / "node_echo.js"), str(node_port)],
                       node_port, env={**os.environ, "NODE_PATH": str(node_modules)})
    plain = makers(setup)
    proxies = [make() for make in plain.values()]
    variant = python_tunnel(setup)
    extra = [variant] if variant is not None else []
    services = [upstream, *proxies, *extra] + ([node] if node else [])
    with running(*services), contextlib.ExitStack() as scraping:
        if statuses:
            scraping.enter_context(Scraper(statuses[0]))
        stormed = [Target(proxy.name, proxy, proxy.port) for proxy in proxies]
        targets = [Target("upstream direct", None, up1)] + (
            [Target("node ws direct", None, node.port)] if node is not None else []) + [
            *stormed, *(Target(e.name, e, e.port) for e in extra)]
        results = Results(measure_throughput(targets, sizes, connections, args, load), {},
                          measure_storm(stormed, args.storm, args.rounds, load))
    tls_lines: list[str] = []
    if args.tls:
        tls, ca = make_certificate(prefix / "tls")
        secured = dataclasses.replace(setup, tls=tls)
        secure = [make() for make in makers(secured).values()]
        variant = python_tunnel(secured)
        extra = [variant] if variant is not None else []
        with running(upstream, *secure, *extra), contextlib.ExitStack() as scraping:
            if args.status:
                scraping.enter_context(Scraper(statuses[-1]))
            agreed = ", ".join(f"{proxy.name} {negotiated(proxy.port, ca)}" for proxy in secure)
            tls_lines = [f"- TLS (`--tls`): an ECDSA P-256 certificate (trustme); the load "
                         f"generator: Python's ssl, {ssl.OPENSSL_VERSION}; negotiated: {agreed}"]
            say(f"TLS terminated at the proxy: {tls_lines[0]}")
            targets_tls = [Target(proxy.name, proxy, proxy.port, "wss")
                           for proxy in [*secure, *extra]]
            trust = [*load, "--ca", str(ca)]
            results.tls_cells = measure_throughput(targets_tls, sizes, connections, args, trust)
            results.tls_storm = measure_storm(targets_tls, args.storm, args.rounds, trust)
    with running(upstream):
        results.memory = measure_memory(plain, idle_counts, hold=2.0 if not args.smoke else 0.5,
                                        settle=args.settle, rounds=args.rounds)
    names = [t.name for t in targets]
    output = Path(args.output)
    plots = plot(results.cells, names, sizes, connections, output.parent / "benchmarks",
                 "" if output.stem == "benchmarks" else f"{output.stem}-")
    nginx = next((peer.binary for peer in peers if peer.kind.key == "nginx"), "nginx")
    info = versions(nginx, node_modules)
    info[1:2] = [f"- {peer.name}: {peer.version()}" for peer in peers]
    info += setup_lines(setup, load, tls_lines)
    info += [f"- not measured: {why}" for why in skipped]
    write(output, render(results, names, [peer.name for peer in peers], sizes, connections,
                         info, command, plots, args))
    spread = output.parent / "benchmarks" / f"{output.stem}-rounds.json"
    spread.parent.mkdir(parents=True, exist_ok=True)
    spread.write_text(json.dumps({"command": command, **rounds(results)}, indent=1) + "\n")
    shutil.rmtree(prefix, ignore_errors=True)
    say(f"wrote {output}")


if __name__ == "__main__":
    main()
