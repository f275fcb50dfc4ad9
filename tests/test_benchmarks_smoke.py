"""The side-by-side suite, in its seconds-long smoke form, so it never rots (no speed
assertions: speed lives in docs/benchmarks.md, measured by the full run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_nginx

SUITE = Path(__file__).parent.parent / "benchmarks" / "suite.py"


@pytest.mark.timeout(240)
def test_suite_smoke_run_writes_the_report(tmp_path: Path) -> None:
    require_nginx()
    output = tmp_path / "benchmarks.md"
    result = subprocess.run([sys.executable, str(SUITE), "--smoke", "--output", str(output)],
                            capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stderr
    report = output.read_text()
    for heading in ("### Messages per second, latency and CPU", "### Goals",
                    "### Idle memory", "### Handshakes per second"):
        assert heading in report
    for target in ("| upstream direct |", "| nginx |", "| wsgate proxy |"):
        assert target in report
    assert (tmp_path / "benchmarks" / "throughput.png").exists()
    # Running it again keeps what is outside the results (the optimisation log).
    output.write_text("# Benchmarks\n\nnotes before\n\n" + report.split("# Benchmarks\n\n", 1)[1]
                      + "\nnotes after\n")
    subprocess.run([sys.executable, str(SUITE), "--smoke", "--output", str(output)],
                   capture_output=True, text=True, timeout=220, check=True)
    again = output.read_text()
    assert "notes before" in again and "notes after" in again
    assert again.count("### Goals") == 1


@pytest.mark.timeout(120)
def test_reload_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/reload.py in its short form: it runs, and wsgate loses nothing through a
    reload and an upgrade (nginx's row is whatever nginx does)."""
    require_nginx()
    output = tmp_path / "reload.md"
    result = subprocess.run([sys.executable, str(SUITE.parent / "reload.py"), "--quick",
                             "--output", str(output)],
                            capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    report = output.read_text()
    assert "| nginx |" in report
    assert "| wsgate proxy | 0 | 0 |" in report, report
    assert "1 reload, 1 upgrade signalled" in report
