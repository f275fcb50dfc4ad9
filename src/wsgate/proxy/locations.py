"""nginx's ``location`` matching, rule for rule (ngx_http_core_find_location).

The order, per level of nesting: an exact (``=``) location equal to the URI wins outright;
else the longest prefix is remembered and its own nested locations are searched the same
way; then this level's regexes in config order, unless that longest prefix was ``^~``. A
regex location that matches ends the search, after its own nested locations had their say.
A proxied location ``/p/`` also answers ``/p`` with a 301 to ``/p/`` (auto_redirect), ahead
of every regex. Prefixes compare bytes, case-sensitively (nginx on Linux).

Each level is precomputed: a dict for the URIs that equal a location's name (and for the
auto_redirect ones), and, for the longest prefix, sorted lists of names none of which is a
prefix of another, searched with :func:`bisect.bisect_right` (the predecessor of the URI is
its only candidate); a matched prefix leads to the list of the longer names it covers. So
the common prefix-only match allocates nothing but its result. Pure.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Generic, Literal, TypeVar

from wsgate.values import Invalid

T = TypeVar("T")

Modifier = Literal["prefix", "exact", "noregex", "regex", "iregex", "named"]

_MODIFIERS: dict[str, Modifier] = {"=": "exact", "^~": "noregex", "~": "regex", "~*": "iregex"}
_SIGNS = {"exact": "= ", "noregex": "^~ ", "regex": "~ ", "iregex": "~* ", "named": "@"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- PCRE ---------------------------------------------------------------------------------------

_POSIX = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r"\t\n\v\f\r ", "blank": r" \t", "xdigit": "0-9A-Fa-f", "word": r"\w",
    "punct": r"!-/:-@\[-`{-~", "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": "!-~",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _translate(pattern: str) -> str:
    """PCRE syntax that Python's ``re`` spells differently: ``(?<n>``, ``(?'n'``, ``\\k<n>``,
    ``\\z``, ``\\Z``, ``\\Q...\\E`` and POSIX classes; the rest is common ground."""
    out: list[str] = []
    i, size, in_class = 0, len(pattern), False
    while i < size:
        char = pattern[i]
        if char == "\\" and i + 1 < size:
            nxt = pattern[i + 1]
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                end = size if end < 0 else end
                out.append(re.escape(pattern[i + 2:end]))
                i = end + 2
                continue
            if nxt == "E":
                i += 2
                continue
            if nxt == "k" and not in_class and i + 2 < size and pattern[i + 2] in "<'{":
                close = {"<": ">", "'": "'", "{": "}"}[pattern[i + 2]]
                end = pattern.find(close, i + 3)
                if end > 0 and _NAME.fullmatch(pattern[i + 3:end]):
                    out.append(f"(?P={pattern[i + 3:end]})")
                    i = end + 1
                    continue
            if not in_class and nxt in "zZ":
                out.append(r"\Z" if nxt == "z" else r"(?=\n?\Z)")
            else:
                out.append(pattern[i:i + 2])
            i += 2
        elif in_class:
            end = pattern.find(":]", i + 2) if pattern.startswith("[:", i) else -1
            if end > 0 and pattern[i + 2:end] in _POSIX:
                out.append(_POSIX[pattern[i + 2:end]])
                i = end + 2
                continue
            in_class = char != "]"
            out.append(char)
            i += 1
        elif char == "[":
            start = i + 1 + (pattern[i + 1:i + 2] == "^")
            start += pattern[start:start + 1] == "]"  # a "]" first is a literal
            out.append(pattern[i:start])
            i, in_class = start, True
        elif pattern.startswith("(?<", i) and pattern[i + 3:i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
        elif pattern.startswith("(?'", i) and (end := pattern.find("'", i + 3)) > 0:
            out.append(f"(?P<{pattern[i + 3:end]}>")
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def compile_regex(pattern: str, caseless: bool = False) -> re.Pattern[bytes]:
    """A PCRE pattern as nginx writes it, compiled with ``re`` for matching bytes.

    Raises :class:`Invalid` worded like nginx's ``pcre2_compile() failed: ... in "..."``.
    """
    python = _translate(pattern)
    try:
        return re.compile(python.encode(), re.IGNORECASE if caseless else 0)
    except (re.error, OverflowError, RecursionError) as error:
        reason = getattr(error, "msg", str(error))
        pos = getattr(error, "pos", None)
        at = f' at "{pattern[pos:]}"' if python == pattern and pos not in (None, 0) else ""
        raise Invalid(f'pcre2_compile() failed: {reason} in "{pattern}"{at}') from None


def groups(match: re.Match[bytes]) -> tuple[tuple[bytes, ...], dict[str, bytes]]:
    """A match's ``$1``.. and named captures; a group that took no part is empty, as in nginx."""
    numbered = tuple(group or b"" for group in match.groups())
    return numbered, {name: value or b"" for name, value in match.groupdict().items()}


# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocationKey:
    """What a ``location`` line says: its modifier and its pattern (a named location's
    pattern is its name without the ``@``)."""

    modifier: Modifier
    pattern: str

    @property
    def name(self) -> str:
        """The name nginx prints in its messages (``/x`` for ``= /x``, ``@x`` for ``@x``)."""
        return "@" + self.pattern if self.modifier == "named" else self.pattern

    def __str__(self) -> str:
        sign = _SIGNS.get(self.modifier, "")
        return sign + self.pattern


def parse_key(text: str) -> LocationKey:
    """A ``location`` line's arguments, as one string: ``"= /x"``, ``"^~ /static/"``,
    ``"~ ^/api/(\\d+)$"``, ``"~* \\.png$"``, ``"@fallback"``, ``"/plain"``; like nginx, the
    modifier may be glued to the pattern (``"=/x"``, ``"~*\\.png$"``)."""
    text = text.strip()
    head, *rest = text.split(None, 1) or [""]
    if rest and head in _MODIFIERS:
        modifier, pattern = _MODIFIERS[head], rest[0]
    elif rest and not head.strip("=^~*"):  # a misspelt modifier, not a glued one
        raise Invalid(f'invalid location modifier "{head}"')
    elif text.startswith("@"):
        modifier, pattern = "named", text[1:]
    elif text[:2] in ("^~", "~*"):
        modifier, pattern = _MODIFIERS[text[:2]], text[2:]
    elif text[:1] in ("=", "~"):
        modifier, pattern = _MODIFIERS[text[:1]], text[1:]
    elif text.startswith("/") or not text:
        modifier, pattern = "prefix", text
    elif rest:
        raise Invalid(f'invalid location modifier "{head}"')
    else:
        raise Invalid(f'a location prefix starts with "/", got "{text}"')
    if not pattern:
        what = "a name after \"@\"" if modifier == "named" else "a path or a regex"
        raise Invalid(f'location "{text}" needs {what}')
    if _CONTROL.search(pattern):
        raise Invalid(f"location {text!r} has a control character")
    if modifier in ("prefix", "exact", "noregex") and not pattern.startswith("/"):
        raise Invalid(f'a location prefix starts with "/", got "{pattern}" in "{text}"')
    if modifier in ("regex", "iregex"):
        compile_regex(pattern, modifier == "iregex")
    return LocationKey(modifier, pattern)


# -- the tree -------------------------------------------------------------------------------


@dataclass(slots=True)
class Node(Generic[T]):
    """One ``location`` block as written: ``label`` says where (for messages); ``proxied``: its
    handler is ``proxy_pass``, which turns on nginx's auto_redirect of ``/p`` to ``/p/``."""

    key: LocationKey
    value: T
    children: list[Node[T]] = field(default_factory=list)
    label: str = ""
    proxied: bool = False


