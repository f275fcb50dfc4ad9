"""What one worker counts for the metrics, and the snapshot it sends the monitor.

Nothing here runs per read: a tunnel already counts its bytes for the access log, and
those counts are read when a snapshot is taken (every :data:`PUSH_INTERVAL`) or when the
tunnel closes. Requests are counted once each, when their access-log line is due (a
101 when it is sent). Every count is cumulative since the worker started; the monitor
(:mod:`~wsgate.proxy.totals`) adds the workers up, and keeps what a worker that exited
had counted.
"""

from __future__ import annotations

import bisect
import os
import resource
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from wsgate.proxy import handshake
from wsgate.proxy.exchange import Exchange
from wsgate.proxy.tunnel import Tunnel, Why

PUSH_INTERVAL = 1.0
"""How often a worker sends its snapshot: the page's refresh, the metrics' staleness."""
RECENT = 50
"""Closes kept for the page (per worker between two snapshots, and in the monitor)."""

CONNECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
"""Upstream connect and header times, in seconds."""
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0,
                    24 * 3600.0)
"""How long tunnels live, in seconds: from a page view to a day-long session."""
HISTOGRAMS = {
    "upstream_connect_seconds": CONNECT_BUCKETS,
    "upstream_header_seconds": CONNECT_BUCKETS,
    "tunnel_duration_seconds": DURATION_BUCKETS,
}


class Histogram:
    """Counts per bucket (``le`` each bound, then +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def export(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.total}


def rejection_cause(exchange: Exchange) -> str:
    """Why a WebSocket handshake got no tunnel, in one word for a label."""
    if exchange.cause:
        return exchange.cause
    status = exchange.status
    if status == 404:
        return "no_location"
    if status == 408:
        return "client_timeout"
    if status == 499:
        return "client_gone"
    return "bad_handshake" if status < 500 else "proxy_error"


class WorkerStats:
    """One worker's counters (see the module's docstring)."""

    __slots__ = ("bytes", "closed", "histograms", "recent", "rejections", "requests")

    def __init__(self) -> None:
        self.requests: dict[int, int] = {}
        self.rejections: dict[str, int] = {}
        self.closed: dict[tuple[str, str, str], int] = {}
        self.bytes: dict[tuple[str, str], list[int]] = {}
        """Bytes of tunnels closed here, per (group, server): [to upstream, to client]."""
        self.histograms = {name: Histogram(bounds) for name, bounds in HISTOGRAMS.items()}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        """Closes since the last snapshot."""

    def response(self, exchange: Exchange) -> None:
        """The client got (or, as 499, did not get) ``exchange``'s answer."""
        status = exchange.status
        self.requests[status] = self.requests.get(status, 0) + 1
        if exchange.connect_time is not None:
            self.histograms["upstream_connect_seconds"].observe(exchange.connect_time)
        if exchange.header_time is not None:
            self.histograms["upstream_header_seconds"].observe(exchange.header_time)
        if status != 101 and (exchange.upgrade_key is not None or (
                status >= 400 and handshake.wants_upgrade(exchange.head))):
            cause = rejection_cause(exchange)
            self.rejections[cause] = self.rejections.get(cause, 0) + 1

    def tunnel_closed(self, tunnel: Tunnel, group: str, server: str,
                      counted: tuple[int, int], duration: float, client: str) -> None:
        """A tunnel closed; ``counted``: its bytes another worker counted before it came
        here (see :class:`~wsgate.proxy.worker.TunnelRecord`)."""
        reason = (tunnel.reason or Why.ERROR).value
        key = (group, server, reason)
        self.closed[key] = self.closed.get(key, 0) + 1
        self.moved(tunnel, group, server, counted)
        to_upstream, to_client = tunnel.client.received, tunnel.upstream.received
        self.histograms["tunnel_duration_seconds"].observe(duration)
        self.recent.append({
            "time": time.time(), "upstream": group, "server": server, "reason": reason,
            "duration": round(duration, 3), "bytes_to_upstream": to_upstream,
            "bytes_to_client": to_client, "client": client})

    def moved(self, tunnel: Tunnel, group: str, server: str,
              counted: tuple[int, int]) -> None:
        """Count for good the bytes of a tunnel that closes or leaves this worker (less
        what another worker counted before it came)."""
        counts = self.bytes.setdefault((group, server), [0, 0])
        counts[0] += tunnel.client.received - counted[0]
        counts[1] += tunnel.upstream.received - counted[1]

    def snapshot(self, tunnels: Iterable[tuple[Tunnel, str, str, tuple[int, int]]]
                 ) -> dict[str, Any]:
        """Everything counted so far, with the open tunnels' bytes as they stand now;
        the closes listed are those not yet sent (:meth:`sent`). ``tunnels``: each open
        tunnel with its group, its server and the bytes counted elsewhere."""
        open_counts: dict[tuple[str, str], int] = {}
        moved = {key: list(counts) for key, counts in self.bytes.items()}
        for tunnel, group, server, counted in tunnels:
            key = (group, server)
            open_counts[key] = open_counts.get(key, 0) + 1
            counts = moved.get(key)
            if counts is None:
                counts = moved[key] = [0, 0]
            counts[0] += tunnel.client.received - counted[0]
            counts[1] += tunnel.upstream.received - counted[1]
        recent = list(self.recent)
        cpu, rss = usage()
        return {
            "pid": os.getpid(),
            "requests": {str(status): count for status, count in self.requests.items()},
            "rejections": dict(self.rejections),
            "closed": [[*key, count] for key, count in self.closed.items()],
            "bytes": [[*key, *counts] for key, counts in moved.items()],
            "open": [[*key, count] for key, count in open_counts.items()],
            "histograms": {name: h.export() for name, h in self.histograms.items()},
            "recent": recent,
            "cpu_seconds": cpu,
            "rss_bytes": rss,
        }

    def sent(self, snapshot: dict[str, Any]) -> None:
        """The monitor has ``snapshot``: its closes need not be sent again."""
        for _ in snapshot["recent"]:
            self.recent.popleft()


def usage(pid: int | None = None) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of a process (this one by default),
    from /proc where there is one; (0.0, 0) for another process without it."""
    where = f"/proc/{pid or 'self'}"
    try:
        with open(f"{where}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        with open(f"{where}/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        if pid is not None:
            return 0.0, 0
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime, own.ru_maxrss * 1024
    ticks = os.sysconf("SC_CLK_TCK")
    # After the ")" that ends the command name: state is field 3, utime 14 and stime 15.
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return cpu, pages * os.sysconf("SC_PAGE_SIZE")
