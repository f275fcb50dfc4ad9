"""Which server and location take a request, and what goes upstream: nginx's find-virtual-
server and find-location phases, its rewrite phase's ``return``, and ``proxy_pass``'s URI
rules. Pure: the routes and the request's variables are given.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Literal

from wsgate.proxy.http1 import OWS, HeadError, RequestHead
from wsgate.proxy.routes import Route, Routes, Site, Target, VirtualHost
from wsgate.proxy.server_names import valid_host
from wsgate.proxy.variables import Variables

_SAFE = "/:@!$&'()*+,;=-._~"
"""What nginx leaves unescaped when it puts a decoded URI back on the wire."""


Kind = Literal["proxy", "files", "return", "redirect", "none"]
"""What the location does: go upstream, serve files, ``return``, nginx's auto-redirect of
"/prefix" to "/prefix/" (a proxied location), or nothing (no location matched: 404)."""


@dataclass(slots=True)
class Dispatch:
    """Where a request goes: ``route`` of ``host``, and what it does there. ``status``:
    ``return``'s; ``target`` and ``group``: where a proxied request goes."""

    host: VirtualHost
    route: Route
    variables: Variables
    kind: Kind = "files"
    status: int = 0
    target: bytes = b""
    group: Target | None = None


def choose_host(site: Site, head: RequestHead, variables: Variables) -> VirtualHost:
    """The server of ``site`` for the request's Host (400 for a Host nginx refuses)."""
    raw = (head.get(b"host") or b"").strip(OWS)
    host = b""
    if raw:  # an empty Host is RFC 9112's for a target without authority (nginx: 400)
        host = _HOSTS.get(raw) or _checked(raw)
    found = site.names.find(host)
    if found.named:
        variables.named.update(found.named)
    if found.captures:
        variables.captures = found.captures
    variables.server_name = found.value.config.name
    return found.value


_HOSTS: dict[bytes, bytes] = {}
"""Host headers seen, checked: a proxy sees a handful of names again and again."""


def _checked(raw: bytes) -> bytes:
    checked = valid_host(raw)
    if checked is None:
        raise HeadError(400, "invalid Host header")
    if len(_HOSTS) >= 1024:
        _HOSTS.clear()
    _HOSTS[raw] = checked
    return checked


def dispatch(routes: Routes, host: VirtualHost, head: RequestHead, variables: Variables,
             uri: bytes | None = None) -> Dispatch:
    """nginx's order: a server-level ``return``; the location for ``uri`` (the request's
    own, or an internal redirect's); then what it does. Raises HeadError for a proxy_pass
    whose variable names no upstream (502)."""
    if host.server_return is not None:
        route = host.server_return
        assert host.config.return_ is not None
        return Dispatch(host, route, variables, "return", host.config.return_.status)
    path = head.uri if uri is None else uri
    if uri is not None:
        variables.uri = uri
    match = host.match(path)
    if match is None:  # nginx: the server's own settings, so its root serves files
        files = host.fallback.root is not None
        return Dispatch(host, host.fallback, variables, "files" if files else "none",
                        0 if files else 404)
    route = match.value
    if match.captures or match.named:
        variables.captures = match.captures
        variables.named.update(match.named)
    if match.redirect:
        return Dispatch(host, route, variables, "redirect", 301)
    return settle(routes, Dispatch(host, route, variables), head, uri)


def settle(routes: Routes, found: Dispatch, head: RequestHead, uri: bytes | None
           ) -> Dispatch:
    """What ``found.route`` does with the request: its ``return``, else where it goes
    upstream, else its files."""
    route, variables = found.route, found.variables
    answer = route.location.return_
    if answer is not None:
        found.kind, found.status = "return", answer.status
    elif route.proxies:
        found.kind = "proxy"
        found.target = _target(route, head, variables, uri)
        found.group = _group(routes, route, variables)
    return found


def _group(routes: Routes, route: Route, variables: Variables) -> Target:
    if route.target is not None:
        return route.target
    assert route.host is not None
    name = variables.expand(route.host).decode("latin-1")
    found = routes.target(name)
    if found is None:
        raise HeadError(502, f'proxy_pass names "{name}", which is no upstream (wsgate has no '
                             "resolver: define it as an upstream)")
    return found


def _target(route: Route, head: RequestHead, variables: Variables, uri: bytes | None) -> bytes:
    """The request target upstream, as nginx builds it: the client's as sent, unless
    proxy_pass has a URI part (it replaces the matched prefix of the normalised URI, or,
    with variables, the whole URI) or an internal redirect changed the URI."""
    args = head.target.partition(b"?")[2] if variables.args is None else variables.args
    tail = b"?" + args if args else b""
    if route.uri is None:
        if uri is None and variables.args is None:
            return head.target
        return _escape(head.uri if uri is None else uri) + tail
    replacement = variables.expand(route.uri)
    if route.location.proxy_pass is not None and route.location.proxy_pass.variable:
        return replacement or b"/"
    path = head.uri if uri is None else uri
    rest = path[len(route.prefix):] if path.startswith(route.prefix) else path
    return replacement + _escape(rest) + tail


def _escape(path: bytes) -> bytes:
    return urllib.parse.quote_from_bytes(path, safe=_SAFE).encode("ascii")


def rewrite_location(route: Route, value: bytes) -> bytes:
    """proxy_redirect default on a Location or Refresh header value."""
    redirect = route.redirect
    if redirect is None:
        return value
    pattern, replacement = redirect
    if value.startswith(pattern):
        return replacement + value[len(pattern):]
    marker = value.find(b"url=")  # Refresh: "5; url=http://..."
    if marker >= 0 and value[marker + 4:].startswith(pattern):
        return value[:marker + 4] + replacement + value[marker + 4 + len(pattern):]
    return value
