"""``wsgate echo`` end to end: the seed's strings, its flags, keepalive, limits, shutdown."""

from __future__ import annotations

import signal
import socket
import time

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect
from websockets.uri import parse_uri

from conftest import Spawn, run_held_open, run_wsgate, start_echo

SEED = "Server received from client: "


def test_seed_transcript_and_log(wsgate: Spawn) -> None:
    proc, port = start_echo(wsgate)
    assert proc.out[0] == "Server started"
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send("Hello")
        assert ws.recv(timeout=5) == SEED + "Hello"
        ws.send("Welcome to www.hi-linux.com")
        assert ws.recv(timeout=5) == SEED + "Welcome to www.hi-linux.com"
    proc.expect(r"^Received from client: Hello$")
    proc.expect(r"^Received from client: Welcome to www.hi-linux.com$")


def test_several_ports_from_one_command(wsgate: Spawn) -> None:
    proc = wsgate(["echo", "--port", "0", "--port", "0"])
    ports = {int(proc.expect(r"Listening on ws://127\.0\.0\.1:(\d+)").group(1)) for _ in range(2)}
    assert len(ports) == 2
    for port in ports:
        with connect(f"ws://127.0.0.1:{port}") as ws:
            ws.send(f"to {port}")
            assert ws.recv(timeout=5) == f"{SEED}to {port}"


def test_binary_is_answered_in_kind(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate)
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == SEED.encode() + b"\x00\x01\xff"


