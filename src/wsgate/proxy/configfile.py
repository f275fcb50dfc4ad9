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
    NOT_INHERITED,
    Directive,
    Location,
    ProxyConfig,
    ServerConfig,
    UpstreamConfig,
    VirtualServer,
    check_tls,
    directives,
    parse_directives,
    resolve_paths,
)
from wsgate.proxy.directives import (
    MAP_NAMES,
    check_servers,
    closest,
    distinct_listeners,
    key_name,
)
from wsgate.proxy.location_values import LogFormatConfig, MapConfig, log_format, map_config
from wsgate.proxy.locations import parse_key
from wsgate.proxy.variables import is_request_variable
from wsgate.values import Invalid, blame, fail, host_port, show

KeyPath = tuple[str | int, ...]

_NGINX_HINTS = {
    "ip_hash": 'write balance = "ip_hash" in the [upstream.NAME] table',
    "least_conn": 'write balance = "least_conn" in the [upstream.NAME] table',
    "set_real_ip_from": "write trusted_proxies = [...] at the top of the file",
    "real_ip_header": "not needed: X-Forwarded-For from trusted_proxies is used",
}

_SERVER_ONLY = frozenset({"listen", "server_name", "return", "location"})
"""Top-level keys of a one-server file that a file with [[server]] puts in each server."""
_LOCATION_ONLY = frozenset({"proxy_pass", "try_files"})
"""Location directives that nginx refuses at the server and http levels (wsgate refuses a
server-level try_files too: put it in location "/")."""
_KEYS = {
    "location": list(dict.fromkeys(
        [*(declared.key for _, declared in directives(Location)), "location"])),
    "upstream": [declared.key for _, declared in directives(UpstreamConfig)],
    "server": list(dict.fromkeys(
        [*(declared.key for _, declared in directives(VirtualServer)),
         *(declared.key for _, declared in directives(Location)
           if declared.key not in _LOCATION_ONLY), "location"])),
    "top": list(dict.fromkeys(
        [*(declared.key for _, declared in directives(ProxyConfig)), *BLOCKS,
         *(declared.key for _, declared in directives(VirtualServer)),
         *(declared.key for _, declared in directives(Location)
           if declared.key not in _LOCATION_ONLY)])),
}
"""The keys of each kind of table, and (in this order) where a misplaced key belongs."""
_HOME = {
    "top": "belongs at the top of the file, before any [table]",
    "server": "belongs in a [[server]] table, or at the top of a file without [[server]]",
    "location": 'belongs in a [location."/..."] table',
    "upstream": "belongs in an [upstream.NAME] table",
}
_LOCAL_FIELDS = frozenset(
    name for name, declared in directives(Location) if declared.key in NOT_INHERITED)
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
    return from_document(document, Path(path).absolute().parent, source)


def from_document(document: dict[str, Any], base: Path, source: str,
                  origins: Mapping[str, str] | None = None, ignored: tuple[str, ...] = (),
                  syntax: str = "toml") -> ProxyConfig:
    """The configuration a TOML document (or an nginx file translated into one) describes;
    a mistake is a ConfigError naming the file and the key, or the nginx line."""
    try:
        return _from_document(document, base, source, origins, ignored, syntax)
    except Invalid as error:
        raise config_error(source, origins or {}, error) from None


def config_error(source: str, origins: Mapping[str, str], error: Invalid) -> ConfigError:
    """``file: key: what`` (TOML), or nginx's ``what in file:line`` when the key came from
    an nginx file."""
    if origins:
        label = error.where or ""
        while label and label not in origins:
            cut = max(label.rfind("."), label.rfind("["))
            label = label[:cut] if cut > 0 else ""
        if label:
            return ConfigError(f"{error.message} in {origins[label]}")
    return ConfigError(f"{source}: {error}")


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


