"""The deadlines of a client connection: its one timer, whose expiry means what the
connection's phase says (:data:`~wsgate.proxy.exchange.TIMER`), and the stall of a side that
takes no bytes. A part of :class:`~wsgate.proxy.connection.ClientConnection`, kept apart so
that the connection's module reads as the path of the bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from wsgate.proxy.exchange import TIMER, Exchange, Phase, Request, Response, Timer
from wsgate.proxy.flow import Stall
from wsgate.proxy.http1 import HeadError, RequestHead
from wsgate.proxy.reader import RequestReader
from wsgate.proxy.servers import ServerState
from wsgate.proxy.upstream_connection import UpstreamConnection
from wsgate.proxy.worker import Worker

log = logging.getLogger("wsgate.proxy.connection")


class Deadlines:
    """The timer and the stall of :class:`~wsgate.proxy.connection.ClientConnection`."""

    __slots__ = ("seen_body_bytes", "seen_upstream_bytes", "timer")
    loop: asyncio.AbstractEventLoop
    timer: asyncio.TimerHandle | None
    phase: Phase
    exchange: Exchange | None
    reader: RequestReader
    worker: Worker
    upstream: UpstreamConnection | None
    server: ServerState | None
    stall: Stall
    client_full: bool
    seen_body_bytes: int
    seen_upstream_bytes: int

    def _reject(self, error: HeadError, logged: bool = False,
                refused: RequestHead | None = None) -> None:
        raise NotImplementedError

    def _cut(self, abort: bool = False) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _context(self) -> str:
        raise NotImplementedError

    def _stall_timeout(self) -> None:
        """nginx's send_timeout and proxy_send_timeout in one: a side that takes no byte for
        that long loses the connection. Before any response it is the upstream, and the
        client gets 504; after, abort, not close: a close would wait for the stuck side."""
        exchange = self.exchange
        if (self.phase is Phase.EXCHANGE and exchange is not None and not self.client_full
                and exchange.response is Response.WAITING):
            log.error("upstream %s took nothing for %gs (proxy_send_timeout)%s",
                      exchange.upstream_addr, self.stall.timeout, self._context())
            self._reject(HeadError(504, "upstream took nothing in time"), logged=True)
            return
        if log.isEnabledFor(logging.INFO):
            log.info("nothing could be written for %gs (send_timeout), closing%s",
                     self.stall.timeout, self._context())
        self._cut(abort=True)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self.timer = self.loop.call_later(seconds, self._timer_expired)

    def _disarm(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def _timer_expired(self) -> None:
        self.timer = None
        meaning = TIMER[self.phase]
        if meaning is Timer.IDLE:
            self._close()
        elif meaning is Timer.HEAD:
            self._reject(HeadError(408, "request head not received in time"))
        elif meaning is Timer.UPSTREAM:
            exchange = self.exchange
            if exchange is not None and exchange.request is not Request.SENT:
                self._body_silent(exchange)
            else:
                self._upstream_silent()

    def _body_silent(self, exchange: Exchange) -> None:
        """nginx's client_body_timeout: no byte of the request body for that long. Bytes
        that came but wait for the upstream are not the client's delay."""
        reader, timeout = self.reader, self.worker.config.client_body_timeout
        received = exchange.body_received + reader.queued_bytes
        owing = reader.in_body and reader.queued_heads == 0
        if received != self.seen_body_bytes or not owing:
            self.seen_body_bytes = received
            self._arm(timeout)
            return
        if exchange.response is Response.WAITING:
            self._reject(HeadError(408, f"request body stalled for {timeout:g}s "
                                        "(client_body_timeout)"))
        else:
            log.info("client sent no body byte for %gs (client_body_timeout)%s", timeout,
                     self._context())
            self._cut()

    def _upstream_silent(self) -> None:
        """nginx's proxy_read_timeout: no byte from the upstream for that long."""
        conn, exchange, server = self.upstream, self.exchange, self.server
        if conn is None or exchange is None or exchange.route is None:
            return
        location = exchange.route.location
        if conn.received != self.seen_upstream_bytes:
            self.seen_upstream_bytes = conn.received
            self._arm(location.read_timeout)
            return
        if server is not None and not self.stall.count:
            exchange.route.group.report_failure(server, time.monotonic())
        log.error("upstream %s sent nothing for %gs (proxy_read_timeout)%s",
                  exchange.upstream_addr, location.read_timeout, self._context())
        exchange.cause = "upstream_timeout"
        status = exchange.timed_out()
        if status is None:
            self._cut()
        else:
            self._reject(HeadError(status, "upstream timed out"), logged=True)
