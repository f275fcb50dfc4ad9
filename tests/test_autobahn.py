"""benchmarks/autobahn.py without Autobahn: its case selection, its judging and its tables,
its process handling and environment cache, and the client helper against a stand-in
fuzzingserver. (The Autobahn run itself is in .ci/run: it needs Python 2.7 and minutes.)"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from websockets.sync.server import ServerConnection, serve

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "benchmarks" / "autobahn.py"
CLIENT = ROOT / "benchmarks" / "autobahn_client.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("autobahn_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ab = load_script()


def result(behavior: str, close: str = "OK") -> dict[str, object]:
    return {"behavior": behavior, "behaviorClose": close, "remoteCloseCode": 1000,
            "duration": 1}


def suite(name: str, results: dict[str, dict[str, object]]) -> object:
    made = ab.Suite(name, f"the {name} testee")
    made.results = results
    return made


# -- what runs, and how it is judged ------------------------------------------------------------

def test_ci_runs_everything_but_9_and_most_compression_cases() -> None:
    assert ab.case_selection(ci=False) == (["*"], [])
    cases, excluded = ab.case_selection(ci=True)
    assert cases == ["*"]
    assert excluded[0] == "9.*"
    assert len(excluded) == 1 + 12 * 16  # 12.1-12.5 and 13.1-13.7, 16 of 18 cases each
    assert "12.1.1" not in excluded and "13.7.11" not in excluded
    assert {"12.1.2", "12.5.18", "13.1.10", "13.7.12"} <= set(excluded)
    assert not [case for case in excluded[1:] if "*" in case]  # Autobahn matches prefixes


def test_every_case_must_pass_and_end_alike_through_the_proxy() -> None:
    direct = suite("direct", {"1.1.1": result("OK"), "4.1.3": result("NON-STRICT"),
                              "7.1.6": result("INFORMATIONAL"), "7.1.2": result("OK")})
    proxy = suite("proxy", {"1.1.1": result("OK"), "4.1.3": result("OK"),
                            "7.1.6": result("INFORMATIONAL"), "7.1.2": result("OK")})
    client = suite("client", {"1.1.1": result("OK"), "7.1.5": result("FAILED", "WRONG CODE")})
    failures, notes = ab.problems({"direct": direct, "proxy": proxy, "client": client})
    assert failures == []
    assert len(notes) == 1 and notes[0].startswith("client 7.1.5: FAILED (known: websockets")


def test_a_failed_case_or_a_proxy_difference_fails_the_run() -> None:
    direct = suite("direct", {"1.1.1": result("OK"), "2.1": result("OK"),
                              "3.1": result("UNIMPLEMENTED")})
    proxy = suite("proxy", {"1.1.1": result("FAILED", "WRONG CODE"), "2.1": result("OK"),
                            "3.1": result("UNIMPLEMENTED"), "5.1": result("OK")})
    failures, _notes = ab.problems({"direct": direct, "proxy": proxy})
    assert failures == [
        "direct 3.1: UNIMPLEMENTED, close OK, code 1000",
        "proxy 1.1.1: FAILED, close WRONG CODE, code 1000",
        "proxy 3.1: UNIMPLEMENTED, close OK, code 1000",
        "proxy 1.1.1: FAILED through the proxy, OK directly",
        "proxy 5.1: OK through the proxy, not run directly",
    ]


def test_a_suite_that_did_not_run_fails_the_run() -> None:
    broken = ab.Suite("client", "engine")
    broken.error = "autobahn_client.py exited with 1"
    failures, _notes = ab.problems({"client": broken, "direct": suite("direct", {})})
    assert failures == ["client: autobahn_client.py exited with 1", "direct: no case ran"]


def test_a_known_failure_that_passes_is_noted() -> None:
    failures, notes = ab.problems({"client": suite("client", {"7.1.5": result("OK")})})
    assert failures == []
    assert notes == ["client 7.1.5: passes now; drop it from KNOWN_FAILURES"]


def test_the_document_has_a_table_per_suite_with_counts_per_group() -> None:
    direct = suite("direct", {"1.1.1": result("OK"), "1.1.2": result("OK"),
                              "6.4.1": result("NON-STRICT"), "12.1.1": result("FAILED")})
    text = ab.render({"direct": direct}, ["direct 12.1.1: FAILED"], [], 125.0, True)
    assert "| 1 Framing | 2 | 2 | 0 | 0 | 0 |" in text
    assert "| 6 UTF-8 Handling | 1 | 0 | 1 | 0 | 0 |" in text
    assert "| 12 Compression (different payloads) | 1 | 0 | 0 | 0 | 1 |" in text
    assert "| **all** | **4** | **2** | **1** | **0** | **1** |" in text
    assert "Not OK: 6.4.1 NON-STRICT, 12.1.1 FAILED." in text
    assert "- direct 12.1.1: FAILED" in text


def test_the_summary_line_counts_every_kind() -> None:
    line = ab.summary_line(suite("proxy", {"1.1.1": result("OK"),
                                           "7.1.6": result("INFORMATIONAL")}))
    assert line.startswith("proxy   2 cases: 1 OK, 0 NON-STRICT, 1 INFORMATIONAL, 0 FAILED")


# -- processes and the Python 2.7 environment ---------------------------------------------------

def test_stop_all_ends_every_process_and_its_children(tmp_path: Path) -> None:
    procs = ab.Processes(tmp_path)
    proc = procs.start("tree", ["sh", "-c", "sleep 60 & echo Listening on ws://h:4321; wait"])
    assert procs.port("tree", proc, timeout=10) == 4321
    procs.stop_all()
    assert proc.returncode is not None
    with pytest.raises(RuntimeError, match="ending"):
        procs.start("late", ["sleep", "60"])  # a suite's thread after the end starts nothing
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the backgrounded sleep is gone too (once reaped)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("a child of the process outlived stop_all")


def test_a_process_that_exits_without_listening_is_reported(tmp_path: Path) -> None:
    procs = ab.Processes(tmp_path)
    proc = procs.start("broken", ["sh", "-c", "echo cannot listen; exit 1"])
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot listen"):
        procs.port("broken", proc, timeout=10)
    assert time.monotonic() - started < 5
    procs.stop_all()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WSGATE_AUTOBAHN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WSGATE_PYTHON27", sys.executable)  # any interpreter: pip is faked
    return tmp_path / "cache"


def test_the_environment_is_reused_while_its_pins_hold(cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    venv = cache / "venv"
    venv.mkdir(parents=True)
    (venv / "wsgate-pins").write_text(ab.pins_stamp(sys.executable))

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt")

    monkeypatch.setattr(ab, "pip", no_pip)
    assert ab.wstest_environment() == venv


def test_a_stale_environment_is_rebuilt(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = cache / "venv"
    venv.mkdir(parents=True)
    (venv / "wsgate-pins").write_text("older pins")
    calls: list[tuple[object, ...]] = []

    def fake_pip(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise SystemExit("stop here")

    monkeypatch.setattr(ab, "pip", fake_pip)
    with pytest.raises(SystemExit, match="stop here"):
        ab.wstest_environment()
    assert not venv.exists()  # the stale one is gone before the build
    assert calls and "virtualenv" in calls[0]
    assert "virtualenv==20.15.1" in (cache / "virtualenv-pins.txt").read_text()


def test_python27_is_found_or_the_run_says_so(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("WSGATE_PYTHON27", str(tmp_path / "missing"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match=r"no Python 2\.7"):
        ab.python27()


# -- the client helper --------------------------------------------------------------------------

class FakeFuzzingServer:
    """Three cases, each a text and a binary message the client must echo, then the
    reports: what Autobahn's fuzzingserver asks of a testee client."""

    def __init__(self) -> None:
        self.echoed: list[object] = []
        self.agents: list[str] = []
        self.compressed: list[bool] = []

    def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path
        if path == "/getCaseCount":
            ws.send("3")
        elif path.startswith("/runCase?case="):
            case = path.split("=")[1].split("&")[0]
            self.compressed.append(bool(ws.protocol.extensions))
            ws.send(f"case {case}")
            self.echoed.append(ws.recv(timeout=5))
            ws.send(case.encode())
            self.echoed.append(ws.recv(timeout=5))
        elif path.startswith("/updateReports?agent="):
            self.agents.append(path.split("=", 1)[1])
        ws.close()


