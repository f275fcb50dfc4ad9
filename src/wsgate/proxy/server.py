"""One worker's event loop: accept, reload, reopen the logs, and stop without dropping.

:class:`Serving` accepts on every listening socket until told to stop, and then ends in one
of nginx's ways (:class:`Mode`), except that no WebSocket is ever cut without a Close:

- FAST (SIGTERM, SIGINT): stop accepting; every tunnel gets Close 1001 at once, at a frame
  boundary; requests in flight finish; at ``worker_shutdown_timeout`` whatever is left is
  cut.
- GRACEFUL (SIGQUIT): stop accepting; requests finish; tunnels run on until
  ``worker_shutdown_timeout``, then get the same Close 1001.
- RETIRING (the master's "handover", on an upgrade or when a reload lowers the worker
  count): stop accepting; requests finish; plain tunnels move to another worker
  (:mod:`~wsgate.proxy.handover`); those that cannot (TLS) end as in GRACEFUL.

The master (:mod:`~wsgate.proxy.master`) talks to a worker over its control socket
(:mod:`~wsgate.proxy.channel`): a reload brings the new configuration and every listening
socket. The monitor (:mod:`~wsgate.proxy.monitor`), when there is one, gets the worker's
counts every second over a channel of their own, and sends back which servers are out of
selection. ``wsgate up`` runs a Serving in its own process, without a master.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import pickle
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial

from wsgate.errors import UsageError
from wsgate.proxy import channel, handover, preflight
from wsgate.proxy.accepting import Accepting
from wsgate.proxy.accesslog import AccessLog
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.connection import ClientConnection
from wsgate.proxy.errorlog import ErrorLog
from wsgate.proxy.listeners import BACKLOG, Bound, Sockets
from wsgate.proxy.memory import Trimmer
from wsgate.proxy.preflight import TLSContexts
from wsgate.proxy.stats import PUSH_INTERVAL
from wsgate.proxy.tunnel import CLOSE_TIMEOUT, State, Tunnel
from wsgate.proxy.worker import Worker
from wsgate.signals import Signals

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "proxy shutting down"
GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF)
"""A channel's errors that mean the process at the other end is gone."""
POLL = 0.05
FRESH_GRACE = 1.0
"""How long a connection accepted just before the stop has to send its first request."""
CLOSE_GRACE = 2.0
"""After the Close frames at ``worker_shutdown_timeout``: how long their handshakes may take."""


class Mode(enum.Enum):
    RUNNING = "running"
    GRACEFUL = "graceful"
    FAST = "fast"
    RETIRING = "retiring"


