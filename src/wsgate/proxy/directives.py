"""The values of the proxy's directives: their types and their syntax (nginx's). Pure.

Each parser takes what TOML (or a flag) gave and returns it checked, or raises
:class:`~wsgate.values.Invalid` saying what is wrong; the caller says where. A parser that
reads a table blames its own keys with a relative path (``.weight``), which the caller
prefixes with the table's. :mod:`wsgate.proxy.config` says which directive uses which
parser; nothing here knows where a value sits in a file.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from wsgate.proxy.variables import REQUEST_VARIABLES, VARIABLE, is_request_variable
from wsgate.values import (
    Invalid,
    blame,
    check_host,
    duration,
    fail,
    host_port,
    integer,
    join_address,
    must,
    port,
    show,
    size,
    split_address,
)

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Balance = Literal["round_robin", "least_conn", "ip_hash", "hash"]
BALANCES: tuple[Balance, ...] = ("round_robin", "least_conn", "ip_hash", "hash")
LogDestination = Literal["stdout", "stderr", "file", "off"]
LogLevel = Literal["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"]
LOG_LEVELS: tuple[LogLevel, ...] = (
    "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")

#: What nginx's ``proxy_set_header`` lines in the seed send, plus X-Forwarded-Proto.
DEFAULT_SET_HEADERS: tuple[tuple[str, str], ...] = (
    ("Host", "$host"),
    ("X-Real-IP", "$remote_addr"),
    ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
    ("X-Forwarded-Proto", "$proxy_x_forwarded_proto"),
)

#: Headers the proxy must own: hop-by-hop, framing, and the WebSocket handshake's.
_RESERVED_HEADERS = frozenset({
    "connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding",
    "content-length", "te", "trailer",
})
_VARIABLES = tuple(sorted(REQUEST_VARIABLES))
MAP_NAMES: ContextVar[frozenset[str]] = ContextVar("MAP_NAMES", default=frozenset())
"""The variables the configuration being read defines with ``map``: a reader sets it, so
that templates anywhere in the file may use them."""
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# -- small values ------------------------------------------------------------------------------


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice ``word`` was probably meant to be, for "did you mean ...?"."""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_keys(table: Mapping[str, object], known: Sequence[str]) -> None:
    """Fail on the first key of ``table`` not in ``known``, blaming it (relatively)."""
    for name in table:
        if name not in known:
            guess = closest(name, known)
            hint = f"did you mean {guess}?" if guess else f"known: {', '.join(known)}"
            raise Invalid(f"unknown key ({hint})", "." + key_name(name))


def key_name(name: str) -> str:
    """A key as TOML spells it in a path: bare if it can be, quoted otherwise."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return json.dumps(name, ensure_ascii=False)


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        must("", "true or false", value)
    return value


def text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        must("", "a non-empty string", value)
    return value.strip()


def choice(value: object, choices: Sequence[T]) -> T:
    """One of ``choices``; a near miss ("least-conn") gets a suggestion."""
    if isinstance(value, str) and value in choices:
        return value  # type: ignore[return-value]
    names = ", ".join(json.dumps(name) for name in choices)
    guess = closest(value, [str(c) for c in choices]) if isinstance(value, str) else None
    hint = f" (did you mean {json.dumps(guess)}?)" if guess else ""
    fail(f"must be one of {names}, got {show(value)}{hint}")


def positive_duration(value: object) -> float:
    return duration(value)


def optional_duration(value: object) -> float:
    """A duration where 0 means "none" (no limit, or off)."""
    return duration(value, zero=True)


def optional_limit(value: object) -> float | None:
    """nginx's 0-means-unlimited duration, as None."""
    return duration(value, zero=True) or None


def optional_count(value: object) -> int | None:
    """nginx's 0-means-unlimited count, as None."""
    return integer(value, minimum=0) or None


def non_negative(value: object) -> int:
    return integer(value, minimum=0)


def body_size(value: object) -> int | None:
    """``client_max_body_size``: 0 is unlimited (None)."""
    return size(value, zero=True) or None


