"""nginx's ``log_format NAME [escape=default|json|none] 'text with $variables'``.

A format is parsed once, at start, into literals and value getters, so writing a line is a
join of bytes. The variables are nginx's: the log-only ones (``$status``,
``$body_bytes_sent``, ``$request_time``, ...) come from the access-log :class:`Entry`, the
request's own (``$host``, ``$uri``, ``$http_NAME``, maps) from ``entry.variables``.

nginx's rules for a variable's value: an empty one logs as ``-`` (with ``escape=json`` and
``escape=none``, as nothing); ``escape=default`` writes ``"``, ``\\``, and bytes below 0x20
or from 0x7F up as ``\\xHH``; ``escape=json`` escapes as a JSON string does. The log-module
values that cannot hold such bytes (``$status``, ``$time_local``, ``$request_time``,
...) are written as they are, as nginx does. Pure, but for ``$pid``.
"""

from __future__ import annotations

import difflib
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from wsgate.proxy.variables import REQUEST_VARIABLES, VARIABLE
from wsgate.values import Invalid, show

Escape = Literal["default", "json", "none"]
ESCAPES: tuple[Escape, ...] = ("default", "json", "none")

COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')
"""nginx's predefined ``combined`` (written by :func:`wsgate.proxy.accesslog.combined`)."""

class RequestVariables(Protocol):
    """A request's ``$variables`` (:class:`wsgate.proxy.variables.Variables`)."""

    def variable(self, name: str) -> bytes: ...


@dataclass(slots=True)
class Entry:
    """One access-log line's facts (here, not in accesslog, so formats need no import
    back: accesslog re-exports it)."""

    remote_addr: str
    request: str
    status: int
    body_bytes_sent: int
    http_referer: str = "-"
    http_user_agent: str = "-"
    request_time: float = 0.0
    upstream_addr: str = "-"
    upstream_connect_time: float | None = None
    upstream_header_time: float | None = None
    upstream_response_time: float | None = None
    bytes_received: int = 0
    """Bytes from the client after the head (for a tunnel: client to upstream)."""
    time_local: float = 0.0
    upstream_status: str = "-"
    """The upstream's response status ("502, 200" after a retry, as nginx), "-" without."""
    header_bytes_sent: int = 0
    """Bytes of the response head: ``$bytes_sent`` is these plus ``body_bytes_sent``."""
    header_bytes_received: int = 0
    """Bytes of the request line and headers: ``$request_length`` is these plus
    ``bytes_received``."""
    connection: int = 0
    """The client connection's serial number (``$connection``)."""
    variables: RequestVariables | None = None
    """The request's ``$variables``, for a ``log_format`` using them; None logs them as "-".
    Not data: left out of :func:`wsgate.proxy.accesslog.as_json` (and must be left out of
    a handover)."""


Getter = Callable[[Entry], bytes]
"""A value of an entry: for a variable, ``b""`` when it is empty or unknown."""


# -- times, formatted once a second (nginx caches its time strings the same way) --------------

_local: list[tuple[int, str]] = [(-1, "")]
_iso: list[tuple[int, str]] = [(-1, "")]


def time_local(when: float) -> str:
    """nginx's ``$time_local``: ``02/Dec/2026:00:31:28 +0000``."""
    second = int(when)
    cached_second, text = _local[0]
    if second != cached_second:
        text = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
        _local[0] = (second, text)
    return text


