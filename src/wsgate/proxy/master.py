"""The ``wsgate proxy`` master process: listening sockets, workers, and nginx's signals.

The master binds every listening socket, forks the workers (:mod:`~wsgate.proxy.server`)
and restarts one that dies. It never serves a connection. Its signals are nginx's:

- SIGTERM, SIGINT: fast stop; SIGQUIT: graceful stop (passed on to the workers).
- SIGHUP: reload. The file is read and everything it names opened first; if any of it
  fails the old configuration stays, with one error line naming the file and the key.
  Otherwise each worker swaps it in (open tunnels stay where they are), new listening
  sockets are bound, removed ones closed, and workers are added or retired to match
  ``worker_processes``.
- SIGUSR1: reopen the log files. SIGUSR2: upgrade in place: once the installed code has
  shown it starts, the master execs it, keeping its PID and its sockets; the new master
  starts new workers, and the old workers hand their tunnels over and exit.

The signals are blocked and taken one at a time with ``sigtimedwait``: no handler runs
between two forks, and none is lost while one is being acted on. One that came while the
command was loading (:mod:`wsgate.signals`) is acted on first.

With a status listener or health checks, the master also runs the monitor
(:mod:`~wsgate.proxy.monitor_link`), starts it again if it dies, and links every worker
to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from wsgate import runtime, sdnotify
from wsgate.errors import Failure, UsageError
from wsgate.proxy import (
    channel,
    configload,
    inheritance,
    ktls,
    listeners,
    memory,
    monitor_link,
    pidfile,
    preflight,
)
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.errorlog import ALERT
from wsgate.proxy.listeners import Bound, Sockets
from wsgate.proxy.monitor_link import MonitorLink
from wsgate.proxy.preflight import Resources
from wsgate.proxy.server import Serving
from wsgate.signals import PROXY_SIGNALS, Signals

log = logging.getLogger(__name__)

STARTUP_GRACE = 2.0
"""A worker that dies this soon after the proxy started is broken, not unlucky: the proxy
stops. Later, one that dies this soon after its own start is replaced only this much later."""
WAITED = (*PROXY_SIGNALS, signal.SIGCHLD)
WORKER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1)
ANSWER_TIMEOUT = 10.0
"""How long a worker may take to start accepting, or to apply a reload."""


@dataclass(slots=True)
class WorkerHandle:
    pid: int
    control: socket.socket
    started: float
    retiring: bool = False
    """Handing its tunnels over and exiting (old code, or one too many): not respawned."""


class Master:
    """The master's state: the configuration in force, its sockets and resources (what a
    new worker inherits), the workers, and what is due (respawns)."""

    def __init__(self, config: ProxyConfig, path: str | None, argv: list[str],
                 resources: Resources, sockets: Sockets,
                 monitor: MonitorLink | None = None) -> None:
        self.config = config
        self.path = path
        self.argv = argv
        self.resources = resources
        self.sockets = sockets
        self.workers: dict[int, WorkerHandle] = {}
        self.stopping = False
        self.status = 0
        self.began = time.monotonic()
        self.respawns: list[float] = []
        """When to start a worker in place of one that died young."""
        self.monitor = monitor or MonitorLink(None)
        self.monitor_due: float | None = None
        """When to start the monitor again (it died)."""

    # -- workers ---------------------------------------------------------------------------

    def spawn(self) -> WorkerHandle:
        """Fork a worker (the signals are blocked, here and in it until its loop runs)."""
        link = self.monitor.pair_for()
        ours, theirs = channel.pair()
        try:
            pid = os.fork()
        except OSError:
            for sock in (ours, theirs, *(link or ())):
                sock.close()
            raise
        if pid == 0:
            ours.close()
            if link is not None:
                link[1].close()
            self._become_worker(theirs, link[0] if link is not None else None)
        theirs.close()
        if link is not None:
            link[0].close()
            self.monitor.give(pid, link[1])
        handle = WorkerHandle(pid, ours, time.monotonic())
        self.workers[pid] = handle
        return handle

    def spawn_or_later(self) -> WorkerHandle | None:
        """:meth:`spawn`, or, if the system refuses (no memory, no descriptors), one line
        and another try in STARTUP_GRACE."""
        try:
            return self.spawn()
        except OSError as error:
            log.log(ALERT, "cannot start a worker process: %s; trying again in %gs",
                    error.strerror or error, STARTUP_GRACE)
            self.respawns.append(time.monotonic() + STARTUP_GRACE)
            return None

    def _become_worker(self, control: socket.socket, monitor: socket.socket | None) -> None:
        status = 0
        try:
            for handle in self.workers.values():
                handle.control.close()
            if self.monitor.control is not None:
                self.monitor.control.close()
            self.monitor.close()
            own = Signals(WORKER_SIGNALS)
            own.catch()
            for signum in (signal.SIGHUP, signal.SIGUSR2):
                signal.signal(signum, signal.SIG_IGN)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            resources = self.resources
            serving = Serving(self.config, dict(self.sockets), resources.tls,
                              resources.access_log, resources.error_log, control, monitor)
            configload.drop_privileges(self.config)
            memory.tune_collector()
            runtime.run(serving.run(own))
        except BaseException as error:
            log.critical("worker %d failed: %s", os.getpid(), error)
            status = 1
        finally:
            os._exit(status)

    def _send(self, handle: WorkerHandle, kind: str, fields: dict[str, object] | None = None,
              blob: bytes = b"", fds: list[int] | None = None) -> bool:
        try:
            channel.send(handle.control, kind, fields, blob, fds or [])
        except OSError as error:  # it died meanwhile: reaping will say so
            log.error("worker process %d did not get the %s message: %s", handle.pid, kind,
                      error.strerror or error)
            return False
        return True

    def retire(self, old: WorkerHandle, to: WorkerHandle) -> None:
        """Have ``old`` stop accepting and hand its tunnels to ``to``, then exit."""
        old.retiring = True
        give, take = channel.pair()
        with give, take:
            self._send(to, "takeover", fds=[take.fileno()])
            self._send(old, "handover", fds=[give.fileno()])

    def start_monitor(self) -> None:
        """Start the monitor and link every worker to it (or try again later)."""
        self.monitor_due = None

        def close_inherited() -> None:
            for handle in self.workers.values():
                handle.control.close()
            for bound in self.sockets.values():
                bound.sock.close()
            self.resources.access_log.close()

        try:
            self.monitor.start(self.config, self.sockets, self.resources.error_log,
                               close_inherited)
        except OSError as error:
            log.log(ALERT, "cannot start the monitor process: %s; trying again in %gs",
                    error.strerror or error, STARTUP_GRACE)
            self.monitor_due = time.monotonic() + STARTUP_GRACE
            return
        for handle in self.workers.values():
            self.monitor.link(handle.pid, handle.control)

    def _running(self) -> list[WorkerHandle]:
        return [handle for handle in self.workers.values() if not handle.retiring]

    def signal_workers(self, signum: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.monitor.pid:
                self.monitor.gone()
                if not self.stopping:
                    log.log(ALERT, "monitor process %d %s; starting another in %gs", pid,
                            _exit_reason(wait_status), STARTUP_GRACE)
                    self.monitor_due = time.monotonic() + STARTUP_GRACE
                continue
            handle = self.workers.pop(pid, None)
            if handle is None:
                continue
            handle.control.close()
            if self.stopping or handle.retiring:
                continue
            reason = _exit_reason(wait_status)
            now = time.monotonic()
            if now - self.began < STARTUP_GRACE:
                log.log(ALERT, "worker process %d %s at start-up; stopping", pid, reason)
                self.status = 1
                self.stop(signal.SIGTERM)
            elif now - handle.started < STARTUP_GRACE:  # no tight loop of crashing workers
                log.log(ALERT, "worker process %d %s soon after its start; another in %gs",
                        pid, reason, STARTUP_GRACE)
                self.respawns.append(now + STARTUP_GRACE)
            else:
                fresh = self.spawn_or_later()
                if fresh is not None:
                    log.log(ALERT, "worker process %d %s; started worker process %d in its "
                            "place", pid, reason, fresh.pid)
                else:
                    log.log(ALERT, "worker process %d %s", pid, reason)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        if (self.monitor_due is not None and self.monitor_due <= now and not self.stopping
                and monitor_link.wanted(self.config)):
            self.start_monitor()
        while self.respawns and self.respawns[0] <= now and not self.stopping:
            self.respawns.pop(0)
            if self.spawn_or_later() is not None:
                log.log(ALERT, "started a worker process in place of one that died")

    # -- signals -----------------------------------------------------------------------------

    def stop(self, signum: int) -> None:
        if not self.stopping:
            self.stopping = True
            sdnotify.stopping()
        self.signal_workers(signal.SIGQUIT if signum == signal.SIGQUIT else signal.SIGTERM)

    def handle(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            self.stop(signum)
        elif signum == signal.SIGCHLD or self.stopping:
            return
        elif signum == signal.SIGHUP:
            self.reload()
        elif signum == signal.SIGUSR1:
            self.reopen()
        elif signum == signal.SIGUSR2:
            self.upgrade()

    def _handle_safely(self, signum: int) -> None:
        """A bug in acting on one signal must not take the master (and with it every
        worker's supervision) down: say so and go on."""
        try:
            self.handle(signum)
        except Exception:
            log.critical("acting on signal %d failed", signum, exc_info=True)

    def reload(self) -> None:
        if self.path is None:
            log.warning("reload: nothing to read again (started with flags, not -c)")
            self.monitor.reloaded(False, "nothing to read again (started with flags, not -c)")
            return
        log.info("reloading %s", self.path)
        sdnotify.reloading()
        try:
            config = configload.read(self.path, self.config.syntax)
            resources = preflight.open_resources(config)
        except UsageError as error:
            self._reload_failed(str(error))
            return
        try:
            status = self._status_socket(config)
        except Failure as error:
            resources.close()
            self._reload_failed(f"{self.path}: status_listen: {error}")
            return
        try:
            sockets = listeners.bind_all(config, self.sockets)
        except Failure as error:
            resources.close()
            if status is not self.monitor.status and status is not None:
                status.close()
            self._reload_failed(f"{self.path}: {error}")
            return
        if config.pid != self.config.pid:
            try:
                if config.pid is not None:
                    pidfile.write(config.pid)
            except Failure as error:
                resources.close()
                for sock in listeners.unused(sockets, self.sockets):
                    sock.close()
                if status is not self.monitor.status and status is not None:
                    status.close()
                self._reload_failed(str(error))
                return
            if self.config.pid is not None:
                pidfile.remove(self.config.pid, os.getpid())
        resources.error_log.install()
        old_resources, old_sockets = self.resources, self.sockets
        self.config, self.resources, self.sockets = config, resources, sockets
        blob = pickle.dumps(config)
        order = list(sockets.items())
        fields: dict[str, object] = {
            "listeners": [[address, bound.tls] for address, bound in order]}
        fds = [bound.sock.fileno() for _address, bound in order]
        told = [handle for handle in self._running()
                if self._send(handle, "reload", fields=fields, blob=blob, fds=fds)]
        for sock in listeners.unused(old_sockets, sockets):
            sock.close()
        old_resources.close()
        for handle in told:  # READY=1 (systemctl reload returns) once every worker serves it
            if not _heard(handle, "reloaded"):
                log.error("worker process %d did not confirm the reload in %gs", handle.pid,
                          ANSWER_TIMEOUT)
        self._match_worker_count()
        self.monitor.reloaded(True)  # to the monitor an admin's reload may wait on
        self._monitor_anew(status)
        log.info("reloaded %s", self.path)
        sdnotify.ready()

    def _status_socket(self, config: ProxyConfig) -> socket.socket | None:
        """The status listener's socket for ``config``: the one held if the address is
        the same, else a new one (Failure if it cannot be bound)."""
        if config.status_listen == self.config.status_listen:
            return self.monitor.status
        if config.status_listen is None:
            return None
        return listeners.bind(config.status_listen)

    def _monitor_anew(self, status: socket.socket | None) -> None:
        """After a reload: the monitor gets the configuration, or is started or stopped
        (or both, for a new status address)."""
        if status is not self.monitor.status:
            old = self.monitor
            old.stop()
            old.close()
            self.monitor = MonitorLink(status, old.state, old.reloads)
        if not monitor_link.wanted(self.config):
            self.monitor.stop()
        elif self.monitor.control is None:
            self.start_monitor()
        else:
            self.monitor.configure(self.config, self.sockets)

    def _reload_failed(self, why: str) -> None:
        log.error("reload failed, still running the old configuration: %s", why)
        self.monitor.reloaded(False, why)
        sdnotify.ready()

    def _match_worker_count(self) -> None:
        running = self._running()
        for _ in range(self.config.workers - len(running) - len(self.respawns)):
            self.spawn_or_later()
        extra = running[self.config.workers:]
        staying = running[:self.config.workers]
        if not staying:  # none runs now (all are being started again): none to retire
            return
        for index, handle in enumerate(extra):
            self.retire(handle, staying[index % len(staying)])

    def reopen(self) -> None:
        try:
            _access_log, error_log = preflight.open_logs(self.config)
        except UsageError as error:
            log.error("cannot reopen the logs: %s", error)
        else:
            _access_log.close()
            error_log.install()
            self.resources.error_log.close()
            self.resources.error_log = error_log
        self.signal_workers(signal.SIGUSR1)
        self.monitor.configure(self.config, self.sockets)  # it reopens its error log too

    def upgrade(self) -> None:
        """Exec the code installed now in this process, once a dry run shows it starts."""
        command = [sys.executable, "-m", "wsgate", *self.argv]
        failure = self._cannot_start_anew() or inheritance.probe(command)
        if failure is not None:
            log.error("upgrade failed, the old processes keep serving: %s", failure)
            return
        self.monitor.stop()  # the new master starts its own (and goes on from its state)
        status, listen = self.monitor.status, self.config.status_listen
        value, shared = inheritance.hand_down(inheritance.Passed(
            self.sockets,
            [(handle.pid, handle.control, handle.retiring) for handle in self.workers.values()],
            None if status is None or listen is None else (listen.address, status),
            {"state": self.monitor.state, "reloads": self.monitor.reloads}))
        for sock in shared:
            sock.set_inheritable(True)
        log.info("upgrading: exec %s", " ".join(command))
        environment = {**os.environ, inheritance.INHERIT: value}
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            os.execve(sys.executable, command, environment)
        except OSError as error:
            log.error("upgrade failed, the old processes keep serving: %s", error)
            for sock in shared:
                sock.set_inheritable(False)
            if monitor_link.wanted(self.config):
                self.start_monitor()

    def _cannot_start_anew(self) -> str | None:
        """What would stop the new master after the exec, where the dry run cannot see it:
        a new listening address that cannot be bound. (Once exec'd, this process cannot
        come back, so this is checked here, while it still can.)"""
        if self.path is None:
            return None
        try:
            config = configload.read(self.path, self.config.syntax)
        except UsageError as error:
            return str(error)
        status, listen = self.monitor.status, self.config.status_listen
        if (config.status_listen is not None and (status is None or listen is None or
                listeners.held_for({listen.address: Bound(status, False)},
                                   config.status_listen) is None)):
            try:
                listeners.bind(config.status_listen).close()
            except Failure as error:
                return f"status_listen: {error}"
        for listener in config.listeners:
            if listeners.held_for(self.sockets, listener) is None:
                try:
                    listeners.bind(listener).close()
                except Failure as error:
                    return str(error)
        return None

    # -- the whole life ------------------------------------------------------------------------

    def run(self, signals: Signals, announce: Callable[[], None],
            old_workers: list[WorkerHandle]) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
        early = signals.take()
        # Those an earlier upgrade retired hand over already (to workers that are told to
        # hand over now, and pass on what they get).
        serving = [handle for handle in old_workers if not handle.retiring]
        for handle in old_workers:
            handle.retiring = True
            self.workers[handle.pid] = handle
        if self.config.pid is not None:
            pidfile.write(self.config.pid)
        if old_workers:  # a new worker that dies young must not stop the old ones
            self.began = float("-inf")
        if monitor_link.wanted(self.config):
            self.start_monitor()
        for _ in range(self.config.workers):
            self.spawn_or_later()
        fresh = [handle for handle in self._running()
                 if old_workers and _heard(handle, "ready")]  # old workers stop only then
        for index, handle in enumerate(serving if fresh else []):
            self.retire(handle, fresh[index % len(fresh)])
        if old_workers and fresh:
            log.info("upgraded: %d new workers; %d old ones handing over", len(fresh),
                     len(serving))
        elif old_workers:
            log.error("upgrade: no new worker started; the old ones keep serving")
            for handle in self._running():
                handle.retiring = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.pid, signal.SIGTERM)
            self.respawns.clear()
            for handle in serving:
                handle.retiring = False
        else:
            announce()
        sdnotify.ready()
        for signum in early:
            self._handle_safely(signum)
        try:
            while self.workers or (self.respawns and not self.stopping):
                info = signal.sigtimedwait(WAITED, 0.5 if self.respawns else 1.0)
                if info is not None:
                    self._handle_safely(info.si_signo)
                self.monitor.poll()
                self.reap()
                self._respawn_due()
        finally:
            self.monitor.stop()
            self.monitor.close()
            if self.config.pid is not None:
                pidfile.remove(self.config.pid, os.getpid())
        return self.status


