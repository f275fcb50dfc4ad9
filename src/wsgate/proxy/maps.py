"""nginx's ``map``: a source value chosen among keys, rule for rule (ngx_http_map_module).

The order (ngx_http_map_find): the exact key, compared case-insensitively (nginx lowercases
both the keys and the value); with ``hostnames``, the longest leading wildcard
(``*.example.com``, ``.example.com``) then the longest trailing one (``www.example.*``);
then the regexes (``~``, ``~*`` caseless) in config order, against the value as it is;
else the default. An empty value is only ever looked up exactly: no wildcard and no regex
sees it (``"" = ...`` is how a map names it). The value found is a template returned as
written, for the caller to expand with the captures of the regex that chose it. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from wsgate.proxy.locations import compile_regex, groups
from wsgate.proxy.server_names import HostTable
from wsgate.values import Invalid

Result = tuple[str, tuple[bytes, ...], dict[str, bytes]]


class MapTable:
    """One ``map`` block: ``entries`` are its ``key value`` lines in order. As in nginx, a
    key ``default`` sets the default (a second one is an error), ``~`` and ``~*`` start a
    regex, and one leading backslash makes the rest a plain key (``\\default``, ``\\~x``)."""

    __slots__ = ("_default", "_hostnames", "_keys", "_regexes")

    def __init__(self, default: str, hostnames: bool,
                 entries: Sequence[tuple[str, str]]) -> None:
        self._hostnames = hostnames
        self._keys: HostTable[str] = HostTable(wildcards=hostnames)
        self._regexes: list[tuple[re.Pattern[bytes], str]] = []
        chosen: str | None = default or None
        for key, value in entries:
            if key == "default":
                if chosen is not None:
                    raise Invalid("duplicate default map parameter")
                chosen = value
            elif key.startswith("~"):
                caseless = key.startswith("~*")
                pattern = key[2:] if caseless else key[1:]
                self._regexes.append((compile_regex(pattern, caseless), value))
            else:
                self._add(key.removeprefix("\\"), value)
        self._default = chosen or ""

    def _add(self, key: str, value: str) -> None:
        added = self._keys.add(key, value)
        if added == "invalid":
            raise Invalid(f'invalid hostname or wildcard "{key}"')
        if added == "conflict":
            raise Invalid(f'conflicting parameter "{key}"')

    @property
    def default(self) -> str:
        """The value when nothing matches (``""`` unless set)."""
        return self._default

    def lookup(self, value: bytes) -> Result:
        """The template for ``value``, with the captures of the regex key that chose it
        (``()`` and ``{}`` for any other key: ``$1`` keeps its earlier meaning then)."""
        if self._hostnames and value.endswith(b"."):
            value = value[:-1]
        found = self._keys.find(value.lower())
        if found is not None:
            return found, (), {}
        if value:
            for regex, template in self._regexes:
                match = regex.search(value)
                if match is not None:
                    captures, named = groups(match)
                    return template, captures, named
        return self._default, (), {}


__all__ = ["MapTable"]
