"""Configuration for ``wsgate proxy``: a TOML file or a few flags, checked into frozen dataclasses.

Every rule about what a configuration may say lives here, so the modules that move bytes never
second-guess a value and ``wsgate proxy --check`` finds every mistake the server would. Each
mistake is a :class:`~wsgate.errors.UsageError` of one line naming the file (or the flag), the
key and what is wrong. Keys read like the nginx directives they replace, so an nginx config
translates line by line (see ``examples/seed.toml``). Pure: reading the file and checking that
the TLS files are readable is all the I/O there is; no socket is opened.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NoReturn, TypeVar

from wsgate.errors import UsageError
from wsgate.proxy.headers import VARIABLE, VARIABLES
from wsgate.proxy.upstreams import ServerConfig

__all__ = [
    "DEFAULT_SET_HEADERS",
    "AccessLogConfig",
    "Listener",
    "Location",
    "ProxyConfig",
    "TLSFiles",
    "UpstreamConfig",
    "describe",
    "from_flags",
    "load",
]

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Balance = Literal["round_robin", "least_conn", "ip_hash", "hash"]
LogFormat = Literal["combined", "json"]
LogDestination = Literal["stdout", "stderr", "file", "off"]

#: What nginx's ``proxy_set_header`` lines in the seed send, plus X-Forwarded-Proto.
DEFAULT_SET_HEADERS: tuple[tuple[str, str], ...] = (
    ("Host", "$host"),
    ("X-Real-IP", "$remote_addr"),
    ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
    ("X-Forwarded-Proto", "$proxy_x_forwarded_proto"),
)


@dataclass(frozen=True, slots=True)
class Listener:
    """One ``listen`` address. A bare port means all IPv4 interfaces, ``0.0.0.0``, as in nginx."""

    host: str
    port: int
    ssl: bool = False

    @property
    def address(self) -> str:
        """``host:port`` as a user writes it, with brackets around an IPv6 host."""
        return _join_address(self.host, self.port)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """The certificate chain and private key a ``listen ... ssl`` address serves (PEM files)."""

    certificate: Path
    key: Path


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    """Where the access log goes: ``path`` is set (absolute) iff ``destination`` is "file"."""

    destination: LogDestination = "stdout"
    path: Path | None = None
    format: LogFormat = "combined"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """An nginx ``upstream`` block: a named group of servers and how to spread clients over it."""

    name: str
    servers: tuple[ServerConfig, ...]
    balance: Balance = "round_robin"
    hash_key: str | None = None
    consistent: bool = False
    keepalive: int = 32


@dataclass(frozen=True, slots=True)
class Location:
    """An nginx prefix ``location``: requests whose path starts with ``prefix`` go upstream.

    ``None`` for ``next_upstream_tries`` and ``next_upstream_timeout`` means unlimited (nginx's
    0). ``set_headers`` are the headers sent upstream, defaults merged with the config's
    ``proxy_set_header``; values are templates with ``$variables``.
    """

    prefix: str
    upstream: str
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    connect_timeout: float = 60.0
    next_upstream_tries: int | None = None
    next_upstream_timeout: float | None = None
    set_headers: tuple[tuple[str, str], ...] = DEFAULT_SET_HEADERS


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Everything ``wsgate proxy`` needs to run, already checked; times are in seconds.

    ``locations`` are sorted longest prefix first, so the first that matches is nginx's
    choice. ``client_max_body_size`` is ``None`` for unlimited. ``source`` is the config
    file as the user named it, or "command line".
    """

    listeners: tuple[Listener, ...]
    upstreams: Mapping[str, UpstreamConfig]
    locations: tuple[Location, ...]
    workers: int = 1
    tls: TLSFiles | None = None
    trusted_proxies: tuple[Network, ...] = ()
    client_header_timeout: float = 10.0
    client_max_body_size: int | None = 1 << 20
    max_request_line: int = 8 << 10
    max_header_line: int = 8 << 10
    max_header_total: int = 4 * (8 << 10)
    keepalive_timeout: float = 75.0
    shutdown_timeout: float = 10.0
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    source: str = "command line"

    def trusts(self, address: str) -> bool:
        """Whether X-Forwarded-* headers from a peer at ``address`` may be believed."""
        if not self.trusted_proxies:
            return False  # the usual case, and asked once per connection
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted_proxies)


# ---------------------------------------------------------------------------------------------
# The schema: which keys each table knows, and hints for keys an nginx user may reach for.

