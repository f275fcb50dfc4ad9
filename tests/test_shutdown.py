"""SIGTERM, SIGINT and SIGQUIT end every WebSocket as a server would: a Close 1001 to the
client, at a frame boundary, whose answer reaches the upstream, then exit 0. SIGTERM does
it at once, SIGQUIT at ``worker_shutdown_timeout``; plain requests in flight finish.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from conftest import Spawn
from ops_helpers import Background, Streams, Upstream, start, wait_for, write_config


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_fast_stop_sends_close_1001_both_ways_at_once(wsgate: Spawn, tmp_path: Path,
                                                      bg: Background, sig: int) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='worker_processes = 2\n'
                                             'worker_shutdown_timeout = "20s"')
    proxy, port = start(wsgate, config)
    streams = Streams(bg, port, 10)
    streams.open()
    time.sleep(0.3)
    began = time.monotonic()
    proxy.signal(sig)
    wait_for(lambda: len(streams.dropped()) == 10, what="every client to see the close")
    assert {stream.closed for stream in streams.streams} == {1001}
    assert max(stream.closed_at for stream in streams.streams) - began < 3
    assert streams.total("disorder") == 0
    wait_for(lambda: len(a.close_codes) == 10, what="the upstream to see every close")
    assert set(a.close_codes) == {1001}
    assert proxy.popen.wait(timeout=10) == 0
    assert time.monotonic() - began < 5


def test_graceful_stop_keeps_tunnels_until_the_timeout_then_closes_1001(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='worker_shutdown_timeout = "1500ms"')
    proxy, port = start(wsgate, config)
    streams = Streams(bg, port, 5)
    streams.open()
    time.sleep(0.2)
    began = time.monotonic()
    proxy.signal(signal.SIGQUIT)
    time.sleep(0.5)
    echoed = streams.total("echoed")
    time.sleep(0.5)
    assert streams.total("echoed") > echoed  # still served during the grace period
    assert streams.dropped() == []
    wait_for(lambda: len(streams.dropped()) == 5, what="every client to see the close")
    assert {stream.closed for stream in streams.streams} == {1001}
    assert 1.3 < min(stream.closed_at for stream in streams.streams) - began < 4
    wait_for(lambda: len(a.close_codes) == 5, what="the upstream to see every close")
    assert set(a.close_codes) == {1001}
    assert proxy.popen.wait(timeout=10) == 0


async def _blast(ws: ServerConnection) -> None:
    """200 kB binary frames written in odd pieces, so that the proxy is nearly always in
    the middle of one (the frames are written raw, past websockets' own framing)."""
    frame = bytes((0x82, 127)) + (200_000).to_bytes(8, "big") + bytes(200_000)
    transport = ws.transport
    while not transport.is_closing():
        for offset in range(0, len(frame), 30_001):
            transport.write(frame[offset:offset + 30_001])
            await asyncio.sleep(0.001)
            while transport.get_write_buffer_size() > 1 << 20 and not transport.is_closing():
                await asyncio.sleep(0.01)


def test_the_close_frame_never_splits_a_frame(wsgate: Spawn, tmp_path: Path,
                                              bg: Background) -> None:
    """A client reading 200 kB frames gets a clean Close 1001: the proxy writes it after
    the frame in flight (inside one, the client would take it for payload and never see a
    Close: 1006)."""
    async def start_server() -> Server:
        return await serve(_blast, "127.0.0.1", 0, ping_interval=None)

    server = bg.run(start_server())
    upstream = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = tmp_path / "wsgate.toml"
    write_config(config, [upstream])
    proxy, port = start(wsgate, config)

    async def read_until_closed() -> tuple[int, int | None]:
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None, ping_interval=None,
                           open_timeout=5) as ws:
            count = 0
            try:
                async for message in ws:
                    assert len(message) == 200_000
                    count += 1
                    if count == 20:
                        proxy.signal(signal.SIGTERM)
                    await asyncio.sleep(0.01)  # slow: the proxy stops mid-frame
            except ConnectionClosed:
                pass
            return count, ws.close_code

    count, code = bg.run(read_until_closed(), timeout=20)
    assert count >= 20
    assert code == 1001
    assert proxy.popen.wait(timeout=10) == 0
    server.close()
