"""Requests off a client's bytes: llhttp (httptools) parses them and its callbacks only queue
events, in order: a head, pieces of body, an end; or, for a request that cannot be parsed,
the error to answer it with. The client connection takes the events when its exchange can
(:meth:`~wsgate.proxy.connection.ClientConnection._pump`). The head limits of
``large_client_header_buffers`` are counted here, as the bytes come (414, 431).
"""

from __future__ import annotations

import re
from collections import deque

import httptools

from wsgate.proxy.config import VirtualServer
from wsgate.proxy.http1 import HeadError, Headers, RequestHead

HEAD, BODY, END, ERROR = range(4)
"""Event kinds: a parsed head (with whether the client wants keep-alive), a piece of body,
the end of a request, and the HeadError of a request that cannot be parsed (with its head,
if it had one that was not taken yet: the error replaced it)."""
Queued = tuple[int, object]
_BLANK_LINE = re.compile(rb"\n\r?\n")


class RequestReader:
    __slots__ = ("config", "counting", "data", "events", "head_bytes", "head_open",
                 "head_size", "headers", "in_body", "line", "parser", "pending",
                 "queued_bytes", "queued_heads", "url")

    def __init__(self, config: VirtualServer) -> None:
        self.config = config
        """The limits in force (a reload gives the next request new ones)."""
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        """None once parsing has stopped: after an upgrade request, or an error."""
        self.events: deque[Queued] = deque()
        self.queued_heads = 0
        """Heads (and errors) waiting in ``events``: a pipelined request."""
        self.queued_bytes = 0
        """Body bytes waiting in ``events``."""
        self.pending: list[bytes] = []
        """Bytes after an upgrade request: a tunnel's first, if one opens."""
        self.url = b""
        self.headers: Headers = []
        self.head_size = 0
        self.head_bytes = 0
        self.head_open = False
        """A head has begun and is not complete."""
        self.in_body = False
        """The last head is complete and its body is not."""
        self.counting = False
        """The bytes fed are counted against the head limits: a head is being read with
        no request before it (a pipelined head is held to on_url's and on_header's)."""
        self.line: bytes | None = None
        """The request line so far, until its end is seen and checked (None: done)."""
        self.data = b""
        """The bytes being parsed, for a callback to look at."""

    def start_head(self) -> None:
        """The next bytes begin a head, with nothing before it: count them."""
        self.line = None if self.head_open else b""  # begun already: pipelined, not checked
        self.head_open = True
        self.counting = True
        self.head_bytes = 0

    def feed(self, data: bytes, config: VirtualServer) -> bool:
        """Parse ``data``, queueing what it holds; whether bytes now wait in ``pending``
        (they followed an upgrade request: reading must stop until a tunnel takes them)."""
        parser = self.parser
        if parser is None:
            self.pending.append(data)
            return True
        if self.counting:
            self.head_bytes += len(data)
            if self.line is not None and not self._line_ok(data):
                self._fail(HeadError(400, "request line without an HTTP version (HTTP/0.9)"))
                return False
        self.config = config
        self.data = data
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.parser = None
            rest = data[upgrade.args[0]:]
            if rest:
                self.pending.append(rest)
            return bool(rest)
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self._fail(cause if isinstance(cause, HeadError) else HeadError(400, "bad request"))
        except httptools.HttpParserError as error:
            # Only a well-formed but unknown version ("HTTP/1.2") is a 505; llhttp's other
            # version messages ("Expected CRLF after version") are about a malformed line.
            version = "invalid http version" in str(error).lower()
            self._fail(HeadError(505 if version else 400, f"malformed request: {error}"))
        if self.counting and self.parser is not None:
            if not self.headers and len(self.url) > config.max_request_line:
                self._fail(HeadError(414, "request line too long"))
            elif self.head_bytes > config.max_request_line + config.max_header_total:
                self._fail(HeadError(431, "request head too large"))
        return False

    def _line_ok(self, data: bytes) -> bool:
        """Whether the request line, once its end is in, names a version: llhttp reads a
        line without one as HTTP/0.9 and waits for headers that never come, so it is
        refused here, at once. (Too long a line is on_url's to refuse.)"""
        end = data.find(b"\n")
        if end < 0:
            self.line = (self.line or b"") + data[:self.config.max_request_line + 16]
            return True
        line = ((self.line or b"") + data[:end]).rstrip(b"\r")
        self.line = None
        if len(line) > self.config.max_request_line:
            return True  # on_url's 414, however the bytes came
        return b" " in line and line.rsplit(b" ", 1)[1].startswith(b"HTTP/")

    def _fail(self, error: HeadError) -> None:
        """Stop parsing: the request is answered with ``error`` once those before it are.

        An error inside a body is that request's: what it queued is dropped, so that a
        request refused with its head never goes upstream, and one already under way is
        refused now."""
        self.parser = None
        head = None
        while self.in_body and self.events:
            kind, value = self.events.pop()
            if kind == BODY:
                self.queued_bytes -= len(value)  # type: ignore[arg-type]
            elif kind == HEAD:
                self.queued_heads -= 1
                head = value[0]  # type: ignore[index]
                break
        self.queued_heads += 1
        self.events.append((ERROR, (error, head)))

    def take(self) -> Queued:
        """The first event, no longer counted as waiting."""
        kind, value = self.events.popleft()
        if kind in (HEAD, ERROR):
            self.queued_heads -= 1
        elif kind == BODY:
            self.queued_bytes -= len(value)  # type: ignore[arg-type]
        return kind, value

    # -- llhttp's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.head_open = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.config.max_request_line:
            raise HeadError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        line = len(name) + len(value) + 4
        self.head_size += line
        config = self.config
        if line > config.max_header_line or self.head_size > config.max_header_total:
            raise HeadError(431, "request header too large")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        version = self.parser.get_http_version()
        if version == "0.9" and not self.counting and self.url[-64:] + b" HTTP/" not in self.data:
            # llhttp reads a pipelined line with no version as HTTP/0.9 (a counted one is
            # refused sooner, by _line_ok); "HTTP/0.9" written out is a 505, as 2.0 is.
            raise HeadError(400, "request line without an HTTP version (HTTP/0.9)")
        config = self.config
        if self.counting and self.head_bytes > config.max_request_line + config.max_header_total:
            self._check_raw_size()
        head = RequestHead(
            method=self.parser.get_method(),
            target=self.url,
            version=version,
            headers=self.headers,
        )
        self.head_open = self.counting = False
        self.in_body = True
        self.queued_heads += 1
        self.events.append((HEAD, (head, self.parser.should_keep_alive())))

    def _check_raw_size(self) -> None:
        """The head's bytes as sent, against the limits (431): what on_header counts leaves
        out the whitespace llhttp strips, and the bytes fed may hold a body too. The head
        began this connection's bytes, so it ends at the first blank line of this read (or
        at its first LF, if the blank line began in the read before)."""
        data = self.data
        straddles = self.head_bytes > len(data) and data.startswith((b"\n", b"\r\n"))
        blank = None if straddles else _BLANK_LINE.search(data)
        end = blank.end() if blank else data.find(b"\n") + 1
        if self.head_bytes - len(data) + end > (self.config.max_request_line
                                                + self.config.max_header_total):
            raise HeadError(431, "request head too large")

    def on_body(self, body: bytes) -> None:
        self.queued_bytes += len(body)
        self.events.append((BODY, body))

    def on_message_complete(self) -> None:
        self.in_body = False
        self.events.append((END, None))
