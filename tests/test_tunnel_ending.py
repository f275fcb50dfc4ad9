"""How a tunnel ends and moves (:mod:`wsgate.proxy.tunnel`): Close 1001 between two frames,
the close handshake and its timeout, freezing for a move and detaching; and how a reload
(:meth:`~wsgate.proxy.worker.Worker.apply`) re-points tunnels to the new configuration's
servers and drains a removed server's tunnels, spread over ``drain_timeout``. In-process,
over fake transports, with timers of a few hundredths of a second."""

from __future__ import annotations

import asyncio
import gc
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.utils import accept_key

from fakes import FakeTransport
from test_frames import Case, cut_streams
from test_tunnel import Rig, open_tunnel, settle, until
from wsgate.proxy import configfile
from wsgate.proxy import tunnel as tunnel_module
from wsgate.proxy.accesslog import AccessLog, Entry
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.connection import ClientConnection
from wsgate.proxy.frames import close_frame
from wsgate.proxy.tunnel import State, TunnelEnd, UpstreamEnd
from wsgate.proxy.upstream_connection import UpstreamConnection
from wsgate.proxy.worker import DRAIN_REASON, TunnelRecord, Worker, drain

EARLY = 0.002
"""call_later may run up to the clock's resolution early; this is well above it."""
LATE = 0.08
"""How late a timer may fire on a busy machine and still count as on time."""

GOING_AWAY = b"\x88\x0c\x03\xe9going away"
"""The default Close frame: 1001, "going away", unmasked."""
CLIENT_CLOSE = b"\x88\x82\x01\x02\x03\x04" + bytes(a ^ b for a, b in zip(
    struct.pack("!H", 1001), b"\x01\x02", strict=True))
"""The client's answer: a masked Close 1001 without a reason."""
UPSTREAM_CLOSE = b"\x88\x02\x03\xe9"


