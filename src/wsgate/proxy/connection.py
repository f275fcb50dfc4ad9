"""One client connection: the asyncio glue around :mod:`~wsgate.proxy.exchange`.

Bytes in: llhttp (httptools) parses them, and its callbacks only queue events (a head, a
piece of body, an end). :meth:`ClientConnection._pump` hands them to the exchange in order,
when it can take them: that one queue gives pipelining, bodies that arrive before the
upstream is connected, and backpressure (while events wait, reading stops). Events from
the upstream side come through :class:`~wsgate.proxy.callbacks.ResponseHandler`. What to do
is the exchange's decision; writing, timers, picking and connecting a server are here.
After a verified 101 both sockets go to a :class:`~wsgate.proxy.tunnel.Tunnel` and this
object is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from wsgate.proxy import connector, http1, local
from wsgate.proxy.balancer import ip_hash_key
from wsgate.proxy.config import VirtualServer
from wsgate.proxy.deadlines import Deadlines
from wsgate.proxy.dispatch import rewrite_location
from wsgate.proxy.exchange import Event, Exchange, Phase, Reply, Request, Response, advance
from wsgate.proxy.filesend import FileSender
from wsgate.proxy.flow import WRITE_HIGH_WATER, ReadGate, Stall
from wsgate.proxy.headers import client_response_headers, upstream_request_headers
from wsgate.proxy.http1 import HeadError, Headers, RequestHead
from wsgate.proxy.reader import BODY, END, ERROR, HEAD, RequestReader
from wsgate.proxy.routes import Route
from wsgate.proxy.servers import ServerState
from wsgate.proxy.tunnel import Tunnel
from wsgate.proxy.upstream_connection import UpstreamConnection
from wsgate.proxy.variables import Variables
from wsgate.proxy.worker import TunnelRecord, Worker

log = logging.getLogger(__name__)

_QUEUE, _UPSTREAM, _UPGRADE = 1, 2, 4
"""Why the client is not read: events wait; the upstream takes no more; the bytes after an
upgrade request belong to the tunnel that may follow."""

_NO_HEAD = RequestHead(b"-", b"", "1.1", [])
"""What an exchange refused before its head was complete is logged as: nginx's "-"."""


