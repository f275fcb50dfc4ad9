"""``--plot``: the latency distribution and throughput over time, as one PNG.

matplotlib is optional (``pip install 'wsgate[plot]'``): only this flag needs it.
"""

from __future__ import annotations

from wsgate.bench.stats import TICK, Summary
from wsgate.errors import UsageError


def check_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'wsgate[plot]'") from None


def draw(summary: Summary, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, rate) = plt.subplots(1, 2, figsize=(11, 4))
    figure.suptitle(title)
    if summary.histogram:
        bounds = [bound for bound, _count in summary.histogram]
        counts = [count for _bound, count in summary.histogram]
        latency.bar(range(len(bounds)), counts, width=1.0, color="#3b7dd8")
        ticks = list(range(0, len(bounds), max(1, len(bounds) // 8)))
        latency.set_xticks(ticks, [f"{bounds[i]:,}" for i in ticks], rotation=45)
        for name in ("p50", "p99"):
            position = next((i for i, bound in enumerate(bounds)
                             if bound >= summary.latency_us[name]), len(bounds) - 1)
            latency.axvline(position, color="#d83b3b", linestyle="--")
            latency.text(position, max(counts), f" {name}", color="#d83b3b", va="top")
    latency.set_xlabel("round trip (µs, upper bound of bucket)")
    latency.set_ylabel("messages")
    latency.set_title("latency distribution")
    seconds = [TICK * (i + 1) for i in range(len(summary.timeline))]
    rate.plot(seconds, [count / TICK for count in summary.timeline], color="#3b7dd8")
    rate.set_xlabel("seconds")
    rate.set_ylabel("messages/s")
    rate.set_ylim(bottom=0)
    rate.set_title("throughput over time")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