_TOP_KEYS = (
    "listen", "worker_processes", "ssl_certificate", "ssl_certificate_key", "trusted_proxies",
    "client_header_timeout", "client_max_body_size", "large_client_header_buffers",
    "keepalive_timeout", "worker_shutdown_timeout", "access_log", "upstream", "location",
)
_LOCATION_KEYS = (
    "proxy_pass", "proxy_read_timeout", "proxy_send_timeout", "proxy_connect_timeout",
    "proxy_next_upstream_tries", "proxy_next_upstream_timeout", "proxy_set_header",
)
_UPSTREAM_KEYS = ("balance", "hash", "consistent", "keepalive", "server")
_SERVER_KEYS = (
    "address", "weight", "max_fails", "fail_timeout", "backup", "down", "max_conns",
)
_ACCESS_LOG_KEYS = ("path", "format")

_HOME = {
    "top": (_TOP_KEYS, "belongs at the top of the file, before any [table]"),
    "location": (_LOCATION_KEYS, 'belongs in a [location."/..."] table'),
    "upstream": (_UPSTREAM_KEYS, "belongs in an [upstream.NAME] table"),
}

_NGINX_HINTS = {
    "proxy_http_version": "not needed: wsgate always speaks HTTP/1.1 to upstreams",
    "server_name": "not needed: wsgate serves the same locations whatever the Host",
    "map": "not needed: wsgate sets the Upgrade and Connection headers itself",
    "ip_hash": 'write balance = "ip_hash" in the [upstream.NAME] table',
    "least_conn": 'write balance = "least_conn" in the [upstream.NAME] table',
    "set_real_ip_from": "write trusted_proxies = [...] at the top of the file",
    "real_ip_header": "not needed: X-Forwarded-For from trusted_proxies is used",
}

_BALANCES: dict[str, Balance] = {
    "round_robin": "round_robin", "least_conn": "least_conn", "ip_hash": "ip_hash",
    "hash": "hash",
}
_LOG_FORMATS: dict[str, LogFormat] = {"combined": "combined", "json": "json"}
_LOG_STREAMS: dict[str, LogDestination] = {"stdout": "stdout", "stderr": "stderr", "off": "off"}

#: Variables a header value or hash key may use (``$http_NAME`` aside).
_VARIABLES = tuple(sorted(VARIABLES))
#: Headers the proxy must own: hop-by-hop, framing, and the WebSocket handshake's.
_RESERVED_HEADERS = frozenset({
    "connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding",
    "content-length", "te", "trailer",
})

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)\s*")
_SIZE = re.compile(r"(\d+)([kKmMgG]?)")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

_DURATION_TEXT = 'a duration like "60s", "5m" or "500ms"'
_SIZE_TEXT = 'a size like "8k", "1m" or "1g"'


# ---------------------------------------------------------------------------------------------
# Errors: a parser says what is wrong, the caller says where.


class _Invalid(Exception):
    """A value is wrong: ``where`` (a key path or a flag) is filled in by the nearest caller."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


def _fail(message: str) -> NoReturn:
    raise _Invalid(message)


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Blame ``where`` for a mistake found inside, unless a deeper key already took the blame."""
    try:
        yield
    except _Invalid as error:
        if error.where is None:
            error.where = where
        raise


def _show(value: object) -> str:
    """A value as it looks in TOML, for "got ..." in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _must(label: str, expected: str, value: object) -> NoReturn:
    subject = f"{label} must" if label else "must"
    _fail(f"{subject} be {expected}, got {_show(value)}")


def _key(path: Sequence[str | int]) -> str:
    """A key path as TOML spells it: ``location."/".proxy_pass``, ``server[1]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
        text += f".{name}" if text else name
    return text


