"""What proxy tests share: starting ``wsgate proxy`` from a config, raw HTTP on a socket,
and a recording upstream that shows exactly what reached it."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from websockets.utils import accept_key

from conftest import Proc, Spawn

KEY = base64.b64encode(os.urandom(16)).decode()


def start_proxy(wsgate: Spawn, folder: Path, body: str, *, listen: str = '"127.0.0.1:0"',
                extra: str = "") -> tuple[Proc, int]:
    """``wsgate proxy -c`` with ``body`` (upstreams and locations) and the given listen."""
    config = folder / "wsgate.toml"
    config.write_text(f"listen = [{listen}]\n{extra}\n{body}")
    proc = wsgate(["proxy", "-c", str(config)])
    port = int(proc.expect(r"Listening on https?://[^ ]+:(\d+)").group(1))
    return proc, port


def simple_config(*servers: str, location: str = "", upstream: str = "") -> str:
    lines = ", ".join(f'"{server}"' for server in servers)
    return (f"[upstream.backend]\nserver = [{lines}]\n{upstream}\n"
            f'[location."/"]\nproxy_pass = "http://backend"\n{location}\n')


def exchange(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
    """Send raw bytes and read the answer: until the proxy closes, or one response head."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock, timeout, until_close)


def read_answer(sock: socket.socket, timeout: float = 5.0, until_close: bool = True) -> bytes:
    deadline = time.monotonic() + timeout
    answer = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
        if not until_close and b"\r\n\r\n" in answer:
            break
    return answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def handshake_request(path: str = "/", host: str = "example.com", extra: str = "",
                      key: str = KEY) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def switching_response(key: str = KEY, accept: str | None = None) -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + (accept or accept_key(key)).encode() + b"\r\n\r\n")


@dataclass
class Recorder:
    """A TCP upstream in a thread: records each request head it reads and answers with
    ``respond(head)``; ``keep`` keeps the connection open for the next request."""

    respond: Callable[[bytes], bytes]
    keep: bool = False
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = listening()
        self.port = self.sock.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                buffer = self._read_body(conn, head, buffer)
                self.heads.append(head)
                conn.sendall(self.respond(head))
                if not self.keep:
                    time.sleep(0.2)
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _read_body(self, conn: socket.socket, head: bytes, buffer: bytes) -> bytes:
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while not buffer.endswith(b"0\r\n\r\n"):
                buffer += _more(conn)
            self.bodies.append(buffer)
            return b""
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                while len(buffer) < length:
                    buffer += _more(conn)
                self.bodies.append(buffer[:length])
                return buffer[length:]
        return buffer

    def header(self, index: int, name: str) -> list[str]:
        """Values of header ``name`` in request ``index`` as the upstream saw them."""
        lines = self.heads[index].decode("latin-1").split("\r\n")[1:]
        return [line.split(":", 1)[1].strip() for line in lines
                if line.split(":", 1)[0].lower() == name.lower()]

    def close(self) -> None:
        self.sock.close()
        for conn in self._open:
            conn.close()


def _more(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ConnectionError("closed in the middle of a body")
    return chunk


def ok_response(body: bytes = b"hello", extra: bytes = b"") -> Callable[[bytes], bytes]:
    return lambda _head: (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                          % (len(body), extra, body))


def listening(backlog: int = 64) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 and a free port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


@contextlib.contextmanager
def stuck_port() -> Iterator[int]:
    """A port where connecting never completes: its listen backlog is already full."""
    with listening(backlog=0) as full:
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
        try:
            yield int(full.getsockname()[1])
        finally:
            for filler in fillers:
                filler.close()


def closed_port() -> int:
    """A port nothing listens on (bound, then closed): free for a test to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_HELD: list[socket.socket] = []
"""The sockets that keep refusing_port()'s ports taken for the rest of the run."""


def refusing_port() -> int:
    """A port that refuses connections for the whole run: bound and kept bound without
    listening. A port closed at once (closed_port) could be given to a later bind(0), a
    proxy's own listener say, and a proxy sent there would connect to itself."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return int(sock.getsockname()[1])
