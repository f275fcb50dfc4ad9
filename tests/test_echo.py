"""``wsgate echo`` end to end: the seed's strings, its flags, keepalive, limits, shutdown."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

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
                                   0x88 | 0x30, 0x89 | 0x60, 0x89 | 0x40, 0x8A | 0x10])
def test_reserved_bits_fail_the_connection_with_1002(wsgate: Spawn, first: int) -> None:
    """Autobahn 3.1-3.7: no extension is negotiated, so a set RSV bit on a data or control
    frame is a protocol error, a ping's too (the echo server answers pings itself, so
    picows does not pong them unseen)."""
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


# -- pings, and what comes after a Close (Autobahn 2.*, 3.6, 7.1.*) ----------------------------

def upgrade(port: int, *headers: str) -> tuple[socket.socket, dict[str, str]]:
    """A raw socket after a hand-written opening handshake, and the response's headers
    (lower-cased names): the test then writes and reads frames byte for byte."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET / HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"no response to the upgrade: {head!r}"
        head += chunk
    status, *fields = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert " 101 " in status, status
    found = {}
    for line in fields:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return sock, found


def frame(first: int, payload: bytes) -> bytes:
    """A client frame: the given first byte (FIN, RSV bits, opcode), masked with zeros."""
    if len(payload) < 126:
        return bytes((first, 0x80 | len(payload))) + b"\0\0\0\0" + payload
    return bytes((first, 0x80 | 126)) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload


def read_frames(sock: socket.socket, timeout: float = 5) -> list[tuple[int, bytes]]:
    """Every frame the server sends (first byte, payload) until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    frames = []
    while data:
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0], data[start:start + size]))
        data = data[start + size:]
    return frames


def test_a_ping_is_answered_with_its_payload(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--raw")
    sock, _headers = upgrade(port)
    with sock:
        sock.sendall(frame(0x89, b"are you there") + frame(0x81, b"after")
                     + frame(0x88, b"\x03\xe8"))
        assert read_frames(sock) == [(0x8A, b"are you there"), (0x81, b"after"),
                                     (0x88, b"\x03\xe8")]


def test_a_ping_with_a_reserved_bit_gets_no_pong(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--raw")
    sock, _headers = upgrade(port)
    with sock:
        sock.sendall(frame(0x89 | 0x40, b"hi"))
        assert read_frames(sock) == [(0x88, b"\x03\xea")]


@pytest.mark.parametrize(
    ("after_close", "answer"),
    [
        (frame(0x88, b""), b"\x03\xe8"),  # Autobahn 7.1.2
        (frame(0x88, b"\x03\xe9"), b"\x03\xe8"),
        (frame(0x83, b"bad opcode"), b"\x03\xe8"),
        (frame(0x81, b"\xff not utf-8"), b"\x03\xe8"),  # 7.1.3-7.1.5: ignored, not echoed
    ],
)
def test_what_follows_a_close_is_ignored(wsgate: Spawn, after_close: bytes,
                                         answer: bytes) -> None:
    """RFC 6455 5.5.1: nothing after a Close counts, even a frame picows rejects and even in
    the same read (picows parses a frame ahead: see ParserLog)."""
    _proc, port = start_echo(wsgate, "--raw")
    sock, _headers = upgrade(port)
    with sock:
        sock.sendall(frame(0x88, b"\x03\xe8") + after_close)
        assert read_frames(sock) == [(0x88, answer)]


@pytest.mark.parametrize(
    ("close", "answer"),
    [
        (b"\x0b\xb8bye", b"\x0b\xb8bye"),  # 3000 and its reason are echoed
        (b"", b"\x03\xe8"),  # without a code: 1000 (picows adds a Close of its own otherwise)
    ],
)
def test_a_second_close_in_the_same_read_is_ignored(wsgate: Spawn, close: bytes,
                                                    answer: bytes) -> None:
    _proc, port = start_echo(wsgate, "--raw")
    sock, _headers = upgrade(port)
    with sock:
        sock.sendall(frame(0x88, close) + frame(0x88, b"\x03\xe8"))
        assert read_frames(sock) == [(0x88, answer)]


def test_a_close_without_a_code_gets_an_empty_close(wsgate: Spawn) -> None:
    """As Node ws answers it (the second-Close case above is the one exception)."""
    _proc, port = start_echo(wsgate, "--raw")
    sock, _headers = upgrade(port)
    with sock:
        sock.sendall(frame(0x88, b""))
        assert read_frames(sock) == [(0x88, b"")]


# -- permessage-deflate (--deflate) -------------------------------------------------------------

def deflated(data: bytes) -> bytes:
    """A whole message compressed as RFC 7692 says: raw deflate, sync-flushed, the final
    empty block's 00 00 ff ff left off."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflated(data: bytes, decompressor: Any) -> bytes:
    return bytes(decompressor.decompress(data + b"\x00\x00\xff\xff"))


