"""The tunnel of a proxied WebSocket (:mod:`wsgate.proxy.tunnel`) between two fake transports:
ordering, counting, backpressure, half-close, and the idle and send timers (with timeouts
of a few hundredths of a second)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from fakes import FakeTransport
from wsgate.proxy.flow import WRITE_HIGH_WATER
from wsgate.proxy.frames import close_frame
from wsgate.proxy.tunnel import Tunnel, TunnelEnd, Why

UPSTREAM_CLOSE = close_frame(1000, "")
BAD_GATEWAY = close_frame(1014, "bad gateway")
EARLY = 0.002
"""call_later may run up to the clock's resolution early; this is well above it."""


@dataclass
class Rig:
    client: FakeTransport
    upstream: FakeTransport
    tunnel: Tunnel
    closed: list[float] = field(default_factory=list)
    """Loop times at which on_close ran."""


def open_tunnel(read_timeout: float = 0.0, send_timeout: float = 0.0, *,
                client_eof: bool = True, upstream_eof: bool = True,
                from_client: bytes = b"", from_upstream: bytes = b"",
                client: FakeTransport | None = None,
                on_close: Callable[[Tunnel], None] | None = None) -> Rig:
    """A started tunnel, its transports handed over paused, as the client connection does
    (it pauses the client's reading after an upgrade request). ``client``: a transport of
    the test's own; ``on_close``: called after the rig notes the close."""
    client = client or FakeTransport(can_eof=client_eof)
    upstream = FakeTransport(("127.0.0.1", 9), ("127.0.0.1", 40000), can_eof=upstream_eof)
    client.pause_reading()
    upstream.pause_reading()
    closed: list[float] = []
    loop = asyncio.get_running_loop()

    def closing(tunnel: Tunnel) -> None:
        closed.append(loop.time())
        if on_close is not None:
            on_close(tunnel)

    tunnel = Tunnel(client, upstream, read_timeout, send_timeout, closing)
    tunnel.start(from_client, from_upstream)
    return Rig(client, upstream, tunnel, closed)


async def until(condition: Callable[[], bool], limit: float = 1.0) -> None:
    """Wait for ``condition``; the limit is far above any timer here, so only a real hang
    fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.005)
    assert condition(), "condition not met in time"


async def settle() -> None:
    """Let scheduled callbacks (connection_lost, call_later(0)) run."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- data ----------------------------------------------------------------------------------------

def test_start_hands_both_transports_to_the_tunnel_and_resumes_reading() -> None:
    async def main() -> None:
        rig = open_tunnel()
        for transport, end in ((rig.client, rig.tunnel.client),
                               (rig.upstream, rig.tunnel.upstream)):
            assert transport.get_protocol() is end
            assert isinstance(end, TunnelEnd)
            assert transport.reading
            assert transport.high_water == WRITE_HIGH_WATER

    asyncio.run(main())


def test_bytes_pipelined_after_the_heads_go_first() -> None:
    async def main() -> None:
        client = FakeTransport()
        client.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")  # written before the tunnel
        upstream = FakeTransport()
        tunnel = Tunnel(client, upstream, 0, 0, lambda _: None)
        tunnel.start(b"\x81\x05early", b"\x81\x03hey")
        client.feed(b"\x81\x04late")
        upstream.feed(b"\x81\x04next")
        assert upstream.take() == b"\x81\x05early\x81\x04late"
        assert client.take() == (b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
                                 b"\x81\x03hey\x81\x04next")
        assert tunnel.client.received == 13
        assert tunnel.upstream.received == 11

    asyncio.run(main())


def test_data_flows_both_ways_unchanged_and_is_counted() -> None:
    async def main() -> None:
        rig = open_tunnel()
        sent_up = [bytes([n]) * n for n in range(1, 40)]
        sent_down = [b"x" * 1000, b"", b"\x00\xff" * 7]
        for piece in sent_up:
            rig.client.feed(piece)
        for piece in sent_down:
            rig.upstream.feed(piece)
        assert rig.upstream.take() == b"".join(sent_up)
        assert rig.client.take() == b"".join(sent_down)
        assert rig.tunnel.client.received == sum(map(len, sent_up))
        assert rig.tunnel.upstream.received == sum(map(len, sent_down))
        assert rig.closed == []

    asyncio.run(main())


# -- backpressure --------------------------------------------------------------------------------

def test_a_full_client_buffer_pauses_the_upstream_until_it_drains() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.client.block()
        assert not rig.upstream.reading
        assert rig.client.reading  # the other direction is not affected
        assert rig.tunnel.stall.count == 1
        rig.client.unblock()
        assert rig.upstream.reading
        assert rig.tunnel.stall.count == 0

    asyncio.run(main())


def test_a_full_upstream_buffer_pauses_the_client_until_it_drains() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.block()
        assert not rig.client.reading
        assert rig.upstream.reading
        rig.upstream.unblock()
        assert rig.client.reading

    asyncio.run(main())


