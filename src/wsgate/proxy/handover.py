"""Moving open tunnels to another worker process (an upgrade, or fewer workers after a
reload) without their clients or servers noticing.

The old worker freezes each plain-TCP tunnel (neither side is read), waits until both
write buffers are empty, so that no byte it has read is left behind, and sends duplicates
of both sockets (SCM_RIGHTS) with the tunnel's state: frame position, byte counts, start
time and access-log line. The new worker rebuilds the tunnel around them and reads on.
The kernel holds the sockets, and whatever arrived unread, all along: nothing is lost or
reordered. A TLS tunnel cannot move (its encryption state lives in this process's
OpenSSL), nor can one whose peer takes nothing for DRAIN_WAIT; both stay where they are.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import logging
import os
import random
import socket
from collections.abc import Callable
from typing import Any, cast

from wsgate.proxy import channel
from wsgate.proxy.accesslog import Entry
from wsgate.proxy.directives import server as parse_server
from wsgate.proxy.tunnel import State, Tunnel
from wsgate.proxy.upstreams import UpstreamGroup
from wsgate.proxy.worker import DEFAULT_DRAIN, TunnelRecord, Worker, live_server

log = logging.getLogger(__name__)

DRAIN_WAIT = 2.0
"""How long a frozen tunnel may take to empty its write buffers before it stays put."""
TUNNEL = "tunnel"


def _fd(transport: asyncio.Transport) -> int:
    sock = transport.get_extra_info("socket")
    return cast(int, sock.fileno())


class PeerGone(Exception):
    """The worker that was taking the tunnels is gone: send no more there."""


async def hand_over(worker: Worker, peer: socket.socket,
                    retiring: Callable[[], bool]) -> list[Tunnel]:
    """Send every plain, open tunnel of ``worker`` to ``peer``, while ``retiring()``;
    returns those that could not go (their peer took nothing for DRAIN_WAIT), running
    again. A half-closed tunnel is ending: it stays. Raises PeerGone (every tunnel then
    running again) when ``peer`` no longer takes any."""
    loop = asyncio.get_running_loop()
    waiting = [tunnel for tunnel, record in worker.tunnels.items()
               if not record.tls and _movable(tunnel)]
    for tunnel in waiting:
        tunnel.freeze()
    deadline = loop.time() + DRAIN_WAIT
    try:
        while waiting and retiring():
            left = []
            for tunnel in waiting:
                if tunnel.state is not State.FROZEN or not _movable(tunnel):
                    tunnel.thaw()
                elif not tunnel.drained():
                    left.append(tunnel)
                else:
                    _send(worker, tunnel, peer)
            waiting = left
            if not waiting or loop.time() >= deadline:
                break
            await asyncio.sleep(0.005)
    finally:
        for tunnel in waiting:
            tunnel.thaw()
    return waiting


def _movable(tunnel: Tunnel) -> bool:
    return (tunnel.state in (State.OPEN, State.FROZEN)
            and not tunnel.client.closing and not tunnel.upstream.closing)


def _send(worker: Worker, tunnel: Tunnel, peer: socket.socket) -> None:
    record = worker.tunnels[tunnel]
    cursor = tunnel.upstream.cursor
    timer = worker.drains.get(tunnel)
    state = {
        "group": record.group.name,
        "server": record.server.address,
        "entry": dataclasses.asdict(dataclasses.replace(record.entry, variables=None)),
        "started": record.started,
        "read_timeout": record.read_timeout,
        "send_timeout": record.send_timeout,
        "client_received": tunnel.client.received,
        "upstream_received": tunnel.upstream.received,
        "left": cursor.left,
        "held": base64.b64encode(cursor.held).decode(),
        "closed": cursor.closed,
        "drain_in": (None if timer is None
                     else max(0.0, timer.when() - asyncio.get_running_loop().time())),
    }
    fds: list[int] = []
    try:
        fds.append(os.dup(_fd(tunnel.client.transport)))
        fds.append(os.dup(_fd(tunnel.upstream.transport)))
        channel.send(peer, TUNNEL, state, fds=fds)
    except OSError as error:
        tunnel.thaw()
        if error.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
            raise PeerGone from None
        log.error("could not hand a tunnel over: %s", error.strerror or error)
        return
    finally:
        for fd in fds:
            os.close(fd)
    worker.forget(tunnel)
    tunnel.detach()


class _Held(asyncio.Protocol):
    """A received socket's protocol until its tunnel takes it: what the loop reads before
    reading is paused, and an EOF or a close meanwhile, are kept for the tunnel."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # half-open: the tunnel passes the EOF on

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


