"""``wsgate proxy`` configuration: what a good config becomes, and the one line a bad one gets.

Every bad config asserts the whole message, because the message is the interface: it must
name the file, the key and the mistake, on one line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
from pathlib import Path

import pytest
import trustme

from wsgate.errors import ConfigError, UsageError
from wsgate.proxy import configload, preflight
from wsgate.proxy.config import (
    DEFAULT_SET_HEADERS,
    AccessLogConfig,
    ErrorLogConfig,
    Listener,
    Location,
    ProxyConfig,
    ServerConfig,
    TLSFiles,
    UpstreamConfig,
    VirtualServer,
    describe,
)
from wsgate.proxy.configfile import load
from wsgate.proxy.flags import from_flags
from wsgate.proxy.location_values import ErrorPage, MapConfig, ProxyPass, Return
from wsgate.proxy.routes import Route, Routes, Site

EXAMPLES = Path(__file__).parent.parent / "examples"

LISTEN = 'listen = "127.0.0.1:8080"\n'
UPSTREAM = '[upstream.websocket]\nserver = ["localhost:8010", "localhost:8011"]\n'
LOCATION = '[location."/"]\nproxy_pass = "http://websocket"\n'
MINIMAL = LISTEN + UPSTREAM + LOCATION
TO_WEBSOCKET = ProxyPass("http://websocket", "websocket", None)
TO_BACKEND = ProxyPass("http://backend", "backend", None)
SERVER = '[[server]]\nlisten = "127.0.0.1:8080"\n[server.location."/"]\nproxy_pass = "websocket"\n'
MAP = ('[map.connection_upgrade]\nsource = "$http_upgrade"\ndefault = "upgrade"\n'
       'values = { "" = "close" }\n')


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the config, made current so messages start with ``wsgate.toml:``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cert.pem").write_text("certificate")
    (tmp_path / "key.pem").write_text("key")
    return tmp_path


def load_text(folder: Path, text: str) -> ProxyConfig:
    (folder / "wsgate.toml").write_text(text)
    return load("wsgate.toml")


def error_of(folder: Path, text: str) -> str:
    with pytest.raises(UsageError) as caught:
        load_text(folder, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the seed and the full schema ---------------------------------------------------------


def test_seed_example_gives_the_seeds_settings() -> None:
    """examples/seed.toml is ``wsgate convert examples/nginx.conf``: nginx's semantics,
    written out (no upstream keep-alive, nginx's default headers replaced by the seed's)."""
    config = load(EXAMPLES / "seed.toml")
    assert config.listeners == (Listener("0.0.0.0", 80, False),)
    assert list(config.upstreams) == ["websocket"]
    group = config.upstreams["websocket"]
    assert group.balance == "round_robin"
    assert group.keepalive == 0
    assert [(server.host, server.port) for server in group.servers] == [
        ("localhost", 8010), ("localhost", 8011)]
    (location,) = config.locations
    assert (location.key, location.upstream, location.read_timeout) == ("/", "websocket", 300.0)
    assert location.set_headers == (("Host", "$host"), ("X-Real-IP", "$remote_addr"),
                                    ("X-Forwarded-For", "$proxy_add_x_forwarded_for"))
    assert config.access_log == AccessLogConfig(
        "file", Path("/var/log/nginx/yourdomain.log"), "combined")
    assert [server.names for server in config.servers] == [("localhost",)]
    assert config.servers[0].tls is None
    assert describe(config) == f"{EXAMPLES / 'seed.toml'}: ok: 1 listener, 1 upstream " \
                               "(2 servers), 1 location"


def test_seed_example_comments_every_nginx_line() -> None:
    rows = (EXAMPLES / "seed.toml").read_text().splitlines()
    comments = {re.sub(r"^nginx\.conf:\d+: ", "", row.strip()[1:].strip())
                for row in rows if row.strip().startswith("#")}
    for line in ("listen 80;", "server_name localhost;", "proxy_pass http://websocket;",
                 "proxy_read_timeout 300s;", "server localhost:8010;", "server localhost:8011;",
                 "access_log /var/log/nginx/yourdomain.log;",
                 "proxy_set_header Host $host;", "proxy_set_header X-Real-IP $remote_addr;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;",
                 "map $http_upgrade $connection_upgrade {"):
        assert line in comments, line


FULL = """
listen = ["127.0.0.1:8080", "[::1]:8080", "0.0.0.0:443 ssl"]
worker_processes = "auto"
ssl_certificate = "cert.pem"
ssl_certificate_key = "key.pem"
trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]
client_header_timeout = "5s"
client_max_body_size = "2m"
large_client_header_buffers = "2 4k"
keepalive_timeout = "1m"
worker_shutdown_timeout = 3

[access_log]
path = "logs/access.log"
format = "json"

[upstream.websocket]
balance = "hash"
hash = "$remote_addr"
consistent = true
keepalive = 8
server = [
  "localhost:8010",
  "localhost:8011 weight=2 max_fails=3 fail_timeout=30s",
  "localhost:8012 down max_conns=100",
  { address = "localhost:8013", max_fails = 0 },
]

[[upstream.tables.server]]
address = "[::1]:8020"
weight = 2
max_fails = 0
fail_timeout = "1m"
backup = false
down = true
max_conns = 10

[[upstream.tables.server]]
address = "127.0.0.1:8021"
backup = true

[location."/"]
proxy_pass = "http://websocket"
proxy_read_timeout = "300s"
proxy_send_timeout = "30s"
proxy_connect_timeout = "500ms"
proxy_next_upstream_tries = 3
proxy_next_upstream_timeout = "10s"

[location."/".proxy_set_header]
host = "$http_x_original_host"
"X-Forwarded-Proto" = ""
X-Id = "${remote_addr}:$remote_port"