class ClientConnection(Deadlines, asyncio.Protocol):
    __slots__ = ("answer", "client_full", "connect_task", "exchange", "fresh", "gate",
                 "head_started", "head_wall", "loop", "phase", "reader", "remote_addr",
                 "remote_port", "scheme", "sender", "server", "server_host", "server_port",
                 "site", "stall", "transport", "trusted", "upstream", "worker")

    def __init__(self, worker: Worker, scheme: str, site: str = "") -> None:
        self.worker = worker
        self.scheme = scheme
        self.site = site
        """The listening address this connection came in on: its servers answer it."""
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport
        self.gate: ReadGate
        self.reader = RequestReader(self._first())
        self.answer: local.Answer | None = None
        """What the proxy answers itself, once the request is read."""
        self.sender: FileSender | None = None
        self.phase = Phase.WAITING
        self.exchange: Exchange | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.stall = Stall(0.0)
        self.client_full = False
        """The client's transport paused our writing (between pause_ and resume_writing:
        asyncio keeps it paused until the buffer is back under the low-water mark)."""
        self.upstream: UpstreamConnection | None = None
        self.server: ServerState | None = None
        """The server this connection counts against (max_conns, least_conn) right now."""
        self.connect_task: asyncio.Task[None] | None = None
        self.seen_upstream_bytes = 0
        self.seen_body_bytes = -1
        self.head_started = 0.0
        self.head_wall = 0.0
        self.fresh = True
        """No request has begun on this connection yet."""

    # -- the client's socket -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.gate = ReadGate(self.transport)
        remote = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.remote_addr: str = remote[0]
        self.remote_port: int = remote[1]
        self.server_host: str = local[0]
        self.server_port: int = local[1]
        self.trusted = self.worker.config.trusts(self.remote_addr)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.worker.limits.accepted(sock.fileno())
        self.worker.open.add(self)
        # nginx: a new connection gets client_header_timeout to start its first request, so
        # one that never sends a byte is not held for keepalive_timeout.
        self._arm(self._first().client_header_timeout)

    def _first(self) -> VirtualServer:
        """nginx: until the Host is known, the address's default server's rules apply."""
        return self.worker.site(self.site).default.config

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase is Phase.EXCHANGE and self.exchange is not None:
            self.exchange.client_gone()
            self._log()
            self._drop_upstream()
        self.phase = Phase.CLOSED
        self._disarm()
        self.stall.cancel()
        local.abandon(self.sender, self.answer)
        self.worker.open.discard(self)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if self.phase is Phase.WAITING and not reader.events and reader.parser is not None:
            self.phase = advance(self.phase, Event.HEAD_BYTES)
            reader.start_head()
            # A head refused before it is complete is logged from its first byte, as nginx.
            self.head_started = time.monotonic()
            self.head_wall = time.time()
            if not self.fresh:  # nginx: a first request's deadline runs from the accept
                self._arm(self._first().client_header_timeout)
        # Bytes after an upgrade request wait for the tunnel. Until some come, reading goes
        # on: that is how a client that leaves before the answer is noticed.
        if reader.feed(data, self._first()):
            self.gate.hold(_UPGRADE)
        self._pump()

    def pause_writing(self) -> None:
        self.client_full = True
        if self.upstream is not None:
            self.upstream.transport.pause_reading()
        elif self.sender is not None:
            self.sender.pause()
        self.stall.begin(self._stall_timeout)

    def resume_writing(self) -> None:
        self.client_full = False
        if self.upstream is not None and not self.upstream.transport.is_closing():
            self.upstream.transport.resume_reading()
        elif self.sender is not None:
            self.sender.resume()
        self.stall.end()

    # -- applying events in order ------------------------------------------------------------

    def _pump(self) -> None:
        reader = self.reader
        events = reader.events
        while events and self.phase is not Phase.CLOSED:
            kind, value = events[0]
            if kind == HEAD:
                if self.phase is not Phase.WAITING and self.phase is not Phase.READING_HEAD:
                    break
                reader.take()
                head, keep_alive = cast(tuple[RequestHead, bool], value)
                self._begin(head, keep_alive)
            elif kind == ERROR:
                exchange = self.exchange
                if exchange is not None and exchange.request is Request.SENT:
                    break  # a later request's: answered after this one
                reader.take()
                error, refused = cast(tuple[HeadError, RequestHead | None], value)
                self._reject(error, refused=refused)
            else:
                exchange = self.exchange
                if exchange is None or exchange.request is not Request.SENDING:
                    break  # the head is not upstream yet
                reader.take()
                if kind == BODY:
                    self._send_body(exchange, cast(bytes, value))
                else:
                    self._send_end(exchange)
        if self.phase is Phase.CLOSED:
            return
        # Reading stops for a pipelined request or a body the upstream is not taking yet,
        # not for a small waiting tail: reading on is how a client's close is noticed.
        if reader.queued_heads > 0 or reader.queued_bytes > WRITE_HIGH_WATER:
            self.gate.hold(_QUEUE)
        else:
            self.gate.release(_QUEUE)

    def _send_body(self, exchange: Exchange, body: bytes) -> None:
        upstream = self.upstream
        assert exchange.route is not None
        try:
            exchange.body(len(body), exchange.route.location.client_max_body_size)
        except HeadError as error:
            self._reject(error)
            return
        if upstream is None:
            return  # the proxy answers itself: the body is read and dropped, as in nginx
        if exchange.framing.chunked:
            upstream.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            upstream.transport.write(body)

    def _send_end(self, exchange: Exchange) -> None:
        upstream = self.upstream
        assert exchange.route is not None
        if upstream is None:
            exchange.request_done()
            if self.answer is not None:  # (one that expected 100-continue has it already)
                self._respond(exchange)
            return
        if exchange.framing.chunked:
            upstream.transport.write(b"0\r\n\r\n")
        exchange.request_done()
        # proxy_read_timeout runs from here: a slow upload is not the upstream's silence.
        self.seen_upstream_bytes = upstream.received
        self._arm(exchange.route.location.read_timeout)

    # -- one exchange -------------------------------------------------------------------------

    def _begin(self, head: RequestHead, keep_alive: bool) -> None:
        worker = self.worker
        self.phase = advance(self.phase, Event.BEGIN)
        self.fresh = False
        self._disarm()
        exchange = Exchange(head, keep_alive and not worker.draining, time.monotonic(),
                            time.time())
        self.exchange = exchange
        exchange.variables = Variables(head, self.remote_addr, self.remote_port, self.scheme,
                                       self.server_port, self.server_host, self.trusted,
                                       maps=worker.routes.maps)
        try:
            outcome = local.prepare(worker.routes, worker.site(self.site), exchange)
            route = outcome.route
        except HeadError as error:
            self._reject(error)
            return
        if isinstance(outcome, local.Answer):
            self.answer = outcome  # written once the request is read (its body is dropped)
            if exchange.skips_body():
                self._respond(exchange)
                return
        else:
            exchange.target, exchange.override = outcome.target, outcome.status
            self.stall.timeout = route.location.send_timeout
            self.connect_task = self.loop.create_task(self._connect(exchange, route))
        if exchange.framing.chunked or exchange.framing.length:
            self.seen_body_bytes = -1
            self._arm(worker.config.client_body_timeout)

    async def _connect(self, exchange: Exchange, route: Route) -> None:
        """Pick a server and connect (:mod:`~wsgate.proxy.connector`). Anything that ends
        the request meanwhile cancels this task (``_drop_upstream``)."""
        variables = exchange.variables
        assert variables is not None
        try:
            key = (ip_hash_key(self.remote_addr) if route.group.balance == "ip_hash" else
                   None if route.hash_key is None else variables.expand(route.hash_key))
            conn, server = await connector.connect(route, key, self.worker.pool,
                                                   self.worker.limits, exchange.started,
                                                   self._context, exchange.tried)
        except connector.Unreachable as error:
            exchange.cause = error.cause
            self._reject(HeadError(error.status, "no upstream reachable"), logged=True)
            return
        self.server = server
        exchange.connect_time = time.monotonic() - exchange.started
        self._attach(exchange, route, conn, server, variables)

    def _attach(self, exchange: Exchange, route: Route, conn: UpstreamConnection,
                server: ServerState, variables: Variables) -> None:
        head = exchange.head
        self.upstream = conn
        conn.handler = self
        conn.head_only = head.method == b"HEAD"
        conn.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.client_full:
            conn.transport.pause_reading()  # the client has not taken the last response yet
        variables.proxy_host = route.group.name  # nginx: proxy_pass's host, as written
        upgrade = head.get(b"upgrade") if exchange.upgrade_key is not None else None
        headers = upstream_request_headers(variables, route.set_headers, exchange.framing,
                                           upgrade)
        conn.transport.write(http1.serialize_request(head.method, exchange.target, headers))
        exchange.head_sent(server.address)
        self._pump()

    # -- the proxy's own answer ----------------------------------------------------------------

    def _respond(self, exchange: Exchange) -> None:
        """The request is read: write what :func:`~wsgate.proxy.local.decide` chose."""
        answer, self.answer = self.answer, None
        assert answer is not None
        if answer.close:  # nginx's 444
            exchange.answered(444)
            self._cut()
            return
        self.sender = local.write(answer, exchange, self.transport, self.client_full,
                                  self._responded)

    def _responded(self, error: BaseException | None) -> None:
        sender, self.sender = self.sender, None
        exchange = self.exchange
        if exchange is None or self.phase is Phase.CLOSED:
            return
        exchange.sent(sender.sent if sender is not None else 0)
        if error is not None:
            self._cut()
            return
        exchange.response_done(upstream_idle=False)
        self._log()
        self._finish(exchange)

    # -- the upstream's answer: ResponseHandler -----------------------------------------------

    def response_head(self, status: int, headers: Headers, keep_alive: bool) -> None:
        exchange = self.exchange
        assert exchange is not None
        if status >= 400 and self._next_upstream(exchange, status):
            return
        try:
            reply = exchange.response_head(exchange.override or status, headers, keep_alive,
                                           time.monotonic() - exchange.started)
        except HeadError as error:
            log.error("%s (server %s)%s", error, exchange.upstream_addr, self._context())
            exchange.cause = "upstream_invalid"
            self._drop_upstream()
            self._reject(error, logged=True)
            return
        if reply is Reply.RELAY:
            route = exchange.route
            if route is not None and route.redirect is not None:
                headers = [(name, rewrite_location(route, value))
                           if name.lower() in (b"location", b"refresh") else (name, value)
                           for name, value in headers]
            out = client_response_headers(headers, exchange.keep_alive, exchange.chunked,
                                          exchange.head.version == "1.0")
            status = exchange.status
            self.transport.write(http1.serialize_response(status, http1.reason_phrase(status),
                                                          out))
        elif reply is Reply.SWITCH:
            self.transport.write(http1.serialize_response(101, b"Switching Protocols",
                                                          headers))
        elif reply is Reply.INTERIM:
            self.transport.write(http1.serialize_response(status, http1.reason_phrase(status),
                                                          headers))

    def response_body(self, body: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.sent(len(body))
        if exchange.chunked:
            self.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            self.transport.write(body)

    def response_end(self) -> None:
        upstream = self.upstream
        self._complete(upstream is not None and upstream.transport.get_write_buffer_size() == 0)

    def _complete(self, upstream_idle: bool) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.response is not Response.RELAYING:
            return  # a 101's end is the tunnel's start; a 1xx's end is not the response's
        if exchange.chunked:
            self.transport.write(b"0\r\n\r\n")
        reusable = exchange.response_done(upstream_idle)
        self._log()
        self._release_upstream(exchange, reusable)
        self._finish(exchange)

    def upstream_switched(self, rest: bytes) -> None:
        """The 101 is verified and sent: join the two transports."""
        exchange, upstream, server = self.exchange, self.upstream, self.server
        if exchange is None or exchange.response is not Response.SWITCHED:
            return
        assert exchange.route is not None and upstream is not None and server is not None
        self.phase = advance(self.phase, Event.SWITCH)
        self._disarm()
        self.stall.cancel()
        upstream.handler = None
        self.upstream = None
        self.server = None  # the tunnel holds it now
        worker = self.worker
        location = exchange.route.location
        record = TunnelRecord(exchange.route.group, server,
                              exchange.entry(self.remote_addr, time.monotonic(),
                                             worker.access_log.variables),
                              exchange.started, self.scheme == "https",
                              location.read_timeout, location.send_timeout)
        pending = b"".join([*self.reader.pending, *(cast(bytes, value) for kind, value
                                                     in self.reader.events if kind == BODY)])
        tunnel = Tunnel(self.transport, upstream.transport, location.read_timeout,
                        location.send_timeout, worker.tunnel_closed)
        full = (self.client_full, self.gate.holds(_UPSTREAM))
        # From here the tunnel stands alone: this object (parser, head, queues) goes.
        worker.open.discard(self)
        worker.stats.response(exchange)
        worker.add_tunnel(tunnel, record)
        tunnel.start(pending, rest, full)

    def upstream_failed(self, why: str) -> None:
        exchange = self.exchange
        assert exchange is not None
        log.error("upstream %s %s%s", exchange.upstream_addr, why, self._context())
        exchange.cause = exchange.cause or "upstream_failed"
        if exchange.response is Response.RELAYING:
            self._cut()
        else:
            self._reject(HeadError(502, why), logged=True)

    def upstream_closed(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.ends_at_close():
            self._complete(upstream_idle=False)
            return
        if not self._retry(exchange):
            self.upstream_failed("closed the connection prematurely")

    def _retry(self, exchange: Exchange) -> bool:
        """A kept-alive connection the upstream closed as it was reused, before a byte of
        answer (every pool's race): as nginx, the request goes again on another connection
        (:meth:`Exchange.retry` says which may), and the server is not blamed."""
        conn, route = self.upstream, exchange.route
        if (conn is None or route is None or not conn.reused or conn.received
                or not exchange.retry()):
            return False
        log.info("upstream %s closed a kept-alive connection before answering, "
                 "sending the request again%s", conn.address, self._context())
        del exchange.tried[-1:]  # not this server's fault: it may be picked again
        self._again(exchange, route)
        return True

    def _next_upstream(self, exchange: Exchange, status: int) -> bool:
        """proxy_next_upstream http_NNN: this answer goes unseen, the next server gets the
        request (while there is one it has not had, within the tries)."""
        route, server = exchange.route, self.server
        if route is None or server is None or not exchange.next_upstream(status):
            return False
        if status in (500, 502, 503, 504, 429):  # nginx: 403 and 404 are no failure
            route.group.report_failure(server, time.monotonic())
        log.warning("upstream %s answered %d, trying the next server (proxy_next_upstream)%s",
                    exchange.upstream_addr, status, self._context())
        self._again(exchange, route)
        return True

    def _again(self, exchange: Exchange, route: Route) -> None:
        self._drop_upstream()
        self._disarm()
        self.reader.events.appendleft((END, None))  # the request is whole: it goes again
        self.connect_task = self.loop.create_task(self._connect(exchange, route))

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.gate.release(_UPSTREAM)
            self.stall.end()
        else:
            self.gate.hold(_UPSTREAM)
            self.stall.begin(self._stall_timeout)

    # -- endings ------------------------------------------------------------------------------

    def _forget_upstream_pause(self) -> None:
        """The upstream's backpressure ends with it, or it would stall the next request."""
        if self.gate.holds(_UPSTREAM):
            self.gate.release(_UPSTREAM)
            self.stall.end()

    def _release_upstream(self, exchange: Exchange, reusable: bool) -> None:
        self._forget_upstream_pause()
        conn, server, route = self.upstream, self.server, exchange.route
        self.upstream = None
        self.server = None
        assert route is not None
        if server is not None:
            route.group.release(server)
            route.group.report_success(server, time.monotonic())
        if conn is None:
            return
        conn.handler = None
        if reusable and route.keepalive > 0 and not conn.lost:
            conn.transport.resume_reading()
            self.worker.pool.put(conn.address, conn, route.keepalive)
        else:
            conn.transport.close()

    def _drop_upstream(self) -> None:
        self._forget_upstream_pause()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        conn, server, exchange = self.upstream, self.server, self.exchange
        self.upstream = None
        self.server = None
        if conn is not None:
            conn.handler = None
            conn.transport.close()
        if server is not None and exchange is not None and exchange.route is not None:
            exchange.route.group.release(server)

    def _finish(self, exchange: Exchange) -> None:
        """After a response: the next request on a keep-alive connection, or close."""
        self.exchange = None
        if not exchange.keep_alive or self.worker.draining:
            self._close()
            return
        if self.reader.head_open:  # the next request's head is under way: its deadline runs now
            self.phase = advance(self.phase, Event.DONE_MID_HEAD)
            self.reader.start_head()
            self.head_started = time.monotonic()
            self.head_wall = time.time()
            self._arm(self._first().client_header_timeout)
        else:
            self.phase = advance(self.phase, Event.DONE)
            self._arm(exchange.idle_timeout)
        self._pump()

    def _reject(self, error: HeadError, logged: bool = False,
                refused: RequestHead | None = None) -> None:
        """Answer with the proxy's own error (if nothing was sent yet) and close; the error
        log says why, unless the caller already has (``logged``). With no exchange under
        way, the request refused is ``refused`` (a head whose body could not be read), or
        one whose head never completed."""
        if self.phase is Phase.CLOSED:
            return
        exchange = self.exchange
        if exchange is None:
            exchange = (Exchange(refused, False, time.monotonic(), time.time()) if refused
                        else Exchange(_NO_HEAD, False, self.head_started, self.head_wall))
            self.exchange = exchange
        if exchange.answer(error.status):
            self.transport.write(local.error_response(self.worker.routes, exchange, error.status))
            # The client's mistakes are info, as in nginx: a flood of bad requests must not
            # flood the log at the default level (nor pay for lines nobody reads).
            client = error.status < 500 or error.status == 505
            level = logging.INFO if client else logging.ERROR
            if not logged and log.isEnabledFor(level):
                log.log(level, "%d %s: %s%s", error.status,
                        http1.reason_phrase(error.status).decode(), error, self._context())
        self._log()
        self._drop_upstream()
        self._close()

    def _cut(self, abort: bool = False) -> None:
        """End with no answer of our own (a response is under way, or nobody takes it):
        the exchange is logged as it stands. ``abort``: at once, not after the buffered
        bytes, which a stuck side would never take."""
        self._log()
        self._drop_upstream()
        self._close()
        if abort:
            self.transport.abort()

    def _close(self) -> None:
        self.phase = Phase.CLOSED
        self.reader.events.clear()
        self._disarm()
        self.stall.cancel()
        self.transport.close()

    def close_idle(self, grace_over: bool) -> None:
        """For a stop: close now if between requests, else after the current one. A new
        connection whose first request has not come yet gets until ``grace_over``: the
        client has just been accepted and will send it (closing would fail it)."""
        if self.phase is Phase.WAITING and (grace_over or not self.fresh):
            self._close()

    def abort(self) -> None:
        """For shutdown, once the grace period is over."""
        self._drop_upstream()
        self.transport.abort()

    # -- logs ---------------------------------------------------------------------------------

    def _log(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            self.worker.stats.response(exchange)
            access = self.worker.access_log
            access.write(exchange.entry(self.remote_addr, time.monotonic(), access.variables))

    def _context(self) -> str:
        """nginx's tail of an error line: who asked what, through which upstream."""
        text = f", client: {self.remote_addr}"
        exchange = self.exchange
        if exchange is not None and exchange.head is not _NO_HEAD:
            text += f', request: "{exchange.request_line()}"'
            if exchange.route is not None and exchange.route.target is not None:
                text += f", upstream: {exchange.route.group.name}"
        return text