def test_deflate_with_a_websockets_client(wsgate: Spawn) -> None:
    """websockets offers permessage-deflate by default: the seed's replies and log lines are
    the same, fragmented compressed messages included."""
    proc, port = start_echo(wsgate, "--deflate")
    with connect(f"ws://127.0.0.1:{port}", compression="deflate") as ws:
        extensions = ws.response.headers["Sec-WebSocket-Extensions"]
        assert extensions.startswith("permessage-deflate")
        ws.send("Hello " * 200)
        assert ws.recv(timeout=5) == SEED + "Hello " * 200
        ws.send(b"\x00\x01" * 300)
        assert ws.recv(timeout=5) == SEED.encode() + b"\x00\x01" * 300
        ws.send(iter(["frag", "ment", "ed"]))
        assert ws.recv(timeout=5) == SEED + "fragmented"
    proc.expect(r"^Received from client: (Hello ){200}$")
    proc.expect(r"^Received from client: fragmented$")


def test_deflate_on_the_wire(wsgate: Spawn) -> None:
    """RSV1 marks a compressed message both ways; uncompressed ones are accepted too; every
    reply is compressed; control frames never are."""
    _proc, port = start_echo(wsgate, "--raw", "--deflate")
    sock, headers = upgrade(port, "Sec-WebSocket-Extensions: permessage-deflate")
    assert headers["sec-websocket-extensions"] == "permessage-deflate; server_max_window_bits=12"
    text = "héllo, " * 100
    with sock:
        sock.sendall(frame(0xC1, deflated(text.encode())) + frame(0x82, b"plain")
                     + frame(0x89, b"ping") + frame(0x88, b"\x03\xe8"))
        frames = read_frames(sock)
    decompressor = zlib.decompressobj(wbits=-15)
    assert [first for first, _ in frames] == [0xC1, 0xC2, 0x8A, 0x88]
    assert inflated(frames[0][1], decompressor).decode() == text
    assert inflated(frames[1][1], decompressor) == b"plain"
    assert frames[2:] == [(0x8A, b"ping"), (0x88, b"\x03\xe8")]


def test_without_deflate_no_extension_is_accepted(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate)
    with connect(f"ws://127.0.0.1:{port}", compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=5) == SEED + "plain"


