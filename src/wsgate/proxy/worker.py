"""What the connections of one worker process share: the configuration in force, its
routes, the upstream keep-alive pool, the access log, and the open connections.

Connections read the configuration from here at each request, so swapping it (a reload)
reaches every new request and no request mid-way.
"""

from __future__ import annotations

from typing import Protocol

from wsgate.proxy.accesslog import AccessLog
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.pool import Pool
from wsgate.proxy.routes import Routes


class Open(Protocol):
    """An open client connection or tunnel, as shutdown sees it."""

    def close_idle(self) -> None: ...

    def abort(self) -> None: ...


class Worker:
    """What the connections of one worker share (see the module's docstring)."""

    __slots__ = ("access_log", "config", "draining", "open", "pool", "routes")

    def __init__(self, config: ProxyConfig, access_log: AccessLog) -> None:
        self.config = config
        self.routes = Routes(config)
        self.pool = Pool()
        self.access_log = access_log
        self.open: set[Open] = set()
        self.draining = False