async def _accept(sock: socket.socket) -> tuple[asyncio.Transport, _Held]:
    loop = asyncio.get_running_loop()
    transport, held = await loop.connect_accepted_socket(_Held, sock)
    transport.pause_reading()  # uvloop starts reading after connection_made
    return transport, held


async def adopt(worker: Worker, message: channel.Message) -> None:
    """Rebuild a tunnel another worker sent, counted against this worker's server of the
    same name and address; if that server is no longer configured, it is drained."""
    fields: dict[str, Any] = message.fields
    socks = [socket.socket(fileno=fd) for fd in message.fds]
    transports: list[asyncio.Transport] = []
    try:
        client, client_held = await _accept(socks[0])
        transports.append(client)
        upstream, upstream_held = await _accept(socks[1])
        transports.append(upstream)
        tunnel = _rebuild(worker, fields, client, upstream)
    except Exception as error:  # a socket that died in flight, or a bad message
        log.error("could not take a tunnel over: %s", error)
        for transport in transports:
            transport.abort()
        for sock in socks[len(transports):]:
            sock.close()
        return
    tunnel.start(client_held.take(), upstream_held.take())
    for end, held in ((tunnel.client, client_held), (tunnel.upstream, upstream_held)):
        if held.lost:
            end.connection_lost(None)
        elif held.eof:
            end.eof_received()


def _rebuild(worker: Worker, fields: dict[str, Any], client: asyncio.Transport,
             upstream: asyncio.Transport) -> Tunnel:
    tunnel = Tunnel(client, upstream, fields["read_timeout"], fields["send_timeout"],
                    worker.tunnel_closed)
    tunnel.client.received = fields["client_received"]
    tunnel.upstream.received = fields["upstream_received"]
    cursor = tunnel.upstream.cursor
    cursor.left, cursor.held = fields["left"], base64.b64decode(fields["held"])
    cursor.closed = fields["closed"]
    name, address = fields["group"], fields["server"]
    server = live_server(worker.routes, name, address)
    group = worker.routes.groups.get(name)
    drain_in: float | None = fields.get("drain_in")
    if group is None or server is None:
        group = UpstreamGroup(name, (parse_server(address),))
        server = group.servers[0]
        if drain_in is None:  # removed by this worker's configuration: spread them too
            upstream_config = worker.config.upstreams.get(name)
            period = DEFAULT_DRAIN if upstream_config is None else upstream_config.drain_timeout
            drain_in = random.uniform(0.0, period)
    group.acquire(server)
    record = TunnelRecord(group, server, Entry(**fields["entry"]), fields["started"], False,
                          fields["read_timeout"], fields["send_timeout"],
                          (fields["client_received"], fields["upstream_received"]))
    worker.add_tunnel(tunnel, record)
    if drain_in is not None:
        worker.drain_at(tunnel, drain_in)
    return tunnel


class Receiver:
    """The receiving end of a handover socket on this worker's loop."""

    def __init__(self, worker: Worker, sock: socket.socket) -> None:
        self.worker = worker
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for message in channel.waiting(self.sock):
            if message is None:
                self.close()
                return
            if message.kind != TUNNEL:
                for fd in message.fds:
                    os.close(fd)
                continue
            task = self.loop.create_task(adopt(self.worker, message))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @property
    def busy(self) -> bool:
        """Tunnels may still come (the sender has not closed), or are being rebuilt."""
        return self.sock.fileno() >= 0 or bool(self.tasks)

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