class TimedTransport(FakeTransport):
    """A client transport that notes when each Close frame is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.closes: list[float] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data[:1]) == b"\x88":
            self.closes.append(asyncio.get_running_loop().time())
        super().write(data)


def frame_end(stream: bytes) -> int:
    """Where the frame that starts ``stream`` ends, parsed by hand."""
    size = stream[1] & 0x7F
    header = 2 + (4 if stream[1] & 0x80 else 0)
    if size == 126:
        size, header = struct.unpack("!H", stream[2:4])[0], header + 2
    elif size == 127:
        size, header = struct.unpack("!Q", stream[2:10])[0], header + 8
    return header + size


@pytest.fixture
def short_close(monkeypatch: pytest.MonkeyPatch) -> float:
    """A close handshake that may take 50 ms, not 10 s."""
    monkeypatch.setattr(tunnel_module, "CLOSE_TIMEOUT", 0.05)
    return 0.05


# -- going away between two frames -------------------------------------------------------------

def test_going_away_at_a_frame_boundary_writes_the_close_frame_at_once() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(b"\x81\x02hi\x82\x00")
        assert rig.client.take() == b"\x81\x02hi\x82\x00"
        assert rig.tunnel.upstream.cursor.at_boundary()
        rig.tunnel.going_away()
        assert rig.client.take() == GOING_AWAY
        assert rig.tunnel.state is State.ENDING
        assert not rig.client.closing and not rig.upstream.closing  # the handshake goes on
        assert rig.closed == []
        rig.upstream.feed(b"\x81\x05later")  # after the Close: not for the client
        assert rig.client.take() == b""
        assert rig.tunnel.upstream.received == 6  # what was dropped is not counted
        rig.tunnel.abort()

    asyncio.run(main())


@pytest.mark.parametrize(("code", "reason"), [
    (1001, DRAIN_REASON), (1012, "service restart"), (1001, ""), (1001, "x" * 300)])
def test_going_away_writes_the_code_and_reason_given(code: int, reason: str) -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.going_away(code, reason)
        kept = reason.encode()[:123]
        assert rig.client.take() == (b"\x88" + bytes((2 + len(kept),))
                                     + struct.pack("!H", code) + kept)
        rig.tunnel.abort()

    asyncio.run(main())


@pytest.mark.parametrize(("before", "after"), [
    # inside a 16-bit-length payload: 256 bytes, 100 in flight
    (b"\x82\x7e\x01\x00" + b"a" * 100, [b"b" * 100, b"c" * 56]),
    # the rest of the frame and the next frames in one read
    (b"\x82\x7e\x01\x00" + b"a" * 100, [b"b" * 156 + b"\x81\x05later\x81\x00"]),
    # inside its header: the length is not known yet
    (b"\x82", [b"\x7e", b"\x00\x05ab", b"cde"]),
    (b"\x82\x7f\x00\x00", [b"\x00\x00\x00\x00\x00\x03xyz"]),
    # inside a masked header (a server must not mask, but the proxy does not judge)
    (b"\x81\x83\x01\x02", [b"\x03\x04", b"abc"]),
    # inside a 64-bit-length payload, the end in the middle of a read
    (b"\x82\x7f" + struct.pack("!Q", 70000) + b"p" * 1000, [b"q" * 68999, b"r\x81\x02no"]),
], ids=["16-bit payload", "rest and more in one read", "header cut before its length",
        "64-bit length cut", "mask key cut", "64-bit payload"])
def test_going_away_mid_frame_lets_the_frame_finish_then_closes(
        before: bytes, after: list[bytes]) -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(before)
        assert rig.client.take() == before
        assert not rig.tunnel.upstream.cursor.at_boundary()
        rig.tunnel.going_away()
        assert rig.client.take() == b""  # not inside the frame
        stream = before + b"".join(after)
        end = frame_end(stream)
        assert end <= len(stream)
        got = bytearray()
        for piece in after:
            rig.upstream.feed(piece)
            got += rig.client.take()
        assert bytes(got) == stream[len(before):end] + GOING_AWAY
        rig.upstream.feed(b"\x81\x04gone")
        assert rig.client.take() == b""
        assert rig.tunnel.state is State.ENDING
        rig.tunnel.abort()

    asyncio.run(main())


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cut_streams(), st.data())
def test_going_away_anywhere_splits_no_frame(case: Case, data: st.DataObject) -> None:
    """Any stream, cut into reads in any way, going away after any read: the client gets
    the stream up to the end of the frame in flight, then the proxy's Close unless the
    upstream's came first, then nothing."""
    layout, reads = case.layout, case.reads
    k = data.draw(st.integers(0, len(reads)), label="reads before going_away")
    p = sum(case.sizes[:k])
    first = layout.first_end_in(p, len(layout.stream) - p)
    cut = p if layout.at_boundary(p) else p + (first or 0)
    upstream_closed = any(start < p for start in layout.closes)

    async def main() -> None:
        rig = open_tunnel()
        for read in reads[:k]:
            rig.upstream.feed(read)
        assert rig.client.take() == layout.stream[:p]
        rig.tunnel.going_away()
        for read in reads[k:]:
            rig.upstream.feed(read)
        expected = layout.stream[p:cut] + (b"" if upstream_closed else GOING_AWAY)
        assert rig.client.take() == expected
        assert rig.tunnel.upstream.received == cut
        rig.tunnel.abort()

    asyncio.run(main())


def test_going_away_twice_or_after_the_close_writes_one_close_frame() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.going_away()
        rig.tunnel.going_away(1012, "again")
        assert rig.client.take() == GOING_AWAY
        rig.tunnel.close()
        rig.tunnel.going_away()
        assert rig.client.take() == b"" and rig.client.dropped == b""
        await settle()
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_going_away_while_frozen_thaws_and_closes() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.freeze()
        rig.tunnel.going_away()
        assert rig.client.take() == GOING_AWAY
        assert rig.tunnel.state is State.ENDING
        assert rig.client.reading and rig.upstream.reading  # the answer must get through
        rig.tunnel.abort()

    asyncio.run(main())


# -- the close handshake ------------------------------------------------------------------------

