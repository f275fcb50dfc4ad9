"""The pid file (nginx's semantics) and ``wsgate proxy -s``, end to end: the real CLI
signals a real process found through a real pid file, and each mistake is one line."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import Proc, Spawn, wsgate_command
from wsgate.errors import Failure, UsageError
from wsgate.proxy import command, pidfile
from wsgate.proxy.config import ProxyConfig

# -- write, read, remove -------------------------------------------------------------------


def test_write_puts_this_pid_and_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "wsgate.pid"
    pidfile.write(path)
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert pidfile.read(path) == os.getpid()
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left


def test_write_replaces_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "wsgate.pid"
    path.write_text("999999\n")
    pidfile.write(path)
    assert path.read_text() == f"{os.getpid()}\n"


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """Atomic: the file is the old content or the new, never empty, whenever it is read."""
    path = tmp_path / "wsgate.pid"
    pidfile.write(path)
    done = threading.Event()

    def rewrite() -> None:
        for _ in range(300):
            pidfile.write(path)
        done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    seen = set()
    while not done.is_set():
        seen.add(path.read_text())
    writer.join(timeout=10)
    assert seen <= {f"{os.getpid()}\n"}


def test_write_failures_are_one_line_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(Failure) as missing:
        pidfile.write(tmp_path / "no" / "wsgate.pid")
    assert str(missing.value) == (f"cannot write pid file {tmp_path}/no/wsgate.pid: "
                                  "No such file or directory")
    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(Failure) as taken:  # the temporary file is written, the rename fails
        pidfile.write(folder)
    assert str(taken.value) == f"cannot write pid file {folder}: Is a directory"
    assert sorted(tmp_path.iterdir()) == [folder]


def test_remove_only_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "wsgate.pid"
    path.write_text("4242\n")
    assert pidfile.remove(path, 4243) is False  # a newer master's file: kept
    assert path.read_text() == "4242\n"
    assert pidfile.remove(path, 4242) is True
    assert not path.exists()
    assert pidfile.remove(path, 4242) is False  # already gone: no error
    path.write_text("garbage")
    assert pidfile.remove(path, 4242) is False
    assert path.exists()


@pytest.mark.parametrize("content", ["4242", "4242\n", " 4242\r\n"])
def test_read_takes_a_pid_with_its_whitespace(tmp_path: Path, content: str) -> None:
    path = tmp_path / "wsgate.pid"
    path.write_text(content)
    assert pidfile.read(path) == 4242


@pytest.mark.parametrize(("content", "shown"), [
    ("", '""'),
    ("\n", '""'),
    ("abc\n", '"abc"'),
    ("0\n", '"0"'),          # kill(0) would signal our own process group
    ("-1\n", '"-1"'),        # kill(-1) would signal every process we may
    ("+12\n", '"+12"'),
    ("12 34\n", '"12 34"'),
    ("4294967297\n", '"4294967297"'),
    ("1" * 70, f'"{"1" * 64}"'),
])
def test_read_rejects_what_is_not_a_pid(tmp_path: Path, content: str, shown: str) -> None:
    path = tmp_path / "wsgate.pid"
    path.write_text(content)
    with pytest.raises(Failure) as error:
        pidfile.read(path)
    assert str(error.value) == f"invalid PID number {shown} in {path}"


def test_read_without_a_file_says_what_that_means(tmp_path: Path) -> None:
    with pytest.raises(Failure) as missing:
        pidfile.read(tmp_path / "wsgate.pid")
    assert str(missing.value) == (f"no pid file {tmp_path}/wsgate.pid: "
                                  "is wsgate proxy running?")
    with pytest.raises(Failure) as folder:
        pidfile.read(tmp_path)
    assert str(folder.value) == f"cannot read pid file {tmp_path}: Is a directory"


# -- wsgate proxy -s, end to end -----------------------------------------------------------

TARGET = """
import signal, sys
def report(number, frame):
    print(signal.Signals(number).name, flush=True)
for number in (signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT, signal.SIGTERM):
    signal.signal(number, report)
print("ready", flush=True)
while True:
    signal.pause()
"""

CONFIG = """listen = ["127.0.0.1:0"]
{pid}
[location."/"]
proxy_pass = "127.0.0.1:9"
"""


def target(spawn: Spawn) -> Proc:
    """A process that prints the name of each signal it gets (and survives them all)."""
    proc = spawn([sys.executable, "-c", TARGET])
    proc.expect("^ready$", stream="out")
    return proc


def config(folder: Path, pid: str | None = "run/wsgate.pid") -> Path:
    """A config file; its relative pid path is relative to the file's folder."""
    (folder / "run").mkdir(exist_ok=True)
    path = folder / "wsgate.toml"
    path.write_text(CONFIG.format(pid="" if pid is None else f'pid = "{pid}"'))
    return path


def wsgate(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*wsgate_command(), *argv], capture_output=True, text=True,
                          timeout=20, cwd=cwd, stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, \
        result.stderr
    return result.stderr.rstrip("\n")