def test_both_sides_full_then_each_drains() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.client.block()
        rig.upstream.block()
        assert (rig.client.reading, rig.upstream.reading) == (False, False)
        rig.client.unblock()
        assert (rig.client.reading, rig.upstream.reading) == (False, True)
        assert rig.tunnel.stall.count == 1
        rig.upstream.unblock()
        assert (rig.client.reading, rig.upstream.reading) == (True, True)
        assert rig.tunnel.stall.count == 0

    asyncio.run(main())


def test_a_drained_buffer_does_not_resume_a_closing_side() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.client.block()
        rig.upstream.close()
        rig.client.unblock()
        assert not rig.upstream.reading

    asyncio.run(main())


def test_a_side_stuck_past_send_timeout_aborts_the_tunnel() -> None:
    async def main() -> None:
        rig = open_tunnel(send_timeout=0.02)
        start = asyncio.get_running_loop().time()
        rig.upstream.block()
        await until(lambda: bool(rig.closed))
        assert rig.closed[0] - start >= 0.02 - EARLY
        assert rig.client.aborted and rig.upstream.aborted  # buffered bytes are dropped
        assert rig.tunnel.closed
        await settle()
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_a_slow_but_steady_reader_is_not_cut() -> None:
    """The send timer measures one stuck period, not the sum of them."""
    async def main() -> None:
        rig = open_tunnel(send_timeout=0.3)  # far above a loop stall on a busy machine
        for _ in range(8):
            rig.client.block()
            await asyncio.sleep(0.01)
            rig.client.unblock()
            await asyncio.sleep(0)
        assert rig.closed == []
        assert not rig.client.aborted

    asyncio.run(main())


# -- closing -------------------------------------------------------------------------------------

def test_eof_from_one_side_is_passed_on_and_the_other_direction_goes_on() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.client.feed_eof()
        assert rig.upstream.eof_written
        assert not rig.client.closing and not rig.upstream.closing
        rig.upstream.feed(b"last words")
        assert rig.client.take() == b"last words"
        assert rig.closed == []

    asyncio.run(main())


def test_eof_from_both_sides_closes_the_tunnel() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(UPSTREAM_CLOSE)
        rig.upstream.feed_eof()
        assert rig.client.eof_written
        rig.client.feed_eof()
        assert rig.upstream.eof_written
        assert rig.tunnel.closed
        assert rig.client.closing and rig.upstream.closing
        assert not rig.client.aborted and not rig.upstream.aborted
        await settle()
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_eof_toward_a_side_that_cannot_write_eof_closes_both() -> None:
    """TLS cannot half-close: the only way to pass the EOF on is to close."""
    async def main() -> None:
        rig = open_tunnel(upstream_eof=False)
        rig.client.feed_eof()
        assert rig.tunnel.closed
        assert rig.client.closing and rig.upstream.closing
        assert not rig.upstream.eof_written
        await settle()
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_eof_from_a_tls_upstream_toward_a_plain_client_is_passed_on() -> None:
    async def main() -> None:
        rig = open_tunnel(upstream_eof=False)
        rig.upstream.feed(UPSTREAM_CLOSE)
        rig.upstream.feed_eof()
        assert rig.client.eof_written
        assert rig.closed == []

    asyncio.run(main())


def test_eof_toward_a_closing_side_closes_both() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.close()
        rig.client.feed_eof()
        assert not rig.upstream.eof_written
        assert rig.tunnel.closed and rig.client.closing

    asyncio.run(main())


def test_a_reset_on_one_side_closes_the_other() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.client.reset()
        await settle()
        assert rig.tunnel.closed
        assert rig.upstream.closing and not rig.upstream.aborted
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_an_upstream_gone_before_the_start_closes_the_tunnel() -> None:
    """The upstream may close right after its 101; the tunnel must still end, and the client
    get what was written (a close, not an abort)."""
    async def main() -> None:
        client = FakeTransport()
        upstream = FakeTransport()
        client.pause_reading()
        upstream.pause_reading()
        upstream.close()
        closed: list[Tunnel] = []
        tunnel = Tunnel(client, upstream, 0, 0, closed.append)
        tunnel.start(b"", b"bye")
        assert client.take() == b"bye"
        assert not upstream.reading
        await settle()
        assert closed == [tunnel]
        assert client.closing and not client.aborted

    asyncio.run(main())


def test_on_close_runs_exactly_once_whatever_ends_the_tunnel() -> None:
    async def main() -> None:
        rig = open_tunnel(read_timeout=0.04, send_timeout=0.02)
        rig.client.block()
        rig.upstream.reset()
        rig.client.feed_eof()  # before the reset is told: the EOF ends it first
        await settle()
        rig.tunnel.close()
        rig.tunnel.abort()
        await asyncio.sleep(0.1)  # past both timers, which must be cancelled
        assert len(rig.closed) == 1
        assert not rig.client.aborted  # the stall timer did not fire after the close

    asyncio.run(main())


def test_a_silent_tunnel_closes_after_read_timeout() -> None:
    async def main() -> None:
        start = asyncio.get_running_loop().time()
        rig = open_tunnel(read_timeout=0.08)
        await until(lambda: bool(rig.closed))
        assert rig.closed[0] - start >= 0.08 - EARLY
        assert rig.client.closing and rig.upstream.closing
        assert not rig.client.aborted  # what is buffered is still written

    asyncio.run(main())


