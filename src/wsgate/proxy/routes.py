"""A configuration's locations as the proxy matches them: longest prefix first, each with its
upstream group and its header templates compiled once.

Built once per configuration; a reload builds a new one and swaps it in, so a request
sees one configuration from its head to its end.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsgate.proxy.config import Location, ProxyConfig
from wsgate.proxy.headers import Template, compile_template
from wsgate.proxy.upstreams import UpstreamGroup


@dataclass(frozen=True, slots=True)
class Route:
    """A location with its upstream group and compiled header templates."""

    prefix: bytes
    location: Location
    group: UpstreamGroup
    set_headers: tuple[tuple[bytes, Template], ...]
    hash_key: Template | None
    keepalive: int


class Routes:
    """The routes of one configuration, and the upstream groups they share."""

    __slots__ = ("groups", "routes")

    def __init__(self, config: ProxyConfig) -> None:
        self.groups = {
            name: UpstreamGroup(name, upstream.servers, upstream.balance, upstream.consistent)
            for name, upstream in config.upstreams.items()
        }
        routes = []
        for location in config.locations:  # longest prefix first, as the readers sort them
            upstream = config.upstreams[location.upstream]
            routes.append(Route(
                prefix=location.prefix.encode(),
                location=location,
                group=self.groups[location.upstream],
                set_headers=tuple(
                    (name.encode(), compile_template(value))
                    for name, value in location.set_headers
                ),
                hash_key=compile_template(upstream.hash_key) if upstream.hash_key else None,
                keepalive=upstream.keepalive,
            ))
        self.routes = tuple(routes)

    def match(self, path: bytes) -> Route | None:
        """The longest prefix that matches ``path``, like nginx's prefix ``location``."""
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return None
