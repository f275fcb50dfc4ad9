"""The proxy's pure rules: request-head checks, header rewriting, the WebSocket handshake."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.utils import accept_key

from wsgate.proxy import handshake, http1
from wsgate.proxy.headers import client_response_headers, upstream_request_headers
from wsgate.proxy.http1 import BodyFraming, HeadError, RequestHead
from wsgate.proxy.variables import Variables, compile_template

KEY = base64.b64encode(b"0123456789abcdef")


def head(*headers: tuple[bytes, bytes], method: bytes = b"GET", version: str = "1.1",
         target: bytes = b"/") -> RequestHead:
    return RequestHead(method, target, version, list(headers))


def ws_head(*extra: tuple[bytes, bytes], drop: bytes = b"") -> RequestHead:
    base = [(b"Host", b"example.com"), (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Key", KEY)]
    return head(*[h for h in base if h[0].lower() != drop], *extra)


def status_of(request: RequestHead, max_body: int | None = 1 << 20) -> int:
    with pytest.raises(HeadError) as error:
        http1.check_request_head(request, max_body)
    return error.value.status


@pytest.mark.parametrize(
    ("headers", "version", "status"),
    [
        ([(b"Host", b"a"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")],
         "1.1", 400),
        ([(b"Host", b"a"), (b"Content-Length", b"3"), (b"Content-Length", b"3")], "1.1", 400),
        ([(b"Host", b"a"), (b"Content-Length", b"+3")], "1.1", 400),
        ([(b"Host", b"a"), (b"Content-Length", b"3, 3")], "1.1", 400),
        ([(b"Host", b"a"), (b"Transfer-Encoding", b"gzip")], "1.1", 400),
        ([(b"Host", b"a"), (b"Transfer-Encoding", b"chunked, gzip")], "1.1", 400),
        ([(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")], "1.0", 400),
        ([(b"Host", b"a"), (b"X", b"a\x00b")], "1.1", 400),
        ([(b"Host", b"a"), (b"X", b"a\rb")], "1.1", 400),
        ([(b"Host", b"a"), (b"Bad Name", b"v")], "1.1", 400),
        ([], "1.1", 400),
        ([(b"Host", b"a"), (b"Host", b"b")], "1.1", 400),
        ([(b"Host", b"a")], "2.0", 505),
        ([(b"Host", b"a"), (b"Content-Length", b"2000")], "1.1", 413),
    ],
)
def test_requests_that_never_go_upstream(headers: list[tuple[bytes, bytes]], version: str,
                                         status: int) -> None:
    assert status_of(head(*headers, version=version), max_body=1000) == status


@pytest.mark.parametrize(
    ("target", "host", "origin", "uri"),
    [
        (b"http://a/x/../y?q", b"a", b"/x/../y?q", b"/y"),
        (b"https://A:443", b"a", b"/", b"/"),
        (b"http://[::1]:8080?q", b"[::1]:8080", b"/?q", b"/"),
        (b"hTTp://a:/p", b"A:80", b"/p", b"/p"),
    ],
)
def test_absolute_form_becomes_origin_form(target: bytes, host: bytes, origin: bytes,
                                           uri: bytes) -> None:
    request = head((b"Host", host), target=target)
    http1.check_request_head(request, None)
    assert (request.target, request.uri, request.get(b"host")) == (origin, uri, host)


def test_absolute_form_without_a_host_header_lends_it_its_authority() -> None:
    request = head(target=b"http://b.test:81/x", version="1.0")
    http1.check_request_head(request, None)
    assert (request.target, request.get_all(b"host")) == (b"/x", [b"b.test:81"])


@pytest.mark.parametrize("target", [b"http://b/", b"http://a:81/", b"http://u@a/",
                                    b"http:///x", b"http://a b/", b"ws://a/", b"a/b"])
def test_absolute_form_that_cannot_be_trusted(target: bytes) -> None:
    assert status_of(head((b"Host", b"a"), target=target)) == 400


def test_framing_of_good_requests() -> None:
    assert http1.check_request_head(head((b"Host", b"a")), None) == BodyFraming(False, 0)
    assert http1.check_request_head(
        head((b"Host", b"a"), (b"Content-Length", b"12")), None) == BodyFraming(False, 12)
    assert http1.check_request_head(
        head((b"Host", b"a"), (b"Transfer-Encoding", b"Chunked")), None) == BodyFraming(True, None)
    assert http1.check_request_head(head(version="1.0"), None) == BodyFraming(False, 0)


def test_response_framing() -> None:
    assert http1.response_framing(200, [(b"Content-Length", b"5")], b"GET").length == 5
    assert http1.response_framing(200, [(b"Content-Length", b"5")], b"HEAD").length == 0
    assert http1.response_framing(304, [], b"GET").length == 0
    assert http1.response_framing(200, [(b"Transfer-Encoding", b"chunked")], b"GET").chunked
    assert http1.response_framing(200, [], b"GET").length is None


def test_error_response_names_nothing_internal() -> None:
    response = http1.error_response(502)
    assert response.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Connection: close\r\n" in response
    assert b"127.0.0.1" not in response and b"Traceback" not in response


def context(request: RequestHead, trusted: bool = False) -> Variables:
    return Variables(request, "203.0.113.7", 5555, "http", 8080, "10.0.0.1", trusted,
                          "127.0.0.1:8010")


DEFAULTS = tuple(
    (name, compile_template(value)) for name, value in (
        (b"Host", "$host"), (b"X-Real-IP", "$remote_addr"),
        (b"X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        (b"X-Forwarded-Proto", "$proxy_x_forwarded_proto"),
    )
)


def test_seed_headers_and_hop_by_hop_removal() -> None:
    request = head((b"Host", b"Example.com:8080"), (b"Connection", b"keep-alive, X-Secret"),
                   (b"Keep-Alive", b"300"), (b"X-Secret", b"s"), (b"TE", b"trailers"),
                   (b"Accept", b"*/*"))
    out = dict(upstream_request_headers(context(request), DEFAULTS, BodyFraming(False, 0), None))
    assert out == {b"Accept": b"*/*", b"Host": b"example.com", b"X-Real-IP": b"203.0.113.7",
                   b"X-Forwarded-For": b"203.0.113.7", b"X-Forwarded-Proto": b"http"}


def test_forwarded_headers_from_untrusted_peers_are_replaced() -> None:
    request = head((b"Host", b"a"), (b"X-Forwarded-For", b"1.2.3.4"),
                   (b"X-Forwarded-Proto", b"https"), (b"Forwarded", b"for=1.2.3.4"))
    out = upstream_request_headers(context(request), DEFAULTS, BodyFraming(False, 0), None)
    assert dict(out)[b"X-Forwarded-For"] == b"203.0.113.7"
    assert dict(out)[b"X-Forwarded-Proto"] == b"http"
    assert b"Forwarded" not in dict(out)


def test_forwarded_headers_from_trusted_proxies_are_appended() -> None:
    request = head((b"Host", b"a"), (b"X-Forwarded-For", b"1.2.3.4"),
                   (b"X-Forwarded-Proto", b"https"))
    out = dict(upstream_request_headers(context(request, trusted=True), DEFAULTS,
                                        BodyFraming(False, 0), None))
    assert out[b"X-Forwarded-For"] == b"1.2.3.4, 203.0.113.7"
    assert out[b"X-Forwarded-Proto"] == b"https"


def test_upgrade_and_chunked_framing_headers() -> None:
    request = ws_head()
    out = upstream_request_headers(context(request), DEFAULTS, BodyFraming(False, 0),
                                   b"websocket")
    assert out[-2:] == [(b"Upgrade", b"websocket"), (b"Connection", b"upgrade")]
    out = upstream_request_headers(context(head((b"Host", b"a"))), DEFAULTS,
                                   BodyFraming(True, None), None)
    assert (b"Transfer-Encoding", b"chunked") in out


def test_http10_without_host_still_sends_one_upstream() -> None:
    request = head(version="1.0")
    out = dict(upstream_request_headers(context(request), DEFAULTS, BodyFraming(False, 0), None))
    assert out[b"Host"] == b"10.0.0.1"
    out = dict(upstream_request_headers(context(request), (), BodyFraming(False, 0), None))
    assert out[b"Host"] == b"127.0.0.1:8010"


def test_templates_and_variables() -> None:
    request = head((b"Host", b"h"), (b"User-Agent", b"ua"), target=b"/p?q=1")
    ctx = context(request)
    assert ctx.expand(compile_template("$scheme://$host$request_uri")) == b"http://h/p?q=1"
    assert ctx.expand(compile_template("${uri}-$args-$http_user_agent")) == b"/p-q=1-ua"


def test_valid_handshake_returns_key() -> None:
    assert handshake.wants_upgrade(ws_head())
    assert handshake.check_request(ws_head()) == KEY


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (ws_head(drop=b"sec-websocket-key"), 400),
        (ws_head((b"Sec-WebSocket-Key", KEY)), 400),
        (ws_head(drop=b"sec-websocket-version"), 400),
        (ws_head((b"Sec-WebSocket-Version", b"8"), drop=b"sec-websocket-version"), 426),
        (ws_head((b"Content-Length", b"5")), 400),
        (RequestHead(b"POST", b"/", "1.1", ws_head().headers), 400),
        (RequestHead(b"GET", b"/", "1.0", ws_head().headers), 400),
        (ws_head((b"Upgrade", b"h2c"), drop=b"upgrade"), 400),
        (ws_head((b"Sec-WebSocket-Key", b"c2hvcnQ="), drop=b"sec-websocket-key"), 400),
    ],
)
def test_invalid_handshakes(request_head: RequestHead, status: int) -> None:
    with pytest.raises(HeadError) as error:
        handshake.check_request(request_head)
    assert error.value.status == status


def switch_headers(accept: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept)]


def test_upstream_switch_needs_the_right_accept() -> None:
    good = accept_key(KEY.decode()).encode()
    assert handshake.response_is_switch(101, switch_headers(good), KEY)
    assert not handshake.response_is_switch(426, [], KEY)
    with pytest.raises(HeadError) as error:
        handshake.response_is_switch(101, switch_headers(b"wrong="), KEY)
    assert error.value.status == 502


@given(st.binary(min_size=0, max_size=40))
def test_only_16_byte_keys_pass(raw: bytes) -> None:
    request = ws_head((b"Sec-WebSocket-Key", base64.b64encode(raw)), drop=b"sec-websocket-key")
    if len(raw) == 16:
        assert handshake.check_request(request)
    else:
        with pytest.raises(HeadError):
            handshake.check_request(request)


def test_a_response_length_named_in_connection_still_frames_it() -> None:
    """Else a kept-alive client reads the next response as this one's body."""
    out = client_response_headers([(b"Connection", b"content-length, x-a"),
                                   (b"Content-Length", b"5"), (b"X-A", b"1")], True, False)
    assert out == [(b"Content-Length", b"5")]
