"""nginx syntax -> the TOML document wsgate reads (docs/configuration.md).

crossplane, nginx's own Python parser, reads the file and its includes (relative ones
against the main file's folder, as nginx resolves them against its conf prefix). This
module then walks the statements the way nginx reads them: each directive checked against
its context with crossplane's tables (so a misplaced one fails in nginx's words), taken,
ignored, or refused with ``unsupported directive "X" in FILE:LINE``. The result is exactly
what :func:`tomllib.loads` would return for the equivalent TOML file, with the nginx line
behind every key, so :mod:`wsgate.proxy.convert` can print it and a later error about a key
can name the nginx line it came from.

What nginx does by default survives the translation where wsgate's default differs: every
level with ``proxy_set_header`` lines starts from nginx's headers (Host $proxy_host and no
X-Forwarded-*), an upstream without ``keepalive`` keeps no connections, a server without
``listen`` listens on 80.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsgate.errors import ConfigError
from wsgate.proxy import nginxrules as rules
from wsgate.proxy.nginxparse import Stmt, load
from wsgate.proxy.nginxrules import Refused, label
from wsgate.proxy.nginxwalk import (
    EVENTS,
    HTTP,
    LOCATION,
    MAIN,
    SERVER,
    Context,
    Level,
    Origin,
    Walk,
    allowed,
    args_of,
    at,
    origin_at,
)

__all__ = ["Origin", "Translated", "origin_of", "translate"]


@dataclass(frozen=True, slots=True)
class Translated:
    """An nginx config as the TOML document, and where each of its keys came from.

    ``defaults`` holds the labels whose values nginx assumes without a line saying so
    (``listen 80``, ``keepalive 0``, its proxy_set_header defaults): their origin is the
    block they belong to. ``source`` is the main file as crossplane names it (the path
    given to :func:`translate`), whose folder relative includes are found in.
    """

    document: dict[str, Any]
    origins: dict[str, Origin]
    ignored: tuple[str, ...]
    handled: tuple[Origin, ...]
    defaults: frozenset[str] = frozenset()
    source: str = ""


_LABEL_PART = re.compile(r'\.?(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\[\d+\])')


def origin_of(origins: Mapping[str, Origin], label: str) -> Origin | None:
    """The origin of ``label``, or of the longest key path it extends that has one (a
    value a reader derived from a key, ``server[0].listen[0]`` inside ``listen``)."""
    prefixes, position = [], 0
    while position < len(label):
        match = _LABEL_PART.match(label, position)
        if match is None:
            break
        position = match.end()
        prefixes.append(label[:position])
    for prefix in [label, *reversed(prefixes)]:
        if prefix in origins:
            return origins[prefix]
    return None


def translate(path: Path) -> Translated:
    """Read an nginx config (a whole nginx.conf, an ``http { }`` block alone, or a conf.d
    snippet taken as if inside ``http``); any mistake is one ConfigError in nginx's form."""
    walker = _Walker(load(path))
    walker.run()
    return Translated(walker.document, walker.origins, tuple(walker.ignored),
                      tuple(walker.handled), frozenset(walker.defaults), str(path))


