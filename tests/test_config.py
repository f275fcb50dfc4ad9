"""``wsgate proxy`` configuration: what a good config becomes, and the one line a bad one gets.

Every bad config asserts the whole message, because the message is the interface: it must
name the file, the key and the mistake, on one line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

import pytest

from wsgate.errors import ConfigError, UsageError
from wsgate.proxy import preflight
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
    describe,
)
from wsgate.proxy.configfile import load
from wsgate.proxy.flags import from_flags
from wsgate.proxy.routes import Routes

EXAMPLES = Path(__file__).parent.parent / "examples"

LISTEN = 'listen = "127.0.0.1:8080"\n'
UPSTREAM = '[upstream.websocket]\nserver = ["localhost:8010", "localhost:8011"]\n'
LOCATION = '[location."/"]\nproxy_pass = "http://websocket"\n'
MINIMAL = LISTEN + UPSTREAM + LOCATION


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
    config = load(EXAMPLES / "seed.toml")
    assert config.listeners == (Listener("0.0.0.0", 80, False),)
    assert list(config.upstreams) == ["websocket"]
    group = config.upstreams["websocket"]
    assert group.balance == "round_robin"
    assert [(server.host, server.port) for server in group.servers] == [
        ("localhost", 8010), ("localhost", 8011)]
    assert config.locations == (Location(
        prefix="/", upstream="websocket", read_timeout=300.0, set_headers=DEFAULT_SET_HEADERS),)
    assert config.access_log == AccessLogConfig(
        "file", Path("/var/log/nginx/yourdomain.log"), "combined")
    assert config.tls is None
    assert describe(config) == f"{EXAMPLES / 'seed.toml'}: ok: 1 listener, 1 upstream " \
                               "(2 servers), 1 location"


def test_seed_example_comments_every_nginx_line() -> None:
    rows = (EXAMPLES / "seed.toml").read_text().splitlines()
    comments = {row.strip()[1:].strip() for row in rows if row.strip().startswith("#")}
    for line in ("listen 80;", "server_name localhost;", "proxy_pass http://websocket;",
                 "proxy_read_timeout 300s;", "server localhost:8010;", "server localhost:8011;",
                 "#ip_hash;", "access_log /var/log/nginx/yourdomain.log;",
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
    assert config.tls == TLSFiles(folder / "cert.pem", folder / "key.pem")
    assert config.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),
                                      ipaddress.ip_network("10.0.0.0/8"),
                                      ipaddress.ip_network("::1/128"))
    assert config.client_header_timeout == 5.0
    assert config.client_max_body_size == 2 << 20
    assert (config.max_request_line, config.max_header_line, config.max_header_total) == (
        4096, 4096, 8192)
    assert config.keepalive_timeout == 60.0
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
    assert config.locations == (
        Location("/api/", "10.1.1.1:9000"),
        Location("/", "websocket", read_timeout=300.0, send_timeout=30.0, connect_timeout=0.5,
                 next_upstream_tries=3, next_upstream_timeout=10.0, set_headers=(
                     ("host", "$http_x_original_host"), ("X-Real-IP", "$remote_addr"),
                     ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
                     ("X-Id", "${remote_addr}:$remote_port"))),
    )
    assert describe(config) == ("wsgate.toml: ok: 3 listeners, 3 upstreams (7 servers), "
                                "2 locations")


def test_defaults(folder: Path) -> None:
    config = load_text(folder, MINIMAL)
    assert config == ProxyConfig(
        listeners=(Listener("127.0.0.1", 8080),),
        upstreams={"websocket": UpstreamConfig("websocket", (
            ServerConfig("localhost", 8010), ServerConfig("localhost", 8011)))},
        locations=(Location("/", "websocket"),),
        source="wsgate.toml",
    )
    assert config.workers == 1
    assert config.tls is None
    assert config.trusted_proxies == ()
    assert config.client_header_timeout == 10.0
    assert config.client_max_body_size == 1 << 20
    assert (config.max_request_line, config.max_header_line, config.max_header_total) == (
        8192, 8192, 32768)
    assert config.keepalive_timeout == 75.0
    assert config.shutdown_timeout == 10.0
    assert config.access_log == AccessLogConfig("stdout", None, "combined")
    location = config.locations[0]
    assert (location.read_timeout, location.send_timeout, location.connect_timeout) == (
        60.0, 60.0, 60.0)
    assert (location.next_upstream_tries, location.next_upstream_timeout) == (None, None)
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
        'access_log = "access.log"\n' + UPSTREAM + LOCATION)
    monkeypatch.chdir("/")
    config = load(folder / "conf" / "wsgate.toml")
    assert config.tls == TLSFiles(folder / "conf" / "c.pem", folder / "conf" / "k.pem")
    assert config.access_log.path == folder / "conf" / "access.log"


@pytest.mark.parametrize(("listen", "expected"), [
    ('"8080"', Listener("0.0.0.0", 8080)),
    ("8080", Listener("0.0.0.0", 8080)),
    ('":8080"', Listener("0.0.0.0", 8080)),
    ('"*:8080"', Listener("0.0.0.0", 8080)),
    ('"[::]:8080"', Listener("::", 8080)),
    ('"localhost:0"', Listener("localhost", 0)),
    ('"127.0.0.1:80"', Listener("127.0.0.1", 80)),
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
    assert config.keepalive_timeout == seconds


@pytest.mark.parametrize(("value", "size"), [
    ('"8k"', 8192), ('"8K"', 8192), ('"1m"', 1 << 20), ('"1g"', 1 << 30), ("1000", 1000),
    ('"1000"', 1000), ('"0"', None), ("0", None),
])
def test_sizes(folder: Path, value: str, size: int | None) -> None:
    config = load_text(folder, f"client_max_body_size = {value}\n" + MINIMAL)
    assert config.client_max_body_size == size


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
    assert [(location.prefix, location.upstream) for location in config.locations] == [
        ("/six", "[::1]:9001"), ("/ab", "127.0.0.1:9000"), ("/a", "127.0.0.1:9000"),
        ("/", "websocket")]
    assert config.upstreams["[::1]:9001"].servers == (ServerConfig("::1", 9001),)
    assert list(config.upstreams) == ["websocket", "127.0.0.1:9000", "[::1]:9001"]


def test_routes_take_the_longest_prefix(folder: Path) -> None:
    config = load_text(folder, LISTEN + UPSTREAM + """
