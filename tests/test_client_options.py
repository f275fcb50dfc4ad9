"""The pure parts of the client: URLs, headers, slash commands, waits, how messages show."""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidProxyStatus, InvalidStatus
from websockets.http11 import Response

from wsgate.client.failures import closed_abnormally, describe
from wsgate.client.options import (
    CloseCommand,
    Ping,
    Pong,
    SlashError,
    backoff,
    basic_auth,
    control_notice,
    format_close,
    normalize_proxy,
    normalize_url,
    parse_header,
    parse_slash,
    parse_wait,
    pipe_bytes,
    pretty_json,
    redirect_target,
    same_origin,
    terminal_text,
)
from wsgate.client.session import Ending
from wsgate.errors import UsageError
from wsgate.values import Invalid


@pytest.mark.parametrize(
    ("typed", "url"),
    [
        ("127.0.0.1:8010", "ws://127.0.0.1:8010"),
        ("localhost:8080", "ws://localhost:8080"),
        ("example.com/chat?x=1", "ws://example.com/chat?x=1"),
        ("ws://example.com", "ws://example.com"),
        ("WSS://example.com:443/a", "wss://example.com:443/a"),
        ("  ws://[::1]:9000/  ", "ws://[::1]:9000/"),
        ("ws://user:pass@host/", "ws://user:pass@host/"),
    ],
)
def test_urls_get_ws_when_they_have_no_scheme(typed: str, url: str) -> None:
    assert normalize_url(typed) == url


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("http://example.com", "bad URL scheme http://"),
        ("https://example.com", "bad URL scheme https://"),
        ("ftp://example.com", "bad URL scheme ftp://"),
        ("", "the URL is empty"),
        ("ws://", "hostname isn't provided"),
        ("ws://host:99999", "bad port"),
        ("ws://host:0", "bad port"),
        ("ws://host:abc", "bad port"),
        ("ws://host/#frag", "fragment"),
        ("ws://user@host/", "username provided without password"),
    ],
)
def test_bad_urls_are_usage_errors(typed: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        normalize_url(typed)


def test_headers_split_at_the_first_colon() -> None:
    assert parse_header("X-Test: a:b ") == ("X-Test", "a:b")
    assert parse_header("Empty:") == ("Empty", "")


@pytest.mark.parametrize("text", ["NoColon", ": value", "Bad Name: x", "X:\r\nInjected: 1"])
def test_bad_headers_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="bad header"):
        parse_header(text)


def test_auth_is_basic_and_needs_a_colon() -> None:
    assert basic_auth("user:pass") == "Basic dXNlcjpwYXNz"
    assert basic_auth("user:") == "Basic dXNlcjo="
    with pytest.raises(UsageError, match="USER:PASSWORD"):
        basic_auth("user")


def test_proxy_defaults_to_http() -> None:
    assert normalize_proxy("127.0.0.1:3128") == "http://127.0.0.1:3128"
    assert normalize_proxy("https://proxy:8443") == "https://proxy:8443"
    with pytest.raises(UsageError, match="only http"):
        normalize_proxy("socks5://proxy:1080")
    with pytest.raises(UsageError, match="bad --proxy"):
        normalize_proxy("http://proxy:1/path")


def test_wait_is_a_duration_or_minus_one_for_forever() -> None:
    assert parse_wait("0") == 0
    assert parse_wait("1.5") == 1.5
    assert parse_wait("500ms") == 0.5
    assert parse_wait("1m30s") == 90
    assert parse_wait("-1") == math.inf
    for bad in ("abc", "-2", "nan", "inf", "", "1x"):
        with pytest.raises(Invalid, match="or -1 to hold the connection open, got"):
            parse_wait(bad)


def test_slash_commands() -> None:
    assert parse_slash("hello") is None
    assert parse_slash("/ping") == Ping(b"")
    assert parse_slash("/ping some data") == Ping(b"some data")
    assert parse_slash("/pong x") == Pong(b"x")
    assert parse_slash("/close") == CloseCommand(1000, "")
    assert parse_slash("/close 4000") == CloseCommand(4000, "")
    assert parse_slash("/close 1001   going   away") == CloseCommand(1001, "going away")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/", "Unrecognized slash command."),
        ("/nope", "Unrecognized slash command."),
        ("/close abc", "bad close code 'abc'"),
        ("/close 1005", "bad close code 1005"),
        ("/close 999", "bad close code 999"),
        ("/close 1000 " + "r" * 124, "too long"),
        ("/ping " + "p" * 126, "too long"),
    ],
)
def test_bad_slash_commands_say_why(line: str, message: str) -> None:
    with pytest.raises(SlashError, match=message):
        parse_slash(line)