def _closest(word: str, choices: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _unknown_key(name: str, known: Sequence[str], table: str) -> str:
    if name in _NGINX_HINTS:
        return f"unknown key: {_NGINX_HINTS[name]}"
    for home, (keys, where) in _HOME.items():
        if home != table and name in keys:
            return f"unknown key here: it {where}"
    guess = _closest(name, known)
    if guess is not None:
        return f"unknown key (did you mean {guess}?)"
    return f"unknown key (known: {', '.join(known)})"


class _Table:
    """A TOML table being read: an unknown key is an error before any value is looked at."""

    def __init__(self, data: object, path: tuple[str | int, ...], known: Sequence[str],
                 kind: str) -> None:
        if not isinstance(data, dict):
            raise _Invalid(f"must be a table, got {_show(data)}", _key(path))
        for name in data:
            if name not in known:
                raise _Invalid(_unknown_key(name, known, kind), _key((*path, name)))
        self.data: dict[str, object] = data
        self.path = path

    def where(self, key: str) -> str:
        return _key((*self.path, key))

    def has(self, key: str) -> bool:
        return key in self.data

    def read(self, key: str, parse: Callable[[object], T], default: T) -> T:
        """``parse`` the value of ``key``, blaming the key for a mistake; ``default`` if unset."""
        if key not in self.data:
            return default
        with _at(self.where(key)):
            return parse(self.data[key])


# ---------------------------------------------------------------------------------------------
# Values: each parser takes what TOML (or a flag) gave and returns it checked, or fails.


def _duration(value: object, *, zero: bool = False, label: str = "") -> float:
    """Seconds from nginx time syntax ("300s", "5m", "1m30s", "500ms", "10") or a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _must(label, _DURATION_TEXT, value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(rf"(?:{_TIME_PART.pattern})+", text):
            seconds = sum(float(n) * _TIME_UNITS[unit] for n, unit in _TIME_PART.findall(text))
        else:
            _must(label, _DURATION_TEXT, value)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        _must(label, _DURATION_TEXT, value)
    if seconds == 0 and not zero:
        _must(label, "more than 0", value)
    return seconds


def _positive_duration(value: object) -> float:
    return _duration(value)


def _optional_duration(value: object) -> float:
    return _duration(value, zero=True)


def _size(value: object, *, zero: bool = False) -> int:
    """Bytes from nginx size syntax ("8k", "1m", "1g") or a plain integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = int(match[1]) * _SIZE_UNITS[match[2].lower()]
    else:
        _must("", _SIZE_TEXT, value)
    if size < 0:
        _must("", _SIZE_TEXT, value)
    if size == 0 and not zero:
        _must("", "more than 0", value)
    return size


def _integer(value: object, *, minimum: int, label: str = "") -> int:
    """An integer at least ``minimum`` (0 or 1). A string of digits counts too: nginx writes
    every value as text, and a server line's parameters are text."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    _must(label, "a positive integer" if minimum >= 1 else "a non-negative integer", value)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        _must("", "true or false", value)
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        _must("", "a non-empty string", value)
    return value.strip()


def _choice(value: object, choices: Mapping[str, T]) -> T:
    """One of ``choices``' keys; a near miss ("least-conn") gets a suggestion."""
    if isinstance(value, str) and value in choices:
        return choices[value]
    names = ", ".join(json.dumps(name) for name in choices)
    guess = _closest(value, list(choices)) if isinstance(value, str) else None
    hint = f" (did you mean {json.dumps(guess)}?)" if guess else ""
    _fail(f"must be one of {names}, got {_show(value)}{hint}")


def _strings(value: object) -> list[tuple[int | None, object]]:
    """The items of a key that takes one value or an array, each with its array index."""
    if isinstance(value, list):
        return list(enumerate(value))
    return [(None, value)]


def _workers(value: object) -> int:
    """nginx ``worker_processes``: "auto" is one per CPU."""
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, str) and not value.isdigit():
        _must("", '"auto" or a positive integer', value)
    try:
        return _integer(value, minimum=1)
    except _Invalid:
        _must("", '"auto" or a positive integer', value)


def _join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_address(text: str) -> tuple[str, str | None]:
    """``host`` and ``port`` (None if missing) from ``host:port`` or ``[v6]:port``."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            _fail(f'missing "]" after the IPv6 address in {_show(text)}')
        host, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            _fail(f"{_show(host)} is not an IPv6 address")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            _fail(f'expected ":PORT" after "]", got {_show(rest)}')
        return host, rest[1:]
    if text.count(":") > 1:
        _fail('an IPv6 address needs brackets, e.g. "[::1]:8010"')
    host, colon, port = text.partition(":")
    return host, (port if colon else None)


def _check_host(host: str) -> str:
    if ":" in host:
        return host
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            _fail(f"{_show(host)} is not an IPv4 address")
        return host
    if not _HOST_NAME.fullmatch(host):
        _fail(f"{_show(host)} is not a valid host name")
    return host


def _port(text: str, *, zero: bool) -> int:
    low = 0 if zero else 1
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= 65535:
        _fail(f"port must be a number from {low} to 65535, got {_show(text)}")
    return int(text)


def _host_port(text: str) -> tuple[str, int]:
    """An upstream server's address: a host (name, IPv4 or [IPv6]) and a port, both required."""
    host, port = _split_address(text)
    if not host:
        _fail("missing host")
    if port is None:
        _fail("missing port")
    return _check_host(host), _port(port, zero=False)


