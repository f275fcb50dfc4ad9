"""What the status listener shows, from one :class:`View`: the Prometheus exposition
(``/metrics``, through prometheus_client) and the JSON document (``/status``, ``/live``).

Both are built from the same facts, so the page and the metrics never disagree. Every
configured server is listed, with zeros where it has nothing yet, so a dashboard sees a
new server at once; a removed server is listed while tunnels to it are still open.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from wsgate import __version__
from wsgate.proxy import marks
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.health import ServerHealth
from wsgate.proxy.stats import HISTOGRAMS
from wsgate.proxy.totals import Counts, Key


@dataclass
class Process:
    role: str
    """master, worker or monitor."""
    pid: int
    cpu_seconds: float
    rss_bytes: int
    open: int = 0


@dataclass
class View:
    """The facts at one tick."""

    config: ProxyConfig
    counts: Counts
    marks: dict[str, dict[str, str]]
    health: Mapping[Key, ServerHealth]
    admin: Mapping[Key, str]
    rates: dict[str, float]
    recent: list[dict[str, Any]]
    reloads: dict[str, int]
    processes: list[Process]
    listeners: list[str]
    time: float
    uptime: float
    probes: Mapping[Key, tuple[int, int]] = field(default_factory=dict)

    def servers(self) -> Iterator[tuple[str, str, bool]]:
        """(group, address, configured down) of every server shown: the configured ones,
        then removed ones that still have tunnels."""
        seen: set[Key] = set()
        for name, group in self.config.upstreams.items():
            for server in group.servers:
                if (name, server.address) not in seen:
                    seen.add((name, server.address))
                    yield name, server.address, server.down
        for key in (*self.counts.open, *self.counts.bytes):
            if key not in seen:  # removed by a reload; its counts stay
                seen.add(key)
                yield key[0], key[1], True

    def mark(self, group: str, address: str) -> str | None:
        return self.marks.get(group, {}).get(address)


# -- /metrics ---------------------------------------------------------------------------


class _Collector:
    def __init__(self, view: View) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view, counts = self.view, self.view.counts
        info = GaugeMetricFamily("wsgate_build_info", "wsgate's version (always 1)",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        opened = GaugeMetricFamily("wsgate_tunnels_open", "WebSockets open now",
                                   labels=["upstream", "server"])
        up = GaugeMetricFamily(
            "wsgate_upstream_server_up",
            "1 if the server takes new connections (not down, drained or unhealthy)",
            labels=["upstream", "server"])
        moved = CounterMetricFamily("wsgate_tunnel_bytes", "Bytes relayed by WebSockets, "
                                    "open ones included", labels=["upstream", "server",
                                                                  "direction"])
        for group, address, down in view.servers():
            opened.add_metric([group, address], counts.open.get((group, address), 0))
            selectable = not down and view.mark(group, address) is None
            up.add_metric([group, address], 1 if selectable else 0)
            to_upstream, to_client = counts.bytes.get((group, address), (0, 0))
            moved.add_metric([group, address, "to_upstream"], to_upstream)
            moved.add_metric([group, address, "to_client"], to_client)
        yield from (opened, up, moved)
        closed = CounterMetricFamily("wsgate_tunnels_closed", "WebSockets closed, by why",
                                     labels=["upstream", "server", "reason"])
        for (group, address, reason), count in sorted(counts.closed.items()):
            closed.add_metric([group, address, reason], count)
        yield closed
        yield _by_label("wsgate_http_requests", "Responses the clients got, 101 included",
                        "status", counts.requests)
        yield _by_label("wsgate_handshake_rejections",
                        "WebSocket handshakes that got no tunnel, by cause", "cause",
                        counts.rejections)
        yield _by_label("wsgate_reloads", "Configuration reloads", "result", view.reloads)
        for name, bounds in HISTOGRAMS.items():
            values = counts.histograms[name]
            buckets: list[tuple[str, float]] = []
            running = 0.0
            for bound, value in zip((*map(str, bounds), "+Inf"), values[:-1], strict=True):
                running += value
                buckets.append((bound, running))
            histogram = HistogramMetricFamily(f"wsgate_{name}", _HELP[name],
                                              labels=[])
            histogram.add_metric([], buckets, values[-1])
            yield histogram
        checks = CounterMetricFamily("wsgate_health_checks", "Active health check probes",
                                     labels=["upstream", "server", "result"])
        for (group, address), (passed, failed) in sorted(view.probes.items()):
            checks.add_metric([group, address, "pass"], passed)
            checks.add_metric([group, address, "fail"], failed)
        yield checks
        cpu = CounterMetricFamily("wsgate_process_cpu_seconds", "CPU time of each process",
                                  labels=["role", "pid"])
        rss = GaugeMetricFamily("wsgate_process_resident_memory_bytes",
                                "Resident memory of each process", labels=["role", "pid"])
        for process in view.processes:
            cpu.add_metric([process.role, str(process.pid)], process.cpu_seconds)
            rss.add_metric([process.role, str(process.pid)], process.rss_bytes)
        yield from (cpu, rss)


_HELP = {
    "upstream_connect_seconds": "Time to connect to an upstream server",
    "upstream_header_seconds": "Time from the request to the upstream's response head",
    "tunnel_duration_seconds": "How long WebSockets lived",
}


def _by_label(name: str, documentation: str, label: str,
              values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family


def metrics(view: View) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``view``, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(view))
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- /status ----------------------------------------------------------------------------


def document(view: View) -> dict[str, Any]:
    """The JSON document of ``/status`` and of each ``/live`` update."""
    counts = view.counts
    upstreams: dict[str, dict[str, Any]] = {}
    for group, address, down in view.servers():
        config = view.config.upstreams.get(group)
        entry = upstreams.get(group)
        if entry is None:
            check = config.health_check if config is not None else None
            entry = upstreams[group] = {
                "name": group,
                "balance": config.balance if config is not None else "-",
                "health_check": None if check is None else {
                    "interval": check.interval, "fails": check.fails,
                    "passes": check.passes, "uri": check.uri, "websocket": check.websocket},
                "servers": [],
            }
        mark = view.mark(group, address)
        to_upstream, to_client = counts.bytes.get((group, address), (0, 0))
        entry["servers"].append({
            "address": address,
            "state": marks.state(down, mark),
            "admin": view.admin.get((group, address)),
            "configured_down": down,
            "health": marks.describe_health(view.health.get((group, address))),
            "open": counts.open.get((group, address), 0),
            "bytes_to_upstream": to_upstream,
            "bytes_to_client": to_client,
            "closed": {reason: count for (g, a, reason), count in counts.closed.items()
                       if g == group and a == address},
        })
    return {
        "version": __version__,
        "time": view.time,
        "uptime": round(view.uptime, 1),
        "listeners": view.listeners,
        "workers": [{"pid": p.pid, "open": p.open, "cpu_seconds": round(p.cpu_seconds, 2),
                     "rss_bytes": p.rss_bytes}
                    for p in view.processes if p.role == "worker"],
        "tunnels": {"open": counts.tunnels_open, "closed": counts.tunnels_closed},
        "rates": {name: round(value, 1) for name, value in view.rates.items()},
        "requests": dict(sorted(counts.requests.items())),
        "rejections": dict(sorted(counts.rejections.items())),
        "reloads": dict(view.reloads),
        "upstreams": list(upstreams.values()),
        "recent_closes": list(reversed(view.recent)),
    }