def test_redirect_targets() -> None:
    assert redirect_target("ws://a/x", "/y") == "ws://a/y"
    assert redirect_target("ws://a/x", "ws://b:1/z") == "ws://b:1/z"
    assert redirect_target("ws://a/x", "http://b/z") == "ws://b/z"
    assert redirect_target("wss://a/x", "https://b/z") == "wss://b/z"
    with pytest.raises(ValueError, match="wss:// to ws://b/"):
        redirect_target("wss://a/", "ws://b/")
    with pytest.raises(ValueError, match="cannot follow"):
        redirect_target("ws://a/", "ftp://b/")
    assert same_origin("ws://a:80/x", "ws://a/y")
    assert not same_origin("ws://a/x", "ws://b/x")


def test_lines_shown() -> None:
    assert format_close(1000, "") == 'Disconnected (code: 1000, reason: "")'
    assert control_notice("ping", b"hi") == 'Received ping (data: "hi")'
    assert closed_abnormally(1006, "") == "connection closed abnormally with code 1006"
    assert closed_abnormally(1011, "boom") == (
        'connection closed abnormally with code 1011 (reason: "boom")'
    )


def test_json_is_pretty_only_for_objects_and_arrays() -> None:
    assert pretty_json('{"a":1,"b":[1,2]}') == '{\n  "a": 1,\n  "b": [\n    1,\n    2\n  ]\n}'
    assert pretty_json('{"é":"ü"}') == '{\n  "é": "ü"\n}'
    for text in ("plain", "1.0e5", '"quoted"', "{broken", ""):
        assert pretty_json(text) == text


def test_binary_shows_as_hex_on_a_terminal_and_raw_in_a_pipe() -> None:
    assert terminal_text(b"hi", json_pretty=False) == "[binary, 2 bytes] 68 69"
    assert terminal_text(b"", json_pretty=False) == "[binary, 0 bytes]"
    assert pipe_bytes(b"\xff\x00", json_pretty=False) == b"\xff\x00\n"
    assert pipe_bytes("héllo", json_pretty=False) == "héllo\n".encode()
    assert pipe_bytes('{"a":1}', json_pretty=True) == b'{\n  "a": 1\n}\n'


def test_a_terminal_sees_control_characters_escaped() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J hi"
    assert terminal_text(hostile, json_pretty=False) == "\\x1b]0;pwned\\x07\\x1b[2J hi"
    assert terminal_text("two\nlines\r", json_pretty=True) == "two\\nlines\\r"
    # Pretty JSON keeps its layout; JSON itself escapes C0 in strings, not DEL or C1.
    assert terminal_text('{"a":"\x7f\x9b"}', json_pretty=True) == '{\n  "a": "\\x7f\\x9b"\n}'
    assert terminal_text('["\\u001b"]', json_pretty=True) == '[\n  "\\u001b"\n]'
    # A pipe gets the bytes as they came.
    assert pipe_bytes(hostile, json_pretty=False) == hostile.encode() + b"\n"


def test_backoff_doubles_up_to_thirty_seconds() -> None:
    delays = list(itertools.islice(backoff(), 9))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_endings() -> None:
    assert Ending(1000, "", by_us=False).ok
    assert Ending(1001, "", by_us=False).ok
    assert Ending(1005, "", by_us=False).ok
    assert not Ending(1006, "", by_us=False).ok
    assert not Ending(1011, "", by_us=False).ok
    assert Ending(4000, "", by_us=True).ok
    assert not Ending(1006, "", by_us=True).ok


def _response(status: int, reason: str) -> Response:
    return Response(status, reason, Headers())


def test_failures_pick_the_telling_cause() -> None:
    def where(error: BaseException) -> str:
        return describe(error, "127.0.0.1:8010", "127.0.0.1")

    assert where(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == (
        "connection refused: 127.0.0.1:8010"
    )
    assert where(OSError("Multiple exceptions: [Errno 111] Connect call failed")) == (
        "connection refused: 127.0.0.1:8010"
    )
    assert where(InvalidStatus(_response(502, "Bad Gateway"))) == (
        "server rejected the WebSocket handshake: HTTP 502 Bad Gateway"
    )
    assert where(InvalidProxyStatus(_response(407, "Proxy Authentication Required"))) == (
        "proxy rejected the CONNECT request: HTTP 407 Proxy Authentication Required"
    )
    assert where(TimeoutError("timed out during opening handshake")) == (
        "timed out connecting to 127.0.0.1:8010"
    )
    assert describe(socket.gaierror(-2, "Name or service not known"), "x:1", "x") == (
        "DNS lookup failed for x: Name or service not known"
    )
    wrapped = InvalidMessage("did not receive a valid HTTP response")
    wrapped.__cause__ = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]")
    wrapped.__cause__.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert where(wrapped) == "TLS error: TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert where(InvalidMessage("did not receive a valid HTTP response")) == (
        "WebSocket handshake with 127.0.0.1:8010 failed: did not receive a valid HTTP response"
    )


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_slash_parsing_never_crashes(line: str) -> None:
    with contextlib.suppress(SlashError):
        parse_slash(line)


@given(st.text(max_size=60))
def test_url_normalising_fails_only_with_usage_errors(text: str) -> None:
    try:
        url = normalize_url(text)
    except UsageError:
        return
    assert url.startswith(("ws://", "wss://"))