def _listener(value: object) -> Listener:
    """nginx ``listen``: ``ADDR:PORT``, ``:PORT``, ``*:PORT`` or ``PORT``, then maybe ``ssl``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        _must("", 'an address like "127.0.0.1:8080", ":8080" or "0.0.0.0:443 ssl"', value)
    words = value.split()
    if not words:
        _fail('empty address (write e.g. "127.0.0.1:8080")')
    ssl = False
    for word in words[1:]:
        if word != "ssl":
            _fail(f'unknown parameter {_show(word)} (only "ssl" is known)')
        if ssl:
            _fail('"ssl" is given twice')
        ssl = True
    address = words[0]
    if address.isascii() and address.isdigit():
        host, port = "", address
    else:
        host, maybe_port = _split_address(address)
        if maybe_port is None:
            _fail(f'missing port (write e.g. "{address}:8080")')
        port = maybe_port
    host = "0.0.0.0" if host in ("", "*") else _check_host(host)
    return Listener(host, _port(port, zero=True), ssl)


def _listeners(items: list[tuple[str, object]]) -> tuple[tuple[Listener, ...], str | None]:
    """Parsed ``listen`` items (each with where to blame it), and the first one using ssl."""
    seen: set[tuple[str, int]] = set()
    result: list[Listener] = []
    first_ssl = None
    for where, item in items:
        with _at(where):
            listener = _listener(item)
            key = (listener.host.lower(), listener.port)
            if listener.port and key in seen:
                _fail(f"{listener.address} is listed twice")
        seen.add(key)
        result.append(listener)
        if listener.ssl and first_ssl is None:
            first_ssl = str(item)
    return tuple(result), first_ssl


def _server_line(text: str) -> ServerConfig:
    """nginx ``server ADDRESS [weight=N] [max_fails=N] [fail_timeout=T] [backup] [down]
    [max_conns=N]``."""
    words = text.split()
    if not words:
        _fail('empty server (write e.g. "localhost:8010")')
    host, port = _host_port(words[0])
    values: dict[str, object] = {}
    for word in words[1:]:
        name, equals, value = word.partition("=")
        if name not in _SERVER_KEYS or name == "address":
            known = [key for key in _SERVER_KEYS if key != "address"]
            guess = _closest(name, known)
            hint = f" (did you mean {guess}?)" if guess else f" (known: {', '.join(known)})"
            _fail(f"unknown parameter {_show(word)}{hint}")
        if name in values:
            _fail(f"{name} is given twice")
        if name in ("backup", "down"):
            if equals:
                _fail(f"{name} takes no value, got {_show(word)}")
            values[name] = True
        elif not equals:
            _fail(f"{name} needs a value ({name}=...)")
        else:
            values[name] = value
    return _server_from(host, port, values, None)


def _server_from(host: str, port: int, values: Mapping[str, object],
                 blame: Callable[[str], str] | None) -> ServerConfig:
    """A ServerConfig from parameter values. With ``blame`` (a server table) each key path
    names its parameter; without (a server line) the message does."""
    def read(name: str, parse: Callable[[object, str], T], default: T) -> T:
        if name not in values:
            return default
        if blame is None:
            return parse(values[name], name)
        with _at(blame(name)):
            return parse(values[name], "")

    return ServerConfig(
        host=host,
        port=port,
        weight=read("weight", lambda v, label: _integer(v, minimum=1, label=label), 1),
        max_fails=read("max_fails", lambda v, label: _integer(v, minimum=0, label=label), 1),
        fail_timeout=read(
            "fail_timeout", lambda v, label: _duration(v, zero=True, label=label), 10.0),
        backup=read("backup", lambda v, label: _boolean(v), False),
        down=read("down", lambda v, label: _boolean(v), False),
        max_conns=read("max_conns", lambda v, label: _integer(v, minimum=0, label=label), 0),
    )


def _server(value: object, path: tuple[str | int, ...]) -> ServerConfig:
    """A server given as a string (nginx's line) or a table with the same parameters."""
    if isinstance(value, str):
        with _at(_key(path)):
            return _server_line(value)
    table = _Table(value, path, _SERVER_KEYS, "server")
    if not table.has("address"):
        raise _Invalid('missing address (e.g. address = "localhost:8010")', _key(path))
    with _at(table.where("address")):
        host, port = _host_port(_text(table.data["address"]))
    values = {name: value for name, value in table.data.items() if name != "address"}
    return _server_from(host, port, values, table.where)


def _check_servers(servers: Sequence[ServerConfig], balance: str,
                   blame: Callable[[int], str]) -> None:
    """Rules across an upstream's servers: no duplicates, no backup with hashing (as nginx)."""
    seen: dict[tuple[str, int], int] = {}
    for index, server in enumerate(servers):
        address = _join_address(server.host, server.port)
        if server.backup and balance in ("ip_hash", "hash"):
            raise _Invalid(f'backup cannot be used with balance = "{balance}"', blame(index))
        key = (server.host.lower(), server.port)
        if key in seen:
            raise _Invalid(f"{address} is listed twice (use weight=N for a bigger share)",
                           blame(index))
        seen[key] = index


def _template(value: str) -> str:
    """A header value or hash key: no CR, LF or NUL, and only the variables wsgate knows."""
    if any(char in value for char in "\r\n\0"):
        _fail("must not contain CR, LF or NUL")
    position = 0
    while (dollar := value.find("$", position)) >= 0:
        match = VARIABLE.match(value, dollar)
        if match is None:
            _fail(f'a "$" must start a variable like $host, got {_show(value)}')
        name = match[1] or match[2]
        if name.startswith("http_") and len(name) > 5:
            if name != name.lower():
                _fail(f"header variables are lowercase: ${name.lower()}, not ${name}")
        elif name not in _VARIABLES:
            known = [*_VARIABLES, "http_NAME"]
            guess = _closest(name, _VARIABLES)
            hint = f"did you mean ${guess}?" if guess else "known: " + ", ".join(
                f"${variable}" for variable in known)
            _fail(f"unknown variable ${name} ({hint})")
        position = match.end()
    return value


def _hash_key(value: object) -> str:
    key = _template(_text(value))
    if "$" not in key:
        _fail("the key has no $variable, so every client would go to the same server")
    return key


def _set_headers(value: object, path: tuple[str | int, ...]) -> tuple[tuple[str, str], ...]:
    """``proxy_set_header`` merged over the defaults: a name matches ignoring case, "" removes."""
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table like {{ Host = \"$host\" }}, got {_show(value)}",
                       _key(path))
    headers = list(DEFAULT_SET_HEADERS)
    given: set[str] = set()
    for name, header_value in value.items():
        with _at(_key((*path, name))):
            lower = name.lower()
            if not _TOKEN.fullmatch(name):
                _fail("not a valid header name")
            if lower in given:
                _fail("is set twice (header names ignore case)")
            given.add(lower)
            if lower in _RESERVED_HEADERS or lower.startswith("sec-websocket-"):
                _fail("wsgate sets this header itself; remove this key")
            if not isinstance(header_value, str):
                _must("", 'a string (or "" to not send the header)', header_value)
            if lower == "host" and not header_value:
                _fail("Host cannot be removed: HTTP/1.1 requires it")
            _template(header_value)
        index = next((i for i, (old, _) in enumerate(headers) if old.lower() == lower), None)
        if index is not None:
            del headers[index]
            if header_value:
                headers.insert(index, (name, header_value))
        elif header_value:
            headers.append((name, header_value))
    return tuple(headers)


def _header_buffers(value: object) -> tuple[int, int]:
    """nginx ``large_client_header_buffers NUMBER SIZE``."""
    expected = '"NUMBER SIZE" like "4 8k"'
    words = value.split() if isinstance(value, str) else []
    if len(words) != 2:
        _must("", expected, value)
    try:
        return _integer(words[0], minimum=1), _size(words[1])
    except _Invalid:
        _must("", expected, value)


def _networks(value: object) -> tuple[Network, ...]:
    """``trusted_proxies``: addresses and CIDRs, one or an array; host bits set is a mistake."""
    networks: list[Network] = []
    for index, item in _strings(value):
        with _at("trusted_proxies" if index is None else f"trusted_proxies[{index}]"):
            expected = 'an address or CIDR like "10.0.0.0/8"'
            if not isinstance(item, str):
                _must("", expected, item)
            try:
                networks.append(ipaddress.ip_network(item.strip()))
            except ValueError as error:
                if "has host bits set" not in str(error):
                    _must("", expected, item)
                fixed = ipaddress.ip_network(item.strip(), strict=False)
                _fail(f'{_show(item)} has host bits set (did you mean "{fixed}"?)')
    return tuple(networks)


def _access_log(value: object, base: Path, path: tuple[str | int, ...]) -> AccessLogConfig:
    """nginx ``access_log``: a string (where to) or a table with ``path`` and ``format``."""
    if isinstance(value, str):
        with _at(_key(path)):
            return _log_target(value, base, "combined")
    table = _Table(value, path, _ACCESS_LOG_KEYS, "access_log")
    log_format: LogFormat = table.read("format", lambda v: _choice(v, _LOG_FORMATS), "combined")
    target = table.read("path", _text, "stdout")
    with _at(table.where("path")):
        return _log_target(target, base, log_format)


def _log_target(value: str, base: Path, log_format: LogFormat) -> AccessLogConfig:
    text = _text(value)
    if text in _LOG_STREAMS:
        return AccessLogConfig(_LOG_STREAMS[text], None, log_format)
    return AccessLogConfig("file", base / text, log_format)


def _tls(certificate: str | None, key: str | None, first_ssl: str | None, base: Path,
         names: tuple[str, str, str]) -> TLSFiles | None:
    """The TLS files, required iff a listener uses ssl, and readable now rather than later."""
    cert_name, key_name, listen_name = names
    if first_ssl is None:
        for name, given in ((cert_name, certificate), (key_name, key)):
            if given is not None:
                raise _Invalid(f'no {listen_name} uses ssl (add " ssl", e.g. "0.0.0.0:443 ssl")',
                               name)
        return None
    files: list[Path] = []
    for name, given in ((cert_name, certificate), (key_name, key)):
        if given is None:
            raise _Invalid(f"required because {listen_name} {_show(first_ssl)} uses ssl", name)
        file = base / given
        try:
            with open(file, "rb"):
                pass
        except OSError as error:
            raise _Invalid(f"cannot read {file}: {error.strerror}", name) from None
        files.append(file)
    return TLSFiles(files[0], files[1])


# ---------------------------------------------------------------------------------------------
# The file.


def load(path: str | Path) -> ProxyConfig:
    """Read and check a TOML config; any mistake is a one-line UsageError naming file and key."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"{source}: cannot read: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UsageError(f"{source}: line {line}: invalid TOML: not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{source}: {_toml_error(str(error))}") from None
    try:
        return _from_document(document, Path(path).absolute().parent, source)
    except _Invalid as error:
        where = f"{error.where}: " if error.where else ""
        raise UsageError(f"{source}: {where}{error.message}") from None


def _toml_error(message: str) -> str:
    """tomllib's "Invalid value (at line 3, column 5)" as "line 3: invalid TOML: ..."."""
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message)
    if match:
        what = match[1][:1].lower() + match[1][1:]
        return f"line {match[2]}: invalid TOML: {what} (column {match[3]})"
    match = re.fullmatch(r"(.*) \(at end of document\)", message)
    if match:
        what = match[1][:1].lower() + match[1][1:]
        return f"end of file: invalid TOML: {what}"
    return f"invalid TOML: {message}"


def _from_document(document: dict[str, object], base: Path, source: str) -> ProxyConfig:
    top = _Table(document, (), _TOP_KEYS, "top")

    if not top.has("listen"):
        raise _Invalid('required (e.g. listen = ["127.0.0.1:8080"])', "listen")
    listen_value = top.data["listen"]
    if isinstance(listen_value, list) and not listen_value:
        raise _Invalid('must list at least one address (e.g. "127.0.0.1:8080")', "listen")
    items = [(_key(("listen", index)) if index is not None else "listen", item)
             for index, item in _strings(listen_value)]
    listeners, first_ssl = _listeners(items)

    workers = top.read("worker_processes", _workers, 1)
    certificate = top.read("ssl_certificate", _text, None)
    key = top.read("ssl_certificate_key", _text, None)
    tls = _tls(certificate, key, first_ssl, base,
               ("ssl_certificate", "ssl_certificate_key", "listen"))

    trusted = _networks(top.data.get("trusted_proxies", []))

    header_timeout = top.read("client_header_timeout", _positive_duration, 10.0)
    body_size = top.read("client_max_body_size", lambda v: _size(v, zero=True), 1 << 20)
    number, buffer = top.read("large_client_header_buffers", _header_buffers, (4, 8 << 10))
    keepalive_timeout = top.read("keepalive_timeout", _optional_duration, 75.0)
    shutdown_timeout = top.read("worker_shutdown_timeout", _optional_duration, 10.0)
    access_log = AccessLogConfig()
    if top.has("access_log"):
        access_log = _access_log(top.data["access_log"], base, ("access_log",))

    upstreams = _upstreams(top.data.get("upstream", {}))
    locations = _locations(top.data.get("location"), upstreams)

    return ProxyConfig(
        listeners=listeners,
        upstreams=MappingProxyType(upstreams),
        locations=locations,
        workers=workers,
        tls=tls,
        trusted_proxies=trusted,
        client_header_timeout=header_timeout,
        client_max_body_size=body_size or None,
        max_request_line=buffer,
        max_header_line=buffer,
        max_header_total=number * buffer,
        keepalive_timeout=keepalive_timeout,
        shutdown_timeout=shutdown_timeout,
        access_log=access_log,
        source=source,
    )


def _upstreams(value: object) -> dict[str, UpstreamConfig]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table of [upstream.NAME] tables, got {_show(value)}",
                       "upstream")
    upstreams: dict[str, UpstreamConfig] = {}
    for name, body in value.items():
        path: tuple[str | int, ...] = ("upstream", name)
        if not _UPSTREAM_NAME.fullmatch(name):
            raise _Invalid('an upstream name is letters, digits, ".", "-" and "_"', _key(path))
        upstreams[name] = _upstream(name, body, path)
    return upstreams


