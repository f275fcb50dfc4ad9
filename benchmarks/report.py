"""How benchmarks/suite.py writes what it measured: the versions, the plots, and the tables
(every target side by side, the best peer in bold), between markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from measure import NAN, Cell, Memory, Storm

MARK_START = "<!-- results: written by benchmarks/suite.py -->"
MARK_END = "<!-- end of results -->"
OURS = "wsgate proxy"
PYTHON_TUNNEL = "wsgate proxy, Python tunnel"
"""wsgate without its compiled tunnel core (WSGATE_SPLICE=0), where the build has one."""
TLS_NOTE = ("wss:// from the load generator to each proxy (an ECDSA P-256 certificate made "
            "for the run, every peer's TLS defaults, the load generator resuming no session: "
            "every handshake is a full one); plain ws from the proxy to the same upstreams. "
            "No direct row: the upstream speaks no TLS.")

HANDSHAKE_NOTE = ("A full TLS handshake costs the load generator (Python's ssl) more CPU than "
                  "it costs a proxy, so on a small machine the rate is mostly the load "
                  "generator's: the proxy's CPU per handshake is the figure that compares the "
                  "proxies.")


@dataclass
class Results:
    """Everything measured: plain ws, and with ``--tls`` the same through TLS."""

    cells: dict[tuple[int, int, str], Cell]
    memory: dict[tuple[int, str], Memory]
    storm: dict[str, Storm]
    tls_cells: dict[tuple[int, int, str], Cell] = field(default_factory=dict)
    tls_storm: dict[str, Storm] = field(default_factory=dict)


def rounds(results: Results) -> dict[str, object]:
    """Every round's figures, not only the medians the tables show (for the spread), as
    JSON-ready data keyed "size/connections/target", "connections/target" or "target"."""
    def keyed(table: Mapping[Any, Any]) -> dict[str, object]:
        return {"/".join(map(str, key)) if isinstance(key, tuple) else str(key):
                dataclasses.asdict(value) for key, value in table.items()}
    return {"cells": keyed(results.cells), "memory": keyed(results.memory),
            "storm": keyed(results.storm), "tls_cells": keyed(results.tls_cells),
            "tls_storm": keyed(results.tls_storm)}


def versions(nginx: str, node_modules: Path | None) -> list[str]:
    def first_line(argv: list[str]) -> str:
        with contextlib.suppress(Exception):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    ws_version = "-"
    if node_modules is not None:
        with contextlib.suppress(OSError, ValueError):
            ws_version = json.loads((node_modules / "ws" / "package.json").read_text())["version"]
    package = importlib.metadata.version
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}",
        f"- nginx: {first_line([nginx, '-v'])}",
        f"- wsgate: Python {platform.python_version()}, uvloop {package('uvloop')}, "
        f"picows {package('picows')} (the echo upstream and the load generator)",
        f"- node: {first_line(['node', '--version'])}, ws {ws_version}",
    ]


def plot(cells: dict[tuple[int, int, str], Cell], names: list[str], sizes: list[int],
         connections: list[int], folder: Path, prefix: str = "") -> list[str]:
    """Bar charts into ``folder``, each file name after ``prefix`` (a report other than
    docs/benchmarks.md keeps its own charts)."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for metric, label, file in (("rates", "messages/s", "throughput.png"),
                                ("cpu", "proxy CPU s per 100k messages", "cpu.png"),
                                ("p99", "p99 round trip (µs)", "latency.png")):
        figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
        for column, size in enumerate(sizes):
            axis = axes[0][column]
            shown = [n for n in names if any((size, c, n) in cells and getattr(
                cells[(size, c, n)], metric) for c in connections)]
            width = 0.8 / max(1, len(shown))
            for index, name in enumerate(shown):
                values = [cells[(size, c, name)].median(metric) if (size, c, name) in cells
                          else 0 for c in connections]
                axis.bar([x + index * width for x in range(len(connections))], values, width,
                         label=name, color=f"C{names.index(name)}")  # one colour per target
            axis.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(connections))],
                            [f"{c} conn" for c in connections])
            axis.set_title(f"{size} B messages")
            axis.set_ylabel(label)
            axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(folder / (prefix + file), dpi=90)
        plt.close(figure)
        written.append(prefix + file)
    return written


def ratio(ours: float, theirs: float) -> str:
    return "-" if not theirs or theirs != theirs or ours != ours else f"{ours / theirs:.2f}x"


def best_peer(values: dict[str, float], peers: list[str], higher: bool) -> str | None:
    """The peer with the best figure (the highest, or the lowest unless ``higher``)."""
    known = [name for name in peers if values.get(name, NAN) == values.get(name, NAN)]
    return (max if higher else min)(known, key=values.__getitem__) if known else None


@dataclass
class Figure:
    """A figure in one cell: every target's median, and which way is better."""

    lead: list[str]
    values: dict[str, float]
    shown: Callable[[float], str]
    higher: bool

    def row(self, names: list[str], peers: list[str]) -> str:
        """Every target's figure side by side, the best peer's in bold."""
        best = best_peer(self.values, peers, self.higher)
        row = list(self.lead)
        for name in names:
            value = self.values.get(name, NAN)
            text = self.shown(value) if value == value else "-"
            row.append(f"**{text}**" if name == best else text)
        return "| " + " | ".join(row) + " |"

    def goal(self, peers: list[str]) -> str:
        """wsgate against the best peer (and nginx)."""
        best = best_peer(self.values, peers, self.higher)
        ours = self.values.get(OURS, NAN)
        target = f"{best} {self.shown(self.values[best])}" if best else "-"
        against = ratio(ours, self.values[best]) if best else "-"
        sign = "≥ 1" if self.higher else "≤ 1"
        return (f"| {', '.join(self.lead)} ({sign}) | {target} | {against} | "
                f"{ratio(ours, self.values.get('nginx', NAN))} |")