def test_prefix(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--prefix", "echo: ")
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "echo: hi"


def test_raw_replies_unchanged_text_as_text_binary_as_binary(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--raw")
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\xfe\xff")
        assert ws.recv(timeout=5) == b"\xfe\xff"


def test_fragmented_message_is_reassembled(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--raw")
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send(iter(["frag", "ment", "ed"]))
        assert ws.recv(timeout=5) == "fragmented"


def test_subprotocol_first_offered_is_accepted(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate)
    with connect(f"ws://127.0.0.1:{port}", subprotocols=["chat", "superchat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"


def test_quiet_logs_nothing_per_message(wsgate: Spawn) -> None:
    proc, port = start_echo(wsgate, "--quiet")
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send("secret")
        assert ws.recv(timeout=5) == SEED + "secret"
    proc.signal(signal.SIGTERM)
    out, _err = proc.drain()
    assert "Received" not in out


def test_max_size_closes_with_1009(wsgate: Spawn) -> None:
    # Sizes and durations take the one syntax of every command (and the proxy's config).
    _proc, port = start_echo(wsgate, "--max-size", "1k", "--ping-interval", "20s",
                             "--ping-timeout", "1m30s")
    with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        ws.send("x" * 1024)
        assert ws.recv(timeout=5) == SEED + "x" * 1024
        ws.send("x" * 1025)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_max_size_counts_every_fragment(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--max-size", "1k")
    with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        ws.send(iter(["x" * 600, "x" * 600]))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_invalid_utf8_text_closes_with_1007(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate)
    with raw_client(port) as (sock, protocol):
        protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))
        sock.sendall(b"".join(protocol.data_to_send()))
        close = wait_for_frame(sock, protocol, Opcode.CLOSE)
    assert int.from_bytes(close.data[:2], "big") == 1007


class raw_client:
    """A socket driven by websockets' Sans-I/O client, so a test sees every frame
    (pings included) and decides itself whether to answer."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> tuple[socket.socket, ClientProtocol]:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{self.port}"))
        protocol.send_request(protocol.connect())
        self.sock.sendall(b"".join(protocol.data_to_send()))
        while protocol.handshake_exc is None and not protocol.events_received():
            protocol.receive_data(self.sock.recv(65536))
            if protocol.state.name == "OPEN":
                break
        protocol.data_to_send()  # nothing to answer yet
        return self.sock, protocol

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def wait_for_frame(sock: socket.socket, protocol: ClientProtocol, opcode: Opcode,
                   timeout: float = 5) -> Frame:
    """Read until a frame with ``opcode`` arrives; answers nothing on its own."""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while time.monotonic() < deadline:
        for event in protocol.events_received():
            if isinstance(event, Frame) and event.opcode is opcode:
                return event
        data = sock.recv(65536)
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
    raise AssertionError(f"no {opcode.name} frame within {timeout}s")


def test_keepalive_pings_and_drops_silent_peers(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--ping-interval", "200ms", "--ping-timeout", "300ms")
    with raw_client(port) as (sock, protocol):
        wait_for_frame(sock, protocol, Opcode.PING)
        protocol.data_to_send()  # the automatic pong is never sent: a silent peer
        started = time.monotonic()
        sock.settimeout(5)
        while sock.recv(65536):
            pass
        assert time.monotonic() - started < 3


def test_keepalive_keeps_answering_peers(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--ping-interval", "100ms", "--ping-timeout", "0.3")
    with connect(f"ws://127.0.0.1:{port}", ping_interval=None) as ws:
        time.sleep(1.0)  # several pings, each answered by the client library
        ws.send("still here")
        assert ws.recv(timeout=5) == SEED + "still here"


def test_ping_interval_zero_sends_no_pings(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--ping-interval", "0")
    with raw_client(port) as (sock, protocol), pytest.raises(TimeoutError):
        wait_for_frame(sock, protocol, Opcode.PING, timeout=0.6)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_shutdown_sends_1001_and_exits_0(wsgate: Spawn, sig: int) -> None:
    proc, port = start_echo(wsgate)
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send("hi")
        ws.recv(timeout=5)
        proc.signal(sig)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proc.popen.wait(timeout=5) == 0


def test_port_in_use_is_one_line_and_status_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_wsgate("echo", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "http"],
         'argument --port: port must be a number from 0 to 65535, got "http"'),
        (["--port", "70000"],
         'argument --port: port must be a number from 0 to 65535, got "70000"'),
        (["--ping-interval", "-1"],
         'argument --ping-interval: must be a duration like "60s", "5m" or "500ms", got "-1"'),
        (["--ping-timeout", "20 s"],
         'argument --ping-timeout: must be a duration like "60s", "5m" or "500ms", got "20 s"'),
        (["--max-size", "lots"],
         'argument --max-size: must be a size like "8k", "1m" or "1g", got "lots"'),
        (["--max-size", "0"], 'argument --max-size: must be more than 0, got "0"'),
        (["--raw", "--prefix", "x"], "--raw and --prefix cannot be used together"),
    ],
)
def test_bad_flags_are_one_line_and_status_2(argv: list[str], message: str) -> None:
    result = run_wsgate("echo", *argv)
    assert result.returncode == 2
    assert result.stderr == f"error: {message} (see wsgate echo --help)\n"


def test_help_says_the_default_host() -> None:
    result = run_wsgate("echo", "--help")
    assert result.returncode == 0
    assert "default: 127.0.0.1" in result.stdout


def test_real_wscat_against_wsgate_echo(wsgate: Spawn, wscat: list[str]) -> None:
    _proc, port = start_echo(wsgate)
    result = run_held_open([*wscat, "-c", f"ws://127.0.0.1:{port}", "-x", "Hello",
                            "-x", "Welcome to www.hi-linux.com", "-w", "1"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [SEED + "Hello", SEED + "Welcome to www.hi-linux.com"]
    assert result.stderr == ""


def test_a_new_message_inside_a_fragmented_one_closes_with_1002(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--raw")
    with raw_client(port) as (sock, protocol):
        protocol.send_frame(Frame(Opcode.TEXT, b"frag", fin=False))
        protocol.send_frame(Frame(Opcode.TEXT, b"new"))
        sock.sendall(b"".join(protocol.data_to_send()))
        close = wait_for_frame(sock, protocol, Opcode.CLOSE)
    assert int.from_bytes(close.data[:2], "big") == 1002


def masked(first: int, payload: bytes) -> bytes:
    """A client frame with the given first byte (FIN, RSV bits, opcode), masked with 0s."""
    return bytes((first, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def closes(port: int, data: bytes) -> list[bytes]:
    """The Close frames' payloads the echo server sends back to ``data``, until it closes."""
    with raw_client(port) as (sock, _protocol):
        sock.sendall(data)
        received = b""
        sock.settimeout(5)
        while chunk := sock.recv(65536):
            received += chunk
    found = []
    while received:
        size = received[1] & 0x7F
        if received[0] & 0x0F == 0x8:
            found.append(received[2:4])  # the code (picows may add a reason)
        received = received[2 + size:]
    return found


@pytest.mark.parametrize("first", [0x81 | 0x40, 0x81 | 0x20, 0x81 | 0x10, 0x82 | 0x70,
                                   0x88 | 0x30])
def test_reserved_bits_fail_the_connection_with_1002(wsgate: Spawn, first: int) -> None:
    """Autobahn 3.1-3.5, 3.7: no extension is negotiated, so a set RSV bit on a data or
    Close frame is a protocol error. (A ping's, 3.6, picows answers before the echo
    server sees it.)"""
    _proc, port = start_echo(wsgate, "--raw")
    assert closes(port, masked(first, b"hello")) == [b"\x03\xea"]


@pytest.mark.parametrize("code", [1004, 1005, 1006, 1015, 999, 1016, 2999, 5000])
def test_a_close_code_not_for_the_wire_fails_the_connection_with_1002(wsgate: Spawn,
                                                                       code: int) -> None:
    """Autobahn 7.9.*: codes for reports only, or unassigned, are a protocol error."""
    _proc, port = start_echo(wsgate, "--raw")
    assert closes(port, masked(0x88, code.to_bytes(2, "big"))) == [b"\x03\xea"]


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_a_valid_close_code_is_echoed(wsgate: Spawn, code: int) -> None:
    _proc, port = start_echo(wsgate, "--raw")
    assert closes(port, masked(0x88, code.to_bytes(2, "big"))) == [code.to_bytes(2, "big")]
