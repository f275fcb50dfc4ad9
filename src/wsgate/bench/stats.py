"""Pure: merging what the load processes measured, and reporting it."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

TICK = 0.1
"""Seconds per slice of the throughput timeline, and between progress updates."""


@dataclass
class WorkerResult:
    """What one load process measured (sent back to the parent through a queue)."""

    messages: int = 0
    errors: int = 0
    opened: int = 0
    failed: int = 0
    dropped: int = 0
    seconds: float = 0.0
    rtt_us: array[int] = field(default_factory=lambda: array("Q"))
    timeline: list[int] = field(default_factory=list)
    """Messages answered in each 100 ms slice of the measured window."""
    first_error: str = ""
    window: tuple[float, float] = (0.0, 0.0)
    """Wall-clock start and end of the measured window (to match CPU samples to it)."""


@dataclass
class Summary:
    mode: str
    messages: int
    errors: int
    opened: int
    failed: int
    dropped: int
    seconds: float
    rate: float
    latency_us: dict[str, int]
    timeline: list[int]
    first_error: str
    histogram: list[tuple[int, int]] = field(default_factory=list)
    """(upper bound in µs, count) on log-spaced buckets, four per power of two."""
    window: tuple[float, float] = (0.0, 0.0)


def histogram(ordered: Sequence[int]) -> list[tuple[int, int]]:
    """Counts of sorted round trips on log-spaced buckets (four per doubling)."""
    buckets: list[tuple[int, int]] = []
    bound = 1
    count = 0
    index = 0
    step = 0
    while index < len(ordered):
        if ordered[index] <= bound:
            count += 1
            index += 1
            continue
        if count:
            buckets.append((bound, count))
        count = 0
        step += 1
        bound = max(bound + 1, int(2 ** (step / 4)))
    if count:
        buckets.append((bound, count))
    return buckets


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an already sorted sequence (0 for none)."""
    if not ordered:
        return 0
    rank = max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.5) - 1))
    return int(ordered[rank])


def summarize(mode: str, results: Sequence[WorkerResult]) -> Summary:
    """One summary from every process: sums, the slowest window, merged latencies."""
    rtts = sorted(value for result in results for value in result.rtt_us)
    seconds = max((result.seconds for result in results), default=0.0)
    messages = sum(result.messages for result in results)
    opened = sum(result.opened for result in results)
    slices = max((len(result.timeline) for result in results), default=0)
    timeline = [sum(r.timeline[i] for r in results if i < len(r.timeline)) for i in range(slices)]
    counted = opened if mode in ("storm", "idle") else messages
    return Summary(
        mode=mode,
        messages=messages,
        errors=sum(result.errors for result in results),
        opened=opened,
        failed=sum(result.failed for result in results),
        dropped=sum(result.dropped for result in results),
        seconds=seconds,
        rate=counted / seconds if seconds > 0 else 0.0,
        latency_us={
            "p50": percentile(rtts, 0.50),
            "p90": percentile(rtts, 0.90),
            "p99": percentile(rtts, 0.99),
            "max": rtts[-1] if rtts else 0,
        },
        timeline=timeline,
        first_error=next((r.first_error for r in results if r.first_error
                          and "BrokenBarrier" not in r.first_error),
                         next((r.first_error for r in results if r.first_error), "")),
        histogram=histogram(rtts),
        window=(min((r.window[0] for r in results if r.window[0]), default=0.0),
                max((r.window[1] for r in results), default=0.0)),
    )


def report(summary: Summary, heading: str) -> str:
    """The human-readable report."""
    lines = [heading]
    if summary.mode == "throughput":
        lines.append(f"messages     {summary.messages:>12,}   {summary.rate:>12,.0f} msg/s")
        latency = summary.latency_us
        lines.append(f"round trip   p50 {latency['p50']:,} µs   p90 {latency['p90']:,} µs   "
                     f"p99 {latency['p99']:,} µs   max {latency['max']:,} µs")
    elif summary.mode == "storm":
        lines.append(f"handshakes   {summary.opened:>12,}   {summary.rate:>12,.0f} /s")
        lines.append(f"handshake    p50 {summary.latency_us['p50']:,} µs   "
                     f"p99 {summary.latency_us['p99']:,} µs")
    else:
        lines.append(f"held open    {summary.opened:>12,}   "
                     f"dropped while held: {summary.dropped:,}")
    lines.append(f"errors       {summary.errors + summary.failed:>12,}"
                 + (f"   first: {summary.first_error}" if summary.first_error else ""))
    return "\n".join(lines)