@pytest.mark.parametrize("end", ["eof", "reset", "close"])
def test_the_clients_answer_goes_upstream_and_the_upstream_ends_the_tunnel(
        short_close: float, end: str) -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.going_away()
        assert rig.client.take() == GOING_AWAY
        rig.client.feed(CLIENT_CLOSE)
        assert rig.upstream.take() == CLIENT_CLOSE
        rig.upstream.feed(UPSTREAM_CLOSE)  # the server's answer: the client has one already
        assert rig.client.take() == b""
        assert rig.closed == []
        if end == "eof":
            rig.upstream.feed_eof()
        elif end == "reset":
            rig.upstream.reset()
        else:
            rig.upstream.close()  # as the server closes its socket: connection_lost
        await settle()
        assert rig.tunnel.closed
        assert len(rig.closed) == 1
        assert rig.client.closing and not rig.client.aborted  # its Close is still written
        assert rig.upstream.closing
        await asyncio.sleep(short_close + 0.02)  # past the close timer: cancelled
        assert not rig.client.aborted
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_the_client_may_keep_talking_until_its_close() -> None:
    """Frames the client sent before it read the Close still reach the server."""
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.going_away()
        rig.client.feed(b"\x81\x82abcd\x01\x02")
        rig.client.feed(CLIENT_CLOSE)
        assert rig.upstream.take() == b"\x81\x82abcd\x01\x02" + CLIENT_CLOSE
        assert rig.tunnel.client.received == 8 + len(CLIENT_CLOSE)
        rig.tunnel.abort()

    asyncio.run(main())


def test_a_client_eof_after_going_away_is_passed_on() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.going_away()
        rig.client.feed(CLIENT_CLOSE)
        rig.client.feed_eof()
        assert rig.upstream.eof_written
        assert rig.closed == []
        rig.upstream.feed_eof()  # and the server's EOF ends it
        await settle()
        assert len(rig.closed) == 1
        assert not rig.client.aborted

    asyncio.run(main())


@pytest.mark.parametrize("already", [
    UPSTREAM_CLOSE,  # a whole Close frame
    b"\x88\x05\x03\xe9",  # a Close frame whose reason is still to come
    b"\x88\x7e",  # a Close frame's header, cut in its length
    b"\x81\x02hi\x88\x02\x03\xe9",
])
def test_going_away_after_the_upstreams_close_adds_no_second_close(already: bytes) -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(already)
        assert rig.client.take() == already
        assert rig.tunnel.upstream.cursor.closed
        rig.tunnel.going_away()
        rig.upstream.feed(b"\x00\x03bye")  # the rest of the frame in flight, if any
        rig.upstream.feed(b"\x81\x04more")
        got = rig.client.take()
        assert b"\x88" not in got and b"going away" not in got, got
        assert rig.tunnel.state is State.ENDING
        rig.tunnel.abort()

    asyncio.run(main())


def test_going_away_after_the_first_byte_of_the_upstreams_close_adds_no_second_close() -> None:
    """A read that ends right after a Close frame's first byte: the frame in flight is the
    upstream's Close, so the client must get that one Close, not the proxy's too (RFC 6455
    §5.5.1: nothing may follow a Close)."""
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(b"\x81\x02hi\x88")
        rig.tunnel.going_away()
        rig.upstream.feed(b"\x02\x03\xe8")
        got = rig.client.take()
        assert got.startswith(b"\x81\x02hi\x88\x02\x03\xe8")
        assert got == b"\x81\x02hi\x88\x02\x03\xe8", f"a second Close followed: {got!r}"
        rig.tunnel.abort()

    asyncio.run(main())


def test_a_client_that_never_answers_is_cut_after_close_timeout(short_close: float) -> None:
    async def main() -> None:
        rig = open_tunnel()
        start = asyncio.get_running_loop().time()
        rig.tunnel.going_away()
        await until(lambda: bool(rig.closed))
        assert rig.closed[0] - start >= short_close - EARLY
        assert rig.client.aborted and rig.upstream.aborted
        await settle()
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_an_upstream_that_never_closes_is_cut_after_close_timeout(short_close: float) -> None:
    async def main() -> None:
        rig = open_tunnel()
        start = asyncio.get_running_loop().time()
        rig.tunnel.going_away()
        rig.client.feed(CLIENT_CLOSE)
        await until(lambda: bool(rig.closed))
        assert rig.closed[0] - start >= short_close - EARLY
        assert rig.upstream.aborted
        assert len(rig.closed) == 1

    asyncio.run(main())


