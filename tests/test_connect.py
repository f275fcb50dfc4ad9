"""``wsgate connect``: the seed's wscat session, wscat's flags, pipe mode, and every failure.

Each test runs the real ``wsgate`` as a subprocess (piped, or at a pseudo-terminal with
pexpect) against a real server on 127.0.0.1 port 0: the seed's server.js, or a
websockets server in a background thread that records what it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.server import ServerConnection

from client_helpers import (
    LoopThread,
    Seen,
    Terminals,
    WsServer,
    echo,
    free_port,
    http_response,
    loop_thread,
    pty_env,
    start_connect_proxy,
    start_deaf,
    start_http,
    start_silent,
    start_ws_server,
    stop_ws_server,
    wait_item,
)
from conftest import Proc, Spawn, run_wsgate, wsgate_command

SERVER_JS_REPLY = "Server received from client: Hello"
DISCONNECTED = 'Disconnected (code: 1000, reason: "")'

#: websockets servers answer a Close that arrives together with a message before their
#: handler can reply to the message (Node's ws replies first), so piped runs against
#: them linger a moment after the end of input before closing.
SETTLE = ("-w", "0.3")


@pytest.fixture(scope="module")
def aio() -> Iterator[LoopThread]:
    with loop_thread() as thread:
        yield thread


@pytest.fixture
def echo_server(aio: LoopThread) -> Iterator[WsServer]:
    server = start_ws_server(aio)
    yield server
    stop_ws_server(aio, server)


def lines(text: str) -> list[str]:
    return text.splitlines()


# -- the seed's transcript ----------------------------------------------------------------------


def test_pipe_mode_against_server_js(node_echo: tuple[Proc, int]) -> None:
    _, port = node_echo
    result = run_wsgate("connect", f"127.0.0.1:{port}", input="Hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SERVER_JS_REPLY + "\n"
    assert lines(result.stderr) == ["Connected (press CTRL+C to quit)", DISCONNECTED]


def test_pipe_mode_prints_every_reply_before_exiting(node_echo: tuple[Proc, int]) -> None:
    _, port = node_echo
    sent = [f"line {n}" for n in range(200)]
    result = run_wsgate("connect", f"ws://127.0.0.1:{port}", "-q", input="\n".join(sent))
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [f"Server received from client: {line}" for line in sent]
    assert result.stderr == ""


def test_dash_c_works_after_connect_and_on_its_own(node_echo: tuple[Proc, int]) -> None:
    _, port = node_echo
    for argv in (["connect", "-c", f"127.0.0.1:{port}"], ["-c", f"ws://127.0.0.1:{port}"],
                 [f"--connect=127.0.0.1:{port}"]):
        result = run_wsgate(*argv, input="Hello\n")
        assert (result.returncode, result.stdout) == (0, SERVER_JS_REPLY + "\n"), argv


@pytest.mark.parametrize("how", ["/close", "ctrl-c", "ctrl-d"])
def test_interactive_session_against_server_js(
    node_echo: tuple[Proc, int], terminals: Terminals, how: str
) -> None:
    _, port = node_echo
    child = terminals.spawn("connect", f"127.0.0.1:{port}", "--slash", "--no-color")
    child.expect_exact("Connected (press CTRL+C to quit)")
    child.expect_exact(">")
    child.sendline("Hello")
    child.expect_exact("< " + SERVER_JS_REPLY)
    if how == "/close":
        child.sendline("/close")
    else:
        child.sendcontrol(how[-1])
    child.expect_exact(DISCONNECTED)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_interactive_colours_are_wscats(node_echo: tuple[Proc, int], terminals: Terminals) -> None:
    _, port = node_echo
    child = terminals.spawn("connect", f"127.0.0.1:{port}", "--slash")
    child.expect_exact("\x1b[32mConnected (press CTRL+C to quit)\x1b[39m")
    child.sendline("Hello")
    child.expect_exact("\x1b[34m< " + SERVER_JS_REPLY + "\x1b[39m")
    child.sendline("/nope")
    child.expect_exact("\x1b[33merror: Unrecognized slash command.\x1b[39m")
    child.sendcontrol("d")
    child.expect_exact("\x1b[32m" + DISCONNECTED)
    child.expect(pexpect.EOF)


def test_no_color_env_turns_colour_off(
    node_echo: tuple[Proc, int], terminals: Terminals, tmp_path: Path
) -> None:
    _, port = node_echo
    child = terminals.spawn("connect", f"127.0.0.1:{port}", env=pty_env(tmp_path, NO_COLOR="1"))
    child.expect("(.*)Connected")
    assert "\x1b[32m" not in child.match.group(1)
    child.sendcontrol("c")
    child.expect(pexpect.EOF)


def test_incoming_messages_do_not_break_the_line_being_typed(
    aio: LoopThread, terminals: Terminals
) -> None:
    async def push_on_request(connection: ServerConnection, seen: Seen) -> None:
        async for message in connection:
            seen.messages.put(message)
            if message == "push":
                await connection.send("tick")

    server = start_ws_server(aio, push_on_request)
    child = terminals.spawn("connect", server.url, "--no-color")
    child.expect_exact(">")
    child.sendline("push")
    assert wait_item(server.seen.messages) == "push"
    child.send("half a li")
    child.expect_exact("< tick")
    child.send("ne\r")
    assert wait_item(server.seen.messages) == "half a line"
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    stop_ws_server(aio, server)


def test_history_is_kept_between_sessions(
    echo_server: WsServer, terminals: Terminals, tmp_path: Path
) -> None:
    history = tmp_path / "deep" / "history"
    child = terminals.spawn("connect", echo_server.url, "--history-file", str(history))
    child.expect_exact(">")
    child.sendline("remember me")
    child.expect_exact("< echo: remember me")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    assert "+remember me" in history.read_text()

    child = terminals.spawn("connect", echo_server.url, "--history-file", str(history))
    child.expect_exact(">")
    child.send("\x1b[A")  # up arrow
    child.expect_exact("remember me")
    child.send("\r")
    child.expect_exact("< echo: remember me")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)


def test_default_history_lives_in_xdg_state_home(
    echo_server: WsServer, terminals: Terminals, tmp_path: Path
) -> None:
    child = terminals.spawn("connect", echo_server.url)
    child.expect_exact(">")
    child.sendline("stored")
    child.expect_exact("< echo: stored")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    assert "+stored" in (tmp_path / "state" / "wsgate" / "history").read_text()


# -- wscat's flags ------------------------------------------------------------------------------


def test_headers_auth_origin_host_and_subprotocols(aio: LoopThread) -> None:
    server = start_ws_server(aio, subprotocols=["superchat", "chat"])
    result = run_wsgate(
        "connect", server.url + "/path?q=1", "-H", "X-One: 1", "--header", "X-Two:two",
        "--auth", "user:pa:ss", "-o", "https://example.com", "--host", "virtual.example",
        "-s", "chat", "--subprotocol", "superchat", *SETTLE, input="hi\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: hi\n"
    request = server.seen.requests[0]
    assert request.path == "/path?q=1"
    headers = request.headers
    assert headers["X-One"] == "1"
    assert headers["X-Two"] == "two"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"user:pa:ss").decode()
    assert headers["Origin"] == "https://example.com"
    assert headers.get_all("Host") == ["virtual.example"]
    assert headers["Sec-WebSocket-Protocol"] == "chat, superchat"
    assert server.seen.subprotocols == ["superchat"]
    stop_ws_server(aio, server)


def test_a_header_replaces_the_one_websockets_would_send(echo_server: WsServer) -> None:
    result = run_wsgate("connect", echo_server.url, "-H", "Host: other", "-H", "User-Agent: me",
                        input="")
    assert result.returncode == 0, result.stderr
    headers = echo_server.seen.requests[0].headers
    assert headers.get_all("Host") == ["other"]
    assert headers.get_all("User-Agent") == ["me"]


def test_execute_sends_in_order_then_closes_after_wait(echo_server: WsServer) -> None:
    started = time.monotonic()
    result = run_wsgate("connect", echo_server.url, "-x", "one", "-x", "two",
                        "--execute", "three", "-w", "300ms")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["echo: one", "echo: two", "echo: three"]
    assert [wait_item(echo_server.seen.messages) for _ in range(3)] == ["one", "two", "three"]
    assert wait_item(echo_server.seen.closes) == (1000, "")
    assert time.monotonic() - started < 5


def test_execute_waits_two_seconds_by_default(echo_server: WsServer) -> None:
    started = time.monotonic()
    result = run_wsgate("connect", echo_server.url, "-x", "hi")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: hi\n"
    assert 2 <= elapsed < 6


@pytest.mark.parametrize(("wait", "sees_late_reply"), [("-1", True), ("200ms", False)])
def test_wait_minus_one_holds_the_connection_open(
    aio: LoopThread, wait: str, sees_late_reply: bool
) -> None:
    async def late_reply(connection: ServerConnection, seen: Seen) -> None:
        await connection.recv()
        try:
            await asyncio.wait_for(connection.wait_closed(), 1.0)
        except TimeoutError:
            await connection.send("late reply")
            await connection.close()

    server = start_ws_server(aio, late_reply)
    result = run_wsgate("connect", server.url, "-x", "hi", "-w", wait)
    assert result.returncode == 0, result.stderr
    assert ("late reply" in result.stdout) is sees_late_reply
    stop_ws_server(aio, server)


def test_pipe_mode_waits_after_end_of_input_when_asked(aio: LoopThread) -> None:
    async def delayed(connection: ServerConnection, seen: Seen) -> None:
        async for message in connection:
            await asyncio.sleep(0.5)
            await connection.send(f"slow {message}")

    server = start_ws_server(aio, delayed)
    result = run_wsgate("connect", server.url, "-w", "1", input="a\n")
    assert (result.returncode, result.stdout) == (0, "slow a\n"), result.stderr
    stop_ws_server(aio, server)


def test_slash_commands_send_control_frames(echo_server: WsServer) -> None:
    script = "/ping abc\n/pong xyz\nhello\n/nope\n/close 4001 bye now\nnot sent\n"
    result = run_wsgate("connect", echo_server.url, "--slash", "-P", input=script)
    assert result.returncode == 0, result.stderr
    # The echo of "hello" may lose the race with /close (see SETTLE); the pong cannot.
    assert lines(result.stdout)[0] == 'Received pong (data: "abc")'
    assert wait_item(echo_server.seen.messages) == "hello"
    assert echo_server.seen.messages.empty()
    assert wait_item(echo_server.seen.pings) == b"abc"
    assert wait_item(echo_server.seen.pongs) == b"xyz"
    assert wait_item(echo_server.seen.closes) == (4001, "bye now")
    assert lines(result.stderr) == [
        "Connected (press CTRL+C to quit)",
        "error: Unrecognized slash command.",
        'Disconnected (code: 4001, reason: "bye now")',
    ]


def test_without_slash_a_slash_line_is_a_message(echo_server: WsServer) -> None:
    result = run_wsgate("connect", echo_server.url, *SETTLE, input="/close\n")
    assert result.stdout == "echo: /close\n"


def test_show_ping_pong_prints_pings_from_the_server(aio: LoopThread) -> None:
    async def pinger(connection: ServerConnection, seen: Seen) -> None:
        pong = await connection.ping(b"hi")
        await pong
        await connection.send("pinged")
        await connection.wait_closed()

    server = start_ws_server(aio, pinger)
    result = run_wsgate("connect", server.url, "-P", "-x", "x", "-w", "0.5")
    assert lines(result.stdout) == ['Received ping (data: "hi")', "pinged"]
    quiet = run_wsgate("connect", server.url, "-x", "x", "-w", "0.5")
    assert lines(quiet.stdout) == ["pinged"]
    stop_ws_server(aio, server)


def test_ping_interval_sends_pings(echo_server: WsServer) -> None:
    result = run_wsgate("connect", echo_server.url, "--ping-interval", "0.2", "-w", "1",
                        "-P", input="")
    assert result.returncode == 0, result.stderr
    assert echo_server.seen.pings.qsize() >= 3
    assert "Received pong" in result.stdout


def test_binary_sends_frames_and_prints_raw_bytes_in_pipe_mode(echo_server: WsServer) -> None:
    result = subprocess.run(
        [*wsgate_command(), "connect", echo_server.url, "-b", "-q", *SETTLE],
        input=b"hello\n\xff\xfe\x00\n", capture_output=True, timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert wait_item(echo_server.seen.messages) == b"hello"
    assert wait_item(echo_server.seen.messages) == b"\xff\xfe\x00"
    assert result.stdout == b"hello\n\xff\xfe\x00\n"


def test_a_terminal_shows_what_the_server_sends_escaped(
    aio: LoopThread, terminals: Terminals
) -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J hi"

    async def attack(connection: ServerConnection, seen: Seen) -> None:
        await connection.send(hostile)
        await connection.send('{"k":"\x9b31m"}')
        await connection.ping(hostile.encode())
        await connection.recv()
        await connection.close(1000, "bye\x1b[2J")

    server = start_ws_server(aio, attack)
    child = terminals.spawn("connect", server.url, "--no-color", "--json", "-P")
    screen = io.StringIO()
    child.logfile_read = screen
    child.expect_exact("< \\x1b]0;pwned\\x07\\x1b[2J hi")
    child.expect_exact('  "k": "\\x9b31m"')  # pretty JSON keeps its lines, not the C1
    child.expect_exact('< Received ping (data: "\\x1b]0;pwned\\x07\\x1b[2J hi")')
    child.sendline("done")
    child.expect_exact('Disconnected (code: 1000, reason: "bye\\x1b[2J")')
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "\x1b]0;pwned" not in screen.getvalue()
    assert "\x9b" not in screen.getvalue()
    stop_ws_server(aio, server)


def test_binary_shows_hex_on_a_terminal(echo_server: WsServer, terminals: Terminals) -> None:
    child = terminals.spawn("connect", echo_server.url, "-b", "--no-color")
    child.expect_exact(">")
    child.sendline("hi")
    child.expect_exact("< [binary, 2 bytes] 68 69")
    child.sendcontrol("c")
    child.expect(pexpect.EOF)


def test_json_is_pretty_printed(aio: LoopThread) -> None:
    async def send_json(connection: ServerConnection, seen: Seen) -> None:
        await connection.send('{"a":1,"b":[true,null]}')
        await connection.send("not json")
        await connection.wait_closed()

    server = start_ws_server(aio, send_json)
    result = run_wsgate("connect", server.url, "--json", "-w", "0.3", input="")
    assert result.stdout == '{\n  "a": 1,\n  "b": [\n    true,\n    null\n  ]\n}\nnot json\n'
    stop_ws_server(aio, server)


def test_follows_redirects_with_location(aio: LoopThread, echo_server: WsServer) -> None:
    moved = http_response("301 Moved Permanently", {"Location": echo_server.url + "/moved"})
    port = start_http(aio, moved)
    result = run_wsgate("connect", f"127.0.0.1:{port}", "-L", *SETTLE, input="hi\n")
    assert (result.returncode, result.stdout) == (0, "echo: hi\n"), result.stderr
    assert echo_server.seen.requests[0].path == "/moved"

    result = run_wsgate("connect", f"127.0.0.1:{port}", input="hi\n")
    assert result.returncode == 1
    assert result.stderr == (
        "error: server rejected the WebSocket handshake: HTTP 301 Moved Permanently\n"
    )


def test_max_redirects(aio: LoopThread, echo_server: WsServer) -> None:
    second = start_http(aio, http_response("302 Found", {"Location": echo_server.url}))
    first = start_http(aio, http_response("307 Temporary Redirect",
                                          {"Location": f"http://127.0.0.1:{second}/"}))
    ok = run_wsgate("connect", f"127.0.0.1:{first}", "-L", "--max-redirects", "2", input="")
    assert ok.returncode == 0, ok.stderr
    too_many = run_wsgate("connect", f"127.0.0.1:{first}", "-L", "--max-redirects", "1",
                          input="")
    assert too_many.returncode == 1
    assert too_many.stderr == "error: too many redirects (more than --max-redirects 1)\n"


def test_proxy_tunnels_with_connect(aio: LoopThread, echo_server: WsServer) -> None:
    proxy = start_connect_proxy(aio)
    result = run_wsgate("connect", echo_server.url, "--proxy", f"127.0.0.1:{proxy.port}",
                        *SETTLE, input="through\n")
    assert (result.returncode, result.stdout) == (0, "echo: through\n"), result.stderr
    assert proxy.requests == [f"CONNECT 127.0.0.1:{echo_server.port} HTTP/1.1"]


def test_proxy_refusing_is_one_line(aio: LoopThread, echo_server: WsServer) -> None:
    proxy = start_connect_proxy(aio, reject="407 Proxy Authentication Required")
    result = run_wsgate("connect", echo_server.url, "--proxy", f"http://127.0.0.1:{proxy.port}",
                        input="")
    assert result.returncode == 1
    assert result.stderr == (
        "error: proxy rejected the CONNECT request: HTTP 407 Proxy Authentication Required\n"
    )
    port = free_port()
    result = run_wsgate("connect", echo_server.url, "--proxy", f"127.0.0.1:{port}", input="")
    assert result.returncode == 1
    assert result.stderr == f"error: connection refused: 127.0.0.1:{port}\n"


def test_reconnect_backs_off_while_the_server_is_down(wsgate: Spawn) -> None:
    port = free_port()
    proc = wsgate(["connect", f"127.0.0.1:{port}", "--reconnect"], stdin=subprocess.PIPE)
    proc.expect(f"^error: connection refused: 127.0.0.1:{port}$", stream="err")
    proc.expect(r"^Reconnecting in 0\.5s$", stream="err")
    proc.expect(r"^Reconnecting in 1\.0s$", stream="err")
    proc.signal(signal.SIGTERM)
    proc.drain()
    assert proc.popen.returncode == 0


def test_reconnect_after_an_abnormal_close(aio: LoopThread, wsgate: Spawn) -> None:
    async def drop_the_first(connection: ServerConnection, seen: Seen) -> None:
        if seen.connections == 1:
            connection.transport.abort()
            return
        await echo(connection, seen)

    server = start_ws_server(aio, drop_the_first)
    proc = wsgate(["connect", server.url, "--reconnect", *SETTLE], stdin=subprocess.PIPE)
    proc.expect(r"^Disconnected \(code: 1006", stream="err")
    proc.expect("^error: connection closed abnormally with code 1006$", stream="err")
    proc.expect(r"^Reconnecting in 0\.5s$", stream="err")
    proc.expect("^Connected", stream="err")
    assert proc.popen.stdin is not None
    proc.popen.stdin.write("back\n")
    proc.popen.stdin.close()
    proc.expect("^echo: back$", stream="out")
    proc.drain()
    assert proc.popen.returncode == 0
    stop_ws_server(aio, server)


def test_reconnect_is_announced_at_the_prompt(terminals: Terminals) -> None:
    port = free_port()
    child = terminals.spawn("connect", f"127.0.0.1:{port}", "--reconnect", "--no-color")
    child.expect_exact(f"error: connection refused: 127.0.0.1:{port}")
    child.expect_exact("Reconnecting in 0.5s")
    child.expect_exact("Reconnecting in 1.0s")
    child.kill(signal.SIGINT)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem",
             "key": tmp_path / "client.key", "locked": tmp_path / "locked.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client = ca.issue_cert("client@example.com")
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    files["locked"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"sesame"),
    ))
    return files


def _tls_server(aio: LoopThread, ca: trustme.CA, *, client_certs: bool = False) -> WsServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_certs:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return start_ws_server(aio, ssl=context)


def test_tls_with_ca_and_no_check(aio: LoopThread, ca: trustme.CA,
                                  tls_files: dict[str, Path]) -> None:
    server = _tls_server(aio, ca)
    trusted = run_wsgate("connect", server.url, "--ca", str(tls_files["ca"]), *SETTLE,
                         input="s\n")
    assert (trusted.returncode, trusted.stdout) == (0, "echo: s\n"), trusted.stderr

    untrusted = run_wsgate("connect", server.url, input="s\n")
    assert untrusted.returncode == 1
    assert re.fullmatch(r"error: TLS error: certificate verify failed: .+\n", untrusted.stderr)

    unchecked = run_wsgate("connect", server.url, "-n", *SETTLE, input="s\n")
    assert (unchecked.returncode, unchecked.stdout) == (0, "echo: s\n"), unchecked.stderr
    stop_ws_server(aio, server)


def test_tls_client_certificates(aio: LoopThread, ca: trustme.CA,
                                 tls_files: dict[str, Path]) -> None:
    server = _tls_server(aio, ca, client_certs=True)
    ca_file = str(tls_files["ca"])
    result = run_wsgate("connect", server.url, "--ca", ca_file, "--cert", str(tls_files["cert"]),
                        "--key", str(tls_files["key"]), *SETTLE, input="c\n")
    assert (result.returncode, result.stdout) == (0, "echo: c\n"), result.stderr

    locked = run_wsgate("connect", server.url, "--ca", ca_file, "--cert", str(tls_files["cert"]),
                        "--key", str(tls_files["locked"]), "--passphrase", "sesame", *SETTLE,
                        input="l\n")
    assert (locked.returncode, locked.stdout) == (0, "echo: l\n"), locked.stderr

    wrong = run_wsgate("connect", server.url, "--ca", ca_file, "--cert", str(tls_files["cert"]),
                       "--key", str(tls_files["locked"]), "--passphrase", "nope", input="")
    assert wrong.returncode == 2
    assert wrong.stderr == (
        "error: cannot use --cert/--key: the key could not be decrypted (wrong --passphrase?)"
        " (see wsgate connect --help)\n"
    )

    missing = run_wsgate("connect", server.url, "--ca", ca_file, input="")
    assert missing.returncode == 1
    assert re.fullmatch(r"error: (TLS error|WebSocket handshake with .* failed): .+\n",
                        missing.stderr)
    stop_ws_server(aio, server)


def test_passphrase_is_asked_for_on_a_terminal(
    aio: LoopThread, ca: trustme.CA, tls_files: dict[str, Path], terminals: Terminals
) -> None:
    server = _tls_server(aio, ca, client_certs=True)
    child = terminals.spawn("connect", server.url, "--ca", str(tls_files["ca"]), "--cert",
                            str(tls_files["cert"]), "--key", str(tls_files["locked"]),
                            "--passphrase", "--no-color")
    child.expect_exact("Passphrase: ")
    child.sendline("sesame")
    child.expect_exact("Connected (press CTRL+C to quit)")
    child.sendline("tls")
    child.expect_exact("< echo: tls")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    stop_ws_server(aio, server)


# -- failures: exact messages and statuses ------------------------------------------------------


def test_connection_refused() -> None:
    port = free_port()
    result = run_wsgate("connect", f"127.0.0.1:{port}", input="")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"error: connection refused: 127.0.0.1:{port}\n"


def test_handshake_rejected_by_a_502(aio: LoopThread) -> None:
    port = start_http(aio, http_response("502 Bad Gateway", body=b"upstream down"))
    result = run_wsgate("connect", f"ws://127.0.0.1:{port}/", input="")
    assert result.returncode == 1
    assert result.stderr == "error: server rejected the WebSocket handshake: HTTP 502 Bad Gateway\n"


def test_dns_failure() -> None:
    result = run_wsgate("connect", "ws://nosuchhost.invalid/", "--timeout", "5s", input="")
    assert result.returncode == 1
    assert re.fullmatch(r"error: DNS lookup failed for nosuchhost\.invalid: .+\n", result.stderr)


def test_handshake_timeout(aio: LoopThread) -> None:
    port = start_silent(aio)
    result = run_wsgate("connect", f"127.0.0.1:{port}", "--timeout", "500ms", input="")
    assert result.returncode == 1
    assert result.stderr == f"error: timed out connecting to 127.0.0.1:{port}\n"


@pytest.mark.parametrize(
    ("code", "reason", "status", "message"),
    [
        (None, "", 1, "error: connection closed abnormally with code 1006"),
        (1011, "boom", 1, 'error: connection closed abnormally with code 1011 (reason: "boom")'),
        (4000, "", 1, "error: connection closed abnormally with code 4000"),
        (1001, "bye", 0, None),
        (1000, "", 0, None),
    ],
)
def test_how_the_server_closes_decides_the_status(
    aio: LoopThread, code: int | None, reason: str, status: int, message: str | None
) -> None:
    async def close_it(connection: ServerConnection, seen: Seen) -> None:
        await connection.recv()
        if code is None:
            connection.transport.abort()
        else:
            await connection.close(code, reason)

    server = start_ws_server(aio, close_it)
    result = run_wsgate("connect", server.url, "-w", "-1", "-x", "go")
    assert result.returncode == status
    err = lines(result.stderr)
    assert err[1] == f'Disconnected (code: {code or 1006}, reason: "{reason}")'
    assert err[2:] == ([message] if message else [])
    stop_ws_server(aio, server)


def test_abnormal_close_at_the_prompt(aio: LoopThread, terminals: Terminals) -> None:
    async def abort(connection: ServerConnection, seen: Seen) -> None:
        await connection.recv()
        connection.transport.abort()

    server = start_ws_server(aio, abort)
    child = terminals.spawn("connect", server.url, "--no-color")
    child.expect_exact(">")
    child.sendline("bye")
    child.expect_exact('Disconnected (code: 1006, reason: "")')
    child.expect_exact("error: connection closed abnormally with code 1006")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    stop_ws_server(aio, server)


def test_sigint_in_pipe_mode_closes_cleanly(echo_server: WsServer, wsgate: Spawn) -> None:
    proc = wsgate(["connect", echo_server.url], stdin=subprocess.PIPE)
    proc.expect("^Connected", stream="err")
    proc.signal(signal.SIGINT)
    proc.expect(r"^Disconnected \(code: 1000", stream="err")
    proc.drain()
    assert proc.popen.returncode == 0
    assert wait_item(echo_server.seen.closes) == (1000, "")


def test_a_second_sigint_gives_up_on_the_close_handshake(aio: LoopThread, wsgate: Spawn) -> None:
    port = start_deaf(aio)
    proc = wsgate(["connect", f"127.0.0.1:{port}"], stdin=subprocess.PIPE)
    proc.expect("^Connected", stream="err")
    proc.signal(signal.SIGINT)
    time.sleep(0.3)
    proc.signal(signal.SIGINT)
    _, err = proc.drain()
    assert proc.popen.returncode == 130
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["http://127.0.0.1:1"], "error: bad URL scheme http:// in http://127.0.0.1:1 "
                                 "(use ws:// or wss://)"),
        (["ftp://127.0.0.1:1"], "error: bad URL scheme ftp://"),
        (["ws://127.0.0.1:1", "-H", "NoColon"], "error: bad header 'NoColon'"),
        (["ws://127.0.0.1:1", "--auth", "nocolon"], "error: bad --auth value 'nocolon'"),
        (["ws://127.0.0.1:1", "--ca", "/nonexistent/ca.pem"],
         "error: cannot read --ca file /nonexistent/ca.pem: No such file or directory"),
        (["ws://127.0.0.1:1", "--cert", "/nonexistent/c.pem"], "error: cannot read --cert"),
        (["ws://127.0.0.1:1", "--key", "k.pem"], "error: --key needs --cert"),
        (["ws://127.0.0.1:1", "-w", "abc"],
         'error: argument -w/--wait: must be a duration like "60s", "5m" or "500ms", or -1 '
         'to hold the connection open, got "abc"'),
        (["ws://127.0.0.1:1", "-w", "-3"], "error: argument -w/--wait: must be a duration"),
        (["ws://127.0.0.1:1", "--ping-interval", "often"],
         "error: argument --ping-interval: must be a duration"),
        (["ws://127.0.0.1:1", "--timeout", "0"],
         'error: argument --timeout: must be more than 0, got "0"'),
        (["ws://127.0.0.1:1", "--proxy", "socks5://p:1"], "error: bad --proxy"),
        (["ws://127.0.0.1:1", "-p", "8"], "error: bad --protocol 8"),
        (["ws://127.0.0.1:1", "-c", "ws://127.0.0.1:2"], "error: give the URL once"),
        ([], "error: a URL is needed"),
        (["ws://127.0.0.1:1", "--max-redirects", "x"],
         "error: argument --max-redirects: invalid int value: 'x'"),
    ],
)
def test_usage_errors_are_one_line_and_status_2(argv: list[str], message: str) -> None:
    result = run_wsgate("connect", *argv, input="")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(lines(result.stderr)) == 1, result.stderr
    assert result.stderr.startswith(message)
    assert result.stderr.endswith(" (see wsgate connect --help)\n")


def test_help_documents_binary_output() -> None:
    result = run_wsgate("connect", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "hex on a terminal, raw bytes plus a newline in pipe mode" in text
    for flag in ("--header", "--auth", "--origin", "--host", "--subprotocol", "--no-check",
                 "--ca", "--cert", "--key", "--passphrase", "--execute", "--wait", "--slash",
                 "--show-ping-pong", "--location", "--max-redirects", "--proxy", "--binary",
                 "--json", "--ping-interval", "--reconnect", "--history-file", "--no-color"):
        assert flag in text, flag


def test_no_traceback_when_stdin_is_a_file(echo_server: WsServer, tmp_path: Path) -> None:
    script = tmp_path / "in.txt"
    script.write_text("from a file\r\nsecond")
    with script.open("rb") as stdin:
        result = subprocess.run([*wsgate_command(), "connect", echo_server.url, *SETTLE],
                                stdin=stdin,
                                capture_output=True, text=True, timeout=20,
                                env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["echo: from a file", "echo: second"]