def _upstream(name: str, body: object, path: tuple[str | int, ...]) -> UpstreamConfig:
    table = _Table(body, path, _UPSTREAM_KEYS, "upstream")
    balance: Balance = table.read("balance", lambda v: _choice(v, _BALANCES), "round_robin")
    if balance == "hash" and not table.has("hash"):
        raise _Invalid('required because balance = "hash" (e.g. hash = "$remote_addr")',
                       table.where("hash"))
    for key in ("hash", "consistent"):
        if balance != "hash" and table.has(key):
            raise _Invalid('only with balance = "hash"', table.where(key))
    hash_key = table.read("hash", _hash_key, None)
    consistent = table.read("consistent", _boolean, False)
    keepalive = table.read("keepalive", lambda v: _integer(v, minimum=0), 32)

    if not table.has("server"):
        raise _Invalid('required: at least one server (e.g. server = ["localhost:8010"])',
                       table.where("server"))
    listed = table.data["server"]
    if not isinstance(listed, list):
        listed = [listed]
    if not listed:
        raise _Invalid('must list at least one server (e.g. "localhost:8010")',
                       table.where("server"))
    servers = tuple(_server(item, (*path, "server", index)) for index, item in enumerate(listed))
    _check_servers(servers, balance, lambda index: _key((*path, "server", index)))
    return UpstreamConfig(name, servers, balance, hash_key, consistent, keepalive)


