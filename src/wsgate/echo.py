"""The seed's echo server (Node ws server.js), as fast as the upstream of a benchmark must be.

It logs "Received from client: <msg>" for each message and answers "Server received from
client: <msg>": the seed's exact strings. The data path is picows, a compiled WebSocket
implementation: on a 2-core machine it echoes about 4x what ``websockets`` can, and the echo
server is the upstream in every benchmark of the system, so it must never be the bottleneck.

It passes Autobahn|Testsuite (benchmarks/autobahn.py, docs/autobahn.md); with ``--deflate``
it accepts permessage-deflate too (:mod:`wsgate.echo_deflate`), on the same data path.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from wsgate import runtime, values
from wsgate.echo_deflate import Deflate, DeflateError, PayloadTooBig
from wsgate.errors import Failure, UsageError
from wsgate.signals import STOP, Signals

SEED_PREFIX = "Server received from client: "
BACKLOG = 4096
"""Pending connections the kernel queues: a handshake storm must not overflow it."""

SHUTDOWN_GRACE = 2.0
"""How long clients get to answer the Close 1001 before the process exits anyway."""


@dataclass(frozen=True)
class EchoOptions:
    """What ``wsgate echo`` serves; ``wsgate up`` builds one too."""

    host: str = "127.0.0.1"
    ports: Sequence[int] = (8010,)
    prefix: str = SEED_PREFIX
    raw: bool = False
    quiet: bool = False
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    max_size: int = 1 << 20
    deflate: bool = False


class Clients:
    """Open connections: shutdown says Close 1001 to each, and keepalive pings them all.

    One timer for every connection, as Node ws's heartbeat example does, rather than a task
    per connection: idle connections then cost no timers of their own.
    """

    def __init__(self) -> None:
        self.open: set[EchoListener] = set()

    async def keep_alive(self, interval: float, timeout: float) -> None:
        """Ping every client each ``interval``; drop those silent for ``timeout`` (0: never)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            pinged = [client for client in self.open if client.ping()]
            if timeout > 0 and pinged:
                loop.call_later(timeout, self._drop_silent, pinged)

    @staticmethod
    def _drop_silent(pinged: list[EchoListener]) -> None:
        for client in pinged:
            if client.awaiting_pong:
                client.drop_silent()


