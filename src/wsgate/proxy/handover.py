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
import logging
import os
import socket
from typing import Any, cast

from wsgate.proxy import channel
from wsgate.proxy.accesslog import Entry
from wsgate.proxy.directives import server as parse_server
from wsgate.proxy.frames import Cursor
from wsgate.proxy.tunnel import State, Tunnel
from wsgate.proxy.upstreams import UpstreamGroup
from wsgate.proxy.worker import TunnelRecord, Worker

log = logging.getLogger(__name__)

DRAIN_WAIT = 2.0
"""How long a frozen tunnel may take to empty its write buffers before it stays put."""
TUNNEL = "tunnel"


def _fd(transport: asyncio.Transport) -> int:
    sock = transport.get_extra_info("socket")
    return cast(int, sock.fileno())


async def hand_over(worker: Worker, peer: socket.socket) -> list[Tunnel]:
    """Send every plain, open tunnel of ``worker`` to ``peer``; returns those that could
    not go (their peer took nothing for DRAIN_WAIT), running again."""
    loop = asyncio.get_running_loop()
    waiting = [tunnel for tunnel, record in worker.tunnels.items()
               if not record.tls and tunnel.state is State.OPEN]
    for tunnel in waiting:
        tunnel.freeze()
    deadline = loop.time() + DRAIN_WAIT
    while waiting:
        left = []
        for tunnel in waiting:
            if tunnel.state is not State.FROZEN:
                continue  # it ended meanwhile
            if not tunnel.drained():
                left.append(tunnel)
            elif not _send(worker, tunnel, peer):
                tunnel.thaw()
        waiting = left
        if not waiting or loop.time() >= deadline:
            break
        await asyncio.sleep(0.005)
    for tunnel in waiting:
        tunnel.thaw()
    return waiting


def _send(worker: Worker, tunnel: Tunnel, peer: socket.socket) -> bool:
    record = worker.tunnels[tunnel]
    cursor = tunnel.upstream.cursor
    state = {
        "group": record.group.name,
        "server": record.server.address,
        "entry": dataclasses.asdict(record.entry),
        "started": record.started,
        "read_timeout": record.read_timeout,
        "send_timeout": record.send_timeout,
        "client_received": tunnel.client.received,
        "upstream_received": tunnel.upstream.received,
        "left": cursor.left,
        "held": base64.b64encode(cursor.held).decode(),
        "closed": cursor.closed,
    }
    fds = [os.dup(_fd(tunnel.client.transport)), os.dup(_fd(tunnel.upstream.transport))]
    try:
        channel.send(peer, TUNNEL, state, fds=fds)
    except OSError as error:
        log.error("could not hand a tunnel over: %s", error.strerror or error)
        return False
    finally:
        for fd in fds:
            os.close(fd)
    worker.forget(tunnel)
    tunnel.detach()
    return True


class _Held(asyncio.Protocol):
    """A received socket's protocol until its tunnel takes it: reading stops as soon as it
    can, and what the loop read before that is kept for the tunnel."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).pause_reading()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


async def adopt(worker: Worker, message: channel.Message) -> None:
    """Rebuild a tunnel another worker sent, counted against this worker's server of the
    same name and address; if that server is no longer configured, drain it at once."""
    loop = asyncio.get_running_loop()
    fields: dict[str, Any] = message.fields
    socks = [socket.socket(fileno=fd) for fd in message.fds]
    try:
        client, client_held = await loop.connect_accepted_socket(_Held, socks[0])
    except OSError:
        for sock in socks:
            sock.close()
        return
    try:
        upstream, upstream_held = await loop.connect_accepted_socket(_Held, socks[1])
    except OSError:
        client.abort()
        socks[1].close()
        return
    tunnel = Tunnel(client, upstream,
                    fields["read_timeout"], fields["send_timeout"], worker.tunnel_closed)
    tunnel.client.received = fields["client_received"]
    tunnel.upstream.received = fields["upstream_received"]
    tunnel.upstream.cursor = Cursor(fields["left"], base64.b64decode(fields["held"]),
                                    fields["closed"])
    name, address = fields["group"], fields["server"]
    group = worker.routes.groups.get(name)
    server = None if group is None else next(
        (candidate for candidate in group.servers
         if candidate.address == address and not candidate.down), None)
    gone = server is None
    if group is None or server is None:
        group = UpstreamGroup(name, (parse_server(address),))
        server = group.servers[0]
    group.acquire(server)
    record = TunnelRecord(group, server, Entry(**fields["entry"]), fields["started"], False,
                          fields["read_timeout"], fields["send_timeout"])
    worker.add_tunnel(tunnel, record)
    tunnel.start(client_held.take(), upstream_held.take())
    if gone:
        upstream_config = worker.config.upstreams.get(name)
        worker.drain([tunnel], 0.0 if upstream_config is None else upstream_config.drain_timeout)


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
        while True:
            try:
                message = channel.receive(self.sock)
            except BlockingIOError:
                return
            except OSError:
                message = None
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

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
