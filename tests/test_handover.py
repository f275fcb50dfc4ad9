"""Moving tunnels between workers, in one process, over real sockets: what one worker
sends (:func:`handover.hand_over`) another rebuilds (:func:`handover.adopt`), with every
byte in order, the frame position, the counts, an EOF that came in flight, and the place
of a tunnel in a drain."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from wsgate.proxy import channel, configfile, handover
from wsgate.proxy.accesslog import AccessLog, Entry
from wsgate.proxy.tunnel import State, Tunnel
from wsgate.proxy.worker import TunnelRecord, Worker


def config(tmp_path: Path, servers: str = '"127.0.0.1:1"') -> Worker:
    path = tmp_path / "wsgate.toml"
    path.write_text(f'listen = ["127.0.0.1:0"]\n[upstream.backend]\nserver = [{servers}]\n'
                    'drain_timeout = "4s"\n[location."/"]\nproxy_pass = "http://backend"\n')
    return Worker(configfile.load(path), AccessLog(None, False))


async def open_tunnel(worker: Worker) -> tuple[Tunnel, socket.socket, socket.socket]:
    """A tunnel of ``worker`` between two real socket pairs; returns the far ends: the
    client's and the upstream server's."""
    loop = asyncio.get_running_loop()
    client_near, client_far = socket.socketpair()
    upstream_near, upstream_far = socket.socketpair()
    for far in (client_far, upstream_far):
        far.setblocking(False)
    client, _ = await loop.connect_accepted_socket(asyncio.Protocol, client_near)
    upstream, _ = await loop.connect_accepted_socket(asyncio.Protocol, upstream_near)
    client.pause_reading()
    upstream.pause_reading()
    group = worker.routes.groups["backend"]
    server = group.servers[0]
    group.acquire(server)
    tunnel = Tunnel(client, upstream, 60.0, 60.0, worker.tunnel_closed)
    worker.add_tunnel(tunnel, TunnelRecord(group, server, Entry("192.0.2.1", "GET / HTTP/1.1",
                                                                101, 0), time.monotonic(),
                                           False, 60.0, 60.0))
    tunnel.start(b"", b"")
    return tunnel, client_far, upstream_far


async def read(sock: socket.socket, size: int, limit: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    deadline = loop.time() + limit
    while len(data) < size and loop.time() < deadline:
        try:
            chunk = sock.recv(size - len(data))
        except BlockingIOError:
            await asyncio.sleep(0.005)
            continue
        if not chunk:
            break
        data += chunk
    return data


async def until(condition: object, limit: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not condition() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.005)


def test_a_tunnel_moves_with_its_bytes_frame_position_and_counts(tmp_path: Path) -> None:
    async def main() -> None:
        old, new = config(tmp_path), config(tmp_path)
        tunnel, client, upstream = await open_tunnel(old)
        client.send(b"\x81\x82abcdhi")
        assert await read(upstream, 8) == b"\x81\x82abcdhi"
        upstream.send(b"\x82\x7e\x01\x00" + b"x" * 100)  # a frame of 256: 156 to come
        assert await read(client, 104) == b"\x82\x7e\x01\x00" + b"x" * 100
        give, take = channel.pair()
        receiver = handover.Receiver(new, take)
        kept = await handover.hand_over(old, give, lambda: True)
        assert kept == [] and old.tunnels == {} and tunnel.state is State.CLOSED
        await until(lambda: len(new.tunnels) == 1)
        [(moved, record)] = new.tunnels.items()
        assert moved.upstream.cursor.left == 156
        assert (moved.client.received, moved.upstream.received) == (8, 104)
        assert record.server.active == 1 and old.routes.groups["backend"].servers[0].active == 0
        upstream.send(b"y" * 156 + b"\x81\x01z")
        client.send(b"\x81\x82abcdyo")
        assert await read(client, 159) == b"y" * 156 + b"\x81\x01z"
        assert await read(upstream, 8) == b"\x81\x82abcdyo"
        moved.going_away()  # at a boundary, thanks to the position that moved with it
        assert await read(client, 4) == b"\x88\x0c\x03\xe9"  # 1001, "going away"
        give.close()
        receiver.close()
        moved.abort()

    asyncio.run(main())


def test_an_eof_in_flight_reaches_the_other_side(tmp_path: Path) -> None:
    async def main() -> None:
        old, new = config(tmp_path), config(tmp_path)
        _tunnel, client, upstream = await open_tunnel(old)
        give, take = channel.pair()
        receiver = handover.Receiver(new, take)
        # Sent directly (past the half-close check): the client's FIN comes in flight.
        old_tunnel = next(iter(old.tunnels))
        old_tunnel.freeze()
        await until(old_tunnel.drained)
        client.send(b"late")
        client.shutdown(socket.SHUT_WR)
        handover._send(old, old_tunnel, give)
        await until(lambda: len(new.tunnels) == 1)
        assert await read(upstream, 4) == b"late"
        await until(lambda: _eof(upstream))
        [moved] = new.tunnels
        assert moved.client.closing
        upstream.send(b"bye")
        assert await read(client, 3) == b"bye"
        give.close()
        receiver.close()
        moved.abort()

    asyncio.run(main())


def _eof(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False


def test_a_tunnel_being_drained_keeps_its_place_in_the_spread(tmp_path: Path) -> None:
    async def main() -> None:
        old, new = config(tmp_path), config(tmp_path)
        tunnel, _client, _upstream = await open_tunnel(old)
        old.drain_at(tunnel, 3.0)
        give, take = channel.pair()
        receiver = handover.Receiver(new, take)
        await handover.hand_over(old, give, lambda: True)
        await until(lambda: len(new.tunnels) == 1)
        [moved] = new.tunnels
        remaining = new.drains[moved].when() - asyncio.get_running_loop().time()
        assert 2.5 < remaining <= 3.0
        give.close()
        receiver.close()
        moved.abort()

    asyncio.run(main())


def test_a_gone_peer_leaves_the_tunnels_running(tmp_path: Path) -> None:
    async def main() -> None:
        old = config(tmp_path)
        tunnel, client, upstream = await open_tunnel(old)
        give, take = channel.pair()
        take.close()
        try:
            await handover.hand_over(old, give, lambda: True)
        except handover.PeerGone:
            pass
        else:
            raise AssertionError("PeerGone expected")
        assert tunnel.state is State.OPEN and tunnel in old.tunnels
        client.send(b"still")
        assert await read(upstream, 5) == b"still"
        give.close()
        tunnel.abort()

    asyncio.run(main())


def test_a_channel_read_without_waiting_does_not_wait_on_a_socket_with_a_timeout() -> None:
    """The master's socket to the monitor has a send timeout; a look at it for the monitor's
    state must not sit out that timeout (it held every signal up to 2 s)."""
    ours, theirs = channel.pair()
    with ours, theirs:
        ours.settimeout(2.0)
        began = time.monotonic()
        with pytest.raises(BlockingIOError):
            channel.receive(ours, block=False)
        assert time.monotonic() - began < 0.5
        assert ours.gettimeout() == 2.0
        channel.send(theirs, "state", {"n": 1})
        message = channel.receive(ours, block=False)
        assert message is not None and message.fields == {"n": 1}
