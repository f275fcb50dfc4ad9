"""Active health checks of upstream servers (NGINX Plus's ``health_check``): the probes and
the tasks that run them.

A probe asks a server what a client would: by default a WebSocket opening handshake, which
a server that merely accepts TCP connections, or answers HTTP but no longer upgrades,
fails. :class:`Checker` runs one probe loop per server and keeps each server's
:class:`~wsgate.proxy.health.ServerHealth`; whoever picks servers reads it and hears of
each flip through ``on_change``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import httptools
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus

from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.directives import HealthCheck, ServerConfig
from wsgate.proxy.health import ServerHealth
from wsgate.values import join_address

log = logging.getLogger(__name__)

USER_AGENT = "wsgate-health-check"
STAGGER = 0.001
"""Seconds between the first probes of the servers one :meth:`Checker.configure` adds, so
a config with a thousand servers does not open a thousand connections in the same instant."""
_HEAD_LIMIT = 64 << 10
"""A response head longer than this is not a health check's answer."""


class _Connect(connect):
    """:func:`~websockets.asyncio.client.connect` that follows no redirect: a 3xx is the
    probed server's answer, not a pointer to another server to judge it by."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def probe(host: str, port: int, check: HealthCheck) -> str | None:
    """Probe the server at ``host`` (bare, even IPv6) and ``port`` once, as ``check`` says:
    None if it is healthy, else why not in a few lowercase words. Never takes longer than
    ``check.deadline``; a failure is an answer, never an exception."""
    loop = asyncio.get_running_loop()
    end = loop.time() + check.deadline
    address = join_address(host, port)
    try:
        async with asyncio.timeout_at(end):
            if not check.websocket:
                return await _get(host, port, address, check.uri)
            connection: ClientConnection = await _Connect(
                f"ws://{address}{check.uri}", compression=None, proxy=None,
                user_agent_header=USER_AGENT, open_timeout=check.deadline,
                close_timeout=check.deadline, ping_interval=None)
    except TimeoutError:  # first: in 3.11 it is also an OSError
        return f"timed out after {check.deadline:g}s"
    except InvalidStatus as exc:
        return f"status {exc.response.status_code}"
    except InvalidMessage as exc:
        if isinstance(exc.__cause__, EOFError):
            return "connection closed"
        return _clip(f"invalid handshake: {exc.__cause__ or exc}")
    except InvalidHandshake as exc:
        return _clip(f"invalid handshake: {exc}")
    except OSError as exc:
        return _os_reason(exc)
    # A correct 101 is the answer; the Close is a courtesy, with whatever time is left
    # (websockets drops the connection when that runs out).
    connection.close_timeout = max(0.0, end - loop.time())
    try:
        await connection.close(1000)
    except asyncio.CancelledError:  # the checker is stopping: no socket left behind
        connection.transport.abort()
        raise
    return None


class _Head:
    """httptools callbacks: note when the response head is complete."""

    def __init__(self) -> None:
        self.done = False

    def on_headers_complete(self) -> None:
        self.done = True


async def _get(host: str, port: int, address: str, uri: str) -> str | None:
    """A plain HTTP GET: healthy on 2xx or 3xx (a redirect is an answer, as in nginx)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {uri} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n"
                     f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n".encode("latin-1"))
        head = _Head()
        parser = httptools.HttpResponseParser(head)
        received = 0
        while not head.done:
            data = await reader.read(16 << 10)
            if not data:
                return "connection closed"
            received += len(data)
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                pass  # a 101: the head is complete, and unhealthy below
            except httptools.HttpParserError:
                return "invalid response"
            if not head.done and received > _HEAD_LIMIT:
                return "invalid response"
        status: int = parser.get_status_code()
    finally:
        writer.close()
    return None if 200 <= status < 400 else f"status {status}"


def _os_reason(exc: OSError) -> str:
    """The system's words for a socket error ("connection refused"), not asyncio's
    "Connect call failed ('127.0.0.1', 8011)"."""
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return _clip((exc.strerror or str(exc) or type(exc).__name__).lower())


