"""Pure: what each load process is asked to do, and how the load is shared among them.

Apart from :mod:`wsgate.bench.load` so that reading the flags (and ``wsgate bench --help``)
does not load picows: only the processes that make the load need it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MODES = ("throughput", "storm", "idle")


@dataclass(frozen=True)
class Plan:
    """One process's share of the load."""

    url: str
    mode: str
    connections: int
    size: int
    depth: int
    seconds: float
    warmup: float
    hold: float
    concurrency: int
    binary: bool
    connect_timeout: float
    ca: str | None = None
    """``--ca``: the CA (PEM) a wss:// server's certificate must chain to; else the system's."""
    check: bool = True
    """False (``-n``): the server's certificate is not checked."""


def share(whole: Plan, processes: int) -> list[Plan]:
    """``whole`` split over ``processes``: the connections as evenly as they go, and no
    process without any."""
    each, extra = divmod(whole.connections, processes)
    counts = [each + (1 if index < extra else 0) for index in range(processes)]
    return [dataclasses.replace(whole, connections=count) for count in counts if count > 0]
