"""``wsgate listen``: wscat -l's screen, one client at a time, pipe mode, and the real wscat.

Servers bind port 0 and print the port really bound; clients are the real wscat, a real
``wsgate connect``, or a websockets client in the test.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pexpect
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from client_helpers import Terminals
from conftest import Proc, Spawn, run_wsgate


def start_listen(wsgate: Spawn, *extra: str) -> tuple[Proc, int]:
    """``wsgate listen 0`` in pipe mode, with a stdin the test can write to."""
    proc = wsgate(["listen", "0", *extra], stdin=subprocess.PIPE)
    match = proc.expect(r"^Listening on port (\d+) \(press CTRL\+C to quit\)$", stream="err")
    return proc, int(match.group(1))


def type_line(proc: Proc, line: str) -> None:
    assert proc.popen.stdin is not None
    proc.popen.stdin.write(line + "\n")
    proc.popen.stdin.flush()


def client(port: int, **kwargs: object) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{port}", open_timeout=5, **kwargs)  # type: ignore[arg-type]


def test_wscat_talks_to_wsgate_listen(wsgate: Spawn, spawn: Spawn, wscat: list[str]) -> None:
    server, port = start_listen(wsgate)
    # wscat exits when its stdin ends, so it gets a pipe that stays open.
    peer = spawn([*wscat, "-c", f"ws://127.0.0.1:{port}", "-x", "hello from wscat", "-w", "2"],
                 stdin=subprocess.PIPE)
    server.expect("^Client connected$", stream="err")
    server.expect("^hello from wscat$", stream="out")
    type_line(server, "hello from wsgate")
    peer.expect("^hello from wsgate$", stream="out")
    # wscat closes without a status code: 1005 on this side.
    server.expect(r'^Disconnected \(code: 1005, reason: ""\)$', stream="err")
    peer.drain()
    server.signal(signal.SIGINT)
    server.drain()
    assert server.popen.returncode == 0


def test_wscat_subprotocol_is_accepted(wsgate: Spawn, spawn: Spawn, wscat: list[str]) -> None:
    server, port = start_listen(wsgate)
    peer = spawn([*wscat, "-c", f"ws://127.0.0.1:{port}", "-s", "chat", "-x", "sub", "-w", "0.5"],
                 stdin=subprocess.PIPE)
    server.expect("^sub$", stream="out")
    peer.drain()
    assert peer.popen.returncode == 0, peer.err


def test_wsgate_connect_talks_to_wsgate_listen(wsgate: Spawn) -> None:
    server, port = start_listen(wsgate)
    result = run_wsgate("connect", f"127.0.0.1:{port}", "-x", "ping-pong", "-w", "0.5")
    assert result.returncode == 0, result.stderr
    server.expect("^ping-pong$", stream="out")
    server.expect(r'^Disconnected \(code: 1000, reason: ""\)$', stream="err")


def test_listen_with_dash_l_and_a_fixed_port(wsgate: Spawn) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = wsgate(["listen", "-l", str(port)], stdin=subprocess.PIPE)
    proc.expect(f"^Listening on port {port} ", stream="err")
    with client(port) as ws:
        ws.send("fixed")
        proc.expect("^fixed$", stream="out")


def test_wscat_habit_dash_l(wsgate: Spawn) -> None:
    proc = wsgate(["-l", "0"], stdin=subprocess.PIPE)
    match = proc.expect(r"^Listening on port (\d+) ", stream="err")
    with client(int(match.group(1))) as ws:
        ws.send("habit")
        proc.expect("^habit$", stream="out")


def test_a_second_client_is_refused_while_one_is_connected(wsgate: Spawn) -> None:
    server, port = start_listen(wsgate)
    with client(port) as first:
        server.expect("^Client connected$", stream="err")
        second = run_wsgate("connect", f"127.0.0.1:{port}", "-w", "-1", "-x", "me too")
        assert second.returncode == 1
        assert second.stderr.splitlines()[-1] == (
            "error: connection closed abnormally with code 1006"
        )
        first.send("still here")
        server.expect("^still here$", stream="out")
        type_line(server, "to the first")
        assert first.recv(timeout=5) == "to the first"
    server.expect(r"^Disconnected \(code: 1000", stream="err")
    # Once the first has gone, the next client is welcome.
    with client(port) as third:
        third.send("third")
        server.expect("^third$", stream="out")
    assert "me too" not in server.out


def test_piped_lines_wait_for_a_client(wsgate: Spawn) -> None:
    server, port = start_listen(wsgate)
    type_line(server, "queued one")
    type_line(server, "queued two")
    with client(port) as ws:
        assert ws.recv(timeout=5) == "queued one"
        assert ws.recv(timeout=5) == "queued two"


def test_end_of_piped_input_waits_for_a_client_then_closes_it_and_exits(
    wsgate: Spawn,
) -> None:
    server, port = start_listen(wsgate)
    type_line(server, "queued one")
    type_line(server, "queued two")
    assert server.popen.stdin is not None
    server.popen.stdin.close()
    with client(port) as ws:
        assert ws.recv(timeout=5) == "queued one"
        assert ws.recv(timeout=5) == "queued two"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    server.drain()
    assert server.popen.returncode == 0
    assert server.err == [f"Listening on port {port} (press CTRL+C to quit)",
                          "Client connected", 'Disconnected (code: 1000, reason: "")']


def test_end_of_piped_input_with_wait_minus_one_lets_the_client_finish(wsgate: Spawn) -> None:
    server, port = start_listen(wsgate, "-w", "-1")
    with client(port) as ws:
        server.expect("^Client connected$", stream="err")
        type_line(server, "last words")
        assert server.popen.stdin is not None
        server.popen.stdin.close()
        assert ws.recv(timeout=5) == "last words"
        ws.send("reply one")
        ws.send("reply two")
    server.drain()
    assert server.popen.returncode == 0
    assert server.out == ["reply one", "reply two"]
    assert server.err[-1] == 'Disconnected (code: 1000, reason: "")'


def test_quiet_listen_prints_no_status_lines(wsgate: Spawn) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = wsgate(["listen", str(port), "-q"], stdin=subprocess.PIPE)
    ws = None
    for _ in range(50):
        try:
            ws = client(port)
            break
        except OSError:
            time.sleep(0.1)
    assert ws is not None
    with ws:
        ws.send("quietly")
        server.expect("^quietly$", stream="out")
    server.signal(signal.SIGTERM)
    server.drain()
    assert (server.popen.returncode, server.err) == (0, [])


def test_sigterm_closes_the_client_with_1000(wsgate: Spawn) -> None:
    server, port = start_listen(wsgate)
    with client(port) as ws:
        server.expect("^Client connected$", stream="err")
        server.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000
    server.drain()
    assert server.popen.returncode == 0
    assert server.err[-1] == 'Disconnected (code: 1000, reason: "")'


def test_binary_json_slash_and_ping_pong(wsgate: Spawn) -> None:
    server, port = start_listen(wsgate, "-b", "--json", "--slash", "-P")
    with client(port) as ws:
        ws.send(b"\x00raw")
        server.expect("raw$", stream="out")
        ws.send('{"k":[1]}')
        server.expect(r"^\}$", stream="out")
        assert server.out[-5:] == ["{", '  "k": [', "    1", "  ]", "}"]
        ws.ping(b"are you there").wait(5)
        server.expect(r'^Received ping \(data: "are you there"\)$', stream="out")
        type_line(server, "as bytes")
        assert ws.recv(timeout=5) == b"as bytes"
        type_line(server, "/close 4002 done")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "done")
    server.expect(r'^Disconnected \(code: 4002, reason: "done"\)$', stream="err")
    # The line after /close is kept for the next client.
    type_line(server, "for the next one")
    with client(port) as ws:
        assert ws.recv(timeout=5) == b"for the next one"


def test_interactive_listen(terminals: Terminals) -> None:
    child = terminals.spawn("listen", "0", "--no-color")
    child.expect(r"Listening on port (\d+) \(press CTRL\+C to quit\)")
    port = int(child.match.group(1))
    child.sendline("nobody here")
    child.expect_exact("error: no client connected")
    with client(port) as ws:
        child.expect_exact("Client connected")
        ws.send("hi there")
        child.expect_exact("< hi there")
        child.sendline("hello client")
        assert ws.recv(timeout=5) == "hello client"
        child.sendcontrol("c")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    child.expect_exact('Disconnected (code: 1000, reason: "")')
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_interactive_listen_colours(terminals: Terminals) -> None:
    child = terminals.spawn("listen", "0")
    child.expect(r"\x1b\[32mListening on port (\d+) \(press CTRL\+C to quit\)\x1b\[39m")
    with client(int(child.match.group(1))) as ws:
        ws.send("blue")
        child.expect_exact("\x1b[34m< blue\x1b[39m")
    child.expect_exact("\x1b[32mDisconnected (code: 1000")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)


def test_port_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_wsgate("listen", str(port))
    assert result.returncode == 1
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["70000"], 'error: argument PORT: port must be a number from 0 to 65535, got "70000"'),
        (["http"], 'error: argument PORT: port must be a number from 0 to 65535, got "http"'),
        (["-l", "x"], 'error: argument -l/--listen: port must be a number'),
        ([], "error: a port is needed"),
        (["1", "-l", "2"], "error: give the port once"),
        (["0", "--ping-interval", "x"], "error: argument --ping-interval: must be a duration"),
        (["0", "-w", "x"], "error: argument -w/--wait: must be a duration"),
    ],
)
def test_listen_usage_errors(argv: list[str], message: str) -> None:
    result = run_wsgate("listen", *argv)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(message)
    assert result.stderr.endswith(" (see wsgate listen --help)\n")