def _read(cls: type, table: Mapping[str, Any], path: KeyPath,
          skip: frozenset[str] = frozenset()) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Every directive of ``cls`` set in ``table`` (but those in ``skip``), parsed, each
    blamed on its key path."""

    def given(declared: Directive) -> list[tuple[str, object]] | None:
        if declared.key not in table or declared.key in skip:
            return None
        where = _key((*path, declared.key))
        value = table[declared.key]
        return _items(value, where) if declared.many else [(where, value)]

    return parse_directives(cls, given)


def _from_document(document: dict[str, Any], base: Path, source: str,
                   origins: Mapping[str, str] | None, ignored: tuple[str, ...],
                   syntax: str) -> ProxyConfig:
    top = _table(document, (), "top")
    captures = _captures(document)
    token = MAP_NAMES.set(captures)
    try:
        maps = _maps(top.get("map", {}))
    finally:
        MAP_NAMES.reset(token)
    token = MAP_NAMES.set(frozenset(maps) | captures)
    try:
        values, _ = _read(ProxyConfig, top, ())
        log_formats = _log_formats(top.get("log_format", {}))
        upstreams = _upstreams(top.get("upstream", {}))
        servers = _servers(top, upstreams)
    finally:
        MAP_NAMES.reset(token)
    config = ProxyConfig(**values, upstreams=MappingProxyType(upstreams),
                         maps=MappingProxyType(maps), log_formats=MappingProxyType(log_formats),
                         servers=servers, source=source,
                         origins=MappingProxyType(dict(origins or {})), ignored=ignored,
                         syntax=syntax)
    _check_log_format(config)
    return resolve_paths(config, base)


_CAPTURE = re.compile(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>|\(\?'([A-Za-z_][A-Za-z0-9_]*)'")


def _captures(value: object) -> frozenset[str]:
    """The named captures of every regex in the file (locations, server names, map keys):
    each is a variable, as in nginx."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(_names_in(key))
            found.update(_captures(item))
    elif isinstance(value, list):
        for item in value:
            found.update(_captures(item))
    elif isinstance(value, str):
        found.update(_names_in(value))
    return frozenset(found)


def _names_in(text: str) -> list[str]:
    return [match[1] or match[2] for match in _CAPTURE.finditer(text)] if "(?" in text else []


def _maps(value: object) -> dict[str, MapConfig]:
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of [map.NAME] tables, got {show(value)}", "map")
    maps: dict[str, MapConfig] = {}
    for name in value:
        with blame(_key(("map", name))):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                fail("a map's name is its variable's, without the $ (letters, digits, _)")
            if is_request_variable(name):
                fail(f"${name} is a built-in variable: choose another name")
    token = MAP_NAMES.set(MAP_NAMES.get() | frozenset(value))  # a map's value may use another
    # map, or a named capture
    try:
        for name, body in value.items():
            with blame(_key(("map", name))):
                maps[name] = map_config(name, body)
    finally:
        MAP_NAMES.reset(token)
    return maps


def _log_formats(value: object) -> dict[str, LogFormatConfig]:
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of formats, got {show(value)}", "log_format")
    found: dict[str, LogFormatConfig] = {}
    for name, body in value.items():
        with blame(_key(("log_format", name))):
            if name == "combined":
                fail('duplicate "log_format" name "combined" (it is built in)')
            found[name] = log_format(name, body)
    return found


def _check_log_format(config: ProxyConfig) -> None:
    wanted = config.access_log.format
    if wanted not in ("combined", "json") and wanted not in config.log_formats:
        known = ", ".join(["combined", "json", *config.log_formats])
        raise Invalid(f"unknown log format {show(wanted)} (known: {known})", "access_log.format")


# -- servers and locations ---------------------------------------------------------------------


def _servers(top: dict[str, Any], upstreams: dict[str, UpstreamConfig]
             ) -> tuple[VirtualServer, ...]:
    """The ``[[server]]`` tables, or the top level as the one server; each inherits the
    top level's server and location directives."""
    server_defaults, _ = _read(VirtualServer, top, (), skip=_SERVER_ONLY)
    location_defaults, _ = _read(Location, top, (), skip=NOT_INHERITED)
    if "server" not in top:
        return (_server(top, (), {}, location_defaults, upstreams, shorthand=True),)
    for name in _SERVER_ONLY:
        if name in top:
            raise Invalid("with [[server]] tables, this belongs in each server", _key((name,)))
    listed = top["server"]
    if not isinstance(listed, list) or not listed:
        raise Invalid("must be an array of tables: [[server]]", "server")
    return tuple(_server(body, ("server", index), server_defaults, location_defaults,
                         upstreams)
                 for index, body in enumerate(listed))


