"""The walk under the nginx reader (:mod:`wsgate.proxy.nginxconf`): its state, the
statement lists with their includes put in place, nginx's context checks, and the top-level
blocks that hold named things (upstream, map, types, log_format). The http, server and
location levels, where inheritance and nginx's defaults live, are nginxconf's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from crossplane.analyzer import CONTEXTS, DIRECTIVES, analyze  # type: ignore[import-untyped]
from crossplane.errors import NgxParserDirectiveError  # type: ignore[import-untyped]

from wsgate.errors import ConfigError
from wsgate.proxy import nginxrules as rules
from wsgate.proxy.nginxparse import Stmt
from wsgate.proxy.nginxrules import Refused, label

Context = tuple[str, ...]
MAIN: Context = ()
HTTP: Context = ("http",)
SERVER: Context = ("http", "server")
LOCATION: Context = ("http", "location")
UPSTREAM: Context = ("http", "upstream")
EVENTS: Context = ("events",)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a key came from: the file as crossplane names it, the line, the directive."""

    file: str
    line: int
    text: str


def origin_at(stmt: Stmt, file: str) -> Origin:
    return Origin(file, stmt["line"],
                  rules.directive_text(stmt["directive"], stmt["args"], "block" in stmt))


@contextmanager
def at(origin: Origin) -> Iterator[None]:
    """A rule's refusal, said with where the line is."""
    try:
        yield
    except Refused as error:
        raise ConfigError(f"{error} in {origin.file}:{origin.line}") from None


def args_of(stmt: Stmt) -> list[str]:
    return [rules.unescape(word) for word in stmt["args"]]


def allowed(name: str, context: Context) -> bool:
    return any(mask & CONTEXTS[context] for mask in DIRECTIVES.get(name, ()))


# -- the walk ----------------------------------------------------------------------------


@dataclass(slots=True)
class Level:
    """A table being filled from a block: http, server, location, upstream or map."""

    kind: str
    table: dict[str, Any]
    label: str
    origin: Origin
    location: tuple[str, str] | None = None
    seen: dict[str, Origin] = field(default_factory=dict)
    locations: set[object] = field(default_factory=set)
    headers: list[tuple[str, str, Origin]] | None = None
    header_origin: Origin | None = None


