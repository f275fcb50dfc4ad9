"""benchmarks/soak.py in its 30-second form, so the soak never rots and a leak or an error
that shows within seconds fails CI (the hour-long run, for docs/soak.md, is run by hand)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).parent.parent / "benchmarks" / "soak.py"


@pytest.mark.timeout(120)
def test_soak_short_run_has_no_errors_and_stays_flat(tmp_path: Path) -> None:
    samples = tmp_path / "soak.csv"
    report = tmp_path / "soak.md"
    chart = tmp_path / "soak.png"
    result = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "30", "--interval", "5", "--warmup", "10",
         "--tunnels", "50", "--churn-rate", "5", "--http-rate", "4", "--slow-readers", "2",
         "--slow-senders", "2", "--slow-pause", "4", "--csv", str(samples),
         "--output", str(report), "--plot", str(chart)],
        capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    text = report.read_text()
    assert "**pass**" in text
    assert "| errors | 0 |" in text
    assert "![RSS, descriptors and load over time](soak.png)" in text
    assert chart.stat().st_size > 0
    rows = list(csv.DictReader(samples.open()))
    # the baseline, a sample every 5 s for 30 s, and one after the load
    assert len(rows) == 8, rows
    assert all(row["errors"] == "0" for row in rows), rows
    assert all(int(row["rss_workers_kib"]) > 0 and int(row["fds_master"]) > 0 for row in rows)
    loaded = rows[1:-1]
    assert all(row["tunnels_open"] == "50" for row in loaded[1:]), loaded
    assert int(rows[-2]["messages"]) > 1000 and int(rows[-2]["churned"]) >= 100
    assert int(rows[-2]["http_requests"]) >= 80
