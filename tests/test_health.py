"""Active health checks: the pure thresholds of :mod:`wsgate.proxy.health`, and the probes
and the checker of :mod:`wsgate.proxy.probes` against real sockets on 127.0.0.1 (ports 0,
intervals and timeouts of a few tenths of a second)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from wsgate.proxy.config import ProxyConfig, ServerConfig, UpstreamConfig
from wsgate.proxy.directives import HealthCheck
from wsgate.proxy.health import ServerHealth
from wsgate.proxy.probes import Checker, probe

pytestmark = pytest.mark.timeout(15)

CHECK = HealthCheck(fails=3, passes=2)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


async def until(condition: Callable[[], object], limit: float = 2.0) -> None:
    """Wait for ``condition``; the limit is far above any interval here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.005)
    assert condition(), "condition not met in time"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """What the checker logs, whatever another test did to the ``wsgate.proxy`` logger."""
    logger = logging.getLogger("wsgate.proxy.probes")
    handler, level = ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- ServerHealth.record ---------------------------------------------------------------------


def test_a_server_starts_healthy_and_unprobed() -> None:
    health = ServerHealth()
    assert health.healthy
    assert (health.probes, health.failures, health.checked, health.detail) == (0, 0, None, "")


def test_fails_in_a_row_turn_it_unhealthy_once() -> None:
    health = ServerHealth()
    assert not health.record(False, "connection refused", CHECK, 1.0)
    assert not health.record(False, "connection refused", CHECK, 2.0)
    assert health.healthy
    assert health.record(False, "status 503", CHECK, 3.0)
    assert not health.healthy
    assert not health.record(False, "status 503", CHECK, 4.0)  # already unhealthy
    assert (health.fails_in_row, health.passes_in_row) == (4, 0)
    assert (health.probes, health.failures) == (4, 4)
    assert (health.detail, health.checked) == ("status 503", 4.0)


def test_a_pass_breaks_a_run_of_fails() -> None:
    health = ServerHealth()
    for when in range(2):
        health.record(False, "timed out after 5s", CHECK, when)
    assert not health.record(True, "ok", CHECK, 2.0)
    assert (health.fails_in_row, health.passes_in_row) == (0, 1)
    for when in range(3, 5):
        assert not health.record(False, "connection refused", CHECK, when)
    assert health.healthy
    assert health.record(False, "connection refused", CHECK, 5.0)
    assert (health.probes, health.failures) == (6, 5)


def test_passes_in_a_row_bring_it_back_and_a_fail_breaks_them() -> None:
    health = ServerHealth()
    for when in range(3):
        health.record(False, "connection refused", CHECK, when)
    assert not health.record(True, "ok", CHECK, 3.0)
    assert not health.record(False, "status 502", CHECK, 4.0)  # breaks the run of passes
    assert (health.fails_in_row, health.passes_in_row) == (1, 0)
    assert not health.record(True, "ok", CHECK, 5.0)
    assert not health.healthy
    assert health.record(True, "ok", CHECK, 6.0)
    assert health.healthy
    assert not health.record(True, "ok", CHECK, 7.0)
    assert (health.detail, health.passes_in_row, health.fails_in_row) == ("ok", 3, 0)


def test_thresholds_of_one_flip_at_once() -> None:
    check = HealthCheck(fails=1, passes=1)
    health = ServerHealth()
    assert health.record(False, "connection refused", check, 1.0)
    assert health.record(True, "ok", check, 2.0)
    assert health.healthy


# -- servers to probe ------------------------------------------------------------------------