@dataclass(slots=True)
class Match(Generic[T]):
    """The chosen location. ``captures`` and ``named`` come from the regex location that chose
    it (empty for a prefix); ``redirect``: answer 301 to the URI plus ``/`` instead."""

    value: T
    captures: tuple[bytes, ...] = ()
    named: dict[str, bytes] = field(default_factory=dict)
    redirect: bool = False


_DECLINED, _AGAIN, _OK, _DONE = 0, 1, 2, 3  # nginx's answers from a level; final >= _OK


class _Loc(Generic[T]):
    __slots__ = ("level", "noregex", "regex", "value")

    def __init__(self, value: T, level: _Level[T], noregex: bool,
                 regex: re.Pattern[bytes] | None) -> None:
        self.value, self.level, self.noregex, self.regex = value, level, noregex, regex


class _Prefixes(Generic[T]):
    """Names none of which is a prefix of another, sorted; each with the longer names of its
    level that it covers (nginx's ``node->tree``)."""

    __slots__ = ("inner", "locs", "names")

    def __init__(self) -> None:
        self.names: list[bytes] = []
        self.locs: list[_Loc[T]] = []
        self.inner: list[_Prefixes[T] | None] = []


class _Level(Generic[T]):
    """The locations written directly inside one block (or the server)."""

    __slots__ = ("equal", "prefixes", "regexes")

    def __init__(self) -> None:
        self.equal: dict[bytes, tuple[int, _Loc[T]]] = {}  # also the auto_redirect URIs
        self.prefixes: _Prefixes[T] | None = None
        self.regexes: list[_Loc[T]] = []

    def find(self, uri: bytes) -> tuple[int, _Loc[T] | None, re.Match[bytes] | None]:
        """ngx_http_core_find_location for this level: the answer, the location chosen (deepest
        one that matched), and the regex match that chose it."""
        hit = self.equal.get(uri)
        loc: _Loc[T] | None = None
        found: re.Match[bytes] | None = None
        if hit is not None:
            rc, loc = hit
        else:
            rc, tree = _DECLINED, self.prefixes
            while tree is not None:
                names = tree.names
                i = bisect_right(names, uri) - 1
                if i < 0 or not uri.startswith(names[i]):
                    break
                rc, loc, tree = _AGAIN, tree.locs[i], tree.inner[i]
        if loc is not None and rc == _AGAIN:
            if loc.level is not _EMPTY:
                noregex = loc.noregex
                rc, inner, found = loc.level.find(uri)
                if inner is not None:
                    loc = inner
                if noregex:
                    return rc, loc, found
            elif loc.noregex:
                return rc, loc, None
        if rc >= _OK or not self.regexes:
            return rc, loc, found
        for candidate in self.regexes:
            assert candidate.regex is not None
            match = candidate.regex.search(uri)
            if match is not None:
                if candidate.level is _EMPTY:
                    return _OK, candidate, match
                _, inner, deeper = candidate.level.find(uri)
                return _OK, inner or candidate, deeper or match
        return rc, loc, found


_EMPTY: _Level[object] = _Level()


