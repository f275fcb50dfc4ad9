"""A :class:`~wsgate.proxy.connection.ClientConnection` driven in-process: the client and the
upstream are fake transports, and the upstream connection waits in the worker's pool, so
no socket is ever opened. Each test plays both peers byte by byte and reads exactly what
each was sent, with timeouts of a few hundredths of a second."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.utils import accept_key

from fakes import FakeTransport
from wsgate.proxy import flags
from wsgate.proxy.accesslog import AccessLog, Entry
from wsgate.proxy.config import Location, ProxyConfig, VirtualServer
from wsgate.proxy.connection import ClientConnection
from wsgate.proxy.exchange import Exchange, Phase
from wsgate.proxy.flow import WRITE_HIGH_WATER, Stall
from wsgate.proxy.frames import Cursor
from wsgate.proxy.http1 import error_response
from wsgate.proxy.reader import RequestReader
from wsgate.proxy.servers import ServerState
from wsgate.proxy.tunnel import Tunnel, TunnelEnd
from wsgate.proxy.upstream_connection import UpstreamConnection
from wsgate.proxy.worker import Worker

SERVER = "127.0.0.1:9"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY.encode() +
             b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: " + accept_key(KEY).encode() + b"\r\n\r\n")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
EARLY = 0.002
"""call_later may run up to the clock's resolution early; this is well above it."""


class CapturingLog(AccessLog):
    """The access log, as entries rather than lines."""

    def __init__(self) -> None:
        super().__init__(None, json_format=False)
        self.entries: list[Entry] = []

    def write(self, entry: Entry) -> None:
        self.entries.append(entry)

    @property
    def statuses(self) -> list[int]:
        return [entry.status for entry in self.entries]


def make_config(read_timeout: str = "60s", **changes: Any) -> ProxyConfig:
    """One upstream group with one server; ``changes`` replace the fields of the
    configuration, its one server or its one location, whichever has them."""
    config = flags.from_flags({"--listen": ["127.0.0.1:8080"], "--upstream": [SERVER],
                               "--read-timeout": read_timeout})
    server = config.servers[0]
    server_fields = {field.name for field in dataclasses.fields(VirtualServer)}
    location_fields = {field.name for field in dataclasses.fields(Location)}
    on_server = {name: changes.pop(name) for name in list(changes) if name in server_fields}
    on_location = {name: changes.pop(name) for name in list(changes) if name in location_fields}
    location = dataclasses.replace(server.locations[0], **on_location)
    server = dataclasses.replace(server, **on_server, locations=(location,),
                                 defaults=dataclasses.replace(server.defaults, **on_location))
    return dataclasses.replace(config, **changes, servers=(server,))


@dataclass
class Rig:
    worker: Worker
    log: CapturingLog
    conn: ClientConnection
    client: FakeTransport
    upstream: UpstreamConnection
    up: FakeTransport
    dials: list[tuple[Any, ...]]
    """Attempts to open a real connection: none may happen here."""

    @property
    def server(self) -> ServerState:
        return self.worker.routes.groups["backend"].servers[0]

    def pooled(self) -> UpstreamConnection | None:
        """The idle upstream connection, put back after looking."""
        conn = self.worker.pool.take(SERVER)
        if conn is not None:
            self.worker.pool.put(SERVER, conn, 32)
        return conn


def make_rig(config: ProxyConfig | None = None) -> Rig:
    """A worker whose pool holds one connected upstream, and a client connected to it."""
    loop = asyncio.get_running_loop()
    dials: list[tuple[Any, ...]] = []

    async def no_sockets(*args: Any, **kwargs: Any) -> Any:
        dials.append(args)
        raise OSError("no real connection in these tests")

    loop.create_connection = no_sockets  # type: ignore[method-assign]
    log = CapturingLog()
    worker = Worker(config or make_config(), log)
    upstream = UpstreamConnection(SERVER)
    up = FakeTransport(("127.0.0.1", 9), ("127.0.0.1", 40000))
    up.attach(upstream)
    worker.pool.put(SERVER, upstream, 32)
    conn = ClientConnection(worker, "http")
    client = FakeTransport()
    client.attach(conn)
    return Rig(worker, log, conn, client, upstream, up, dials)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


async def settle() -> None:
    """Let the connect task and scheduled callbacks (connection_lost) run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], limit: float = 1.0) -> None:
    """Wait for ``condition``; the limit is far above any timer here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.005)
    assert condition(), "condition not met in time"


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer[9:12])


# -- plain requests ------------------------------------------------------------------------------