def test_deflate_with_a_subprotocol(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--deflate")
    with connect(f"ws://127.0.0.1:{port}", subprotocols=["chat", "superchat"],  # type: ignore[list-item]
                 compression="deflate") as ws:
        assert ws.subprotocol == "chat"
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        ws.send("x")
        assert ws.recv(timeout=5) == SEED + "x"


def test_deflate_offer_the_server_cannot_accept_goes_uncompressed(wsgate: Spawn) -> None:
    """server_max_window_bits=8 is beyond zlib: the offer is declined, the connection works."""
    _proc, port = start_echo(wsgate, "--raw", "--deflate")
    sock, headers = upgrade(port, "Sec-WebSocket-Extensions: permessage-deflate; "
                                  "server_max_window_bits=8")
    assert "sec-websocket-extensions" not in headers
    with sock:
        sock.sendall(frame(0x81, b"plain") + frame(0x88, b"\x03\xe8"))
        assert read_frames(sock) == [(0x81, b"plain"), (0x88, b"\x03\xe8")]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(0xC9, b"ping")], b"\x03\xea"),  # RSV1 on a control frame
        ([frame(0x41, deflated(b"frag")[:2]), frame(0xC0, b"x")], b"\x03\xea"),  # on a CONT
        ([frame(0x01, b"frag"), frame(0xC0, b"x")], b"\x03\xea"),  # CONT of uncompressed
        ([frame(0xA1, b"hello")], b"\x03\xea"),  # RSV2
        ([frame(0xC1, b"\xff\xff\xff\xff")], b"\x03\xea"),  # not deflate data
        ([frame(0xC1, deflated(b"x" * 2000))], b"\x03\xf1"),  # inflates past --max-size: 1009
        ([frame(0xC1, deflated(b"\xff\xfe"))], b"\x03\xef"),  # inflates to bad UTF-8: 1007
    ],
)
def test_deflate_protocol_errors(wsgate: Spawn, frames: list[bytes], code: bytes) -> None:
    _proc, port = start_echo(wsgate, "--raw", "--deflate", "--max-size", "1k")
    sock, headers = upgrade(port, "Sec-WebSocket-Extensions: permessage-deflate")
    assert "sec-websocket-extensions" in headers
    with sock:
        sock.sendall(b"".join(frames))
        assert read_frames(sock) == [(0x88, code)]


def test_deflate_fragments_count_inflated_against_max_size(wsgate: Spawn) -> None:
    _proc, port = start_echo(wsgate, "--raw", "--deflate", "--max-size", "1k")
    data = deflated(b"y" * 1500)
    half = len(data) // 2
    sock, _headers = upgrade(port, "Sec-WebSocket-Extensions: permessage-deflate")
    with sock:
        sock.sendall(frame(0x41, data[:half]) + frame(0x80, data[half:]))
        assert read_frames(sock) == [(0x88, b"\x03\xf1")]


def test_deflate_keepalive_and_shutdown_1001(wsgate: Spawn) -> None:
    proc, port = start_echo(wsgate, "--deflate", "--ping-interval", "100ms",
                            "--ping-timeout", "300ms")
    with connect(f"ws://127.0.0.1:{port}", compression="deflate", ping_interval=None) as ws:
        time.sleep(0.6)  # pings, answered by the client library, keep it connected
        ws.send("still here")
        assert ws.recv(timeout=5) == SEED + "still here"
        proc.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proc.popen.wait(timeout=5) == 0


NODE_DEFLATE_CLIENT = """
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1], {perMessageDeflate: {threshold: 0}});
ws.on('open', () => {
  console.log('extensions: ' + ws.extensions);
  ws.send('compress me '.repeat(50));
});
ws.on('message', (data) => {
  console.log('reply: ' + data.toString());
  ws.close(1000);
});
ws.on('close', (code) => console.log('closed: ' + code));
ws.on('error', (error) => { console.log('error: ' + error.message); process.exit(1); });
"""


def test_deflate_with_node_ws(wsgate: Spawn, node_modules: Path) -> None:
    """Node ws, the seed's library, negotiates permessage-deflate and compresses each
    message (threshold 0) on its own implementation."""
    _proc, port = start_echo(wsgate, "--deflate")
    result = subprocess.run(["node", "-e", NODE_DEFLATE_CLIENT, f"ws://127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=20,
                            env={**os.environ, "NODE_PATH": str(node_modules)})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("extensions: permessage-deflate")
    assert lines[1:] == [f"reply: {SEED}{'compress me ' * 50}", "closed: 1000"]
