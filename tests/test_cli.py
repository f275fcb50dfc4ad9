"""The ``wsgate`` command line as a whole: subcommands, wscat habits, closed streams."""

from __future__ import annotations

import subprocess

from conftest import Spawn, run_wsgate, wsgate_command
from proxy_helpers import closed_port


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_wsgate()
    assert result.returncode == 2
    for command in ("up", "proxy", "echo", "connect", "listen"):
        assert command in result.stderr


def test_wscat_flags_before_c_still_mean_connect() -> None:
    port = closed_port()
    result = run_wsgate("-H", "X-Test: 1", "-c", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"error: connection refused: 127.0.0.1:{port}")


def test_unknown_command_is_one_line_and_status_2() -> None:
    result = run_wsgate("serve")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_closed_standard_streams_do_not_crash_a_server(wsgate: Spawn) -> None:
    # Started with stdin closed, the first socket would otherwise get fd 0.
    proc = subprocess.Popen(
        [*wsgate_command(), "echo", "--port", "0"], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: __import__("os").close(0),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "Server started\n"
        assert proc.stdout.readline().startswith("Listening on ws://127.0.0.1:")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
