"""The ``wsgate proxy`` processes: listening sockets, workers, signals.

The sockets are bound once, before any worker starts, so ``port 0`` means one port for all
workers, a busy port is one clear error, and every worker accepts from the same queue
(nginx's model). With one worker this process is the worker; with more it is the master:
it forks them, restarts one that dies, and passes SIGINT/SIGTERM on. On either signal,
caught from the start (:mod:`wsgate.signals`), a worker stops accepting, lets open
requests and tunnels finish within ``worker_shutdown_timeout``, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from wsgate import runtime
from wsgate.errors import Failure
from wsgate.proxy import preflight
from wsgate.proxy.accesslog import AccessLog
from wsgate.proxy.config import Listener, ProxyConfig
from wsgate.proxy.connection import ClientConnection
from wsgate.proxy.errorlog import ALERT
from wsgate.proxy.preflight import Resources
from wsgate.proxy.worker import Worker
from wsgate.signals import STOP, StopSignals

log = logging.getLogger(__name__)

BACKLOG = 511  # nginx's default
Listening = Sequence[tuple[socket.socket, bool]]
"""The bound sockets, each with whether it speaks TLS."""
STARTUP_GRACE = 2.0
"""A worker that dies sooner than this after its start is broken, not unlucky: no respawn."""


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
        reason = ("address already in use" if error.errno == errno.EADDRINUSE
                  else (error.strerror or str(error)).lower())
        raise Failure(f"cannot listen on {listener.address}: {reason}") from None
    return sock


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


def url_of(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


async def serve(config: ProxyConfig, sockets: Listening, tls: ssl.SSLContext | None,
                access_log: AccessLog, signals: StopSignals, *,
                ready: Callable[[], None] | None = None,
                on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
    """Accept on every socket until SIGINT or SIGTERM, then drain and return.

    ``ready`` runs once the signals are handled and accepting has begun (the "Listening"
    lines). ``on_stop`` runs once accepting has stopped and before the drain: ``wsgate up``
    closes its echo servers there, so their Close 1001 reaches clients through open tunnels.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals.attach(loop, stop.set)
    worker = Worker(config, access_log)
    servers = []
    for sock, uses_tls in sockets:
        scheme = "https" if uses_tls else "http"
        servers.append(await loop.create_server(
            partial(ClientConnection, worker, scheme),
            sock=sock, ssl=tls if uses_tls else None, backlog=BACKLOG,
        ))
    if ready is not None:
        ready()
    await stop.wait()
    for server in servers:
        server.close()
    if on_stop is not None:
        await on_stop()
    worker.draining = True
    for conn in list(worker.open):
        conn.close_idle()
    deadline = loop.time() + config.shutdown_timeout
    while worker.open and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for conn in list(worker.open):
        conn.abort()
    worker.pool.close_all()


def run(config: ProxyConfig) -> int:
    """Open what the config names, bind, and serve with ``config.workers`` processes until
    SIGINT or SIGTERM."""
    signals = STOP
    signals.catch()
    resources = preflight.open_resources(config)  # before forking: one error, not N
    resources.error_log.install()
    sockets = bind_all(config)

    def announce() -> None:
        for sock, tls in sockets:
            print(f"Listening on {url_of(sock, tls)}")
        sys.stdout.flush()

    if config.workers <= 1:
        runtime.run(serve(config, sockets, resources.tls, resources.access_log, signals,
                          ready=announce))
        return 0
    return _supervise(config, sockets, resources, signals, announce)


def _supervise(config: ProxyConfig, sockets: Listening, resources: Resources,
               signals: StopSignals, announce: Callable[[], None]) -> int:
    """The master: fork the workers, restart one that dies, pass signals on, wait.

    SIGINT and SIGTERM are blocked whenever the set of workers changes, so a signal never
    falls between two forks (it would miss the later worker) and never finds a new worker
    still running the master's handler (it would signal the worker's siblings).
    """
    stopping = False
    children: dict[int, float] = {}
    stop_signals = StopSignals.SIGNALS

    def spawn() -> int:
        """Fork a worker; signals must be blocked."""
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                own = StopSignals()
                own.catch()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
                runtime.run(serve(config, sockets, resources.tls, resources.access_log, own))
            except BaseException as error:
                log.critical("worker %d failed: %s", os.getpid(), error)
                status = 1
            finally:
                os._exit(status)
        children[pid] = time.monotonic()
        return pid

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for _ in range(config.workers):
        spawn()
    if signals.received:  # before the master's own handlers were in place
        forward(signal.SIGTERM, None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)  # one pending runs forward now
    announce()
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, 0.0)
        if stopping:
            continue
        if time.monotonic() - started < STARTUP_GRACE:
            log.log(ALERT, "worker process %d %s at start-up; stopping", pid,
                    _exit_reason(wait_status))
            status = 1
            forward(signal.SIGTERM, None)
            continue
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            if not stopping:
                log.log(ALERT, "worker process %d %s; started worker process %d in its place",
                        pid, _exit_reason(wait_status), spawn())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    return status


def _exit_reason(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"exited on signal {os.WTERMSIG(wait_status)}"
    return f"exited with code {os.waitstatus_to_exitcode(wait_status)}"
