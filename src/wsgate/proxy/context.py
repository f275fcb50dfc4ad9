"""Per-worker state built once from the config: routes, upstream groups, the keep-alive
pool and the access log. Connections read it; nothing here does I/O of its own except
opening the log file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from wsgate.proxy.accesslog import AccessLog
from wsgate.proxy.config import Location, ProxyConfig
from wsgate.proxy.headers import Template, compile_template
from wsgate.proxy.pool import Pool
from wsgate.proxy.upstreams import UpstreamGroup


@dataclass(slots=True)
class Route:
    """A location with its upstream group and compiled header templates."""

    prefix: bytes
    location: Location
    group: UpstreamGroup
    set_headers: tuple[tuple[bytes, Template], ...]
    hash_key: Template | None
    keepalive: int


class Open(Protocol):
    """An open client connection or tunnel, as shutdown sees it."""

    def close_idle(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(slots=True)
class ProxyContext:
    config: ProxyConfig
    routes: list[Route]
    pool: Pool
    access_log: AccessLog
    connections: set[Open] = field(default_factory=set)
    draining: bool = False

    @classmethod
    def build(cls, config: ProxyConfig, access_log: AccessLog) -> ProxyContext:
        groups = {
            name: UpstreamGroup(name, upstream.servers, upstream.balance, upstream.consistent)
            for name, upstream in config.upstreams.items()
        }
        routes = []
        for location in config.locations:  # longest prefix first, as config sorts them
            upstream = config.upstreams[location.upstream]
            routes.append(Route(
                prefix=location.prefix.encode(),
                location=location,
                group=groups[location.upstream],
                set_headers=tuple(
                    (name.encode(), compile_template(value))
                    for name, value in location.set_headers
                ),
                hash_key=compile_template(upstream.hash_key) if upstream.hash_key else None,
                keepalive=upstream.keepalive,
            ))
        return cls(config=config, routes=routes, pool=Pool(), access_log=access_log)

    def route(self, path: bytes) -> Route | None:
        """The longest prefix that matches ``path``, like nginx's prefix ``location``."""
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return None