def test_backpressure_still_works_while_ending() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(b"\x82\x7e\x01\x00")  # a frame in flight: the upstream still passes
        rig.tunnel.going_away()
        rig.upstream.block()  # the upstream side's protocol is now the ending one
        assert not rig.client.reading
        rig.upstream.unblock()
        assert rig.client.reading
        rig.client.block()
        assert not rig.upstream.reading
        rig.client.unblock()
        assert rig.upstream.reading
        rig.tunnel.abort()

    asyncio.run(main())


# -- freezing, draining, detaching ---------------------------------------------------------------

def test_freeze_pauses_both_sides_and_thaw_resumes_them() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.freeze()
        assert rig.tunnel.state is State.FROZEN
        assert not rig.client.reading and not rig.upstream.reading
        rig.tunnel.thaw()
        assert rig.tunnel.state is State.OPEN
        assert rig.client.reading and rig.upstream.reading
        rig.client.feed(b"a")
        rig.upstream.feed(b"b")
        assert (rig.upstream.take(), rig.client.take()) == (b"a", b"b")
        rig.tunnel.thaw()  # not frozen: nothing happens
        assert rig.tunnel.state is State.OPEN

    asyncio.run(main())


def test_a_drained_buffer_does_not_resume_reading_while_frozen() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.client.block()
        rig.upstream.block()
        rig.tunnel.freeze()
        rig.client.unblock()  # resume_writing while frozen
        rig.upstream.unblock()
        assert not rig.client.reading and not rig.upstream.reading
        assert rig.tunnel.stall.count == 0
        rig.tunnel.thaw()
        assert rig.client.reading and rig.upstream.reading

    asyncio.run(main())


def test_thaw_leaves_paused_the_side_whose_peer_is_full() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.freeze()
        rig.client.block()  # the client stops reading while frozen
        rig.tunnel.thaw()
        assert rig.client.reading
        assert not rig.upstream.reading  # nowhere to put what it would read
        rig.client.unblock()
        assert rig.upstream.reading

    asyncio.run(main())


def test_freeze_is_only_for_an_open_tunnel() -> None:
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.going_away()
        rig.tunnel.freeze()
        assert rig.tunnel.state is State.ENDING
        assert rig.client.reading and rig.upstream.reading
        rig.tunnel.close()
        rig.tunnel.freeze()
        assert rig.tunnel.state is State.CLOSED

    asyncio.run(main())


def test_drained_reflects_both_write_buffers() -> None:
    async def main() -> None:
        rig = open_tunnel()
        assert rig.tunnel.drained()
        rig.client.hold_writes()
        rig.upstream.feed(b"x" * 10)  # waits in the client's buffer
        rig.tunnel.freeze()
        assert not rig.tunnel.drained()
        rig.client.unblock()
        assert rig.tunnel.drained()
        rig.tunnel.thaw()
        rig.upstream.hold_writes()
        rig.client.feed(b"y" * 3)
        assert not rig.tunnel.drained()
        rig.upstream.drain_to(1)
        assert not rig.tunnel.drained()
        rig.upstream.drain_to(0)
        assert rig.tunnel.drained()

    asyncio.run(main())


def test_detach_forgets_both_transports_without_a_close_or_a_report() -> None:
    async def main() -> None:
        rig = open_tunnel(read_timeout=0.04, send_timeout=0.04)
        rig.upstream.feed(b"\x81\x02hi")
        rig.client.take()
        rig.upstream.block()  # arms the send timer
        rig.tunnel.freeze()
        rig.tunnel.detach()
        assert rig.tunnel.closed
        for transport in (rig.client, rig.upstream):
            protocol = transport.get_protocol()
            assert not isinstance(protocol, TunnelEnd | tunnel_module._Ending)
            assert transport.written == b"" and transport.dropped == b""
            assert not transport.eof_written
        # How a fake records "let go of the socket": an abort, whose connection_lost goes to
        # the inert protocol, not to the tunnel.
        assert rig.client.aborted and rig.upstream.aborted
        await asyncio.sleep(0.1)  # past the idle and send timers: cancelled
        assert rig.closed == []
        rig.tunnel.close()
        rig.tunnel.going_away()
        assert rig.closed == []
        # Its ends let go of it: dropped, it goes at once, not at a collection.
        gc.collect()
        gc.disable()
        try:
            rig.tunnel = None  # type: ignore[assignment]
            assert [item for item in gc.get_objects() if isinstance(item, TunnelEnd)] == []
        finally:
            gc.enable()

    asyncio.run(main())


