"""The seed's transcript for every pair of {wscat, wsgate connect} x {server.js, wsgate echo}:
"> Hello" gives "< Server received from client: Hello"."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pexpect
import pytest

from conftest import Proc, Spawn, run_held_open, run_wsgate, start_echo

if TYPE_CHECKING:
    from client_helpers import Terminals

SEED = "Server received from client: "


@pytest.fixture(params=["server.js", "wsgate echo"])
def server_port(request: pytest.FixtureRequest, wsgate: Spawn) -> int:
    if request.param == "server.js":
        node_echo: tuple[Proc, int] = request.getfixturevalue("node_echo")
        return node_echo[1]
    return start_echo(wsgate)[1]


def test_wscat(server_port: int, wscat: list[str]) -> None:
    result = run_held_open([*wscat, "--connect", f"ws://127.0.0.1:{server_port}",
                            "-x", "Hello", "-x", "Welcome to www.hi-linux.com", "-w", "1"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [SEED + "Hello", SEED + "Welcome to www.hi-linux.com"]


def test_wsgate_connect(server_port: int) -> None:
    result = run_wsgate("connect", f"ws://127.0.0.1:{server_port}",
                        input="Hello\nWelcome to www.hi-linux.com\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [SEED + "Hello", SEED + "Welcome to www.hi-linux.com"]


def test_wsgate_connect_interactive(server_port: int, terminals: Terminals) -> None:
    child = terminals.spawn("connect", f"ws://127.0.0.1:{server_port}", "--no-color")
    child.expect_exact("Connected (press CTRL+C to quit)")
    for line in ("Hello", "Welcome to www.hi-linux.com"):
        child.expect_exact(">")
        child.sendline(line)
        child.expect_exact("< " + SEED + line)
    child.sendcontrol("d")
    child.expect_exact('Disconnected (code: 1000, reason: "")')
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
