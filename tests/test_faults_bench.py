"""benchmarks/faults.py in its smoke form, so it never rots: it runs every scenario against
both proxies and writes the table. No pass/fail of a scenario is asserted: what each proxy
does is the report's job (docs/faults.md), and wsgate's answers change as it is fixed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_nginx

FAULTS = Path(__file__).parent.parent / "benchmarks" / "faults.py"
TITLES = ("Upstream killed mid-tunnel", "Slow consumer", "File-descriptor exhaustion",
          "Idle WebSockets plus a handshake storm",
          "Pooled upstream connection closed as it is reused",
          "Memory after idle connections close", "Graceful shutdown (SIGQUIT)",
          "Reload (SIGHUP)")


@pytest.mark.timeout(240)
def test_faults_smoke_run_writes_the_table(tmp_path: Path) -> None:
    require_nginx()
    output = tmp_path / "faults.md"
    result = subprocess.run([sys.executable, str(FAULTS), "--smoke", "--output", str(output)],
                            capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()
    assert "| scenario | wsgate proxy | nginx |" in report
    rows = [line for line in report.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(TITLES)
    for row in rows:  # every cell has a verdict and a figure, none is an error
        cells = row.strip("| ").split(" | ")[1:]
        assert len(cells) == 2, row
        for cell in cells:
            assert cell.startswith(("**pass**: ", "**FAIL**: ", "info: ")), row
            assert "error:" not in cell, row
    for title in TITLES:
        assert f"## {title}" in report
    assert report.strip() in result.stdout  # printed too