@pytest.fixture
def fuzzingserver() -> Iterator[tuple[FakeFuzzingServer, int]]:
    fake = FakeFuzzingServer()
    with serve(fake.handle, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield fake, server.socket.getsockname()[1]
        server.shutdown()
        thread.join(timeout=10)


@pytest.mark.timeout(60)
def test_the_client_helper_plays_every_case_then_asks_for_reports(
        fuzzingserver: tuple[FakeFuzzingServer, int]) -> None:
    fake, port = fuzzingserver
    result = subprocess.run([sys.executable, str(CLIENT), f"ws://127.0.0.1:{port}",
                             "wsgate connect"], capture_output=True, text=True, timeout=45)
    assert result.returncode == 0, result.stderr
    assert fake.echoed == ["case 1", b"1", "case 2", b"2", "case 3", b"3"]
    assert fake.compressed == [True, True, True]  # permessage-deflate, as wsgate connect
    assert fake.agents == ["wsgate%20connect"]


def test_the_ci_section_runs_before_the_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    autobahn = ci.index("benchmarks/autobahn.py --ci")
    assert autobahn < ci.index('eval "$test_command"')


def test_interrupting_the_run_unwinds_like_ctrl_c() -> None:
    with pytest.raises(KeyboardInterrupt):
        ab.interrupted(signal.SIGTERM, None)
