"""SIGINT and SIGTERM are a clean stop at any moment once a server's command has started
(it catches them before loading anything): exit 0, never a death by the default action
(status -15 or 130), and no worker left behind. Run these in a loop when touching start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import wsgate_command
from proxy_helpers import closed_port

SERVERS = {
    "echo": (["echo", "--port", "0", "--port", "0"], "Listening on "),
    "proxy": (["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:{port}"],
              "Listening on "),
    "proxy with 3 workers": (["proxy", "--listen", "127.0.0.1:0", "--upstream",
                              "127.0.0.1:{port}", "--workers", "3"], "Listening on "),
    "up": (["up", "--port", "0", "--echo-port", "0", "--echo-port", "0"], "Connect with: "),
}


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def start(name: str) -> subprocess.Popen[str]:
    argv, _ready = SERVERS[name]
    argv = [arg.replace("{port}", str(closed_port())) for arg in argv]
    return subprocess.Popen([*wsgate_command(), *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stopped_cleanly(proc: subprocess.Popen[str]) -> None:
    """Exit 0 with nothing on stderr, and no process left in its group (its workers)."""
    try:
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("name", list(SERVERS))
def test_a_signal_right_after_listening_is_a_clean_stop(name: str, sig: int) -> None:
    proc = start(name)
    assert proc.stdout is not None
    for text in proc.stdout:
        if text.startswith(SERVERS[name][1]):
            break
    proc.send_signal(sig)
    stopped_cleanly(proc)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
@pytest.mark.parametrize("name", ["echo", "proxy with 3 workers", "up"])
def test_a_signal_during_start_up_is_a_clean_stop(name: str, delay: float) -> None:
    """From the moment the command catches SIGTERM (before it loads a server's code), a
    signal while it loads, binds or forks is the same clean stop."""
    proc = start(name)
    deadline = time.monotonic() + 10
    while not catches(proc.pid, signal.SIGTERM):
        assert time.monotonic() < deadline, "the command never caught SIGTERM"
        time.sleep(0.001)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    stopped_cleanly(proc)
