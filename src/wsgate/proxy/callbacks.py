"""What the upstream side of an exchange tells the client side: the only way the two talk.

An :class:`~wsgate.proxy.upstream_connection.UpstreamConnection` parses a response and
calls these on the :class:`ResponseHandler` it serves (the client connection), which
decides what the client gets. The upstream side knows nothing else of the client side.
"""

from __future__ import annotations

from typing import Protocol

from wsgate.proxy.http1 import Headers


class ResponseHandler(Protocol):
    def response_head(self, status: int, headers: Headers, keep_alive: bool) -> None:
        """A response head arrived (interim 1xx heads too); ``keep_alive``: the upstream
        will keep the connection open after this response."""

    def response_body(self, body: bytes) -> None:
        """A piece of the response body, de-chunked."""

    def response_end(self) -> None:
        """The response (or an interim 1xx) is complete."""

    def upstream_switched(self, rest: bytes) -> None:
        """llhttp stopped at the end of a 101: ``rest`` is what the upstream sent after it."""

    def upstream_failed(self, why: str) -> None:
        """The upstream sent something that is not HTTP."""

    def upstream_closed(self) -> None:
        """The upstream connection is gone."""

    def upstream_writable(self, writable: bool) -> None:
        """The upstream's write buffer passed its high-water mark (False) or drained (True):
        stop or resume reading the client."""
