"""nginx's choice of a virtual server among those listening on one address.

The order (ngx_http_find_virtual_server): the exact name; the longest leading wildcard
(``*.example.com``, or ``.example.com`` which also takes ``example.com``); the longest
trailing wildcard (``www.example.*``); the first regex (``~...``) that matches, in config
order; else the address's default server. Names are case-insensitive: the configured ones
are lowercased, and so is the Host (:func:`valid_host`). The wildcard rules and their
conflicts (ngx_hash_add_key) are in :class:`HostTable`, which ``map ... { hostnames; }``
shares. Pure.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from wsgate.proxy.locations import compile_regex, groups
from wsgate.values import Invalid

T = TypeVar("T")

Added = Literal["ok", "invalid", "conflict"]

_UPPER = re.compile(r"[A-Z]")


class HostTable(Generic[T]):
    """Exact names and nginx's three wildcard forms, matched as ngx_hash_find_combined does.

    A leading wildcard is kept under its suffix: ``*.example.com`` matches names ending with
    ``.example.com``, ``.example.com`` those and ``example.com`` itself; the longest suffix
    wins. A trailing one, ``www.example.*``, is kept as ``www.example`` and matches names
    that go on with a dot; the longest wins.
    """

    __slots__ = ("_exact", "_head", "_head_taken", "_tail", "_taken", "wildcards")

    def __init__(self, wildcards: bool) -> None:
        self.wildcards = wildcards
        self._exact: dict[bytes, T] = {}
        self._taken: set[str] = set()  # nginx's exact-name conflict list
        self._head: dict[bytes, tuple[T, bool]] = {}  # suffix -> (value, also the bare suffix)
        self._head_taken: set[str] = set()
        self._tail: dict[bytes, T] = {}

    def add(self, name: str, value: T) -> Added:
        """Add one key as ngx_hash_add_key does; a conflicting key (same name, or
        ``.example.com`` against ``example.com`` or ``*.example.com``) is not added."""
        if self.wildcards:
            if name.count("*") > 1 or ".." in name or "\0" in name:
                return "invalid"
            if len(name) > 1 and name[0] == ".":
                suffix = name[1:].lower()
                if suffix in self._taken:
                    return "conflict"
                self._taken.add(suffix)  # before the wildcard check, as nginx does
                return self._add_head(suffix, value, bare=True)
            if len(name) > 2 and name.startswith("*."):
                return self._add_head(name[2:].lower(), value, bare=False)
            if len(name) > 2 and name.endswith(".*"):
                prefix = name[:-2].lower()
                if prefix.encode() in self._tail:
                    return "conflict"
                self._tail[prefix.encode()] = value
                return "ok"
            if "*" in name:
                return "invalid"
        key = name.lower()
        if key in self._taken:
            return "conflict"
        self._taken.add(key)
        self._exact[key.encode()] = value
        return "ok"

    def _add_head(self, suffix: str, value: T, *, bare: bool) -> Added:
        if suffix in self._head_taken:
            return "conflict"
        self._head_taken.add(suffix)
        self._head[suffix.encode()] = (value, bare)
        return "ok"

    def find(self, name: bytes) -> T | None:
        """The value for a lowercased name: exact, then leading, then trailing wildcards."""
        value = self._exact.get(name)
        if value is not None or not name:
            return value
        if self._head:
            hit = self._head.get(name)
            if hit is not None and hit[1]:
                return hit[0]
            dot = name.find(b".")
            while dot >= 0:
                hit = self._head.get(name[dot + 1:])
                if hit is not None:
                    return hit[0]
                dot = name.find(b".", dot + 1)
        if self._tail:
            dot = name.rfind(b".")
            while dot > 0:
                tail = self._tail.get(name[:dot])
                if tail is not None:
                    return tail
                dot = name.rfind(b".", 0, dot)
        return None


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    """The chosen server; ``named`` and ``captures`` come from a regex name that chose it."""

    value: T
    named: dict[str, bytes] = field(default_factory=dict)
    captures: tuple[bytes, ...] = ()


Server = tuple[Sequence[str], T, bool, str]


class ServerNames(Generic[T]):
    """The servers of one listening address, given in config order as ``(server_name
    values, value, default_server, label)``. A server without names has the name ``""``,
    as in nginx, so a request without a Host finds it. ``conflicts`` holds nginx's warnings
    (conflicting names, which are ignored; suspicious symbols), for the caller to log."""

    __slots__ = ("_names", "_regexes", "conflicts", "default")

    def __init__(self, servers: Sequence[Server[T]], *, address: str = "",
                 hostname: str | None = None) -> None:
        if not servers:
            raise Invalid("no server for this address")
        where = f" on {address}" if address else ""
        self.conflicts: list[str] = []
        self._names: HostTable[T] = HostTable(wildcards=True)
        self._regexes: list[tuple[re.Pattern[bytes], T]] = []
        defaults = [server for server in servers if server[2]]
        if len(defaults) > 1:
            raise Invalid(f"a duplicate default server for {address or 'this address'}",
                          defaults[1][3] or None)
        self.default: T = (defaults or servers)[0][1]
        for names, value, _, label in servers:
            for name in names or [""]:
                self._add(name, value, label, where, hostname)

    def _add(self, name: str, value: T, label: str, where: str, hostname: str | None) -> None:
        """ngx_http_core_server_name's checks, then ngx_http_server_names'."""
        blame = label or None
        if (name[:1] == "*" and (len(name) < 3 or name[1] != ".")) or name == ".":
            raise Invalid(f'server name "{name}" is invalid', blame)
        if "/" in name:
            self.conflicts.append(f'server name "{name}" has suspicious symbols')
        if name.startswith("~"):
            if name == "~":
                raise Invalid(f'empty regex in server name "{name}"', blame)
            pattern = name[1:]
            try:  # caseless only when it has a capital letter: the Host is lowercase
                regex = compile_regex(pattern, bool(_UPPER.search(pattern)))
            except Invalid as error:
                raise Invalid(error.message, blame) from None
            self._regexes.append((regex, value))
            return
        if name.lower() == "$hostname":
            name = socket.gethostname() if hostname is None else hostname
        added = self._names.add(name, value)
        if added == "invalid":
            raise Invalid(f'invalid server name or wildcard "{name}"{where}', blame)
        if added == "conflict":
            self.conflicts.append(f'conflicting server name "{name}"{where}, ignored')

    def find(self, host: bytes) -> Found[T]:
        """The server for a Host (without its port; see :func:`valid_host`); ``b""`` when the
        request had none."""
        if host.endswith(b"."):
            host = host[:-1]
        host = host.lower()
        value = self._names.find(host)
        if value is not None:
            return Found(value)
        if host:
            for regex, server in self._regexes:
                match = regex.search(host)
                if match is not None:
                    captures, named = groups(match)
                    return Found(server, named, captures)
        return Found(self.default)


_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        b"-_~!$&'()*+,;=")


def valid_host(host: bytes) -> bytes | None:
    """ngx_http_validate_host: the Host header's host, lowercased, without its port and one
    trailing dot; None when nginx answers 400 (bad characters, ``..``, a bad port, empty)."""
    dot = -2  # where the last dot was
    end = len(host)
    if host.startswith(b"["):
        close = host.find(b"]")
        if close < 0:
            return None
        for i in range(1, close):
            char = host[i]
            if char == 0x2E:
                if dot == i - 1:
                    return None
                dot = i
            elif char != 0x3A and char not in _HOST_CHARS:
                return None
        end = close + 1
        if end < len(host) and host[end] != 0x3A:
            return None
    else:
        for i, char in enumerate(host):
            if char == 0x3A:
                end = i
                break
            if char == 0x2E:
                if dot == i - 1:
                    return None
                dot = i
            elif char not in _HOST_CHARS and char != 0x25:  # "%": pct-encoded
                return None
    port = host[end + 1:].lstrip(b"0")  # nginx reads the digits as a number
    if port and not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return None
    if dot == end - 1:
        end -= 1
    if end <= 0:
        return None
    return host[:end].lower()


__all__ = ["Found", "HostTable", "ServerNames", "valid_host"]
