"""The proxy out of open files: 503 for the clients it took, one log line a second, a pause
in accepting that ends by itself, and no upstream blamed. Unit tests of the pieces, then the
scenario itself, under ``prlimit``, round after round."""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import re
import socket
import time
from pathlib import Path

import pytest

from conftest import Spawn, start_echo, wsgate_command
from wsgate.proxy import connector, flags
from wsgate.proxy import limits as limits_module
from wsgate.proxy.accepting import Accepting
from wsgate.proxy.limits import FIRST_PAUSE, LAST_PAUSE, Limits, is_local, limit_name
from wsgate.proxy.listeners import Bound
from wsgate.proxy.pool import Pool
from wsgate.proxy.routes import Routes

HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_local_errors_are_told_from_an_upstreams() -> None:
    for code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EADDRNOTAVAIL):
        assert is_local(OSError(code, "x"))
    assert not is_local(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert not is_local(TimeoutError())
    assert "RLIMIT_NOFILE" in limit_name(errno.EMFILE)
    assert "ip_local_port_range" in limit_name(errno.EADDRNOTAVAIL)


def test_one_line_a_second_and_a_pause_that_doubles(caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(limits_module.time, "monotonic", lambda: now[0])
    limits = Limits()
    pauses: list[float] = []
    limits.pause = pauses.append
    with caplog.at_level(logging.ERROR, logger="wsgate.proxy.limits"):
        for _ in range(5):
            limits.hit(errno.EMFILE, "connect() to 127.0.0.1:1 failed (24: Too many open files)")
            now[0] += 0.1
        now[0] += 1.0
        limits.hit(errno.EMFILE, "accept() failed (24: Too many open files)")
        now[0] += 60  # a calm minute: the next pause is short again
        limits.hit(errno.ENFILE, "accept() failed (23: Too many open files in system)")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert "RLIMIT_NOFILE" in lines[0] and "connect() to 127.0.0.1:1" in lines[0]
    assert lines[1].endswith("(4 more since the last line)")
    assert "fs.file-max" in lines[2]
    assert pauses[0] == FIRST_PAUSE and pauses[1] == 2 * FIRST_PAUSE
    assert pauses[5] == LAST_PAUSE and pauses[6] == FIRST_PAUSE
    assert limits.hits == 7


def test_a_client_on_one_of_the_last_files_pauses_accepting() -> None:
    limits = Limits()
    pauses: list[float] = []
    limits.pause = pauses.append
    limits.accepted(limits.high_fd - 1)
    assert pauses == []
    limits.accepted(limits.high_fd)
    assert pauses == [FIRST_PAUSE]


def _connect_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"x")
        return sock.recv(1) == b"x"


def test_a_pause_closes_the_servers_keeps_the_socket_and_resumes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        original = socket.create_server(("127.0.0.1", 0))
        port = original.getsockname()[1]

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)  # type: ignore[attr-defined]

        async def listen(bound: Bound, sock: socket.socket) -> asyncio.Server:
            return await loop.create_server(Echo, sock=sock)

        accepting = Accepting(listen, {"a": Bound(original, False)}, Limits())
        await accepting.start(accepting.sockets)
        assert await asyncio.to_thread(_connect_ok, port)
        accepting.limits.pause(0.2)
        assert accepting.servers == [] and original.fileno() != -1
        # Meanwhile a client waits in the backlog, and is served once accepting resumes.
        waited = asyncio.ensure_future(asyncio.to_thread(_connect_ok, port))
        await asyncio.sleep(0.1)
        assert not waited.done()
        assert await asyncio.wait_for(waited, 2)
        assert accepting.servers
        # uvloop closes a server after an accept error without a word: its copy is gone,
        # which the once-a-second check sees, and the servers are made anew.
        accepting.check()
        assert accepting.servers
        for server in accepting.servers:
            server.close()
        await asyncio.sleep(0.05)
        accepting.check()
        assert accepting.servers == []
        await asyncio.sleep(0.3)
        assert accepting.servers
        assert await asyncio.to_thread(_connect_ok, port)
        accepting.close()
        assert original.fileno() == -1

    asyncio.run(main())