[location."/api/"]
proxy_pass = "10.1.1.1:9000"
"""


def test_full_schema(folder: Path) -> None:
    config = load_text(folder, FULL)
    assert config.source == "wsgate.toml"
    assert config.listeners == (Listener("127.0.0.1", 8080, False), Listener("::1", 8080, False),
                                Listener("0.0.0.0", 443, True))
    assert config.workers == (os.cpu_count() or 1)
    (server,) = config.servers
    assert server.tls == TLSFiles(folder / "cert.pem", folder / "key.pem")
    assert config.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),
                                      ipaddress.ip_network("10.0.0.0/8"),
                                      ipaddress.ip_network("::1/128"))
    assert server.client_header_timeout == 5.0
    assert server.defaults.client_max_body_size == 2 << 20
    assert (server.max_request_line, server.max_header_line, server.max_header_total) == (
        4096, 4096, 8192)
    assert server.keepalive_timeout == 60.0
    assert config.shutdown_timeout == 3.0
    assert config.access_log == AccessLogConfig("file", folder / "logs/access.log", "json")
    assert config.upstreams == {
        "websocket": UpstreamConfig("websocket", (
            ServerConfig("localhost", 8010),
            ServerConfig("localhost", 8011, weight=2, max_fails=3, fail_timeout=30.0),
            ServerConfig("localhost", 8012, down=True, max_conns=100),
            ServerConfig("localhost", 8013, max_fails=0),
        ), balance="hash", hash_key="$remote_addr", consistent=True, keepalive=8),
        "tables": UpstreamConfig("tables", (
            ServerConfig("::1", 8020, weight=2, max_fails=0, fail_timeout=60.0, down=True,
                         max_conns=10),
            ServerConfig("127.0.0.1", 8021, backup=True),
        )),
        "10.1.1.1:9000": UpstreamConfig("10.1.1.1:9000", (ServerConfig("10.1.1.1", 9000),)),
    }
    assert config.locations == (  # in the order written, as nginx keeps them
        Location("/", TO_WEBSOCKET, read_timeout=300.0, send_timeout=30.0,
                 connect_timeout=0.5, next_upstream_tries=3, next_upstream_timeout=10.0,
                 set_headers=(
                     ("host", "$http_x_original_host"), ("X-Real-IP", "$remote_addr"),
                     ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
                     ("X-Id", "${remote_addr}:$remote_port")),
                 client_max_body_size=2 << 20, label='location."/"'),
        Location("/api/", ProxyPass("10.1.1.1:9000", "10.1.1.1:9000", None),
                 client_max_body_size=2 << 20, label='location."/api/"'),
    )
    assert [location.upstream for location in config.locations] == [
        "websocket", "10.1.1.1:9000"]
    assert describe(config) == ("wsgate.toml: ok: 3 listeners, 3 upstreams (7 servers), "
                                "2 locations")


def test_defaults(folder: Path) -> None:
    config = load_text(folder, MINIMAL)
    assert config == ProxyConfig(
        upstreams={"websocket": UpstreamConfig("websocket", (
            ServerConfig("localhost", 8010), ServerConfig("localhost", 8011)))},
        servers=(VirtualServer(
            listeners=(Listener("127.0.0.1", 8080),),
            locations=(Location("/", TO_WEBSOCKET, label='location."/"'),)),),
        source="wsgate.toml",
    )
    assert config.listeners == (Listener("127.0.0.1", 8080),)
    assert config.workers == 1
    (server,) = config.servers
    assert server.tls is None
    assert server.names == ("",)
    assert server.name == ""
    assert server.return_ is None
    assert server.server_tokens is True
    assert server.ssl_protocols == ("TLSv1.2", "TLSv1.3")
    assert config.trusted_proxies == ()
    assert config.maps == {}
    assert config.log_formats == {}
    assert config.types is None
    assert server.client_header_timeout == 10.0
    assert server.defaults == Location("")
    assert server.defaults.client_max_body_size == 1 << 20
    assert (server.max_request_line, server.max_header_line, server.max_header_total) == (
        8192, 8192, 32768)
    assert server.keepalive_timeout == 75.0
    assert config.shutdown_timeout == 10.0
    assert config.access_log == AccessLogConfig("stdout", None, "combined")
    location = config.locations[0]
    assert (location.key, location.upstream) == ("/", "websocket")
    assert (location.read_timeout, location.send_timeout, location.connect_timeout) == (
        60.0, 60.0, 60.0)
    assert (location.next_upstream_tries, location.next_upstream_timeout) == (None, None)
    assert location.client_max_body_size == 1 << 20
    assert (location.http_version, location.redirect, location.return_, location.root) == (
        "1.1", "default", None, None)
    assert (location.index, location.try_files, location.error_pages) == (
        ("index.html",), (), ())
    assert location.locations == ()
    assert location.set_headers == (
        ("Host", "$host"), ("X-Real-IP", "$remote_addr"),
        ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("X-Forwarded-Proto", "$proxy_x_forwarded_proto"))
    assert config.upstreams["websocket"].keepalive == 32


def test_config_is_frozen(folder: Path) -> None:
    config = load_text(folder, MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.upstreams["other"] = config.upstreams["websocket"]  # type: ignore[index]


def test_relative_paths_are_relative_to_the_config_folder(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "conf").mkdir()
    (folder / "conf" / "c.pem").write_text("c")
    (folder / "conf" / "k.pem").write_text("k")
    (folder / "conf" / "wsgate.toml").write_text(
        'listen = "443 ssl"\nssl_certificate = "c.pem"\nssl_certificate_key = "k.pem"\n'
        'access_log = "access.log"\nroot = "www"\n' + UPSTREAM + LOCATION
        + '[location."/files/"]\nroot = "/srv/files"\n')
    monkeypatch.chdir("/")
    config = load(folder / "conf" / "wsgate.toml")
    assert config.servers[0].tls == TLSFiles(folder / "conf" / "c.pem",
                                             folder / "conf" / "k.pem")
    assert config.access_log.path == folder / "conf" / "access.log"
    assert [location.root for location in config.locations] == [
        folder / "conf" / "www", Path("/srv/files")]
    assert config.servers[0].defaults.root == folder / "conf" / "www"


@pytest.mark.parametrize(("listen", "expected"), [
    ('"8080"', Listener("0.0.0.0", 8080)),
    ("8080", Listener("0.0.0.0", 8080)),
    ('":8080"', Listener("0.0.0.0", 8080)),
    ('"*:8080"', Listener("0.0.0.0", 8080)),
    ('"[::]:8080"', Listener("::", 8080)),
    ('"localhost:0"', Listener("localhost", 0)),
    ('"127.0.0.1:80"', Listener("127.0.0.1", 80)),
    ('"80 default_server"', Listener("0.0.0.0", 80, default_server=True)),
    ('"[::1]:80 default backlog=16"', Listener("::1", 80, default_server=True, backlog=16)),
    ('"127.0.0.1:80 backlog=1024"', Listener("127.0.0.1", 80, backlog=1024)),
])
def test_listen_forms(folder: Path, listen: str, expected: Listener) -> None:
    config = load_text(folder, f"listen = {listen}\n" + UPSTREAM + LOCATION)
    assert config.listeners == (expected,)


def test_listener_address() -> None:
    assert Listener("::1", 8080).address == "[::1]:8080"
    assert Listener("0.0.0.0", 80).address == "0.0.0.0:80"


@pytest.mark.parametrize(("value", "seconds"), [
    ('"300s"', 300.0), ('"5m"', 300.0), ('"1h"', 3600.0), ('"500ms"', 0.5), ('"10"', 10.0),
    ("10", 10.0), ("2.5", 2.5), ('"1m30s"', 90.0), ('"1d"', 86400.0), ('"1w"', 604800.0),
    ('"0"', 0.0),
])
def test_durations(folder: Path, value: str, seconds: float) -> None:
    config = load_text(folder, f"keepalive_timeout = {value}\n" + MINIMAL)
    assert config.servers[0].keepalive_timeout == seconds


@pytest.mark.parametrize(("value", "size"), [
    ('"8k"', 8192), ('"8K"', 8192), ('"1m"', 1 << 20), ('"1g"', 1 << 30), ("1000", 1000),
    ('"1000"', 1000), ('"0"', None), ("0", None),
])
def test_sizes(folder: Path, value: str, size: int | None) -> None:
    config = load_text(folder, f"client_max_body_size = {value}\n" + MINIMAL)
    assert config.servers[0].defaults.client_max_body_size == size
    assert config.locations[0].client_max_body_size == size  # inherited, as in nginx


@pytest.mark.parametrize(("value", "expected"), [
    ('"stdout"', AccessLogConfig("stdout", None, "combined")),
    ('"stderr"', AccessLogConfig("stderr", None, "combined")),
    ('"off"', AccessLogConfig("off", None, "combined")),
    ('{ format = "json" }', AccessLogConfig("stdout", None, "json")),
    ('{ path = "off", format = "json" }', AccessLogConfig("off", None, "json")),
])
def test_access_log_forms(folder: Path, value: str, expected: AccessLogConfig) -> None:
    assert load_text(folder, f"access_log = {value}\n" + MINIMAL).access_log == expected


@pytest.mark.parametrize(("value", "expected"), [
    ('"stderr"', ErrorLogConfig("stderr", None, "error")),
    ('"stderr warn"', ErrorLogConfig("stderr", None, "warn")),
    ('"logs/error.log"', ErrorLogConfig("file", Path("logs/error.log"), "error")),
    ('"logs/error.log debug"', ErrorLogConfig("file", Path("logs/error.log"), "debug")),
    ('{ level = "notice" }', ErrorLogConfig("stderr", None, "notice")),
    ('{ path = "e.log", level = "crit" }', ErrorLogConfig("file", Path("e.log"), "crit")),
])
def test_error_log_forms(folder: Path, value: str, expected: ErrorLogConfig) -> None:
    config = load_text(folder, f"error_log = {value}\n" + MINIMAL)
    if expected.path is not None:
        expected = dataclasses.replace(expected, path=folder / expected.path)
    assert config.error_log == expected


def test_error_log_default_is_nginx_s(folder: Path) -> None:
    assert load_text(folder, MINIMAL).error_log == ErrorLogConfig("stderr", None, "error")


def test_worker_processes_number(folder: Path) -> None:
    assert load_text(folder, "worker_processes = 4\n" + MINIMAL).workers == 4


def test_balance_methods(folder: Path) -> None:
    for balance in ("round_robin", "least_conn", "ip_hash"):
        text = (LISTEN + f'[upstream.websocket]\nbalance = "{balance}"\n'
                'server = "localhost:8010"\n' + LOCATION)
        assert load_text(folder, text).upstreams["websocket"].balance == balance


def test_proxy_pass_forms_and_implicit_groups(folder: Path) -> None:
    config = load_text(folder, LISTEN + UPSTREAM + """
[location."/"]
proxy_pass = "websocket"
[location."/a"]
proxy_pass = "http://127.0.0.1:9000"
[location."/ab"]
proxy_pass = "127.0.0.1:9000"
[location."/six"]
proxy_pass = "http://[::1]:9001"
""")
    assert [(location.key, location.upstream) for location in config.locations] == [
        ("/", "websocket"), ("/a", "127.0.0.1:9000"), ("/ab", "127.0.0.1:9000"),
        ("/six", "[::1]:9001")]
    assert [location.proxy_pass for location in config.locations] == [
        ProxyPass("websocket", "websocket", None),
        ProxyPass("http://127.0.0.1:9000", "127.0.0.1:9000", None),
        ProxyPass("127.0.0.1:9000", "127.0.0.1:9000", None),
        ProxyPass("http://[::1]:9001", "[::1]:9001", None)]
    assert config.upstreams["[::1]:9001"].servers == (ServerConfig("::1", 9001),)
    assert list(config.upstreams) == ["websocket", "127.0.0.1:9000", "[::1]:9001"]


def test_routes_take_the_longest_prefix(folder: Path) -> None:
    config = load_text(folder, LISTEN + UPSTREAM + """
[location."/api"]
proxy_pass = "websocket"
[location."/api/v2/"]
proxy_pass = "127.0.0.1:9000"
""")
    host = Routes(config).site("127.0.0.1:8080").names.find(b"example.com").value
    assert host.config is config.servers[0]

    def served_by(path: bytes) -> Location | None:
        match = host.match(path)
        return match.value.location if match is not None else None

    assert served_by(b"/api/v2/x") == config.locations[1]
    assert served_by(b"/api/v1") == config.locations[0]
    assert served_by(b"/apix") == config.locations[0]  # a plain string prefix, as nginx's
    assert served_by(b"/") is None


def test_trusts(folder: Path) -> None:
    config = load_text(folder, 'trusted_proxies = ["10.0.0.0/8", "::1"]\n' + MINIMAL)
    assert config.trusts("10.2.3.4")
    assert config.trusts("::ffff:10.2.3.4")
    assert config.trusts("::1")
    assert not config.trusts("11.0.0.1")
    assert not config.trusts("not an address")
    single = load_text(folder, 'trusted_proxies = "127.0.0.1"\n' + MINIMAL)
    assert single.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),)


def test_set_header_merge(folder: Path) -> None:
    config = load_text(folder, LISTEN + UPSTREAM + LOCATION + """
[location."/".proxy_set_header]
X-REAL-IP = "$http_x_real_ip"
X-Forwarded-For = ""
X-New = "$scheme://$host$request_uri"
X-Absent = ""
""")
    assert config.locations[0].set_headers == (
        ("Host", "$host"), ("X-REAL-IP", "$http_x_real_ip"),
        ("X-Forwarded-Proto", "$proxy_x_forwarded_proto"),
        ("X-New", "$scheme://$host$request_uri"))


# --- virtual servers, nginx's location forms, maps, return, error_page and files ------------

SERVERS = """
ssl_certificate = "cert.pem"
ssl_certificate_key = "key.pem"
keepalive_timeout = "30s"
[upstream.websocket]
server = ["localhost:8010", "localhost:8011"]

