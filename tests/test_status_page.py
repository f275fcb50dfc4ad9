"""The live status page (src/wsgate/proxy/status_page.html) in a real headless Chromium.

The page is served by a small in-test server, not by the proxy: ``/`` is the HTML file read
from the package, ``/status`` the JSON document, and ``/live`` a WebSocket that pushes a
changing document every 0.2 s (or a 404, to test the page's fallback to polling).
"""

from __future__ import annotations

import asyncio
import copy
import importlib.resources
import json
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from browser import Chromium, require_chromium

PUSH_INTERVAL = 0.2


def page_html() -> bytes:
    return (importlib.resources.files("wsgate.proxy") / "status_page.html").read_bytes()


def sample_document() -> dict[str, Any]:
    """Two groups of one server each, one recent close."""
    now = time.time()
    return {
        "version": "0.1.0", "time": now, "uptime": 12.3,
        "listeners": ["http://127.0.0.1:8080"],
        "workers": [{"pid": 123, "open": 4, "cpu_seconds": 1.2, "rss_bytes": 25_000_000}],
        "tunnels": {"open": 7, "closed": 3},
        "rates": {"bytes_to_upstream": 1234.5, "bytes_to_client": 2345.6, "requests": 3.0,
                  "tunnels_opened": 1.0, "tunnels_closed": 0.5},
        "requests": {"101": 10, "400": 1, "426": 1},
        "rejections": {"bad_handshake": 1, "upstream_refused": 1},
        "reloads": {"success": 1, "failure": 0},
        "upstreams": [
            {"name": "backend", "balance": "round_robin",
             "health_check": {"interval": 5.0, "fails": 3, "passes": 2, "uri": "/",
                              "websocket": True},
             "servers": [
                 {"address": "127.0.0.1:8010", "state": "up", "admin": None,
                  "configured_down": False,
                  "health": {"healthy": True, "detail": "ok", "checked": now - 1.5},
                  "open": 4, "bytes_to_upstream": 1000, "bytes_to_client": 2000,
                  "closed": {"client": 2, "upstream": 1}}]},
            {"name": "chat", "balance": "least_conn", "health_check": None,
             "servers": [
                 {"address": "10.0.0.2:9000", "state": "draining", "admin": "drain",
                  "configured_down": False, "health": None,
                  "open": 3, "bytes_to_upstream": 5_000_000, "bytes_to_client": 70_000,
                  "closed": {"drain": 1}}]},
        ],
        "recent_closes": [
            {"time": now - 10, "upstream": "backend", "server": "127.0.0.1:8010",
             "reason": "client", "duration": 12.5, "bytes_to_upstream": 100,
             "bytes_to_client": 200, "client": "127.0.0.1"},
        ],
    }


