"""Idle keep-alive connections to upstream servers, reused for the next request (nginx's
``keepalive`` in an upstream block): up to ``keepalive`` per server address, newest first.
"""

from __future__ import annotations

from wsgate.proxy.upstream_connection import UpstreamConnection


class Pool:
    def __init__(self) -> None:
        self._idle: dict[str, list[UpstreamConnection]] = {}

    def take(self, address: str) -> UpstreamConnection | None:
        """The most recently used idle connection to ``address`` that is still open."""
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn.transport.is_closing():
                conn.reused = True
                conn.received = 0
                return conn
        return None

    def put(self, address: str, conn: UpstreamConnection, limit: int) -> None:
        idle = self._idle.setdefault(address, [])
        idle.append(conn)
        if len(idle) > limit:
            idle.pop(0).transport.close()

    def close_all(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.transport.close()
        self._idle.clear()