async def _burst(port: int, count: int) -> tuple[collections.Counter[str], list[socket.socket]]:
    """``count`` handshakes at once: what each got, and the sockets to close after."""
    results: collections.Counter[str] = collections.Counter()
    held: list[socket.socket] = []

    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 10)
            writer.write(HANDSHAKE)
            line = await asyncio.wait_for(reader.readline(), 10)
            results[line[9:12].decode() or "closed"] += 1
            held.append(writer.get_extra_info("socket").dup())
            writer.close()
        except (ConnectionError, TimeoutError):
            results["reset"] += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return results, held


def _handshake_status(port: int) -> str:
    """What one handshake gets; "reset" while the proxy is still closing the burst's."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(HANDSHAKE)
            return sock.recv(12)[9:12].decode() or "closed"
    except ConnectionError:
        return "reset"


@pytest.mark.timeout(120)
def test_out_of_files_round_after_round_service_comes_back_at_once(wsgate: Spawn,
                                                                   spawn: Spawn) -> None:
    """The issue's scenario, smaller: the proxy under ``prlimit --nofile=96``, a burst of
    150 handshakes, all closed, then a new WebSocket must work within a second, five
    rounds running. Nobody gets 502: the upstream was never at fault."""
    _echo, upstream = start_echo(wsgate, "--quiet")
    proxy = spawn(["prlimit", "--nofile=96", *wsgate_command(), "proxy", "--listen",
                   "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}", "--access-log", "off"])
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)").group(1))
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(5):
        results, held = asyncio.run(_burst(port, 150))
        seen.update(results)
        assert set(results) <= {"101", "503", "reset", "closed"}, results
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 1.0
        while (status := _handshake_status(port)) != "101" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == "101", (status, results)
    assert seen["503"] > 0 and seen["101"] > 0, seen
    err = "\n".join(proxy.err)
    proxy.expect(r"open-file limit \(RLIMIT_NOFILE 96\) is reached", timeout=5)
    assert "Traceback" not in err and "502" not in err


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(wsgate: Spawn,
                                                             spawn: Spawn) -> None:
    _echo, upstream = start_echo(wsgate, "--quiet")
    proxy = spawn(["prlimit", "--nofile=256:4096", *wsgate_command(), "proxy", "--listen",
                   "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}"])
    proxy.expect(r"Listening on http://")
    limits = Path(f"/proc/{proxy.popen.pid}/limits").read_text()
    assert re.search(r"Max open files\s+4096\s+4096", limits), limits


def test_a_connect_with_no_route_from_here_tries_the_next_server_blaming_none() -> None:
    """EADDRNOTAVAIL (no IPv6 here, no free port toward that server) is per destination:
    the next server is tried, no failure is counted, accepting does not pause."""
    async def main() -> None:
        config = flags.from_flags({"--listen": ["127.0.0.1:8080"],
                                   "--upstream": ["[::1]:9", "127.0.0.1:9"]})
        routes = Routes(config)
        match = routes.site("127.0.0.1:8080").default.match(b"/")
        assert match is not None
        route = match.value
        dialled: list[str] = []

        async def dial(factory: object, host: str, port: int) -> object:
            dialled.append(host)
            if host == "::1":
                raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
            return object(), object()

        loop = asyncio.get_running_loop()
        loop.create_connection = dial  # type: ignore[method-assign,assignment]
        limits = Limits()
        pauses: list[float] = []
        limits.pause = pauses.append
        for _ in range(2):
            _conn, server = await connector.connect(route, None, Pool(), limits,
                                                    loop.time(), lambda: "")
            assert server.address == "127.0.0.1:9"
            route.group.release(server)
        assert dialled.count("::1") >= 1 and pauses == [] and limits.hits == 0
        assert all(state.fails == 0 for state in route.group.servers)

    asyncio.run(main())