COUNT, ONE, THREE = "{:,.0f}".format, "{:.1f}".format, "{:.3f}".format
THROUGHPUT = (("rates", "msg/s", COUNT, True), ("p50", "p50 µs", COUNT, False),
              ("p99", "p99 µs", COUNT, False), ("cpu", "proxy CPU s/100k", THREE, False),
              ("machine", "machine CPU s/100k", THREE, False))
GOALS = ("rates", "p99", "cpu")


def throughput_figures(cells: dict[tuple[int, int, str], Cell], names: list[str],
                       sizes: list[int], connections: list[int]) -> list[tuple[str, Figure]]:
    """Every figure of every cell, each with the metric it shows."""
    figures = []
    for size in sizes:
        for conns in connections:
            for metric, label, shown, higher in THROUGHPUT:
                values = {name: cells[(size, conns, name)].median(metric) for name in names
                          if (size, conns, name) in cells}
                figures.append((metric, Figure([f"{size} B", f"C={conns}", label], values,
                                               shown, higher)))
    return figures


def memory_figures(memory: dict[tuple[int, str], Memory],
                   names: list[str]) -> list[tuple[str, Figure]]:
    figures = []
    for conns in sorted({c for c, _ in memory}):
        for metric, label, shown in (
                ("per_connection", "KiB per idle connection", ONE),
                ("fresh", "RSS fresh, MiB", ONE), ("holding", "RSS holding, MiB", ONE),
                ("closed", "RSS after close, MiB", ONE),
                ("after/fresh", "RSS after close / fresh", "{:.2f}x".format)):
            values = {name: (memory[(conns, name)].median(metric) if metric != "after/fresh"
                             else memory[(conns, name)].median("closed")
                             / memory[(conns, name)].median("fresh"))
                      for name in names if (conns, name) in memory}
            figures.append((metric, Figure([f"{conns:,} idle", label], values, shown, False)))
    return figures


def render(results: Results, names: list[str], peers: list[str], sizes: list[int],
           connections: list[int], info: list[str], command: str, plots: list[str],
           args: argparse.Namespace) -> str:
    def table(heading: str, lead: list[str], figures: list[Figure], names: list[str],
              note: str = "") -> list[str]:
        return [f"### {heading}", "", *([note, ""] if note else []),
                "| " + " | ".join([*lead, *names]) + " |",
                "|" + "---|" * len(lead) + "---:|" * len(names),
                *[figure.row(names, peers) for figure in figures], ""]

    def handshakes(storm: dict[str, Storm], label: str) -> list[Figure]:
        return [Figure([f"{label}{figure}"], {name: rounds.median(metric) for name, rounds
                                              in storm.items()}, shown, higher)
                for metric, figure, shown, higher in (
                    ("rates", "handshakes/s", COUNT, True),
                    ("cpu", "proxy CPU ms/handshake", THREE, False),
                    ("machine", "machine CPU ms/handshake", THREE, False))]

    throughput = throughput_figures(results.cells, names, sizes, connections)
    held = memory_figures(results.memory, names)
    storm = handshakes(results.storm, "")
    goals = [figure for metric, figure in throughput if metric in GOALS]
    goals += [figure for metric, figure in held
              if metric in ("per_connection", "closed", "after/fresh")]
    goals += storm[:2]
    proxies = [name for name in names if name in [*peers, OURS]]
    out = [MARK_START, "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
           f"with `{command}` ({args.rounds} interleaved rounds, medians; the best peer in "
           "each cell in **bold**: wsgate's goal there).", "", *info, "",
           *table("Messages per second, latency and CPU", ["size", "conns", "figure"],
                  [figure for _, figure in throughput], names),
           *table(f"Idle memory and RSS after close (fresh proxies: RSS fresh, holding the idle "
                  f"connections, and {args.settle:g} s after they close)",
                  ["connections", "figure"], [figure for _, figure in held], proxies),
           *table("Handshakes per second", ["figure"], storm, proxies)]
    if results.tls_cells or results.tls_storm:
        columns = proxies + [name for name in (PYTHON_TUNNEL,) if name in results.tls_storm]
        secure = throughput_figures(results.tls_cells, columns, sizes, connections)
        tls_storm = handshakes(results.tls_storm, "TLS ")
        out += [*table("TLS terminated at the proxy: messages per second, latency and CPU",
                       ["size", "conns", "figure"], [figure for _, figure in secure], columns,
                       note=TLS_NOTE),
                *table("TLS terminated at the proxy: handshakes per second", ["figure"],
                       tls_storm, columns, note=HANDSHAKE_NOTE)]
        goals += [replace(figure, lead=["TLS", *figure.lead]) for metric, figure in secure
                  if metric in GOALS]
        goals += tls_storm[:2]
    out += ["### Goals: wsgate proxy against the best peer in each cell (ratios of medians)",
            "", "| cell, figure | best peer | wsgate / best peer | wsgate / nginx |",
            "|---|---|---:|---:|", *[figure.goal(peers) for figure in goals]]
    if plots:
        out += ["", *[f"![{plot}](benchmarks/{plot})" for plot in plots]]
    out += ["", MARK_END]
    return "\n".join(out)


def write(path: Path, results: str) -> None:
    """Replace the results between the markers; keep the rest (the optimisation log)."""
    if path.exists() and MARK_START in path.read_text():
        text = path.read_text()
        head, _, rest = text.partition(MARK_START)
        _, _, tail = rest.partition(MARK_END)
        path.write_text(head + results + tail)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmarks\n\n" + results + "\n")
