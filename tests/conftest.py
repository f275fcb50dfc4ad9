"""Shared fixtures: real `wsgate` processes, Node peers, and how to read what they print.

Every process a test starts goes through :func:`spawn`, which kills it at teardown, so no
test leaves a server behind. Ports are always 0: the servers print the port they bound.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from client_helpers import Terminals
    from ops_helpers import Background

PEERS = Path(__file__).parent / "peers"


def wsgate_command() -> list[str]:
    """The installed ``wsgate`` script beside this Python, as a user would run it."""
    script = Path(sys.executable).parent / "wsgate"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "wsgate"]


class Proc:
    """A child process whose stdout and stderr lines can be awaited with a deadline."""

    def __init__(self, argv: Sequence[str], stdin: int | None = subprocess.DEVNULL,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=cwd, text=True, errors="replace", bufsize=1,
            start_new_session=True,
        )
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        for name, stream in (("out", self.popen.stdout), ("err", self.popen.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put((name, line.rstrip("\n")))
        self.lines.put((name, "\0EOF"))

    def expect(self, pattern: str, timeout: float = 10.0,
               stream: str | None = None) -> re.Match[str]:
        """Wait for a line matching ``pattern`` (regex, searched) on stdout or stderr."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout}s from {self.argv}\n"
                    f"stdout: {self.out}\nstderr: {self.err}"
                )
            try:
                name, line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line == "\0EOF":
                continue
            (self.out if name == "out" else self.err).append(line)
            if stream is not None and name != stream:
                continue
            match = regex.search(line)
            if match:
                return match

    def drain(self, timeout: float = 10.0) -> tuple[str, str]:
        """Wait for the process to exit and return all of its stdout and stderr."""
        self.popen.wait(timeout=timeout)
        deadline = time.monotonic() + 2
        eofs = 0
        while eofs < 2 and time.monotonic() < deadline:
            try:
                name, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line == "\0EOF":
                eofs += 1
                continue
            (self.out if name == "out" else self.err).append(line)
        return "\n".join(self.out), "\n".join(self.err)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


class Spawn(Protocol):
    def __call__(self, argv: Sequence[str], stdin: int | None = ...,
                 env: dict[str, str] | None = ..., cwd: str | Path | None = ...) -> Proc: ...


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start processes that are killed when the test ends, whatever happens in it."""
    procs: list[Proc] = []

    def start(argv: Sequence[str], stdin: int | None = subprocess.DEVNULL,
              env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Proc:
        proc = Proc(argv, stdin=stdin, env=env, cwd=cwd)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def wsgate(spawn: Spawn) -> Iterator[Spawn]:
    """Start ``wsgate ARGS...`` as a real process."""

    def start(argv: Sequence[str], stdin: int | None = subprocess.DEVNULL,
              env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Proc:
        return spawn([*wsgate_command(), *argv], stdin=stdin, env=env, cwd=cwd)

    yield start


def run_wsgate(*argv: str, input: str | None = None, timeout: float = 20,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``wsgate ARGS...`` to completion and return what it printed and its status."""
    return subprocess.run(
        [*wsgate_command(), *argv], input=input, capture_output=True, text=True,
        timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL,
    )


def start_echo(wsgate: Spawn, *extra: str) -> tuple[Proc, int]:
    """``wsgate echo --port 0``: the process and the port it bound."""
    proc = wsgate(["echo", "--port", "0", *extra])
    match = proc.expect(r"Listening on ws://[^ ]+:(\d+)")
    return proc, int(match.group(1))


# -- Node peers (ws, wscat) ------------------------------------------------------------------

def _node_modules() -> Path | None:
    configured = os.environ.get("WSGATE_NODE_MODULES")
    if configured:
        return Path(configured)
    if shutil.which("npm") is None:
        return None
    prefix = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wsgate-tests-npm"
    modules = prefix / "node_modules"
    if not (modules / "ws").exists() or not (modules / "wscat").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix),
             "ws", "wscat"],
            check=False, timeout=300, capture_output=True,
        )
    return modules if (modules / "ws").exists() else None


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """Where Node's ``ws`` and ``wscat`` are; in CI their absence fails instead of skipping."""
    modules = _node_modules() if shutil.which("node") else None
    if modules is None or not (modules / "wscat").exists():
        if os.environ.get("CI"):
            pytest.fail("Node ws and wscat are required in CI (set WSGATE_NODE_MODULES)")
        pytest.skip("Node, ws and wscat are not available")
    return modules


@pytest.fixture
def node_echo(spawn: Spawn, node_modules: Path) -> tuple[Proc, int]:
    """The seed's server.js (port from argv, 0 here), and the port it bound."""
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    proc = spawn(["node", str(PEERS / "server.js"), "0"], env=env)
    match = proc.expect(r"Listening on port (\d+)")
    return proc, int(match.group(1))


@pytest.fixture
def wscat(node_modules: Path) -> list[str]:
    """The command that runs the real wscat."""
    return ["node", str(node_modules / "wscat" / "bin" / "wscat")]


def run_held_open(argv: Sequence[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdin stays open until it exits (wscat quits at stdin's EOF)."""
    read_end, write_end = os.pipe()
    try:
        return subprocess.run(argv, stdin=read_end, capture_output=True, text=True,
                              timeout=timeout)
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Terminals]:
    """``wsgate`` at pseudo-terminals (interactive sessions), killed at teardown."""
    from client_helpers import Terminals

    pool = Terminals(tmp_path)
    yield pool
    pool.close()


@pytest.fixture
def bg() -> Iterator[Background]:
    """An event loop in a thread, for upstreams and clients that run while the test drives
    the proxy (:mod:`ops_helpers`)."""
    from ops_helpers import Background

    background = Background()
    yield background
    background.close()


def require_nginx() -> None:
    """Skip without nginx, except in CI, where .ci/run installs it and its absence fails."""
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        return
    if os.environ.get("CI"):
        pytest.fail("nginx is required in CI (.ci/run installs nginx-light)")
    pytest.skip("nginx is not installed")
