"""The state of a client connection and of one HTTP exchange on it, as state machines. Pure:
no sockets, no clock (times are passed in), so every rule is tested directly.

A client connection is in one :class:`Phase` at a time, and its one timer means what the
phase says (:data:`TIMER`): the wait for a request, the head deadline, or the upstream's
silence. An :class:`Exchange` (one request and its response) has two sides, as in h11: the
request's (:class:`Request`: connecting, sending, sent) and the response's
(:class:`Response`: waiting, relaying, switched, done). It decides what the client is
sent for each upstream head, whether the connection can take another request, and whether
the upstream connection can be reused. :mod:`wsgate.proxy.connection` does the I/O.
"""

from __future__ import annotations

from enum import Enum

from wsgate.proxy import handshake, http1
from wsgate.proxy.accesslog import Entry
from wsgate.proxy.http1 import BodyFraming, HeadError, Headers, RequestHead
from wsgate.proxy.routes import Route, VirtualHost
from wsgate.proxy.servers import ServerState
from wsgate.proxy.variables import Variables

NON_IDEMPOTENT = frozenset((b"POST", b"PATCH", b"LOCK"))
"""Methods nginx never resends to another server once they went out."""


class StateError(Exception):
    """An event that cannot happen in the current state: a bug in the caller, not a client
    mistake (clients' mistakes are :class:`~wsgate.proxy.http1.HeadError`)."""


class _Keyed(Enum):
    """An enum used as a dict key on every request: its members are singletons, so their
    identity is their hash (Enum's own ``__hash__`` is Python code, hashing the name)."""

    __hash__ = object.__hash__


class Phase(_Keyed):
    """Where a client connection is."""

    WAITING = "waiting"
    """Between requests (or before the first): no byte of a head yet."""
    READING_HEAD = "reading head"
    """Some bytes of a head arrived; it must be complete by client_header_timeout."""
    EXCHANGE = "exchange"
    """A request is being proxied (requests pipelined behind it wait)."""
    TUNNEL = "tunnel"
    """Handed over to a tunnel after a 101: nothing of HTTP is left."""
    CLOSED = "closed"


class Event(_Keyed):
    HEAD_BYTES = "head bytes"
    BEGIN = "begin"
    DONE = "done"
    DONE_MID_HEAD = "done, next head under way"
    SWITCH = "switch"


_PHASES = {
    (Phase.WAITING, Event.HEAD_BYTES): Phase.READING_HEAD,
    (Phase.WAITING, Event.BEGIN): Phase.EXCHANGE,  # a head pipelined in full earlier
    (Phase.READING_HEAD, Event.BEGIN): Phase.EXCHANGE,
    (Phase.EXCHANGE, Event.DONE): Phase.WAITING,
    (Phase.EXCHANGE, Event.DONE_MID_HEAD): Phase.READING_HEAD,
    (Phase.EXCHANGE, Event.SWITCH): Phase.TUNNEL,
}


def advance(phase: Phase, event: Event) -> Phase:
    """The phase after ``event``; closing is always possible and is not an event here."""
    try:
        return _PHASES[phase, event]
    except KeyError:
        raise StateError(f"{event.value} while {phase.value}") from None


class Timer(_Keyed):
    """What the connection's timer means, by phase."""

    NONE = "none"
    IDLE = "idle"
    """keepalive_timeout (client_header_timeout before the first request): close quietly."""
    HEAD = "head"
    """client_header_timeout, a total deadline: 408."""
    UPSTREAM = "upstream"
    """client_body_timeout until the whole request body has come (no byte of it for that
    long: 408); then proxy_read_timeout from the end of the request: 504, or close
    mid-response."""


TIMER = {
    Phase.WAITING: Timer.IDLE,
    Phase.READING_HEAD: Timer.HEAD,
    Phase.EXCHANGE: Timer.UPSTREAM,
    Phase.TUNNEL: Timer.NONE,
    Phase.CLOSED: Timer.NONE,
}


class Request(Enum):
    CONNECTING = "connecting"
    """No upstream yet: body bytes wait."""
    SENDING = "sending"
    """The head went upstream; the body follows."""
    SENT = "sent"
    """The whole request is upstream."""


class Response(Enum):
    WAITING = "waiting"
    """No final head yet (interim 1xx heads may have passed)."""
    RELAYING = "relaying"
    """The head went to the client; the body follows."""
    SWITCHED = "switched"
    """A verified 101 went to the client: a tunnel follows."""
    DONE = "done"
    """Complete, or answered by the proxy itself."""


class Reply(Enum):
    """What the client gets for an upstream head."""

    SWITCH = "switch"
    """The verified 101, as the upstream sent it."""
    INTERIM = "interim"
    """A 1xx, as it is."""
    SKIP = "skip"
    """Nothing: a 1xx for an HTTP/1.0 client (RFC 9110 15.2)."""
    RELAY = "relay"
    """The final head, with this hop's framing (:meth:`Exchange.client_headers`)."""


