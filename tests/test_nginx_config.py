"""``wsgate proxy -c nginx.conf``: the seed's own config run as a file, ``-t``, ``wsgate
convert``, and the errors of a file in nginx's syntax, as a user sees them."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from client_helpers import free_port
from conftest import Proc, Spawn, run_held_open, run_wsgate
from ops_helpers import children

SEED = "Server received from client: "
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def seed_config(folder: Path, echo_ports: tuple[int, int], listen: str = "127.0.0.1:0") -> Path:
    """The seed's nginx config (examples/nginx.conf, the seed's text) with only what a test
    must change: the listen port (80 would need root and a free port), the two upstream
    ports, and the access log's path."""
    text = (EXAMPLES / "nginx.conf").read_text()
    for old, new in (("listen 80;", f"listen {listen};"),
                     ("localhost:8010", f"localhost:{echo_ports[0]}"),
                     ("localhost:8011", f"localhost:{echo_ports[1]}"),
                     ("/var/log/nginx/yourdomain.log", str(folder / "yourdomain.log"))):
        assert old in text
        text = text.replace(old, new)
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


def test_the_seed_config_runs_as_written(spawn: Spawn, wsgate: Spawn, tmp_path: Path,
                                         node_modules: Path, wscat: list[str]) -> None:
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    peers = [spawn(["node", str(Path(__file__).parent / "peers" / "server.js"), "0"], env=env)
             for _ in range(2)]
    ports = tuple(int(peer.expect(r"Listening on port (\d+)").group(1)) for peer in peers)
    config = seed_config(tmp_path, (ports[0], ports[1]))
    proxy = wsgate(["proxy", "-c", str(config)])
    port = int(proxy.expect(r"Listening on http://127\.0\.0\.1:(\d+)").group(1))
    url = f"ws://127.0.0.1:{port}"
    result = run_held_open([*wscat, "--connect", url, "-x", "Hello Nginx", "-w", "1"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [SEED + "Hello Nginx"]
    result = run_wsgate("connect", url, input="Welcome to www.hi-linux.com\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [SEED + "Welcome to www.hi-linux.com"]
    # round robin over the two servers, as the seed's upstream block says
    for peer, expected in zip(peers, ("Hello Nginx", "Welcome to www.hi-linux.com"),
                              strict=True):
        peer.expect(f"Received from client: {re.escape(expected)}")
    log = (tmp_path / "yourdomain.log").read_text().splitlines()
    assert len(log) == 2 and all('"GET / HTTP/1.1" 101' in line for line in log), log


def test_check_is_nginx_t(tmp_path: Path) -> None:
    config = seed_config(tmp_path, (8010, 8011), listen="80")
    result = run_wsgate("proxy", "-t", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: ok: 1 listener, 1 upstream (2 servers), 1 location\n"
    assert result.stderr == ""


def test_a_log_folder_that_does_not_exist_is_nginx_s_open_failed(tmp_path: Path) -> None:
    config = seed_config(tmp_path, (8010, 8011))
    config.write_text(config.read_text().replace(str(tmp_path / "yourdomain.log"),
                                                 str(tmp_path / "no" / "x.log")))
    result = run_wsgate("proxy", "-t", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr == (f'error: open() "{tmp_path}/no/x.log" failed (2: No such file '
                             f"or directory) in {config}:17\n")


def test_unsupported_directive_in_an_included_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "events {}\nhttp {\n    include conf.d/*.conf;\n}\n")
    (tmp_path / "conf.d" / "app.conf").write_text(
        "server {\n    listen 127.0.0.1:0;\n    location / {\n"
        "        rewrite ^/old/(.*)$ /new/$1 permanent;\n        proxy_pass http://127.0.0.1:9;\n"
        "    }\n}\n")
    result = run_wsgate("proxy", "-c", str(tmp_path / "nginx.conf"))
    assert result.returncode == 2
    assert result.stderr == (f'error: unsupported directive "rewrite" in '
                             f"{tmp_path}/conf.d/app.conf:4\n")
    assert result.stdout == ""


def test_included_servers_are_served(wsgate: Spawn, tmp_path: Path) -> None:
    (tmp_path / "sites").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "worker_processes 1;\nevents { worker_connections 64; }\n"
        "http {\n    sendfile on;\n    tcp_nopush on;\n    include sites/*.conf;\n}\n")
    (tmp_path / "sites" / "a.conf").write_text(
        "server {\n    listen 127.0.0.1:0;\n    location = /health { return 200 \"a ok\"; }\n}\n")
    proxy: Proc = wsgate(["proxy", "-c", str(tmp_path / "nginx.conf")])
    notice = proxy.expect(r"^notice: ", stream="err")
    assert notice.string.endswith("accepted and ignored: worker_connections, sendfile, tcp_nopush")
    port = int(proxy.expect(r"Listening on http://127\.0\.0\.1:(\d+)").group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        assert response.read() == b"a ok"


def test_convert_prints_the_seed_as_toml_that_runs_the_same(tmp_path: Path) -> None:
    result = run_wsgate("convert", str(EXAMPLES / "nginx.conf"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (EXAMPLES / "seed.toml").read_text(), (
        "examples/seed.toml is wsgate convert examples/nginx.conf: regenerate it")
    assert "# nginx.conf:19: proxy_pass http://websocket;\nproxy_pass = \"http://websocket\"" \
        in result.stdout
    converted = tmp_path / "seed.toml"
    converted.write_text(result.stdout.replace("/var/log/nginx/yourdomain.log",
                                               str(tmp_path / "x.log")))
    check = run_wsgate("proxy", "-t", "-c", str(converted))
    assert check.returncode == 0, check.stderr


def test_format_overrides_the_file_name(tmp_path: Path) -> None:
    config = seed_config(tmp_path, (8010, 8011))
    renamed = tmp_path / "seed.toml"
    renamed.write_text(config.read_text())
    as_toml = run_wsgate("proxy", "-t", "-c", str(renamed))
    assert as_toml.returncode == 2 and "invalid TOML" in as_toml.stderr
    as_nginx = run_wsgate("proxy", "-t", "--format", "nginx", "-c", str(renamed))
    assert as_nginx.returncode == 0, as_nginx.stderr


def test_user_drops_the_workers_privileges_after_binding(wsgate: Spawn, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a proxy started as root can become another user")
    nobody = pwd.getpwnam("nobody")
    (tmp_path / "nginx.conf").write_text(
        "user nobody;\nworker_processes 2;\nevents {}\nhttp {\n    server {\n"
        "        listen 127.0.0.1:0;\n        location / { return 200 \"hi\"; }\n    }\n}\n")
    proxy = wsgate(["proxy", "-c", str(tmp_path / "nginx.conf")])
    port = int(proxy.expect(r"Listening on http://127\.0\.0\.1:(\d+)").group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert response.read() == b"hi"
    workers = children(proxy.popen.pid)
    assert len(workers) >= 2
    for pid in workers:
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", Path(f"/proc/{pid}/status").read_text(),
                         re.M)
        assert uids is not None and {int(uid) for uid in uids.groups()} == {nobody.pw_uid}
    master = re.search(r"^Uid:\s+(\d+)", Path(f"/proc/{proxy.popen.pid}/status").read_text(),
                       re.M)
    assert master is not None and master.group(1) == "0"  # the master stays root, as nginx's


def test_a_user_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text(
        "user no-such-user-here;\nhttp {\n    server {\n        listen 127.0.0.1:0;\n"
        "        location / { return 204; }\n    }\n}\n")
    result = run_wsgate("proxy", "-t", "-c", str(tmp_path / "nginx.conf"))
    assert result.returncode == 2
    assert result.stderr == ('error: getpwnam("no-such-user-here") failed: no such user in '
                             f"{tmp_path}/nginx.conf:1\n")


def test_log_format_writes_nginx_variables(wsgate: Spawn, tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text(
        "http {\n"
        "    log_format main '$remote_addr \"$request\" $status $body_bytes_sent '\n"
        "                    'host=$host x=$http_x_test arg=$arg_id app=$app';\n"
        "    map $http_x_test $app { default none; ~^(?<name>[a-z]+)-\\d+$ $name; }\n"
        f"    access_log {tmp_path}/access.log main;\n"
        "    server {\n        listen 127.0.0.1:0;\n"
        "        location / { return 200 \"logged\"; }\n    }\n}\n")
    proxy = wsgate(["proxy", "-c", str(tmp_path / "nginx.conf")])
    port = int(proxy.expect(r"Listening on http://127\.0\.0\.1:(\d+)").group(1))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/p?id=7",
                                     headers={"X-Test": "chat-42", "Host": "example.test"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read() == b"logged"
    deadline = time.monotonic() + 5
    log = tmp_path / "access.log"
    while time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.02)
    assert log.read_text() == ('127.0.0.1 "GET /p?id=7 HTTP/1.1" 200 6 host=example.test '
                               "x=chat-42 arg=7 app=chat\n")


def test_a_reload_reads_the_nginx_file_again(wsgate: Spawn, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "app.conf"  # not .toml: nginx's syntax, on the reload too
    body = ("server {{\n    listen 127.0.0.1:{port};\n"
            "    location / {{ return 200 \"{text}\"; }}\n}}\n")
    config.write_text(body.format(port=port, text="one"))
    proxy = wsgate(["proxy", "-c", str(config)])
    proxy.expect(r"Listening on http://")

    def answer() -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.read()

    assert answer() == b"one"
    config.write_text(body.format(port=port, text="two"))
    proxy.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while answer() != b"two":
        assert time.monotonic() < deadline, "the reload did not take"
        time.sleep(0.05)


LOCAL = ("http {{\n    server {{\n        listen 127.0.0.1:0;\n        root {root};\n"
         "        location = /ret {{ return 200 \"ok\"; }}\n    }}\n}}\n")


def _local_proxy(wsgate: Spawn, tmp_path: Path) -> int:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "page.html").write_text("<p>page</p>\n")
    (tmp_path / "nginx.conf").write_text(LOCAL.format(root=tmp_path / "www"))
    proxy = wsgate(["proxy", "-c", str(tmp_path / "nginx.conf")])
    return int(proxy.expect(r"Listening on http://127\.0\.0\.1:(\d+)").group(1))


def test_many_pipelined_local_answers(wsgate: Spawn, tmp_path: Path) -> None:
    """Each answer of the proxy's own starts the next request from the loop, not from
    inside itself: 400 pipelined requests get 400 answers (a nesting call chain would
    end in RecursionError)."""
    port = _local_proxy(wsgate, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /ret HTTP/1.1\r\nHost: a\r\n\r\n" * 399
                     + b"GET /page.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 400
    assert data.endswith(b"<p>page</p>\n")


def test_head_of_a_file_has_one_length(wsgate: Spawn, tmp_path: Path) -> None:
    port = _local_proxy(wsgate, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"HEAD /page.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert re.findall(rb"(?i)content-length: (\d+)", head) == [b"12"]
    assert body == b""


def test_an_answer_of_its_own_does_not_wait_for_a_100_continue_body(
        wsgate: Spawn, tmp_path: Path) -> None:
    port = _local_proxy(wsgate, tmp_path)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /ret HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 500000\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nok")
    assert b"Connection: close" in data
    assert time.monotonic() - started < 2


def test_no_file_stays_open_after_refused_or_abandoned_requests(wsgate: Spawn,
                                                                tmp_path: Path) -> None:
    """A file chosen at the head is closed when the request is refused (413) or its client
    leaves before the body is in."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.txt").write_text("a\n")
    (tmp_path / "nginx.conf").write_text(
        f"worker_processes 1;\nhttp {{\n    client_max_body_size 10;\n    server {{\n"
        f"        listen 127.0.0.1:0;\n        root {tmp_path / 'www'};\n    }}\n}}\n")
    proxy = wsgate(["proxy", "-c", str(tmp_path / "nginx.conf")])
    port = int(proxy.expect(r"Listening on http://127\.0\.0\.1:(\d+)").group(1))
    (worker,) = children(proxy.popen.pid)

    def open_files() -> int:
        return len(list(Path(f"/proc/{worker}/fd").iterdir()))

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/a.txt", timeout=5) as response:
        assert response.read() == b"a\n"  # the worker is up and serving
    time.sleep(0.2)
    before = open_files()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    deadline = time.monotonic() + 5
    while open_files() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_files() <= before