def _proxy_pass(value: object, upstreams: dict[str, UpstreamConfig]) -> str:
    """The upstream a location uses: a defined name, or ``host:port`` as an implicit group."""
    text = _text(value)
    rest = text
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme.lower() != "http":
            _fail(f'{scheme}:// is not supported: write "http://" (WebSocket upgrades ride on it)')
    if "/" in rest:
        uri = rest[rest.index("/"):]
        _fail(f"a URI part ({_show(uri)}) is not supported: the request URI is passed unchanged")
    if ":" not in rest and not rest.startswith("["):
        if rest not in upstreams:
            defined = ", ".join(name for name in upstreams if ":" not in name) or "none"
            hint = ""
            if rest == "localhost" or re.fullmatch(r"[0-9.]+", rest):
                hint = f'; a single server needs its port, e.g. "{rest}:80"'
            _fail(f"no upstream named {_show(rest)} (defined: {defined}){hint}")
        return rest
    host, port = _host_port(rest)
    name = _join_address(host, port)
    if name not in upstreams:
        upstreams[name] = UpstreamConfig(name, (ServerConfig(host, port),))
    return name


def _locations(value: object, upstreams: dict[str, UpstreamConfig]) -> tuple[Location, ...]:
    example = '[location."/"] with proxy_pass = "http://backend"'
    if value is None or value == {}:
        raise _Invalid(f"at least one is required, e.g. {example}", "location")
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table of locations like {example}, got {_show(value)}",
                       "location")
    locations: list[Location] = []
    for prefix, body in value.items():
        path: tuple[str | int, ...] = ("location", prefix)
        if not prefix.startswith("/"):
            hint = "" if isinstance(body, dict) else f", e.g. {example}"
            raise _Invalid(f'a location is a path prefix starting with "/"{hint}', _key(path))
        if any(char.isspace() or ord(char) < 32 or char == "\x7f" for char in prefix):
            raise _Invalid("a location prefix cannot contain spaces or control characters",
                           _key(path))
        locations.append(_location(prefix, body, path, upstreams))
    locations.sort(key=lambda location: (-len(location.prefix), location.prefix))
    return tuple(locations)


