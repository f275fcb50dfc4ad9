"""A configuration as the proxy routes requests: for each listening address, its virtual
servers by name (:mod:`~wsgate.proxy.server_names`); for each server, its locations in
nginx's order (:mod:`~wsgate.proxy.locations`); for each location, what it does, with its
templates compiled once.

Built once per configuration; a reload builds a new one and swaps it in, so a request
sees one configuration from its head to its end. Building it is also the last check of a
configuration (nesting of locations, regexes, duplicate default servers), so the readers
build one before anything runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from wsgate.proxy.config import Location, ProxyConfig, VirtualServer
from wsgate.proxy.location_values import ErrorPage, MapConfig
from wsgate.proxy.locations import Locations, Match, Node, parse_key
from wsgate.proxy.maps import MapTable
from wsgate.proxy.mimetypes import parse_types
from wsgate.proxy.server_names import ServerNames
from wsgate.proxy.upstreams import UpstreamGroup
from wsgate.proxy.variables import CompiledMap, Template, compile_template
from wsgate.values import Invalid


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream group with what its block says about connecting to it."""

    group: UpstreamGroup
    hash_key: Template | None
    keepalive: int


@dataclass(frozen=True, slots=True)
class Route:
    """A location with its templates compiled. ``target`` is None for a location that does
    not proxy, or whose proxy_pass picks the group with a variable (``host``)."""

    location: Location
    target: Target | None
    set_headers: tuple[tuple[bytes, Template], ...] = ()
    host: Template | None = None
    """A variable proxy_pass's host part: its value names the group per request."""
    uri: Template | None = None
    """proxy_pass's URI part: replaces ``prefix`` (or, with variables, the whole URI)."""
    prefix: bytes = b""
    redirect: tuple[bytes, bytes] | None = None
    """proxy_redirect default: a Location header starting with the first gets the second."""
    answer: Template | None = None
    """``return``'s text or URL."""
    error_pages: Mapping[int, ErrorPage] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    try_files: tuple[Template, ...] = ()
    index: tuple[Template, ...] = ()
    root: Template | None = None

    @property
    def group(self) -> UpstreamGroup:
        assert self.target is not None
        return self.target.group

    @property
    def hash_key(self) -> Template | None:
        return None if self.target is None else self.target.hash_key

    @property
    def keepalive(self) -> int:
        return 0 if self.target is None else self.target.keepalive

    @property
    def proxies(self) -> bool:
        return self.location.return_ is None and self.location.proxy_pass is not None


class VirtualHost:
    """One ``server`` at run time: its locations and what answers outside them."""

    __slots__ = ("config", "fallback", "locations", "server_return")

    def __init__(self, server: VirtualServer, routes: Routes) -> None:
        self.config = server
        self.fallback = routes.route(server.defaults)
        """Server-level directives: a request no location matches is answered 404 with
        them (its error pages), and so is a server-level return."""
        self.server_return = (None if server.return_ is None else
                              dataclasses.replace(self.fallback, answer=_text(server.return_)))
        self.locations: Locations[Route] = Locations(
            [_node(location, routes) for location in server.locations])

    def match(self, uri: bytes) -> Match[Route] | None:
        return self.locations.match(uri)

    def named(self, name: str) -> Route | None:
        return self.locations.named(name)


class Site:
    """The servers of one listening address, chosen by Host (nginx's server_name rules)."""

    __slots__ = ("default", "names")

    def __init__(self, hosts: Sequence[tuple[VirtualHost, bool]]) -> None:
        self.names: ServerNames[VirtualHost] = ServerNames(
            [(host.config.names, host, default, host.config.label) for host, default in hosts])
        self.default: VirtualHost = self.names.default
        """nginx: until the Host is known (header limits and timeouts), this server's rules."""