def _clip(reason: str, limit: int = 100) -> str:
    """A reason short enough for a log line and a status page, whatever a server sent."""
    return reason if len(reason) <= limit else reason[:limit - 3] + "..."


@dataclass(slots=True)
class _Probing:
    check: HealthCheck
    health: ServerHealth
    task: asyncio.Task[None]


class Checker:
    """Probes every server of every group with a ``health_check``, once per interval each.

    ``on_change(group, address, health)`` is called whenever a server's ``healthy`` flips;
    :meth:`states` has every probed server's health at any time.
    """

    def __init__(self, on_change: Callable[[str, str, ServerHealth], None]) -> None:
        self._on_change = on_change
        self._probing: dict[tuple[str, str], _Probing] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def configure(self, config: ProxyConfig) -> None:
        """Probe what ``config`` asks for (call it from the running loop, at start and on
        each reload). A server whose group kept the same health check keeps its state and
        its schedule, so a reload does not reset the counts of a failing server; one whose
        check changed starts afresh, since the old counts measured something else."""
        wanted: dict[tuple[str, str], tuple[HealthCheck, ServerConfig]] = {}
        for group in config.upstreams.values():
            if group.health_check is not None:
                for server in group.servers:
                    wanted.setdefault((group.name, server.address),
                                      (group.health_check, server))
        for key, probing in list(self._probing.items()):
            if key not in wanted or wanted[key][0] != probing.check:
                self._stop(self._probing.pop(key).task)
        new = 0
        for key, (check, server) in wanted.items():
            if key in self._probing:
                continue
            health = ServerHealth()
            delay = (new * STAGGER) % check.interval
            new += 1
            task = asyncio.get_running_loop().create_task(
                self._run(key[0], server, check, health, delay),
                name=f"health check {key[1]} in {key[0]}")
            self._probing[key] = _Probing(check, health, task)

    def states(self) -> dict[tuple[str, str], ServerHealth]:
        """(group, address) -> health of every server being probed (the live objects)."""
        return {key: probing.health for key, probing in self._probing.items()}

    async def close(self) -> None:
        """Stop every probe and wait until they have stopped."""
        for probing in self._probing.values():
            self._stop(probing.task)
        self._probing.clear()
        tasks = list(self._stopping)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self, task: asyncio.Task[None]) -> None:
        """Cancel a probe loop; :meth:`close` waits for the ones still ending."""
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _run(self, group: str, server: ServerConfig, check: HealthCheck,
                   health: ServerHealth, delay: float) -> None:
        """Probe one server for ever: starts ``check.interval`` apart, so the rate does not
        depend on how long a server takes to answer; one that overruns its turn is probed
        again at once, and the schedule goes on from there."""
        loop = asyncio.get_running_loop()
        start = loop.time() + delay
        while True:
            await asyncio.sleep(max(0.0, start - loop.time()))
            try:
                reason = await probe(server.host, server.port, check)
            except Exception as exc:  # a bug, not a verdict on the server: log it, go on
                log.exception("health check of upstream server %s in group \"%s\" failed",
                              server.address, group)
                reason = _clip(str(exc) or type(exc).__name__)
            if health.record(reason is None, reason or "ok", check, time.time()):
                self._flipped(group, server.address, health)
            start = max(start + check.interval, loop.time())

    def _flipped(self, group: str, address: str, health: ServerHealth) -> None:
        if health.healthy:
            log.warning('upstream server %s in group "%s" is healthy again '
                        "(%d passed health checks)", address, group, health.passes_in_row)
        else:
            log.warning('upstream server %s in group "%s" is now unhealthy: %s '
                        "(%d failed health checks)", address, group, health.detail,
                        health.fails_in_row)
        try:
            self._on_change(group, address, health)
        except Exception:  # the listener's bug must not stop the probes
            log.exception("health check listener failed for upstream server %s in group "
                          '"%s"', address, group)
