"""``log_format``: nginx's own example formats, nginx's escaping (default, json, none), "-"
for an empty value, the errors a misspelt variable gets, and ``combined`` unchanged."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from wsgate.proxy.accesslog import AccessLog, Entry, as_json, combined
from wsgate.proxy.directives import AccessLogConfig
from wsgate.proxy.logformat import (
    COMBINED,
    Escape,
    LogFormat,
    compile_format,
    time_iso8601,
    time_local,
)
from wsgate.proxy.variables import is_request_variable
from wsgate.values import Invalid

MAIN = ('$remote_addr - $remote_user [$time_local] "$request" '
        '$status $body_bytes_sent "$http_referer" '
        '"$http_user_agent" "$http_x_forwarded_for"')
"""The ``main`` format of nginx's default nginx.conf."""

WHEN = 1_796_000_000.25
"""A moment of 2026 (the times' caches are per second, so each test's moment is its own)."""


class FakeVariables:
    """A request's variables, as the connection gives them."""

    def __init__(self, values: Mapping[str, bytes]) -> None:
        self.values = dict(values)
        self.asked: list[str] = []

    def variable(self, name: str) -> bytes:
        self.asked.append(name)
        return self.values.get(name, b"")


def known(name: str) -> bool:
    return is_request_variable(name) or name == "connection_upgrade"


def entry(**changes: Any) -> Entry:
    fields: dict[str, Any] = {
        "remote_addr": "192.0.2.7", "request": "GET /chat?room=1 HTTP/1.1", "status": 200,
        "body_bytes_sent": 612, "http_referer": "https://example.com/",
        "http_user_agent": "curl/8.5.0", "request_time": 0.0123, "upstream_addr": "10.0.0.2:80",
        "upstream_connect_time": 0.001, "upstream_header_time": 0.0109,
        "upstream_response_time": 0.0121, "time_local": WHEN,
    }
    fields.update(changes)
    return Entry(**fields)


def line(text: str, item: Entry, escape: Escape = "default") -> str:
    compiled = compile_format(text, known, escape)
    out = compiled.line(item)
    assert out.endswith(b"\n") and out.count(b"\n") == 1 + text.count("\n")
    return out[:-1].decode("latin-1")


def config(destination: str, path: Path | None, name: str) -> AccessLogConfig:
    """An access_log naming any format (the config's checks allow only the defined ones)."""
    fields: Any = (destination, path, name)
    return AccessLogConfig(*fields)


@pytest.fixture
def zone() -> Iterator[Callable[[str], None]]:
    """Set the local time zone (POSIX syntax: no tz database needed), and put it back."""
    before = os.environ.get("TZ")

    def use(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield use
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


# -- nginx's formats ------------------------------------------------------------------------------

def test_nginx_main_format() -> None:
    item = entry(variables=FakeVariables({"http_x_forwarded_for": b"203.0.113.9, 10.1.1.1"}))
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(int(WHEN)))
    assert line(MAIN, item) == (
        f'192.0.2.7 - - [{stamp}] "GET /chat?room=1 HTTP/1.1" 200 612 '
        '"https://example.com/" "curl/8.5.0" "203.0.113.9, 10.1.1.1"')


def test_main_without_the_request_variables_logs_them_as_dashes() -> None:
    """A tunnel handed over from another worker has no request variables: "-", as nginx logs
    a variable it has not got."""
    item = entry(http_referer="-", http_user_agent="-", variables=None)
    assert line(MAIN, item).endswith('612 "-" "-" "-"')


def test_compiled_combined_is_the_combined_function_for_plain_text() -> None:
    for item in (entry(), entry(http_referer="-", status=101, request="-"),
                 entry(request='GET /"q"\\ HTTP/1.1', http_user_agent="a\tb\x7f")):
        assert line(COMBINED, item) == combined(item)


def test_upstream_and_timing_variables() -> None:
    text = ("$request_time $upstream_connect_time $upstream_header_time "
            "$upstream_response_time $upstream_addr $upstream_status $msec")
    item = entry(upstream_status="101")
    assert line(text, item) == "0.012 0.001 0.011 0.012 10.0.0.2:80 101 1796000000.262"
    idle = entry(upstream_addr="-", upstream_connect_time=None, upstream_header_time=None,
                 upstream_response_time=None, request_time=0.0)
    assert line(text, idle) == "0.000 - - - - - 1796000000.250"


