"""A signal sent the instant a server says it is listening is a clean stop: exit 0, never a
death by the default action (status -15 or 130). Run these in a loop when touching start-up."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from conftest import wsgate_command
from proxy_helpers import closed_port

SERVERS = {
    "echo": (["echo", "--port", "0", "--port", "0"], "Listening on "),
    "proxy": (["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:{port}"],
              "Listening on "),
    "proxy with 2 workers": (["proxy", "--listen", "127.0.0.1:0", "--upstream",
                              "127.0.0.1:{port}", "--workers", "2"], "Listening on "),
    "up": (["up", "--port", "0", "--echo-port", "0", "--echo-port", "0"], "Connect with: "),
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("name", list(SERVERS))
def test_a_signal_right_after_start_up_is_a_clean_stop(name: str, sig: int,
                                                        tmp_path: Path) -> None:
    argv, ready = SERVERS[name]
    argv = [arg.replace("{port}", str(closed_port())) for arg in argv]
    proc = subprocess.Popen([*wsgate_command(), *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for text in proc.stdout:
            if text.startswith(ready):
                break
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
