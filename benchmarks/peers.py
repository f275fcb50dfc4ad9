"""The peers benchmarks/suite.py measures wsgate against: nginx, HAProxy and Caddy.

Each comes from Debian's packages (installed with apt-get when the suite runs as root and
the binary is missing; the package's own service is never started) and is run as the
current user from its own config in a temp prefix, with one worker, thread or core
(nginx ``worker_processes 1``, HAProxy ``nbthread 1``, Caddy ``GOMAXPROCS=1``) unless a
:class:`Setup` says how many (``--workers``). All three carry the seed's semantics:
WebSocket upgrades balanced round robin over the same two upstream ports, a 300 s idle
timeout on the tunnel (nginx's ``proxy_read_timeout 300s``), X-Forwarded-For and X-Real-IP
set for the upstream, and an access log written to a file. With a :class:`Tls` (``--tls``)
each terminates TLS at its listener with the certificate given (nginx ``listen ... ssl``,
HAProxy ``bind ... ssl crt``, Caddy ``tls CERT KEY``), its own TLS defaults otherwise, and
speaks plain ws to the same upstreams.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A process the suite runs in its own session, ready once its port accepts."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    stdout: Path | None = None
    """Where the process's standard output goes (HAProxy's access log); else nowhere."""

    def start(self) -> None:
        with contextlib.ExitStack() as files:
            out = (files.enter_context(self.stdout.open("ab")) if self.stdout is not None
                   else subprocess.DEVNULL)
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)
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


# -- the configs --------------------------------------------------------------------------------

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

# The seed's nginx config in HAProxy's terms. HAProxy passes Host, Upgrade and Connection
# through and switches to a tunnel on the 101; ``timeout tunnel`` is the tunnel's idle
# timeout (proxy_read_timeout), ``timeout connect`` and ``http-request`` nginx's defaults
# for proxy_connect_timeout and client_header_timeout. The log goes to standard output,
# which the suite sends to access.log.
HAPROXY_CONF = """\
global
    nbthread 1
    maxconn {maxconn}
    pidfile {prefix}/haproxy.pid
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    maxconn {maxconn}
    timeout connect 60s
    timeout http-request 60s
    timeout client 300s
    timeout server 300s
    timeout tunnel 300s
frontend websocket_in
    bind 127.0.0.1:{port}
    option forwardfor
    http-request set-header X-Real-IP %[src]
    default_backend websocket
backend websocket
    balance roundrobin
    server up1 127.0.0.1:{up1}
    server up2 127.0.0.1:{up2}
"""

# The same in a Caddyfile. Caddy proxies upgrades by itself and sets X-Forwarded-For (and
# -Proto, -Host) by default, appending to the client's as nginx's $proxy_add_x_forwarded_for
# does only for trusted proxies: every client is one here. Host passes through.
# ``read_timeout`` is the idle timeout of reads from the upstream (Caddy 2.6 has no
# separate timeout for a tunnel: stream_timeout came in 2.7); ``idle`` the keep-alive's.
CADDY_CONF = """\
{{
    admin off
    auto_https off
    grace_period 1s
    servers {{
        protocols h1
        timeouts {{
            idle 300s
        }}
    }}
}}
http://:{port} {{
    bind 127.0.0.1
    log {{
        output file {prefix}/access.log
    }}
    reverse_proxy 127.0.0.1:{up1} 127.0.0.1:{up2} {{
        lb_policy round_robin
        trusted_proxies 0.0.0.0/0 ::/0
        header_up X-Real-IP {{remote_host}}
        transport http {{
            read_timeout 300s
        }}
    }}
}}
"""


def hard_nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def swap(text: str, old: str, new: str) -> str:
    """A config change that must apply: the config changing under us is an error."""
    if old not in text:
        raise ValueError(f"{old!r} is no longer in the config")
    return text.replace(old, new)


@dataclass(frozen=True)
class Tls:
    """A server certificate and its key (PEM files), and both in one file (HAProxy's)."""

    cert: Path
    key: Path
    both: Path


@dataclass(frozen=True)
class Setup:
    """How every proxy runs: its workers (a count, or "auto": one per core), and with
    ``tls``, TLS terminated at its listener."""

    workers: int | str = 1
    tls: Tls | None = None

    @property
    def count(self) -> int:
        """The workers as a number ("auto": this machine's cores)."""
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)


ONE = Setup()
"""One worker, thread or core; no TLS: the default."""


# -- installing ---------------------------------------------------------------------------------

def find(binary: str) -> str | None:
    """The binary on PATH or in /usr/sbin (not on a non-root user's PATH)."""
    return shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists()
                                    else None)


_apt_updated = False


def apt_install(package: str) -> bool:
    """Debian's package, without starting its service; False when that cannot be done here
    (not root, no apt-get, or not in the archive)."""
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    say(f"installing {package} from Debian's packages")
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:  # keep the package's post-install from starting a system service
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if not _apt_updated:
            subprocess.run(["apt-get", "update", "-qq"], env=env)
            _apt_updated = True
        done = subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env,
                              stdout=subprocess.DEVNULL)
        return done.returncode == 0
    finally:
        if created:
            policy.unlink()


def ensure_nginx() -> str:
    """nginx from Debian's packages; the package's own service is never started."""
    found = find("nginx")
    if found:
        return found
    if not apt_install("nginx-light"):
        raise SystemExit("nginx is needed: apt-get install nginx-light (or nginx)")
    return find("nginx") or "/usr/sbin/nginx"


# -- the peers ----------------------------------------------------------------------------------

Maker = Callable[[str, Path, int, int, int, Setup], Service]
"""(binary, folder, port, up1, up2, setup) -> the peer's service, its config written in
folder."""


