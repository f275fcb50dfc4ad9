"""The status listener's HTTP/1.1: the page, ``/status``, ``/metrics``, ``/live`` and the
admin actions.

It is for operators and scrapers, not for clients, so it stays simple: one request per
connection (``Connection: close``), GET and POST only, a small head, no body. llhttp
(httptools) parses the head; ``/live`` switches to a WebSocket through websockets'
Sans-I/O :class:`~websockets.server.ServerProtocol`, which gets the raw head and does the
handshake, pings and the close. What is answered is the :class:`App`'s
(:mod:`~wsgate.proxy.monitor`); this module only moves bytes.

What a web page could make its visitor's browser do is refused with 403: an admin POST
or a ``/live`` WebSocket whose ``Origin`` is another site, and one whose ``Host`` is a name
other than ``localhost`` or this machine's (a DNS-rebinding page, whose Origin and Host
agree, names its own domain there). Scrapers and ``curl`` send no Origin, and ``/metrics``
and ``/status`` answer whatever the Host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, urlsplit

import httptools
from websockets.frames import CloseCode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
"""A connection that has not sent a whole request by then is closed."""
LIVE_BUFFER = 1 << 20
"""A live client whose unsent updates pass this gets none until it catches up."""
LIVE_BEHIND = 60
"""Updates in a row a live client may miss (at one a second) before it is cut: a phone
that went away without closing."""
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


class App(Protocol):
    """What the status listener serves (the monitor)."""

    def page(self) -> bytes: ...

    def status(self) -> dict[str, Any]: ...

    def metrics(self) -> tuple[bytes, str]: ...

    async def admin(self, action: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        ...

    def joined(self, live: Live) -> None: ...

    def left(self, live: Live) -> None: ...


def response(status: int, body: bytes, content_type: str) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
              405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
              431: "Request Header Fields Too Large", 500: "Internal Server Error",
              503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def json_response(status: int, document: dict[str, Any]) -> bytes:
    return response(status, json.dumps(document).encode() + b"\n", JSON)


class Live:
    """One page's WebSocket: the monitor sends it a JSON document every tick."""

    __slots__ = ("behind", "protocol", "transport")

    def __init__(self, protocol: ServerProtocol, transport: asyncio.Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.behind = 0

    def send(self, text: str) -> None:
        """Send one update, unless the last ones are still unsent (a slow phone): the next
        update says it all again. One that stays behind for LIVE_BEHIND updates is cut."""
        if self.transport.is_closing() or self.protocol.state is not State.OPEN:
            return
        if self.transport.get_write_buffer_size() > LIVE_BUFFER:
            self.behind += 1
            if self.behind >= LIVE_BEHIND:
                self.transport.abort()
            return
        self.behind = 0
        self.protocol.send_text(text.encode())
        self.flush()

    def close(self, code: int = CloseCode.GOING_AWAY) -> None:
        if not self.transport.is_closing() and self.protocol.state is State.OPEN:
            self.protocol.send_close(code)
            self.flush()

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:  # websockets' signal that the stream ends here
                self.transport.close()
                return


def trusted_host(host: str) -> bool:
    """Whether a Host header names this listener in a way no DNS rebinding can: an IP
    address, ``localhost``, or this machine's own name (a Host without one is curl's
    HTTP/1.0, or a test's)."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:  # "[" without "]": not a host at all
        return False
    if not name or name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name in {socket.gethostname().lower(), socket.getfqdn().lower()}
    return True


class StatusConnection(asyncio.Protocol):
    """One connection to the status listener: a request, then an answer or a WebSocket."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.transport: asyncio.Transport
        self.parser = httptools.HttpRequestParser(self)
        self.raw = bytearray()
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.live: Live | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.method = b""
        self.done = False
        """The one request is complete: llhttp's callbacks for a pipelined next are not
        ours to act on."""

    # -- httptools' callbacks --------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if not self.done:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        if self.done:
            return
        self.done = True
        self.method = self.parser.get_method()
        if self.timer is not None:
            self.timer.cancel()
        self.transport.pause_reading()
        self.task = asyncio.ensure_future(self._answer())

    # -- asyncio's -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.live is not None:
            self.live.protocol.receive_data(data)
            self.live.protocol.events_received()  # pings are answered, a Close too
            self.live.flush()
            return
        if self.task is not None:
            return
        self.raw += data
        if len(self.raw) > MAX_HEAD:
            self._finish(response(431, b"request head too large\n", TEXT))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # llhttp stops here; the head is complete
            self.on_message_complete()
        except httptools.HttpParserError as error:
            self._finish(response(400, f"bad request: {error}\n".encode(), TEXT))

    def eof_received(self) -> bool:
        if self.live is not None:
            self.live.protocol.receive_eof()
            self.live.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.live is not None:
            self.app.left(self.live)
            self.live = None
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # -- answering ---------------------------------------------------------------------------

    def _finish(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    async def _answer(self) -> None:
        try:
            data = await self._respond()
        except Exception:  # a bug must cost this request, not the monitor
            log.exception("status listener: answering %r failed", self.url)
            data = response(500, b"internal error\n", TEXT)
        if data is not None:
            self._finish(data)

    async def _respond(self) -> bytes | None:
        method = self.method
        parts = urlsplit(self.url.decode("latin-1"))
        path = parts.path
        if method == b"POST":
            if not path.startswith("/admin/"):
                return response(405, b"POST is for /admin/ actions\n", TEXT)
            refused = self._refused()
            if refused:
                log.info("status listener: 403 for a POST to %s: %s", path, refused)
                return json_response(403, {"ok": False, "error": refused})
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            status, document = await self.app.admin(path.removeprefix("/admin/"), params)
            return json_response(status, document)
        if method != b"GET":
            return response(405, b"GET, or POST to /admin/\n", TEXT)
        if path.startswith("/admin/"):
            return json_response(405, {"ok": False, "error": "an admin action is a POST"})
        if path == "/live" and self.headers.get(b"upgrade", b"").lower() == b"websocket":
            refused = self._refused()
            if refused:
                log.info("status listener: 403 for /live: %s", refused)
                return response(403, f"{refused}\n".encode(), TEXT)
            self._go_live()
            return None
        if path == "/":
            return response(200, self.app.page(), "text/html; charset=utf-8")
        if path == "/status":
            return json_response(200, self.app.status())
        if path == "/metrics":
            body, content_type = self.app.metrics()
            return response(200, body, content_type)
        return response(404, b"not found: try /, /status or /metrics\n", TEXT)

    def _refused(self) -> str:
        """Why a browser's request must not act or watch here ("" if it may)."""
        host = self.headers.get(b"host", b"").decode("latin-1")
        origin = self.headers.get(b"origin")
        if origin is not None and urlsplit(origin.decode("latin-1")).netloc != host:
            return "cross-site request"
        if not trusted_host(host):
            return (f"Host {host!r} is not this machine: use its address, localhost or "
                    f"{socket.gethostname()}")
        return ""

    def _go_live(self) -> None:
        protocol = ServerProtocol(max_size=1 << 16)
        protocol.receive_data(bytes(self.raw))
        events = protocol.events_received()
        request = events[0] if events else None
        if not isinstance(request, WsRequest):
            self._finish(response(400, b"bad WebSocket handshake\n", TEXT))
            return
        reply = protocol.accept(request)
        protocol.send_response(reply)
        live = Live(protocol, self.transport)
        live.flush()
        if reply.status_code != 101:
            self.transport.close()
            return
        self.live = live
        self.transport.resume_reading()
        self.app.joined(live)
