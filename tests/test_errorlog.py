"""The proxy's error log, end to end: every 502 and 504 has a line naming the upstream and
the cause, worker deaths are logged, every line carries the time, ``error_log`` picks the
file and the level, and ``--check`` opens the logs it names."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from conftest import Spawn, run_wsgate
from proxy_helpers import (
    Recorder,
    exchange,
    handshake_request,
    refusing_port,
    simple_config,
    start_proxy,
    status_of,
    stuck_port,
    switching_response,
)

LINE = r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[{level}\] \d+: "
"""nginx's error-log line: date, time, [level], pid."""


def line(level: str, message: str) -> str:
    return LINE.replace("{level}", level) + message


def test_a_502_names_the_server_and_the_cause(wsgate: Spawn, tmp_path: Path) -> None:
    port_down = refusing_port()
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(f"127.0.0.1:{port_down}"))
    assert status_of(exchange(port, b"GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n")) == 502
    proxy.expect(line("error", re.escape(
        f'connect() to 127.0.0.1:{port_down} failed: connection refused, client: 127.0.0.1, '
        'request: "GET /x?y HTTP/1.1", upstream: backend') + "$"), stream="err")


def test_each_failed_try_has_its_line(wsgate: Spawn, tmp_path: Path) -> None:
    first, second = refusing_port(), refusing_port()
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(
        f"127.0.0.1:{first}", f"127.0.0.1:{second}"))
    assert status_of(exchange(port, handshake_request())) == 502
    for down in (first, second):
        proxy.expect(line("error", re.escape(f"connect() to 127.0.0.1:{down} failed: "
                                             "connection refused")), stream="err")


def test_a_504_says_it_timed_out(wsgate: Spawn, tmp_path: Path) -> None:
    with stuck_port() as stuck:
        proxy, port = start_proxy(wsgate, tmp_path, simple_config(
            f"127.0.0.1:{stuck}", location='proxy_connect_timeout = "200ms"'))
        assert status_of(exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 504
        proxy.expect(line("error", re.escape(
            f"connect() to 127.0.0.1:{stuck} failed: timed out after 0.2s "
            "(proxy_connect_timeout)")), stream="err")


def test_a_silent_upstream_is_a_504_with_its_line(wsgate: Spawn, tmp_path: Path) -> None:
    silent = Recorder(lambda _head: (time.sleep(2), b"")[1])
    try:
        proxy, port = start_proxy(wsgate, tmp_path, simple_config(
            silent.address, location='proxy_read_timeout = "300ms"'))
        assert status_of(exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 504
        proxy.expect(line("error", re.escape(
            f"upstream {silent.address} sent nothing for 0.3s (proxy_read_timeout)")),
            stream="err")
    finally:
        silent.close()


def test_a_wrong_101_is_a_502_with_its_line(wsgate: Spawn, tmp_path: Path) -> None:
    liar = Recorder(lambda _head: switching_response(accept="d3Jvbmc="))
    try:
        proxy, port = start_proxy(wsgate, tmp_path, simple_config(liar.address))
        assert status_of(exchange(port, handshake_request())) == 502
        proxy.expect(line("error", re.escape(
            f"upstream 101 with a wrong Sec-WebSocket-Accept (server {liar.address}), "
            'client: 127.0.0.1, request: "GET / HTTP/1.1", upstream: backend')),
            stream="err")
    finally:
        liar.close()


def test_the_level_and_the_file(wsgate: Spawn, tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    _proxy, port = start_proxy(wsgate, tmp_path, simple_config(f"127.0.0.1:{refusing_port()}"),
                               extra=f'error_log = "{log} info"')
    assert status_of(exchange(port, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")) == 505
    assert status_of(exchange(port, b"GET /../x HTTP/1.1\r\nHost: a\r\n\r\n")) == 400
    deadline = time.monotonic() + 5
    while log.read_text().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    assert re.match(line("info", "505 HTTP Version Not Supported: "), lines[0]), lines
    assert re.match(line("info", "400 Bad Request: dot segments"), lines[1]), lines


def test_client_mistakes_are_not_errors(wsgate: Spawn, tmp_path: Path) -> None:
    """nginx logs a client's bad request at info: the default level, error, leaves it out."""
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(f"127.0.0.1:{refusing_port()}"))
    assert status_of(exchange(port, b"GET /../x HTTP/1.1\r\nHost: a\r\n\r\n")) == 400
    assert status_of(exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 502
    proxy.expect(r"\[error\] \d+: connect\(\) to", stream="err")
    assert not [text for text in proxy.err if "400" in text]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_worker_death_and_its_replacement_are_logged(wsgate: Spawn, tmp_path: Path) -> None:
    proxy, port = start_proxy(wsgate, tmp_path, simple_config(f"127.0.0.1:{refusing_port()}"),
                              extra="worker_processes = 2")
    deadline = time.monotonic() + 5
    while len(workers := children(proxy.popen.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.1)  # past the start-up grace, so the master replaces the worker
    os.kill(workers[0], signal.SIGKILL)
    proxy.expect(line("alert", f"worker process {workers[0]} exited on signal 9; started "
                               r"worker process \d+ in its place$"), stream="err")
    assert status_of(exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 502
    proxy.signal(signal.SIGTERM)
    assert proxy.popen.wait(timeout=10) == 0


def test_check_opens_the_logs(tmp_path: Path) -> None:
    config = tmp_path / "wsgate.toml"
    config.write_text('listen = "127.0.0.1:0"\naccess_log = "no/such/dir/access.log"\n'
                      + simple_config("127.0.0.1:8010"))
    result = run_wsgate("proxy", "--check", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr == (f"error: {config}: access_log: cannot open "
                             f"{tmp_path}/no/such/dir/access.log: No such file or directory\n")
    result = run_wsgate("proxy", "--check", "--upstream", "127.0.0.1:8010",
                        "--error-log", f"{tmp_path}/nope/error.log")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --error-log: cannot open {tmp_path}/nope/error.log")