def make_nginx(binary: str, folder: Path, port: int, up1: int, up2: int,
               setup: Setup = ONE) -> Service:
    conf = folder / "nginx.conf"
    text = NGINX_CONF.format(prefix=folder, port=port, up1=up1, up2=up2, connections=20000,
                             nofile=20000)
    text = swap(text, "worker_processes 1;", f"worker_processes {setup.workers};")
    if setup.tls is not None:
        text = swap(text, f"listen 127.0.0.1:{port};",
                    f"listen 127.0.0.1:{port} ssl;\n"
                    f"        ssl_certificate {setup.tls.cert};\n"
                    f"        ssl_certificate_key {setup.tls.key};\n"
                    # nginx >= 1.23.4's default and wsgate's (1.22 leaves TLSv1.3 out)
                    "        ssl_protocols TLSv1.2 TLSv1.3;")
    conf.write_text(text)
    return Service("nginx", [binary, "-p", str(folder), "-c", str(conf)], port)


def make_haproxy(binary: str, folder: Path, port: int, up1: int, up2: int,
                 setup: Setup = ONE) -> Service:
    conf = folder / "haproxy.cfg"
    # Two descriptors per proxied connection, within the hard limit HAProxy may raise to.
    maxconn = max(1000, min(20000, (hard_nofile() - 200) // 2))
    text = HAPROXY_CONF.format(prefix=folder, port=port, up1=up1, up2=up2, maxconn=maxconn)
    text = swap(text, "nbthread 1\n", f"nbthread {setup.count}\n")
    if setup.tls is not None:
        text = swap(text, f"bind 127.0.0.1:{port}\n",
                    f"bind 127.0.0.1:{port} ssl crt {setup.tls.both}\n")
    conf.write_text(text)
    return Service("HAProxy", [binary, "-db", "-f", str(conf)], port,
                   stdout=folder / "access.log")


def make_caddy(binary: str, folder: Path, port: int, up1: int, up2: int,
               setup: Setup = ONE) -> Service:
    conf = folder / "Caddyfile"
    text = CADDY_CONF.format(prefix=folder, port=port, up1=up1, up2=up2)
    if setup.tls is not None:  # the site's own certificate: auto_https stays off
        text = swap(text, f"http://:{port} {{\n    bind 127.0.0.1\n",
                    f"https://:{port} {{\n    bind 127.0.0.1\n"
                    f"    tls {setup.tls.cert} {setup.tls.key}\n")
    conf.write_text(text.replace("    ", "\t"))  # caddy fmt's indentation
    env = {**os.environ, "GOMAXPROCS": str(setup.count), "HOME": str(folder),
           "XDG_CONFIG_HOME": str(folder / "config"), "XDG_DATA_HOME": str(folder / "data")}
    return Service("Caddy", [binary, "run", "--config", str(conf), "--adapter", "caddyfile"],
                   port, env=env)


@dataclass(frozen=True)
class Kind:
    key: str
    """The name on the command line (--targets)."""
    name: str
    """The name in the report."""
    package: str
    binary: str
    make: Maker
    version: tuple[str, ...]
    """The arguments that print the version."""


KINDS = {kind.key: kind for kind in (
    Kind("nginx", "nginx", "nginx-light", "nginx", make_nginx, ("-v",)),
    Kind("haproxy", "HAProxy", "haproxy", "haproxy", make_haproxy, ("-v",)),
    Kind("caddy", "Caddy", "caddy", "caddy", make_caddy, ("version",)),
)}


@dataclass(frozen=True)
class Peer:
    kind: Kind
    binary: str

    @property
    def name(self) -> str:
        return self.kind.name

    def make(self, folder: Path, port: int, up1: int, up2: int,
             setup: Setup = ONE) -> Service:
        folder.mkdir(parents=True, exist_ok=True)
        return self.kind.make(self.binary, folder, port, up1, up2, setup)

    def version(self) -> str:
        with contextlib.suppress(Exception):
            out = subprocess.run([self.binary, *self.kind.version], capture_output=True,
                                 text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        return "?"


def find_peer(key: str, install: bool, required: bool) -> Peer | str:
    """The peer, installed from Debian's packages if missing and ``install``; else why not
    (or the end of the run, when it is ``required``)."""
    kind = KINDS[key]
    binary = find(kind.binary)
    if binary is None and install and apt_install(kind.package):
        binary = find(kind.binary)
    if binary is not None:
        return Peer(kind, binary)
    why = (f"{kind.name}: not installed (apt-get install {kind.package})" if not install
           else f"{kind.name}: not installed, and apt-get could not install {kind.package} "
                "here")
    if required:
        raise SystemExit(why)
    return why


def choose_peers(targets: str | None, smoke: bool) -> tuple[list[Peer], list[str]]:
    """The peers to measure, and a note for each left out. Named ones (``--targets``) are
    installed if missing and required; by default nginx is required, and HAProxy and Caddy
    are installed if missing (not in a smoke run) and skipped when they cannot be had."""
    keys = [key.strip().lower() for key in targets.split(",") if key.strip()] if targets \
        else list(KINDS)
    unknown = [key for key in keys if key not in KINDS]
    if unknown:
        raise SystemExit(f"--targets: unknown {', '.join(unknown)} (known: "
                         f"{', '.join(KINDS)}; wsgate proxy and the upstream always run)")
    chosen: list[Peer] = []
    skipped: list[str] = []
    for key in keys:
        required = targets is not None or key == "nginx"
        found = find_peer(key, install=required or not smoke, required=required)
        if isinstance(found, str):
            say(f"skipping {found}")
            skipped.append(found)
        else:
            chosen.append(found)
    return chosen, skipped