@pytest.mark.parametrize(("name", "expected"), [
    ("reload", "SIGHUP"), ("reopen", "SIGUSR1"), ("quit", "SIGQUIT"), ("stop", "SIGTERM"),
])
def test_s_sends_nginx_signals(spawn: Spawn, tmp_path: Path, name: str,
                               expected: str) -> None:
    proc = target(spawn)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "wsgate.pid").write_text(f"{proc.popen.pid}\n")
    # From another folder: the pid path is relative to the config file, not to the cwd.
    result = wsgate("proxy", "-c", str(config(tmp_path)), "-s", name, cwd=Path("/"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    proc.expect(f"^{expected}$", timeout=5, stream="out")
    assert proc.popen.poll() is None


def test_s_with_the_pid_flag(spawn: Spawn, tmp_path: Path) -> None:
    proc = target(spawn)
    (tmp_path / "wsgate.pid").write_text(f"{proc.popen.pid}\n")
    result = wsgate("proxy", "--pid", "wsgate.pid", "--signal", "reload", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    proc.expect("^SIGHUP$", timeout=5, stream="out")
    # The command line that started the proxy, with -s added, works too.
    result = wsgate("proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                    "--pid", "wsgate.pid", "-s", "reopen", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    proc.expect("^SIGUSR1$", timeout=5, stream="out")


def test_s_to_a_stale_pid_file_fails_with_status_1(tmp_path: Path) -> None:
    gone = int(Path("/proc/sys/kernel/pid_max").read_text())  # no PID reaches pid_max
    pid_path = tmp_path / "run" / "wsgate.pid"
    path = config(tmp_path)
    pid_path.write_text(f"{gone}\n")
    result = wsgate("proxy", "-c", str(path), "-s", "stop")
    assert result.returncode == 1
    assert one_error_line(result) == (f"error: no process {gone} (from {pid_path}): "
                                      "is wsgate proxy running?")


def test_s_without_the_pid_file_or_with_a_bad_one_fails_with_status_1(tmp_path: Path) -> None:
    path = config(tmp_path)
    pid_path = tmp_path / "run" / "wsgate.pid"
    result = wsgate("proxy", "-c", str(path), "-s", "reload")
    assert result.returncode == 1
    assert one_error_line(result) == (f"error: no pid file {pid_path}: "
                                      "is wsgate proxy running?")
    pid_path.write_text("-1\n")
    result = wsgate("proxy", "-c", str(path), "-s", "reload")
    assert result.returncode == 1
    assert one_error_line(result) == f'error: invalid PID number "-1" in {pid_path}'


def test_s_without_a_pid_configured_is_a_usage_error(tmp_path: Path) -> None:
    path = config(tmp_path, pid=None)
    result = wsgate("proxy", "-c", str(path), "-s", "reload")
    assert result.returncode == 2
    assert one_error_line(result) == (
        f'error: -s needs the pid file: set pid in {path} (e.g. pid = "/run/wsgate.pid") '
        "(see wsgate proxy --help)")
    result = wsgate("proxy", "-s", "reload")
    assert result.returncode == 2
    assert one_error_line(result) == (
        "error: -s needs the pid file: give --pid FILE, or -c FILE with pid set in it "
        "(see wsgate proxy --help)")


@pytest.mark.parametrize(("argv", "message"), [
    (["-s", "reload", "--check"], "-s cannot be combined with --check"),
    (["-s", "restart"], "argument -s/--signal: invalid choice: 'restart'"),
    (["--pid", " ", "-s", "quit"], '--pid: must be a non-empty string, got " "'),
    (["--pid", "x.pid", "--listen", ":80", "-s", "quit"],
     "give -c FILE, or at least one --upstream HOST:PORT"),
])
def test_s_usage_mistakes(tmp_path: Path, argv: list[str], message: str) -> None:
    result = wsgate("proxy", *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).startswith(f"error: {message}")


def test_s_with_a_pid_flag_and_a_file_is_a_usage_error(tmp_path: Path) -> None:
    result = wsgate("proxy", "-c", str(config(tmp_path)), "--pid", "x.pid", "-s", "stop")
    assert result.returncode == 2
    assert one_error_line(result) == ("error: --pid cannot be combined with -c; put it in "
                                      "the configuration file (see wsgate proxy --help)")


def test_send_reports_a_process_it_may_not_signal(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """EPERM (another user's process): tests run as root too, so os.kill is stood in for."""
    path = tmp_path / "wsgate.pid"
    path.write_text("4242\n")

    def refuse(pid: int, number: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    with pytest.raises(Failure) as error:
        command.send(ProxyConfig(pid=path), "quit")
    assert str(error.value) == (f"cannot send SIGQUIT to process 4242 (from {path}): "
                                "Operation not permitted")
    with pytest.raises(UsageError):
        command.send(ProxyConfig(), "quit")


def test_signal_names_are_nginx_s() -> None:
    assert command.SIGNALS == {"reload": signal.SIGHUP, "reopen": signal.SIGUSR1,
                               "quit": signal.SIGQUIT, "stop": signal.SIGTERM}