def test_get_is_relayed_with_keep_alive_and_the_upstream_goes_back_to_the_pool() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n"
                        b"Connection: keep-alive\r\n\r\n")
        assert rig.up.written == b""  # the connect task runs on the next loop iteration
        await settle()
        sent = rig.up.take()
        assert sent.startswith(b"GET /a?b=1 HTTP/1.1\r\n")
        assert b"\r\nHost: example.com\r\n" in sent
        assert b"\r\nX-Real-IP: 192.0.2.7\r\n" in sent
        assert b"\r\nX-Forwarded-For: 192.0.2.7\r\n" in sent
        assert b"keep-alive" not in sent.lower()  # hop-by-hop
        assert sent.endswith(b"\r\n\r\n") and sent.count(b"\r\n\r\n") == 1
        assert rig.pooled() is None  # taken for this request
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello")
        assert rig.client.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello"
        assert not rig.client.closing
        assert rig.conn.phase is Phase.WAITING
        assert rig.pooled() is rig.upstream
        assert rig.up.reading and not rig.up.closing
        assert rig.server.active == 0
        [entry] = rig.log.entries
        assert (entry.request, entry.status, entry.body_bytes_sent) == (
            "GET /a?b=1 HTTP/1.1", 200, 5)
        assert (entry.upstream_addr, entry.remote_addr, entry.http_user_agent) == (
            SERVER, "192.0.2.7", "t/1")
        assert entry.upstream_connect_time is not None

        # The next request on the same client connection reuses the pooled upstream.
        rig.client.feed(b"GET /second HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await settle()
        assert rig.up.take().startswith(b"GET /second HTTP/1.1\r\n")
        rig.up.feed(OK)
        assert rig.client.take() == OK
        assert rig.log.statuses == [200, 200]
        assert rig.dials == []

    run(main)


def test_pipelined_requests_are_answered_in_order_one_upstream_request_at_a_time() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert not rig.client.reading  # a request waits: no more is read meanwhile
        await settle()
        assert rig.up.take().startswith(b"GET /1 ")  # and only the first
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        await settle()
        assert rig.up.take().startswith(b"GET /2 ")
        assert rig.client.reading
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        answer = rig.client.take()
        assert answer.index(b"\r\n\r\n1") < answer.index(b"\r\n\r\n2")
        assert [e.request for e in rig.log.entries] == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]

    run(main)


def test_chunked_post_body_is_rechunked_upstream_as_it_comes() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;ext=1\r\nhe")
        await settle()  # the body piece waited for the upstream, then followed the head
        head, _, body = rig.up.take().partition(b"\r\n\r\n")
        assert head.startswith(b"POST /up HTTP/1.1\r\n")
        assert head.lower().count(b"transfer-encoding: chunked") == 1
        assert body == b"2\r\nhe\r\n"  # the extension is not passed on
        rig.client.feed(b"llo\r\n0\r\n\r\n")
        assert rig.up.take() == b"3\r\nllo\r\n0\r\n\r\n"
        rig.up.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        assert status_of(rig.client.take()) == 201
        [entry] = rig.log.entries
        assert (entry.status, entry.bytes_received) == (201, 5)
        assert rig.pooled() is rig.upstream

    run(main)


def test_content_length_post_body_goes_upstream_as_is() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
        await settle()
        head, _, body = rig.up.take().partition(b"\r\n\r\n")
        assert b"\r\nContent-Length: 6" in head and b"chunked" not in head.lower()
        assert body == b"abc"
        rig.client.feed(b"def")
        assert rig.up.take() == b"def"
        rig.up.feed(OK)
        assert rig.client.take() == OK

    run(main)


def test_response_without_length_is_chunked_to_an_http11_client() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.take()
        rig.up.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart")
        rig.up.reset()  # the close ends the body
        await settle()
        answer = rig.client.take()
        assert answer == (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"4\r\npart\r\n0\r\n\r\n")
        assert not rig.client.closing  # the client's connection lives on
        assert rig.log.statuses == [200]
        assert rig.pooled() is None

    run(main)


def test_interim_100_is_relayed_before_the_final_response() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                        b"Expect: 100-continue\r\n\r\n")
        await settle()
        rig.up.take()
        rig.up.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert rig.client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
        rig.client.feed(b"x")
        assert rig.up.take() == b"x"
        rig.up.feed(OK)
        assert rig.client.take() == OK
        assert rig.log.statuses == [200]

    run(main)


