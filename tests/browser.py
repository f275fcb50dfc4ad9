"""A small headless Chromium driver for tests, over the DevTools protocol (CDP).

No playwright or selenium: Chromium is started with ``--remote-debugging-port=0``, the port
it picked is read from ``DevToolsActivePort`` in its fresh profile directory, and the page
target's WebSocket is driven with ``websockets``' synchronous client. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # The test servers are on 127.0.0.1: never send their requests to an http_proxy.
    "--no-proxy-server",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 15.0
CALL_TIMEOUT = 15.0


class BrowserError(Exception):
    """Chromium failed to start, a CDP call failed, or page JavaScript threw."""


def chromium_path() -> str | None:
    """``$WSGATE_CHROMIUM``, else /usr/bin/chromium, else chromium or chromium-browser on PATH."""
    configured = os.environ.get("WSGATE_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else shutil.which(configured)
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """Chromium's path; without one the test is skipped, or fails under CI (which installs it)."""
    path = chromium_path()
    if path is None:
        message = "no chromium (set WSGATE_CHROMIUM or install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Chromium:
    """A headless Chromium with one page, driven over CDP. Use as a context manager."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or require_chromium()
        self._ids = itertools.count(1)
        self._events: deque[dict[str, Any]] = deque(maxlen=1000)
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        #: Uncaught JavaScript exceptions of the page, as Chromium described them.
        self.page_errors: list[str] = []

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Chromium:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wsgate-chromium-"))
        profile = self._dir / "profile"
        profile.mkdir()
        with open(self._dir / "chromium.log", "wb") as log:
            self._proc = subprocess.Popen(
                [self.path, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        port = self._read_port(profile / "DevToolsActivePort")
        url = self._page_target(port)
        # Entered as a context manager, which every websockets version accepts without warning.
        self._ws = self._stack.enter_context(connect(
            url, max_size=None, proxy=None, compression=None, open_timeout=CALL_TIMEOUT,
            ping_interval=None))
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _read_port(self, file: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}: {self.log()}")
            with contextlib.suppress(OSError):
                first = file.read_text().split("\n", 1)[0].strip()
                if first.isdigit():
                    return int(first)
            time.sleep(0.05)
        raise BrowserError(f"no DevToolsActivePort after {START_TIMEOUT}s: {self.log()}")

    def _page_target(self, port: int) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                with opener.open(f"http://127.0.0.1:{port}/json", timeout=5) as response:
                    targets = json.load(response)
                for target in targets:
                    if target.get("type") == "page" and target.get("webSocketDebuggerUrl"):
                        return str(target["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise BrowserError(f"no page target on port {port} after {START_TIMEOUT}s")

    def log(self, tail: int = 2000) -> str:
        """The end of chromium's stdout and stderr."""
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self._dir / "chromium.log").read_text(errors="replace")[-tail:]
        return ""

    def close(self) -> None:
        """Close the socket, end chromium (and its helpers) and remove the profile."""
        self._ws = None
        with contextlib.suppress(Exception):
            self._stack.close()
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            # Renderer and zygote processes share chromium's own session and process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- the protocol -----------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """Send one CDP command and return its result; events that arrive meanwhile are kept."""
        if self._ws is None:
            raise BrowserError("chromium is not running")
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline, method)
            if message.get("id") != ident:
                if "method" in message:
                    self._events.append(message)
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        assert self._ws is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer to {waiting_for}")
        try:
            raw = self._ws.recv(timeout=remaining)
        except TimeoutError:
            raise TimeoutError(f"no answer to {waiting_for}") from None
        message: dict[str, Any] = json.loads(raw)
        if message.get("method") == "Runtime.exceptionThrown":
            details = message.get("params", {}).get("exceptionDetails", {})
            self.page_errors.append(
                details.get("exception", {}).get("description") or details.get("text", "?"))
        return message

    def wait_event(self, method: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """The first kept or next arriving event named ``method`` (its params)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in list(self._events):
                if event.get("method") == method:
                    self._events.remove(event)
                    params: dict[str, Any] = event.get("params", {})
                    return params
            message = self._receive(deadline, method)
            if "method" in message:
                self._events.append(message)

    # -- what tests use ---------------------------------------------------------------------

    def goto(self, url: str, timeout: float = CALL_TIMEOUT) -> None:
        """Navigate the page and wait for its load event."""
        self._events.clear()
        result = self.call("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); raises if it throws."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
        })
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw {description}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll ``expression`` until its value is truthy and return it."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.evaluate(expression)
            except BrowserError as error:  # e.g. while the page is still loading
                last = error
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expression!r} still {last!r} after {timeout}s")
            time.sleep(interval)

    def set_viewport(self, width: int, height: int, mobile: bool, scale: float = 1) -> None:
        """Emulate a screen of this size (CSS pixels); ``mobile`` honours the viewport meta."""
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile,
        })
        self.call("Emulation.setTouchEmulationEnabled", {"enabled": mobile})

    def clear_viewport(self) -> None:
        """Back to the window's own size."""
        self.call("Emulation.clearDeviceMetricsOverride")
        self.call("Emulation.setTouchEmulationEnabled", {"enabled": False})

    def screenshot(self, path: str | Path) -> Path:
        """Save the visible page as a PNG."""
        result = self.call("Page.captureScreenshot", {"format": "png"})
        target = Path(path)
        target.write_bytes(base64.b64decode(result["data"]))
        return target