def test_counters_and_the_request_line() -> None:
    item = entry(header_bytes_sent=180, header_bytes_received=75, bytes_received=20,
                 connection=42)
    text = ("$status $body_bytes_sent $bytes_sent $request_length $connection $pid "
            "$request_method $remote_user")
    assert line(text, item) == f"200 612 792 95 42 {os.getpid()} GET -"
    assert line("$status $request $request_method", entry(status=0, request="-")) == "000 - -"


def test_times_as_nginx_prints_them(zone: Callable[[str], None]) -> None:
    moment = 1_796_171_488.5  # 2026-12-02T00:31:28.5Z
    zone("UTC0")
    assert line("$time_iso8601 [$time_local] $msec", entry(time_local=moment)) == (
        "2026-12-02T00:31:28+00:00 [02/Dec/2026:00:31:28 +0000] 1796171488.512")
    zone("IST-5:30")
    later = moment + 1  # the times are cached by the second
    assert time_iso8601(later) == "2026-12-02T06:01:29+05:30"
    assert time_local(later) == "02/Dec/2026:06:01:29 +0530"
    zone("XST+3:15")
    assert time_iso8601(later + 1) == "2026-12-01T21:16:30-03:15"


def test_braces_separate_a_name_from_the_text_after_it() -> None:
    assert line("${status}xx${body_bytes_sent}B", entry()) == "200xx612B"


def test_request_variables_come_from_the_entry_variables() -> None:
    variables = FakeVariables({"host": b"example.com", "connection_upgrade": b"upgrade",
                               "request_uri": b"/chat?room=1"})
    item = entry(variables=variables)
    assert line("$host $request_uri $connection_upgrade $args", item) == (
        "example.com /chat?room=1 upgrade -")
    assert variables.asked == ["host", "request_uri", "connection_upgrade", "args"]


def test_a_format_says_whether_it_needs_request_variables() -> None:
    assert not compile_format(COMBINED, known).uses_request_variables
    main = compile_format(MAIN, known)
    assert main.uses_request_variables
    assert main.names[-1] == "http_x_forwarded_for"


# -- escaping -------------------------------------------------------------------------------------

def test_default_escape_is_nginx_s() -> None:
    """``"``, ``\\``, control bytes and bytes from 0x7F up become \\xHH (the entry's text is
    the request's bytes decoded as latin-1); the format's own text is left alone."""
    item = entry(request='GET /a"b\\c\x01\x7f\xe9 HTTP/1.1', http_user_agent="tab\there",
                 variables=FakeVariables({"http_x_custom": b"caf\xc3\xa9\r\n"}))
    text = '"$request" "$http_user_agent" $http_x_custom "é"'
    assert line(text, item).encode("latin-1") == (
        b'"GET /a\\x22b\\x5Cc\\x01\\x7F\\xE9 HTTP/1.1" "tab\\x09here" caf\\xC3\\xA9\\x0D\\x0A '
        b'"\xc3\xa9"')


def test_json_escape() -> None:
    text = ('{"time":"$time_iso8601","request":"$request","status":$status,'
            '"referer":"$http_referer","agent":"$http_user_agent","fwd":"$http_x_forwarded_for",'
            '"upstream_time":"$upstream_response_time"}')
    item = entry(request='GET /"q"\\\x00 HTTP/1.1', http_referer="-",
                 http_user_agent="line\nbreak\t\x1f\x7f", upstream_response_time=None,
                 variables=FakeVariables({"http_x_forwarded_for": "ü".encode()}))
    out = compile_format(text, known, "json").line(item)
    assert b'"request":"GET /\\"q\\"\\\\\\u0000 HTTP/1.1"' in out
    assert b'"agent":"line\\nbreak\\t\\u001f\x7f"' in out
    fields = json.loads(out)
    assert fields == {
        "time": time_iso8601(WHEN), "request": 'GET /"q"\\\x00 HTTP/1.1', "status": 200,
        "referer": "", "agent": "line\nbreak\t\x1f\x7f", "fwd": "ü", "upstream_time": "",
    }


