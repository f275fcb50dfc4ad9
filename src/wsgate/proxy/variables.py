"""nginx's ``$variables``: their names, templates that use them, and one request's values.

A template (a ``proxy_set_header`` value, a ``proxy_pass`` target, a ``return`` text, a map's
source) is split into literals and names once, at start; a request's :class:`Variables`
evaluates only the names its templates ask for. Pure: the request and its connection's
facts are given.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from wsgate.proxy.http1 import OWS, RequestHead

REQUEST_VARIABLES = frozenset({
    "host", "http_host", "remote_addr", "remote_port", "binary_remote_addr", "scheme", "https",
    "server_name", "server_addr", "server_port", "server_protocol", "request_method",
    "request_uri", "uri", "document_uri", "args", "query_string", "is_args", "request_id",
    "hostname", "proxy_host", "proxy_add_x_forwarded_for", "proxy_x_forwarded_proto",
    "content_length", "content_type", "document_root", "realpath_root", "request_filename",
})
"""The variables every request has (besides ``$http_*``, ``$arg_*``, ``$cookie_*``, the
regex captures ``$1``..``$9`` and the maps' own)."""
PREFIXES = ("http_", "arg_", "cookie_")
VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
"""``$name`` or ``${name}``: one syntax for the config's checks and the templates."""

Template = tuple[bytes | str, ...]
"""A template: literal bytes and variable names, in order."""

_HOSTNAME = socket.gethostname().encode()


def compile_template(text: str) -> Template:
    """Split ``"$scheme://$host"`` into literals and variable names, once at start-up."""
    parts: list[bytes | str] = []
    position = 0
    for match in VARIABLE.finditer(text):
        if match.start() > position:
            parts.append(text[position:match.start()].encode())
        parts.append(match.group(1) or match.group(2))
        position = match.end()
    if position < len(text):
        parts.append(text[position:].encode())
    return tuple(parts)


def is_request_variable(name: str) -> bool:
    """Whether ``name`` is a variable every request has (maps aside)."""
    if name in REQUEST_VARIABLES or (name.isdigit() and len(name) == 1):
        return True
    return any(name.startswith(prefix) and len(name) > len(prefix) for prefix in PREFIXES)


class Lookup(Protocol):
    """A compiled ``map``: the source's template, and the value for a source value with the
    captures of the regex that chose it (:class:`wsgate.proxy.maps.MapTable`)."""

    def lookup(self, value: bytes) -> tuple[str, tuple[bytes, ...], dict[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class CompiledMap:
    source: Template
    table: Lookup
    values: Mapping[str, Template]
    """Each value as written -> its template, compiled once."""


@dataclass(slots=True)
class Variables:
    """The ``$variables`` of one request: read from the request and the connection it came
    on, evaluated only when a template asks for them."""

    head: RequestHead
    remote_addr: str
    remote_port: int
    scheme: str
    server_port: int
    server_host: str
    trusted: bool
    proxy_host: str = ""
    server_name: str = ""
    captures: tuple[bytes, ...] = ()
    """``$1``..``$9`` of the regex location (or server name) that matched."""
    named: dict[str, bytes] = field(default_factory=dict)
    maps: Mapping[str, CompiledMap] = field(default_factory=dict)
    uri: bytes | None = None
    """``$uri`` after an internal redirect (index, try_files, error_page)."""
    root: str = ""
    args: bytes | None = None
    """``$args`` after an internal redirect that named its own (or none)."""
    _cache: dict[str, bytes] | None = None

    def variable(self, name: str) -> bytes:
        head = self.head
        if name == "host":
            host = (head.get(b"host") or b"").strip(OWS)  # llhttp leaves the OWS after it
            if not host:
                return (self.server_name or self.server_host).encode()
            return _strip_port(host).lower()
        if name == "remote_addr":
            return self.remote_addr.encode()
        if name == "proxy_add_x_forwarded_for":
            incoming = b", ".join(head.get_all(b"x-forwarded-for")) if self.trusted else b""
            own = self.remote_addr.encode()
            return incoming + b", " + own if incoming else own
        if name == "scheme":
            return self.scheme.encode()
        if name == "proxy_x_forwarded_proto":
            forwarded = head.get(b"x-forwarded-proto") if self.trusted else None
            return forwarded or self.scheme.encode()
        if name == "uri" or name == "document_uri":
            return self.uri if self.uri is not None else head.uri or head.path
        if name == "request_uri":
            return head.target
        if name == "args" or name == "query_string":
            return head.target.partition(b"?")[2] if self.args is None else self.args
        if name == "is_args":
            return b"?" if self.variable("args") else b""
        if name == "request_method":
            return head.method
        if name == "server_name":
            return self.server_name.encode()
        if name == "remote_port":
            return str(self.remote_port).encode()
        if name == "server_port":
            return str(self.server_port).encode()
        if name == "server_addr":
            return self.server_host.encode()
        if name == "proxy_host":
            return self.proxy_host.encode()
        if name.startswith("http_"):
            return b", ".join(head.get_all(name[5:].replace("_", "-").encode()))
        if name.isdigit():
            index = int(name)
            if index == 0:
                return self.uri if self.uri is not None else head.uri
            return self.captures[index - 1] if index <= len(self.captures) else b""
        if name in self.named:
            return self.named[name]
        if name in self.maps:
            return self._map(name)
        return self._rare(name)

    def _rare(self, name: str) -> bytes:
        head = self.head
        if name.startswith("arg_"):
            return _argument(head.target.partition(b"?")[2], name[4:].encode())
        if name.startswith("cookie_"):
            return _cookie(head.get_all(b"cookie"), name[7:].encode())
        if name == "https":
            return b"on" if self.scheme == "https" else b""
        if name == "binary_remote_addr":
            return _binary(self.remote_addr)
        if name == "server_protocol":
            return b"HTTP/" + head.version.encode()
        if name == "request_id":
            cache = self._cache if self._cache is not None else {}
            self._cache = cache
            if "request_id" not in cache:
                cache["request_id"] = os.urandom(16).hex().encode()
            return cache["request_id"]
        if name == "hostname":
            return _HOSTNAME
        if name == "content_length":
            return (head.get(b"content-length") or b"").strip(OWS)
        if name == "content_type":
            return head.get(b"content-type") or b""
        if name in ("document_root", "realpath_root"):
            return self.root.encode()
        if name == "request_filename":
            return self.root.encode() + self.variable("uri")
        return b""

    def _map(self, name: str) -> bytes:
        cache = self._cache if self._cache is not None else {}
        self._cache = cache
        if name in cache:
            return cache[name]
        cache[name] = b""  # a map whose source is itself is empty, not endless
        compiled = self.maps[name]
        value, captures, named = compiled.table.lookup(self.expand(compiled.source))
        template = compiled.values[value]
        self.named.update(named)  # nginx: a regex's named captures are the request's now
        if captures:
            saved, self.captures = self.captures, captures
            try:
                result = self.expand(template)
            finally:
                self.captures = saved
        else:
            result = self.expand(template)
        cache[name] = result
        return result

    def expand(self, template: Template) -> bytes:
        return b"".join(p if isinstance(p, bytes) else self.variable(p) for p in template)


def _strip_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.rsplit(b":", 1)[0] if b":" in host else host


def _argument(query: bytes, name: bytes) -> bytes:
    """nginx's ``$arg_NAME``: the first ``NAME=value`` of the query, as sent, name ignoring
    case."""
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key.lower() == name.lower():
            return value
    return b""


def _cookie(headers: list[bytes], name: bytes) -> bytes:
    for header in headers:
        for pair in header.split(b";"):
            key, _, value = pair.strip().partition(b"=")
            if key.lower() == name.lower():
                return value
    return b""


def _binary(address: str) -> bytes:
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return socket.inet_pton(family, address.split("%", 1)[0])
    except OSError:
        return b""