class Exchange:
    """One request and its response, from the head to the end (or the switch to a tunnel)."""

    __slots__ = (
        "body_received", "bytes_sent", "cause", "chunked", "close_delimited", "connect_time",
        "framing", "head", "header_time", "host", "idle_timeout", "keep_alive", "override",
        "request", "response", "route", "started", "started_wall", "status", "target", "tried",
        "upgrade_key", "upstream_addr", "upstream_keep_alive", "variables",
    )

    def __init__(self, head: RequestHead, keep_alive: bool, started: float,
                 started_wall: float) -> None:
        self.head = head
        self.keep_alive = keep_alive
        """The client's connection takes another request after this one."""
        self.started = started
        self.started_wall = started_wall
        self.request = Request.CONNECTING
        self.response = Response.WAITING
        self.framing = BodyFraming(False, 0)
        self.upgrade_key: bytes | None = None
        self.route: Route | None = None
        self.target = head.target
        self.host: VirtualHost | None = None
        """The server (nginx's ``server`` block) the request went to."""
        self.tried: list[ServerState] = []
        """The servers this request has had (proxy_next_upstream goes to others)."""
        self.override: int | None = None
        """An error page's status, which replaces the upstream's (nginx's error_page)."""
        self.idle_timeout = 75.0
        """keepalive_timeout of the server that answered: how long to wait for the next."""
        """The request target upstream (proxy_pass with a URI part changes it)."""
        self.variables: Variables | None = None
        self.upstream_addr = "-"
        self.status = 0
        self.body_received = 0
        self.bytes_sent = 0
        self.connect_time: float | None = None
        self.header_time: float | None = None
        self.chunked = False
        """The response body is chunked toward the client (re-chunked, or close-delimited
        upstream made chunked for an HTTP/1.1 client)."""
        self.close_delimited = False
        self.upstream_keep_alive = False
        self.cause = ""
        """Why a WebSocket handshake got no tunnel, where the status alone does not say
        (the metrics' rejection cause)."""

    def __repr__(self) -> str:
        return (f"Exchange({self.head.method!r} {self.head.target!r}, "
                f"request={self.request.value}, response={self.response.value})")

    # -- the request ---------------------------------------------------------------------------

    def check(self, max_body: int | None) -> None:
        """The request's own rules, before anything goes upstream (raises HeadError)."""
        head = self.head
        if head.method == b"CONNECT":
            raise HeadError(405, "CONNECT is not proxied")
        self.framing = http1.check_request_head(head, max_body)
        if handshake.wants_upgrade(head):
            self.upgrade_key = handshake.check_request(head)

    def skips_body(self) -> bool:
        """Whether the client waits for "100 Continue" before its body: an answer of the
        proxy's own then goes at once, as nginx's, and the connection ends with it."""
        expect = self.head.get(b"expect")
        if expect is None or expect.strip().lower() != b"100-continue":
            return False
        self.keep_alive = False
        return True

    def check_size(self, max_body: int | None) -> None:
        """The location's client_max_body_size against a declared length (413)."""
        length = self.framing.length
        if max_body is not None and length is not None and length > max_body:
            raise HeadError(413, "body over client_max_body_size")

    def head_sent(self, upstream_addr: str) -> None:
        self._request(Request.CONNECTING, Request.SENDING)
        self.upstream_addr = upstream_addr

    def body(self, size: int, max_body: int | None) -> None:
        """Count ``size`` more body bytes (raises HeadError 413 past ``max_body``)."""
        if self.request is not Request.SENDING:
            raise StateError(f"request body while {self.request.value}")
        self.body_received += size
        if max_body is not None and self.body_received > max_body:
            raise HeadError(413, "body over client_max_body_size")

    def request_done(self) -> None:
        self._request(Request.SENDING, Request.SENT)

    def retry(self, non_idempotent: bool = False) -> bool:
        """Whether the request may go again on another upstream connection, as nginx
        resends one whose kept-alive connection failed: only before any answer, not for
        the methods nginx never resends (POST, PATCH, LOCK: ``proxy_next_upstream``
        without ``non_idempotent``), and only without a body, since the body is streamed,
        not kept. If so, it is back to connecting."""
        if (self.response is not Response.WAITING or self.request is not Request.SENT
                or self.framing.chunked or self.framing.length
                or (self.head.method in NON_IDEMPOTENT and not non_idempotent)):
            return False
        self.request = Request.CONNECTING
        self.upstream_addr = "-"
        return True

    def next_upstream(self, status: int) -> bool:
        """Whether an upstream's ``status`` sends the request to the next server (nginx's
        ``proxy_next_upstream http_NNN``): a condition named, tries left, a server not had
        yet, and :meth:`retry` allowing it (then it is back to connecting)."""
        route = self.route
        if route is None or route.target is None:
            return False
        conditions = route.location.next_upstream
        tries = route.location.next_upstream_tries or len(route.group.servers)
        return (f"http_{status}" in conditions and "off" not in conditions
                and len(self.tried) < min(tries, len(route.group.servers))
                and self.retry("non_idempotent" in conditions))

    # -- the response --------------------------------------------------------------------------

    def response_head(self, status: int, headers: Headers, upstream_keep_alive: bool,
                      header_time: float) -> Reply:
        """What the client gets for an upstream head (raises HeadError 502 for a bad 101)."""
        if self.response is not Response.WAITING:
            raise StateError(f"response head while {self.response.value}")
        if self.header_time is None:
            self.header_time = header_time
        if self.upgrade_key is not None:
            if handshake.response_is_switch(status, headers, self.upgrade_key):
                self.response = Response.SWITCHED
                self.status = 101
                return Reply.SWITCH
            self.keep_alive = False  # the client's pipelined bytes were meant for a tunnel
            self.cause = "upstream_refused"
        if status == 101:
            raise HeadError(502, "upstream switched protocols unasked")
        http11 = self.head.version == "1.1"
        if 100 <= status < 200:
            return Reply.INTERIM if http11 else Reply.SKIP
        framing = http1.response_framing(status, headers, self.head.method)
        self.close_delimited = framing.length is None and not framing.chunked
        self.chunked = http11 and (framing.chunked or self.close_delimited)
        if framing.length is None and not http11:
            self.keep_alive = False  # an HTTP/1.0 client learns the end from the close
        if self.request is not Request.SENT:
            self.keep_alive = False  # an early answer: say now that the connection ends
        self.upstream_keep_alive = upstream_keep_alive and self.upgrade_key is None
        self.status = status
        self.response = Response.RELAYING
        return Reply.RELAY

    def sent(self, size: int) -> None:
        """``size`` more response body bytes went to the client."""
        self.bytes_sent += size

    def response_done(self, upstream_idle: bool) -> bool:
        """The response is complete; whether the upstream connection may be reused
        (``upstream_idle``: it has nothing of ours left to write)."""
        if self.response is not Response.RELAYING:
            raise StateError(f"response end while {self.response.value}")
        self.response = Response.DONE
        if self.request is not Request.SENT:
            self.keep_alive = False  # the rest of the body would be read as the next request
        return (self.upstream_keep_alive and self.request is Request.SENT
                and not self.close_delimited and upstream_idle)

    def ends_at_close(self) -> bool:
        """Whether the upstream closing now completes the response (a body without a
        length) rather than cutting it short."""
        return self.response is Response.RELAYING and self.close_delimited

    def answered(self, status: int) -> None:
        """The proxy answers ``status`` itself with a response of its own (return, files)."""
        if self.response is not Response.WAITING:
            raise StateError(f"own answer while {self.response.value}")
        self.response = Response.RELAYING
        self.status = status

    def answer(self, status: int) -> bool:
        """The proxy answers ``status`` itself; whether it still can (nothing of a final
        response has reached the client). Either way the exchange is over."""
        if self.response is not Response.WAITING:
            return False
        self.response = Response.DONE
        self.status = status
        return True

    def client_gone(self) -> None:
        """The client closed first: nginx logs 499 when it had no response yet."""
        if self.response is Response.WAITING:
            self.status = 499

    def timed_out(self) -> int | None:
        """proxy_read_timeout passed: 504 if the client can still be told, else None
        (the response was under way: just close)."""
        return 504 if self.response is Response.WAITING else None

    # -- the logs ------------------------------------------------------------------------------

    def request_line(self) -> str:
        """The request as both logs show it ("GET /x HTTP/1.1"; "-" without a head)."""
        head = self.head
        if head.method == b"-":
            return "-"
        return (f"{head.method.decode('latin-1')} {head.target.decode('latin-1')} "
                f"HTTP/{head.version}")

    def entry(self, remote_addr: str, now: float, variables: bool = False) -> Entry:
        """The access-log line of this exchange, as far as it is known at ``now``."""
        head = self.head
        duration = now - self.started
        upstream = self.upstream_addr != "-"
        return Entry(
            remote_addr=remote_addr,
            request=self.request_line(),
            status=self.status,
            body_bytes_sent=self.bytes_sent,
            http_referer=(head.get(b"referer") or b"-").decode("latin-1"),
            http_user_agent=(head.get(b"user-agent") or b"-").decode("latin-1"),
            request_time=duration,
            upstream_addr=self.upstream_addr,
            upstream_connect_time=self.connect_time,
            upstream_header_time=self.header_time,
            upstream_response_time=duration if upstream else None,
            bytes_received=self.body_received,
            time_local=self.started_wall,
            variables=self.variables if variables else None,
        )

    def _request(self, before: Request, after: Request) -> None:
        if self.request is not before:
            raise StateError(f"{after.value} while {self.request.value}")
        self.request = after
