"""The monitor: one process beside the workers for what must happen once per proxy.

The master forks it when the configuration has a ``status_listen`` or a health check.
It serves the status listener (:mod:`~wsgate.proxy.status_server`), runs the health
checks (:mod:`~wsgate.proxy.probes`), and keeps the admin's marks. Workers never wait
for it: each sends its counts every second (:mod:`~wsgate.proxy.stats`) over a channel
of its own, which the master made and handed to both; the monitor sends every worker
the servers that are out of selection (:mod:`~wsgate.proxy.marks`), whole, whenever that
changes, so all workers agree. If it dies the master starts another; the proxy serves on
meanwhile.

The master's messages: ``worker`` (a worker's channel), ``config`` (the configuration
in force, after a start or a reload, with the listeners' URLs), ``reloaded`` (how a
reload went, for an admin's reload waiting on it, with the master's reload counts), and
``state`` (what an earlier monitor kept). The monitor sends the master its ``state``
whenever that changes: what exited workers counted and the admin's marks, so that a
monitor started in its place (after a crash, a new status address, or an upgrade) goes on
from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pickle
import signal
import socket
import time
from importlib import resources
from typing import Any

from wsgate.errors import UsageError
from wsgate.proxy import channel, marks, preflight, report
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.errorlog import ErrorLog
from wsgate.proxy.health import ServerHealth
from wsgate.proxy.probes import Checker
from wsgate.proxy.stats import PUSH_INTERVAL, usage
from wsgate.proxy.status_server import Live, StatusConnection
from wsgate.proxy.totals import Counts, Totals

log = logging.getLogger(__name__)

RELOAD_WAIT = 60.0
"""How long an admin's reload waits for the master's verdict."""
GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF)


class Monitor:
    """The monitor's state and its answers (the status listener's :class:`App`)."""

    def __init__(self, config: ProxyConfig, control: socket.socket,
                 listener: socket.socket | None, error_log: ErrorLog | None = None) -> None:
        self.config = config
        self.error_log = error_log
        """The log this process writes to (the master's, until the first ``config``)."""
        self.dirty = False
        """The state the master keeps for a successor has changed since it was sent."""
        self.control = control
        self.listener = listener
        self.listeners: list[str] = []
        self.master = os.getppid()
        self.began = time.monotonic()
        self.totals = Totals()
        self.marks = marks.Marks()
        self.checker = Checker(self._health_changed)
        self.workers: dict[int, socket.socket] = {}
        self.sent: dict[int, str] = {}
        """What each worker was last sent of the marks (JSON), to send only changes."""
        self.live: set[Live] = set()
        self.reloads: list[asyncio.Future[dict[str, Any]]] = []
        self.stopped = asyncio.Event()
        self.page_bytes = (resources.files("wsgate.proxy") / "status_page.html").read_bytes()
        self.view = self._view()

    # -- the status listener's App -----------------------------------------------------------

    def page(self) -> bytes:
        return self.page_bytes

    def status(self) -> dict[str, Any]:
        return report.document(self._view())

    def metrics(self) -> tuple[bytes, str]:
        return report.metrics(self._view())

    def joined(self, live: Live) -> None:
        self.live.add(live)
        live.send(json.dumps(report.document(self.view)))

    def left(self, live: Live) -> None:
        self.live.discard(live)

    async def admin(self, action: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if action == "reload":
            return await self._reload()
        if action not in marks.ACTIONS:
            return 404, {"ok": False, "error": f"unknown action {action!r}; known: "
                         f"{', '.join((*marks.ACTIONS, 'reload'))}"}
        server = params.get("server")
        if not server:
            return 400, {"ok": False, "error": "give the server: ?server=HOST:PORT "
                         "(and upstream=NAME if it is in several)"}
        try:
            key = marks.find(self.config, params.get("upstream") or None, server)
        except marks.NoSuchServer as error:
            return 404, {"ok": False, "error": str(error)}
        self.marks.act(action, key)
        self.dirty = True
        log.warning("admin: %s server %s in upstream %s", action, key[1], key[0])
        self._steer()
        self.view = self._view()
        group, address = key
        configured = next(item for item in self.config.upstreams[group].servers
                          if item.address == address)
        return 200, {"ok": True, "action": action, "upstream": group, "server": address,
                     "state": marks.state(configured.down, self.view.mark(group, address)),
                     "open": self.view.counts.open.get(key, 0)}

    async def _reload(self) -> tuple[int, dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.reloads.append(future)
        log.warning("admin: reload")
        try:
            os.kill(self.master, signal.SIGHUP)
            async with asyncio.timeout(RELOAD_WAIT):
                verdict = await future
        except (OSError, TimeoutError) as error:
            return 504, {"ok": False, "error": f"the master did not answer: {error}"}
        finally:
            with contextlib.suppress(ValueError):
                self.reloads.remove(future)
        return (200 if verdict["ok"] else 409), verdict

    # -- facts -------------------------------------------------------------------------------

    def _view(self, ticked: Counts | None = None) -> report.View:
        """The facts now: with the counts of a tick (which also set the rates), or summed
        afresh (for an answer between ticks)."""
        now = time.time()
        counts = ticked if ticked is not None else self.totals.sum()
        processes = [report.Process("master", self.master, *usage(self.master))]
        for pid, snapshot in sorted(self.totals.live.items()):
            open_count = sum(item[2] for item in snapshot["open"])
            processes.append(report.Process("worker", pid, snapshot["cpu_seconds"],
                                            snapshot["rss_bytes"], open_count))
        processes.append(report.Process("monitor", os.getpid(), *usage()))
        health = self.checker.states()
        return report.View(
            config=self.config, counts=counts, marks=self.marks.marks(self.config, health),
            health=health, admin=dict(self.marks.admin), rates=dict(self.totals.rates),
            recent=list(self.totals.recent), reloads=dict(self.totals.reloads),
            processes=processes, listeners=self.listeners, time=round(now, 3),
            uptime=time.monotonic() - self.began,
            probes={key: (item.probes - item.failures, item.failures)
                    for key, item in health.items()})

    def _health_changed(self, group: str, address: str, health: ServerHealth) -> None:
        self._steer()

    def _steer(self) -> None:
        """Send each worker the marks, if they changed since it last got them."""
        current = self.marks.marks(self.config, self.checker.states())
        text = json.dumps(current, sort_keys=True)
        for pid, sock in list(self.workers.items()):
            if self.sent.get(pid) == text:
                continue
            try:
                channel.send(sock, "marks", {"marks": current})
            except OSError as error:
                if error.errno in GONE:
                    self._worker_gone(pid)
                elif not isinstance(error, BlockingIOError):  # tried again next tick
                    log.error("monitor: cannot send worker %d the marks: %s", pid,
                              error.strerror or error)
                continue
            self.sent[pid] = text

    # -- channels ------------------------------------------------------------------------------

    def _control_readable(self) -> None:
        for message in channel.waiting(self.control):
            if message is None:  # the master is gone
                asyncio.get_running_loop().remove_reader(self.control.fileno())
                self.stopped.set()
                return
            try:
                self._act(message)
            except Exception:
                log.exception("monitor: acting on the master's %s failed", message.kind)

    def _act(self, message: channel.Message) -> None:
        if message.kind == "worker":
            pid = message.fields["pid"]
            sock = socket.socket(fileno=message.fds[0])
            sock.setblocking(False)
            self.workers[pid] = sock
            asyncio.get_running_loop().add_reader(sock.fileno(), self._worker_readable, pid)
            self._steer()
        elif message.kind == "config":
            self._configure(pickle.loads(message.blob), message.fields["listeners"],
                            message.fields["reloads"])
        elif message.kind == "reloaded":
            verdict = {"ok": message.fields["ok"], "error": message.fields.get("error")}
            self.totals.reloads = dict(message.fields["counts"])
            for future in self.reloads:
                if not future.done():
                    future.set_result(verdict)
        elif message.kind == "state":
            self._restore(message.fields)
        else:
            for fd in message.fds:
                os.close(fd)

    def _configure(self, config: ProxyConfig, listeners: list[str],
                   reloads: dict[str, int]) -> None:
        self.config = config
        self.listeners = listeners
        self.totals.reloads = dict(reloads)
        self.marks.prune(config)
        self.checker.configure(config)
        try:
            access_log, error_log = preflight.open_logs(config)
        except UsageError as error:
            log.error("monitor: cannot reopen the logs: %s", error)
        else:
            access_log.close()
            error_log.install()
            if self.error_log is not None:
                self.error_log.close()
            self.error_log = error_log
        self._steer()

    def _state(self) -> dict[str, Any]:
        return {"base": self.totals.base.export(),
                "admin": [[group, address, mark]
                          for (group, address), mark in self.marks.admin.items()]}

    def _restore(self, state: dict[str, Any]) -> None:
        """Go on from an earlier monitor's ``state``."""
        self.totals.base.add(state["base"], with_open=False)
        for group, address, mark in state["admin"]:
            self.marks.admin[(group, address)] = mark
        self.marks.prune(self.config)
        self._steer()

    def _worker_readable(self, pid: int) -> None:
        sock = self.workers.get(pid)
        if sock is not None and not self._read(pid, sock):
            self._worker_gone(pid)

    def _read(self, pid: int, sock: socket.socket) -> bool:
        """Take every message worker ``pid`` has sent; False once it is gone."""
        while True:
            try:
                message = channel.receive(sock)
            except BlockingIOError:
                return True
            except ValueError:  # a message cut short (too large): skip it, not the worker
                log.error("monitor: an unreadable message from worker %d", pid)
                continue
            except OSError:
                return False
            if message is None:
                return False
            if message.kind == "stats":
                self.totals.update(message.fields)
            for fd in message.fds:
                os.close(fd)

    def _worker_gone(self, pid: int) -> None:
        sock = self.workers.pop(pid, None)
        self.sent.pop(pid, None)
        if sock is not None:
            self._read(pid, sock)  # what it said before it went (its last counts)
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        self.totals.gone(pid)
        self.dirty = True

    # -- the whole life --------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self.stopped.set)
        self.control.setblocking(False)
        loop.add_reader(self.control.fileno(), self._control_readable)
        self.checker.configure(self.config)
        server = None
        if self.listener is not None:
            server = await loop.create_server(lambda: StatusConnection(self),
                                              sock=self.listener)
        ticker = asyncio.ensure_future(self._tick())
        try:
            await self.stopped.wait()
        finally:
            ticker.cancel()
            for live in list(self.live):
                live.close()
            if server is not None:
                server.close()
            await self.checker.close()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            try:
                self._tick_once()
            except Exception:  # a bug must not stop the page and the marks for good
                log.exception("monitor: a tick failed")

    def _tick_once(self) -> None:
        self.view = self._view(self.totals.tick(time.monotonic()))
        self._steer()
        if self.dirty:
            try:
                channel.send(self.control, "state", self._state())
                self.dirty = False
            except BlockingIOError:
                pass  # the master is busy: next tick
            except OSError:
                self.stopped.set()  # the master is gone
        if self.live:
            text = json.dumps(report.document(self.view))
            for live in list(self.live):
                live.send(text)