def test_traffic_keeps_the_tunnel_open_past_read_timeout() -> None:
    async def main() -> None:
        rig = open_tunnel(read_timeout=0.3)  # far above a loop stall on a busy machine
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.5
        last = loop.time()
        while last < end:
            rig.client.feed(b"ping")
            last = loop.time()
            await asyncio.sleep(0.01)
        assert rig.closed == []
        await until(lambda: bool(rig.closed))  # and the timer still runs afterwards
        assert rig.closed[0] - last >= 0.3 - EARLY

    asyncio.run(main())


def test_traffic_in_one_direction_only_keeps_the_tunnel_open() -> None:
    """A server that only pushes (and a client that only listens) is not idle."""
    async def main() -> None:
        rig = open_tunnel(read_timeout=0.3)
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.5
        while loop.time() < end:
            rig.upstream.feed(b"tick")
            await asyncio.sleep(0.01)
        assert rig.closed == []

    asyncio.run(main())


def test_read_timeout_zero_never_closes() -> None:
    async def main() -> None:
        rig = open_tunnel(read_timeout=0)
        await asyncio.sleep(0.05)
        assert rig.closed == []

    asyncio.run(main())


# -- handed over under pressure ---------------------------------------------------------------

def test_bytes_that_fill_a_side_at_start_leave_the_other_side_paused() -> None:
    async def main() -> None:
        client = FakeTransport()
        upstream = FakeTransport()
        client.pause_reading()
        upstream.pause_reading()
        client.hold_writes()  # the client is not reading right now
        tunnel = Tunnel(client, upstream, 0, 0, lambda _: None)
        tunnel.start(b"", b"x" * (WRITE_HIGH_WATER + 10))
        assert client.paused_writing and tunnel.stall.count == 1
        assert not upstream.reading
        client.unblock()
        assert upstream.reading

    asyncio.run(main())


def test_a_side_handed_over_full_keeps_the_other_paused_and_is_cut_by_send_timeout() -> None:
    async def main() -> None:
        client = FakeTransport()
        client.attach(asyncio.Protocol())  # the client connection, before the switch
        client.block()
        upstream = FakeTransport()
        client.pause_reading()
        upstream.pause_reading()
        closed: list[Tunnel] = []
        tunnel = Tunnel(client, upstream, 0, 0.03, closed.append)
        tunnel.start(b"", b"", full=(True, False))
        assert not upstream.reading
        await until(lambda: bool(closed))
        assert client.aborted

    asyncio.run(main())


def test_a_side_handed_over_paused_under_its_high_water_mark_stays_paused() -> None:
    """asyncio keeps a transport paused until it drains to its low-water mark: one handed
    over between the two marks is still paused, and its resume_writing will come."""
    async def main() -> None:
        client = FakeTransport()
        client.attach(asyncio.Protocol())
        client.block()
        client.drain_to(WRITE_HIGH_WATER // 2)  # under the high mark, over the low one
        assert client.paused_writing
        upstream = FakeTransport()
        client.pause_reading()
        upstream.pause_reading()
        tunnel = Tunnel(client, upstream, 0, 0, lambda _: None)
        tunnel.start(b"", b"", full=(True, False))
        assert not upstream.reading
        assert tunnel.stall.count == 1
        client.drain_to(0)
        assert upstream.reading
        assert tunnel.stall.count == 0

    asyncio.run(main())


# -- an upstream that dies ------------------------------------------------------------------

def test_an_upstream_gone_between_frames_gets_the_client_close_1014() -> None:
    """EOF or a reset with no Close frame: the upstream died. Its client hears 1014."""
    async def main() -> None:
        for reset in (False, True):
            rig = open_tunnel()
            rig.upstream.feed(b"\x81\x02hi")
            if reset:
                rig.upstream.reset()
            else:
                rig.upstream.feed_eof()
            await settle()
            assert rig.client.take() == b"\x81\x02hi" + BAD_GATEWAY
            assert rig.tunnel.closed and rig.client.closing and not rig.client.aborted
            assert not rig.client.eof_written
            assert rig.tunnel.reason is (Why.ERROR if reset else Why.UPSTREAM)
            assert len(rig.closed) == 1

    asyncio.run(main())


def test_an_upstream_gone_mid_frame_leaves_a_bare_close() -> None:
    """Nothing valid can follow half a frame: no Close is made up."""
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(b"\x81\x05hel")
        rig.upstream.feed_eof()
        await settle()
        assert rig.client.take() == b"\x81\x05hel"
        assert rig.tunnel.closed and rig.client.closing

    asyncio.run(main())


def test_an_upstream_that_said_close_ends_as_usual() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(UPSTREAM_CLOSE)
        rig.upstream.reset()
        await settle()
        assert rig.client.take() == UPSTREAM_CLOSE
        assert rig.tunnel.closed

    asyncio.run(main())