[location."/api"]
proxy_pass = "websocket"
[location."/api/v2/"]
proxy_pass = "127.0.0.1:9000"
""")
    routes = Routes(config)

    def served_by(path: bytes) -> Location | None:
        route = routes.match(path)
        return route.location if route is not None else None

    assert served_by(b"/api/v2/x") == config.locations[0]
    assert served_by(b"/api/v1") == config.locations[1]
    assert served_by(b"/apix") == config.locations[1]  # a plain string prefix, as nginx's
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
    ("zzz = 1\n" + MINIMAL,
     "wsgate.toml: zzz: unknown key (known: listen, worker_processes, ssl_certificate, "
     "ssl_certificate_key, trusted_proxies, client_header_timeout, client_body_timeout, "
     "client_max_body_size, large_client_header_buffers, keepalive_timeout, "
     "worker_shutdown_timeout, status_listen, pid, access_log, error_log, upstream, "
     "location)"),
    ('proxy_read_timeout = "300s"\n' + MINIMAL,
     'wsgate.toml: proxy_read_timeout: unknown key here: it belongs in a [location."/..."] '
     "table"),
    (MINIMAL + 'proxy_http_version = "1.1"\n',
     'wsgate.toml: location."/".proxy_http_version: unknown key: not needed: wsgate always '
     "speaks HTTP/1.1 to upstreams"),
    (MINIMAL + 'proxy_read_timout = "1s"\n',
     'wsgate.toml: location."/".proxy_read_timout: unknown key (did you mean '
     "proxy_read_timeout?)"),
    (MINIMAL + "keepalive_timeout = 5\n",
     'wsgate.toml: location."/".keepalive_timeout: unknown key here: it belongs at the top '
     "of the file, before any [table]"),
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
     'wsgate.toml: listen: unknown parameter "http2" (only "ssl" is known)'),
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
     'wsgate.toml: access_log.format: must be one of "combined", "json", got "xml"'),
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
     "wsgate.toml: upstream.websocket.hash: unknown variable $x (known: $args, $host, "
     "$http_host, $proxy_add_x_forwarded_for, $proxy_host, $proxy_x_forwarded_proto, "
     "$remote_addr, $remote_port, $request_uri, $scheme, $server_port, $uri, $http_NAME)"),
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
     'wsgate.toml: location.api: a location is a path prefix starting with "/"'),
    (LISTEN + UPSTREAM + '[location]\nproxy_pass = "websocket"\n',
     'wsgate.toml: location.proxy_pass: a location is a path prefix starting with "/", e.g. '
     '[location."/"] with proxy_pass = "http://backend"'),
    (LISTEN + UPSTREAM + '[location."/a b"]\nproxy_pass = "websocket"\n',
     'wsgate.toml: location."/a b": a location prefix cannot contain spaces or control '
     "characters"),
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_read_timeout = "1s"\n',
     'wsgate.toml: location."/".proxy_pass: required (e.g. proxy_pass = "http://backend")'),
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
    (LISTEN + UPSTREAM + '[location."/"]\nproxy_pass = "http://websocket/"\n',
     'wsgate.toml: location."/".proxy_pass: a URI part ("/") is not supported: the request '
     "URI is passed unchanged"),
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
    (folder / "sub" / "proxy.toml").write_text("listen = 0\n")
    with pytest.raises(UsageError) as caught:
        load(Path("sub/proxy.toml"))
    assert str(caught.value).startswith("sub/proxy.toml: location: at least one is required")


# --- flags ---------------------------------------------------------------------------------


def test_flags_simple_case() -> None:
    config = from_flags({"--listen": [":8080"],
                         "--upstream": ["127.0.0.1:8010", "127.0.0.1:8011"]})
    assert config == ProxyConfig(
        listeners=(Listener("0.0.0.0", 8080),),
        upstreams={"backend": UpstreamConfig("backend", (
            ServerConfig("127.0.0.1", 8010), ServerConfig("127.0.0.1", 8011)))},
        locations=(Location("/", "backend"),),
        source="command line",
    )
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
    assert config.locations == (Location("/", "backend", read_timeout=300.0),)
    assert config.workers == 3
    assert config.access_log == AccessLogConfig("file", tmp_path / "access.log", "combined")
    assert config.error_log == ErrorLogConfig("file", tmp_path / "logs/error.log", "info")
    assert config.tls == TLSFiles(tmp_path / "c.pem", tmp_path / "k.pem")
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
    config = ProxyConfig(
        listeners=(Listener("0.0.0.0", 80), Listener("0.0.0.0", 81)),
        upstreams={"a": UpstreamConfig("a", (ServerConfig("a", 1),))},
        locations=(Location("/", "a"),),
        source="x.toml",
    )
    assert describe(config) == "x.toml: ok: 2 listeners, 1 upstream (1 server), 1 location"


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