def _server(body: object, path: KeyPath, server_defaults: dict[str, Any],
            location_defaults: dict[str, Any], upstreams: dict[str, UpstreamConfig],
            shorthand: bool = False) -> VirtualServer:
    table = _table(body, path, "top" if shorthand else "server")
    listen_path = _key((*path, "listen"))
    if "listen" not in table:
        raise Invalid('required (e.g. listen = ["127.0.0.1:8080"])', listen_path)
    if table["listen"] == []:
        raise Invalid('must list at least one address (e.g. "127.0.0.1:8080")', listen_path)
    own, where = _read(VirtualServer, table, path)
    values = {**server_defaults, **own}
    distinct_listeners(values["listeners"], where["listeners"])
    shown = [str(item) for _, item in _items(table["listen"], listen_path)]
    if any(item.ssl for item in values["listeners"]) or not shorthand:
        _check_server_tls(values, shown, own, path)
    else:
        check_tls(values["listeners"], shown, values.get("ssl_certificate"),
                  values.get("ssl_certificate_key"),
                  ("ssl_certificate", "ssl_certificate_key", "listen"))
    inherited = {**location_defaults, **_read(Location, table, path, skip=NOT_INHERITED)[0]}
    defaults = Location("", **inherited, label=_key(path))
    locations = _locations(table.get("location"), (*path, "location"), inherited, upstreams)
    if not locations and values.get("return_") is None and inherited.get("root") is None:
        raise Invalid(f"at least one is required, e.g. {_EXAMPLE_LOCATION}" if shorthand else
                      'a server needs a location (e.g. [server.location."/"] with '
                      'proxy_pass = "http://backend"), a return or a root',
                      _key((*path, "location")))
    return VirtualServer(**values, locations=locations, defaults=defaults, label=_key(path),
                         tls_label=_key(path) if "ssl_certificate" in own else "")


def _check_server_tls(values: dict[str, Any], shown: list[str], own: dict[str, Any],
                      path: KeyPath) -> None:
    """nginx: an ssl listener needs the certificate and key (set here or above); a server
    without one may inherit them, but not set them itself."""
    first_ssl = next((text for item, text in zip(values["listeners"], shown, strict=True)
                      if item.ssl), None)
    for name in ("ssl_certificate", "ssl_certificate_key"):
        if first_ssl is not None and values.get(name) is None:
            raise Invalid(f"required because listen {show(first_ssl)} uses ssl",
                          _key((*path, name)))
        if first_ssl is None and name in own:
            raise Invalid('no listen of this server uses ssl (add " ssl", e.g. '
                          '"0.0.0.0:443 ssl")', _key((*path, name)))


def _locations(value: object, path: KeyPath, inherited: dict[str, Any],
               upstreams: dict[str, UpstreamConfig]) -> tuple[Location, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of locations like {_EXAMPLE_LOCATION}, got "
                      f"{show(value)}", _key(path))
    found: list[Location] = []
    for key, body in value.items():
        where: KeyPath = (*path, key)
        if not isinstance(body, dict):
            raise Invalid(f'a location is a path like "/" with a table, e.g. '
                          f"{_EXAMPLE_LOCATION}", _key(where))
        with blame(_key(where)):
            parse_key(key)
        found.append(_location(key, body, where, inherited, upstreams))
    return tuple(found)


def _location(key: str, body: object, path: KeyPath, inherited: dict[str, Any],
              upstreams: dict[str, UpstreamConfig]) -> Location:
    table = _table(body, path, "location")
    own, _ = _read(Location, table, path)
    values = {**inherited, **own}
    label = _key(path)
    inner = {name: value for name, value in values.items() if name not in _LOCAL_FIELDS}
    children = _locations(table.get("location"), (*path, "location"), inner, upstreams)
    if len(own.get("try_files", ())) == 1:
        raise Invalid("needs files to try and then a fallback (nginx: invalid number of "
                      'arguments), e.g. ["$uri", "=404"]', _key((*path, "try_files")))
    target = values.get("proxy_pass")
    if target is not None:
        with blame(_key((*path, "proxy_pass"))):
            modifier = parse_key(key).modifier
            if target.uri is not None and not target.variable and modifier in (
                    "regex", "iregex", "named"):
                fail("proxy_pass cannot have a URI part in a location given by a regular "
                     "expression or in a named location (as in nginx)")
            if target.upstream is not None:
                upstream_for(target.upstream, upstreams)
    elif values.get("return_") is None and values.get("root") is None and not children:
        if "try_files" in own:
            raise Invalid("try_files needs a root (here or above)", _key((*path, "try_files")))
        raise Invalid('needs a handler: proxy_pass, return, or root (e.g. proxy_pass = '
                      '"http://backend")', label)
    return Location(key, **values, locations=children, label=label)


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