def test_interim_100_is_not_sent_to_an_http10_client() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET / HTTP/1.0\r\n\r\n")
        await settle()
        rig.up.take()
        rig.up.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert rig.client.written == b""
        rig.up.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        # No length for HTTP/1.0: the body as it is, ended by the close.
        assert rig.client.take() == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc"
        assert rig.client.closing
        assert rig.pooled() is rig.upstream

    run(main)


def test_head_response_has_no_body_and_the_upstream_is_reused() -> None:
    """llhttp cannot be told a response answers HEAD: its Content-Length must not make the
    next response on that connection read as this one's body."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"HEAD /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        assert rig.up.take().startswith(b"HEAD /1 ")
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        assert rig.client.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        assert rig.pooled() is rig.upstream
        rig.client.feed(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        assert rig.up.take().startswith(b"GET /2 ")
        rig.up.feed(OK)
        assert rig.client.take() == OK
        assert rig.log.statuses == [200, 200]

    run(main)


def test_response_before_the_end_of_the_upload_ends_both_connections() -> None:
    """The rest of the body would otherwise be read as the next request."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        rig.up.take()
        rig.up.feed(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
        answer = rig.client.take()
        assert status_of(answer) == 413
        assert b"\r\nConnection: close\r\n" in answer  # said before the close
        assert rig.client.closing
        assert rig.up.closing
        assert rig.pooled() is None
        assert rig.log.statuses == [413]

    run(main)


def test_large_body_before_the_upstream_is_reached_pauses_the_client() -> None:
    async def main() -> None:
        rig = make_rig()
        body = b"y" * (WRITE_HIGH_WATER + 100)
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
                        % len(body) + body)
        assert not rig.client.reading  # more than the bound waits for the upstream
        await settle()
        assert rig.client.reading
        assert rig.up.take().endswith(b"\r\n\r\n" + body)

    run(main)


