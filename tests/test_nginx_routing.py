"""One nginx.conf, run by wsgate and by real nginx side by side: the same requests must reach
the same server block, location, upstream and path, and get the same status, Location and
local answer. The file has what real WebSocket deployments have: a port-80 block that
redirects to https, two TLS servers chosen by SNI, static files next to proxied locations,
regex and exact and ^~ locations, a map feeding proxy_pass, return and error_page."""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from client_helpers import free_port
from conftest import Spawn, require_nginx
from proxy_helpers import refusing_port

CONF = """\
user root;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    include mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log {folder}/access.log;
    map $http_x_app $backend {{
        default app;
        api     api;
    }}
    upstream app {{ server 127.0.0.1:{app}; }}
    upstream api {{ server 127.0.0.1:{api}; }}
    upstream dead {{ server 127.0.0.1:{dead}; }}
    upstream flaky {{ server 127.0.0.1:{bad}; server 127.0.0.1:{app}; }}
    server {{
        listen 127.0.0.1:{http};
        server_name example.com www.example.com;
        return 301 https://$host$request_uri;
    }}
    server {{
        listen 127.0.0.1:{http} default_server;
        server_name _;
        location / {{ return 404; }}
    }}
    server {{
        listen 127.0.0.1:{http};
        server_name static.test;
        root {folder}/www;
        location /api/ {{ proxy_pass http://api; }}
        location /status/ {{ proxy_pass http://app; }}
        location /tf/ {{ try_files /nope /status/x?from=tf; }}
        location /ep/ {{ error_page 404 /status/y?from=ep; return 404; }}
        location = /nl {{ return 200 "ok\n"; }}
        location /loop {{ error_page 302 /loop; return 302 /elsewhere; }}
    }}
    server {{
        listen 127.0.0.1:{http};
        server_name ~^(\\w+)\\.regex\\.test$;
        location / {{ return 200 "pos=$1"; }}
    }}
    server {{
        listen 127.0.0.1:{https} ssl;
        server_name example.com;
        ssl_certificate {folder}/com.pem;
        ssl_certificate_key {folder}/com.key;
        root {folder}/www;
        error_page 404 /404.html;
        location / {{ try_files $uri $uri/ /index.html; }}
        location /api/ {{ proxy_pass http://api/v1/; }}
        location = /exact {{ proxy_pass http://app; }}
        location ^~ /static/ {{ }}
        location /down/ {{ proxy_pass http://dead; error_page 502 /50x.html; }}
        location /flaky/ {{
            proxy_pass http://flaky;
            proxy_next_upstream error timeout http_502;
        }}
        location ~ ^/user/(\\d+)$ {{ proxy_pass http://app/profile?id=$1; }}
        location ~* \\.(png|jpg)$ {{ return 200 "image"; }}
        location /ws {{
            proxy_pass http://$backend;
            proxy_set_header Host $host;
            proxy_set_header X-Server $server_name;
        }}
    }}
    server {{
        listen 127.0.0.1:{https} ssl;
        server_name *.example.org;
        ssl_certificate {folder}/org.pem;
        ssl_certificate_key {folder}/org.key;
        location / {{
            proxy_pass http://app;
            proxy_set_header X-Server $server_name;
        }}
    }}
}}
"""


BAD_HITS: list[str] = []
"""What reached the upstream that answers 502: proof that the retry happened."""


class Reporter(BaseHTTPRequestHandler):
    """An upstream that answers with what reached it: its name, method, target, Host and
    X-Server."""

    name = "?"

    def do_GET(self) -> None:
        if self.name == "bad":
            BAD_HITS.append(self.path)
            self.send_error(502)
            return
        body = (f"{self.name} {self.command} {self.path} host={self.headers.get('Host')} "
                f"server={self.headers.get('X-Server')}").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    certificate: str