class WsServer:
    """A real WebSocket server that notes each handshake's path and the Close it got; it
    can be killed (its port then refuses connections but stays reserved) and revived."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.close_codes: list[int | None] = []
        self.server: Server | None = None
        self.port = 0
        self.spare: socket.socket | None = None

    async def handler(self, connection: ServerConnection) -> None:
        self.paths.append(connection.request.path if connection.request else "")
        await connection.wait_closed()
        self.close_codes.append(connection.close_code)

    async def start(self) -> WsServer:
        self.server = await serve(self.handler, "127.0.0.1", self.port, compression=None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def kill(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.spare = socket.socket()
        self.spare.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.spare.bind(("127.0.0.1", self.port))  # bound, not listening: refused

    async def revive(self) -> None:
        assert self.spare is not None
        self.server = await serve(self.handler, sock=self.spare, compression=None)
        self.spare = None

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.spare is not None:
            self.spare.close()


class RawServer:
    """A TCP server that reads a request head, notes it and sends ``answer`` (None: never
    answers)."""

    def __init__(self, answer: bytes | None, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.host = host
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            if self.answer is None:
                await reader.read()  # until the prober gives up
            else:
                writer.write(self.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self.handle, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def status(code: int, reason: str, extra: str = "") -> bytes:
    return f"HTTP/1.1 {code} {reason}\r\n{extra}Content-Length: 0\r\n\r\n".encode()


WRONG_ACCEPT = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: d3JvbmcgYWNjZXB0IGtleQ==\r\n\r\n")


# -- probe -----------------------------------------------------------------------------------


def test_a_websocket_handshake_is_healthy_and_closes_with_1000() -> None:
    async def main() -> None:
        server = await WsServer().start()
        try:
            check = HealthCheck(uri="/healthz?deep=1", timeout=2.0)
            assert await probe("127.0.0.1", server.port, check) is None
            await until(lambda: server.close_codes)
            assert server.paths == ["/healthz?deep=1"]
            assert server.close_codes == [1000]
        finally:
            await server.stop()
    run(main)


def test_a_wrong_accept_key_is_an_invalid_handshake() -> None:
    async def main() -> None:
        async with RawServer(WRONG_ACCEPT) as server:
            reason = await probe("127.0.0.1", server.port, HealthCheck(timeout=2.0))
        assert reason is not None
        assert reason.startswith("invalid handshake")
        assert "Sec-WebSocket-Accept" in reason
    run(main)


@pytest.mark.parametrize("websocket", [True, False])
def test_a_503_is_its_status(websocket: bool) -> None:
    async def main() -> None:
        async with RawServer(status(503, "Service Unavailable")) as server:
            check = HealthCheck(timeout=2.0, websocket=websocket)
            assert await probe("127.0.0.1", server.port, check) == "status 503"
    run(main)


@pytest.mark.parametrize("answer", [status(200, "OK"), status(204, "No Content"),
                                    status(302, "Found", "Location: /elsewhere\r\n")])
def test_http_2xx_and_3xx_are_healthy(answer: bytes) -> None:
    async def main() -> None:
        async with RawServer(answer) as server:
            check = HealthCheck(timeout=2.0, websocket=False, uri="/status")
            assert await probe("127.0.0.1", server.port, check) is None
        head = server.heads[0].decode()
        lines = head.split("\r\n")
        assert lines[0] == "GET /status HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}" in lines
        assert "Connection: close" in lines
        assert "User-Agent: wsgate-health-check" in lines
    run(main)


def test_a_redirect_is_not_a_websocket_handshake() -> None:
    async def main() -> None:
        answer = status(302, "Found", "Location: ws://127.0.0.1:1/\r\n")
        async with RawServer(answer) as server:
            assert await probe("127.0.0.1", server.port, HealthCheck(timeout=2.0)) == (
                "status 302")
            assert len(server.heads) == 1
    run(main)


@pytest.mark.parametrize("websocket", [True, False])
def test_the_websocket_probe_identifies_itself(websocket: bool) -> None:
    async def main() -> None:
        async with RawServer(status(404, "Not Found")) as server:
            check = HealthCheck(timeout=2.0, websocket=websocket, uri="/ws")
            assert await probe("127.0.0.1", server.port, check) == "status 404"
        lines = server.heads[0].decode().split("\r\n")
        assert lines[0] == "GET /ws HTTP/1.1"
        assert "User-Agent: wsgate-health-check" in lines
    run(main)


@pytest.mark.parametrize("answer", [b"HTTP/1.1 abc nope\r\n\r\n", b"garbage\r\n\r\n"])
def test_a_malformed_http_answer_is_an_invalid_response(answer: bytes) -> None:
    async def main() -> None:
        async with RawServer(answer) as server:
            check = HealthCheck(timeout=2.0, websocket=False)
            assert await probe("127.0.0.1", server.port, check) == "invalid response"
    run(main)


@pytest.mark.parametrize("websocket", [True, False])
def test_a_closed_port_is_connection_refused(websocket: bool) -> None:
    async def main() -> None:
        with socket.socket() as reserved:  # bound, never listening: nobody else gets it
            reserved.bind(("127.0.0.1", 0))
            port = reserved.getsockname()[1]
            check = HealthCheck(timeout=2.0, websocket=websocket)
            assert await probe("127.0.0.1", port, check) == "connection refused"
    run(main)


@pytest.mark.parametrize("websocket", [True, False])
def test_a_silent_server_times_out(websocket: bool) -> None:
    async def main() -> None:
        async with RawServer(None) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            check = HealthCheck(interval=5.0, timeout=0.3, websocket=websocket)
            assert await probe("127.0.0.1", server.port, check) == "timed out after 0.3s"
            assert 0.28 <= loop.time() - started < 1.5
    run(main)


def test_a_server_that_hangs_up_closed_the_connection() -> None:
    async def main() -> None:
        async with RawServer(b"") as server:
            for websocket in (True, False):
                check = HealthCheck(timeout=2.0, websocket=websocket)
                assert await probe("127.0.0.1", server.port, check) == "connection closed"
    run(main)


def test_an_ipv6_server_gets_a_bracketed_host() -> None:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main() -> None:
        async with RawServer(status(200, "OK"), host="::1") as raw:
            for websocket in (False, True):
                check = HealthCheck(timeout=2.0, websocket=websocket)
                assert await probe("::1", raw.port, check) == (
                    "status 200" if websocket else None)
        assert len(raw.heads) == 2
        for head in raw.heads:
            assert f"Host: [::1]:{raw.port}" in head.decode().split("\r\n")
    run(main)


# -- Checker ---------------------------------------------------------------------------------


def upstream(name: str, ports: tuple[int, ...], check: HealthCheck | None) -> UpstreamConfig:
    servers = tuple(ServerConfig("127.0.0.1", port) for port in ports)
    return UpstreamConfig(name, servers=servers, health_check=check)


def proxy(*groups: UpstreamConfig) -> ProxyConfig:
    return ProxyConfig(upstreams={group.name: group for group in groups})


Change = tuple[str, str, bool, int, str, float]
"""What on_change saw: group, address, healthy, the run that flipped it, detail, when."""


def test_the_checker_takes_a_dead_server_out_and_back_in(
        logged: list[logging.LogRecord]) -> None:
    check = HealthCheck(interval=0.2, fails=2, passes=2, timeout=0.5)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        changes: list[Change] = []

        def on_change(group: str, address: str, health: ServerHealth) -> None:
            run_length = health.passes_in_row if health.healthy else health.fails_in_row
            changes.append((group, address, health.healthy, run_length, health.detail,
                            loop.time()))

        alive, doomed = await WsServer().start(), await WsServer().start()
        checker = Checker(on_change)
        try:
            checker.configure(proxy(upstream("backend", (alive.port, doomed.port), check)))
            states = checker.states()
            assert set(states) == {("backend", alive.address), ("backend", doomed.address)}
            await until(lambda: all(h.probes >= 2 for h in states.values()))
            assert all(h.healthy and h.detail == "ok" for h in states.values())

            await doomed.kill()
            killed = loop.time()
            await until(lambda: changes)
            assert changes[0][:5] == ("backend", doomed.address, False, 2,
                                      "connection refused")
            took = changes[0][5] - killed
            assert check.interval * (check.fails - 1) - 0.05 <= took <= (
                check.interval * check.fails + 0.5), took
            assert not checker.states()[("backend", doomed.address)].healthy

            await doomed.revive()
            revived = loop.time()
            await until(lambda: len(changes) >= 2)
            assert changes[1][:5] == ("backend", doomed.address, True, 2, "ok")
            took = changes[1][5] - revived
            assert took <= check.interval * check.passes + 0.5, took
            await asyncio.sleep(check.interval * 2)
            assert len(changes) == 2  # once each way; the live server never flipped
            assert states[("backend", alive.address)].failures == 0
            assert states[("backend", alive.address)] is checker.states()[
                ("backend", alive.address)]

            checker.configure(proxy(upstream("backend", (alive.port, doomed.port), None)))
            assert checker.states() == {}
            await asyncio.sleep(0.05)  # a probe cancelled mid-handshake may still land
            seen = len(alive.paths), len(doomed.paths)
            await asyncio.sleep(check.interval * 3)
            assert (len(alive.paths), len(doomed.paths)) == seen
        finally:
            await checker.close()
            await alive.stop()
            await doomed.stop()

        warnings = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
        assert warnings == [
            f'upstream server {doomed.address} in group "backend" is now unhealthy: '
            "connection refused (2 failed health checks)",
            f'upstream server {doomed.address} in group "backend" is healthy again '
            "(2 passed health checks)",
        ]

    run(main)


def test_configure_keeps_what_did_not_change() -> None:
    check = HealthCheck(interval=0.1, timeout=0.5)

    async def main() -> None:
        one, two = await WsServer().start(), await WsServer().start()
        checker = Checker(lambda group, address, health: None)
        try:
            same_twice = upstream("a", (one.port, one.port, two.port), check)
            checker.configure(proxy(same_twice, upstream("off", (one.port,), None)))
            before = checker.states()
            assert set(before) == {("a", one.address), ("a", two.address)}
            await until(lambda: all(h.probes >= 2 for h in before.values()))
            # a probe loop per address, not per line: one server, one probe an interval
            assert len(one.paths) <= before[("a", one.address)].probes + 1

            checker.configure(proxy(upstream("a", (one.port, two.port), check),
                                    upstream("b", (two.port,), check)))
            after = checker.states()
            assert after[("a", one.address)] is before[("a", one.address)]
            assert after[("a", two.address)] is before[("a", two.address)]
            assert after[("b", two.address)].probes == 0  # new: probed on its own

            slower = HealthCheck(interval=0.2, timeout=0.5)
            checker.configure(proxy(upstream("a", (one.port,), slower)))
            fresh = checker.states()
            assert set(fresh) == {("a", one.address)}
            assert fresh[("a", one.address)] is not before[("a", one.address)]
            await until(lambda: fresh[("a", one.address)].probes >= 1)
        finally:
            await checker.close()
            await one.stop()
            await two.stop()
        assert checker.states() == {}

    run(main)


def test_a_probe_that_raises_is_a_logged_failure(
        monkeypatch: pytest.MonkeyPatch, logged: list[logging.LogRecord]) -> None:
    calls: list[int] = []

    async def broken(host: str, port: int, check: HealthCheck) -> str | None:
        calls.append(port)
        raise RuntimeError("boom")

    monkeypatch.setattr("wsgate.proxy.probes.probe", broken)
    check = HealthCheck(interval=0.05, fails=2, passes=1)

    async def main() -> None:
        flips: list[bool] = []
        checker = Checker(lambda group, address, health: flips.append(health.healthy))
        try:
            checker.configure(proxy(upstream("backend", (8011,), check)))
            await until(lambda: len(calls) >= 3)  # the loop went on
            health = checker.states()[("backend", "127.0.0.1:8011")]
            assert (health.healthy, health.detail) == (False, "boom")
            assert flips == [False]
        finally:
            await checker.close()

    run(main)
    errors = [r for r in logged if r.levelno == logging.ERROR]
    assert errors and all(r.exc_info for r in errors)
    assert "127.0.0.1:8011" in errors[0].getMessage()


def test_a_listener_that_raises_does_not_stop_the_probes(
        monkeypatch: pytest.MonkeyPatch, logged: list[logging.LogRecord]) -> None:
    answers = iter(["connection refused", None] * 50)

    async def flapping(host: str, port: int, check: HealthCheck) -> str | None:
        return next(answers)

    monkeypatch.setattr("wsgate.proxy.probes.probe", flapping)
    check = HealthCheck(interval=0.02, fails=1, passes=1)

    async def main() -> None:
        flips: list[bool] = []

        def on_change(group: str, address: str, health: ServerHealth) -> None:
            flips.append(health.healthy)
            raise ValueError("listener bug")

        checker = Checker(on_change)
        try:
            checker.configure(proxy(upstream("backend", (8011,), check)))
            await until(lambda: len(flips) >= 3)
        finally:
            await checker.close()
        assert flips[:3] == [False, True, False]

    run(main)
    assert any("listener" in r.getMessage() for r in logged if r.levelno == logging.ERROR)