class EchoListener(WSListener):
    """One client: reassembles fragmented messages, answers each, logs it unless quiet."""

    transport: WSTransport

    def __init__(self, options: EchoOptions, clients: Clients, prefix: bytes) -> None:
        self._options = options
        self._clients = clients
        self._prefix = prefix
        self._parts: list[bytes] = []
        self._parts_type = WSMsgType.TEXT
        self._parts_size = 0
        self._close_answered = False
        self.awaiting_pong = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.reply: Callable[[WSMsgType, bytes], None] = transport.send
        self._clients.open.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._clients.open.discard(self)

    def ping(self) -> bool:
        """Send a keepalive ping unless one is still unanswered; say whether one was sent."""
        if self.awaiting_pong:
            return False
        self.awaiting_pong = True
        self.transport.send_ping()
        return True

    def drop_silent(self) -> None:
        self.transport.send_close(WSCloseCode.GOING_AWAY, b"no pong")
        self.transport.disconnect(graceful=False)

    def fail(self, transport: WSTransport, code: WSCloseCode) -> None:
        """Fail the connection (RFC 6455 7.1.7): Close with ``code``, then disconnect."""
        self._parts = []
        transport.send_close(code)
        transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.rsv1 or frame.rsv2 or frame.rsv3:  # RFC 6455 5.2: no extension gives them
            self.fail(transport, WSCloseCode.PROTOCOL_ERROR)
            return
        kind = frame.msg_type
        if (kind is WSMsgType.TEXT or kind is WSMsgType.BINARY) and frame.fin and not self._parts:
            self._answer(transport, kind, frame.get_payload_as_bytes(), frame.last_in_buffer)
        elif kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.CONTINUATION:
            self.on_data(transport, kind, frame.fin, frame.get_payload_as_bytes(),
                         frame.last_in_buffer)
        elif kind is WSMsgType.PING:  # answered here, not by picows, which ignores RSV bits
            transport.send_pong(frame.get_payload_as_bytes())
        elif kind is WSMsgType.PONG:
            self.awaiting_pong = False
        elif kind is WSMsgType.CLOSE:
            self.answer_close(transport, frame.get_close_code(), frame.get_close_message())

    def on_data(self, transport: WSTransport, kind: WSMsgType, fin: bool, payload: bytes,
                flush: bool) -> None:
        """A data frame's (inflated) payload: a message to answer, or a part of one."""
        if kind is not WSMsgType.CONTINUATION:
            if self._parts:  # RFC 6455 5.4: a new message inside a fragmented one
                self.fail(transport, WSCloseCode.PROTOCOL_ERROR)
            elif fin:
                self._answer(transport, kind, payload, flush)
            else:
                self._parts = [payload]
                self._parts_type = kind
                self._parts_size = len(payload)
            return
        self._parts_size += len(payload)
        if not self._parts or self._parts_size > self._options.max_size:
            too_big = bool(self._parts)
            self.fail(transport,
                      WSCloseCode.MESSAGE_TOO_BIG if too_big else WSCloseCode.PROTOCOL_ERROR)
            return
        self._parts.append(payload)
        if fin:
            whole = b"".join(self._parts)
            self._parts = []
            self._answer(transport, self._parts_type, whole, flush)

    def answer_close(self, transport: WSTransport, code: WSCloseCode, message: bytes) -> None:
        """Answer the client's Close (echoing a valid code, as Node ws does), and go."""
        self._close_answered = True
        if code is WSCloseCode.NO_INFO:
            transport.send(WSMsgType.CLOSE, b"")  # a Close without a code gets one back
        elif not sendable_close_code(code.value):
            transport.send_close(WSCloseCode.PROTOCOL_ERROR)
        else:
            transport.send_close(code, message)
        transport.disconnect()

    def answer_unseen_close(self) -> bool:
        """Answer a Close that picows has parsed but not yet delivered, if there is one:
        see :class:`ParserLog`. A Close without a code gets 1000 here, as picows sends a
        Close of its own unless one with a code has gone."""
        transport = self.transport
        handshake = transport.close_handshake
        if (self._close_answered or transport.is_close_frame_sent or handshake is None
                or handshake.recv is None):
            return False
        code = handshake.recv.code
        if code is WSCloseCode.NO_INFO:
            code = WSCloseCode.OK
        self.answer_close(transport, code, (handshake.recv.reason or "").encode())
        return True

    def _answer(self, transport: WSTransport, kind: WSMsgType, payload: bytes, flush: bool) -> None:
        if kind is WSMsgType.TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self.fail(transport, WSCloseCode.INVALID_TEXT)
                return
        else:
            text = payload.decode(errors="replace")
        if not self._options.quiet:
            sys.stdout.write(f"Received from client: {text}\n")
            if flush:
                sys.stdout.flush()
        self.reply(kind, payload if self._options.raw else self._prefix + payload)