[[server]]
listen = ["443 ssl default_server backlog=1024", "127.0.0.1:8080"]
server_name = ["Example.com", "*.example.com", "www.example.*", "~^(?<app>.+)\\\\.example\\\\.net$"]
ssl_certificate = "a.pem"
ssl_certificate_key = "a.key"
ssl_protocols = ["TLSv1.3"]
keepalive_timeout = "5s"
[server.location."/"]
proxy_pass = "http://websocket"

[[server]]
listen = ["127.0.0.1:8080", "0.0.0.0:443 ssl"]
server_name = ["other.example.org", ""]
return = "301 https://$host$request_uri"
"""


def test_servers(folder: Path) -> None:
    config = load_text(folder, SERVERS)
    first, second = config.servers
    assert (first.label, second.label) == ("server[0]", "server[1]")
    assert first.listeners == (
        Listener("0.0.0.0", 443, ssl=True, default_server=True, backlog=1024),
        Listener("127.0.0.1", 8080))
    assert second.listeners == (Listener("127.0.0.1", 8080), Listener("0.0.0.0", 443, True))
    assert config.listeners == first.listeners  # each address once
    assert first.names == ("example.com", "*.example.com", "www.example.*",
                           "~^(?<app>.+)\\.example\\.net$")  # names lowercased, as nginx's
    assert (first.name, second.name) == ("example.com", "other.example.org")
    # TLS files: the server's own, else the top level's (nginx's http-level default)
    assert first.tls == TLSFiles(folder / "a.pem", folder / "a.key")
    assert second.tls == TLSFiles(folder / "cert.pem", folder / "key.pem")
    assert (first.ssl_protocols, second.ssl_protocols) == (("TLSv1.3",), ("TLSv1.2", "TLSv1.3"))
    assert (first.keepalive_timeout, second.keepalive_timeout) == (5.0, 30.0)
    assert first.return_ is None
    assert second.return_ == Return(301, "https://$host$request_uri")
    assert second.locations == ()  # a server that only redirects needs no location
    assert config.locations == first.locations
    assert describe(config) == ("wsgate.toml: ok: 2 listeners, 1 upstream (2 servers), "
                                "1 location, 2 virtual servers")


def test_servers_are_chosen_by_name(folder: Path) -> None:
    config = load_text(folder, SERVERS)
    first, second = config.servers
    routes = Routes(config)
    tls, plain = routes.site("0.0.0.0:443"), routes.site("127.0.0.1:8080")
    assert tls.default.config is first  # default_server, though another is listed
    assert plain.default.config is first  # no default_server: the first one

    def chosen(site: Site, host: bytes) -> VirtualServer:
        return site.names.find(host).value.config

    for site in (tls, plain):
        assert chosen(site, b"example.com") is first
        assert chosen(site, b"EXAMPLE.com.") is first
        assert chosen(site, b"api.example.com") is first
        assert chosen(site, b"www.example.de") is first
        assert chosen(site, b"other.example.org") is second
        assert chosen(site, b"") is second  # server_name "": requests without a Host
        assert chosen(site, b"unknown.test") is first
    found = plain.names.find(b"shop.example.net")
    assert found.value.config is first
    assert found.named == {"app": b"shop"}


def _write_certificate(ca: trustme.CA, folder: Path, name: str) -> None:
    leaf = ca.issue_cert(name)
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(folder / f"{name}.pem"), append=True)
    leaf.private_key_pem.write_to_path(str(folder / f"{name}.key"))


def _certificate_for(context: ssl.SSLContext, ca: trustme.CA, name: str) -> object:
    """The subjectAltName a client asking for ``name`` (SNI) is shown, in memory."""
    client = ssl.create_default_context()
    ca.configure_trust(client)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(to_client, to_server, server_hostname=name)
    tls_server = context.wrap_bio(server_in, server_out, server_side=True)
    done: set[ssl.SSLObject] = set()
    for _ in range(10):
        for side in (tls_client, tls_server):
            try:
                side.do_handshake()
                done.add(side)
            except ssl.SSLWantReadError:
                pass
        server_in.write(to_server.read())
        to_client.write(server_out.read())
        if len(done) == 2:
            break
    certificate = tls_client.getpeercert()
    assert certificate is not None
    return certificate["subjectAltName"]


def test_each_server_its_certificate(folder: Path) -> None:
    ca = trustme.CA()
    for name in ("a.example", "b.example"):
        _write_certificate(ca, folder, name)
    config = load_text(folder, UPSTREAM + """
[[server]]
listen = ["443 ssl default_server backlog=1024"]
server_name = "a.example"
ssl_certificate = "a.example.pem"
ssl_certificate_key = "a.example.key"
[server.location."/"]
proxy_pass = "http://websocket"

[[server]]
listen = "443 ssl"
server_name = "b.example"
ssl_certificate = "b.example.pem"
ssl_certificate_key = "b.example.key"
return = 204
""")
    assert config.listeners == (Listener("0.0.0.0", 443, True, True, 1024),)
    preflight.check(config)
    contexts = preflight.tls_context(config)
    assert list(contexts) == ["0.0.0.0:443"]
    context = contexts["0.0.0.0:443"]
    assert _certificate_for(context, ca, "a.example") == (("DNS", "a.example"),)
    assert _certificate_for(context, ca, "b.example") == (("DNS", "b.example"),)


TOP_DEFAULTS = """
listen = "80"
proxy_read_timeout = "5s"
proxy_set_header = { X-Top = "top" }
client_max_body_size = "2m"
error_page = ["404 /404.html"]
root = "www"
"""


def test_top_level_location_directives_are_defaults(folder: Path) -> None:
    config = load_text(folder, TOP_DEFAULTS + UPSTREAM + LOCATION + """
[location."/v1"]
proxy_pass = "http://websocket"
proxy_read_timeout = "300s"
proxy_http_version = "1.0"
""")
    slash, v1 = config.locations
    assert (slash.read_timeout, v1.read_timeout) == (5.0, 300.0)
    assert slash.set_headers == v1.set_headers == (*DEFAULT_SET_HEADERS, ("X-Top", "top"))
    assert slash.client_max_body_size == 2 << 20
    assert slash.error_pages == (ErrorPage((404,), None, "/404.html"),)
    assert slash.root == folder / "www"
    assert (slash.http_version, v1.http_version) == ("1.1", "1.0")
    assert config.servers[0].defaults.read_timeout == 5.0  # for the requests no location takes


def test_inheritance_from_top_to_server_to_location(folder: Path) -> None:
    config = load_text(folder, TOP_DEFAULTS.replace('listen = "80"\n', "") + UPSTREAM + """
[[server]]
listen = "80"
proxy_read_timeout = "7s"
[server.location."/"]
proxy_pass = "http://websocket"
[server.location."/a"]
proxy_pass = "http://websocket"
proxy_read_timeout = "9s"
proxy_set_header = { X-Location = "a" }
error_page = ["500 502 /50x.html"]
[server.location."/a".location."/a/b"]
proxy_pass = "http://websocket"
client_max_body_size = 0
[server.location."/a".location."/a/static/"]
index = ["index.htm"]

[[server]]
listen = "81"
proxy_set_header = { X-Server = "$server_name" }
[server.location."/"]
proxy_pass = "http://websocket"
""")
    first, second = config.servers
    slash, a = first.locations
    b, static = a.locations
    assert (b.key, b.label) == ("/a/b", 'server[0].location."/a".location."/a/b"')
    assert first.defaults.read_timeout == 7.0
    assert (slash.read_timeout, a.read_timeout, b.read_timeout) == (7.0, 9.0, 9.0)
    assert second.locations[0].read_timeout == 5.0
    # proxy_set_header: a level that sets any replaces the whole inherited list (nginx's
    # rule); wsgate's own defaults (Host, X-Real-IP...) stay under every list
    top = (*DEFAULT_SET_HEADERS, ("X-Top", "top"))
    assert first.defaults.set_headers == slash.set_headers == top
    assert a.set_headers == b.set_headers == (*DEFAULT_SET_HEADERS, ("X-Location", "a"))
    assert second.defaults.set_headers == second.locations[0].set_headers == (
        *DEFAULT_SET_HEADERS, ("X-Server", "$server_name"))
    # error_page: the same rule
    assert slash.error_pages == (ErrorPage((404,), None, "/404.html"),)
    assert a.error_pages == b.error_pages == (ErrorPage((500, 502), None, "/50x.html"),)
    assert (slash.client_max_body_size, b.client_max_body_size) == (2 << 20, None)
    # proxy_pass is not inherited: a nested location without one serves files from the root
    assert static.proxy_pass is None
    assert (static.root, static.index) == (folder / "www", ("index.htm",))


ROUTING = LISTEN + UPSTREAM + """
[location."/"]
proxy_pass = "http://websocket"
[location."= /x"]
return = "200 'exact'"
[location."^~ /static/"]
root = "/srv/www"
[location."~ ^/api/(\\\\d+)$"]
proxy_pass = "http://websocket"
[location."~* \\\\.(png|jpg)$"]
root = "/srv/images"
[location."@fallback"]
proxy_pass = "http://127.0.0.1:9000"
[location."/a b"]
return = 204
[location."/app/"]
proxy_pass = "http://websocket/"
[location."/app/".location."~ \\\\.js$"]
root = "/srv/js"
"""


def test_location_forms(folder: Path) -> None:
    config = load_text(folder, ROUTING)
    assert [location.key for location in config.locations] == [
        "/", "= /x", "^~ /static/", "~ ^/api/(\\d+)$", "~* \\.(png|jpg)$", "@fallback", "/a b",
        "/app/"]
    app = config.locations[-1]
    (js,) = app.locations
    assert (js.key, js.label) == ("~ \\.js$", 'location."/app/".location."~ \\\\.js$"')
    assert app.proxy_pass == ProxyPass("http://websocket/", "websocket", "/")
    assert config.locations[5].upstream == "127.0.0.1:9000"


def test_location_forms_route_as_nginx(folder: Path) -> None:
    config = load_text(folder, ROUTING)
    host = Routes(config).site("127.0.0.1:8080").default

    def served_by(uri: bytes) -> str | None:
        match = host.match(uri)
        return None if match is None else match.value.location.key

    assert served_by(b"/x") == "= /x"
    assert served_by(b"/x/y") == "/"
    assert served_by(b"/static/a.png") == "^~ /static/"  # ^~: no regex is tried
    assert served_by(b"/img/A.PNG") == "~* \\.(png|jpg)$"
    assert served_by(b"/img/A.PNG/") == "/"
    assert served_by(b"/app/main.js") == "~ \\.js$"  # nested in /app/
    assert served_by(b"/app/x") == "/app/"
    assert served_by(b"/a b") == "/a b"  # the decoded URI, as nginx's
    api = host.match(b"/api/42")
    assert api is not None
    assert api.value.location.key == "~ ^/api/(\\d+)$"
    assert api.captures == (b"42",)
    slash = host.match(b"/app")
    assert slash is not None
    assert (slash.value.location.key, slash.redirect) == ("/app/", True)  # auto_redirect
    fallback = host.named("@fallback")
    assert isinstance(fallback, Route)
    assert fallback is host.named("fallback")
    assert fallback.location.key == "@fallback"
    assert host.named("@nope") is None


def test_maps(folder: Path) -> None:
    config = load_text(folder, LISTEN + MAP + """
