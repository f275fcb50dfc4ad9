"""What the operations tests share: upstreams that record how each WebSocket ended,
clients that check every echo arrives once and in order, and the proxy's processes.

Both run on an event loop in a background thread, so a test drives the proxy (signals,
config files) from its own thread while traffic flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as connect_sync

from conftest import Proc, Spawn

T = TypeVar("T")


class Background:
    """An event loop in a thread; :meth:`run` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Upstream:
    """A WebSocket echo server that prefixes its replies and records close codes."""

    prefix: str
    port: int = 0
    server: Server | None = None
    connections: int = 0
    close_codes: list[int | None] = field(default_factory=list)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(f"{self.prefix}:{message!s}")
        self.close_codes.append(ws.close_code)

    async def start(self) -> Upstream:
        self.server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def restart(self) -> Upstream:
        """Serve again on the same port (after ``server.close()``)."""
        self.server = await serve(self._handle, "127.0.0.1", self.port, ping_interval=None)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Stream:
    """One client sending numbered messages and checking each echo comes back in order."""

    index: int
    sent: int = 0
    echoed: int = 0
    disorder: int = 0
    closed: int | None = None
    """The close code, if the connection ended before the test closed it."""
    closed_at: float = 0.0
    first_disorder: str = ""
    servers: set[str] = field(default_factory=set)
    ws: ClientConnection | None = None


class Streams:
    """``count`` WebSockets through the proxy, each with messages every ``interval``."""

    def __init__(self, bg: Background, port: int, count: int, interval: float = 0.02,
                 context: ssl.SSLContext | None = None) -> None:
        self.bg = bg
        self.port = port
        self.context = context
        self.interval = interval
        self.streams = [Stream(index) for index in range(count)]
        self.stopping = False
        self.futures: list[Future[None]] = []

    def open(self) -> None:
        async def open_all() -> None:
            for stream in self.streams:
                scheme = "ws" if self.context is None else "wss"
                stream.ws = await connect(f"{scheme}://127.0.0.1:{self.port}/",
                                          ssl=self.context, ping_interval=None, open_timeout=5)
        self.bg.run(open_all())
        self.futures = [self.bg.start(self._send(stream)) for stream in self.streams]
        self.futures += [self.bg.start(self._receive(stream)) for stream in self.streams]

    async def _send(self, stream: Stream) -> None:
        assert stream.ws is not None
        with contextlib.suppress(ConnectionClosed):
            while not self.stopping:
                await stream.ws.send(f"{stream.index}:{stream.sent}")
                stream.sent += 1
                await asyncio.sleep(self.interval)

    async def _receive(self, stream: Stream) -> None:
        assert stream.ws is not None
        try:
            async for reply in stream.ws:
                server, _, body = str(reply).partition(":")
                stream.servers.add(server)
                if body != f"{stream.index}:{stream.echoed}":
                    stream.disorder += 1
                    if not stream.first_disorder:
                        stream.first_disorder = f"{body!r} for {stream.echoed}"
                stream.echoed += 1
        except ConnectionClosed:
            pass
        if not self.stopping:
            stream.closed = stream.ws.close_code
            stream.closed_at = time.monotonic()

    def total(self, name: str) -> int:
        return sum(getattr(stream, name) for stream in self.streams)

    def dropped(self) -> list[Stream]:
        return [stream for stream in self.streams if stream.closed is not None]

    def finish(self, settle: float = 1.0) -> None:
        """Stop sending, let the last echoes come back, then close every connection."""
        async def close_all() -> None:
            self.stopping = True
            await asyncio.sleep(settle)
            for stream in self.streams:
                if stream.ws is not None:
                    await stream.ws.close()
        self.bg.run(close_all())
        for future in self.futures:
            future.result(timeout=10)


def who(port: int, scheme: str = "ws", context: ssl.SSLContext | None = None) -> str:
    """Which upstream answers a new WebSocket through the proxy ("A" or "B")."""
    with connect_sync(f"{scheme}://127.0.0.1:{port}/", ssl=context, open_timeout=5) as ws:
        ws.send("hi")
        reply = ws.recv(timeout=5)
    assert isinstance(reply, str)
    server, _, body = reply.partition(":")
    assert body == "hi"
    return server


def write_config(path: Path, servers: list[str], extra: str = "", upstream: str = "",
                 listen: str = '"127.0.0.1:0"') -> None:
    lines = ", ".join(f'"{server}"' for server in servers)
    path.write_text(f"listen = [{listen}]\n{extra}\n"
                    f"[upstream.backend]\nserver = [{lines}]\n{upstream}\n"
                    f'[location."/"]\nproxy_pass = "http://backend"\n')


def start(wsgate: Spawn, config: Path) -> tuple[Proc, int]:
    proc = wsgate(["proxy", "-c", str(config)])
    port = int(proc.expect(r"Listening on https?://[^ ]+:(\d+)").group(1))
    return proc, port


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(word) for word in text.split()]


def exe_of(pid: int) -> str:
    """What a process runs: its command line, joined."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)
