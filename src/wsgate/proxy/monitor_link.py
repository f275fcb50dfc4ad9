"""The master's side of the monitor (:mod:`~wsgate.proxy.monitor`): its process, its
listening socket, and the channels that link it to each worker.

The master holds the status listener's socket, so a monitor that dies and is started
again, or an upgrade, never leaves the address unbound. Each worker's channel to the
monitor is a socket pair the master makes: one end goes to the worker (inherited at its
fork, or sent in a ``monitor`` message), the other to the monitor (a ``worker`` message).
The master also keeps what the monitor must not lose with its process (its ``state``:
exited workers' counts, the admin's marks; and the reload counts, which are the
master's), and gives it to the next monitor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from wsgate import runtime
from wsgate.proxy import channel, listeners
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.errorlog import ErrorLog
from wsgate.proxy.listeners import Sockets

log = logging.getLogger(__name__)

STOP_WAIT = 5.0
SEND_TIMEOUT = 2.0
"""A monitor that takes no message for this long is stuck: it is killed (and started
again), so the master never hangs on it."""


def wanted(config: ProxyConfig) -> bool:
    """A monitor runs when there is a status listener or a health check."""
    return config.status_listen is not None or any(
        group.health_check is not None for group in config.upstreams.values())


class MonitorLink:
    """The monitor process as the master sees it."""

    def __init__(self, status: socket.socket | None,
                 state: dict[str, Any] | None = None,
                 reloads: dict[str, int] | None = None) -> None:
        self.status = status
        """The status listener's socket (None without ``status_listen``)."""
        self.pid = 0
        self.control: socket.socket | None = None
        self.state = state
        """The monitor's latest ``state`` (None before it sent one)."""
        self.reloads = reloads or {"success": 0, "failure": 0}

    def start(self, config: ProxyConfig, sockets: Sockets, error_log: ErrorLog,
              before_run: Callable[[], None]) -> None:
        """Fork the monitor; ``before_run`` (in the child) closes what the master holds
        that the monitor must not."""
        ours, theirs = channel.pair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            status = 0
            try:
                before_run()
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                               signal.SIGCHLD):  # until its loop handles them: a stop stops
                    signal.signal(signum, signal.SIG_DFL)
                for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
                    signal.signal(signum, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                from wsgate.proxy.monitor import Monitor

                runtime.run(Monitor(config, theirs, self.status, error_log).run())
            except BaseException as error:
                log.critical("monitor %d failed: %s", os.getpid(), error)
                status = 1
            finally:
                os._exit(status)
        theirs.close()
        ours.settimeout(SEND_TIMEOUT)
        self.pid, self.control = pid, ours
        self.configure(config, sockets)
        if self.state is not None:
            self._send("state", self.state)

    def configure(self, config: ProxyConfig, sockets: Sockets) -> None:
        urls = [listeners.url_of(bound.sock, bound.tls) for bound in sockets.values()]
        self._send("config", {"listeners": urls, "reloads": self.reloads},
                   pickle.dumps(config))

    def reloaded(self, ok: bool, error: str | None = None) -> None:
        self.reloads["success" if ok else "failure"] += 1
        self._send("reloaded", {"ok": ok, "error": error, "counts": self.reloads})

    def poll(self) -> None:
        """Take what the monitor has said (its ``state``), without waiting."""
        while self.control is not None:
            try:
                message = channel.receive(self.control, block=False)
            except (BlockingIOError, TimeoutError):
                return
            except (OSError, ValueError):
                return  # it is gone (reaping says so) or said something unreadable
            if message is None:
                return
            for fd in message.fds:
                os.close(fd)
            if message.kind == "state":
                self.state = message.fields

    def pair_for(self) -> tuple[socket.socket, socket.socket] | None:
        """A new (worker end, monitor end) pair, or None when no monitor runs."""
        return channel.pair() if self.control is not None else None

    def give(self, pid: int, monitor_end: socket.socket) -> None:
        """Hand the monitor its end of worker ``pid``'s channel (and close it here)."""
        with monitor_end:
            self._send("worker", {"pid": pid}, fds=[monitor_end.fileno()])

    def link(self, pid: int, control: socket.socket) -> None:
        """Link a running worker (control socket ``control``) to this monitor."""
        pair = self.pair_for()
        if pair is None:
            return
        worker_end, monitor_end = pair
        with worker_end, contextlib.suppress(OSError):
            channel.send(control, "monitor", fds=[worker_end.fileno()])
        self.give(pid, monitor_end)

    def _send(self, kind: str, fields: dict[str, object] | None = None, blob: bytes = b"",
              fds: list[int] | None = None) -> None:
        if self.control is None:
            return
        try:
            channel.send(self.control, kind, fields, blob, fds or [])
        except TimeoutError:
            log.error("the monitor took no %s message in %gs: stopping it (another will "
                      "start)", kind, SEND_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        except OSError as error:  # it died: reaping starts another
            log.error("the monitor did not get the %s message: %s", kind,
                      error.strerror or error)

    def gone(self) -> None:
        """It exited (reaped)."""
        if self.control is not None:
            self.control.close()
        self.pid, self.control = 0, None

    def stop(self) -> None:
        """Stop it and wait (STOP_WAIT at most, then kill)."""
        if not self.pid:
            return
        self.poll()  # its last word, for the next one
        pid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.02)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.gone()

    def close(self) -> None:
        if self.status is not None:
            self.status.close()
            self.status = None
