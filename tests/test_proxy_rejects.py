"""Requests ``wsgate proxy`` must answer itself, checked on the wire with raw sockets.

Each rejection must carry the right status line and ``Connection: close``, end with the
connection closed, name nothing internal, and never reach the upstream. One proxy serves
the whole module; after every test it must still be alive, answer a normal request, and
have printed no traceback.
"""

from __future__ import annotations

import base64
import contextlib
import queue
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from websockets.utils import accept_key

from conftest import Proc, wsgate_command
from proxy_helpers import KEY, Recorder, simple_config, switching_response

LIMITS = """\
client_header_timeout = "1s"
client_body_timeout = "1s"
large_client_header_buffers = "4 1k"
client_max_body_size = "1k"
"""
LINE_LIMIT = 1024
TOTAL_LIMIT = 4 * 1024
BODY_LIMIT = 1024

UPSTREAM_426 = (b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                b"X-Upstream: kept\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
                b"upgrade me!")


def _key_of(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return value.strip().decode()
    return KEY


def _respond(head: bytes) -> bytes:
    """The upstream's answer, chosen by the request's path."""
    target = head.split(b" ", 2)[1]
    key = _key_of(head)
    if target == b"/upstream-426":
        return UPSTREAM_426
    if target == b"/bad-accept":
        return switching_response(key, accept=accept_key("not the key"))
    if target == b"/no-upgrade":
        return (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")
    if target == b"/h2c-upgrade":
        return switching_response(key).replace(b"Upgrade: websocket", b"Upgrade: h2c")
    if target == b"/unsolicited-101":
        return switching_response(KEY)
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Upstream(Recorder):
    """A :class:`Recorder` that records a head as soon as it arrives, keeps only complete
    bodies in ``bodies`` (cut-off ones go to ``partial``), survives a peer that closes
    mid-body, and records in ``after[target]`` whatever arrives after its response."""

    partial: list[bytes] = field(default_factory=list)
    after: dict[bytes, bytes] = field(default_factory=dict)

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(5)
        try:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, rest = buffer.partition(b"\r\n\r\n")
            self.heads.append(head)
            body = self._body(conn, head, rest)
            if body is None:
                return
            self.bodies.append(body)
            conn.sendall(self.respond(head))
            extra = b""
            conn.settimeout(2)
            while chunk := conn.recv(65536):
                extra += chunk
            self.after[head.split(b" ", 2)[1]] = extra
        except OSError:
            return
        finally:
            conn.close()

    def _body(self, conn: socket.socket, head: bytes, buffer: bytes) -> bytes | None:
        lower = head.lower()
        length = 0
        if b"transfer-encoding: chunked" in lower:
            while not buffer.endswith(b"0\r\n\r\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    self.partial.append(buffer)
                    return None
                buffer += chunk
            return buffer
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(buffer) < length:
            chunk = conn.recv(65536)
            if not chunk:
                self.partial.append(buffer)
                return None
            buffer += chunk
        return buffer


@dataclass
class Gate:
    proc: Proc
    port: int
    upstream: Upstream

    def stderr(self) -> str:
        """Everything the proxy has printed on stderr so far (without waiting)."""
        while True:
            try:
                name, line = self.proc.lines.get_nowait()
            except queue.Empty:
                break
            if line != "\0EOF":
                (self.proc.out if name == "out" else self.proc.err).append(line)
        return "\n".join(self.proc.err)


@dataclass(frozen=True)
class Seen:
    """What the upstream had received when a test began."""

    heads: int
    connections: int
    bodies: int


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    upstream = Upstream(respond=_respond)
    config = tmp_path_factory.mktemp("rejects") / "wsgate.toml"
    body = simple_config(upstream.address, upstream="keepalive = 0",
                         location='proxy_read_timeout = "3s"')
    config.write_text(f'listen = ["127.0.0.1:0"]\n{LIMITS}\n{body}')
    proc = Proc([*wsgate_command(), "proxy", "-c", str(config)])
    try:
        port = int(proc.expect(r"Listening on http://[^ ]+:(\d+)").group(1))
        yield Gate(proc, port, upstream)
    finally:
        proc.stop()
        upstream.close()
    assert "Traceback" not in proc.drain()[1]


@pytest.fixture(autouse=True)
def _survives(gate: Gate) -> Iterator[None]:
    """After each test the proxy is alive, printed no traceback, and still proxies."""
    gate.stderr()
    printed = len(gate.proc.err)
    yield
    answer, closed = send(gate.port, request("Host: a", "Connection: close", target="/health"))
    assert gate.proc.popen.poll() is None, gate.stderr()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert closed
    gate.stderr()
    err = "\n".join(gate.proc.err[printed:])
    assert "Traceback" not in err and "Error" not in err, err


@pytest.fixture
def seen(gate: Gate) -> Seen:
    up = gate.upstream
    return Seen(len(up.heads), up.connections, len(up.bodies))


def send(port: int, data: bytes, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data`` and read until the proxy closes: the answer, and whether it closed
    (rather than the read timing out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return receive(sock, timeout)


def receive(sock: socket.socket, timeout: float = 3.0) -> tuple[bytes, bool]:
    deadline = time.monotonic() + timeout
    answer = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return answer, False
        except ConnectionResetError:
            return answer, True
        if not chunk:
            return answer, True
        answer += chunk
    return answer, False


def split(answer: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    """Status, headers (lowercased names) and body of exactly one response."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, answer
    lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.1 (\d{3}) [A-Za-z][A-Za-z -]*", lines[0])
    assert match, lines[0]
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon and name == name.strip(), line
        headers.setdefault(name.lower(), []).append(value.strip())
    return int(match.group(1)), headers, body


INTERNAL = (b"127.0.0.1", b"Traceback", b"Error", b"Exception", b".py", b"wsgate.proxy",
            b"httptools", b"llhttp", b"HPE_", b"HeadError", b"asyncio")


def assert_rejected(gate: Gate, seen: Seen, answer: bytes, closed: bool, status: int) -> None:
    """The proxy's own error page, the connection closed, nothing upstream."""
    got, headers, body = split(answer)
    assert got == status, answer
    assert headers.get("connection") == ["close"], answer
    assert headers.get("content-length") == [str(len(body))], answer
    assert closed, "the proxy kept the connection open after an error"
    for word in (*INTERNAL, str(gate.upstream.port).encode()):
        assert word not in body, (word, body)
    up = gate.upstream
    assert len(up.heads) == seen.heads, up.heads[seen.heads:]
    assert up.connections == seen.connections
    assert len(up.bodies) == seen.bodies


def request(*lines: str, method: str = "GET", target: str = "/", version: str = "HTTP/1.1",
            body: bytes = b"") -> bytes:
    start = f"{method} {target} {version}\r\n"
    return (start + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode("latin-1") + body


def post(*lines: str, body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    return request("Host: a", *lines, method="POST", version=version, body=body)


# -- heads llhttp and the proxy's rules refuse ---------------------------------------------------

BAD_HEADS = {
    "content-length and transfer-encoding":
        post("Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "transfer-encoding then content-length":
        post("Transfer-Encoding: chunked", "Content-Length: 5", body=b"0\r\n\r\n"),
    "two content-lengths": post("Content-Length: 5", "Content-Length: 5", body=b"hello"),
    "two different content-lengths": post("Content-Length: 5", "Content-Length: 6",
                                          body=b"hello!"),
    "content-length +5": post("Content-Length: +5", body=b"hello"),
    "content-length 5,5": post("Content-Length: 5,5", body=b"hello"),
    "content-length 5, 5": post("Content-Length: 5, 5", body=b"hello"),
    "content-length abc": post("Content-Length: abc", body=b"hello"),
    "content-length -1": post("Content-Length: -1", body=b"hello"),
    "content-length 0x5": post("Content-Length: 0x5", body=b"hello"),
    "content-length 5 5": post("Content-Length: 5 5", body=b"hello"),
    "content-length empty": post("Content-Length: ", body=b"hello"),
    "content-length overflow": post("Content-Length: 99999999999999999999999", body=b"x"),
    "transfer-encoding gzip": post("Transfer-Encoding: gzip", body=b"0\r\n\r\n"),
    "transfer-encoding chunked, gzip": post("Transfer-Encoding: chunked, gzip",
                                            body=b"0\r\n\r\n"),
    "transfer-encoding identity": post("Transfer-Encoding: identity", body=b"0\r\n\r\n"),
    "transfer-encoding chunked twice, then gzip":
        post("Transfer-Encoding: chunked", "Transfer-Encoding: gzip", body=b"0\r\n\r\n"),
    "transfer-encoding with a vertical tab": post("Transfer-Encoding: \x0bchunked",
                                                  body=b"0\r\n\r\n"),
    "transfer-encoding in HTTP/1.0":
        post("Transfer-Encoding: chunked", version="HTTP/1.0", body=b"0\r\n\r\n"),
    "obs-fold with a space": request("Host: a", "X-A: b", " c"),
    "obs-fold with a tab": request("Host: a", "X-A: b", "\tc"),
    "folded first header": request(" Host: a"),
    "whitespace before the colon of Host": request("Host : a"),
    "whitespace before the colon": request("Host: a", "X-A : b"),
    "tab before the colon": request("Host: a", "X-A\t: b"),
    "bare CR in a header": request("Host: a\rX-A: b"),
    "bare CR in the request line": b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare CR ending the head": b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
    "NUL in a header value": request("Host: a", "X-A: b\x00c"),
    "SOH in a header value": request("Host: a", "X-A: b\x01c"),
    "ESC in a header value": request("Host: a", "X-A: \x1b[31mred"),
    "DEL in a header value": request("Host: a", "X-A: b\x7fc"),
    "NUL in Host": request("Host: a\x00b"),
    "control in a header name": request("Host: a", "X\x01A: b"),
    "space in a header name": request("Host: a", "X A: b"),
    "empty header name": request("Host: a", ": b"),
    "header line without a colon": request("Host: a", "NoColonHere"),
    "missing Host in HTTP/1.1": request("Accept: */*"),
    "two Host headers": request("Host: a", "Host: b"),
    "two Host headers, same value": request("Host: a", "Host: a"),
    "userinfo in Host": request("Host: evil@a"),
    "request line of one word": b"GARBAGE\r\n\r\n",
    "unknown method": request("Host: a", method="BREW"),
    "lowercase method": request("Host: a", method="get"),
    "junk after the version": b"GET / HTTP/1.1 junk\r\nHost: a\r\n\r\n",
    "version HTTP/1.1x": request("Host: a", version="HTTP/1.1x"),
    "version HTTP/1.10": request("Host: a", version="HTTP/1.10"),
    "version HTTP/11": request("Host: a", version="HTTP/11"),
    "version HTTP/a.1": request("Host: a", version="HTTP/a.1"),
    "version HTTP/": request("Host: a", version="HTTP/"),
    "not HTTP": b"GET / FTP/1.1\r\nHost: a\r\n\r\n",
    "NUL in the target": b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    "space in the target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "empty target": b"GET  HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("data", BAD_HEADS.values(), ids=BAD_HEADS.keys())
def test_bad_head_is_400(gate: Gate, seen: Seen, data: bytes) -> None:
    assert_rejected(gate, seen, *send(gate.port, data), 400)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"])
def test_unsupported_version_is_505(gate: Gate, seen: Seen, version: str) -> None:
    assert_rejected(gate, seen, *send(gate.port, request("Host: a", version=version)), 505)


@pytest.mark.parametrize("data", [b"GET /\r\n\r\n", b"GET /path\r\n", b"GET /path\n",
                                  b"GET /path HTTP\r\n"])
def test_request_line_without_a_version_is_400_at_once(gate: Gate, seen: Seen,
                                                       data: bytes) -> None:
    """A request line without a version is an HTTP/0.9 simple request (RFC 1945 4.1): llhttp
    reads it so and waits for headers; it is refused at its end, not at the header timeout
    (the module's is 1 s; send waits less)."""
    answer = send(gate.port, data, timeout=0.8)
    assert_rejected(gate, seen, *answer, 400)


def test_a_pipelined_head_arriving_in_pieces_is_not_taken_for_http09(gate: Gate,
                                                                     seen: Seen) -> None:
    """The version check looks at a request line from its start only: the rest of a head
    whose line came with the request before it is not a request line."""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\n")
        time.sleep(0.2)
        sock.sendall(b"Host: a\r\nConnection: close\r\n\r\n")
        answer, closed = receive(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer
    assert closed


@pytest.mark.parametrize("value", ["5  ", "  5", "\t5\t", " 5 "])
def test_content_length_with_whitespace_around_it_is_proxied(gate: Gate, seen: Seen,
                                                             value: str) -> None:
    """A field value never includes the whitespace around it (RFC 9110 5.5)."""
    answer, _closed = send(gate.port, post(f"Content-Length:{value}", body=b"hello"))
    assert split(answer)[0] == 200, answer
    assert gate.upstream.bodies[-1] == b"hello"
    assert b"content-length: 5\r\n" in gate.upstream.heads[-1].lower()


@pytest.mark.parametrize("host", ["example.test/evil", "a@b", "a b", "a:b", "a:80:80",
                                  "[::1", "a?b", "a#b", "a\\b", "[::1]x"])
def test_host_that_is_not_host_port_is_400(gate: Gate, seen: Seen, host: str) -> None:
    assert_rejected(gate, seen, *send(gate.port, request(f"Host: {host}")), 400)


@pytest.mark.parametrize("host", ["example.test", "example.test:8080", "127.0.0.1:1",
                                  "[::1]:8080", "xn--bcher-kva.example", "a_b.test", ""])
def test_host_port_forms_are_proxied(gate: Gate, seen: Seen, host: str) -> None:
    answer, _closed = send(gate.port, request(f"Host: {host}"))
    assert split(answer)[0] == 200, answer


ABSOLUTE = {
    "path": ("http://a/first?x=1", "Host: a", b"/first?x=1"),
    "no path": ("http://a", "Host: a", b"/"),
    "query only": ("http://a?x", "Host: a", b"/?x"),
    "scheme and host case, default port": ("HTTP://A:80/p", "Host: a", b"/p"),
    "https default port": ("https://a/p", "Host: a:443", b"/p"),
    "escapes kept": ("http://a/x%2Fy;p", "Host: a", b"/x%2Fy;p"),
}


@pytest.mark.parametrize(("target", "host", "sent"), ABSOLUTE.values(), ids=ABSOLUTE.keys())
def test_absolute_form_target_is_proxied_as_origin_form(gate: Gate, seen: Seen, target: str,
                                                        host: str, sent: bytes) -> None:
    """As nginx: the upstream gets the path and query; the authority is the host."""
    answer, _closed = send(gate.port, request(host, target=target))
    assert split(answer)[0] == 200, answer
    assert gate.upstream.heads[seen.heads].startswith(b"GET " + sent + b" HTTP/1.1\r\n")


def test_absolute_form_gives_an_http10_request_its_host(gate: Gate, seen: Seen) -> None:
    answer, _closed = send(gate.port, request(target="http://b.test:81/x", version="HTTP/1.0"))
    assert split(answer)[0] == 200, answer
    assert gate.upstream.header(seen.heads, "Host") == ["b.test"]  # $host: the port goes


BAD_ABSOLUTE = {
    "host disagrees": ("http://b/x", "Host: a"),
    "port disagrees": ("http://a:81/x", "Host: a"),
    "userinfo": ("http://u@a/x", "Host: a"),
    "empty authority": ("http:///x", "Host: a"),
    "other scheme": ("ftp://a/x", "Host: a"),
    "two hosts": ("http://a/x", "Host: a\r\nHost: a"),
}


@pytest.mark.parametrize(("target", "host"), BAD_ABSOLUTE.values(), ids=BAD_ABSOLUTE.keys())
def test_absolute_form_that_cannot_be_trusted_is_400(gate: Gate, seen: Seen, target: str,
                                                     host: str) -> None:
    assert_rejected(gate, seen, *send(gate.port, request(host, target=target)), 400)


def test_connect_is_405(gate: Gate, seen: Seen) -> None:
    data = request("Host: example.com:443", method="CONNECT", target="example.com:443")
    assert_rejected(gate, seen, *send(gate.port, data), 405)


# -- size limits -----------------------------------------------------------------------------

def test_request_line_over_the_limit_is_414(gate: Gate, seen: Seen) -> None:
    data = request("Host: a", target="/" + "a" * LINE_LIMIT)
    assert_rejected(gate, seen, *send(gate.port, data), 414)


def test_request_line_over_the_limit_in_pieces_is_414(gate: Gate, seen: Seen) -> None:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(b"GET /")
        for _ in range(4):
            time.sleep(0.02)
            sock.sendall(b"a" * (LINE_LIMIT // 3))
        assert_rejected(gate, seen, *receive(sock), 414)


def test_header_line_over_the_limit_is_431(gate: Gate, seen: Seen) -> None:
    data = request("Host: a", "X-Big: " + "b" * LINE_LIMIT)
    assert_rejected(gate, seen, *send(gate.port, data), 431)


def test_header_value_growing_without_end_is_431(gate: Gate, seen: Seen) -> None:
    """A value that never ends is cut off once the head passes its total limit."""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
        with pytest.raises(OSError):  # the proxy closes while the value still grows
            for _ in range(20):
                time.sleep(0.01)
                sock.sendall(b"b" * LINE_LIMIT)
        answer, closed = receive(sock)
    if answer:
        assert_rejected(gate, seen, answer, closed, 431)
    assert len(gate.upstream.heads) == seen.heads
    assert gate.upstream.connections == seen.connections


def test_many_headers_over_the_total_are_431(gate: Gate, seen: Seen) -> None:
    headers = [f"X-H{i:03d}: " + "v" * 90 for i in range(TOTAL_LIMIT // 90 + 5)]
    assert_rejected(gate, seen, *send(gate.port, request("Host: a", *headers)), 431)


def test_heads_just_under_the_limits_are_proxied(gate: Gate, seen: Seen) -> None:
    """The limits are where the config puts them, not lower."""
    headers = [f"X-H{i:03d}: " + "v" * 90 for i in range((TOTAL_LIMIT - LINE_LIMIT) // 100 - 3)]
    data = request("Host: a", "X-Big: " + "b" * (LINE_LIMIT - 20), *headers, "Connection: close",
                   target="/" + "a" * (LINE_LIMIT - 20))
    answer, _ = send(gate.port, data)
    assert split(answer)[0] == 200, answer
    assert len(gate.upstream.heads) == seen.heads + 1


def test_content_length_over_the_limit_is_413(gate: Gate, seen: Seen) -> None:
    data = post(f"Content-Length: {BODY_LIMIT + 1}", body=b"x" * (BODY_LIMIT + 1))
    assert_rejected(gate, seen, *send(gate.port, data), 413)


def test_content_length_at_the_limit_is_proxied(gate: Gate, seen: Seen) -> None:
    data = post(f"Content-Length: {BODY_LIMIT}", "Connection: close", body=b"x" * BODY_LIMIT)
    answer, _ = send(gate.port, data)
    assert split(answer)[0] == 200, answer
    assert gate.upstream.bodies[seen.bodies:] == [b"x" * BODY_LIMIT]


def chunked(*sizes: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (size, b"c" * size) for size in sizes) + b"0\r\n\r\n"


def test_chunked_body_over_the_limit_is_413(gate: Gate, seen: Seen) -> None:
    """The head may have gone upstream (bodies stream), but never a complete body."""
    data = post("Transfer-Encoding: chunked", body=chunked(600, 600))
    answer, closed = send(gate.port, data)
    assert closed
    if answer:
        status, headers, _ = split(answer)
        assert status == 413, answer
        assert headers.get("connection") == ["close"]
    time.sleep(0.1)
    assert len(gate.upstream.bodies) == seen.bodies


def test_chunked_body_growing_over_the_limit_is_413(gate: Gate, seen: Seen) -> None:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(post("Transfer-Encoding: chunked"))
        wait_for(lambda: len(gate.upstream.heads) > seen.heads)
        with pytest.raises(OSError):
            for _ in range(20):
                sock.sendall(b"100\r\n" + b"c" * 256 + b"\r\n")
                time.sleep(0.02)
        answer, closed = receive(sock)
    assert closed
    if answer:
        assert split(answer)[0] == 413, answer
    time.sleep(0.1)
    assert len(gate.upstream.bodies) == seen.bodies


def test_chunked_body_under_the_limit_is_proxied(gate: Gate, seen: Seen) -> None:
    answer, _ = send(gate.port, post("Transfer-Encoding: chunked", "Connection: close",
                                     body=chunked(500, 500)))
    assert split(answer)[0] == 200, answer
    assert len(gate.upstream.bodies) == seen.bodies + 1
    assert gate.upstream.bodies[-1].endswith(b"0\r\n\r\n")


# -- bad chunked framing ----------------------------------------------------------------------

BAD_CHUNKS = {
    "non-hex size": b"zz\r\nhello\r\n0\r\n\r\n",
    "negative size": b"-1\r\nhello\r\n0\r\n\r\n",
    "size with trailing junk": b"5x\r\nhello\r\n0\r\n\r\n",
    "size with a space inside": b"5 5\r\nhello\r\n0\r\n\r\n",
    "size overflow": b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "empty size": b"\r\nhello\r\n0\r\n\r\n",
    "data longer than its size": b"3\r\nhello\r\n0\r\n\r\n",
    "size with a bare LF": b"5\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("chunks", BAD_CHUNKS.values(), ids=BAD_CHUNKS.keys())
def test_bad_chunks_with_the_head_are_400(gate: Gate, seen: Seen, chunks: bytes) -> None:
    """Sent with the head, a bad chunk is seen before anything leaves for the upstream."""
    data = post("Transfer-Encoding: chunked", body=chunks)
    assert_rejected(gate, seen, *send(gate.port, data), 400)


@pytest.mark.parametrize("chunks", BAD_CHUNKS.values(), ids=BAD_CHUNKS.keys())
def test_bad_chunks_after_the_head_never_complete_upstream(gate: Gate, seen: Seen,
                                                           chunks: bytes) -> None:
    """The head has gone upstream: the client gets 400 or a close, the upstream no body."""
    partial = len(gate.upstream.partial)
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(post("Transfer-Encoding: chunked"))
        wait_for(lambda: len(gate.upstream.heads) > seen.heads)
        sock.sendall(chunks)
        answer, closed = receive(sock)
    assert closed
    if answer:
        status, headers, _ = split(answer)
        assert status == 400, answer
        assert headers.get("connection") == ["close"]
    wait_for(lambda: len(gate.upstream.partial) > partial)
    assert len(gate.upstream.bodies) == seen.bodies
    assert b"hello" not in gate.upstream.partial[-1]


def test_a_body_that_stalls_gets_408_at_the_body_timeout(gate: Gate, seen: Seen) -> None:
    """nginx's client_body_timeout: no byte of the body for that long (here 1 s)."""
    began = time.monotonic()
    answer, closed = send(gate.port, post("Content-Length: 10", body=b"abc"), timeout=5)
    assert split(answer)[0] == 408, answer
    assert closed
    assert 0.9 < time.monotonic() - began < 3
    assert len(gate.upstream.bodies) == seen.bodies  # no complete body went upstream


def test_client_leaving_mid_body_leaves_no_body_upstream(gate: Gate, seen: Seen) -> None:
    partial = len(gate.upstream.partial)
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(post("Content-Length: 100", body=b"x" * 50))
        wait_for(lambda: len(gate.upstream.heads) > seen.heads)
    wait_for(lambda: len(gate.upstream.partial) > partial)
    assert len(gate.upstream.bodies) == seen.bodies


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- slow clients -----------------------------------------------------------------------------

def test_slowloris_gets_408_at_the_header_timeout(gate: Gate, seen: Seen) -> None:
    """client_header_timeout is a deadline for the whole head: trickling does not extend it."""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        answer = b""
        closed = False
        while time.monotonic() - started < 2.5:
            try:
                sock.sendall(b"s")
            except OSError:
                break
            sock.settimeout(0.3)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            answer += chunk
        elapsed = time.monotonic() - started
        if not closed:
            more, closed = receive(sock, 0.5)
            answer += more
    assert 0.9 < elapsed < 2.5, elapsed
    if answer:
        assert_rejected(gate, seen, answer, closed, 408)
    assert closed


def test_silent_connection_is_closed_at_the_header_timeout(gate: Gate, seen: Seen) -> None:
    """A connection that sends nothing is held no longer than one that trickles (nginx)."""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        started = time.monotonic()
        answer, closed = receive(sock, 2.5)
        elapsed = time.monotonic() - started
    assert closed and elapsed < 2.5, elapsed
    assert not answer or split(answer)[0] == 408, answer


def test_client_closing_mid_head_is_no_harm(gate: Gate, seen: Seen) -> None:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Half: ")
        sock.shutdown(socket.SHUT_WR)
        _, closed = receive(sock)
    assert closed
    assert len(gate.upstream.heads) == seen.heads


def test_connection_closed_at_once_is_no_harm(gate: Gate, seen: Seen) -> None:
    for _ in range(5):
        socket.create_connection(("127.0.0.1", gate.port), timeout=3).close()
    assert gate.upstream.connections == seen.connections


# -- WebSocket handshakes ---------------------------------------------------------------------

WS_BASE = {
    "Host": "example.com",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
}


def ws(method: str = "GET", version: str = "HTTP/1.1", body: bytes = b"",
       extra: tuple[str, ...] = (), **changes: str | None) -> bytes:
    """A handshake with headers replaced (``Sec_WebSocket_Key="..."``) or removed (None)."""
    fields = dict(WS_BASE)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    lines = [f"{name}: {value}" for name, value in fields.items()]
    return request(*lines, *extra, method=method, version=version, body=body)


def b64(size: int) -> str:
    return base64.b64encode(b"k" * size).decode()


BAD_HANDSHAKES = {
    "missing key": ws(Sec_WebSocket_Key=None),
    "empty key": ws(Sec_WebSocket_Key=""),
    "short key": ws(Sec_WebSocket_Key=b64(15)),
    "long key": ws(Sec_WebSocket_Key=b64(17)),
    "non-base64 key": ws(Sec_WebSocket_Key="!!!!!!!!!!!!!!!!!!!!!!=="),
    "key without padding": ws(Sec_WebSocket_Key=b64(16).rstrip("=")),
    "two keys": ws(extra=(f"Sec-WebSocket-Key: {b64(16)}",)),
    "missing version": ws(Sec_WebSocket_Version=None),
    "POST": ws(method="POST", extra=("Content-Length: 0",)),
    "HTTP/1.0": ws(version="HTTP/1.0"),
    "a body by length": ws(extra=("Content-Length: 5",), body=b"hello"),
    "a chunked body": ws(extra=("Transfer-Encoding: chunked",), body=b"5\r\nhello\r\n0\r\n\r\n"),
    "Upgrade h2c": ws(Upgrade="h2c"),
    "Upgrade websocket, h2c": ws(Upgrade="websocket, h2c"),
    "Upgrade foo": ws(Upgrade="foo"),
    "two Upgrade headers": ws(extra=("Upgrade: h2c",)),
}


@pytest.mark.parametrize("data", BAD_HANDSHAKES.values(), ids=BAD_HANDSHAKES.keys())
def test_bad_handshake_is_400(gate: Gate, seen: Seen, data: bytes) -> None:
    assert_rejected(gate, seen, *send(gate.port, data), 400)


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8"])
def test_other_websocket_version_is_426(gate: Gate, seen: Seen, version: str) -> None:
    answer, closed = send(gate.port, ws(Sec_WebSocket_Version=version))
    assert_rejected(gate, seen, answer, closed, 426)
    assert split(answer)[1].get("sec-websocket-version") == ["13"]


def test_handshake_with_frames_right_behind_it_is_400(gate: Gate, seen: Seen) -> None:
    """Bytes pipelined behind a refused handshake go nowhere."""
    data = ws(Sec_WebSocket_Key=b64(15)) + b"\x81\x85\x00\x00\x00\x00hello"
    assert_rejected(gate, seen, *send(gate.port, data), 400)


# -- what the upstream answers to a valid handshake -----------------------------------------

@pytest.mark.parametrize("pipelined", [False, True], ids=["after", "pipelined"])
def test_upstream_426_reaches_the_client_and_opens_no_tunnel(gate: Gate, seen: Seen,
                                                             pipelined: bool) -> None:
    frame = b"\x81\x85\x00\x00\x00\x00tunnel"
    data = ws().replace(b"GET / ", b"GET /upstream-426 ")
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(data + (frame if pipelined else b""))
        answer = b""
        while b"upgrade me!" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        with contextlib.suppress(OSError):
            sock.sendall(frame)
        more, closed = receive(sock)
    answer += more
    status, headers, body = split(answer)
    assert status == 426
    assert headers["sec-websocket-version"] == ["13"]
    assert headers["x-upstream"] == ["kept"]
    assert headers["content-type"] == ["text/plain"]
    assert headers["content-length"] == ["11"]
    assert body == b"upgrade me!"
    assert closed
    wait_for(lambda: b"/upstream-426" in gate.upstream.after)
    assert gate.upstream.after.pop(b"/upstream-426") == b""
    assert len(gate.upstream.heads) == seen.heads + 1


@pytest.mark.parametrize("target", ["/bad-accept", "/no-upgrade", "/h2c-upgrade"])
def test_bad_101_from_upstream_is_502(gate: Gate, seen: Seen, target: str) -> None:
    data = ws().replace(b"GET / ", f"GET {target} ".encode())
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(data)
        answer, closed = receive(sock)
    status, headers, body = split(answer)
    assert status == 502, answer
    assert headers.get("connection") == ["close"]
    assert closed
    for word in (*INTERNAL, str(gate.upstream.port).encode()):
        assert word not in body, (word, body)
    assert len(gate.upstream.heads) == seen.heads + 1


def test_101_to_a_plain_request_is_502(gate: Gate, seen: Seen) -> None:
    """An upstream switching protocols unasked gets no tunnel and no 101 to the client."""
    answer, closed = send(gate.port, request("Host: a", target="/unsolicited-101"))
    status, headers, _ = split(answer)
    assert status == 502, answer
    assert headers.get("connection") == ["close"]
    assert closed


# -- requests that must be proxied --------------------------------------------------------

def test_http10_without_host_is_proxied_with_a_host(gate: Gate, seen: Seen) -> None:
    answer, closed = send(gate.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert split(answer)[0] == 200, answer
    assert closed
    assert len(gate.upstream.heads) == seen.heads + 1
    index = seen.heads
    assert gate.upstream.heads[index].startswith(b"GET /old HTTP/1.1\r\n")
    hosts = gate.upstream.header(index, "Host")
    assert len(hosts) == 1 and hosts[0], gate.upstream.heads[index]


def test_bad_request_after_a_good_one_on_a_kept_connection(gate: Gate, seen: Seen) -> None:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=3) as sock:
        sock.sendall(request("Host: a", target="/first"))
        answer = b""
        while not answer.endswith(b"ok"):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert split(answer)[0] == 200
        sock.sendall(post("Content-Length: 1", "Content-Length: 2", body=b"xx"))
        answer, closed = receive(sock)
    assert len(gate.upstream.heads) == seen.heads + 1
    after = Seen(seen.heads + 1, seen.connections + 1, seen.bodies + 1)
    assert_rejected(gate, after, answer, closed, 400)


def test_smuggled_request_behind_a_good_one_never_reaches_upstream(gate: Gate,
                                                                  seen: Seen) -> None:
    data = (request("Host: a", target="/first")
            + post("Content-Length: 4", "Transfer-Encoding: chunked", "X-Smuggled: yes",
                   body=b"0\r\n\r\n"))
    answer, closed = send(gate.port, data)
    status, headers, _ = split(answer[answer.rfind(b"HTTP/1.1 "):])
    assert status == 400, answer
    assert headers.get("connection") == ["close"]
    assert closed
    assert not any(b"X-Smuggled" in head for head in gate.upstream.heads[seen.heads:])


@pytest.mark.parametrize("garbage", [b"\x00\x01garbage\r\n\r\n", b"GET /x\r\n\r\n",
                                     b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"],
                         ids=["junk", "http09", "bad header"])
def test_garbage_behind_a_request_in_flight_gets_400_after_its_answer(
        gate: Gate, seen: Seen, garbage: bytes) -> None:
    """The request before the garbage is answered in full first (nginx does the same)."""
    answer, closed = send(gate.port, request("Host: a", target="/first") + garbage)
    cut = answer.index(b"ok") + 2
    status, _, body = split(answer[:cut])
    assert (status, body) == (200, b"ok"), answer
    assert_rejected(gate, Seen(seen.heads + 1, seen.connections + 1, seen.bodies + 1),
                    answer[cut:], closed, 400)
    assert gate.upstream.heads[seen.heads].startswith(b"GET /first HTTP/1.1\r\n")


def test_content_length_named_in_connection_still_frames_the_body(gate: Gate,
                                                                   seen: Seen) -> None:
    """Connection cannot make the length hop-by-hop: the body goes, so its length goes with
    it, or the upstream would read the body as a second request (found by a property)."""
    smuggled = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    answer, _closed = send(gate.port, post("Connection: content-length",
                                           f"Content-Length: {len(smuggled)}", body=smuggled))
    assert split(answer)[0] == 200, answer
    assert gate.upstream.header(seen.heads, "Content-Length") == [str(len(smuggled))]
    assert gate.upstream.bodies[seen.bodies] == smuggled
    assert len(gate.upstream.heads) == seen.heads + 1


# -- junk -----------------------------------------------------------------------------------

JUNK = {
    **{f"random {seed}": random.Random(seed).randbytes(300) for seed in range(5)},
    "TLS client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),
    "NULs": b"\x00" * 200,
    "high bytes": bytes(range(128, 256)),
    "only CRLFs then junk": b"\r\n\r\n\r\n\x01\x02",
    "SSH banner": b"SSH-2.0-OpenSSH_9.6\r\n",
    "JSON": b'{"hello": "world"}\r\n\r\n',
}


@pytest.mark.parametrize("data", JUNK.values(), ids=JUNK.keys())
def test_junk_is_400(gate: Gate, seen: Seen, data: bytes) -> None:
    assert_rejected(gate, seen, *send(gate.port, data), 400)


def test_http2_preface_is_refused(gate: Gate, seen: Seen) -> None:
    answer, closed = send(gate.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 30)
    assert split(answer)[0] in (400, 505), answer
    assert_rejected(gate, seen, answer, closed, split(answer)[0])
