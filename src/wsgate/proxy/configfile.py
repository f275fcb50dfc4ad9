"""A TOML configuration file -> :class:`~wsgate.proxy.config.ProxyConfig`.

The file's tables are walked by the directives the schema declares. Every mistake is one
:class:`~wsgate.errors.ConfigError` line naming the file, the key path as TOML spells it
(``upstream.websocket.server[1]``) and what is wrong, with a hint where an nginx user's
habit or a typo explains it. Relative paths are relative to the file's folder. Reading the
file is the only I/O; whether the files it names can be opened is
:mod:`~wsgate.proxy.preflight`'s to find out.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wsgate.errors import ConfigError
from wsgate.proxy.config import (
    BLOCKS,
    Directive,
    Location,
    ProxyConfig,
    ServerConfig,
    UpstreamConfig,
    check_tls,
    directives,
    parse_directives,
    resolve_paths,
)
from wsgate.proxy.directives import check_servers, closest, distinct_listeners, key_name
from wsgate.values import Invalid, blame, host_port, show

KeyPath = tuple[str | int, ...]

_NGINX_HINTS = {
    "proxy_http_version": "not needed: wsgate always speaks HTTP/1.1 to upstreams",
    "server_name": "not needed: wsgate serves the same locations whatever the Host",
    "map": "not needed: wsgate sets the Upgrade and Connection headers itself",
    "ip_hash": 'write balance = "ip_hash" in the [upstream.NAME] table',
    "least_conn": 'write balance = "least_conn" in the [upstream.NAME] table',
    "set_real_ip_from": "write trusted_proxies = [...] at the top of the file",
    "real_ip_header": "not needed: X-Forwarded-For from trusted_proxies is used",
}

_KEYS = {
    "top": [*(declared.key for _, declared in directives(ProxyConfig)), *BLOCKS],
    "upstream": [declared.key for _, declared in directives(UpstreamConfig)],
    "location": [declared.key for _, declared in directives(Location)],
}
_HOME = {
    "top": "belongs at the top of the file, before any [table]",
    "location": 'belongs in a [location."/..."] table',
    "upstream": "belongs in an [upstream.NAME] table",
}
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_EXAMPLE_LOCATION = '[location."/"] with proxy_pass = "http://backend"'


def load(path: str | Path) -> ProxyConfig:
    """Read and check a TOML config; any mistake is one ConfigError line naming file and key."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{source}: line {line}: invalid TOML: not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: {_toml_error(str(error))}") from None
    try:
        return _from_document(document, Path(path).absolute().parent, source)
    except Invalid as error:
        raise ConfigError(f"{source}: {error}") from None


def _toml_error(message: str) -> str:
    """tomllib's "Invalid value (at line 3, column 5)" as "line 3, column 5: invalid TOML:
    invalid value": where first, as in every other message of ours."""
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message)
    if match:
        what = match[1][:1].lower() + match[1][1:]
        return f"line {match[2]}, column {match[3]}: invalid TOML: {what}"
    match = re.fullmatch(r"(.*) \(at end of document\)", message)
    if match:
        what = match[1][:1].lower() + match[1][1:]
        return f"end of file: invalid TOML: {what}"
    return f"invalid TOML: {message}"


# -- the walk ----------------------------------------------------------------------------------