# -- draining over a period -------------------------------------------------------------------

def test_drain_spreads_the_close_frames_evenly_over_the_period() -> None:
    async def main() -> None:
        clients = [TimedTransport() for _ in range(4)]
        rigs = [open_tunnel(client=client) for client in clients]
        loop = asyncio.get_running_loop()
        period = 0.3
        start = loop.time()
        drain([rig.tunnel for rig in rigs], period)
        assert all(rig.client.written == b"" for rig in rigs)  # not even the first, yet
        await until(lambda: all(client.closes for client in clients))
        times = [client.closes for client in clients]
        assert all(len(each) == 1 for each in times)
        for index, (when,) in enumerate(times):
            expected = start + period * index / 3
            assert expected - EARLY <= when <= expected + LATE, (index, when - start)
        assert [when for (when,) in times] == sorted(when for (when,) in times)
        for rig in rigs:
            reason = DRAIN_REASON.encode()
            assert rig.client.take() == b"\x88" + bytes((2 + len(reason),)) + b"\x03\xe9" + reason
            rig.tunnel.abort()

    asyncio.run(main())


def test_drain_of_one_tunnel_is_at_once_and_of_none_is_nothing() -> None:
    async def main() -> None:
        drain([], 0.3)
        rig = open_tunnel()
        drain([rig.tunnel], 5.0)
        await settle()
        assert rig.client.take().startswith(b"\x88")
        rig.tunnel.abort()

    asyncio.run(main())


def test_drain_skips_a_tunnel_that_closed_meanwhile() -> None:
    async def main() -> None:
        first, second = open_tunnel(), open_tunnel()
        drain([first.tunnel, second.tunnel], 0.05)
        second.client.reset()
        await until(lambda: first.client.written.startswith(b"\x88"))
        await asyncio.sleep(0.08)
        assert second.client.dropped == b"" and second.client.written == b""
        assert len(second.closed) == 1
        first.tunnel.abort()

    asyncio.run(main())


# -- a reload -----------------------------------------------------------------------------------

class CapturingLog(AccessLog):
    def __init__(self) -> None:
        super().__init__(None, json_format=False)
        self.entries: list[Entry] = []

    def write(self, entry: Entry) -> None:
        self.entries.append(entry)


def config_file(tmp_path: Path, name: str, servers: list[str],
                drain_timeout: str = "200ms") -> ProxyConfig:
    path = tmp_path / name
    listed = ", ".join(f'"{server}"' for server in servers)
    path.write_text(f'listen = ["127.0.0.1:0"]\n\n[upstream.backend]\nserver = [{listed}]\n'
                    f'drain_timeout = "{drain_timeout}"\n\n'
                    f'[location."/"]\nproxy_pass = "http://backend"\n')
    return configfile.load(path)


@dataclass
class Proxied:
    rig: Rig
    client: TimedTransport
    record: TunnelRecord


def proxied(worker: Worker, address: str) -> Proxied:
    """A tunnel to ``address`` counted by the worker, as the client connection opens one."""
    group = worker.routes.groups["backend"]
    [server] = [server for server in group.servers if server.address == address]
    group.acquire(server)
    client = TimedTransport()
    rig = open_tunnel(client=client, on_close=worker.tunnel_closed)
    record = TunnelRecord(group, server, Entry("192.0.2.7", "GET / HTTP/1.1", 101, 0,
                                               upstream_addr=address),
                          time.monotonic(), False, 60.0, 60.0)
    worker.add_tunnel(rig.tunnel, record)
    return Proxied(rig, client, record)


@pytest.mark.parametrize("after", [["127.0.0.1:2"], ["127.0.0.1:1 down", "127.0.0.1:2"],
                                   ["127.0.0.1:3", "127.0.0.1:2"]])