def ask(port: int, path: str, host: str, tls: bool = False,
        headers: dict[str, str] | None = None) -> Answer:
    """One request on its own connection; over TLS with ``host`` as the SNI name."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=5)
    subject = ""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname=host)
        der = sock.getpeercert(binary_form=True) or b""
        subject = hashlib.sha256(der).hexdigest()[:12]
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    with sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    first, *rest = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in rest:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return Answer(int(first.split()[1]), fields, body, subject)


@pytest.fixture
def upstreams() -> Iterator[dict[str, int]]:
    servers = {}
    for name in ("app", "api", "bad"):
        handler = type(f"{name}Reporter", (Reporter,), {"name": name})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    ports = {name: server.server_address[1] for name, server in servers.items()}
    yield {**ports, "dead": refusing_port()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def _site(folder: Path) -> None:
    ca = trustme.CA()
    for name, host in (("com", "example.com"), ("org", "*.example.org")):
        cert = ca.issue_cert(host)
        cert.private_key_pem.write_to_path(folder / f"{name}.key")
        cert.cert_chain_pems[0].write_to_path(folder / f"{name}.pem")
    www = folder / "www"
    (www / "static").mkdir(parents=True)
    (www / "docs").mkdir()
    (www / "index.html").write_text("<h1>index</h1>\n")
    (www / "404.html").write_text("<h1>not here</h1>\n")
    (www / "50x.html").write_text("<h1>down</h1>\n")
    (www / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (www / "static" / "app.css").write_text("body {}\n")
    (www / "static" / "logo.png").write_bytes(b"\x89PNG\r\n")
    mime = Path("/etc/nginx/mime.types")
    types = mime.read_text() if mime.exists() else (
        "types { text/html html; text/css css; image/png png; }\n")
    (folder / "mime.types").write_text(types)


REQUESTS: list[tuple[str, str, str, bool, dict[str, str]]] = [
    ("redirect to https", "/a/b?c=1", "example.com", False, {}),
    ("redirect, second name", "/", "www.example.com", False, {}),
    ("default server", "/", "unknown.test", False, {}),
    ("index", "/", "example.com", True, {}),
    ("directory index", "/docs/", "example.com", True, {}),
    ("directory without slash", "/docs", "example.com", True, {}),
    ("try_files fallback", "/no/such/page", "example.com", True, {}),
    ("prefix with URI part", "/api/items?limit=2", "example.com", True, {}),
    ("exact", "/exact", "example.com", True, {}),
    ("exact beats prefix: /exact/ is not /exact", "/exact/x", "example.com", True, {}),
    ("regex capture into proxy_pass", "/user/42", "example.com", True, {}),
    ("regex without a match falls back", "/user/abc", "example.com", True, {}),
    ("case-insensitive regex", "/pics/A.PNG", "example.com", True, {}),
    ("^~ stops the regexes", "/static/logo.png", "example.com", True, {}),
    ("static file", "/static/app.css", "example.com", True, {}),
    ("missing static file: error_page", "/static/none.css", "example.com", True, {}),
    ("map picks the upstream", "/ws/chat", "example.com", True, {"X-App": "api"}),
    ("map default", "/ws", "example.com", True, {}),
    ("wildcard name and its certificate", "/x", "chat.example.org", True, {}),
    ("unknown SNI: the default server", "/user/7", "other.test", True, {}),
    ("proxied prefix without its slash: 301", "/api", "example.com", True, {}),
    ("args through a URI part", "/exact?x=1&y=2", "example.com", True, {}),
    ("regex proxy_pass with variables drops args", "/user/42?x=1", "example.com", True, {}),
    ("variable proxy_pass keeps the request URI", "/ws?room=1", "example.com", True, {}),
    ("dot segments resolve before matching", "/api/../static/app.css", "example.com", True,
     {}),
    ("escaped path through a URI part", "/api/a%20b", "example.com", True, {}),
    ("not modified", "/static/app.css", "example.com", True, {"If-Modified-Since": "<mtime>"}),
    ("a range", "/static/app.css", "example.com", True, {"Range": "bytes=0-3"}),
    ("a file by its own name", "/index.html", "example.com", True, {}),
    ("no location matches: the server's root", "/static/app.css", "static.test", False, {}),
    ("no location matches: the server's index", "/", "static.test", False, {}),
    ("try_files fallback with its own args", "/tf/a?orig=1", "static.test", False, {}),
    ("error_page with its own args", "/ep/a?orig=1", "static.test", False, {}),
    ("return text kept verbatim", "/nl", "static.test", False, {}),
    ("error_page of a redirect to itself", "/loop", "static.test", False, {}),
    ("server_name regex capture", "/", "abc.regex.test", False, {}),
    ("error_page for a 502 of the proxy's own", "/down/x", "example.com", True, {}),
    ("proxy_next_upstream http_502", "/flaky/x", "example.com", True, {}),
]


def _fingerprint(answer: Answer, ports: dict[str, int]) -> tuple[object, ...]:
    """What must agree: status, Location (ports written as names), body for everything
    but nginx's own pages (their footer names the server), Content-Type, and which
    certificate was served."""
    location = answer.headers.get("location", "")
    for name, port in ports.items():
        location = location.replace(f":{port}", f":<{name}>")
    own_page = b"<hr><center>" in answer.body
    return (answer.status, location, b"" if own_page else answer.body,
            answer.headers.get("content-type", "").split(";")[0], answer.certificate)


def test_requests_land_where_nginx_sends_them(wsgate: Spawn, spawn: Spawn, tmp_path: Path,
                                               upstreams: dict[str, int]) -> None:
    require_nginx()
    _site(tmp_path)
    BAD_HITS.clear()
    ports = {name: {"http": free_port(), "https": free_port()} for name in ("wsgate", "nginx")}
    for name, own in ports.items():
        (tmp_path / f"{name}.conf").write_text(CONF.format(folder=tmp_path, **upstreams, **own))
    wsgate(["proxy", "-c", str(tmp_path / "wsgate.conf")]).expect(r"Listening on https://")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    spawn([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
           "-g", f"daemon off; pid {tmp_path}/nginx.pid; error_log stderr;"])
    _wait_for(ports["nginx"]["https"])
    mtime = formatdate((tmp_path / "www" / "static" / "app.css").stat().st_mtime, usegmt=True)
    differences = []
    for label, path, host, tls, headers in REQUESTS:
        seen = {}
        headers = {name: mtime if value == "<mtime>" else value
                   for name, value in headers.items()}
        for name in ("wsgate", "nginx"):
            port = ports[name]["https" if tls else "http"]
            seen[name] = _fingerprint(ask(port, path, host, tls, headers), ports[name])
        if seen["wsgate"] != seen["nginx"]:
            differences.append(f"{label}: wsgate {seen['wsgate']}\n  nginx {seen['nginx']}")
    assert not differences, "\n".join(differences)
    assert BAD_HITS == ["/flaky/x", "/flaky/x"]  # each proxy asked it first, then the next


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")