def _location(prefix: str, body: object, path: tuple[str | int, ...],
              upstreams: dict[str, UpstreamConfig]) -> Location:
    table = _Table(body, path, _LOCATION_KEYS, "location")
    if not table.has("proxy_pass"):
        raise _Invalid('required (e.g. proxy_pass = "http://backend")', table.where("proxy_pass"))
    upstream = table.read("proxy_pass", lambda v: _proxy_pass(v, upstreams), "")
    tries = table.read("proxy_next_upstream_tries", lambda v: _integer(v, minimum=0), 0)
    give_up = table.read("proxy_next_upstream_timeout", _optional_duration, 0.0)
    headers = DEFAULT_SET_HEADERS
    if table.has("proxy_set_header"):
        headers = _set_headers(table.data["proxy_set_header"], (*path, "proxy_set_header"))
    return Location(
        prefix=prefix,
        upstream=upstream,
        read_timeout=table.read("proxy_read_timeout", _positive_duration, 60.0),
        send_timeout=table.read("proxy_send_timeout", _positive_duration, 60.0),
        connect_timeout=table.read("proxy_connect_timeout", _positive_duration, 60.0),
        next_upstream_tries=tries or None,
        next_upstream_timeout=give_up or None,
        set_headers=headers,
    )


# ---------------------------------------------------------------------------------------------
# The flags.