def _heard(handle: WorkerHandle, kind: str) -> bool:
    """Wait until the worker says ``kind`` ("ready": it accepts; "reloaded": it serves the
    new configuration), ANSWER_TIMEOUT at most; what it said before is skipped."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([handle.control], [], [], left)
        if not readable:
            break
        try:
            message = channel.receive(handle.control)
        except OSError:
            return False
        if message is None:
            return False
        for fd in message.fds:
            os.close(fd)
        if message.kind == kind:
            return True
    return False


def run(config: ProxyConfig, path: str | None, argv: list[str], signals: Signals) -> int:
    """Open what the config names, bind (or take over an old master's sockets), and serve
    with ``config.workers`` processes until stopped."""
    passed = inheritance.inherited()
    have = passed.sockets
    old_workers = [WorkerHandle(pid, control, time.monotonic(), retiring=retiring)
                   for pid, control, retiring in passed.workers]
    resources = preflight.open_resources(config)  # before forking: one error, not N
    resources.error_log.install()
    if resources.tls:
        log.info("%s", ktls.notice())
    status = None
    try:
        status = inheritance.status_socket(config, passed.status)
        sockets = listeners.bind_all(config, have)
    except Failure:
        resources.close()
        if status is not None:
            status.close()
        raise
    for sock in listeners.unused(have, sockets):
        sock.close()

    def announce() -> None:
        for bound in sockets.values():
            print(f"Listening on {listeners.url_of(bound.sock, bound.tls)}")
        if status is not None:
            print(f"Status page on {listeners.url_of(status, False)}/")
        sys.stdout.flush()

    master = Master(config, path, argv, resources, sockets,
                    MonitorLink(status, passed.monitor.get("state"),
                                passed.monitor.get("reloads")))
    return master.run(signals, announce, old_workers)


def _exit_reason(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"exited on signal {os.WTERMSIG(wait_status)}"
    return f"exited with code {os.waitstatus_to_exitcode(wait_status)}"
