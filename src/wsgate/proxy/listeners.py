"""The listening sockets: bound once by the master, shared by every worker.

Binding before any worker starts means ``port 0`` is one port for all workers, a busy port
is one clear error, and every worker accepts from the same queue (nginx's model). The
sockets are keyed by the address as configured, so a reload keeps the ones it still
names (``port 0`` included) and binds only new ones: a socket that stays open never
refuses a connection.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from wsgate.errors import Failure
from wsgate.proxy.config import Listener, ProxyConfig

BACKLOG = 511  # nginx's default


@dataclass(slots=True)
class Bound:
    """A listening socket, whether its clients speak TLS, and its address as configured
    (which picks the virtual servers that answer it)."""

    sock: socket.socket
    tls: bool
    address: str = ""


Sockets = dict[str, Bound]
"""The listening sockets by address as configured (:attr:`Listener.address`)."""


def bind(listener: Listener) -> socket.socket:
    host = listener.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, listener.port))
        sock.listen(listener.backlog or BACKLOG)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        reason = ("address already in use" if error.errno == errno.EADDRINUSE
                  else (error.strerror or str(error)).lower())
        raise Failure(f"cannot listen on {listener.address}: {reason}") from None
    return sock


def bind_all(config: ProxyConfig, have: Sockets | None = None) -> Sockets:
    """Every listener's socket: from ``have`` if it holds the address, else newly bound.
    On failure the new ones are closed and a Failure names the address; ``have`` is left
    as it was. Sockets of ``have`` that ``config`` no longer names are the caller's."""
    have = have or {}
    held = {id(bound.sock) for bound in have.values()}
    sockets: Sockets = {}
    try:
        for listener in config.listeners:
            old = held_for(have, listener)
            sockets[listener.address] = Bound(
                old.sock if old is not None else bind(listener), listener.ssl,
                listener.address)
    except Failure:
        for bound in sockets.values():
            if id(bound.sock) not in held:
                bound.sock.close()
        raise
    return sockets


def held_for(have: Sockets, listener: Listener) -> Bound | None:
    """The socket of ``have`` that serves ``listener``: the same address as written, or,
    for a fixed port, the same address as bound (``:8080`` and ``0.0.0.0:8080`` alike)."""
    same = have.get(listener.address)
    if same is not None or listener.port == 0:
        return same
    try:
        wanted = (ipaddress.ip_address(listener.host or "0.0.0.0"), listener.port)
    except ValueError:  # a name, not an address: only the same spelling matches
        return None
    for bound in have.values():
        host, port = bound.sock.getsockname()[:2]
        if (ipaddress.ip_address(host.split("%", 1)[0]), port) == wanted:
            return bound
    return None


def unused(have: Sockets, kept: Sockets) -> list[socket.socket]:
    """The sockets of ``have`` that ``kept`` does not use any more."""
    used = {id(bound.sock) for bound in kept.values()}
    return [bound.sock for bound in have.values() if id(bound.sock) not in used]


def url_of(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"