class DeflateListener(EchoListener):
    """A client that negotiated permessage-deflate: RSV1 marks a compressed message, whose
    payload is inflated before the echo server sees it; every reply is compressed."""

    def __init__(self, options: EchoOptions, clients: Clients, prefix: bytes,
                 deflate: Deflate) -> None:
        super().__init__(options, clients, prefix)
        self._deflate = deflate

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        data = (kind is WSMsgType.TEXT or kind is WSMsgType.BINARY
                or kind is WSMsgType.CONTINUATION)
        if not data or frame.rsv2 or frame.rsv3:
            super().on_ws_frame(transport, frame)  # RSV1 on a control frame fails there
            return
        partial = kind is WSMsgType.CONTINUATION and bool(self._parts)
        try:
            payload = self._deflate.decode(
                frame, self._options.max_size - (self._parts_size if partial else 0))
        except PayloadTooBig:
            self.fail(transport, WSCloseCode.MESSAGE_TOO_BIG)
            return
        except DeflateError:
            self.fail(transport, WSCloseCode.PROTOCOL_ERROR)
            return
        self.on_data(transport, kind, frame.fin, payload, frame.last_in_buffer)

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.reply = self._deflated

    def _deflated(self, kind: WSMsgType, payload: bytes) -> None:
        self.transport.send(kind, self._deflate.encode(kind, payload), rsv1=True)


class ParserLog(logging.LoggerAdapter[logging.Logger]):
    """picows' logger for the echo server, and the one moment to answer a Close right.

    picows parses one frame ahead of the one it delivers. When what follows a client's
    Close is a frame it rejects (a second Close: Autobahn 7.1.2), it sends Close 1002 and
    disconnects before the listener has seen the first Close, whereas RFC 6455 says
    nothing after a Close counts. It logs that error just before sending its Close: the
    first Close is answered then, and picows' own Close is not sent (one per connection).
    """

    def __init__(self, clients: Clients) -> None:
        super().__init__(logging.getLogger("picows.echo"), {})
        self._clients = clients

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        for client in self._clients.open:
            if client.answer_unseen_close():
                break  # only the connection being parsed can have one
        super().error(msg, *args, **kwargs)


def sendable_close_code(code: int) -> bool:
    """Whether a Close frame may carry ``code`` (RFC 6455 7.4; 1012-1014 from IANA's
    registry): 1004-1006 and 1015 are for reports, never the wire; 3000-4999 are for
    libraries and applications. (picows refuses most others itself, but lets 1006 by.)"""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _first_subprotocol(request: WSUpgradeRequest) -> str | None:
    """Accept the client's first subprotocol, as Node ws does without handleProtocols."""
    offered = request.headers.get("Sec-WebSocket-Protocol")
    if not offered:
        return None
    first: str = offered.split(",")[0].strip()
    return first or None


class EchoServer:
    """Listening sockets on every port, their clients, and the keepalive timer."""

    def __init__(self, options: EchoOptions) -> None:
        self.options = options
        self.clients = Clients()
        self.servers: list[asyncio.Server] = []
        self._keepalive: asyncio.Task[None] | None = None

    def _listener_for(
        self, request: WSUpgradeRequest
    ) -> EchoListener | WSUpgradeResponseWithListener:
        prefix = self.options.prefix.encode()
        headers = {}
        protocol = _first_subprotocol(request)
        if protocol is not None:
            headers["Sec-WebSocket-Protocol"] = protocol
        negotiated = None
        if self.options.deflate:
            negotiated = Deflate.negotiate(request.headers.getall("Sec-WebSocket-Extensions", []))
        if negotiated is None:
            listener = EchoListener(self.options, self.clients, prefix)
        else:
            headers["Sec-WebSocket-Extensions"] = negotiated[0]
            listener = DeflateListener(self.options, self.clients, prefix, negotiated[1])
        if not headers:
            return listener
        response = WSUpgradeResponse.create_101_response(extra_headers=headers)
        return WSUpgradeResponseWithListener(response, listener)

    async def start(self) -> None:
        """Listen on every port (all or none) and start pinging."""
        host = self.options.host
        for port in self.options.ports:
            try:
                server = await ws_create_server(
                    self._listener_for, host, port,
                    max_frame_size=self.options.max_size,
                    logger_name=ParserLog(self.clients), enable_auto_pong=False,
                    backlog=BACKLOG,
                )
            except OSError as error:
                self.close_listeners()
                in_use = error.errno == errno.EADDRINUSE
                reason = "address already in use" if in_use else error.strerror
                raise Failure(f"cannot listen on {host}:{port}: {reason}") from None
            self.servers.append(server)
        if self.options.ping_interval > 0:
            self._keepalive = asyncio.ensure_future(
                self.clients.keep_alive(self.options.ping_interval, self.options.ping_timeout)
            )

    def urls(self) -> list[str]:
        """``ws://host:port`` for each bound socket (the real port when 0 was asked)."""
        urls = []
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                host = f"[{host}]" if ":" in host else host
                urls.append(f"ws://{host}:{port}")
        return urls

    def close_listeners(self) -> None:
        for server in self.servers:
            server.close()

    async def shutdown(self) -> None:
        """Stop accepting, say Close 1001 to every client, wait (bounded) for them to go."""
        self.close_listeners()
        if self._keepalive is not None:
            self._keepalive.cancel()
        transports = [client.transport for client in self.clients.open]
        for transport in transports:
            transport.send_close(WSCloseCode.GOING_AWAY)
            transport.disconnect()
        if transports:
            waits = [asyncio.ensure_future(t.wait_disconnected()) for t in transports]
            await asyncio.wait(waits, timeout=SHUTDOWN_GRACE)