class _Walker(Walk):
    """The http, server and location levels, and what they imply once read."""

    def __init__(self, configs: list[Stmt]) -> None:
        super().__init__(configs)
        self.access_logs: list[tuple[str | dict[str, Any], Origin, bool]] = []
        self.error_log: Origin | None = None
        self.main_seen: dict[str, Origin] = {}

    def run(self) -> None:
        first = self.configs[0]
        top = list(self.flat(first["parsed"], first["file"]))
        whole = any(stmt["directive"] == "http" for stmt, _ in top)
        http = Level("http", self.document, "", Origin(first["file"], 0, ""))
        for stmt, file in top:
            main = whole or allowed(stmt["directive"], MAIN)
            self.check(stmt, file, MAIN if main else HTTP)
            self.statement(http, stmt, file, main)
        self.finish(http)
        self.place_access_log()

    def block(self, level: Level, stmts: list[Stmt], file: str, context: Context) -> None:
        for stmt, where in self.flat(stmts, file):
            self.check(stmt, where, context)
            self.statement(level, stmt, where, False)

    def statement(self, level: Level, stmt: Stmt, file: str, main: bool) -> None:
        name, origin = stmt["directive"], origin_at(stmt, file)
        with at(origin):
            if rules.ignored(name):
                self.ignore(name)
            elif main:
                self.main(level, name, args_of(stmt), origin, stmt)
            else:
                self.directive(level, name, args_of(stmt), origin, stmt)

    def main(self, http: Level, name: str, words: list[str], origin: Origin,
             stmt: Stmt) -> None:
        if name in rules.DUPLICATE:
            if name in self.main_seen:
                raise Refused(f'"{name}" directive is duplicate')
            self.main_seen[name] = origin
        if name == "http":
            http.origin = origin
            self.block(http, stmt["block"], origin.file, HTTP)
        elif name == "events":
            for inner, file in self.flat(stmt["block"], origin.file):
                self.check(inner, file, EVENTS)
                self.ignore(inner["directive"])
        elif name == "error_log":
            self.set_error_log(words, origin)
        elif name == "worker_processes":
            value = "auto" if words[0] == "auto" else rules.integer(name, words[0])
            self.put(http, name, value, origin)
        elif name in ("worker_shutdown_timeout", "pid", "user"):
            self.put(http, name, " ".join(words), origin)
        else:
            raise Refused(f'unsupported directive "{name}"')

    def directive(self, level: Level, name: str, words: list[str], origin: Origin,
                  stmt: Stmt) -> None:
        """One directive of an http, server or location block."""
        if name in rules.DUPLICATE and name in level.seen:
            raise Refused(f'"{name}" directive is duplicate')
        if name in rules.ONCE and name in level.seen:
            raise Refused(f'a second "{name}" here is not supported: {rules.ONCE[name]}')
        level.seen.setdefault(name, origin)
        if name in rules.SERVER_LEVEL and level.kind == "location":
            raise Refused(f'"{name}" in a location is not supported: wsgate takes it from '
                          "the server")
        if name in ("types", "client_body_timeout") and level.kind != "http":
            raise Refused(f'"{name}" is only supported at the http level: wsgate has one '
                          "for all servers")
        if name in rules.WORD:
            self.put(level, name, words[0], origin)
        elif name in rules.JOINED:
            self.put(level, name, " ".join(words), origin)
        elif name in rules.LIST:
            self.put(level, name, words, origin)
        elif name in rules.PER_LINE:
            self.extend(level, name, [" ".join(words)] if rules.PER_LINE[name] else words,
                        origin)
        elif name == "listen":
            value, dropped = rules.listen(words)
            self.extend(level, name, [value], origin)
            for item in dropped:
                self.ignore(item)
        else:
            self.special(level, name, words, origin, stmt)

    def special(self, level: Level, name: str, words: list[str], origin: Origin,
                stmt: Stmt) -> None:
        """The directives with a rule of their own."""
        if name == "proxy_next_upstream_tries":
            self.put(level, name, rules.integer(name, words[0]), origin)
        elif name == "proxy_http_version":
            if words[0] not in ("1.0", "1.1"):
                raise Refused(f'invalid value "{words[0]}"')
            self.put(level, name, words[0], origin)
        elif name == "proxy_redirect":
            if words not in (["default"], ["off"]):
                raise Refused('unsupported "proxy_redirect" form: wsgate takes "default" or '
                              '"off"')
            self.put(level, name, words[0], origin)
        elif name == "keepalive_timeout":
            self.put(level, name, words[0], origin)
            if len(words) > 1:
                self.ignore("keepalive_timeout (header timeout)")
        elif name == "server_tokens":
            if words[0] not in ("on", "off", "build"):
                raise Refused(f'invalid value "{words[0]}"')
            self.put(level, name, words[0] != "off", origin)
        elif name == "return":
            self.put(level, name, rules.return_value(words), origin)
        elif name == "proxy_set_header":
            if level.headers is None:
                level.headers, level.header_origin = [], origin
            if words[0].lower() in rules.HANDLED_HEADERS:
                self.handled.append(origin)
            else:
                level.headers.append((words[0], words[1], origin))
        elif name == "access_log":
            value, dropped = rules.access_log(words)
            self.access_logs.append((value, origin, level.kind == "http"))
            for item in dropped:
                self.ignore(item)
        elif name == "error_log":
            self.set_error_log(words, origin)
        elif name == "location":
            self.location(level, words, origin, stmt)
        elif name == "server":
            self.server(origin, stmt)
        elif name == "upstream":
            self.upstream(words, origin, stmt)
        elif name == "map":
            self.map(words, origin, stmt)
        elif name == "types":
            self.types(origin, stmt)
        elif name == "log_format":
            self.log_format(words, origin)
        else:
            raise Refused(f'unsupported directive "{name}"')

    def set_error_log(self, words: list[str], origin: Origin) -> None:
        if self.error_log is not None:
            first = self.error_log
            raise Refused(f'a second "error_log": wsgate writes one error log (the first is '
                          f"in {first.file}:{first.line})")
        self.error_log = origin
        self.document["error_log"] = rules.error_log(words)
        self.origins["error_log"] = origin

    def server(self, origin: Origin, stmt: Stmt) -> None:
        if "server" not in self.document:
            self.document["server"] = []
            self.origins["server"] = origin
        servers = self.document["server"]
        level = Level("server", {}, label("server", len(servers)), origin)
        servers.append(level.table)
        self.origins[level.label] = origin
        self.block(level, stmt["block"], origin.file, SERVER)
        self.finish(level)

    def location(self, parent: Level, words: list[str], origin: Origin, stmt: Stmt) -> None:
        key, modifier, name = rules.location_key(words)
        if parent.location is not None:
            rules.check_nesting(parent.location, (modifier, name))
        same = key if modifier in ("~", "~*") else (modifier == "=", name)
        if same in parent.locations:
            raise Refused(f'duplicate location "{name}"')
        parent.locations.add(same)
        if "location" not in parent.table:
            self.put(parent, "location", {}, origin)
        level = Level("location", {}, label(parent.label, "location", key), origin,
                       (modifier, name))
        parent.table["location"][key] = level.table
        self.origins[level.label] = origin
        self.block(level, stmt["block"], origin.file, LOCATION)
        self.finish(level)

    def finish(self, level: Level) -> None:
        """What a block implies once all its lines are read: nginx's defaults."""
        if level.kind == "server" and "listen" not in level.table:
            self.put(level, "listen", ["80"], level.origin, default=True)
        if level.headers is None and level.kind != "http":
            return
        base = label(level.label, "proxy_set_header")
        table_origin = level.header_origin or level.origin
        headers: dict[str, tuple[str, Origin, bool]] = {
            name: (value, table_origin, True) for name, value in rules.NGINX_SET_HEADERS.items()}
        for name, value, origin in level.headers or []:
            old = next((key for key in headers if key.lower() == name.lower()), None)
            if old is not None and not headers[old][2]:
                raise ConfigError(f'proxy_set_header "{name}" is set twice here (wsgate sends '
                                  f"one value) in {origin.file}:{origin.line}")
            headers = {(name if key == old else key): entry for key, entry in headers.items()}
            headers[name] = (value, origin, False)
        self.put(level, "proxy_set_header", {key: value for key, (value, _, _) in
                                             headers.items()}, table_origin)
        if level.headers is None:
            self.defaults.add(base)
        for key, (_, origin, default) in headers.items():
            self.origins[label(base, key)] = origin
            if default:
                self.defaults.add(label(base, key))

    def place_access_log(self) -> None:
        """wsgate writes one access log: the http level's, or the one every level agrees on."""
        if not self.access_logs:
            return
        value, origin, _ = next((entry for entry in self.access_logs if entry[2]),
                                self.access_logs[0])
        for other, where, _ in self.access_logs:
            if other != value:
                raise ConfigError(
                    f'wsgate writes one access log, but "{origin.text}" in {origin.file}:'
                    f'{origin.line} and "{where.text}" in {where.file}:{where.line} differ')
        if isinstance(value, dict) and value["format"] not in self.document.get("log_format",
                                                                                {}):
            raise ConfigError(f'unknown log format "{value["format"]}" in {origin.file}:'
                              f"{origin.line}")
        self.document["access_log"] = value
        self.origins["access_log"] = origin
        if isinstance(value, dict):
            for key in value:
                self.origins[label("access_log", key)] = origin