def test_a_reload_drains_the_removed_servers_tunnels_and_re_points_the_rest(
        tmp_path: Path, after: list[str]) -> None:
    async def main() -> None:
        before = config_file(tmp_path, "before.toml", ["127.0.0.1:1", "127.0.0.1:2"])
        log = CapturingLog()
        worker = Worker(before, log)
        old = {server.address: server for server in worker.routes.groups["backend"].servers}
        gone = [proxied(worker, "127.0.0.1:1") for _ in range(3)]
        kept = [proxied(worker, "127.0.0.1:2") for _ in range(2)]
        assert (old["127.0.0.1:1"].active, old["127.0.0.1:2"].active) == (3, 2)

        new_log = CapturingLog()
        start = asyncio.get_running_loop().time()
        drained = worker.apply(config_file(tmp_path, "after.toml", after), new_log)
        assert drained == [each.rig.tunnel for each in gone]  # oldest first
        new_group = worker.routes.groups["backend"]
        [new_server] = [server for server in new_group.servers
                        if server.address == "127.0.0.1:2"]
        for each in kept:
            assert each.record.server is new_server
            assert each.record.group is new_group
        assert new_server.active == 2
        assert old["127.0.0.1:2"].active == 0
        assert old["127.0.0.1:1"].active == 3  # until each closes
        assert all(server.active == 0 for server in new_group.servers
                   if server is not new_server)
        for each in gone:
            assert each.record.server is old["127.0.0.1:1"]

        # 200 ms spread over three: now, at 100 ms, at 200 ms.
        clients = [each.client for each in gone]
        await until(lambda: all(client.closes for client in clients))
        for index, client in enumerate(clients):
            [when] = client.closes
            expected = start + 0.2 * index / 2
            assert expected - EARLY <= when <= expected + LATE, (index, when - start)
            assert client.take().endswith(DRAIN_REASON.encode())
        for each in kept:
            assert each.rig.client.take() == b""
            assert each.rig.tunnel.state is State.OPEN

        # The clients answer, the server closes: each logged once, in the new log.
        for each in gone:
            each.rig.client.feed(CLIENT_CLOSE)
            assert each.rig.upstream.take() == CLIENT_CLOSE
            each.rig.upstream.feed_eof()
        await settle()
        assert old["127.0.0.1:1"].active == 0
        assert len(new_log.entries) == 3 and log.entries == []
        assert [each.rig.tunnel for each in gone if each.rig.tunnel in worker.tunnels] == []

        # A re-pointed tunnel counts against the new server to its end.
        kept[0].rig.upstream.reset()
        await settle()
        assert new_server.active == 1
        assert len(new_log.entries) == 4
        assert set(worker.tunnels) == {kept[1].rig.tunnel}
        kept[1].rig.tunnel.abort()
        assert new_server.active == 0

    asyncio.run(main())


def test_a_reload_that_keeps_every_server_drains_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        before = config_file(tmp_path, "before.toml", ["127.0.0.1:1", "127.0.0.1:2"])
        worker = Worker(before, CapturingLog())
        tunnels = [proxied(worker, address) for address in ("127.0.0.1:1", "127.0.0.1:2")]
        after = config_file(tmp_path, "after.toml", ["127.0.0.1:2 weight=3", "127.0.0.1:1"],
                            drain_timeout="0")
        assert worker.apply(after, CapturingLog()) == []
        servers = {server.address: server for server in worker.routes.groups["backend"].servers}
        assert [each.record.server for each in tunnels] == [servers["127.0.0.1:1"],
                                                             servers["127.0.0.1:2"]]
        assert (servers["127.0.0.1:1"].active, servers["127.0.0.1:2"].active) == (1, 1)
        await asyncio.sleep(0.02)
        assert all(each.rig.client.written == b"" for each in tunnels)
        for each in tunnels:
            each.rig.tunnel.abort()
        assert (servers["127.0.0.1:1"].active, servers["127.0.0.1:2"].active) == (0, 0)

    asyncio.run(main())