[map.backend]
source = "$host"
hostnames = true
default = "websocket"
[map.backend.values]
".example.com" = "websocket"
"~^v(\\\\d)\\\\.test$" = "v$1"
"x.test" = "$connection_upgrade"
""" + UPSTREAM + """
[location."/"]
proxy_pass = "http://$backend"
proxy_set_header = { X-Connection = "$connection_upgrade" }
""")
    assert config.maps == {
        "connection_upgrade": MapConfig("connection_upgrade", "$http_upgrade", "upgrade",
                                        False, (("", "close"),)),
        "backend": MapConfig("backend", "$host", "websocket", True, (
            (".example.com", "websocket"), ("~^v(\\d)\\.test$", "v$1"),
            ("x.test", "$connection_upgrade"))),
    }
    (location,) = config.locations
    assert location.proxy_pass == ProxyPass("http://$backend", None, None)
    assert location.proxy_pass.variable
    assert location.upstream is None  # the group is found per request
    assert location.set_headers[-1] == ("X-Connection", "$connection_upgrade")
    assert set(Routes(config).maps) == {"connection_upgrade", "backend"}


def test_a_map_value_may_use_its_regex_named_capture(folder: Path) -> None:
    """docs/configuration.md: a map's values may hold "regex captures ($1, named $name)",
    as nginx's do."""
    config = load_text(folder, LISTEN + """
[map.backend]
source = "$host"
values = { "~^(?<app>[a-z]+)\\\\.test$" = "$app" }
""" + UPSTREAM + '[location."/"]\nproxy_pass = "http://$backend"\n')
    assert config.maps["backend"].values == (("~^(?<app>[a-z]+)\\.test$", "$app"),)


def test_return_error_page_and_files(folder: Path) -> None:
    config = load_text(folder, LISTEN + UPSTREAM + """
[location."/old"]
return = "301 https://$host$request_uri"
[location."/gone"]
return = 410
[location."/hello"]
return = "200 hello, $remote_addr"
[location."/elsewhere"]
return = "https://example.com/"
[location."/"]
root = "www"
index = ["index.htm", "index.html"]
try_files = ["$uri", "$uri/", "@fallback"]
error_page = ["404 /404.html", "500 502 503 504 /50x.html", "403 =200 /empty.gif",
              "418 = @fallback", "410 https://example.com/gone"]
default_type = "application/octet-stream"
[location."@fallback"]
proxy_pass = "http://websocket"
""")
    old, gone, hello, elsewhere, files, fallback = config.locations
    assert old.return_ == Return(301, "https://$host$request_uri")
    assert gone.return_ == Return(410, None)
    assert hello.return_ == Return(200, "hello, $remote_addr")
    assert elsewhere.return_ == Return(302, "https://example.com/")
    assert (files.proxy_pass, files.return_) == (None, None)
    assert files.root == folder / "www"
    assert files.index == ("index.htm", "index.html")
    assert files.try_files == ("$uri", "$uri/", "@fallback")
    assert files.error_pages == (
        ErrorPage((404,), None, "/404.html"), ErrorPage((500, 502, 503, 504), None, "/50x.html"),
        ErrorPage((403,), 200, "/empty.gif"), ErrorPage((418,), 0, "@fallback"),
        ErrorPage((410,), None, "https://example.com/gone"))
    assert files.default_type == "application/octet-stream"
    assert (fallback.try_files, fallback.root) == ((), None)  # try_files is not inherited


def test_a_one_server_file_may_only_return(folder: Path) -> None:
    config = load_text(folder, LISTEN + 'return = "444"\n')
    (server,) = config.servers
    assert (server.return_, server.locations) == (Return(444, None), ())


def test_proxy_pass_with_a_uri_part(folder: Path) -> None:
    config = load_text(folder, LISTEN + UPSTREAM + """
[location."/"]
proxy_pass = "http://websocket/"
[location."/api/"]
proxy_pass = "http://127.0.0.1:9000/v2/"
[location."~ ^/u/(.*)$"]
proxy_pass = "http://websocket/users/$1"
""")
    assert [location.proxy_pass for location in config.locations] == [
        ProxyPass("http://websocket/", "websocket", "/"),
        ProxyPass("http://127.0.0.1:9000/v2/", "127.0.0.1:9000", "/v2/"),
        ProxyPass("http://websocket/users/$1", "websocket", "/users/$1"),  # variables: allowed
    ]


def test_a_server_level_proxy_pass_is_not_ignored(folder: Path) -> None:
    """nginx: "proxy_pass" directive is not allowed here; dropping it would answer 404."""
    with pytest.raises(UsageError, match=r"^wsgate\.toml: server\[0\]\.proxy_pass: "):
        load_text(folder, UPSTREAM + '[[server]]\nlisten = "80"\nproxy_pass = "http://websocket"\n')


WHOLE = '[upstream.websocket]\nserver = "127.0.0.1:8010"\n[[server]]\nlisten = "80"\n'


@pytest.mark.parametrize(("text", "message"), [
    (WHOLE + '[server.location."/a"]\nreturn = 204\n[server.location."/a".location."/b"]\n'
     "return = 204\n",
     'wsgate.toml: server[0].location."/a".location."/b": location "/b" is outside location '
     '"/a"'),
    (WHOLE + '[server.location."/a"]\nreturn = 204\n[server.location."/a".location."@b"]\n'
     "return = 204\n",
     'wsgate.toml: server[0].location."/a".location."@b": named location "@b" can be on the '
     "server level only"),
    (WHOLE + '[server.location."= /a"]\nreturn = 204\n[server.location."= /a".location."/a/b"]\n'
     "return = 204\n",
     'wsgate.toml: server[0].location."= /a".location."/a/b": location "/a/b" cannot be inside '
     'the exact location "/a"'),
    (WHOLE + '[server.location."/a"]\nreturn = 204\n[server.location." /a"]\nreturn = 204\n',
     'wsgate.toml: server[0].location." /a": duplicate location "/a"'),
    (WHOLE.replace('"80"', '"80 default_server"') + 'return = "204"\n'
     '[[server]]\nlisten = "80 default"\nreturn = "204"\n',
     "wsgate.toml: server[1]: a duplicate default server for this address"),
])
def test_whole_config_mistakes(folder: Path, text: str, message: str) -> None:
    config = load_text(folder, text)
    with pytest.raises(ConfigError) as caught:
        configload.ready(config)
    assert str(caught.value) == message


# --- mistakes in a file, each with its exact message ----------------------------------------