class Walk:
    """The state of a walk: the document, its origins, and the ignored, handled and
    default lists, filled in file order."""

    def __init__(self, configs: list[Stmt]) -> None:
        self.configs = configs
        self.document: dict[str, Any] = {}
        self.origins: dict[str, Origin] = {}
        self.ignored: dict[str, None] = {}
        self.handled: list[Origin] = []
        self.defaults: set[str] = set()
        self.active = [0]

    def flat(self, stmts: list[Stmt], file: str) -> Iterator[tuple[Stmt, str]]:
        """The statements of a block with its includes put in place, each with its file."""
        for stmt in stmts:
            if stmt["directive"] != "include":
                yield stmt, file
                continue
            if len(stmt["args"]) != 1:
                raise ConfigError('invalid number of arguments in "include" directive in '
                                  f'{file}:{stmt["line"]}')
            for index in stmt.get("includes", ()):
                config = self.configs[index]
                if index in self.active:
                    raise ConfigError(f'"{config["file"]}" is included from inside itself in '
                                      f'{file}:{stmt["line"]}')
                self.active.append(index)
                try:
                    yield from self.flat(config["parsed"], config["file"])
                finally:
                    self.active.pop()

    def check(self, stmt: Stmt, file: str, context: Context) -> None:
        """nginx's context and argument-count checks, in its words."""
        term = "{" if "block" in stmt else ";"
        try:
            analyze(file, stmt, term, ctx=context, strict=False, check_ctx=True,
                    check_args=True)
        except NgxParserDirectiveError as error:
            raise ConfigError(str(error)) from None

    def ignore(self, name: str) -> None:
        self.ignored.setdefault(name, None)

    def put(self, level: Level, key: str, value: object, origin: Origin,
            default: bool = False) -> None:
        level.table[key] = value
        self.origins[label(level.label, key)] = origin
        if default:
            self.defaults.add(label(level.label, key))

    def extend(self, level: Level, key: str, items: list[str], origin: Origin) -> None:
        if key not in level.table:
            self.put(level, key, [], origin)
        values = level.table[key]
        for item in items:
            self.origins[label(level.label, key, len(values))] = origin
            values.append(item)

    def top_table(self, key: str, origin: Origin) -> dict[str, Any]:
        """A top-level table of named things (upstream, map, types, log_format), made at
        its first line."""
        if key not in self.document:
            self.document[key] = {}
            self.origins[key] = origin
        table: dict[str, Any] = self.document[key]
        return table

    def drop(self, table: dict[str, Any], base: str, key: str) -> None:
        if table.pop(key, None) is not None:
            del self.origins[label(base, key)]

    def upstream(self, words: list[str], origin: Origin, stmt: Stmt) -> None:
        groups = self.top_table("upstream", origin)
        if any(name.lower() == words[0].lower() for name in groups):
            raise Refused(f'duplicate upstream "{words[0]}"')
        level = Level("upstream", {}, label("upstream", words[0]), origin)
        groups[words[0]] = level.table
        self.origins[level.label] = origin
        for inner, file in self.flat(stmt["block"], origin.file):
            self.check(inner, file, UPSTREAM)
            where = origin_at(inner, file)
            with at(where):
                self.upstream_line(level, inner["directive"], args_of(inner), where)
        if "server" not in level.table:
            raise Refused("no servers are inside upstream")
        if "keepalive" not in level.table:
            self.put(level, "keepalive", 0, origin, default=True)

    def upstream_line(self, level: Level, name: str, words: list[str],
                      origin: Origin) -> None:
        table, base = level.table, level.label
        if name in ("zone", "keepalive_requests", "keepalive_time"):
            self.ignore(name)
        elif name == "keepalive_timeout":
            self.ignore("keepalive_timeout (upstream)")
        elif name == "server":
            self.extend(level, "server", [rules.upstream_server(words)], origin)
        elif name in ("least_conn", "ip_hash", "hash"):
            self.drop(table, base, "hash")
            self.drop(table, base, "consistent")
            self.put(level, "balance", name, origin)
            if name == "hash":
                self.put(level, "hash", words[0], origin)
            if len(words) == 2 and words[1] != "consistent":
                raise Refused(f'invalid parameter "{words[1]}"')
            if len(words) == 2:
                self.put(level, "consistent", True, origin)
        elif name == "keepalive":
            if name in level.seen:
                raise Refused('"keepalive" directive is duplicate')
            level.seen[name] = origin
            self.put(level, name, rules.integer(name, words[0]), origin)
        else:
            raise Refused(f'unsupported directive "{name}"')

    def map(self, words: list[str], origin: Origin, stmt: Stmt) -> None:
        source, variable = words
        if not variable.startswith("$") or len(variable) < 2:
            raise Refused(f'invalid variable name "{variable}"')
        maps = self.top_table("map", origin)
        name = variable[1:]
        if name in maps:
            raise Refused(f'the duplicate "{name}" variable')
        level = Level("map", {"source": source}, label("map", name), origin)
        maps[name] = level.table
        self.origins[level.label] = self.origins[label(level.label, "source")] = origin
        values: dict[str, str] = {}
        keys: set[str] = set()
        for inner, file in self.flat(stmt["block"], origin.file):
            where = origin_at(inner, file)
            with at(where):
                self.map_line(level, values, keys, inner, where)
        self.put(level, "values", values, origin)
        for key, where in level.seen.items():
            self.origins[label(level.label, "values", key)] = where

    def map_line(self, level: Level, values: dict[str, str], keys: set[str], stmt: Stmt,
                 origin: Origin) -> None:
        """One line of a map block, as nginx's map module reads it."""
        key, words = rules.unescape(stmt["directive"]), args_of(stmt)
        if "block" in stmt:
            raise Refused('unexpected "{"')
        if not words and key in ("hostnames", "volatile"):
            if key == "volatile":
                self.ignore("volatile")
            else:
                self.put(level, "hostnames", True, origin)
            return
        if len(words) != 1:
            raise Refused("invalid number of the map parameters")
        if key == "default":
            if "default" in level.table:
                raise Refused("duplicate default map parameter")
            self.put(level, "default", words[0], origin)
            return
        if key.startswith("\\"):
            key = key[1:]
            if key.startswith("~"):
                raise Refused(f'unsupported map key "\\{key}": a key starting with "~" is a '
                              "regex in wsgate")
        same = key if key.startswith("~") else key.lower()
        if same in keys:
            raise Refused(f'conflicting parameter "{key}"')
        keys.add(same)
        values[key] = words[0]
        level.seen[key] = origin

    def types(self, origin: Origin, stmt: Stmt) -> None:
        """A types block; as in nginx, an extension given again moves to the later type."""
        types = self.top_table("types", origin)
        owner = {extension: mime for mime, extensions in types.items()
                 for extension in extensions}
        for inner, file in self.flat(stmt["block"], origin.file):
            mime, extensions = rules.unescape(inner["directive"]), args_of(inner)
            if not extensions or "block" in inner:
                raise ConfigError('invalid number of arguments in "types" directive in '
                                  f"{file}:{inner['line']}")
            if mime not in types:
                types[mime] = []
                self.origins[label("types", mime)] = origin_at(inner, file)
            for extension in (word.lower() for word in extensions):
                if extension in owner:
                    types[owner[extension]].remove(extension)
                owner[extension] = mime
                types[mime].append(extension)
        for mime in [mime for mime, extensions in types.items() if not extensions]:
            self.drop(types, "types", mime)

    def log_format(self, words: list[str], origin: Origin) -> None:
        formats = self.top_table("log_format", origin)
        name = words[0]
        if name == "combined" or name in formats:
            raise Refused(f'duplicate "log_format" name "{name}"')
        value = rules.log_format(words[1:])
        formats[name] = value
        self.origins[label("log_format", name)] = origin
        if isinstance(value, dict):
            for key in value:
                self.origins[label("log_format", name, key)] = origin