def workers(value: object) -> int:
    """nginx ``worker_processes``: "auto" is one per CPU."""
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, str) and not value.isdigit():
        must("", '"auto" or a positive integer', value)
    try:
        return integer(value, minimum=1)
    except Invalid:
        must("", '"auto" or a positive integer', value)


def header_buffers(value: object) -> tuple[int, int]:
    """nginx ``large_client_header_buffers NUMBER SIZE``."""
    expected = '"NUMBER SIZE" like "4 8k"'
    words = value.split() if isinstance(value, str) else []
    if len(words) != 2:
        must("", expected, value)
    try:
        return integer(words[0], minimum=1), size(words[1])
    except Invalid:
        must("", expected, value)


def network(value: object) -> Network:
    """One ``trusted_proxies`` item: an address or CIDR; host bits set is a mistake."""
    expected = 'an address or CIDR like "10.0.0.0/8"'
    if not isinstance(value, str):
        must("", expected, value)
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError as error:
        if "has host bits set" not in str(error):
            must("", expected, value)
        fixed = ipaddress.ip_network(value.strip(), strict=False)
        fail(f'{show(value)} has host bits set (did you mean "{fixed}"?)')


def file_path(value: object) -> Path:
    """A file, as written: relative paths are resolved against the config's folder later."""
    return Path(text(value))


def balance(value: object) -> Balance:
    return choice(value, BALANCES)


# -- listen ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    """One ``listen`` address. A bare port means all IPv4 interfaces, ``0.0.0.0``, as in nginx.
    ``default_server``: this server answers the address's requests that no server_name
    matches; ``backlog``: the listening queue's length (nginx's default 511 when None)."""

    host: str
    port: int
    ssl: bool = False
    default_server: bool = False
    backlog: int | None = None

    @property
    def address(self) -> str:
        """``host:port`` as a user writes it, with brackets around an IPv6 host."""
        return join_address(self.host, self.port)


_LISTEN_EXAMPLE = 'an address like "127.0.0.1:8080", ":8080" or "0.0.0.0:443 ssl"'


def listener(value: object) -> Listener:
    """nginx ``listen``: ``ADDR:PORT``, ``:PORT``, ``*:PORT`` or ``PORT``, then the
    parameters ``ssl``, ``default_server`` (or ``default``) and ``backlog=N``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        must("", _LISTEN_EXAMPLE, value)
    words = value.split()
    if not words:
        fail('empty address (write e.g. "127.0.0.1:8080")')
    options: dict[str, Any] = {}
    for word in words[1:]:
        name, equals, raw = word.partition("=")
        name = "default_server" if name == "default" else name
        if name not in ("ssl", "default_server", "backlog"):
            fail(f'unknown parameter {show(word)} (known: "ssl", "default_server", '
                 '"backlog=N")')
        if name in options:
            fail(f'"{name}" is given twice')
        if name == "backlog":
            if not equals:
                fail('backlog needs a value ("backlog=1024")')
            options[name] = integer(raw, minimum=1, label="backlog")
        elif equals:
            fail(f"{name} takes no value, got {show(word)}")
        else:
            options[name] = True
    address = words[0]
    if address.isascii() and address.isdigit():
        host, number = "", address
    else:
        host, maybe_port = split_address(address)
        if maybe_port is None:
            fail(f'missing port (write e.g. "{address}:8080")')
        number = maybe_port
    host = "0.0.0.0" if host in ("", "*") else check_host(host)
    return Listener(host, port(number, zero=True), **options)


def distinct_listeners(listeners: Sequence[Listener], where: Sequence[str]) -> None:
    """No address listed twice (port 0 aside: each asks for a port of its own)."""
    seen: set[tuple[str, int]] = set()
    for item, label in zip(listeners, where, strict=True):
        key = (item.host.lower(), item.port)
        if item.port and key in seen:
            raise Invalid(f"{item.address} is listed twice", label)
        seen.add(key)