def test_small_body_before_the_upstream_is_reached_does_not_pause_the_client() -> None:
    """Reading on is how a client's close is noticed."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        assert rig.client.reading
        await settle()
        assert rig.up.take().endswith(b"\r\n\r\nabc")

    run(main)


# -- WebSocket -----------------------------------------------------------------------------------

def test_websocket_handshake_becomes_a_tunnel() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(HANDSHAKE + b"\x81\x02hi")
        assert not rig.client.reading  # what follows an upgrade request is the tunnel's
        await settle()
        head = rig.up.take()
        assert head.startswith(b"GET /ws HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
        assert b"\r\nUpgrade: websocket\r\nConnection: upgrade\r\n" in head
        assert b"Sec-WebSocket-Key: " + KEY.encode() in head
        assert b"\x81\x02hi" not in head  # not before the switch

        rig.up.feed(SWITCH + b"\x81\x03hey")
        assert rig.client.take() == SWITCH + b"\x81\x03hey"
        assert rig.up.take() == b"\x81\x02hi"  # the client's pipelined frame, first
        assert isinstance(rig.client.get_protocol(), TunnelEnd)
        assert isinstance(rig.up.get_protocol(), TunnelEnd)
        assert rig.client.reading and rig.up.reading
        [tunnel] = rig.worker.tunnels
        assert isinstance(tunnel, Tunnel)

        rig.client.feed(b"\x81\x04ping")
        rig.up.feed(b"\x81\x04pong")
        assert rig.up.take() == b"\x81\x04ping"
        assert rig.client.take() == b"\x81\x04pong"
        assert rig.log.entries == []  # a WebSocket is logged when it ends

        rig.client.reset()
        await settle()
        assert rig.up.closing
        [entry] = rig.log.entries
        assert (entry.request, entry.status, entry.upstream_addr) == (
            "GET /ws HTTP/1.1", 101, SERVER)
        assert entry.bytes_received == len(b"\x81\x02hi\x81\x04ping")
        assert entry.body_bytes_sent == len(b"\x81\x03hey\x81\x04pong")
        assert rig.worker.open == set()
        assert rig.server.active == 0
        assert rig.pooled() is None

    run(main)


def test_handshake_pipelined_behind_a_request_opens_a_tunnel_after_its_response() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" + HANDSHAKE + b"\x81\x02hi")
        await settle()
        assert rig.up.take().startswith(b"GET /1 ")
        rig.up.feed(OK)
        await settle()
        assert rig.client.take() == OK
        assert rig.up.take().startswith(b"GET /ws ")
        rig.up.feed(SWITCH)
        assert rig.client.take() == SWITCH
        assert rig.up.take() == b"\x81\x02hi"
        assert rig.client.reading
        rig.up.reset()
        await settle()
        assert rig.client.closing
        assert rig.log.statuses == [200, 101]

    run(main)


def test_101_with_a_wrong_accept_is_502_and_closes_the_upstream() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(HANDSHAKE + b"\x81\x02hi")
        await settle()
        rig.up.take()
        wrong = SWITCH.replace(accept_key(KEY).encode(), b"d3JvbmcgYWNjZXB0IGtleSE=")
        rig.up.feed(wrong + b"\x81\x03hey")
        assert rig.client.take() == error_response(502)
        assert rig.client.closing
        assert rig.up.closing
        assert rig.up.take() == b""  # the pipelined frame went nowhere
        await settle()
        assert rig.log.statuses == [502]
        assert rig.server.active == 0
        assert rig.pooled() is None

    run(main)


def test_refused_handshake_is_relayed_and_ends_the_connection() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(HANDSHAKE)
        await settle()
        rig.up.take()
        rig.up.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
        answer = rig.client.take()
        assert status_of(answer) == 403
        assert b"\r\nConnection: close\r\n" in answer and answer.endswith(b"\r\n\r\nno")
        assert rig.client.closing
        assert rig.pooled() is None  # the upstream was asked to upgrade: not reused
        assert rig.log.statuses == [403]

    run(main)


# -- a kept-alive upstream connection closed as it is reused --------------------------------

def second_pooled(rig: Rig) -> FakeTransport:
    """Another kept-alive connection to the same server, taken before the first."""
    conn = UpstreamConnection(SERVER)
    up = FakeTransport(("127.0.0.1", 9), ("127.0.0.1", 40001))
    up.attach(conn)
    first = rig.worker.pool.take(SERVER)
    assert first is rig.upstream
    rig.worker.pool.put(SERVER, conn, 32)
    rig.worker.pool.put(SERVER, first, 32)
    rig.upstream.reused = False
    return up


def test_get_on_a_kept_connection_closed_before_any_answer_goes_again() -> None:
    async def main() -> None:
        rig = make_rig()
        other = second_pooled(rig)
        rig.client.feed(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        first = rig.up.take()
        assert first.startswith(b"GET /x HTTP/1.1\r\n")
        rig.up.feed_eof()  # the upstream's idle close crossed the request
        await settle()
        assert other.take() == first
        other.feed(OK)
        assert rig.client.take() == OK
        assert rig.log.statuses == [200]
        assert rig.server.fails == 0  # a kept connection may be closed at any time
        assert rig.server.active == 0

    run(main)


def test_handshake_pipelined_bytes_survive_the_second_send() -> None:
    async def main() -> None:
        rig = make_rig()
        other = second_pooled(rig)
        rig.client.feed(HANDSHAKE + b"\x81\x02hi")
        await settle()
        first = rig.up.take()
        rig.up.reset()
        await settle()
        assert other.take() == first
        other.feed(SWITCH)
        await settle()
        assert rig.client.take() == SWITCH
        assert other.take() == b"\x81\x02hi"

    run(main)


def test_no_second_send_after_an_answer_began_or_with_a_body() -> None:
    async def main() -> None:
        for request, partial in [
            (b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 2"),
            (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", b""),
            (b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab", b""),
        ]:
            rig = make_rig()
            other = second_pooled(rig)
            rig.client.feed(request)
            await settle()
            assert rig.up.take().startswith(request.split(b" ")[0])
            if partial:
                rig.up.feed(partial)
            rig.up.feed_eof()
            await settle()
            assert status_of(rig.client.take()) == 502, request
            assert other.take() == b""
            assert rig.log.statuses == [502]

    run(main)


def test_a_new_connection_closed_before_any_answer_is_502() -> None:
    async def main() -> None:
        rig = make_rig()
        other = second_pooled(rig)
        rig.worker.pool.take(SERVER)  # the first: its request is the one that fails
        rig.client.feed(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        assert other.take().startswith(b"GET /x ")
        assert rig.conn.upstream is not None
        rig.conn.upstream.reused = False  # as if dialled for this request
        other.feed_eof()
        await settle()
        assert status_of(rig.client.take()) == 502
        assert rig.log.statuses == [502]

    run(main)


# -- refusals ------------------------------------------------------------------------------------

def test_pipelined_garbage_waits_for_the_request_in_flight_then_gets_400() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n\x00\x01garbage\r\n\r\n")
        await settle()
        sent = rig.up.take()
        assert sent.startswith(b"GET /first ") and b"garbage" not in sent
        assert rig.client.written == b""  # the in-flight request is answered first
        rig.up.feed(OK)
        await settle()
        assert rig.client.take() == OK + error_response(400)
        assert rig.client.closing
        assert rig.log.statuses == [200, 400]
        assert rig.log.entries[1].request == "-"
        assert rig.pooled() is rig.upstream  # its exchange was complete and clean
        assert rig.up.take() == b""

    run(main)


def test_garbage_arriving_during_a_request_in_flight_waits_for_its_response() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.take()
        rig.client.feed(b"NOT HTTP AT ALL\x00\r\n\r\n")
        assert rig.client.written == b""
        assert not rig.client.reading
        rig.up.feed(OK)
        await settle()
        assert rig.client.take() == OK + error_response(400)
        assert rig.client.closing
        assert rig.log.statuses == [200, 400]

    run(main)


def test_pipelined_request_refused_by_the_checks_waits_for_the_one_in_flight() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"
                        b"GET /a/../../b HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        assert rig.up.take().startswith(b"GET /ok ")
        rig.up.feed(OK)
        await settle()
        assert rig.client.take() == OK + error_response(400)
        assert rig.up.take() == b""
        assert [(e.request, e.status) for e in rig.log.entries] == [
            ("GET /ok HTTP/1.1", 200), ("GET /a/../../b HTTP/1.1", 400)]

    run(main)


def test_bad_chunk_in_a_body_under_way_is_400_at_once_and_nothing_more_goes_upstream() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n")
        await settle()
        assert rig.up.take().endswith(b"\r\n\r\n5\r\nhello\r\n")
        rig.client.feed(b"zz\r\nmore\r\n")
        assert rig.client.take() == error_response(400)
        assert rig.client.closing
        assert rig.up.closing
        assert rig.up.take() == b"" and rig.up.dropped == b""
        await settle()
        [entry] = rig.log.entries
        assert (entry.request, entry.status, entry.bytes_received) == (
            "POST /up HTTP/1.1", 400, 5)
        assert rig.server.active == 0

    run(main)


def test_bad_chunk_before_the_upstream_is_reached_sends_nothing_upstream() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\nzz\r\n")
        assert rig.client.take() == error_response(400)
        await settle()
        assert rig.up.written == b""
        assert rig.pooled() is rig.upstream  # never taken
        assert rig.log.statuses == [400]
        assert rig.server.active == 0

    run(main)


def test_body_over_client_max_body_size_is_413_at_once() -> None:
    async def main() -> None:
        rig = make_rig(make_config(client_max_body_size=4))
        rig.client.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n")
        await settle()
        rig.up.take()
        rig.client.feed(b"2\r\nde\r\n")
        assert status_of(rig.client.take()) == 413
        assert rig.up.closing and rig.up.take() == b""
        assert rig.log.statuses == [413]

    run(main)


def test_unasked_101_is_502() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.take()
        rig.up.feed(SWITCH)
        assert rig.client.take() == error_response(502)
        assert rig.client.closing and rig.up.closing
        assert rig.log.statuses == [502]

    run(main)


def test_upstream_closing_before_its_response_is_502() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.reset()
        await settle()
        assert rig.client.take() == error_response(502)
        assert rig.client.closing
        assert rig.log.statuses == [502]
        assert rig.server.active == 0

    run(main)


def test_client_gone_before_the_response_is_logged_499_and_the_upstream_dropped() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.client.reset()
        await settle()
        assert rig.up.closing
        assert rig.log.statuses == [499]
        assert rig.server.active == 0
        assert rig.conn.phase is Phase.CLOSED
        assert rig.worker.open == set()

    run(main)


# -- backpressure --------------------------------------------------------------------------------

def test_upstream_backpressure_pauses_the_client_and_resumes_it() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        rig.up.take()
        assert rig.client.reading
        rig.up.block()
        assert not rig.client.reading
        rig.up.unblock()
        assert rig.client.reading
        rig.client.feed(b"defghij")
        assert rig.up.take() == b"defghij"
        rig.up.feed(OK)
        assert rig.client.take() == OK
        assert not rig.client.closing

    run(main)


def test_client_backpressure_pauses_the_upstream_and_resumes_it() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        rig.client.block()
        assert not rig.up.reading
        rig.client.unblock()
        assert rig.up.reading
        rig.up.feed(b"def")
        assert rig.client.take().endswith(b"\r\n\r\nabcdef")

    run(main)


def test_an_upstream_pause_still_held_at_the_end_does_not_stall_the_next_request() -> None:
    """The response can end while the upstream still has the request's bytes buffered."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        await settle()
        rig.up.block()
        assert not rig.client.reading
        rig.up.feed(OK)
        assert rig.client.take() == OK
        assert rig.client.reading
        assert rig.conn.stall.count == 0
        assert rig.pooled() is None  # bytes still waiting to be written: not reusable

    run(main)