def test_a_reload_drains_a_tunnel_opened_through_a_client_connection(tmp_path: Path) -> None:
    """The whole way: a handshake through the worker opens the tunnel whose record the
    reload reads."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    handshake = (b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key.encode() +
                 b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    switch = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key).encode() +
              b"\r\n\r\n")

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def no_sockets(*args: object, **kwargs: object) -> None:
            raise OSError("no real connection in these tests")

        loop.create_connection = no_sockets  # type: ignore[method-assign,assignment]
        log = CapturingLog()
        worker = Worker(config_file(tmp_path, "before.toml", ["127.0.0.1:1"]), log)
        upstream = UpstreamConnection("127.0.0.1:1")
        up = FakeTransport(("127.0.0.1", 1), ("127.0.0.1", 40000))
        up.attach(upstream)
        worker.pool.put("127.0.0.1:1", upstream, 32)
        client = FakeTransport()
        client.attach(ClientConnection(worker, "http"))
        client.feed(handshake)
        await settle()
        assert up.take().startswith(b"GET /ws HTTP/1.1\r\n")
        up.feed(switch + b"\x81\x82\x00")  # a frame cut in its mask key
        assert client.take() == switch + b"\x81\x82\x00"
        [tunnel] = worker.tunnels
        assert isinstance(tunnel.upstream, UpstreamEnd)
        old_server = worker.tunnels[tunnel].server
        assert old_server.active == 1

        drained = worker.apply(config_file(tmp_path, "after.toml", ["127.0.0.1:2"], "1s"),
                               CapturingLog())
        assert drained == [tunnel]
        await settle()
        assert client.take() == b""  # the frame in flight first
        up.feed(b"\x00\x00\x00ok\x81\x01x")
        assert client.take() == b"\x00\x00\x00ok" + close_frame(1001, DRAIN_REASON)
        client.feed(CLIENT_CLOSE)
        assert up.take() == CLIENT_CLOSE
        up.feed_eof()
        await settle()
        assert worker.tunnels == {}
        assert old_server.active == 0

    asyncio.run(main())


def test_going_away_after_the_upstream_half_closed_just_closes() -> None:
    """The upstream sent FIN (passed on to the client with write_eof): no frame may follow
    it, so going away closes instead of writing a Close."""
    async def main() -> None:
        rig = open_tunnel()
        rig.upstream.feed(b"\x81\x02hi" + close_frame(1000, ""))
        rig.upstream.feed_eof()
        assert rig.client.take() == b"\x81\x02hi" + close_frame(1000, "")
        rig.tunnel.going_away()
        await settle()
        assert rig.tunnel.state is State.CLOSED and len(rig.closed) == 1
        assert rig.client.take() == b""

    asyncio.run(main())


def test_a_second_reload_after_a_group_was_removed_keeps_draining(tmp_path: Path) -> None:
    """Reload 1 removes the group its tunnels belong to; reload 2 (the group still gone)
    neither fails nor reschedules them; reload 3 brings the server back and calls the
    remaining closes off."""
    async def main() -> None:
        before = config_file(tmp_path, "before.toml", ["127.0.0.1:1"], drain_timeout="1s")
        worker = Worker(before, CapturingLog())
        tunnels = [proxied(worker, "127.0.0.1:1") for _ in range(3)]
        other = tmp_path / "other.toml"
        other.write_text('listen = ["127.0.0.1:0"]\n[upstream.other]\nserver = ["127.0.0.1:9"]\n'
                         '[location."/"]\nproxy_pass = "http://other"\n')
        worker.apply(configfile.load(other), CapturingLog())
        first = dict(worker.drains)
        assert len(first) == 3
        worker.apply(configfile.load(other), CapturingLog())  # no KeyError
        assert worker.drains == first  # the same schedule, not a second one
        await settle()
        assert tunnels[0].rig.tunnel.state is State.ENDING  # the first went at once
        worker.apply(config_file(tmp_path, "back.toml", ["127.0.0.1:1"]), CapturingLog())
        await asyncio.sleep(1.2)
        assert [each.rig.tunnel.state for each in tunnels[1:]] == [State.OPEN, State.OPEN]
        for each in tunnels:
            each.rig.tunnel.abort()

    asyncio.run(main())


def test_an_upstream_reset_while_ending_adds_no_second_close() -> None:
    """The proxy's Close went already: the upstream dying then is not worth a 1014."""
    async def main() -> None:
        rig = open_tunnel()
        rig.tunnel.going_away()
        assert rig.client.take() == close_frame(1001, "going away")
        rig.upstream.reset()
        await settle()
        assert rig.client.take() == b""
        assert rig.tunnel.state is State.CLOSED

    asyncio.run(main())