class StatusServer:
    """Serves the page, ``/status`` and ``/live`` from a thread with its own event loop.

    ``document`` may be changed by the test at any time; every response and push is a copy
    with a fresh ``time`` and ``uptime``.
    """

    def __init__(self, document: dict[str, Any], live: bool = True) -> None:
        self.document = document
        self.live = live
        self.html = page_html()
        self.port = 0
        self.served = 0
        #: When each WebSocket handshake on /live was asked for (time.monotonic()).
        self.live_attempts: list[float] = []
        self._sockets: set[ServerConnection] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="status-page-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def update(self, **changes: Any) -> None:
        with self._lock:
            self.document.update(changes)

    def snapshot(self) -> bytes:
        with self._lock:
            document = copy.deepcopy(self.document)
            self.served += 1
            document["time"] = time.time()
            document["uptime"] = 12.3 + self.served
        return json.dumps(document).encode()

    def _response(self, status: HTTPStatus, body: bytes, kind: str) -> Response:
        headers = Headers([("Content-Type", kind), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("Connection", "close")])
        return Response(status.value, status.phrase, headers, body)

    def _process(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/":
            return self._response(HTTPStatus.OK, self.html, "text/html; charset=utf-8")
        if path == "/status":
            return self._response(HTTPStatus.OK, self.snapshot(), "application/json")
        if path == "/live":
            self.live_attempts.append(time.monotonic())
            if self.live:
                return None  # the WebSocket handshake goes ahead
        return self._response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    async def _push(self, connection: ServerConnection) -> None:
        self._sockets.add(connection)
        try:
            while True:
                await connection.send(self.snapshot().decode())
                await asyncio.sleep(PUSH_INTERVAL)
        except ConnectionClosed:
            pass
        finally:
            self._sockets.discard(connection)

    def drop_live(self) -> None:
        """Refuse /live from now on and close the WebSockets that are open."""
        self.live = False

        async def close_all() -> None:
            await asyncio.gather(*(socket.close(1001) for socket in list(self._sockets)))

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(5)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server: Server
        async with serve(self._push, "127.0.0.1", 0, process_request=self._process) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported by start()
            self._error = error
        finally:
            self._ready.set()

    def start(self) -> StatusServer:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError(f"status page server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium(require_chromium()) as chromium:
        yield chromium


@pytest.fixture
def server() -> Iterator[StatusServer]:
    running = StatusServer(sample_document()).start()
    yield running
    running.stop()


@pytest.fixture
def page(browser: Chromium, server: StatusServer) -> Iterator[Chromium]:
    """The page loaded, connected to /live and rendered at least once."""
    browser.page_errors.clear()
    browser.goto(server.url)
    browser.wait_for("document.getElementById('connection').textContent === 'live'")
    browser.wait_for("Number(document.body.dataset.updates) > 0")
    yield browser
    assert browser.page_errors == []
    browser.goto("about:blank")


def server_field(upstream: str, address: str, field: str) -> str:
    """An expression for one field's text in a server's row."""
    row = f"[data-upstream={json.dumps(upstream)}][data-server={json.dumps(address)}]"
    selector = json.dumps(f"{row} [data-field={json.dumps(field)}]")
    return f"document.querySelector({selector})?.textContent"


def test_names_every_server_and_the_open_tunnels(page: Chromium) -> None:
    assert page.evaluate("document.getElementById('tunnels-open').textContent") == "7"
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('[data-server]'),"
        " r => [r.dataset.upstream, r.dataset.server])")
    assert rows == [["backend", "127.0.0.1:8010"], ["chat", "10.0.0.2:9000"]]
    assert page.evaluate(server_field("backend", "127.0.0.1:8010", "open")) == "4"
    assert page.evaluate(server_field("backend", "127.0.0.1:8010", "state")) == "up"
    assert page.evaluate(server_field("chat", "10.0.0.2:9000", "open")) == "3"
    assert page.evaluate(server_field("chat", "10.0.0.2:9000", "state")) == "draining"
    text = page.evaluate("document.body.innerText")
    for expected in ("0.1.0", "http://127.0.0.1:8080", "round_robin", "least_conn",
                     "bad_handshake", "4.8 MiB", "1.2 KiB/s", "12.5s"):
        assert expected in text


def test_changes_show_up_without_a_reload(page: Chromium, server: StatusServer) -> None:
    page.evaluate("window.sameDocument = true")
    before = int(page.evaluate("document.body.dataset.updates"))
    upstreams = copy.deepcopy(server.document["upstreams"])
    upstreams[0]["servers"][0]["open"] = 41
    server.update(tunnels={"open": 1234, "closed": 3}, upstreams=upstreams)
    page.wait_for("document.getElementById('tunnels-open').textContent === '1,234'", timeout=5)
    page.wait_for(f"{server_field('backend', '127.0.0.1:8010', 'open')} === '41'", timeout=5)
    assert int(page.evaluate("document.body.dataset.updates")) > before
    assert page.evaluate("window.sameDocument") is True
    assert page.evaluate("document.getElementById('connection').textContent") == "live"


def test_polls_status_when_the_websocket_is_refused(browser: Chromium) -> None:
    browser.page_errors.clear()
    server = StatusServer(sample_document(), live=False).start()
    try:
        browser.goto(server.url)
        browser.wait_for("Number(document.body.dataset.updates) >= 2", timeout=5)
        server.update(tunnels={"open": 99, "closed": 3})
        browser.wait_for("document.getElementById('tunnels-open').textContent === '99'",
                         timeout=5)
        browser.wait_for(
            "document.getElementById('connection').textContent === 'disconnected'", timeout=5)
        assert browser.page_errors == []
    finally:
        browser.goto("about:blank")
        server.stop()


def test_reconnects_after_the_websocket_closes(page: Chromium, server: StatusServer) -> None:
    assert len(server.live_attempts) == 1
    dropped = time.monotonic()
    server.drop_live()
    page.wait_for("document.getElementById('connection').textContent === 'disconnected'",
                  timeout=5)
    # Meanwhile /status is polled: changes still show up.
    server.update(tunnels={"open": 55, "closed": 3})
    page.wait_for("document.getElementById('tunnels-open').textContent === '55'", timeout=5)
    deadline = time.monotonic() + 5
    while len(server.live_attempts) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.live = True
    page.wait_for("document.getElementById('connection').textContent === 'live'", timeout=5)
    # Retries back off, 1 s then 2 s, instead of hammering the proxy.
    refused, accepted = server.live_attempts[1:3]
    assert 0.8 <= refused - dropped < 2.5
    assert 1.8 <= accepted - refused < 3


def test_text_from_the_data_is_escaped(page: Chromium, server: StatusServer) -> None:
    hostile = "<b>x</b>"
    closes = copy.deepcopy(server.document["recent_closes"])
    closes.insert(0, {**closes[0], "time": time.time(), "reason": hostile,
                      "client": "<img src=x onerror=\"window.pwned=1\">"})
    upstreams = copy.deepcopy(server.document["upstreams"])
    upstreams[0]["servers"][0]["health"]["detail"] = "<script>window.pwned=2</script>"
    server.update(recent_closes=closes, upstreams=upstreams)
    reasons = page.wait_for(
        "(r => r.length === 2 && r)(Array.from("
        "document.querySelectorAll('[data-close] [data-field=reason]'), c => c.textContent))",
        timeout=5)
    assert reasons == [hostile, "client"]  # newest first
    page.wait_for(f"{server_field('backend', '127.0.0.1:8010', 'health')}"
                  " === '<script>window.pwned=2</script>'", timeout=5)
    assert page.evaluate("document.querySelectorAll('main b, main img, main script').length") == 0
    assert page.evaluate("window.pwned === undefined") is True


def test_fits_a_phone_screen(page: Chromium, tmp_path: Path) -> None:
    page.set_viewport(390, 844, mobile=True, scale=2)
    try:
        page.wait_for("screen.width === 390", timeout=5)
        # Give the page a render at this size, then check nothing widens the page.
        seen = int(page.evaluate("document.body.dataset.updates"))
        page.wait_for(f"Number(document.body.dataset.updates) > {seen}", timeout=5)
        assert page.evaluate("window.innerWidth") == 390  # the viewport meta is honoured
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
        # The sections stack in one column, and no text is smaller than 14 px.
        lefts = page.evaluate(
            "Array.from(document.querySelectorAll('main > section'),"
            " s => Math.round(s.getBoundingClientRect().left))")
        assert len(set(lefts)) == 1, lefts
        smallest = page.evaluate(
            "Math.min(...Array.from(document.querySelectorAll('body *'))"
            ".filter(e => e.offsetParent !== null && e.childNodes.length"
            " && Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim()))"
            ".map(e => parseFloat(getComputedStyle(e).fontSize)))")
        assert smallest >= 14
        page.screenshot(tmp_path / "phone.png")
        assert (tmp_path / "phone.png").read_bytes().startswith(b"\x89PNG")
    finally:
        page.clear_viewport()
