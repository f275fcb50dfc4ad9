"""Servers taken out of selection at run time: by an admin, or by failed health checks.

The monitor keeps these and sends every worker the result (:func:`Marks.marks`), whole,
whenever it changes, so all workers agree. A mark is:

- ``down`` (an admin's): no new connections; open tunnels stay.
- ``drain`` (an admin's): no new connections; open tunnels get Close 1001, spread over
  the group's ``drain_timeout``.
- ``unhealthy`` (the health checks'): no new connections; open tunnels stay.

An admin's ``up`` takes the admin's mark away; it does not overrule a ``down`` in the file
(that is the file's to say) nor failing health checks. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.health import ServerHealth

ACTIONS = ("drain", "down", "up")
Key = tuple[str, str]
"""(upstream group name, server address)."""


class NoSuchServer(LookupError):
    """The admin named a server that is not configured (or named it ambiguously)."""


def find(config: ProxyConfig, upstream: str | None, server: str) -> Key:
    """The (group, address) an admin means: ``upstream`` may be left out when the address
    is in one group only."""
    groups = [upstream] if upstream else list(config.upstreams)
    found = [(name, server) for name in groups
             if name in config.upstreams
             and any(item.address == server for item in config.upstreams[name].servers)]
    if upstream and upstream not in config.upstreams:
        known = ", ".join(config.upstreams) or "none"
        raise NoSuchServer(f"no upstream named {upstream!r} (known: {known})")
    if not found:
        where = f"upstream {upstream!r}" if upstream else "any upstream"
        raise NoSuchServer(f"no server {server!r} in {where}")
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise NoSuchServer(f"server {server!r} is in several upstreams ({names}): "
                           "say which with upstream=NAME")
    return found[0]


class Marks:
    """The admin's marks, by (group, address)."""

    def __init__(self) -> None:
        self.admin: dict[Key, str] = {}

    def act(self, action: str, key: Key) -> None:
        """Apply an admin action (one of :data:`ACTIONS`)."""
        if action == "up":
            self.admin.pop(key, None)
        else:
            self.admin[key] = action

    def prune(self, config: ProxyConfig) -> None:
        """Forget marks of servers a reload removed."""
        configured = {(name, server.address) for name, group in config.upstreams.items()
                      for server in group.servers}
        for key in list(self.admin):
            if key not in configured:
                del self.admin[key]

    def marks(self, config: ProxyConfig,
              health: Mapping[Key, ServerHealth]) -> dict[str, dict[str, str]]:
        """What workers get: group -> address -> mark, for marked servers only."""
        found: dict[str, dict[str, str]] = {}
        for name, group in config.upstreams.items():
            for server in group.servers:
                mark = self.mark((name, server.address), health)
                if mark is not None:
                    found.setdefault(name, {})[server.address] = mark
        return found

    def mark(self, key: Key, health: Mapping[Key, ServerHealth]) -> str | None:
        admin = self.admin.get(key)
        if admin is not None:
            return admin
        checked = health.get(key)
        return "unhealthy" if checked is not None and not checked.healthy else None


def state(configured_down: bool, mark: str | None) -> str:
    """A server's state as the page and /status show it."""
    if configured_down or mark == "down":
        return "down"
    if mark == "drain":
        return "draining"
    if mark == "unhealthy":
        return "unhealthy"
    return "up"


def describe_health(health: ServerHealth | None) -> dict[str, Any] | None:
    if health is None:
        return None
    return {"healthy": health.healthy, "detail": health.detail, "checked": health.checked}