class Serving:
    """One worker's accepting, reloading and stopping (see the module's docstring)."""

    def __init__(self, config: ProxyConfig, sockets: Sockets, tls: TLSContexts,
                 access_log: AccessLog, error_log: ErrorLog | None = None,
                 control: socket.socket | None = None,
                 monitor: socket.socket | None = None) -> None:
        self.worker = Worker(config, access_log)
        self.accepting = Accepting(self._listen_on, sockets, self.worker.limits)
        self.tls = tls
        self.error_log = error_log
        self.control = control
        self.mode = Mode.RUNNING
        self.stopped = asyncio.Event()
        self.peer: socket.socket | None = None
        """Where a retiring worker sends its tunnels."""
        self.receivers: list[handover.Receiver] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.monitor: socket.socket | None = None
        self._monitor_given = monitor
        self.trimmer = Trimmer()
        self._said = False

    # -- signals and the master's messages -------------------------------------------------

    def stop(self, mode: Mode) -> None:
        """Begin to stop, or stop faster: FAST overrides the gentler ways, not the reverse."""
        if self.mode is Mode.RUNNING or mode is Mode.FAST:
            self.mode = mode
            self.stopped.set()

    def _signal(self, signum: int) -> None:
        if signum == signal.SIGQUIT:
            self.stop(Mode.GRACEFUL)
        elif signum == signal.SIGUSR1:
            self.reopen()
        else:
            self.stop(Mode.FAST)

    def _attach(self, signals: Signals) -> None:
        loop = asyncio.get_running_loop()
        for signum in signals.signals:
            loop.add_signal_handler(signum, self._signal, signum)
        for early in signals.take():
            self._signal(early)

    def _control_readable(self) -> None:
        assert self.control is not None
        for message in channel.waiting(self.control):
            if message is None:  # the master is gone: do not linger as an orphan
                asyncio.get_running_loop().remove_reader(self.control.fileno())
                self.stop(Mode.GRACEFUL)
                return
            try:
                self._act(message)
            except Exception as error:  # a bug here must not end the worker's serving
                log.critical("worker %d could not act on the master's %s: %r", os.getpid(),
                             message.kind, error)

    def _act(self, message: channel.Message) -> None:
        if message.kind == "reload":
            self.reload(message)
        elif message.kind == "handover":
            self.peer = socket.socket(fileno=message.fds[0])
            self.stop(Mode.RETIRING)
        elif message.kind == "takeover":
            sock = socket.socket(fileno=message.fds[0])
            self.receivers.append(handover.Receiver(self.worker, sock))
        elif message.kind == "monitor":  # a new monitor (the old one died, or an upgrade)
            self._link(socket.socket(fileno=message.fds[0]))
        else:
            for fd in message.fds:
                os.close(fd)

    def reload(self, message: channel.Message) -> None:
        """The master's checked configuration, with every listening socket it names."""
        listeners = message.fields["listeners"]
        sockets = {address: Bound(socket.socket(fileno=fd), tls, address)
                   for (address, tls), fd in zip(listeners, message.fds, strict=True)}
        config: ProxyConfig = pickle.loads(message.blob)
        try:
            tls = preflight.tls_context(config)
            access_log, error_log = preflight.open_logs(config)
        except UsageError as error:  # a file changed since the master read it
            log.error("worker %d kept the old configuration: %s", os.getpid(), error)
            for bound in sockets.values():
                bound.sock.close()
            self._tell_master("reloaded")
            return
        self._swap_logs(access_log, error_log)
        self.tls = tls
        self.worker.apply(config, access_log)
        self._spawn(self._listen_anew(sockets))

    # -- the monitor -------------------------------------------------------------------------

    def _link(self, sock: socket.socket) -> None:
        self._unlink()
        sock.setblocking(False)
        self.monitor = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._monitor_readable)

    def _unlink(self) -> None:
        if self.monitor is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.monitor.fileno())
            self.monitor.close()
            self.monitor = None

    def _monitor_readable(self) -> None:
        while self.monitor is not None:
            try:
                message = channel.receive(self.monitor)
            except BlockingIOError:
                return
            except (OSError, ValueError):
                message = None
            if message is None:  # it is gone; the master will link a new one
                self._unlink()
                self.worker.steer({})  # its marks went with it; a new one sends its own
                return
            if message.kind == "marks":
                self.worker.steer(message.fields["marks"])
            for fd in message.fds:
                os.close(fd)

    def push(self) -> None:
        """Send the monitor this worker's counts (skipped if it is behind: the next ones
        say it all again)."""
        if self.monitor is None:
            return
        snapshot = self.worker.snapshot()
        try:
            channel.send(self.monitor, "stats", snapshot)
        except OSError as error:
            if error.errno in GONE:
                self._unlink()
            elif not isinstance(error, BlockingIOError) and not self._said:
                self._said = True  # once: it would come back every second
                log.error("worker %d cannot send its counts to the monitor: %s",
                          os.getpid(), error.strerror or error)
            return
        self.worker.stats.sent(snapshot)

    async def _pushing(self) -> None:
        """Each second: the counts to the monitor, and a look at the listening servers."""
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            try:
                self.accepting.check()
                self.push()
                self.trimmer.observe(len(self.worker.open) + len(self.worker.tunnels))
            except Exception:  # a bug here must not stop the counts for good, nor serving
                log.exception("worker %d: the once-a-second work failed", os.getpid())

    def _tell_master(self, kind: str) -> None:
        if self.control is not None:
            with contextlib.suppress(OSError):
                channel.send(self.control, kind)

    def reopen(self) -> None:
        """SIGUSR1: open the log files again (logrotate has moved them away)."""
        try:
            access_log, error_log = preflight.open_logs(self.worker.config)
        except UsageError as error:
            log.error("cannot reopen the logs: %s", error)
            return
        self._swap_logs(access_log, error_log)

    def _swap_logs(self, access_log: AccessLog, error_log: ErrorLog) -> None:
        old_access, old_error = self.worker.access_log, self.error_log
        error_log.install()
        self.error_log = error_log
        self.worker.access_log = access_log
        old_access.close()
        if old_error is not None:
            old_error.close()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- accepting ---------------------------------------------------------------------------

    async def _listen_on(self, bound: Bound, sock: socket.socket) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        scheme = "https" if bound.tls else "http"
        return await loop.create_server(
            partial(ClientConnection, self.worker, scheme, bound.address),
            sock=sock, ssl=self.tls.get(bound.address) if bound.tls else None,
            backlog=self._backlog(bound.address))

    def _backlog(self, address: str) -> int:
        """listen's backlog= (asyncio listens again on the socket it is given)."""
        return next((item.backlog for item in self.worker.config.listeners
                     if item.address == address and item.backlog), BACKLOG)

    async def _listen_anew(self, sockets: Sockets) -> None:
        """Accept on the new sockets, then stop on the old: never a moment without. The
        master hears "reloaded" once this worker serves the new configuration."""
        try:
            if self.mode is not Mode.RUNNING:
                for bound in sockets.values():
                    bound.sock.close()
                return
            await self.accepting.start(sockets)
        finally:
            self._tell_master("reloaded")

    # -- the whole life ----------------------------------------------------------------------

    async def run(self, signals: Signals, *, ready: Callable[[], None] | None = None,
                  on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        """Accept until a signal or the master says stop, then end as :class:`Mode` says.

        ``ready`` runs once the signals are handled and accepting has begun. ``on_stop``
        runs once accepting has stopped and before the tunnels end: ``wsgate up`` closes
        its echo servers there, so their own Close 1001 reaches the clients.
        """
        loop = asyncio.get_running_loop()
        self._attach(signals)
        if self.control is not None:
            self.control.setblocking(False)
            loop.add_reader(self.control.fileno(), self._control_readable)
        if self._monitor_given is not None:
            self._link(self._monitor_given)
            self._monitor_given = None
        pushing = asyncio.ensure_future(self._pushing())
        await self.accepting.start(self.accepting.sockets)
        self._tell_master("ready")  # the master hands old workers' tunnels over only now
        if ready is not None:
            ready()
        await self.stopped.wait()
        self.accepting.close()
        if self.control is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(self.control.fileno())
        if on_stop is not None:
            await on_stop()
        await self._wind_down()
        pushing.cancel()
        self.push()  # the last counts: the monitor keeps them once this worker is gone
        self._unlink()

    async def _wind_down(self) -> None:
        """Requests finish; tunnels end as the mode says; at ``worker_shutdown_timeout``
        every tunnel gets its Close and, CLOSE_GRACE later, whatever is left is cut."""
        loop = asyncio.get_running_loop()
        worker = self.worker
        worker.draining = True
        timeout = worker.config.shutdown_timeout
        begun = loop.time()
        deadline = begun + timeout if timeout > 0 else float("inf")
        hard_end = float("inf")
        fast_since: float | None = None
        kept: set[Tunnel] = set()
        while worker.open or worker.tunnels or any(r.busy for r in self.receivers):
            now = loop.time()
            if now >= hard_end:
                break
            for conn in list(worker.open):
                conn.close_idle(now >= begun + FRESH_GRACE)
            if self.mode is Mode.FAST or now >= deadline:
                for tunnel in list(worker.tunnels):
                    tunnel.going_away(1001, SHUTDOWN_REASON)
                if self.mode is Mode.FAST:
                    fast_since = now if fast_since is None else fast_since
                    hard_end = min(deadline, fast_since + CLOSE_TIMEOUT)
                else:
                    hard_end = min(hard_end, deadline + CLOSE_GRACE)
                if now >= deadline:
                    for conn in list(worker.open):
                        conn.abort()
            elif self.mode is Mode.RETIRING and self.peer is not None:
                await self._hand_over(kept)
            await asyncio.sleep(POLL)
        for tunnel in list(worker.tunnels):
            tunnel.abort()
        for conn in list(worker.open):
            conn.abort()
        worker.pool.close_all()
        self._drop_peer()
        for receiver in self.receivers:
            receiver.close()

    async def _hand_over(self, kept: set[Tunnel]) -> None:
        """One pass of moving tunnels to the peer; the peer is let go once nothing more
        can come (no request in flight that could become a tunnel, and no tunnel on its
        way here from a worker retired earlier)."""
        assert self.peer is not None
        worker = self.worker
        movable = [tunnel for tunnel, record in worker.tunnels.items()
                   if not record.tls and tunnel not in kept and tunnel.state is State.OPEN]
        if movable:
            try:
                kept.update(await handover.hand_over(
                    worker, self.peer, lambda: self.mode is Mode.RETIRING))
            except handover.PeerGone:
                log.error("the worker taking this one's tunnels is gone; they stay here "
                          "until worker_shutdown_timeout")
                self._drop_peer()
                return
        if (not worker.open and self.mode is Mode.RETIRING
                and not any(receiver.busy for receiver in self.receivers)):
            self._drop_peer()  # no request can become a tunnel, none is coming to pass on

    def _drop_peer(self) -> None:
        if self.peer is not None:
            self.peer.close()
            self.peer = None