def from_flags(
    listen: Sequence[str],
    upstreams: Sequence[str],
    *,
    balance: str = "round_robin",
    read_timeout: str | None = None,
    workers: str | None = None,
    access_log: str | None = None,
    ssl_certificate: str | None = None,
    ssl_certificate_key: str | None = None,
) -> ProxyConfig:
    """The simple case without a file: one upstream group "backend" served at location "/".

    Flag values use the config file's syntax (``--upstream "host:8011 weight=2"``); relative
    paths are relative to the current folder. A mistake names the flag and its value.
    """
    try:
        return _from_flags(listen, upstreams, balance, read_timeout, workers, access_log,
                           ssl_certificate, ssl_certificate_key)
    except _Invalid as error:
        where = f"{error.where}: " if error.where else ""
        raise UsageError(f"{where}{error.message}") from None


def _flag(name: str, value: str) -> str:
    return f"{name} {_show(value)}"


def _from_flags(listen: Sequence[str], upstreams: Sequence[str], balance_flag: str,
                read_timeout: str | None, workers_flag: str | None, access_log: str | None,
                certificate: str | None, key: str | None) -> ProxyConfig:
    if not listen:
        raise _Invalid("required (e.g. --listen :8080)", "--listen")
    if not upstreams:
        raise _Invalid("required (e.g. --upstream 127.0.0.1:8010)", "--upstream")
    listeners, first_ssl = _listeners([(_flag("--listen", item), item) for item in listen])

    with _at(_flag("--balance", balance_flag)):
        balance = _choice(balance_flag.replace("-", "_"), _BALANCES)
        if balance == "hash":
            _fail("needs a hash key, which only a config file can set (or use ip_hash)")

    servers: list[ServerConfig] = []
    for item in upstreams:
        with _at(_flag("--upstream", item)):
            servers.append(_server_line(item))
    _check_servers(servers, balance, lambda index: _flag("--upstream", upstreams[index]))

    location = Location("/", "backend")
    if read_timeout is not None:
        with _at(_flag("--read-timeout", read_timeout)):
            location = Location("/", "backend", read_timeout=_duration(read_timeout))
    workers = 1
    if workers_flag is not None:
        with _at(_flag("--workers", workers_flag)):
            workers = _workers(workers_flag)
    log = AccessLogConfig()
    if access_log is not None:
        with _at(_flag("--access-log", access_log)):
            log = _log_target(access_log, Path.cwd(), "combined")
    tls = _tls(certificate, key, first_ssl, Path.cwd(),
               ("--ssl-certificate", "--ssl-certificate-key", "--listen"))

    group = UpstreamConfig("backend", tuple(servers), balance)
    return ProxyConfig(
        listeners=listeners,
        upstreams=MappingProxyType({"backend": group}),
        locations=(location,),
        workers=workers,
        tls=tls,
        access_log=log,
        source="command line",
    )


# ---------------------------------------------------------------------------------------------
# The summary.


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe(config: ProxyConfig) -> str:
    """One line for ``--check``: the config is fine, and what it amounts to."""
    servers = sum(len(group.servers) for group in config.upstreams.values())
    return (f"{config.source}: ok: {_count(len(config.listeners), 'listener')}, "
            f"{_count(len(config.upstreams), 'upstream')} ({_count(servers, 'server')}), "
            f"{_count(len(config.locations), 'location')}")