class Routes:
    """The routes of one configuration, and the upstream groups they share."""

    __slots__ = ("groups", "hosts", "maps", "sites", "targets", "types")

    def __init__(self, config: ProxyConfig) -> None:
        self.groups = {
            name: UpstreamGroup(name, upstream.servers, upstream.balance, upstream.consistent)
            for name, upstream in config.upstreams.items()
        }
        self.targets = {
            name: Target(self.groups[name],
                         compile_template(upstream.hash_key) if upstream.hash_key else None,
                         upstream.keepalive)
            for name, upstream in config.upstreams.items()
        }
        self.maps = {name: _map(item) for name, item in config.maps.items()}
        self.types = None if config.types is None else parse_types(config.types)
        """Extension -> MIME type for files (None: nginx's stock mime.types)."""
        self.hosts = [VirtualHost(server, self) for server in config.servers]
        by_address: dict[str, list[tuple[VirtualHost, bool]]] = {}
        for host in self.hosts:
            for listener in host.config.listeners:
                by_address.setdefault(listener.address, []).append(
                    (host, listener.default_server))
        self.sites = {address: Site(hosts) for address, hosts in by_address.items()}

    def site(self, address: str) -> Site:
        """The servers of a listening address (one the configuration names)."""
        return self.sites[address]

    def route(self, location: Location) -> Route:
        target = None
        if location.upstream is not None:
            target = self.targets[location.upstream]
        proxy_pass = location.proxy_pass
        key = parse_key(location.key) if location.key else None
        prefix = key.pattern.encode() if key is not None and key.modifier in (
            "prefix", "exact", "noregex") else b""
        host = uri = None
        redirect = None
        if proxy_pass is not None:
            if proxy_pass.upstream is None:
                rest = proxy_pass.target.split("://", 1)[1]
                host = compile_template(rest.split("/", 1)[0])
            if proxy_pass.uri is not None:
                uri = compile_template(proxy_pass.uri)
            if location.redirect == "default" and not proxy_pass.variable and key is not None:
                redirect = _default_redirect(proxy_pass.target, proxy_pass.uri, key.modifier,
                                             key.pattern)
        pages: dict[int, ErrorPage] = {}
        for page in location.error_pages:
            for code in page.codes:
                pages.setdefault(code, page)
        return Route(
            location=location,
            target=target,
            set_headers=tuple((name.encode(), compile_template(value))
                              for name, value in location.set_headers),
            host=host,
            uri=uri,
            prefix=prefix,
            redirect=redirect,
            answer=_text(location.return_) if location.return_ is not None else None,
            error_pages=MappingProxyType(pages),
            try_files=tuple(compile_template(item) for item in location.try_files),
            index=tuple(compile_template(item) for item in location.index),
            root=None if location.root is None else compile_template(str(location.root)),
        )

    def target(self, name: str) -> Target | None:
        """The group a variable proxy_pass named, if the configuration has it."""
        return self.targets.get(name)


def _map(item: MapConfig) -> CompiledMap:
    try:
        table = MapTable(item.default, item.hostnames, item.values)
    except Invalid as error:
        raise Invalid(error.message, error.where or f"map.{item.name}") from None
    values = {value: compile_template(value)
              for value in (item.default, *(value for _, value in item.values))}
    return CompiledMap(compile_template(item.source), table, values)


def _text(answer: object) -> Template | None:
    text = getattr(answer, "text", None)
    return None if text is None else compile_template(text)


def _default_redirect(target: str, uri: str | None, modifier: str, pattern: str
                      ) -> tuple[bytes, bytes] | None:
    """nginx's ``proxy_redirect default``: with a URI part, the proxy_pass URL becomes the
    location's prefix; without one, ``URL/`` becomes ``/``. Regex and named locations have
    no prefix to put back."""
    if modifier not in ("prefix", "exact", "noregex"):
        return None
    if uri is not None:
        return target.encode(), pattern.encode()
    return (target + "/").encode(), b"/"


def _node(location: Location, routes: Routes) -> Node[Route]:
    try:
        key = parse_key(location.key)
    except Invalid as error:
        raise Invalid(error.message, location.label) from None
    return Node(key, routes.route(location),
                [_node(inner, routes) for inner in location.locations],
                label=location.label,
                proxied=location.proxy_pass is not None and location.return_ is None)


def check(config: ProxyConfig) -> None:
    """Build the routes once, for the rules only a whole configuration shows (raises
    Invalid naming the key)."""
    Routes(config)
