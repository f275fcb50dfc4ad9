"""One connection to an upstream server: writes a request head, parses the response with
llhttp, and hands each part to the client connection it serves. Idle between requests, it
waits in the :class:`~wsgate.proxy.pool.Pool`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import httptools

from wsgate.proxy.http1 import Headers

if TYPE_CHECKING:
    from wsgate.proxy.connection import ClientConnection


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport
        self.client: ClientConnection | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: Headers = []
        self.received = 0
        self.head_only = False
        """The response to HEAD has no body whatever its Content-Length says; llhttp cannot
        be told, so the parser is replaced after its head."""
        self.skipping = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.client is None:
            self.transport.close()  # an idle connection must not speak
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # The client may have let go in a callback (a refused 101): then nobody listens.
            if self.client is not None:
                self.client.upstream_switched(self, data[upgrade.args[0]:])
            else:
                self.transport.close()
        except httptools.HttpParserError:
            if self.client is not None:
                self.client.upstream_failed(self, "invalid response from upstream")
            else:
                self.transport.close()
        if self.skipping:
            self.skipping = False
            self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        if self.client is None:  # more bytes after the response it was asked for
            self.transport.close()
            self.lost = True
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.client is not None:
            status = self.parser.get_status_code()
            self.client.response_head(self, status, self.headers, self.parser.should_keep_alive())
            if self.head_only and status >= 200 and self.client is not None:
                self.skipping = True
                self.client.response_end(self)

    def on_body(self, body: bytes) -> None:
        if self.client is not None and not self.skipping:
            self.client.response_body(body)

    def on_message_complete(self) -> None:
        if self.client is not None and not self.skipping:
            self.client.response_end(self)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_paused = True
            self.client.transport.pause_reading()
            self.client.stall(1)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_paused = False
            self.client.resume_client_reading()
            self.client.stall(-1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.client is not None:
            self.client.upstream_lost(self)
