"""Listening sockets, TLS, worker processes and signals.

The sockets are bound once, before any worker starts, so ``port 0`` means one port for all
workers, a busy port is one clear error, and every worker accepts from the same queue
(nginx's model). SIGINT/SIGTERM: stop accepting, let open requests and tunnels finish
within ``worker_shutdown_timeout``, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from wsgate import runtime
from wsgate.errors import Failure, UsageError
from wsgate.proxy.accesslog import AccessLog
from wsgate.proxy.config import Listener, ProxyConfig
from wsgate.proxy.connection import ClientConnection
from wsgate.proxy.context import ProxyContext

BACKLOG = 511  # nginx's default


def bind(listener: Listener) -> socket.socket:
    host = listener.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, listener.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        reason = "address already in use" if error.errno == errno.EADDRINUSE else error.strerror
        shown = f"[{host}]" if ":" in host else host
        raise Failure(f"cannot listen on {shown}:{listener.port}: {reason}") from None
    return sock


def tls_context(config: ProxyConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(config.tls.certificate, config.tls.key)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(
            f"{config.source}: ssl_certificate: cannot load {config.tls.certificate} "
            f"with its key: {getattr(error, 'reason', None) or error}"
        ) from None
    return context


def url_of(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


async def serve_worker(config: ProxyConfig, sockets: Sequence[tuple[socket.socket, bool]],
                       context: ssl.SSLContext | None, access_log: AccessLog,
                       on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
    """One worker: accept on every socket until a signal, then drain and return.

    ``on_stop`` runs once accepting has stopped and before the drain: ``wsgate up`` closes
    its echo servers there, so their Close 1001 reaches clients through open tunnels.
    """
    loop = asyncio.get_running_loop()
    ctx = ProxyContext.build(config, access_log)
    servers = []
    for sock, tls in sockets:
        scheme = "https" if tls else "http"
        servers.append(await loop.create_server(
            partial(ClientConnection, ctx, scheme),
            sock=sock, ssl=context if tls else None, backlog=BACKLOG,
        ))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    if on_stop is not None:
        await on_stop()
    ctx.draining = True
    for conn in list(ctx.connections):
        conn.close_idle()
    deadline = loop.time() + config.shutdown_timeout
    while ctx.connections and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for conn in list(ctx.connections):
        conn.abort()
    ctx.pool.close_all()


def _run_worker(config: ProxyConfig, sockets: Sequence[tuple[socket.socket, bool]],
                context: ssl.SSLContext | None, access_log: AccessLog) -> None:
    runtime.run(serve_worker(config, sockets, context, access_log))


def bind_all(config: ProxyConfig) -> list[tuple[socket.socket, bool]]:
    """Every listener's socket (with whether it speaks TLS), or none and a Failure."""
    sockets: list[tuple[socket.socket, bool]] = []
    try:
        for listener in config.listeners:
            sockets.append((bind(listener), listener.ssl))
    except Failure:
        for sock, _tls in sockets:
            sock.close()
        raise
    return sockets


def run(config: ProxyConfig) -> int:
    """Bind, announce, and serve with ``config.workers`` processes until a signal."""
    context = tls_context(config)
    access_log = AccessLog.open(config.access_log)  # before forking: one error, not N
    sockets = bind_all(config)
    for sock, tls in sockets:
        print(f"Listening on {url_of(sock, tls)}")
    sys.stdout.flush()
    if config.workers <= 1:
        _run_worker(config, sockets, context, access_log)
        return 0
    return _supervise(config, sockets, context, access_log)


STARTUP_GRACE = 2.0
"""A worker that dies sooner than this after its start is broken, not unlucky: no respawn."""


def _supervise(config: ProxyConfig, sockets: Sequence[tuple[socket.socket, bool]],
               context: ssl.SSLContext | None, access_log: AccessLog) -> int:
    """The master: fork the workers, restart one that dies, pass signals on, wait."""
    stopping = False
    children: dict[int, float] = {}

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _run_worker(config, sockets, context, access_log)
            except BaseException as error:
                print(f"error: worker {os.getpid()}: {error}", file=sys.stderr, flush=True)
                status = 1
            finally:
                os._exit(status)
        children[pid] = time.monotonic()

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for _ in range(config.workers):
        spawn()
    status = 0
    while children:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, 0.0)
        if stopping:
            continue
        if time.monotonic() - started < STARTUP_GRACE:
            print("error: a worker exited at start-up; stopping", file=sys.stderr, flush=True)
            status = 1
            forward(signal.SIGTERM, None)
            continue
        spawn()
    return status