class Locations(Generic[T]):
    """One server's locations: checked like nginx checks them, then matched per request."""

    __slots__ = ("_named", "_root")

    def __init__(self, nodes: Sequence[Node[T]]) -> None:
        self._named: dict[str, T] = {}
        for node in nodes:
            if node.key.modifier == "named":
                self._named.setdefault(node.key.pattern, node.value)  # the first one wins
        _check_tree(nodes, None)
        self._root = self._level(nodes)

    def match(self, uri: bytes) -> Match[T] | None:
        """The location for a request's (decoded, normalized) path; None when none matches:
        nginx then uses the server's own configuration."""
        rc, loc, found = self._root.find(uri)
        if loc is None:
            return None
        if found is None:
            return Match(loc.value, (), {}, rc == _DONE)
        captures, named = groups(found)
        return Match(loc.value, captures, named, False)

    def named(self, name: str) -> T | None:
        """The named location ``@name`` (``try_files``, ``error_page``); ``@`` is optional."""
        return self._named.get(name.removeprefix("@"))

    def _level(self, nodes: Sequence[Node[T]]) -> _Level[T]:
        if not nodes:
            return _EMPTY  # type: ignore[return-value]
        level: _Level[T] = _Level()
        exact: dict[bytes, _Loc[T]] = {}
        inclusive: dict[bytes, _Loc[T]] = {}
        proxied: set[bytes] = set()
        for node in nodes:
            key = node.key
            inner = self._level(node.children)
            if key.modifier == "named":
                continue
            if key.modifier in ("regex", "iregex"):
                try:
                    regex = compile_regex(key.pattern, key.modifier == "iregex")
                except Invalid as error:
                    raise Invalid(error.message, node.label or None) from None
                level.regexes.append(_Loc(node.value, inner, False, regex))
                continue
            name = key.pattern.encode()
            table = exact if key.modifier == "exact" else inclusive
            if name in table:
                raise Invalid(f'duplicate location "{key.name}"', node.label or None)
            table[name] = _Loc(node.value, inner, key.modifier == "noregex", None)
            if node.proxied and name.endswith(b"/"):
                proxied.add(name)
        for name, loc in inclusive.items():
            level.equal[name] = (_AGAIN, loc)
        for name, loc in exact.items():
            level.equal[name] = (_OK, loc)
        for name in proxied:  # a URI equal to a name is not redirected
            level.equal.setdefault(name[:-1], (_DONE, exact.get(name) or inclusive[name]))
        level.prefixes = _prefixes(inclusive)
        return level


def _check_tree(nodes: Sequence[Node[T]], parent: Node[T] | None) -> None:
    """All the nesting rules, first: nginx checks them while reading, before duplicates."""
    for node in nodes:
        if parent is not None:
            _check_nesting(node, parent)
        _check_tree(node.children, node)


def _check_nesting(node: Node[T], parent: Node[T]) -> None:
    """ngx_http_core_location's rules for a location inside another, with its messages."""
    key, outer = node.key, parent.key
    where = node.label or None
    if outer.modifier == "exact":
        raise Invalid(f'location "{key.name}" cannot be inside the exact location '
                      f'"{outer.name}"', where)
    if outer.modifier == "named":
        raise Invalid(f'location "{key.name}" cannot be inside the named location '
                      f'"{outer.name}"', where)
    if key.modifier == "named":
        raise Invalid(f'named location "{key.name}" can be on the server level only', where)
    # nginx compares with the parent's name whatever it is: inside a regex location a prefix
    # must start with the regex's text.
    if key.modifier not in ("regex", "iregex") and not key.name.startswith(outer.name):
        raise Invalid(f'location "{key.name}" is outside location "{outer.name}"', where)


def _prefixes(inclusive: dict[bytes, _Loc[T]]) -> _Prefixes[T] | None:
    """nginx's ngx_http_create_locations_list: each name under the longest other name that
    is its prefix. Sorted, a name's extensions follow it directly."""
    if not inclusive:
        return None
    root: _Prefixes[T] = _Prefixes()
    stack: list[tuple[bytes, _Prefixes[T]]] = []
    for name in sorted(inclusive):
        while stack and not name.startswith(stack[-1][0]):
            stack.pop()
        tree = stack[-1][1] if stack else root
        inner: _Prefixes[T] = _Prefixes()
        tree.names.append(name)
        tree.locs.append(inclusive[name])
        tree.inner.append(inner)
        stack.append((name, inner))
    _prune(root)
    return root


def _prune(tree: _Prefixes[T]) -> None:
    """An empty subtree becomes None, so the search stops without looking into it."""
    for i, inner in enumerate(tree.inner):
        if inner is not None and not inner.names:
            tree.inner[i] = None
        elif inner is not None:
            _prune(inner)


__all__ = [
    "LocationKey", "Locations", "Match", "Modifier", "Node", "compile_regex", "groups", "parse_key",
]