BAD = [
    # the file itself
    ("listen = \n", "wsgate.toml: line 1, column 10: invalid TOML: invalid value"),
    ('listen = "80"\n\n[location\n',
     "wsgate.toml: line 3, column 10: invalid TOML: expected ']' at the end of a table "
     "declaration"),
    ('listen = "80', "wsgate.toml: end of file: invalid TOML: unterminated string"),
    # unknown keys
    ("worker_process = 2\n" + MINIMAL,
     "wsgate.toml: worker_process: unknown key (did you mean worker_processes?)"),
    # (every key once: "return" is both a server's and a location's key)
    ("zzz = 1\n" + MINIMAL,
     "wsgate.toml: zzz: unknown key (known: worker_processes, user, trusted_proxies, "
     "client_body_timeout, worker_shutdown_timeout, status_listen, pid, access_log, "
     "error_log, types, upstream, map, log_format, server, location, listen, server_name, "
     "ssl_certificate, ssl_certificate_key, ssl_protocols, ssl_ciphers, return, "
     "client_header_timeout, large_client_header_buffers, keepalive_timeout, server_tokens, "
     "proxy_http_version, proxy_read_timeout, proxy_send_timeout, "
     "proxy_connect_timeout, proxy_next_upstream, proxy_next_upstream_tries, "
     "proxy_next_upstream_timeout, proxy_set_header, proxy_redirect, root, index, "
     "error_page, client_max_body_size, default_type)"),
    # nginx: "proxy_pass" directive is not allowed here (http and server contexts)
    ('proxy_pass = "http://websocket"\n' + LISTEN + UPSTREAM,
     'wsgate.toml: proxy_pass: unknown key here: it belongs in a [location."/..."] table'),
    (UPSTREAM + '[[server]]\nlisten = "80"\n[server.location."/"]\nproxy_pass = "websocket"\n'
     'server_name = "a"\n',
     'wsgate.toml: server[0].location."/".server_name: unknown key here: it belongs in a '
     "[[server]] table, or at the top of a file without [[server]]"),
    (MINIMAL + 'proxy_http_version = "2"\n',
     'wsgate.toml: location."/".proxy_http_version: must be one of "1.0", "1.1", got "2"'),
    (MINIMAL + 'proxy_read_timout = "1s"\n',
     'wsgate.toml: location."/".proxy_read_timout: unknown key (did you mean '
     "proxy_read_timeout?)"),
    (MINIMAL + "keepalive_timeout = 5\n",
     'wsgate.toml: location."/".keepalive_timeout: unknown key here: it belongs in a '
     "[[server]] table, or at the top of a file without [[server]]"),
    (LISTEN + '[upstream.websocket]\nservers = ["a:1"]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.servers: unknown key (did you mean server?)"),
    (LISTEN + '[upstream.websocket]\nip_hash = true\nserver = ["a:1"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.ip_hash: unknown key: write balance = "ip_hash" in the '
     "[upstream.NAME] table"),
    (LISTEN + '[access_log]\nfile = "x"\n' + UPSTREAM + LOCATION,
     "wsgate.toml: access_log.file: unknown key (known: path, format)"),
    # listen
    (UPSTREAM + LOCATION, 'wsgate.toml: listen: required (e.g. listen = ["127.0.0.1:8080"])'),
    ("listen = []\n" + UPSTREAM + LOCATION,
     'wsgate.toml: listen: must list at least one address (e.g. "127.0.0.1:8080")'),
    ('listen = ["127.0.0.1:8080", "127.0.0.1:99999"]\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen[1]: port must be a number from 0 to 65535, got "99999"'),
    ('listen = "localhost"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: missing port (write e.g. "localhost:8080")'),
    ('listen = "80 http2"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: unknown parameter "http2" (known: "ssl", "default_server", '
     '"backlog=N")'),
    ('listen = "80 backlog"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: backlog needs a value ("backlog=1024")'),
    ('listen = "80 backlog=0"\n' + UPSTREAM + LOCATION,
     "wsgate.toml: listen: backlog must be a positive integer, got 0"),
    ('listen = "80 ssl=on"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: ssl takes no value, got "ssl=on"'),
    ('listen = "80 default default_server"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: "default_server" is given twice'),
    ('listen = "80 ssl ssl"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: "ssl" is given twice'),
    ('listen = "::1:8080"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: an IPv6 address needs brackets, e.g. "[::1]:8010"'),
    ('listen = "[::g]:8080"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: "::g" is not an IPv6 address'),
    ('listen = "300.1.1.1:80"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: "300.1.1.1" is not an IPv4 address'),
    ('listen = "bad_host!:80"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: listen: "bad_host!" is not a valid host name'),
    ('listen = ["80", ":80"]\n' + UPSTREAM + LOCATION,
     "wsgate.toml: listen[1]: 0.0.0.0:80 is listed twice"),
    ("listen = true\n" + UPSTREAM + LOCATION,
     'wsgate.toml: listen: must be an address like "127.0.0.1:8080", ":8080" or '
     '"0.0.0.0:443 ssl", got true'),
    # worker_processes
    ("worker_processes = 0\n" + MINIMAL,
     'wsgate.toml: worker_processes: must be "auto" or a positive integer, got 0'),
    ('worker_processes = "many"\n' + MINIMAL,
     'wsgate.toml: worker_processes: must be "auto" or a positive integer, got "many"'),
    ("worker_processes = true\n" + MINIMAL,
     'wsgate.toml: worker_processes: must be "auto" or a positive integer, got true'),
    # TLS
    ('listen = "0.0.0.0:443 ssl"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: ssl_certificate: required because listen "0.0.0.0:443 ssl" uses ssl'),
    ('listen = ["80", "0.0.0.0:443 ssl"]\nssl_certificate = "cert.pem"\n' + UPSTREAM + LOCATION,
     'wsgate.toml: ssl_certificate_key: required because listen "0.0.0.0:443 ssl" uses ssl'),
    ('ssl_certificate = "cert.pem"\n' + MINIMAL,
     'wsgate.toml: ssl_certificate: no listen uses ssl (add " ssl", e.g. "0.0.0.0:443 ssl")'),
    ('ssl_certificate_key = "key.pem"\n' + MINIMAL,
     'wsgate.toml: ssl_certificate_key: no listen uses ssl (add " ssl", e.g. '
     '"0.0.0.0:443 ssl")'),
    ('ssl_certificate = ""\n' + MINIMAL,
     'wsgate.toml: ssl_certificate: must be a non-empty string, got ""'),
    # error_log
    ('error_log = "stderr loud"\n' + MINIMAL,
     'wsgate.toml: error_log: must be one of "debug", "info", "notice", "warn", "error", '
     '"crit", "alert", "emerg", got "loud"'),
    ('error_log = "a b c"\n' + MINIMAL,
     'wsgate.toml: error_log: must be "FILE [LEVEL]" like "stderr" or "logs/error.log warn", '
     'got "a b c"'),
    ('error_log = "stdout"\n' + MINIMAL,
     'wsgate.toml: error_log: stdout is not a place for the error log: write "stderr" or a '
     "file"),
    ('error_log = { level = "warning" }\n' + MINIMAL,
     'wsgate.toml: error_log.level: must be one of "debug", "info", "notice", "warn", "error", '
     '"crit", "alert", "emerg", got "warning" (did you mean "warn"?)'),
    ('error_log = { file = "x" }\n' + MINIMAL,
     "wsgate.toml: error_log.file: unknown key (known: path, level)"),
    ("error_log = 3\n" + MINIMAL,
     "wsgate.toml: error_log: must be a non-empty string, got 3"),
    # trusted_proxies
    ('trusted_proxies = ["127.0.0.1", "10.0.0.1/8"]\n' + MINIMAL,
     'wsgate.toml: trusted_proxies[1]: "10.0.0.1/8" has host bits set (did you mean '
     '"10.0.0.0/8"?)'),
    ('trusted_proxies = ["localhost"]\n' + MINIMAL,
     'wsgate.toml: trusted_proxies[0]: must be an address or CIDR like "10.0.0.0/8", got '
     '"localhost"'),
    ("trusted_proxies = 10\n" + MINIMAL,
     'wsgate.toml: trusted_proxies: must be an address or CIDR like "10.0.0.0/8", got 10'),
    # durations and sizes
    ('client_header_timeout = "10 seconds"\n' + MINIMAL,
     'wsgate.toml: client_header_timeout: must be a duration like "60s", "5m" or "500ms", '
     'got "10 seconds"'),
    ('client_header_timeout = "0s"\n' + MINIMAL,
     'wsgate.toml: client_header_timeout: must be more than 0, got "0s"'),
    ("keepalive_timeout = -1\n" + MINIMAL,
     'wsgate.toml: keepalive_timeout: must be a duration like "60s", "5m" or "500ms", got -1'),
    ("worker_shutdown_timeout = inf\n" + MINIMAL,
     'wsgate.toml: worker_shutdown_timeout: must be a duration like "60s", "5m" or "500ms", '
     "got inf"),
    ('client_max_body_size = "1mb"\n' + MINIMAL,
     'wsgate.toml: client_max_body_size: must be a size like "8k", "1m" or "1g", got "1mb"'),
    ("client_max_body_size = -1\n" + MINIMAL,
     'wsgate.toml: client_max_body_size: must be a size like "8k", "1m" or "1g", got -1'),
    ('large_client_header_buffers = "8k"\n' + MINIMAL,
     'wsgate.toml: large_client_header_buffers: must be "NUMBER SIZE" like "4 8k", got "8k"'),
    ('large_client_header_buffers = "0 8k"\n' + MINIMAL,
     'wsgate.toml: large_client_header_buffers: must be "NUMBER SIZE" like "4 8k", got '
     '"0 8k"'),
    ('large_client_header_buffers = "4 0"\n' + MINIMAL,
     'wsgate.toml: large_client_header_buffers: must be "NUMBER SIZE" like "4 8k", got "4 0"'),
    # access_log
    ('access_log = { format = "xml" }\n' + MINIMAL,
     'wsgate.toml: access_log.format: unknown log format "xml" (known: combined, json)'),
    ("access_log = 5\n" + MINIMAL, "wsgate.toml: access_log: must be a table, got 5"),
    ('access_log = ""\n' + MINIMAL,
     'wsgate.toml: access_log: must be a non-empty string, got ""'),
    # upstreams
    (LISTEN + "upstream = 5\n" + LOCATION,
     "wsgate.toml: upstream: must be a table of [upstream.NAME] tables, got 5"),
    (LISTEN + '[upstream."my backend"]\nserver = "a:1"\n' + LOCATION,
     'wsgate.toml: upstream."my backend": an upstream name is letters, digits, ".", "-" and '
     '"_"'),
    (LISTEN + '[upstream]\nwebsocket = "a:1"\n' + LOCATION,
     'wsgate.toml: upstream.websocket: must be a table, got "a:1"'),
    (LISTEN + '[upstream.websocket]\nbalance = "random"\nserver = "a:1"\n' + LOCATION,
     'wsgate.toml: upstream.websocket.balance: must be one of "round_robin", "least_conn", '
     '"ip_hash", "hash", got "random"'),
    (LISTEN + '[upstream.websocket]\nbalance = "least-conn"\nserver = "a:1"\n' + LOCATION,
     'wsgate.toml: upstream.websocket.balance: must be one of "round_robin", "least_conn", '
     '"ip_hash", "hash", got "least-conn" (did you mean "least_conn"?)'),
    (LISTEN + '[upstream.websocket]\nbalance = "hash"\nserver = "a:1"\n' + LOCATION,
     'wsgate.toml: upstream.websocket.hash: required because balance = "hash" (e.g. hash = '
     '"$remote_addr")'),
    (LISTEN + '[upstream.websocket]\nhash = "$host"\nserver = "a:1"\n' + LOCATION,
     'wsgate.toml: upstream.websocket.hash: only with balance = "hash"'),
    (LISTEN + '[upstream.websocket]\nbalance = "ip_hash"\nconsistent = true\nserver = "a:1"\n'
     + LOCATION, 'wsgate.toml: upstream.websocket.consistent: only with balance = "hash"'),
    (LISTEN + '[upstream.websocket]\nbalance = "hash"\nhash = "client"\nserver = "a:1"\n'
     + LOCATION,
     "wsgate.toml: upstream.websocket.hash: the key has no $variable, so every client would "
     "go to the same server"),
    (LISTEN + '[upstream.websocket]\nbalance = "hash"\nhash = "$remote_adr"\nserver = "a:1"\n'
     + LOCATION,
     "wsgate.toml: upstream.websocket.hash: unknown variable $remote_adr (did you mean "
     "$remote_addr?)"),
    (LISTEN + '[upstream.websocket]\nbalance = "hash"\nhash = "$x"\nconsistent = 1\n'
     'server = "a:1"\n' + LOCATION,
     "wsgate.toml: upstream.websocket.hash: unknown variable $x (known: $args, "
     "$binary_remote_addr, $content_length, $content_type, $document_root, $document_uri, "
     "$host, $hostname, $http_host, $https, $is_args, $proxy_add_x_forwarded_for, "
     "$proxy_host, $proxy_x_forwarded_proto, $query_string, $realpath_root, $remote_addr, "
     "$remote_port, $request_filename, $request_id, $request_method, $request_uri, $scheme, "
     "$server_addr, $server_name, $server_port, $server_protocol, $uri, $http_NAME)"),
    (LISTEN + '[upstream.websocket]\nbalance = "hash"\nhash = "$host"\nconsistent = 1\n'
     'server = "a:1"\n' + LOCATION,
     "wsgate.toml: upstream.websocket.consistent: must be true or false, got 1"),
    (LISTEN + '[upstream.websocket]\nkeepalive = -1\nserver = "a:1"\n' + LOCATION,
     "wsgate.toml: upstream.websocket.keepalive: must be a non-negative integer, got -1"),
    (LISTEN + "[upstream.websocket]\nkeepalive = 1\n" + LOCATION,
     'wsgate.toml: upstream.websocket.server: required: at least one server (e.g. server = '
     '["localhost:8010"])'),
    (LISTEN + "[upstream.websocket]\nserver = []\n" + LOCATION,
     'wsgate.toml: upstream.websocket.server: must list at least one server (e.g. '
     '"localhost:8010")'),
    (LISTEN + '[upstream.websocket]\nserver = ["localhost:8010", "localhost:8011 weight=two"]\n'
     + LOCATION,
     'wsgate.toml: upstream.websocket.server[1]: weight must be a positive integer, got "two"'),
    (LISTEN + '[upstream.websocket]\nserver = ["localhost:8010 weight=0"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: weight must be a positive integer, got 0'),
    (LISTEN + '[upstream.websocket]\nserver = ["localhost"]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.server[0]: missing port"),
    (LISTEN + '[upstream.websocket]\nserver = [":8010"]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.server[0]: missing host"),
    (LISTEN + '[upstream.websocket]\nserver = ["localhost:0"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: port must be a number from 1 to 65535, '
     'got "0"'),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1 weigth=2"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: unknown parameter "weigth=2" (did you mean '
     "weight?)"),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1 resolve"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: unknown parameter "resolve" (known: weight, '
     "max_fails, fail_timeout, backup, down, max_conns)"),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1 backup=yes"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: backup takes no value, got "backup=yes"'),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1 weight"]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.server[0]: weight needs a value (weight=...)"),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1 weight=1 weight=2"]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.server[0]: weight is given twice"),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1 max_fails=-1"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: max_fails must be a non-negative integer, '
     'got "-1"'),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1 fail_timeout=soon"]\n' + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: fail_timeout must be a duration like "60s", '
     '"5m" or "500ms", got "soon"'),
    (LISTEN + '[upstream.websocket]\nserver = ["a:1", "A:1"]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.server[1]: A:1 is listed twice (use weight=N for a "
     "bigger share)"),
    (LISTEN + '[upstream.websocket]\nbalance = "ip_hash"\nserver = ["a:1", "b:1 backup"]\n'
     + LOCATION,
     'wsgate.toml: upstream.websocket.server[1]: backup cannot be used with balance = '
     '"ip_hash"'),
    (LISTEN + "[upstream.websocket]\nserver = [{ weight = 2 }]\n" + LOCATION,
     'wsgate.toml: upstream.websocket.server[0]: missing address (e.g. address = '
     '"localhost:8010")'),
    (LISTEN + '[upstream.websocket]\nserver = [{ address = "a:1", weight = "two" }]\n'
     + LOCATION,
     'wsgate.toml: upstream.websocket.server[0].weight: must be a positive integer, got "two"'),
    (LISTEN + '[upstream.websocket]\nserver = [{ address = "a:1", backup = "yes" }]\n'
     + LOCATION,
     'wsgate.toml: upstream.websocket.server[0].backup: must be true or false, got "yes"'),
    (LISTEN + '[upstream.websocket]\nserver = [{ address = "a:1", wieght = 2 }]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.server[0].wieght: unknown key (did you mean weight?)"),
    (LISTEN + '[upstream.websocket]\nserver = [{ address = "a" }]\n' + LOCATION,
     "wsgate.toml: upstream.websocket.server[0].address: missing port"),
    (LISTEN + "[upstream.websocket]\nserver = [5]\n" + LOCATION,
     "wsgate.toml: upstream.websocket.server[0]: must be a table, got 5"),
    # locations
    (LISTEN + UPSTREAM,
     'wsgate.toml: location: at least one is required, e.g. [location."/"] with proxy_pass = '
     '"http://backend"'),
    (LISTEN + UPSTREAM + '[location.api]\nproxy_pass = "websocket"\n',
     'wsgate.toml: location.api: a location prefix starts with "/", got "api"'),
    (LISTEN + UPSTREAM + '[location]\nproxy_pass = "websocket"\n',
     'wsgate.toml: location.proxy_pass: a location is a path like "/" with a table, e.g. '
     '[location."/"] with proxy_pass = "http://backend"'),
    (LISTEN + UPSTREAM + '[location."/a\\u0001"]\nproxy_pass = "websocket"\n',
     "wsgate.toml: location.\"/a\\u0001\": location '/a\\x01' has a control character"),
    (LISTEN + UPSTREAM + '[location."== /a"]\nproxy_pass = "websocket"\n',
     'wsgate.toml: location."== /a": invalid location modifier "=="'),
    (LISTEN + UPSTREAM + '[location."~ ("]\nproxy_pass = "websocket"\n',
     'wsgate.toml: location."~ (": pcre2_compile() failed: missing ), unterminated '
     'subpattern in "("'),
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_read_timeout = "1s"\n',
     'wsgate.toml: location."/": needs a handler: proxy_pass, return, or root (e.g. '
     'proxy_pass = "http://backend")'),
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_pass = "http://websockt"\n',
     'wsgate.toml: location."/".proxy_pass: no upstream named "websockt" (defined: websocket)'),
    (LISTEN + '[location."/"]\nproxy_pass = "backend"\n',
     'wsgate.toml: location."/".proxy_pass: no upstream named "backend" (defined: none)'),
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_pass = "http://127.0.0.1"\n',
     'wsgate.toml: location."/".proxy_pass: no upstream named "127.0.0.1" (defined: '
     'websocket); a single server needs its port, e.g. "127.0.0.1:80"'),
    (LISTEN + UPSTREAM + '[location."/a"]\nproxy_pass = "1.2.3.4:5"\n'
     '[location."/b"]\nproxy_pass = "nope"\n',
     'wsgate.toml: location."/b".proxy_pass: no upstream named "nope" (defined: websocket)'),
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_pass = "https://websocket"\n',
     'wsgate.toml: location."/".proxy_pass: https:// is not supported: write "http://" '
     "(WebSocket upgrades ride on it)"),
    (LISTEN + UPSTREAM + '[location."~ ^/api/"]\nproxy_pass = "http://websocket/v2/"\n',
     'wsgate.toml: location."~ ^/api/".proxy_pass: proxy_pass cannot have a URI part in a '
     "location given by a regular expression or in a named location (as in nginx)"),
    (LISTEN + UPSTREAM + '[location."@fallback"]\nproxy_pass = "http://websocket/"\n',
     'wsgate.toml: location."@fallback".proxy_pass: proxy_pass cannot have a URI part in a '
     "location given by a regular expression or in a named location (as in nginx)"),
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_pass = "http://[::1]"\n',
     'wsgate.toml: location."/".proxy_pass: missing port'),
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_pass = 8010\n',
     'wsgate.toml: location."/".proxy_pass: must be a non-empty string, got 8010'),
    (MINIMAL + "proxy_read_timeout = 0\n",
     'wsgate.toml: location."/".proxy_read_timeout: must be more than 0, got 0'),
    (MINIMAL + 'proxy_connect_timeout = "fast"\n',
     'wsgate.toml: location."/".proxy_connect_timeout: must be a duration like "60s", "5m" '
     'or "500ms", got "fast"'),
    (MINIMAL + "proxy_next_upstream_tries = -1\n",
     'wsgate.toml: location."/".proxy_next_upstream_tries: must be a non-negative integer, '
     "got -1"),
    (MINIMAL + 'proxy_next_upstream_timeout = "x"\n',
     'wsgate.toml: location."/".proxy_next_upstream_timeout: must be a duration like "60s", '
     '"5m" or "500ms", got "x"'),
    (MINIMAL + 'proxy_set_header = "Host $host"\n',
     'wsgate.toml: location."/".proxy_set_header: must be a table like { Host = "$host" }, '
     'got "Host $host"'),
    (MINIMAL + 'proxy_set_header = { X-Real-IP = "$remote_adr" }\n',
     'wsgate.toml: location."/".proxy_set_header.X-Real-IP: unknown variable $remote_adr '
     "(did you mean $remote_addr?)"),
    (MINIMAL + 'proxy_set_header = { X-Up = "$http_X_Up" }\n',
     'wsgate.toml: location."/".proxy_set_header.X-Up: header variables are lowercase: '
     "$http_x_up, not $http_X_Up"),
    (MINIMAL + 'proxy_set_header = { X-Price = "5$" }\n',
     'wsgate.toml: location."/".proxy_set_header.X-Price: a "$" must start a variable like '
     '$host, got "5$"'),
    (MINIMAL + 'proxy_set_header = { X-Evil = "a\\r\\nInjected: 1" }\n',
     'wsgate.toml: location."/".proxy_set_header.X-Evil: must not contain CR, LF or NUL'),
    (MINIMAL + 'proxy_set_header = { "Bad Name" = "x" }\n',
     'wsgate.toml: location."/".proxy_set_header."Bad Name": not a valid header name'),
    (MINIMAL + 'proxy_set_header = { Upgrade = "$http_upgrade" }\n',
     'wsgate.toml: location."/".proxy_set_header.Upgrade: wsgate sets this header itself; '
     "remove this key"),
    (MINIMAL + 'proxy_set_header = { Sec-WebSocket-Key = "x" }\n',
     'wsgate.toml: location."/".proxy_set_header.Sec-WebSocket-Key: wsgate sets this header '
     "itself; remove this key"),
    (MINIMAL + 'proxy_set_header = { Host = "" }\n',
     'wsgate.toml: location."/".proxy_set_header.Host: Host cannot be removed: HTTP/1.1 '
     "requires it"),
    (MINIMAL + 'proxy_set_header = { X-A = "1", x-a = "2" }\n',
     'wsgate.toml: location."/".proxy_set_header.x-a: is set twice (header names ignore case)'),
    (MINIMAL + "proxy_set_header = { X-A = 1 }\n",
     'wsgate.toml: location."/".proxy_set_header.X-A: must be a string (or "" to not send the '
     "header), got 1"),
    # servers
    (LISTEN + UPSTREAM + SERVER,
     "wsgate.toml: listen: with [[server]] tables, this belongs in each server"),
    ('server_name = "example.com"\n' + UPSTREAM + SERVER,
     "wsgate.toml: server_name: with [[server]] tables, this belongs in each server"),
    ("server = 3\n" + UPSTREAM, "wsgate.toml: server: must be an array of tables: [[server]]"),
    ("server = [3]\n" + UPSTREAM, "wsgate.toml: server[0]: must be a table, got 3"),
    (UPSTREAM + '[[server]]\n[server.location."/"]\nproxy_pass = "websocket"\n',
     'wsgate.toml: server[0].listen: required (e.g. listen = ["127.0.0.1:8080"])'),
    (UPSTREAM + SERVER + '[[server]]\nlisten = "81"\nworker_processes = 2\n',
     "wsgate.toml: server[1].worker_processes: unknown key here: it belongs at the top of "
     "the file, before any [table]"),
    (UPSTREAM + '[[server]]\nlisten = "443 ssl"\n[server.location."/"]\n'
     'proxy_pass = "websocket"\n',
     'wsgate.toml: server[0].ssl_certificate: required because listen "443 ssl" uses ssl'),
    (UPSTREAM + '[[server]]\nlisten = "80"\nssl_certificate = "cert.pem"\n'
     'ssl_certificate_key = "key.pem"\n[server.location."/"]\nproxy_pass = "websocket"\n',
     'wsgate.toml: server[0].ssl_certificate: no listen of this server uses ssl (add " ssl", '
     'e.g. "0.0.0.0:443 ssl")'),
    (UPSTREAM + '[[server]]\nlisten = "80"\nserver_name = "a b"\n',
     'wsgate.toml: server[0].server_name: "a b" is not a server name (letters, digits, ., -, '
     "a leading or trailing *)"),
    (UPSTREAM + '[[server]]\nlisten = "80"\nserver_name = ["a", "w*.example.com"]\n',
     'wsgate.toml: server[0].server_name[1]: invalid wildcard "w*.example.com": "*" is a '
     "whole first or last part"),
    (UPSTREAM + '[[server]]\nlisten = "80"\n[server.location."/"]\nproxy_read_timeout = "1s"\n',
     'wsgate.toml: server[0].location."/": needs a handler: proxy_pass, return, or root (e.g. '
     'proxy_pass = "http://backend")'),
    (UPSTREAM + '[[server]]\nlisten = "80"\n[server.location."/"]\nproxy_pass = "websocket"\n'
     '[server.location."/".location."/x"]\nproxy_read_timeout = "1s"\n',
     'wsgate.toml: server[0].location."/".location."/x": needs a handler: proxy_pass, return, '
     'or root (e.g. proxy_pass = "http://backend")'),
    (UPSTREAM + '[[server]]\nlisten = "80"\n[server.location."~ ^/api/(\\\\d+)$"]\n'
     'proxy_pass = "http://websocket/v2/"\n',
     'wsgate.toml: server[0].location."~ ^/api/(\\\\d+)$".proxy_pass: proxy_pass cannot have a '
     "URI part in a location given by a regular expression or in a named location (as in "
     "nginx)"),
    (LISTEN + UPSTREAM + '[location."/"]\ntry_files = ["$uri", "=404"]\n',
     'wsgate.toml: location."/".try_files: try_files needs a root (here or above)'),
    # a server's return, locations' return, error_page, try_files
    (LISTEN + 'return = "moved"\n',
     'wsgate.toml: return: must be "CODE [TEXT]" or a URL, got "moved" (e.g. "301 '
     'https://$host$request_uri")'),
    (LISTEN + UPSTREAM + '[location."/"]\nreturn = "301 https://$hots$request_uri"\n',
     'wsgate.toml: location."/".return: unknown variable $hots (did you mean $host?)'),
    (MINIMAL + 'error_page = ["404"]\n',
     'wsgate.toml: location."/".error_page[0]: must be "CODE... [=RESPONSE] URI" like '
     '"500 502 /50x.html", got "404"'),
    (MINIMAL + 'error_page = ["404 /404.html", "200 /ok.html"]\n',
     'wsgate.toml: location."/".error_page[1]: value "200" must be between 300 and 599'),
    (MINIMAL + 'error_page = ["404 404.html"]\n',
     'wsgate.toml: location."/".error_page[0]: the page must be a URI ("/50x.html"), "@name" '
     'or a URL, got "404.html"'),
    (LISTEN + UPSTREAM + '[location."/"]\nroot = "/srv"\ntry_files = ["$uri", "=40x"]\n',
     'wsgate.toml: location."/".try_files[1]: invalid code "=40x"'),
    # maps
    (LISTEN + MAP + UPSTREAM + LOCATION
     + 'proxy_set_header = { X-Connection = "$conection_upgrade" }\n',
     'wsgate.toml: location."/".proxy_set_header.X-Connection: unknown variable '
     "$conection_upgrade (did you mean $connection_upgrade?)"),
    (MINIMAL + 'proxy_set_header = { X-Connection = "$connection_upgrade" }\n',
     'wsgate.toml: location."/".proxy_set_header.X-Connection: unknown variable '
     "$connection_upgrade (known: $args, $binary_remote_addr, $content_length, $content_type, "
     "$document_root, $document_uri, $host, $hostname, $http_host, $https, $is_args, "
     "$proxy_add_x_forwarded_for, $proxy_host, $proxy_x_forwarded_proto, $query_string, "
     "$realpath_root, $remote_addr, $remote_port, $request_filename, $request_id, "
     "$request_method, $request_uri, $scheme, $server_addr, $server_name, $server_port, "
     "$server_protocol, $uri, $http_NAME)"),
    (LISTEN + "[map.x]\nvalues = {}\n",
     'wsgate.toml: map.x: missing source (e.g. source = "$http_upgrade")'),
    (LISTEN + '[map.host]\nsource = "$uri"\n',
     "wsgate.toml: map.host: $host is a built-in variable: choose another name"),
    (LISTEN + '[map.x]\nsource = "$uri"\nvalues = { "/a" = "$nope" }\n',
     'wsgate.toml: map.x.values."/a": unknown variable $nope (known: $args, '
     "$binary_remote_addr, $content_length, $content_type, $document_root, $document_uri, "
     "$host, $hostname, $http_host, $https, $is_args, $proxy_add_x_forwarded_for, "
     "$proxy_host, $proxy_x_forwarded_proto, $query_string, $realpath_root, $remote_addr, "
     "$remote_port, $request_filename, $request_id, $request_method, $request_uri, $scheme, "
     "$server_addr, $server_name, $server_port, $server_protocol, $uri, $x, $http_NAME)"),
    (LISTEN + '[map.x]\nsource = "$uri"\nvalue = {}\n',
     "wsgate.toml: map.x.value: unknown key (did you mean values?)"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_config(folder: Path, text: str, message: str) -> None:
    assert error_of(folder, text) == message.replace("{folder}", str(folder))


def test_cannot_read(folder: Path) -> None:
    with pytest.raises(UsageError, match=r"^missing\.toml: cannot read: No such file or "
                                         r"directory$"):
        load("missing.toml")
    with pytest.raises(UsageError, match=r"^\.: cannot read: Is a directory$"):
        load(".")


def test_not_utf8(folder: Path) -> None:
    (folder / "wsgate.toml").write_bytes(b'listen = "80"\nx = "\xff"\n')
    with pytest.raises(UsageError) as caught:
        load("wsgate.toml")
    assert str(caught.value) == "wsgate.toml: line 2: invalid TOML: not UTF-8 text"


def test_message_names_the_file_as_given(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "proxy.toml").write_text('listen = "0 http2"\n')
    with pytest.raises(UsageError) as caught:
        load(Path("sub/proxy.toml"))
    assert str(caught.value).startswith('sub/proxy.toml: listen: unknown parameter "http2"')


# --- flags ---------------------------------------------------------------------------------


def test_flags_simple_case() -> None:
    config = from_flags({"--listen": [":8080"],
                         "--upstream": ["127.0.0.1:8010", "127.0.0.1:8011"]})
    assert config == ProxyConfig(
        upstreams={"backend": UpstreamConfig("backend", (
            ServerConfig("127.0.0.1", 8010), ServerConfig("127.0.0.1", 8011)))},
        servers=(VirtualServer(
            listeners=(Listener("0.0.0.0", 8080),),
            locations=(Location("/", TO_BACKEND, label="--upstream"),)),),
        source="command line",
    )
    assert config.locations[0].upstream == "backend"
    assert describe(config) == ("command line: ok: 1 listener, 1 upstream (2 servers), "
                                "1 location")


def test_flags_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = from_flags({
        "--listen": ["127.0.0.1:0", "[::1]:8443 ssl"], "--upstream": ["a:1 weight=3", "b:2 backup"],
        "--balance": "least-conn", "--read-timeout": "300s", "--workers": "3",
        "--access-log": "access.log", "--error-log": "logs/error.log info",
        "--ssl-certificate": "c.pem", "--ssl-certificate-key": "k.pem",
    })
    assert config.listeners == (Listener("127.0.0.1", 0), Listener("::1", 8443, True))
    group = config.upstreams["backend"]
    assert group.balance == "least_conn"
    assert group.servers == (ServerConfig("a", 1, weight=3), ServerConfig("b", 2, backup=True))
    assert config.locations == (
        Location("/", TO_BACKEND, read_timeout=300.0, label="--upstream"),)
    assert config.workers == 3
    assert config.access_log == AccessLogConfig("file", tmp_path / "access.log", "combined")
    assert config.error_log == ErrorLogConfig("file", tmp_path / "logs/error.log", "info")
    assert config.servers[0].tls == TLSFiles(tmp_path / "c.pem", tmp_path / "k.pem")
    simple = {"--listen": ["80"], "--upstream": ["a:1"]}
    assert from_flags({**simple, "--workers": "auto"}).workers == (os.cpu_count() or 1)
    assert from_flags({**simple, "--access-log": "off"}).access_log.destination == "off"


@pytest.mark.parametrize(("flags", "message"), [
    ({"--upstream": ["127.0.0.1"]}, '--upstream "127.0.0.1": missing port'),
    ({"--upstream": []}, "--upstream: required (e.g. --upstream 127.0.0.1:8010)"),
    ({"--listen": []}, "--listen: required (e.g. --listen :8080)"),
    ({"--listen": ["localhost"]}, '--listen "localhost": missing port (write e.g. '
                                  '"localhost:8080")'),
    ({"--listen": [":80", "80"]}, '--listen "80": 0.0.0.0:80 is listed twice'),
    ({"--upstream": ["a:1 weight=two"]},
     '--upstream "a:1 weight=two": weight must be a positive integer, got "two"'),
    ({"--upstream": ["a:1", "a:1"]},
     '--upstream "a:1": a:1 is listed twice (use weight=N for a bigger share)'),
    ({"--upstream": ["a:1", "b:1 backup"], "--balance": "ip_hash"},
     '--upstream "b:1 backup": backup cannot be used with balance = "ip_hash"'),
    ({"--balance": "random"}, '--balance "random": must be one of "round_robin", '
                              '"least_conn", "ip_hash", "hash", got "random"'),
    ({"--balance": "hash"}, '--balance "hash": needs a hash key, which only a config file can '
                            "set (or use ip_hash)"),
    ({"--read-timeout": "soon"}, '--read-timeout "soon": must be a duration like "60s", "5m" '
                                 'or "500ms", got "soon"'),
    ({"--workers": "0"}, '--workers "0": must be "auto" or a positive integer, got "0"'),
    ({"--workers": "two"}, '--workers "two": must be "auto" or a positive integer, got "two"'),
    ({"--access-log": ""}, '--access-log "": must be a non-empty string, got ""'),
    ({"--error-log": "stderr loud"},
     '--error-log "stderr loud": must be one of "debug", "info", "notice", "warn", "error", '
     '"crit", "alert", "emerg", got "loud"'),
    ({"--error-log": "off"},
     '--error-log "off": off is not a place for the error log: write "stderr" or a file'),
    ({"--listen": ["443 ssl"]},
     '--ssl-certificate: required because --listen "443 ssl" uses ssl'),
    ({"--ssl-certificate": "c.pem"},
     '--ssl-certificate: no --listen uses ssl (add " ssl", e.g. "0.0.0.0:443 ssl")'),
])
def test_bad_flags(flags: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"--listen": [":8080"], "--upstream": ["127.0.0.1:8010"]}
    arguments.update(flags)
    with pytest.raises(UsageError) as caught:
        from_flags(arguments)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_describe_counts() -> None:
    to_a = ProxyPass("http://a", "a", None)
    config = ProxyConfig(
        upstreams={"a": UpstreamConfig("a", (ServerConfig("a", 1),))},
        servers=(VirtualServer(listeners=(Listener("0.0.0.0", 80), Listener("0.0.0.0", 81)),
                               locations=(Location("/", to_a),)),),
        source="x.toml",
    )
    assert describe(config) == "x.toml: ok: 2 listeners, 1 upstream (1 server), 1 location"
    two = dataclasses.replace(config, servers=(
        *config.servers,
        VirtualServer(listeners=(Listener("0.0.0.0", 81, ssl=True), Listener("0.0.0.0", 82)),
                      names=("b.example",),
                      locations=(Location("/", to_a, locations=(Location("/x", to_a),)),))))
    assert two.listeners == (Listener("0.0.0.0", 80), Listener("0.0.0.0", 81, ssl=True),
                             Listener("0.0.0.0", 82))  # each address once, ssl if any says so
    assert two.locations == config.locations  # the first server's
    assert describe(two) == ("x.toml: ok: 3 listeners, 1 upstream (1 server), 3 locations, "
                             "2 virtual servers")


# --- files the config names: what --check and running open ----------------------------------


def check_text(folder: Path, text: str) -> str:
    config = load_text(folder, text)
    with pytest.raises(UsageError) as caught:
        preflight.check(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


TLS = 'listen = "443 ssl"\nssl_certificate = "{cert}"\nssl_certificate_key = "{key}"\n'


@pytest.mark.parametrize(("text", "message"), [
    (TLS.format(cert="nope.pem", key="key.pem") + UPSTREAM + LOCATION,
     "wsgate.toml: ssl_certificate: cannot read {folder}/nope.pem: No such file or directory"),
    (TLS.format(cert="cert.pem", key=".") + UPSTREAM + LOCATION,
     "wsgate.toml: ssl_certificate_key: cannot read {folder}: Is a directory"),
    (TLS.format(cert="cert.pem", key="key.pem") + UPSTREAM + LOCATION,
     "wsgate.toml: ssl_certificate: cannot load {folder}/cert.pem with its key: "),
    ('access_log = "no/such/folder/access.log"\n' + MINIMAL,
     "wsgate.toml: access_log: cannot open {folder}/no/such/folder/access.log: No such file or "
     "directory"),
    ('error_log = "no/such/folder/error.log warn"\n' + MINIMAL,
     "wsgate.toml: error_log: cannot open {folder}/no/such/folder/error.log: No such file or "
     "directory"),
    (UPSTREAM + '[[server]]\nlisten = "443 ssl"\nssl_certificate = "nope.pem"\n'
     'ssl_certificate_key = "key.pem"\nreturn = 204\n',
     "wsgate.toml: server[0].ssl_certificate: cannot read {folder}/nope.pem: No such file or "
     "directory"),
    # inherited: blamed where it is written, not on a key server[0] does not have
    ('ssl_certificate = "nope.pem"\nssl_certificate_key = "key.pem"\n' + UPSTREAM
     + '[[server]]\nlisten = "443 ssl"\nreturn = 204\n',
     "wsgate.toml: ssl_certificate: cannot read {folder}/nope.pem: No such file or directory"),
])
def test_check_opens_every_file(folder: Path, text: str, message: str) -> None:
    got = check_text(folder, text)
    assert got.startswith(message.replace("{folder}", str(folder)))


def test_check_errors_in_files_are_config_errors(folder: Path) -> None:
    with pytest.raises(ConfigError):
        preflight.check(load_text(folder, 'access_log = "no/x.log"\n' + MINIMAL))


def test_check_opens_the_logs_it_names(folder: Path) -> None:
    preflight.check(load_text(folder, 'access_log = "a.log"\nerror_log = "e.log"\n' + MINIMAL))
    assert (folder / "a.log").exists()
    assert (folder / "e.log").exists()


def test_flags_unreadable_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.pem").write_text("c")
    config = from_flags({"--listen": ["443 ssl"], "--upstream": ["a:1"],
                         "--ssl-certificate": "c.pem", "--ssl-certificate-key": "k.pem"})
    with pytest.raises(UsageError) as caught:
        preflight.check(config)
    assert not isinstance(caught.value, ConfigError)
    assert str(caught.value) == (f"--ssl-certificate-key: cannot read {tmp_path}/k.pem: "
                                 "No such file or directory")
