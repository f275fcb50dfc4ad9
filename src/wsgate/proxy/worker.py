"""What the connections of one worker process share: the configuration in force, its
routes, the upstream keep-alive pool, the access log, the open connections, and the open
tunnels with the server each one counts against, and the counters for the metrics.

Connections read the configuration from here at each request, so swapping it
(:meth:`Worker.apply`, a reload) reaches every new request and no request mid-way. Open
tunnels stay: one whose server is still configured is counted against the new
configuration's; one whose server is gone is closed with Close 1001, the lot spread evenly
over the group's ``drain_timeout`` so their clients do not reconnect all at once.

The monitor (:mod:`~wsgate.proxy.monitor`) may take servers out of selection at run time
(:meth:`Worker.steer`): failed health checks and an admin's "down" only stop new
connections; an admin's "drain" also closes the server's tunnels, spread the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

from wsgate.proxy.accesslog import AccessLog, Entry
from wsgate.proxy.config import DRAIN_TIMEOUT, ProxyConfig
from wsgate.proxy.limits import Limits
from wsgate.proxy.pool import Pool
from wsgate.proxy.routes import Routes, Site
from wsgate.proxy.servers import ServerState
from wsgate.proxy.stats import WorkerStats
from wsgate.proxy.tunnel import State, Tunnel, Why
from wsgate.proxy.upstreams import UpstreamGroup

DRAIN_REASON = "upstream server removed"
DEFAULT_DRAIN = DRAIN_TIMEOUT
"""``drain_timeout`` where no group says otherwise (the directive's own default)."""


class Open(Protocol):
    """An open client connection, as shutdown sees it."""

    def close_idle(self, grace_over: bool) -> None: ...

    def abort(self) -> None: ...


@dataclass(slots=True)
class TunnelRecord:
    """What a tunnel is, beyond its bytes: the server it counts against, its access-log
    line (written at its close), when it began (monotonic, the same clock in every
    process), and whether its client speaks TLS (such a tunnel cannot change process)."""

    group: UpstreamGroup
    server: ServerState
    entry: Entry
    started: float
    tls: bool
    read_timeout: float
    send_timeout: float
    counted: tuple[int, int] = (0, 0)
    """Bytes each way (to upstream, to client) that the worker it came from has counted
    already (a tunnel handed over): the metrics count only the rest here."""


class Worker:
    """What the connections of one worker share (see the module's docstring)."""

    __slots__ = ("access_log", "config", "draining", "drains", "limits", "marks", "open",
                 "pool", "routes", "stats", "tunnels")

    def __init__(self, config: ProxyConfig, access_log: AccessLog) -> None:
        self.config = config
        self.routes = Routes(config)
        self.pool = Pool()
        self.access_log = access_log
        self.open: set[Open] = set()
        self.tunnels: dict[Tunnel, TunnelRecord] = {}
        self.drains: dict[Tunnel, asyncio.TimerHandle] = {}
        """The Close still to come of each tunnel being drained (a reload may call it off)."""
        self.draining = False
        self.stats = WorkerStats()
        self.limits = Limits()
        """Open files, socket memory, local ports: this worker's own (see limits)."""
        self.marks: dict[str, dict[str, str]] = {}
        """The monitor's: group -> server address -> "down", "drain" or "unhealthy"."""

    def site(self, address: str) -> Site:
        """The servers of a listening address; a connection accepted before a reload that
        dropped its address gets the first address's."""
        sites = self.routes.sites
        return sites.get(address) or next(iter(sites.values()))

    def add_tunnel(self, tunnel: Tunnel, record: TunnelRecord) -> None:
        """Count ``tunnel`` as open; its server must already count it (acquired). One to a
        server being drained (its handshake was under way when the drain began) goes too."""
        self.tunnels[tunnel] = record
        if self.marks.get(record.group.name, {}).get(record.server.address) == "drain":
            self.drain([tunnel], 0.0)

    def tunnel_closed(self, tunnel: Tunnel) -> None:
        """One access-log line per WebSocket, at its close, with the bytes each way."""
        self._call_off_drain(tunnel)
        record = self.tunnels.pop(tunnel, None)
        if record is None:
            return
        record.group.release(record.server)
        entry = record.entry
        entry.body_bytes_sent = tunnel.upstream.received
        entry.bytes_received = tunnel.client.received
        entry.request_time = entry.upstream_response_time = time.monotonic() - record.started
        self.stats.tunnel_closed(tunnel, record.group.name, record.server.address,
                                 record.counted, entry.request_time, entry.remote_addr)
        self.access_log.write(entry)

    def forget(self, tunnel: Tunnel) -> TunnelRecord:
        """Stop counting a tunnel that moves to another process (no log line here)."""
        self._call_off_drain(tunnel)
        record = self.tunnels.pop(tunnel)
        record.group.release(record.server)
        self.stats.moved(tunnel, record.group.name, record.server.address, record.counted)
        return record

    def _call_off_drain(self, tunnel: Tunnel) -> None:
        timer = self.drains.pop(tunnel, None)
        if timer is not None:
            timer.cancel()

    def drain(self, tunnels: list[Tunnel], period: float) -> None:
        """Close ``tunnels`` spread over ``period`` (:func:`drain`), unless a later reload
        brings their server back. Those already on their way out keep their schedule."""
        tunnels = [tunnel for tunnel in tunnels
                   if tunnel not in self.drains and tunnel.state is not State.ENDING]
        self.drains.update(zip(tunnels, drain(tunnels, period), strict=True))

    def steer(self, marks: dict[str, dict[str, str]]) -> None:
        """The monitor's marks (see :attr:`marks`), whole: servers marked take no new
        connection; the tunnels of one marked "drain" close, spread over its group's
        ``drain_timeout``; those of one no longer marked stay."""
        self.marks = marks
        draining: dict[str, list[Tunnel]] = {}
        for group in self.routes.groups.values():
            marked = marks.get(group.name, {})
            for server in group.servers:
                server.down = server.config.down or server.address in marked
        for tunnel, record in self.tunnels.items():
            mark = marks.get(record.group.name, {}).get(record.server.address)
            if mark == "drain":
                draining.setdefault(record.group.name, []).append(tunnel)
            elif tunnel in self.drains and live_server(
                    self.routes, record.group.name, record.server.address) is not None:
                self._call_off_drain(tunnel)  # drained by an admin, who took it back
        for name, tunnels in draining.items():
            upstream = self.config.upstreams.get(name)
            self.drain(tunnels, DEFAULT_DRAIN if upstream is None else upstream.drain_timeout)

    def snapshot(self) -> dict[str, Any]:
        """The counters, for the monitor (:meth:`WorkerStats.snapshot`)."""
        return self.stats.snapshot(
            (tunnel, record.group.name, record.server.address, record.counted)
            for tunnel, record in self.tunnels.items())

    def drain_at(self, tunnel: Tunnel, delay: float) -> None:
        """Close one tunnel with Close 1001 after ``delay`` (its place in a spread)."""
        self._call_off_drain(tunnel)
        self.drains[tunnel] = asyncio.get_running_loop().call_later(
            delay, tunnel.going_away, 1001, DRAIN_REASON, Why.DRAIN)

    def apply(self, config: ProxyConfig, access_log: AccessLog) -> list[Tunnel]:
        """Swap in a new configuration (a reload); returns the tunnels whose server it
        removed, which are being drained."""
        routes, before = Routes(config), self.config
        removed: dict[str, list[Tunnel]] = {}
        for tunnel, record in self.tunnels.items():
            server = live_server(routes, record.group.name, record.server.address)
            if server is None:
                removed.setdefault(record.group.name, []).append(tunnel)
                continue
            self._call_off_drain(tunnel)  # its server is back
            record.group.release(record.server)
            group = routes.groups[record.group.name]
            group.acquire(server)
            record.group, record.server = group, server
        self.config, self.routes = config, routes
        self.access_log = access_log
        self.pool.close_all()  # idle keep-alive connections may be to removed servers
        drained = []
        for name, tunnels in removed.items():
            upstream = config.upstreams.get(name) or before.upstreams.get(name)
            self.drain(tunnels, DEFAULT_DRAIN if upstream is None else upstream.drain_timeout)
            drained.extend(tunnels)
        self.steer(self.marks)
        return drained


def live_server(routes: Routes, group_name: str, address: str) -> ServerState | None:
    """The server of that group and address in ``routes``, if it is there and not
    configured down (where a tunnel that outlives a configuration counts, after a reload or
    a move; the monitor's marks do not make it leave)."""
    group = routes.groups.get(group_name)
    if group is None:
        return None
    return next((server for server in group.servers
                 if server.address == address and not server.config.down), None)


def drain(tunnels: list[Tunnel], period: float) -> list[asyncio.TimerHandle]:
    """Close ``tunnels`` with Close 1001, evenly spread over ``period`` seconds, in order:
    the first now, the last at the end of the period."""
    loop = asyncio.get_running_loop()
    count = len(tunnels)
    return [loop.call_later(period * index / (count - 1) if count > 1 else 0.0,
                            tunnel.going_away, 1001, DRAIN_REASON, Why.DRAIN)
            for index, tunnel in enumerate(tunnels)]