def test_upstream_stuck_past_send_timeout_is_a_504_to_the_client() -> None:
    """Before any response the stuck writer is the upstream: the client is answered (as
    nginx does), not cut."""
    async def main() -> None:
        rig = make_rig(make_config(send_timeout=0.03))
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        start = asyncio.get_running_loop().time()
        rig.up.block()
        await until(lambda: rig.client.closing)
        assert asyncio.get_running_loop().time() - start >= 0.03 - EARLY
        assert rig.client.take() == error_response(504)
        assert not rig.client.aborted
        assert rig.up.closing
        await settle()
        assert len(rig.log.entries) == 1
        assert rig.server.active == 0

    run(main)


# -- timers --------------------------------------------------------------------------------------

def test_head_not_complete_within_client_header_timeout_is_408() -> None:
    async def main() -> None:
        rig = make_rig(make_config(client_header_timeout=0.05))
        start = asyncio.get_running_loop().time()
        rig.client.feed(b"GET / HTTP/1.1\r\nHo")
        await until(lambda: rig.client.closing)
        assert asyncio.get_running_loop().time() - start >= 0.05 - EARLY
        assert rig.client.take() == error_response(408)
        assert rig.up.written == b""
        [entry] = rig.log.entries
        assert (entry.request, entry.status) == ("-", 408)

    run(main)