# -- status listener and health checks --------------------------------------------------------


def status_listen(value: object) -> Listener:
    """``status_listen``: where the status page, ``/metrics`` and the admin actions are
    served. A plain address: it is for operators and scrapers on a trusted network."""
    found = listener(value)
    if found.ssl:
        fail('the status listener has no TLS (drop "ssl"; keep it on a private address)')
    if found.default_server or found.backlog is not None:
        fail("the status listener takes no parameters")
    return found


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """``[upstream.NAME.health_check]``: active probes of every server of a group.

    ``fails`` failed probes in a row take a server out of selection, ``passes`` good ones
    bring it back; its open tunnels are never cut for it. A probe is a WebSocket opening
    handshake to ``uri`` (healthy on a correct 101, then Close 1000), or with ``websocket
    = false`` an HTTP GET (healthy on 2xx or 3xx). ``timeout`` is the whole probe's
    deadline; by default, the interval.
    """

    interval: float = 5.0
    fails: int = 3
    passes: int = 2
    uri: str = "/"
    timeout: float | None = None
    websocket: bool = True

    @property
    def deadline(self) -> float:
        return self.interval if self.timeout is None else self.timeout


def _uri(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(
            char.isspace() or ord(char) < 32 or char == "\x7f" for char in value):
        must("", 'a path starting with "/" (e.g. "/healthz")', value)
    return value


_HEALTH_KEYS: dict[str, Callable[[object], Any]] = {
    "interval": duration,
    "fails": lambda value: integer(value, minimum=1),
    "passes": lambda value: integer(value, minimum=1),
    "uri": _uri,
    "timeout": duration,
    "websocket": boolean,
}


def health_check(value: object) -> HealthCheck:
    """The ``health_check`` table; ``true`` (or an empty table) takes every default."""
    if value is True:
        return HealthCheck()
    if not isinstance(value, dict):
        must("", "a table (e.g. [upstream.backend.health_check] with interval = \"5s\")",
             value)
    unknown_keys(value, list(_HEALTH_KEYS))
    parsed = {}
    for name, raw in value.items():
        with blame("." + name):
            parsed[name] = _HEALTH_KEYS[name](raw)
    return HealthCheck(**parsed)


# -- upstream servers ----------------------------------------------------------------------


def param(parse: Callable[[object, str], Any]) -> Any:
    """Metadata for a ``server`` parameter: its parser gets the value and a label to name it
    by in a message (a server line has no key path, so "weight must be ...")."""
    return {"parse": parse}


@dataclass(frozen=True)
class ServerConfig:
    """One ``server`` line of an upstream block, with nginx's defaults.

    ``max_fails=0`` turns failure accounting off; ``max_conns=0`` means unlimited;
    ``host`` is a name or an IP address without brackets. The parameters after the
    address are declared once here (name and parser); the server line and the server
    table read them from these declarations.
    """

    host: str
    port: int
    weight: int = field(default=1, metadata=param(
        lambda v, label: integer(v, minimum=1, label=label)))
    max_fails: int = field(default=1, metadata=param(
        lambda v, label: integer(v, minimum=0, label=label)))
    fail_timeout: float = field(default=10.0, metadata=param(
        lambda v, label: duration(v, zero=True, label=label)))
    backup: bool = field(default=False, metadata=param(lambda v, label: boolean(v)))
    down: bool = field(default=False, metadata=param(lambda v, label: boolean(v)))
    max_conns: int = field(default=0, metadata=param(
        lambda v, label: integer(v, minimum=0, label=label)))

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("["):
            raise ValueError(f"server host must be a name or a bare IP address: {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"server port out of range: {self.port}")
        if self.weight < 1:
            raise ValueError(f"server weight must be at least 1: {self.weight}")
        if self.max_fails < 0:
            raise ValueError(f"server max_fails must not be negative: {self.max_fails}")
        if self.fail_timeout < 0:
            raise ValueError(f"server fail_timeout must not be negative: {self.fail_timeout}")
        if self.max_conns < 0:
            raise ValueError(f"server max_conns must not be negative: {self.max_conns}")

    @property
    def address(self) -> str:
        """``host:port``, with an IPv6 address in brackets; also the consistent-hash
        ring's server name, so it must not change between processes."""
        return join_address(self.host, self.port)


_SERVER_PARAMS = {f.name: f.metadata["parse"] for f in fields(ServerConfig) if f.metadata}
_FLAGS = ("backup", "down")
"""Parameters written without a value in a server line."""


def server(value: object) -> ServerConfig:
    """A server given as a string (nginx's line) or a table with the same parameters."""
    if isinstance(value, str):
        return server_line(value)
    if not isinstance(value, dict):
        must("", "a table", value)
    unknown_keys(value, ["address", *_SERVER_PARAMS])
    if "address" not in value:
        fail('missing address (e.g. address = "localhost:8010")')
    with blame(".address"):
        host, number = host_port(text(value["address"]))
    parsed = {}
    for name, raw in value.items():
        if name != "address":
            with blame("." + name):
                parsed[name] = _SERVER_PARAMS[name](raw, "")
    return ServerConfig(host, number, **parsed)


def server_line(line: str) -> ServerConfig:
    """nginx ``server ADDRESS [weight=N] [max_fails=N] [fail_timeout=T] [backup] [down]
    [max_conns=N]``."""
    words = line.split()
    if not words:
        fail('empty server (write e.g. "localhost:8010")')
    host, number = host_port(words[0])
    parsed: dict[str, Any] = {}
    for word in words[1:]:
        name, equals, raw = word.partition("=")
        if name not in _SERVER_PARAMS:
            known = list(_SERVER_PARAMS)
            guess = closest(name, known)
            hint = f" (did you mean {guess}?)" if guess else f" (known: {', '.join(known)})"
            fail(f"unknown parameter {show(word)}{hint}")
        if name in parsed:
            fail(f"{name} is given twice")
        if name in _FLAGS:
            if equals:
                fail(f"{name} takes no value, got {show(word)}")
            parsed[name] = True
        elif not equals:
            fail(f"{name} needs a value ({name}=...)")
        else:
            parsed[name] = _SERVER_PARAMS[name](raw, name)
    return ServerConfig(host, number, **parsed)


def check_servers(servers: Sequence[ServerConfig], method: str, where: Sequence[str]) -> None:
    """Rules across an upstream's servers: no duplicates, no backup with hashing (as nginx)."""
    seen: set[tuple[str, int]] = set()
    for item, label in zip(servers, where, strict=True):
        if item.backup and method in ("ip_hash", "hash"):
            raise Invalid(f'backup cannot be used with balance = "{method}"', label)
        key = (item.host.lower(), item.port)
        if key in seen:
            raise Invalid(f"{item.address} is listed twice (use weight=N for a bigger share)",
                          label)
        seen.add(key)


# -- headers and templates -----------------------------------------------------------------


def template(value: str, body: bool = False) -> str:
    """A header value, hash key or other template: no CR, LF or NUL (a ``body``, such as
    return's text, may hold line ends), and only variables that exist (a request's, or a
    map's of this configuration)."""
    if any(char in value for char in ("\0" if body else "\r\n\0")):
        fail("must not contain NUL" if body else "must not contain CR, LF or NUL")
    position = 0
    maps = MAP_NAMES.get()
    while (dollar := value.find("$", position)) >= 0:
        match = VARIABLE.match(value, dollar)
        if match is None:
            fail(f'a "$" must start a variable like $host, got {show(value)}')
        name = match[1] or match[2]
        if name.startswith("http_") and len(name) > 5:
            if name != name.lower():
                fail(f"header variables are lowercase: ${name.lower()}, not ${name}")
        elif not is_request_variable(name) and name not in maps:
            choices = [*_VARIABLES, *maps]
            guess = closest(name, choices)
            hint = f"did you mean ${guess}?" if guess else "known: " + ", ".join(
                f"${variable}" for variable in [*choices, "http_NAME"])
            fail(f"unknown variable ${name} ({hint})")
        position = match.end()
    return value


def hash_key(value: object) -> str:
    key = template(text(value))
    if "$" not in key:
        fail("the key has no $variable, so every client would go to the same server")
    return key


def set_headers(value: object) -> tuple[tuple[str, str], ...]:
    """``proxy_set_header`` merged over the defaults: a name matches ignoring case, "" removes."""
    if not isinstance(value, dict):
        must("", 'a table like { Host = "$host" }', value)
    headers = list(DEFAULT_SET_HEADERS)
    given: set[str] = set()
    for name, header_value in value.items():
        with blame("." + key_name(name)):
            lower = name.lower()
            if not _TOKEN.fullmatch(name):
                fail("not a valid header name")
            if lower in given:
                fail("is set twice (header names ignore case)")
            given.add(lower)
            if lower in _RESERVED_HEADERS or lower.startswith("sec-websocket-"):
                fail("wsgate sets this header itself; remove this key")
            if not isinstance(header_value, str):
                must("", 'a string (or "" to not send the header)', header_value)
            if lower == "host" and not header_value:
                fail("Host cannot be removed: HTTP/1.1 requires it")
            template(header_value)
        index = next((i for i, (old, _) in enumerate(headers) if old.lower() == lower), None)
        if index is not None:
            del headers[index]
            if header_value:
                headers.insert(index, (name, header_value))
        elif header_value:
            headers.append((name, header_value))
    return tuple(headers)


# -- logs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    """Where the access log goes: ``path`` is set iff ``destination`` is "file"."""

    destination: LogDestination = "stdout"
    path: Path | None = None
    format: str = "combined"
    """"combined", "json", or the name of a log_format."""


@dataclass(frozen=True, slots=True)
class ErrorLogConfig:
    """nginx's ``error_log FILE [LEVEL]``: stderr or a file, and the least severe level
    written (nginx's default, "error", shows every 502 and 504 and every worker death)."""

    destination: Literal["stderr", "file"] = "stderr"
    path: Path | None = None
    level: LogLevel = "error"


def _log_target(target: str) -> tuple[LogDestination, Path | None]:
    if target in ("stdout", "stderr", "off"):
        return target, None  # type: ignore[return-value]
    return "file", Path(target)


def access_log(value: object) -> AccessLogConfig:
    """nginx ``access_log``: a string (where to) or a table with ``path`` and ``format``."""
    if isinstance(value, str):
        return AccessLogConfig(*_log_target(text(value)))
    if not isinstance(value, dict):
        must("", "a table", value)
    unknown_keys(value, ["path", "format"])
    with blame(".format"):
        log_format = text(value.get("format", "combined"))
    with blame(".path"):
        destination, path = _log_target(text(value.get("path", "stdout")))
    return AccessLogConfig(destination, path, log_format)


def error_log(value: object) -> ErrorLogConfig:
    """nginx ``error_log``: ``"FILE [LEVEL]"`` (FILE may be stderr) or a table with ``path``
    and ``level``."""
    if isinstance(value, dict):
        unknown_keys(value, ["path", "level"])
        target = value.get("path", "stderr")
        with blame(".level"):
            level = choice(value.get("level", "error"), LOG_LEVELS)
        with blame(".path"):
            return _error_log(text(target), level)
    words = text(value).split()
    if len(words) > 2:
        fail(f'must be "FILE [LEVEL]" like "stderr" or "logs/error.log warn", got {show(value)}')
    level = choice(words[1], LOG_LEVELS) if len(words) == 2 else "error"
    return _error_log(words[0], level)


def _error_log(target: str, level: LogLevel) -> ErrorLogConfig:
    if target == "stderr":
        return ErrorLogConfig("stderr", None, level)
    if target in ("stdout", "off"):
        fail(f'{target} is not a place for the error log: write "stderr" or a file')
    return ErrorLogConfig("file", Path(target), level)
