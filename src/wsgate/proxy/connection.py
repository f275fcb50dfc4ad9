"""One client connection, top to bottom: parse the head (llhttp), check it, route it, pick
an upstream (next one on failure), send the head, relay the body both ways, and either
finish an HTTP exchange (keep-alive) or verify the 101 and hand both sockets to a tunnel.

Parser callbacks only queue events; :meth:`ClientConnection._pump` applies them in order
when the exchange can take them. That one queue gives pipelining, bodies that arrive
before the upstream is connected, and backpressure: while events wait, reading stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from enum import Enum
from functools import partial
from typing import Any, cast

import httptools

from wsgate.proxy import handshake, http1
from wsgate.proxy.accesslog import Entry
from wsgate.proxy.backend import UpstreamConnection
from wsgate.proxy.balancer import ip_hash_key
from wsgate.proxy.context import ProxyContext, Route
from wsgate.proxy.headers import RequestContext, client_response_headers, upstream_request_headers
from wsgate.proxy.http1 import BodyFraming, HeadError, Headers, RequestHead
from wsgate.proxy.tunnel import WRITE_HIGH_WATER, Tunnel
from wsgate.proxy.upstreams import Peer

Event = tuple[str, Any]


class State(Enum):
    IDLE = 1  # between requests
    ACTIVE = 2  # a request is being proxied
    TUNNEL = 3  # handed over to a tunnel
    CLOSED = 4


class ClientConnection(asyncio.Protocol):
    def __init__(self, ctx: ProxyContext, scheme: str) -> None:
        self.ctx = ctx
        self.scheme = scheme
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.state = State.IDLE
        self.events: deque[Event] = deque()
        self.queued_heads = 0
        self.queued_bytes = 0
        self.queue_paused = False
        self.upstream_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.stalled = 0
        self.stall_timer: asyncio.TimerHandle | None = None
        # The head being parsed.
        self._url = b""
        self._headers: Headers = []
        self._head_size = 0
        self._head_bytes = 0
        self._in_head = False
        # The exchange in progress.
        self.head: RequestHead | None = None
        self.route: Route | None = None
        self.framing = BodyFraming(False, 0)
        self.keep_alive = False
        self.upgrade_key: bytes | None = None
        self.upstream: UpstreamConnection | None = None
        self.peer: Peer | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.request_sent = False
        self.request_complete = False
        self.body_received = 0
        self.response_started = False
        self.response_status = 0
        self.response_chunked = False
        self.response_keep_alive = False
        self.response_close_delimited = False
        self.bytes_sent = 0
        self.started = 0.0
        self.started_wall = 0.0
        self.connect_time: float | None = None
        self.header_time: float | None = None
        self.upgrade_pending: list[bytes] = []
        self.seen_upstream_bytes = 0

    # -- connection events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.remote_addr: str = peer[0]
        self.remote_port: int = peer[1]
        self.server_host: str = local[0]
        self.server_port: int = local[1]
        self.trusted = self.ctx.config.trusts(self.remote_addr)
        self.ctx.connections.add(self)
        # nginx: a new connection gets client_header_timeout to start its first request, so
        # one that never sends a byte is not held for keepalive_timeout.
        self._arm(self.ctx.config.client_header_timeout, self._idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is State.ACTIVE:
            if not self.response_started:
                self.response_status = 499  # nginx: the client closed the connection
            self._log()
            self._drop_upstream()
        self.state = State.CLOSED
        self._disarm()
        self.ctx.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # after an upgrade request, bytes wait for the tunnel
            self.upgrade_pending.append(data)
            self.transport.pause_reading()
            return
        if not self._in_head and self.state is State.IDLE and not self.events:
            self._in_head = True
            self._head_bytes = 0
            # A head refused before it is complete is logged from its first byte, as nginx.
            self.started = time.monotonic()
            self.started_wall = time.time()
            self._arm(self.ctx.config.client_header_timeout, self._head_timeout)
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.parser = None
            rest = data[upgrade.args[0]:]
            if rest:
                self.upgrade_pending.append(rest)
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self._reject(cause if isinstance(cause, HeadError) else HeadError(400, "bad request"))
            return
        except httptools.HttpParserError as error:
            # Only a well-formed but unknown version ("HTTP/1.2") is a 505; llhttp's other
            # version messages ("Expected CRLF after version") are about a malformed line.
            version = "invalid http version" in str(error).lower()
            self._reject(HeadError(505 if version else 400, "malformed request"))
            return
        if self._in_head:
            config = self.ctx.config
            if not self._headers and len(self._url) > config.max_request_line:
                self._reject(HeadError(414, "request line too long"))
                return
            if self._head_bytes > config.max_request_line + config.max_header_total:
                self._reject(HeadError(431, "request head too large"))
                return
        self._pump()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()
        self.stall(1)

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.upstream.transport.is_closing():
            self.upstream.transport.resume_reading()
        self.stall(-1)

    def stall(self, change: int) -> None:
        """nginx's send_timeout (client side) and proxy_send_timeout (upstream side) in
        one: a peer that takes no byte for that long loses the connection."""
        self.stalled += change
        timeout = self.route.location.send_timeout if self.route is not None else 0
        if self.stalled > 0 and self.stall_timer is None and timeout > 0:
            self.stall_timer = self.loop.call_later(timeout, self._stall_timeout)
        elif self.stalled == 0 and self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None

    def _stall_timeout(self) -> None:
        """Abort, not close: a close would wait for the peer that takes nothing."""
        self.stall_timer = None
        if self.state is State.ACTIVE:
            self._log()
        self._drop_upstream()
        self._close()
        self.transport.abort()

    # -- parser callbacks: only queue ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.ctx.config.max_request_line:
            raise HeadError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        line = len(name) + len(value) + 4
        self._head_size += line
        config = self.ctx.config
        if line > config.max_header_line or self._head_size > config.max_header_total:
            raise HeadError(431, "request header too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        head = RequestHead(
            method=self.parser.get_method(),
            target=self._url,
            version=self.parser.get_http_version(),
            headers=self._headers,
        )
        if self._in_head:  # a pipelined head must not disarm the request in flight's timer
            self._in_head = False
            self._disarm()
        self.queued_heads += 1
        self.events.append(("head", (head, self.parser.should_keep_alive())))

    def on_body(self, body: bytes) -> None:
        self.queued_bytes += len(body)
        self.events.append(("body", body))

    def on_message_complete(self) -> None:
        self.events.append(("end", None))

    # -- applying events in order ------------------------------------------------------------

    def _pump(self) -> None:
        events = self.events
        while events and self.state is not State.CLOSED:
            kind, value = events[0]
            if kind == "head":
                if self.state is not State.IDLE:
                    break
                events.popleft()
                self.queued_heads -= 1
                self._begin(*value)
            elif not self.request_sent:
                break
            else:
                events.popleft()
                if kind == "body":
                    self.queued_bytes -= len(value)
                self._send_body(kind, value)
        # Reading stops for a pipelined request or a body the upstream is not taking yet,
        # not for a small waiting tail: reading on is how a client's close is noticed.
        paused = self.queued_heads > 0 or self.queued_bytes > WRITE_HIGH_WATER
        if paused != self.queue_paused and self.state is not State.CLOSED:
            self.queue_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.resume_client_reading()

    def resume_client_reading(self) -> None:
        if (not self.queue_paused and not self.upstream_paused
                and self.state is not State.CLOSED and self.parser is not None):
            self.transport.resume_reading()

    def _send_body(self, kind: str, value: Any) -> None:
        upstream = self.upstream
        assert upstream is not None
        if kind == "body":
            self.body_received += len(value)
            limit = self.ctx.config.client_max_body_size
            if limit is not None and self.body_received > limit:
                self._reject(HeadError(413, "body over client_max_body_size"))
                return
            if self.framing.chunked:
                upstream.transport.writelines((b"%x\r\n" % len(value), value, b"\r\n"))
            else:
                upstream.transport.write(value)
        elif kind == "end":
            if self.framing.chunked:
                upstream.transport.write(b"0\r\n\r\n")
            self.request_complete = True
            # proxy_read_timeout runs from here: a slow upload is not the upstream's silence.
            self.seen_upstream_bytes = upstream.received
            self._arm(self.route.location.read_timeout if self.route else 0, self._read_timeout)

    # -- one exchange -------------------------------------------------------------------------

    def _begin(self, head: RequestHead, keep_alive: bool) -> None:
        self.state = State.ACTIVE
        self.head = head
        self.keep_alive = keep_alive and not self.ctx.draining
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.request_sent = self.request_complete = self.response_started = False
        self.body_received = self.bytes_sent = self.response_status = 0
        self.connect_time = self.header_time = None
        self.upgrade_key = None
        self.peer = None
        try:
            if head.method == b"CONNECT":
                raise HeadError(405, "CONNECT is not proxied")
            self.framing = http1.check_request_head(head, self.ctx.config.client_max_body_size)
            if handshake.wants_upgrade(head):
                self.upgrade_key = handshake.check_request(head)
            route = self.ctx.route(head.path)
            if route is None:
                raise HeadError(404, "no location matches")
        except HeadError as error:
            self._reject(error)
            return
        self.route = route
        self.connect_task = self.loop.create_task(self._connect(route))

    async def _connect(self, route: Route) -> None:
        """Pick a server and connect, trying the next on failure (``proxy_next_upstream``)
        while nothing has reached the client. Anything that ends the request meanwhile
        cancels this task (``_drop_upstream``), so after an ``await`` it is still wanted."""
        location = route.location
        group = route.group
        assert self.head is not None
        ctx = RequestContext(self.head, self.remote_addr, self.remote_port, self.scheme,
                             self.server_port, self.server_host, self.trusted)
        key = self._balance_key(route, ctx)
        tried: list[Peer] = []
        timed_out = False
        deadline = (self.started + location.next_upstream_timeout
                    if location.next_upstream_timeout else None)
        while True:
            now = time.monotonic()
            peer = group.pick(now, key, tried)
            if peer is None:
                break
            tried.append(peer)
            group.acquire(peer)
            address = peer.config.address
            pooled = self.ctx.pool.take(address)
            if pooled is not None:
                conn = pooled
            else:
                try:
                    async with asyncio.timeout(location.connect_timeout):
                        _transport, conn = await self.loop.create_connection(
                            partial(UpstreamConnection, address),
                            peer.config.host, peer.config.port,
                        )
                except asyncio.CancelledError:
                    group.release(peer)  # the client left while connecting
                    raise
                except (TimeoutError, OSError) as error:
                    group.release(peer)
                    group.report_failure(peer, time.monotonic())
                    timed_out = isinstance(error, TimeoutError)
                    tries = location.next_upstream_tries
                    if (tries and len(tried) >= tries) or (
                        deadline is not None and time.monotonic() >= deadline
                    ):
                        break
                    continue
            self.connect_time = time.monotonic() - self.started
            self._attach(conn, peer, ctx)
            return
        self._reject(HeadError(504 if timed_out else 502, "no upstream reachable"))

    def _balance_key(self, route: Route, ctx: RequestContext) -> bytes | None:
        if route.group.balance == "ip_hash":
            return ip_hash_key(self.remote_addr)
        if route.hash_key is not None:
            return ctx.expand(route.hash_key)
        return None

    def _attach(self, conn: UpstreamConnection, peer: Peer, ctx: RequestContext) -> None:
        assert self.head is not None and self.route is not None
        self.upstream = conn
        self.peer = peer
        conn.client = self
        conn.head_only = self.head.method == b"HEAD"
        conn.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        ctx.proxy_host = peer.config.address
        upgrade = self.head.get(b"upgrade") if self.upgrade_key is not None else None
        headers = upstream_request_headers(ctx, self.route.set_headers, self.framing, upgrade)
        conn.transport.write(http1.serialize_request(self.head.method, self.head.target, headers))
        self.request_sent = True
        self._pump()

    # -- the upstream's answer ---------------------------------------------------------------

    def response_head(self, conn: UpstreamConnection, status: int, headers: Headers,
                      upstream_keep_alive: bool) -> None:
        assert self.head is not None
        if self.header_time is None:
            self.header_time = time.monotonic() - self.started
        if self.upgrade_key is not None:
            try:
                switched = handshake.response_is_switch(status, headers, self.upgrade_key)
            except HeadError as error:
                self._drop_upstream()
                self._reject(error)
                return
            if switched:
                self.response_status = 101
                self.response_started = True
                self.transport.write(http1.serialize_response(101, b"Switching Protocols",
                                                              headers))
                return
            self.keep_alive = False  # the client's pipelined bytes were meant for a tunnel
        if status == 101 and self.upgrade_key is None:
            self._reject(HeadError(502, "upstream switched protocols unasked"))
            return
        http11 = self.head.version == "1.1"
        if 100 <= status < 200:
            if http11:  # RFC 9110 15.2: no 1xx to an HTTP/1.0 client
                self.transport.write(http1.serialize_response(
                    status, http1.reason_phrase(status), headers))
            return
        framing = http1.response_framing(status, headers, self.head.method)
        close_delimited = framing.length is None and not framing.chunked
        self.response_close_delimited = close_delimited
        self.response_chunked = http11 and (framing.chunked or close_delimited)
        if framing.length is None and not http11:
            self.keep_alive = False  # an HTTP/1.0 client learns the end from the close
        self.response_keep_alive = upstream_keep_alive and self.upgrade_key is None
        self.response_status = status
        self.response_started = True
        out = client_response_headers(headers, self.keep_alive, self.response_chunked)
        reason = http1.reason_phrase(status)
        self.transport.write(http1.serialize_response(status, reason, out))

    def response_body(self, body: bytes) -> None:
        self.bytes_sent += len(body)
        if self.response_chunked:
            self.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            self.transport.write(body)

    def response_end(self, conn: UpstreamConnection) -> None:
        if self.response_status == 101 or not self.response_started:
            return  # a 101's end is the tunnel's start; a 1xx's end is not the response's
        if self.response_chunked:
            self.transport.write(b"0\r\n\r\n")
        if not self.request_complete:
            self.keep_alive = False  # the rest of the body would be read as the next request
        reusable = (self.response_keep_alive and self.request_complete
                    and not self.response_close_delimited
                    and conn.transport.get_write_buffer_size() == 0)
        self._log()
        self._release_upstream(reusable)
        self._finish()

    def upstream_switched(self, conn: UpstreamConnection, rest: bytes) -> None:
        """The 101 is verified and sent: join the two transports."""
        assert self.route is not None and self.peer is not None
        if self.response_status != 101:
            return
        self._disarm()
        self.state = State.TUNNEL
        conn.client = None
        self.upstream = None
        group, peer, ctx, started = self.route.group, self.peer, self.ctx, self.started
        entry = self._entry(101, 0, 0)

        def closed(tunnel: Tunnel) -> None:
            """One access-log line per WebSocket, at its close, with the bytes each way."""
            group.release(peer)
            ctx.connections.discard(tunnel)
            entry.body_bytes_sent = tunnel.upstream.received
            entry.bytes_received = tunnel.client.received
            entry.request_time = entry.upstream_response_time = time.monotonic() - started
            ctx.access_log.write(entry)

        pending = b"".join(self.upgrade_pending)
        for event_kind, value in self.events:
            if event_kind == "body":
                pending += value
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        location = self.route.location
        tunnel = Tunnel(self.transport, conn.transport, location.read_timeout,
                        location.send_timeout, closed)
        # From here the tunnel stands alone: this object (parser state, head, queues) goes.
        ctx.connections.discard(self)
        ctx.connections.add(tunnel)
        tunnel.start(pending, rest)

    def upstream_failed(self, conn: UpstreamConnection, why: str) -> None:
        if self.response_started:
            self._log()
            self._drop_upstream()
            self._close()
        else:
            self._reject(HeadError(502, why))

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        if conn is not self.upstream:
            return
        if self.response_started and self.response_close_delimited:
            conn.client = None
            self.upstream = None
            self.response_keep_alive = False
            self.response_end(conn)
            return
        self.upstream_failed(conn, "upstream closed the connection")

    # -- endings ----------------------------------------------------------------------------

    def _forget_upstream_pause(self) -> None:
        """The upstream's backpressure ends with it, or it would stall the next request."""
        if self.upstream_paused:
            self.upstream_paused = False
            self.stall(-1)

    def _release_upstream(self, reusable: bool) -> None:
        self._forget_upstream_pause()
        conn, peer, route = self.upstream, self.peer, self.route
        self.upstream = None
        if peer is not None and route is not None:
            route.group.release(peer)
            route.group.report_success(peer, time.monotonic())
        self.peer = None
        if conn is None:
            return
        conn.client = None
        if reusable and route is not None and route.keepalive > 0 and not conn.lost:
            conn.transport.resume_reading()
            self.ctx.pool.put(conn.address, conn, route.keepalive)
        else:
            conn.transport.close()

    def _drop_upstream(self) -> None:
        self._forget_upstream_pause()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        conn, peer, route = self.upstream, self.peer, self.route
        self.upstream = None
        self.peer = None
        if conn is not None:
            conn.client = None
            conn.transport.close()
        if peer is not None and route is not None:
            route.group.release(peer)

    def _finish(self) -> None:
        """After a response: next request on a keep-alive connection, or close."""
        if not self.keep_alive or self.ctx.draining:
            self._close()
            return
        self.state = State.IDLE
        self.head = None
        self.request_sent = False
        self.response_started = False  # so the next request can still get an error page
        self._arm(self.ctx.config.keepalive_timeout, self._idle_timeout)
        self._pump()

    def _reject(self, error: HeadError) -> None:
        """Answer with the proxy's own error (if nothing was sent yet) and close."""
        if self.state is State.CLOSED:
            return
        if not self.response_started:
            extra = [(b"Sec-WebSocket-Version", b"13")] if error.status == 426 else []
            self.response_status = error.status
            self.response_started = True
            self.transport.write(http1.error_response(error.status, extra))
            if self.head is None:
                self.head = RequestHead(b"-", b"", "1.1", [])
        self._log()
        self._drop_upstream()
        self._close()

    def _close(self) -> None:
        self.state = State.CLOSED
        self.events.clear()
        self._disarm()
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        self.transport.close()

    def close_idle(self) -> None:
        """For shutdown: close now if between requests, else after the current one."""
        if self.state is State.IDLE and not self._in_head:
            self._close()

    def abort(self) -> None:
        """For shutdown, once the grace period is over."""
        self._drop_upstream()
        self.transport.abort()

    # -- timers -----------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        if seconds > 0:
            self.timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _idle_timeout(self) -> None:
        self.timer = None
        if self.state is State.IDLE and not self._in_head:
            self._close()

    def _head_timeout(self) -> None:
        """client_header_timeout is a total deadline: trickled bytes do not extend it."""
        self.timer = None
        if self._in_head:
            self.head = None
            self._reject(HeadError(408, "request head not received in time"))

    def _read_timeout(self) -> None:
        """nginx's proxy_read_timeout: no byte from the upstream for that long."""
        self.timer = None
        conn = self.upstream
        if conn is None or self.route is None:
            return
        if conn.received != self.seen_upstream_bytes:
            self.seen_upstream_bytes = conn.received
            self._arm(self.route.location.read_timeout, self._read_timeout)
            return
        if self.peer is not None and not self.stalled:
            self.route.group.report_failure(self.peer, time.monotonic())
        if self.response_started:
            self._log()
            self._drop_upstream()
            self._close()
        else:
            self._reject(HeadError(504, "upstream timed out"))

    # -- access log -------------------------------------------------------------------------

    def _log(self) -> None:
        if self.head is not None:
            self.ctx.access_log.write(self._entry(self.response_status, self.bytes_sent,
                                                  self.body_received))

    def _entry(self, status: int, sent: int, received: int) -> Entry:
        """The access-log line of the current request, as far as it is known now."""
        head = self.head
        assert head is not None
        if head.method == b"-":
            request = "-"
        else:
            request = (f"{head.method.decode('latin-1')} {head.target.decode('latin-1')} "
                       f"HTTP/{head.version}")
        duration = time.monotonic() - self.started
        peer = self.peer
        return Entry(
            remote_addr=self.remote_addr,
            request=request,
            status=status,
            body_bytes_sent=sent,
            http_referer=(head.get(b"referer") or b"-").decode("latin-1"),
            http_user_agent=(head.get(b"user-agent") or b"-").decode("latin-1"),
            request_time=duration,
            upstream_addr=peer.config.address if peer is not None else "-",
            upstream_connect_time=self.connect_time,
            upstream_header_time=self.header_time,
            upstream_response_time=duration if peer is not None else None,
            bytes_received=received,
            time_local=self.started_wall,
        )