def test_client_header_timeout_is_a_total_deadline_not_reset_by_each_byte() -> None:
    async def main() -> None:
        rig = make_rig(make_config(client_header_timeout=0.05))
        rest = b"ET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        rig.client.feed(b"G")
        fed = 0
        for byte in rest:  # one byte every 10 ms: far longer than the deadline in all
            await asyncio.sleep(0.01)
            if rig.client.closing:
                break
            rig.client.feed(bytes([byte]))
            fed += 1
        await until(lambda: rig.client.closing)
        assert fed < len(rest)  # long before the bytes ran out
        assert status_of(rig.client.take()) == 408

    run(main)


def test_pipelined_partial_head_gets_its_deadline_from_the_end_of_the_response() -> None:
    """While a request is in flight the next head may wait; its client_header_timeout runs
    from when it can be served."""
    async def main() -> None:
        rig = make_rig(make_config(client_header_timeout=0.05))
        rig.client.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHo")
        await settle()
        await asyncio.sleep(0.08)
        assert not rig.client.closing
        rig.up.feed(OK)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await until(lambda: rig.client.closing)
        assert loop.time() - start >= 0.05 - EARLY
        assert rig.client.take() == OK + error_response(408)
        assert rig.log.statuses == [200, 408]

    run(main)


def test_connection_without_a_byte_closes_quietly_after_client_header_timeout() -> None:
    async def main() -> None:
        rig = make_rig(make_config(client_header_timeout=0.05))
        await until(lambda: rig.client.closing)
        assert rig.client.written == b""
        assert rig.log.entries == []

    run(main)


def test_idle_keep_alive_connection_closes_quietly_after_keepalive_timeout() -> None:
    async def main() -> None:
        rig = make_rig(make_config(keepalive_timeout=0.05))
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.feed(OK)
        assert rig.client.take() == OK
        start = asyncio.get_running_loop().time()
        await until(lambda: rig.client.closing)
        assert asyncio.get_running_loop().time() - start >= 0.05 - EARLY
        assert rig.client.written == b""
        assert rig.log.statuses == [200]

    run(main)


def test_silent_upstream_is_504_after_proxy_read_timeout() -> None:
    async def main() -> None:
        rig = make_rig(make_config(read_timeout="0.05"))
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        start = asyncio.get_running_loop().time()
        await until(lambda: rig.client.closing)
        assert asyncio.get_running_loop().time() - start >= 0.05 - EARLY
        assert rig.client.take() == error_response(504)
        assert rig.up.closing
        assert rig.log.statuses == [504]
        assert rig.server.active == 0

    run(main)


def test_upstream_silent_mid_response_closes_the_client_without_a_504() -> None:
    async def main() -> None:
        rig = make_rig(make_config(read_timeout="0.05"))
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await until(lambda: rig.client.closing)
        assert rig.client.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
        assert not rig.client.aborted
        assert rig.up.closing
        assert rig.log.statuses == [200]

    run(main)


