"""The sum over all workers of what they count (:mod:`~wsgate.proxy.stats`), in the monitor.

Each worker sends its whole cumulative counts every second; the latest snapshot of each
is kept, and when a worker exits its last counts are folded into a base, so a total
never goes back (Prometheus would read a drop as a restart). Open tunnels are only the
live workers'. Rates are the change between two ticks. Pure: times are passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from wsgate.proxy.stats import HISTOGRAMS, RECENT

Key = tuple[str, str]


@dataclass
class Counts:
    """Counters summed over workers (see :meth:`WorkerStats.snapshot` for their meaning)."""

    requests: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    closed: dict[tuple[str, str, str], int] = field(default_factory=dict)
    bytes: dict[Key, list[int]] = field(default_factory=dict)
    open: dict[Key, int] = field(default_factory=dict)
    histograms: dict[str, list[float]] = field(
        default_factory=lambda: {name: [0.0] * (len(bounds) + 2)
                                 for name, bounds in HISTOGRAMS.items()})
    """name -> bucket counts (+Inf last), then the sum."""

    def add(self, snapshot: dict[str, Any], with_open: bool = True) -> None:
        for status, count in snapshot["requests"].items():
            self.requests[status] = self.requests.get(status, 0) + count
        for cause, count in snapshot["rejections"].items():
            self.rejections[cause] = self.rejections.get(cause, 0) + count
        for group, server, reason, count in snapshot["closed"]:
            key3 = (group, server, reason)
            self.closed[key3] = self.closed.get(key3, 0) + count
        for group, server, to_upstream, to_client in snapshot["bytes"]:
            counts = self.bytes.setdefault((group, server), [0, 0])
            counts[0] += to_upstream
            counts[1] += to_client
        if with_open:
            for group, server, count in snapshot["open"]:
                self.open[(group, server)] = self.open.get((group, server), 0) + count
        for name, histogram in snapshot["histograms"].items():
            mine = self.histograms.get(name)
            if mine is None or len(mine) != len(histogram["counts"]) + 1:
                continue  # another version's buckets (an upgrade): not comparable
            for index, count in enumerate(histogram["counts"]):
                mine[index] += count
            mine[-1] += histogram["sum"]

    def export(self) -> dict[str, Any]:
        """These counts in a snapshot's form (to hand them to another monitor)."""
        return {
            "requests": dict(self.requests), "rejections": dict(self.rejections),
            "closed": [[*key, count] for key, count in self.closed.items()],
            "bytes": [[*key, *counts] for key, counts in self.bytes.items()],
            "open": [],
            "histograms": {name: {"counts": values[:-1], "sum": values[-1]}
                           for name, values in self.histograms.items()},
        }

    @property
    def tunnels_open(self) -> int:
        return sum(self.open.values())

    @property
    def tunnels_closed(self) -> int:
        return sum(self.closed.values())

    def byte_totals(self) -> tuple[int, int]:
        return (sum(counts[0] for counts in self.bytes.values()),
                sum(counts[1] for counts in self.bytes.values()))


def _rate_basis(counts: Counts) -> dict[str, float]:
    to_upstream, to_client = counts.byte_totals()
    return {
        "bytes_to_upstream": to_upstream,
        "bytes_to_client": to_client,
        "requests": sum(counts.requests.values()),
        "tunnels_opened": counts.requests.get("101", 0),
        "tunnels_closed": counts.tunnels_closed,
    }


class Totals:
    """Every worker's latest counts, what exited workers counted, and the rates."""

    def __init__(self) -> None:
        self.live: dict[int, dict[str, Any]] = {}
        self.base = Counts()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        """The last closes, oldest first."""
        self.reloads = {"success": 0, "failure": 0}
        self.rates: dict[str, float] = {name: 0.0 for name in _rate_basis(Counts())}
        self._last: tuple[float, dict[str, float]] | None = None

    def update(self, snapshot: dict[str, Any]) -> None:
        self.live[snapshot["pid"]] = snapshot
        self.recent.extend(snapshot["recent"])

    def gone(self, pid: int) -> None:
        """A worker exited: keep what it counted, not its open tunnels."""
        snapshot = self.live.pop(pid, None)
        if snapshot is not None:
            self.base.add(snapshot, with_open=False)

    def sum(self) -> Counts:
        base = self.base
        total = Counts(
            requests=dict(base.requests), rejections=dict(base.rejections),
            closed=dict(base.closed),
            bytes={key: list(counts) for key, counts in base.bytes.items()},
            histograms={name: list(values) for name, values in base.histograms.items()})
        for snapshot in self.live.values():
            total.add(snapshot)
        return total

    def tick(self, now: float) -> Counts:
        """The sum now, and the rates since the last tick."""
        total = self.sum()
        basis = _rate_basis(total)
        if self._last is not None:
            then, before = self._last
            elapsed = now - then
            if elapsed > 0:
                self.rates = {name: max(0.0, (value - before[name]) / elapsed)
                              for name, value in basis.items()}
        self._last = (now, basis)
        return total