def _key(path: KeyPath) -> str:
    """A key path as TOML spells it: ``location."/".proxy_pass``, ``server[1]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{key_name(part)}" if text else key_name(part)
    return text


def _unknown_key(name: str, kind: str) -> str:
    if name in _NGINX_HINTS:
        return f"unknown key: {_NGINX_HINTS[name]}"
    for home, keys in _KEYS.items():
        if home != kind and name in keys:
            return f"unknown key here: it {_HOME[home]}"
    known = _KEYS[kind]
    guess = closest(name, known)
    if guess is not None:
        return f"unknown key (did you mean {guess}?)"
    return f"unknown key (known: {', '.join(known)})"


def _table(value: object, path: KeyPath, kind: str) -> dict[str, Any]:
    """A table of ``kind``: an unknown key is an error before any value is looked at."""
    if not isinstance(value, dict):
        raise Invalid(f"must be a table, got {show(value)}", _key(path))
    for name in value:
        if name not in _KEYS[kind]:
            raise Invalid(_unknown_key(name, kind), _key((*path, name)))
    return value


def _items(value: object, where: str) -> list[tuple[str, object]]:
    """The items of a key that takes one value or an array, each with where it is."""
    if isinstance(value, list):
        return [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    return [(where, value)]


def _read(cls: type, table: Mapping[str, Any], path: KeyPath) -> tuple[dict[str, Any],
                                                                   dict[str, list[str]]]:
    """Every directive of ``cls`` set in ``table``, parsed, each blamed on its key path."""

    def given(declared: Directive) -> list[tuple[str, object]] | None:
        if declared.key not in table:
            return None
        where = _key((*path, declared.key))
        value = table[declared.key]
        return _items(value, where) if declared.many else [(where, value)]

    return parse_directives(cls, given)


def _from_document(document: dict[str, Any], base: Path, source: str) -> ProxyConfig:
    top = _table(document, (), "top")
    if "listen" not in top:
        raise Invalid('required (e.g. listen = ["127.0.0.1:8080"])', "listen")
    if top["listen"] == []:
        raise Invalid('must list at least one address (e.g. "127.0.0.1:8080")', "listen")
    values, where = _read(ProxyConfig, top, ())
    distinct_listeners(values["listeners"], where["listeners"])
    shown = [str(item) for _, item in _items(top["listen"], "listen")]
    check_tls(values["listeners"], shown, values.get("ssl_certificate"),
              values.get("ssl_certificate_key"), ("ssl_certificate", "ssl_certificate_key",
                                                  "listen"))
    upstreams = _upstreams(top.get("upstream", {}))
    locations = _locations(top.get("location"), upstreams)
    config = ProxyConfig(**values, upstreams=MappingProxyType(upstreams), locations=locations,
                         source=source)
    return resolve_paths(config, base)


def _upstreams(value: object) -> dict[str, UpstreamConfig]:
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of [upstream.NAME] tables, got {show(value)}",
                      "upstream")
    upstreams: dict[str, UpstreamConfig] = {}
    for name, body in value.items():
        path: KeyPath = ("upstream", name)
        if not _UPSTREAM_NAME.fullmatch(name):
            raise Invalid('an upstream name is letters, digits, ".", "-" and "_"', _key(path))
        upstreams[name] = _upstream(name, body, path)
    return upstreams


def _upstream(name: str, body: object, path: KeyPath) -> UpstreamConfig:
    table = _table(body, path, "upstream")
    values, where = _read(UpstreamConfig, table, path)
    method = values.get("balance", "round_robin")
    if method == "hash" and "hash" not in table:
        raise Invalid('required because balance = "hash" (e.g. hash = "$remote_addr")',
                      _key((*path, "hash")))
    for key in ("hash", "consistent"):
        if method != "hash" and key in table:
            raise Invalid('only with balance = "hash"', _key((*path, key)))
    if "server" not in table:
        raise Invalid('required: at least one server (e.g. server = ["localhost:8010"])',
                      _key((*path, "server")))
    if not values["servers"]:
        raise Invalid('must list at least one server (e.g. "localhost:8010")',
                      _key((*path, "server")))
    check_servers(values["servers"], method, where["servers"])
    return UpstreamConfig(name, **values)


def _locations(value: object, upstreams: dict[str, UpstreamConfig]) -> tuple[Location, ...]:
    if value is None or value == {}:
        raise Invalid(f"at least one is required, e.g. {_EXAMPLE_LOCATION}", "location")
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of locations like {_EXAMPLE_LOCATION}, got "
                      f"{show(value)}", "location")
    locations: list[Location] = []
    for prefix, body in value.items():
        path: KeyPath = ("location", prefix)
        if not prefix.startswith("/"):
            hint = "" if isinstance(body, dict) else f", e.g. {_EXAMPLE_LOCATION}"
            raise Invalid(f'a location is a path prefix starting with "/"{hint}', _key(path))
        if any(char.isspace() or ord(char) < 32 or char == "\x7f" for char in prefix):
            raise Invalid("a location prefix cannot contain spaces or control characters",
                          _key(path))
        locations.append(_location(prefix, body, path, upstreams))
    locations.sort(key=lambda location: (-len(location.prefix), location.prefix))
    return tuple(locations)


def _location(prefix: str, body: object, path: KeyPath,
              upstreams: dict[str, UpstreamConfig]) -> Location:
    table = _table(body, path, "location")
    if "proxy_pass" not in table:
        raise Invalid('required (e.g. proxy_pass = "http://backend")',
                      _key((*path, "proxy_pass")))
    values, _ = _read(Location, table, path)
    with blame(_key((*path, "proxy_pass"))):
        values["upstream"] = upstream_for(values["upstream"], upstreams)
    return Location(prefix, **values)


def upstream_for(target: str, upstreams: dict[str, UpstreamConfig]) -> str:
    """The upstream a ``proxy_pass`` target names: a defined group, or ``host:port``, which
    becomes a group of its own (added to ``upstreams``) as in nginx."""
    if ":" in target:
        if target not in upstreams:
            host, number = host_port(target)
            upstreams[target] = UpstreamConfig(target, (ServerConfig(host, number),))
        return target
    if target not in upstreams:
        defined = ", ".join(name for name in upstreams if ":" not in name) or "none"
        hint = ""
        if target == "localhost" or re.fullmatch(r"[0-9.]+", target):
            hint = f'; a single server needs its port, e.g. "{target}:80"'
        raise Invalid(f"no upstream named {show(target)} (defined: {defined}){hint}")
    return target