def test_a_trickling_upstream_is_not_cut_by_proxy_read_timeout() -> None:
    async def main() -> None:
        rig = make_rig(make_config(read_timeout="0.06"))
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n")
        for _ in range(15):  # 0.15 s in all, more than twice the timeout
            await asyncio.sleep(0.01)
            assert not rig.client.closing
            rig.up.feed(b"x")
        assert rig.client.take().endswith(b"\r\n\r\n" + b"x" * 15)
        assert not rig.client.closing
        assert rig.log.statuses == [200]

    run(main)


def test_read_timeout_runs_from_the_end_of_the_request_not_its_start() -> None:
    """A slow upload is not the upstream's silence."""
    async def main() -> None:
        rig = make_rig(make_config(read_timeout="0.05"))
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n")
        await settle()
        for byte in b"abcdefgh":
            await asyncio.sleep(0.01)
            rig.client.feed(bytes([byte]))
        assert not rig.client.closing  # 0.08 s after the head, but the body just ended
        rig.up.feed(OK)
        assert rig.client.take() == OK

    run(main)


# -- found by these tests, and fixed; and one gap left for the hardening issue -------------------

def test_bad_chunk_in_the_same_read_as_its_head_is_logged_with_its_request_line() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\nzz\r\n")
        await settle()
        assert rig.client.take() == error_response(400)
        [entry] = rig.log.entries
        assert (entry.request, entry.status) == ("POST /up HTTP/1.1", 400)

    run(main)


def test_upstream_stuck_past_send_timeout_before_its_response_is_logged_504() -> None:
    async def main() -> None:
        rig = make_rig(make_config(send_timeout=0.03))
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        rig.up.block()
        await until(lambda: rig.client.closing)
        await settle()
        assert rig.log.statuses == [504]

    run(main)


def test_next_upstream_stays_paused_while_the_client_is_over_its_high_water_mark() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.take()
        rig.client.hold_writes()  # the client stops reading
        big = b"x" * (WRITE_HIGH_WATER + 10)
        # One read holds the whole response: the write that crosses the mark pauses the
        # upstream, and the response still ends within that read.
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        assert rig.client.paused_writing
        await settle()
        assert rig.up.take().startswith(b"GET /2 ")  # /2 went out on the same connection
        assert not rig.up.reading  # its response must wait for the client
        rig.client.unblock()
        assert rig.up.reading

    run(main)


def test_http10_keep_alive_is_announced_or_the_connection_closed() -> None:
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        await settle()
        rig.up.feed(OK)
        answer = rig.client.take()
        assert answer.endswith(b"\r\n\r\nok")
        assert b"\r\nconnection: keep-alive\r\n" in answer.lower()
        assert not rig.client.closing

    run(main)


def test_client_stalling_mid_body_is_eventually_cut() -> None:
    """nginx's client_body_timeout: no body byte for that long is 408, and the upstream
    connection goes too."""
    async def main() -> None:
        rig = make_rig(make_config(read_timeout="0.05", client_header_timeout=0.05,
                                   keepalive_timeout=0.05, send_timeout=0.05,
                                   client_body_timeout=0.05))
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        await until(lambda: rig.client.closing, limit=0.3)
        assert rig.up.closing
        assert rig.client.take().startswith(b"HTTP/1.1 408 ")

    run(main)


def test_a_slow_but_steady_body_is_not_cut() -> None:
    """The timeout runs between two reads, not for the whole body (as nginx's)."""
    async def main() -> None:
        rig = make_rig(make_config(client_body_timeout=0.06))
        rig.client.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":
            await asyncio.sleep(0.03)
            rig.client.feed(bytes([byte]))
        await settle()
        assert not rig.client.closing
        assert rig.up.take().endswith(b"abcdef")
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await settle()
        assert rig.client.take().startswith(b"HTTP/1.1 200 ")

    run(main)


