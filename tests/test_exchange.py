"""The pure state machines of :mod:`wsgate.proxy.exchange`, driven directly: the phases of a
client connection and the decisions of one exchange, with no socket and no clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.utils import accept_key

from wsgate.proxy.exchange import (
    TIMER,
    Event,
    Exchange,
    Phase,
    Reply,
    Request,
    Response,
    StateError,
    Timer,
    advance,
)
from wsgate.proxy.http1 import BodyFraming, HeadError, Headers, RequestHead, normalize_path

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = accept_key(KEY.decode()).encode()
SWITCH_HEADERS: Headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                           (b"Sec-WebSocket-Accept", ACCEPT)]

EXPECTED_PHASES = {
    (Phase.WAITING, Event.HEAD_BYTES): Phase.READING_HEAD,
    (Phase.WAITING, Event.BEGIN): Phase.EXCHANGE,
    (Phase.READING_HEAD, Event.BEGIN): Phase.EXCHANGE,
    (Phase.EXCHANGE, Event.DONE): Phase.WAITING,
    (Phase.EXCHANGE, Event.DONE_MID_HEAD): Phase.READING_HEAD,
    (Phase.EXCHANGE, Event.SWITCH): Phase.TUNNEL,
}
"""Written out by hand, not copied from the module: the transitions the connection relies on."""


def get(target: bytes = b"/", version: str = "1.1", method: bytes = b"GET",
        extra: Headers | None = None) -> RequestHead:
    headers: Headers = [(b"Host", b"example.com")] if version == "1.1" else []
    return RequestHead(method, target, version, headers + (extra or []))


def websocket_head(extra: Headers | None = None) -> RequestHead:
    return get(b"/ws", extra=[(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                              (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", b"13"),
                              *(extra or [])])


def exchange(head: RequestHead | None = None, keep_alive: bool = True) -> Exchange:
    """An exchange whose head passed the checks."""
    made = Exchange(head or get(), keep_alive, started=100.0, started_wall=1_700_000_000.0)
    made.check(1 << 20)
    return made


def sent(head: RequestHead | None = None, keep_alive: bool = True) -> Exchange:
    """An exchange whose whole request is upstream, waiting for the response."""
    made = exchange(head, keep_alive)
    made.head_sent("10.0.0.1:80")
    made.request_done()
    return made


def relaying(status: int = 200, headers: Headers | None = None,
             upstream_keep_alive: bool = True, head: RequestHead | None = None) -> Exchange:
    made = sent(head)
    reply = made.response_head(status, [(b"Content-Length", b"2")] if headers is None
                               else headers, upstream_keep_alive, 0.5)
    assert reply is Reply.RELAY
    return made


# -- the phases of a connection ----------------------------------------------------------------

@pytest.mark.parametrize(("phase", "event"), list(itertools.product(Phase, Event)))
def test_advance_follows_the_table_and_refuses_the_rest(phase: Phase, event: Event) -> None:
    expected = EXPECTED_PHASES.get((phase, event))
    if expected is None:
        with pytest.raises(StateError, match=event.value):
            advance(phase, event)
    else:
        assert advance(phase, event) is expected


@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_any_event_sequence_follows_the_table_or_raises_without_moving(
        events: list[Event]) -> None:
    """Whatever a buggy caller does, a phase is left only by a listed transition, and a
    refused event leaves it where it was (the connection then still knows its timer)."""
    phase = Phase.WAITING
    for event in events:
        try:
            after = advance(phase, event)
        except StateError:
            assert (phase, event) not in EXPECTED_PHASES
            continue
        assert after is EXPECTED_PHASES[phase, event]
        assert after in TIMER
        phase = after
    assert phase is not Phase.CLOSED  # closing is not an event: only the connection closes


def test_nothing_leaves_a_tunnel_or_a_closed_connection() -> None:
    for phase, event in itertools.product((Phase.TUNNEL, Phase.CLOSED), Event):
        with pytest.raises(StateError):
            advance(phase, event)


@pytest.mark.parametrize(("phase", "timer"), [
    (Phase.WAITING, Timer.IDLE),
    (Phase.READING_HEAD, Timer.HEAD),
    (Phase.EXCHANGE, Timer.UPSTREAM),
    (Phase.TUNNEL, Timer.NONE),
    (Phase.CLOSED, Timer.NONE),
])
def test_timer_means_what_the_phase_says(phase: Phase, timer: Timer) -> None:
    assert TIMER[phase] is timer


def test_every_phase_has_a_timer_meaning() -> None:
    assert set(TIMER) == set(Phase)


# -- the request's checks ------------------------------------------------------------------------

def test_check_refuses_connect_with_405() -> None:
    made = Exchange(get(b"example.com:443", method=b"CONNECT"), True, 0.0, 0.0)
    with pytest.raises(HeadError) as caught:
        made.check(None)
    assert caught.value.status == 405


def test_check_finds_the_upgrade_key_of_a_websocket_handshake() -> None:
    assert exchange(websocket_head()).upgrade_key == KEY


def test_check_finds_no_upgrade_key_in_a_plain_request() -> None:
    assert exchange().upgrade_key is None


@pytest.mark.parametrize(("framing_headers", "framing"), [
    ([], BodyFraming(False, 0)),
    ([(b"Content-Length", b"12")], BodyFraming(False, 12)),
    ([(b"Transfer-Encoding", b"chunked")], BodyFraming(True, None)),
])
def test_check_records_the_request_body_framing(framing_headers: Headers,
                                                framing: BodyFraming) -> None:
    assert exchange(get(method=b"POST", extra=framing_headers)).framing == framing


@pytest.mark.parametrize(("head", "status"), [
    (RequestHead(b"GET", b"/", "1.1", []), 400),  # no Host
    (get(version="1.0", extra=[(b"Transfer-Encoding", b"chunked")]), 400),
    (get(method=b"POST", extra=[(b"Content-Length", b"2000000")]), 413),
    (get(extra=[(b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")]), 400),
    (get(b"/a/../../b"), 400),
    (get(b"/ws", extra=[
        (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", b"8")]), 426),
    (get(b"/ws", method=b"POST", extra=[
        (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", b"13")]), 400),
], ids=["no-host", "te-in-1.0", "too-large", "cl-and-te", "above-the-root", "ws-version",
        "ws-post"])
def test_check_propagates_the_head_error(head: RequestHead, status: int) -> None:
    made = Exchange(head, True, 0.0, 0.0)
    with pytest.raises(HeadError) as caught:
        made.check(1 << 20)
    assert caught.value.status == status


# -- the request side ----------------------------------------------------------------------------

def test_request_side_goes_connecting_sending_sent() -> None:
    made = exchange(get(method=b"POST", extra=[(b"Content-Length", b"5")]))
    assert (made.request, made.upstream_addr) == (Request.CONNECTING, "-")
    made.head_sent("10.0.0.1:80")
    assert (made.request, made.upstream_addr) == (Request.SENDING, "10.0.0.1:80")
    made.body(2, None)
    made.body(3, None)
    assert made.body_received == 5
    made.request_done()
    assert made.request is Request.SENT


def test_request_side_refuses_events_out_of_order() -> None:
    made = exchange()
    with pytest.raises(StateError):
        made.body(1, None)  # no upstream yet: body bytes wait
    with pytest.raises(StateError):
        made.request_done()
    made.head_sent("a:1")
    with pytest.raises(StateError):
        made.head_sent("a:1")
    made.request_done()
    late: list[Callable[[], None]] = [
        lambda: made.head_sent("a:1"), made.request_done, lambda: made.body(1, None)]
    for call in late:
        with pytest.raises(StateError):
            call()
    assert made.request is Request.SENT


def test_body_up_to_the_limit_passes_and_one_byte_more_is_413() -> None:
    made = exchange(get(method=b"POST", extra=[(b"Transfer-Encoding", b"chunked")]))
    made.head_sent("a:1")
    made.body(6, 10)
    made.body(4, 10)
    with pytest.raises(HeadError) as caught:
        made.body(1, 10)
    assert caught.value.status == 413


def test_body_without_a_limit_is_never_413() -> None:
    made = exchange(get(method=b"POST", extra=[(b"Transfer-Encoding", b"chunked")]))
    made.head_sent("a:1")
    made.body(1 << 40, None)
    assert made.body_received == 1 << 40


# -- the response's head -------------------------------------------------------------------------

def test_a_verified_101_switches() -> None:
    made = sent(websocket_head())
    assert made.response_head(101, SWITCH_HEADERS, True, 0.25) is Reply.SWITCH
    assert (made.response, made.status, made.header_time) == (Response.SWITCHED, 101, 0.25)


@pytest.mark.parametrize("headers", [
    [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
     (b"Sec-WebSocket-Accept", b"d3JvbmcgYWNjZXB0IGtleSE=")],
    [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")],
    [(b"Upgrade", b"h2c"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Accept", ACCEPT)],
    [(b"Upgrade", b"websocket"), (b"Sec-WebSocket-Accept", ACCEPT)],
], ids=["wrong-accept", "no-accept", "other-protocol", "no-connection"])
def test_a_bad_101_to_a_handshake_is_502(headers: Headers) -> None:
    made = sent(websocket_head())
    with pytest.raises(HeadError) as caught:
        made.response_head(101, headers, True, 0.1)
    assert caught.value.status == 502
    assert made.response is Response.WAITING  # the proxy can still answer the 502
    assert made.answer(502)


@pytest.mark.parametrize("status", [200, 400, 403, 426])
def test_a_non_101_answer_to_a_handshake_is_relayed_and_ends_the_connection(
        status: int) -> None:
    """The client may have pipelined frames for the tunnel; they must not be parsed as a
    request, and the upstream connection (asked to upgrade) is not reused."""
    made = sent(websocket_head())
    assert made.response_head(status, [(b"Content-Length", b"0")], True, 0.1) is Reply.RELAY
    assert made.keep_alive is False
    assert made.upstream_keep_alive is False
    assert made.response_done(upstream_idle=True) is False


def test_an_unasked_101_is_502() -> None:
    made = sent()
    with pytest.raises(HeadError) as caught:
        made.response_head(101, SWITCH_HEADERS, True, 0.1)
    assert caught.value.status == 502
    assert made.response is Response.WAITING


@pytest.mark.parametrize(("version", "reply"), [("1.1", Reply.INTERIM), ("1.0", Reply.SKIP)])
@pytest.mark.parametrize("status", [100, 102, 103])
def test_an_interim_head_passes_to_http11_only(status: int, version: str,
                                               reply: Reply) -> None:
    made = sent(get(version=version))
    assert made.response_head(status, [], True, 0.1) is reply
    assert made.response is Response.WAITING  # the final head is still to come
    assert made.response_head(200, [(b"Content-Length", b"0")], True, 0.2) is Reply.RELAY
    assert made.status == 200


@pytest.mark.parametrize(("version", "headers", "chunked", "close_delimited", "keep_alive"), [
    ("1.1", [(b"Content-Length", b"3")], False, False, True),
    ("1.1", [(b"Transfer-Encoding", b"chunked")], True, False, True),
    ("1.1", [], True, True, True),  # close-delimited upstream, chunked to the client
    ("1.1", [(b"Transfer-Encoding", b"gzip")], True, True, True),
    ("1.0", [(b"Content-Length", b"3")], False, False, True),
    ("1.0", [(b"Transfer-Encoding", b"chunked")], False, False, False),
    ("1.0", [], False, True, False),  # the client learns the end from the close
], ids=["length", "chunked", "at-close", "not-chunked-te", "1.0-length", "1.0-chunked",
        "1.0-at-close"])
def test_response_framing_decides_chunking_and_keep_alive(
        version: str, headers: Headers, chunked: bool, close_delimited: bool,
        keep_alive: bool) -> None:
    made = sent(get(version=version))
    assert made.response_head(200, headers, True, 0.1) is Reply.RELAY
    assert (made.chunked, made.close_delimited, made.keep_alive) == (
        chunked, close_delimited, keep_alive)


@pytest.mark.parametrize(("status", "method"), [(204, b"GET"), (304, b"GET"), (200, b"HEAD")])
def test_a_response_without_a_body_is_neither_chunked_nor_close_delimited(
        status: int, method: bytes) -> None:
    made = sent(get(method=method))
    made.response_head(status, [], True, 0.1)
    assert (made.chunked, made.close_delimited, made.keep_alive) == (False, False, True)


def test_a_second_final_head_is_a_state_error() -> None:
    made = relaying()
    with pytest.raises(StateError):
        made.response_head(200, [], True, 0.1)


def test_a_head_after_a_switch_or_an_answer_is_a_state_error() -> None:
    switched = sent(websocket_head())
    switched.response_head(101, SWITCH_HEADERS, True, 0.1)
    answered = sent()
    answered.answer(502)
    for made in (switched, answered):
        with pytest.raises(StateError):
            made.response_head(200, [], True, 0.1)


# -- the response's end --------------------------------------------------------------------------

@pytest.mark.parametrize(("upstream_keep_alive", "request_sent", "close_delimited", "idle"),
                         list(itertools.product((True, False), repeat=4)))
def test_the_upstream_is_reused_only_when_every_condition_holds(
        upstream_keep_alive: bool, request_sent: bool, close_delimited: bool,
        idle: bool) -> None:
    made = exchange(get(method=b"POST", extra=[(b"Content-Length", b"4")]))
    made.head_sent("a:1")
    if request_sent:
        made.body(4, None)
        made.request_done()
    headers: Headers = [] if close_delimited else [(b"Content-Length", b"1")]
    made.response_head(200, headers, upstream_keep_alive, 0.1)
    reusable = made.response_done(upstream_idle=idle)
    assert reusable is (upstream_keep_alive and request_sent and not close_delimited and idle)
    assert made.response is Response.DONE
    # A response that ends before its request: the rest of the body would be read as the
    # next request, so the client connection ends too.
    assert made.keep_alive is request_sent


def test_response_done_refuses_unless_relaying() -> None:
    waiting = sent()
    switched = sent(websocket_head())
    switched.response_head(101, SWITCH_HEADERS, True, 0.1)
    done = relaying()
    done.response_done(True)
    for made in (waiting, switched, done):
        before = made.response
        with pytest.raises(StateError):
            made.response_done(True)
        assert made.response is before


def test_ends_at_close_only_for_a_close_delimited_body_under_way() -> None:
    at_close = relaying(headers=[])
    assert at_close.ends_at_close()
    assert not relaying(headers=[(b"Content-Length", b"5")]).ends_at_close()
    assert not relaying(headers=[(b"Transfer-Encoding", b"chunked")]).ends_at_close()
    assert not sent().ends_at_close()  # no head yet: a close cuts it short
    at_close.response_done(False)
    assert not at_close.ends_at_close()


# -- the proxy's own answers ---------------------------------------------------------------------

def test_answer_is_possible_only_while_waiting() -> None:
    made = sent()
    assert made.answer(504) is True
    assert (made.response, made.status) == (Response.DONE, 504)
    assert made.answer(502) is False
    assert made.status == 504


def test_answer_is_refused_once_the_response_is_under_way_or_switched() -> None:
    under_way = relaying()
    switched = sent(websocket_head())
    switched.response_head(101, SWITCH_HEADERS, True, 0.1)
    for made, status in ((under_way, 200), (switched, 101)):
        response = made.response
        assert made.answer(502) is False
        assert (made.response, made.status) == (response, status)


def test_answer_works_before_anything_went_upstream() -> None:
    made = exchange()
    assert made.answer(413) is True
    assert made.status == 413


def test_client_gone_before_a_response_logs_499() -> None:
    made = sent()
    made.client_gone()
    assert made.status == 499


def test_client_gone_during_a_response_keeps_its_status() -> None:
    made = relaying(status=206)
    made.client_gone()
    assert made.status == 206


def test_timed_out_is_504_only_before_the_response() -> None:
    assert sent().timed_out() == 504
    assert relaying().timed_out() is None
    switched = sent(websocket_head())
    switched.response_head(101, SWITCH_HEADERS, True, 0.1)
    assert switched.timed_out() is None


# -- the log -------------------------------------------------------------------------------------

def test_entry_has_the_request_line_and_the_upstream_times() -> None:
    head = get(b"/path?q=1", extra=[(b"Referer", b"http://r/"), (b"User-Agent", b"ua/1")])
    made = Exchange(head, True, started=100.0, started_wall=1_700_000_000.0)
    made.check(None)
    made.connect_time = 0.125
    made.head_sent("10.0.0.1:80")
    made.request_done()
    made.response_head(200, [(b"Content-Length", b"7")], True, 0.5)
    made.sent(7)
    entry = made.entry("192.0.2.1", now=102.0)
    assert entry.remote_addr == "192.0.2.1"
    assert entry.request == "GET /path?q=1 HTTP/1.1"
    assert (entry.status, entry.body_bytes_sent) == (200, 7)
    assert (entry.http_referer, entry.http_user_agent) == ("http://r/", "ua/1")
    assert entry.request_time == 2.0
    assert entry.upstream_addr == "10.0.0.1:80"
    assert entry.upstream_connect_time == 0.125
    assert entry.upstream_header_time == 0.5
    assert entry.upstream_response_time == 2.0
    assert entry.time_local == 1_700_000_000.0


def test_entry_without_an_upstream_has_dashes_and_no_upstream_times() -> None:
    made = Exchange(RequestHead(b"-", b"", "1.1", []), False, started=5.0, started_wall=9.0)
    made.answer(400)
    entry = made.entry("192.0.2.1", now=5.5)
    assert (entry.request, entry.status, entry.upstream_addr) == ("-", 400, "-")
    assert (entry.http_referer, entry.http_user_agent) == ("-", "-")
    assert entry.upstream_connect_time is None
    assert entry.upstream_header_time is None
    assert entry.upstream_response_time is None
    assert entry.request_time == 0.5


def test_entry_counts_the_request_body_received() -> None:
    made = exchange(get(method=b"POST", extra=[(b"Content-Length", b"9")]))
    made.head_sent("a:1")
    made.body(9, None)
    assert made.entry("x", 100.0).bytes_received == 9


# -- any sequence of calls -----------------------------------------------------------------------

ACTIONS = ["head_sent", "body", "request_done", "head", "sent", "response_done", "answer",
           "client_gone", "timed_out"]
HEADS: list[tuple[int, Headers]] = [
    (100, []), (103, []), (101, SWITCH_HEADERS), (101, SWITCH_HEADERS[:2]),
    (200, [(b"Content-Length", b"3")]), (200, []), (200, [(b"Transfer-Encoding", b"chunked")]),
    (204, []), (404, [(b"Content-Length", b"0")]), (502, []),
]
RESPONSE_ORDER = {Response.WAITING: 0, Response.RELAYING: 1, Response.SWITCHED: 1,
                  Response.DONE: 2}
REQUEST_ORDER = {Request.CONNECTING: 0, Request.SENDING: 1, Request.SENT: 2}


@settings(max_examples=300, deadline=None)
@given(
    websocket=st.booleans(),
    version=st.sampled_from(["1.0", "1.1"]),
    steps=st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, len(HEADS) - 1),
                             st.booleans()), max_size=25),
)
def test_any_call_sequence_keeps_the_exchange_consistent(
        websocket: bool, version: str, steps: list[tuple[str, int, bool]]) -> None:
    """A call either does what the tables say or raises (StateError for a caller's bug,
    HeadError for a peer's), and a StateError changes nothing; states only move forward;
    a switch is always a verified 101 to a handshake; a connection that may not be reused
    never becomes reusable again."""
    made = exchange(websocket_head() if websocket else get(version=version))
    for action, index, flag in steps:
        before = (made.request, made.response, made.status, made.keep_alive,
                  made.upstream_addr)
        try:
            if action == "head_sent":
                made.head_sent("a:1")
            elif action == "body":
                made.body(index, 5 if flag else None)
            elif action == "request_done":
                made.request_done()
            elif action == "head":
                status, headers = HEADS[index]
                reply = made.response_head(status, headers, flag, 0.1)
                assert (reply is Reply.SWITCH) == (made.response is Response.SWITCHED)
                assert reply is not Reply.SKIP or made.head.version == "1.0"
            elif action == "sent":
                made.sent(index)
            elif action == "response_done":
                reusable = made.response_done(flag)
                assert not reusable or (made.request is Request.SENT and made.upstream_keep_alive)
            elif action == "answer":
                assert made.answer(500 + index) is (before[1] is Response.WAITING)
            elif action == "client_gone":
                made.client_gone()
            else:
                assert (made.timed_out() == 504) is (made.response is Response.WAITING)
        except StateError:
            assert (made.request, made.response, made.status, made.keep_alive,
                    made.upstream_addr) == before
        except HeadError as error:
            assert error.status in (413, 502)
            assert made.response is before[1]
        assert REQUEST_ORDER[made.request] >= REQUEST_ORDER[before[0]]
        assert RESPONSE_ORDER[made.response] >= RESPONSE_ORDER[before[1]]
        if before[1] is not Response.WAITING:
            assert made.response in (before[1], Response.DONE)
            assert before[1] is not Response.SWITCHED or made.response is Response.SWITCHED
        if made.response is Response.SWITCHED:
            assert made.upgrade_key is not None and made.status == 101
        assert not (made.keep_alive and not before[3])  # never back to keep-alive


@pytest.mark.parametrize(("path", "uri"), [
    (b"/", b"/"), (b"/a/b", b"/a/b"), (b"/a//b", b"/a/b"), (b"/a/./b", b"/a/b"),
    (b"/a/b/..", b"/a/"), (b"/a/b/.", b"/a/b/"), (b"/a/../b", b"/b"), (b"/a%2Fb", b"/a/b"),
    (b"/api/..%2fsecret", b"/secret"), (b"/%41", b"/A"), (b"/a;p=1/b", b"/a;p=1/b"),
    (b"//", b"/"), (b"/a/", b"/a/"), (b"/a/b/../..", b"/")])
def test_paths_are_normalised_as_nginx_does(path: bytes, uri: bytes) -> None:
    assert normalize_path(path) == uri


@pytest.mark.parametrize("path", [b"/..", b"/a/../..", b"/%2e%2e/x", b"/a%00", b"/a%zz",
                                  b"/a%2"])
def test_paths_that_cannot_be_normalised_are_400(path: bytes) -> None:
    with pytest.raises(HeadError) as raised:
        normalize_path(path)
    assert raised.value.status == 400