def test_no_escape() -> None:
    """``escape=none``: values as they are, and nothing at all for an empty one."""
    item = entry(request='GET /"x" HTTP/1.1', http_referer="-")
    assert line('"$request" [$http_referer] [$remote_user]', item, "none") == (
        '"GET /"x" HTTP/1.1" [] []')


def test_an_unknown_escape_is_refused() -> None:
    with pytest.raises(Invalid, match='escape must be default, json or none, got "html"'):
        compile_format("$status", known, cast(Escape, "html"))


# -- mistakes -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("$stauts", r"unknown variable \$stauts \(did you mean \$status\?\)"),
    ("$request_tim", r"unknown variable \$request_tim \(did you mean \$request_time\?\)"),
    ('"$http_user_agent" $remote_adr', r"unknown variable \$remote_adr "
                                       r"\(did you mean \$remote_addr\?\)"),
    ("$connection_upgrad", r"did you mean \$connection_upgrade\?"),
    ("$zzzzz", r"^unknown variable \$zzzzz$"),
    ("100$", r'a "\$" must start a variable like \$status, got "100\$"'),
    ("$ status", r'a "\$" must start a variable'),
    ("${}", r'a "\$" must start a variable'),
    ("${status", r'the closing "\}" of a "\$\{name\}" is missing in "\$\{status"'),
])
def test_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        compile_format(text, known, hints=["connection_upgrade"])


def test_unknown_means_what_the_caller_says() -> None:
    """The caller knows the maps: a name it does not know is refused even if it looks like
    a request variable; a log-only name needs no one's say-so."""
    with pytest.raises(Invalid, match=r"unknown variable \$host"):
        compile_format("$host", lambda name: False)
    assert compile_format("$status $remote_addr", lambda name: False).names == (
        "status", "remote_addr")


# -- combined, unchanged --------------------------------------------------------------------------

def _old_quote(text: str) -> str:
    """The character-by-character escaping combined had before (its output is the spec)."""
    return "".join(
        f"\\x{ord(c):02X}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )


def test_combined_is_unchanged() -> None:
    item = entry(request='GET /a"b\\ HTTP/1.1', http_user_agent="Mozilla/5.0 (\x1b[31m)",
                 http_referer="-")
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(int(WHEN)))
    assert combined(item) == (
        f'192.0.2.7 - - [{stamp}] "GET /a\\x22b\\x5C HTTP/1.1" 200 612 "-" '
        '"Mozilla/5.0 (\\x1B[31m)"')
    every = "".join(chr(code) for code in range(0x200))
    quoted = combined(entry(request=every, http_referer=every, http_user_agent=every))
    assert quoted.count(_old_quote(every)) == 3


def test_json_lines_leave_the_request_variables_out() -> None:
    fields = json.loads(as_json(entry(variables=FakeVariables({}), upstream_status="200")))
    assert "variables" not in fields
    assert fields["upstream_status"] == "200" and fields["request_time"] == 0.012


# -- the access log -------------------------------------------------------------------------------

def test_the_access_log_writes_a_named_format(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    formats = {"main": compile_format(MAIN, known), "short": compile_format("$status", known)}
    log = AccessLog.open(config("file", path, "main"), formats)
    log.write(entry())
    log.write(entry(status=404))
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith('404 612 "https://example.com/" "curl/8.5.0" "-"')


def test_the_access_log_keeps_its_builtin_formats(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    for name in ("combined", "json"):
        log = AccessLog.open(config("file", path, name))
        log.write(entry())
        log.close()
    first, second = path.read_text().splitlines()
    assert first == combined(entry())
    assert json.loads(second)["status"] == 200
    with pytest.raises(ValueError, match="unknown log_format 'main'"):
        AccessLog.open(config("off", None, "main"))


def test_a_format_is_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []

    def write(fd: int, data: bytes) -> int:
        writes.append(data)
        return len(data)

    monkeypatch.setattr(os, "write", write)
    log = AccessLog(1, line=compile_format(MAIN, known).line)
    log.write(entry())
    assert len(writes) == 1 and writes[0].endswith(b'"-"\n')


def test_log_format_repr() -> None:
    assert repr(compile_format("$status", known, "json")) == (
        "LogFormat('$status', escape='json')")
    assert isinstance(compile_format("", known), LogFormat)
    assert compile_format("", known).line(entry()) == b"\n"
