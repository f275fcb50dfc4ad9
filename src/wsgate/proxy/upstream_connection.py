"""One connection to an upstream server: the request goes out as the client connection
writes it; the response is parsed with llhttp and each part handed to the
:class:`~wsgate.proxy.callbacks.ResponseHandler` it serves. Idle between requests, it waits
in the :class:`~wsgate.proxy.pool.Pool`.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from wsgate.proxy.callbacks import ResponseHandler
from wsgate.proxy.http1 import Headers


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("address", "handler", "head_only", "headers", "lost", "parser", "received",
                 "reused", "skipping", "transport")

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport
        self.handler: ResponseHandler | None = None
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        """None once this protocol is done (lost, or its socket a tunnel's): the parser
        holds this object's methods, and letting go of it ends that cycle, so the two go
        by reference count, not by the collector."""
        self.headers: Headers = []
        self.received = 0
        """Bytes received since the connection was taken for its current request."""
        self.reused = False
        """It was taken from the pool: it served a request before this one."""
        self.head_only = False
        """The response to HEAD has no body whatever its Content-Length says; llhttp cannot
        be told, so the parser is replaced after its head."""
        self.skipping = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.handler is None:
            self.transport.close()  # an idle connection must not speak
            return
        parser = self.parser
        assert parser is not None  # (no data after connection_lost or a switch)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # The client side may have let go in a callback (a refused 101): nobody listens.
            if self.handler is not None:
                self.handler.upstream_switched(data[upgrade.args[0]:])
            else:
                self.transport.close()
            if self.transport.get_protocol() is not self:  # a tunnel's now
                self.parser = None
                return
        except httptools.HttpParserError as error:
            if self.handler is not None:
                self.handler.upstream_failed(f"sent an invalid response: {error}")
            else:
                self.transport.close()
        if self.skipping:
            self.skipping = False
            self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        if self.handler is None:  # more bytes after the response it was asked for
            self.transport.close()
            self.lost = True
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # (called from its own feed_data)
        if self.handler is not None:
            status = parser.get_status_code()
            self.handler.response_head(status, self.headers, parser.should_keep_alive())
            if self.head_only and status >= 200 and self.handler is not None:
                self.skipping = True
                self.handler.response_end()

    def on_body(self, body: bytes) -> None:
        if self.handler is not None and not self.skipping:
            self.handler.response_body(body)

    def on_message_complete(self) -> None:
        if self.handler is not None and not self.skipping:
            self.handler.response_end()

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.upstream_writable(False)

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.upstream_writable(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.parser = None
        if self.handler is not None:
            self.handler.upstream_closed()