async def serve(options: EchoOptions, signals: Signals) -> None:
    """Serve until SIGINT or SIGTERM, then say Close 1001 to every client. The handlers are
    the loop's before the server says it is listening: a signal sent as soon as "Listening"
    is printed is a clean shutdown, never the default death by signal."""
    stop = asyncio.Event()
    signals.attach(asyncio.get_running_loop(), stop.set)
    server = EchoServer(options)
    await server.start()
    print("Server started")
    for url in server.urls():
        print(f"Listening on {url}")
    sys.stdout.flush()
    await stop.wait()
    await server.shutdown()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=values.port_flag(zero=True), action="append",
                        metavar="PORT",
                        help="port to listen on; repeat for several (default: 8010; 0 picks one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; "
                             "0.0.0.0 for every IPv4 interface)")
    parser.add_argument("--prefix", default=SEED_PREFIX, metavar="TEXT",
                        help=f"reply prefix (default: {SEED_PREFIX!r})")
    parser.add_argument("--raw", action="store_true",
                        help="reply with each message unchanged (text as text, binary as binary)")
    parser.add_argument("--quiet", action="store_true", help="do not log each message")
    parser.add_argument("--ping-interval", type=values.duration_flag(zero=True), default=20.0,
                        metavar="TIME",
                        help="ping each client this often to keep it alive, e.g. 20s or 500ms "
                             "(default: 20s; 0: off)")
    parser.add_argument("--ping-timeout", type=values.duration_flag(zero=True), default=20.0,
                        metavar="TIME",
                        help="drop a client that has not answered a ping within this time "
                             "(default: 20s; 0: never drop)")
    parser.add_argument("--max-size", type=values.size_flag(zero=False), default=1 << 20,
                        metavar="SIZE",
                        help="largest message accepted, e.g. 65536, 64k or 1m; larger ones "
                             "close with 1009 (default: 1m)")
    parser.add_argument("--deflate", action="store_true",
                        help="accept permessage-deflate (RFC 7692) from clients that offer it: "
                             "their messages may come compressed, and the replies go "
                             "compressed")


def options_from(args: argparse.Namespace) -> EchoOptions:
    if args.raw and args.prefix != SEED_PREFIX:
        raise UsageError("--raw and --prefix cannot be used together")
    return EchoOptions(
        host=args.host,
        ports=tuple(args.port or (8010,)),
        prefix=args.prefix,
        raw=args.raw,
        quiet=args.quiet,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        max_size=args.max_size,
        deflate=args.deflate,
    )


def run(args: argparse.Namespace) -> int:
    STOP.catch()
    runtime.run(serve(options_from(args), STOP))
    return 0