def test_after_the_switch_nothing_of_http_is_left_for_the_garbage_collector() -> None:
    """No reference cycle holds the client connection, its exchange or its reader after a
    101: freed at once, they cost an open WebSocket nothing (left to the collector, they
    held about 300 bytes per WebSocket until its next full collection)."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(HANDSHAKE)
        await settle()
        rig.up.take()
        gc.collect()
        gc.disable()
        try:
            rig.up.feed(SWITCH)
            rig.conn = None  # type: ignore[assignment]
            left = [item for item in gc.get_objects()
                    if isinstance(item, ClientConnection | Exchange | RequestReader)]
            assert left == []
        finally:
            gc.enable()

    run(main)


@pytest.mark.parametrize("ends", ["client", "upstream"])
def test_an_ended_tunnel_leaves_nothing_for_the_garbage_collector(ends: str) -> None:
    """Once a tunnel has ended (whichever side went first), it, its ends and the upstream
    connection (whose parser held its methods) go by reference count: left to the
    collector, they survived into its older generations (a storm of handshakes spent 39 µs
    per handshake collecting with them, 22 without)."""
    kinds = (Tunnel, TunnelEnd, UpstreamConnection, Cursor, Stall)

    async def main() -> None:
        rig = make_rig()
        rig.client.feed(HANDSHAKE)
        await settle()
        rig.up.take()
        rig.up.feed(SWITCH + b"\x81\x03hey")
        rig.client.feed(b"\x81\x02hi")
        assert rig.worker.tunnels
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept, to be seen
        try:
            (rig.client if ends == "client" else rig.up).reset()
            await settle()
            assert [entry.status for entry in rig.log.entries] == [101]
            assert rig.up.protocol is None and rig.client.protocol is None  # both lost
            rig.conn = rig.upstream = None  # type: ignore[assignment]
            assert [item for item in gc.get_objects() if isinstance(item, kinds)] == []
            gc.collect()
            assert [type(item).__name__ for item in gc.garbage if isinstance(item, kinds)] == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

    run(main)


# -- from the review: which side is stuck, a pause under the high mark, an upgrade's wait -------

def test_a_client_stuck_before_the_next_response_is_cut_not_answered_504() -> None:
    """The stall timer cannot tell who is stuck; the connection can. A client that takes
    nothing while a pipelined request waits for its upstream is the stuck one: abort it
    (an answer would only join the bytes it does not read), and blame nobody upstream."""
    async def main() -> None:
        rig = make_rig(make_config(send_timeout=0.03))
        rig.client.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.take()
        rig.client.hold_writes()
        big = b"x" * (WRITE_HIGH_WATER + 10)
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        await settle()
        assert rig.up.take().startswith(b"GET /2 ")
        await until(lambda: rig.client.closing)
        assert rig.client.aborted
        assert 504 not in rig.log.statuses

    run(main)


def test_a_reused_upstream_waits_while_the_client_is_paused_under_its_high_mark() -> None:
    """Paused writing lasts until the low-water mark: the next response must wait for it,
    not only for the buffer to fall under the high one."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.take()
        rig.client.hold_writes()
        big = b"x" * (WRITE_HIGH_WATER + 10)
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        rig.client.drain_to(WRITE_HIGH_WATER // 2)
        assert rig.client.paused_writing
        await settle()
        assert rig.up.take().startswith(b"GET /2 ")
        assert not rig.up.reading
        rig.client.drain_to(0)
        assert rig.up.reading

    run(main)


def test_a_handshake_behind_a_response_the_client_has_not_taken_waits_for_it() -> None:
    """The 101 is not even read while the client is paused, so the tunnel never starts
    with a client that cannot take its first bytes."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" + HANDSHAKE)
        await settle()
        rig.up.take()
        rig.client.hold_writes()
        big = b"x" * (WRITE_HIGH_WATER + 10)
        rig.up.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        rig.client.drain_to(WRITE_HIGH_WATER // 2)
        await settle()
        assert rig.up.take().startswith(b"GET /ws ")
        assert not rig.up.reading
        rig.client.drain_to(0)
        assert rig.up.reading
        rig.up.feed(SWITCH + b"\x81\x02hi")
        assert isinstance(rig.up.get_protocol(), TunnelEnd)
        assert rig.client.take().endswith(SWITCH + b"\x81\x02hi")
        assert rig.up.reading and rig.client.reading

    run(main)


def test_a_client_leaving_before_the_101_is_noticed_and_the_upstream_dropped() -> None:
    """After an upgrade request the client is still read until bytes for the tunnel come:
    its close is seen at once, not at proxy_read_timeout."""
    async def main() -> None:
        rig = make_rig()
        rig.client.feed(HANDSHAKE)
        await settle()
        rig.up.take()
        assert rig.client.reading
        rig.client.feed_eof()
        await settle()
        assert rig.up.closing
        assert rig.log.statuses == [499]
        assert rig.server.active == 0

    run(main)


def test_keepalive_timeout_zero_turns_keep_alive_off() -> None:
    """As in nginx: 0 is no keep-alive, not keep-alive for ever."""
    async def main() -> None:
        rig = make_rig(make_config(keepalive_timeout=0.0))
        rig.client.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        rig.up.take()
        rig.up.feed(OK)
        answer = rig.client.take()
        assert b"\r\nConnection: close\r\n" in answer
        assert rig.client.closing

    run(main)