def time_iso8601(when: float) -> str:
    """nginx's ``$time_iso8601``: ``2026-12-02T00:31:28+00:00`` (the offset with a colon,
    which strftime's ``%z`` lacks)."""
    second = int(when)
    cached_second, text = _iso[0]
    if second != cached_second:
        moment = time.localtime(second)
        offset = moment.tm_gmtoff
        sign = "-" if offset < 0 else "+"
        hours, minutes = divmod(abs(offset) // 60, 60)
        text = f"{time.strftime('%Y-%m-%dT%H:%M:%S', moment)}{sign}{hours:02d}:{minutes:02d}"
        _iso[0] = (second, text)
    return text


def _seconds(value: float) -> bytes:
    """nginx prints durations and $msec in seconds with milliseconds: ``0.012``."""
    return b"%.3f" % max(value, 0.0)


# -- escaping ---------------------------------------------------------------------------------

_DEFAULT_UNSAFE = re.compile(rb'["\\\x00-\x1f\x7f-\xff]')
_HEX = [b"\\x%02X" % byte for byte in range(256)]
_JSON_UNSAFE = re.compile(rb'["\\\x00-\x1f]')
_JSON = [b"\\u%04x" % byte for byte in range(256)]
for _byte, _short in ((0x22, b'\\"'), (0x5C, b"\\\\"), (0x0A, b"\\n"), (0x0D, b"\\r"),
                      (0x09, b"\\t"), (0x08, b"\\b"), (0x0C, b"\\f")):
    _JSON[_byte] = _short


def _hex(match: re.Match[bytes]) -> bytes:
    return _HEX[match[0][0]]


def _json(match: re.Match[bytes]) -> bytes:
    return _JSON[match[0][0]]


def escape_default(value: bytes) -> bytes:
    """nginx's log escaping: a line stays one printable line, whatever a client sent."""
    if not value:
        return b"-"
    if _DEFAULT_UNSAFE.search(value) is None:
        return value
    return _DEFAULT_UNSAFE.sub(_hex, value)


def escape_json(value: bytes) -> bytes:
    """nginx's ``escape=json``: the value can sit inside a JSON string (other bytes, UTF-8
    or not, pass as they are, as in nginx)."""
    if _JSON_UNSAFE.search(value) is None:
        return value
    return _JSON_UNSAFE.sub(_json, value)


def _unescaped(value: bytes) -> bytes:
    return value


_ESCAPERS: dict[Escape, Callable[[bytes], bytes]] = {
    "default": escape_default, "json": escape_json, "none": _unescaped,
}


# -- the log-only variables -------------------------------------------------------------------

def _text(value: str) -> bytes:
    """An entry's text as the bytes it came from: the connection decodes heads as latin-1."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def _unless_dash(value: str) -> bytes:
    """An entry keeps "-" for a value it has not got (no Referer, no upstream): empty here,
    so each escape mode writes absence its own way."""
    return b"" if value == "-" else _text(value)


def _time(value: float | None) -> bytes:
    return b"" if value is None else _seconds(value)


def _method(entry: Entry) -> bytes:
    method, space, _ = entry.request.partition(" ")
    return _text(method) if space else b""


LOG_OPS: dict[str, Getter] = {
    "status": lambda e: b"%03d" % e.status,
    "body_bytes_sent": lambda e: b"%d" % e.body_bytes_sent,
    "bytes_sent": lambda e: b"%d" % (e.header_bytes_sent + e.body_bytes_sent),
    "request_length": lambda e: b"%d" % (e.header_bytes_received + e.bytes_received),
    "request_time": lambda e: _seconds(e.request_time),
    "msec": lambda e: _seconds(e.time_local + e.request_time),
    "time_local": lambda e: time_local(e.time_local).encode(),
    "time_iso8601": lambda e: time_iso8601(e.time_local).encode(),
    "connection": lambda e: b"%d" % e.connection,
    "pid": lambda e: b"%d" % os.getpid(),
}
"""nginx's log-module values: never empty, never in need of escaping, written as they are.
``$time_local`` and ``$time_iso8601`` are when the request began (as the ``combined`` line
has always said), ``$msec`` when it ended, so ``$msec - $request_time`` is the start, as in
nginx."""

LOG_VARIABLES: dict[str, Getter] = {
    "remote_addr": lambda e: _text(e.remote_addr),
    "remote_user": lambda e: b"",
    "request": lambda e: _unless_dash(e.request),
    "request_method": _method,
    "http_referer": lambda e: _unless_dash(e.http_referer),
    "http_user_agent": lambda e: _unless_dash(e.http_user_agent),
    "upstream_addr": lambda e: _unless_dash(e.upstream_addr),
    "upstream_status": lambda e: _unless_dash(e.upstream_status),
    "upstream_connect_time": lambda e: _time(e.upstream_connect_time),
    "upstream_header_time": lambda e: _time(e.upstream_header_time),
    "upstream_response_time": lambda e: _time(e.upstream_response_time),
}
"""Variables the entry itself holds, so a line has them even without the request's
variables (a tunnel handed over from another worker); escaped like any variable."""

LOG_ONLY = frozenset(LOG_OPS) | frozenset(LOG_VARIABLES)
"""Every name this module answers for, whatever the request's variables are."""


def _request_variable(name: str) -> Getter:
    def get(entry: Entry) -> bytes:
        variables = entry.variables
        return b"" if variables is None else variables.variable(name)
    return get


def _escaped(getter: Getter, escape: Callable[[bytes], bytes]) -> Getter:
    if escape is _unescaped:
        return getter
    return lambda entry: escape(getter(entry))


# -- compiling --------------------------------------------------------------------------------

class LogFormat:
    """A compiled ``log_format``: :meth:`line` writes an entry as one line."""

    __slots__ = ("_pairs", "_tail", "escape", "names", "text", "uses_request_variables")

    def __init__(self, text: str, escape: Escape, names: tuple[str, ...],
                 pairs: tuple[tuple[bytes, Getter], ...], tail: bytes) -> None:
        self.text = text
        self.escape: Escape = escape
        self.names = names
        """The variables the format uses, in order."""
        self.uses_request_variables = any(name not in LOG_ONLY for name in names)
        """Whether a line needs ``entry.variables`` (else the connection can skip them)."""
        self._pairs = pairs
        self._tail = tail

    def line(self, entry: Entry) -> bytes:
        """The entry's line, newline included: ready for one ``write``."""
        out: list[bytes] = []
        append = out.append
        for literal, get in self._pairs:
            append(literal)
            append(get(entry))
        append(self._tail)
        return b"".join(out)

    def __repr__(self) -> str:
        return f"LogFormat({self.text!r}, escape={self.escape!r})"


def compile_format(text: str, known: Callable[[str], bool], escape: Escape = "default", *,
                   hints: Iterable[str] = ()) -> LogFormat:
    """Parse ``text`` once. ``known(name)`` says whether a request variable exists (the
    caller knows the maps); ``hints`` are more names to suggest for a misspelt one."""
    if escape not in ESCAPES:
        raise Invalid(f"escape must be default, json or none, got {show(escape)}")
    escaper = _ESCAPERS[escape]
    pairs: list[tuple[bytes, Getter]] = []
    names: list[str] = []
    literal: list[str] = []
    position = 0
    while (dollar := text.find("$", position)) >= 0:
        literal.append(text[position:dollar])
        match = VARIABLE.match(text, dollar)
        if match is None:
            if text.startswith("${", dollar) and re.match(r"\$\{\w+", text[dollar:]):
                raise Invalid(f'the closing "}}" of a "${{name}}" is missing in {show(text)}')
            raise Invalid(f'a "$" must start a variable like $status, got {show(text)}')
        name = match[1] or match[2]
        getter = _getter(name, known, escaper, hints)
        pairs.append(("".join(literal).encode(), getter))
        names.append(name)
        literal = []
        position = match.end()
    literal.append(text[position:])
    literal.append("\n")
    return LogFormat(text, escape, tuple(names), tuple(pairs), "".join(literal).encode())


def _getter(name: str, known: Callable[[str], bool], escaper: Callable[[bytes], bytes],
            hints: Iterable[str]) -> Getter:
    if name in LOG_OPS:
        return LOG_OPS[name]
    if name in LOG_VARIABLES:
        return _escaped(LOG_VARIABLES[name], escaper)
    if known(name):
        return _escaped(_request_variable(name), escaper)
    choices = sorted({*LOG_ONLY, *(n for n in REQUEST_VARIABLES if known(n)), *hints})
    # difflib as directives.closest does: importing directives here could close a cycle
    # when the configuration's checks compile the formats.
    guesses = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    guess = guesses[0] if guesses else None
    hint = f" (did you mean ${guess}?)" if guess else ""
    raise Invalid(f"unknown variable ${name}{hint}")
