"""Peers for the client tests: servers that record what ``wsgate connect`` sends.

Everything runs on one asyncio loop in a daemon thread (:class:`LoopThread`), so a test
can start a WebSocket server (websockets), a plain HTTP responder (a 502, a redirect), a
silent TCP server (timeouts) or an HTTP CONNECT proxy on port 0, then run the real
``wsgate`` as a subprocess against it and look at what the server saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Event

from conftest import wsgate_command


class LoopThread:
    """An asyncio loop running in a daemon thread, for the servers a test talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Awaitable[Any], timeout: float = 10) -> Any:
        async def wrapper() -> Any:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextlib.contextmanager
def loop_thread() -> Iterator[LoopThread]:
    """A :class:`LoopThread` stopped when the block ends."""
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


def free_port() -> int:
    """A port nothing listens on (bound then released), for "connection refused"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Seen:
    """What a test server saw; queues, so a test can wait for the next item."""

    requests: list[Request] = field(default_factory=list)
    messages: queue.Queue[str | bytes] = field(default_factory=queue.Queue)
    pings: queue.Queue[bytes] = field(default_factory=queue.Queue)
    pongs: queue.Queue[bytes] = field(default_factory=queue.Queue)
    #: (code, reason) the client closed with, once per connection.
    closes: queue.Queue[tuple[int | None, str | None]] = field(default_factory=queue.Queue)
    subprotocols: list[str | None] = field(default_factory=list)
    connections: int = 0


class _Recording(ServerConnection):
    """Copies the pings and pongs a client sends into the server's :class:`Seen`."""

    seen: Seen

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.seen.pings.put(bytes(event.data))
        if isinstance(event, Frame) and event.opcode is Opcode.PONG:
            self.seen.pongs.put(bytes(event.data))


Handler = Callable[[ServerConnection, Seen], Awaitable[None]]


async def echo(connection: ServerConnection, seen: Seen) -> None:
    """Answer text with ``echo: text`` and binary with the same bytes."""
    async for message in connection:
        seen.messages.put(message)
        await connection.send(f"echo: {message}" if isinstance(message, str) else message)


@dataclass
class WsServer:
    port: int
    seen: Seen
    server: Server
    secure: bool = False

    @property
    def url(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://127.0.0.1:{self.port}"


def start_ws_server(
    loop: LoopThread,
    handler: Handler = echo,
    *,
    ssl: Any = None,
    subprotocols: list[str] | None = None,
) -> WsServer:
    """A websockets server on 127.0.0.1:0 running ``handler`` for each connection."""
    seen = Seen()

    class Recording(_Recording):
        pass

    Recording.seen = seen

    def record(connection: ServerConnection, request: Request) -> None:
        seen.requests.append(request)

    async def run(connection: ServerConnection) -> None:
        seen.connections += 1
        seen.subprotocols.append(connection.subprotocol)
        try:
            await handler(connection, seen)
        finally:
            await connection.close()
            seen.closes.put((connection.close_code, connection.close_reason))

    async def start() -> Server:
        return await serve(
            run, "127.0.0.1", 0, process_request=record, create_connection=Recording,
            ssl=ssl, subprotocols=subprotocols, ping_interval=None,
        )

    server: Server = loop.run(start())
    return WsServer(server.sockets[0].getsockname()[1], seen, server, ssl is not None)


def stop_ws_server(loop: LoopThread, server: WsServer) -> None:
    async def stop() -> None:
        server.server.close()
        await server.server.wait_closed()

    loop.run(stop())


async def _start_tcp(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> asyncio.Server:
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def start_http(loop: LoopThread, response: bytes) -> int:
    """A server that reads a request head and answers with ``response``; its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        writer.close()

    server: asyncio.Server = loop.run(_start_tcp(handle))
    port: int = server.sockets[0].getsockname()[1]
    return port


def http_response(status: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response, e.g. ``http_response("502 Bad Gateway")``."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def start_silent(loop: LoopThread) -> int:
    """A server that accepts connections and never answers: for handshake timeouts."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    server: asyncio.Server = loop.run(_start_tcp(handle))
    port: int = server.sockets[0].getsockname()[1]
    return port


@dataclass
class Proxy:
    port: int
    requests: list[str]


def start_connect_proxy(loop: LoopThread, reject: str | None = None) -> Proxy:
    """An HTTP CONNECT proxy recording each request line; ``reject`` answers that status."""
    requests: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line = head.split("\r\n", 1)[0]
        requests.append(request_line)
        method, target, _ = request_line.split(" ", 2)
        if reject is not None or method != "CONNECT":
            writer.write(http_response(reject or "405 Method Not Allowed"))
            await writer.drain()
            writer.close()
            return
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server: asyncio.Server = loop.run(_start_tcp(handle))
    return Proxy(server.sockets[0].getsockname()[1], requests)


def wait_item(items: queue.Queue[Any], timeout: float = 10) -> Any:
    """The next item a server saw, or a clear failure after ``timeout`` seconds."""
    try:
        return items.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"nothing arrived within {timeout}s") from None


# -- interactive sessions ---------------------------------------------------------------------


def pty_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for a wsgate at a pseudo-terminal: history in tmp_path, no CPR wait."""
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    env.update(
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",
        XDG_STATE_HOME=str(tmp_path / "state"),
        HOME=str(tmp_path),
    )
    env.update(extra)
    return env


class Terminals:
    """``wsgate`` processes at pseudo-terminals (pexpect), all killed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[pexpect.spawn] = []

    def spawn(self, *args: str, env: dict[str, str] | None = None,
              timeout: float = 10) -> pexpect.spawn:
        command, *rest = wsgate_command()
        child = pexpect.spawn(
            command, [*rest, *args], env=env or pty_env(self.tmp_path), encoding="utf-8",
            timeout=timeout, dimensions=(24, 200),
        )
        if os.environ.get("WSGATE_TEST_ECHO_PTY"):
            child.logfile_read = sys.stderr
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in self.children:
            if child.isalive():
                child.terminate(force=True)


def start_deaf(loop: LoopThread) -> int:
    """A server that completes the opening handshake, then ignores everything (even Close)."""
    from websockets.utils import accept_key

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                       if line.lower().startswith("sec-websocket-key:"))
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_key(key).encode() + b"\r\n\r\n"
            )
            await writer.drain()
            while await reader.read(65536):
                pass
        writer.close()

    server: asyncio.Server = loop.run(_start_tcp(handle))
    port: int = server.sockets[0].getsockname()[1]
    return port
