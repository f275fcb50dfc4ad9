"""nginx syntax -> the TOML document: what each fixture becomes, exactly, and the one line
each mistake gets, in nginx's own words and with the file and line it is on.

The fixtures in tests/nginx/: the seed's ``http { }`` block as the seed shows it, a whole
Debian-style nginx.conf (mime.types, events, a conf.d/*.conf glob, a snippet included from
conf.d), a conf.d snippet with no http block, and a config with several servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wsgate.errors import ConfigError
from wsgate.proxy.nginxconf import Origin, Translated, origin_of, translate
from wsgate.proxy.nginxrules import label

FIXTURES = Path(__file__).parent / "nginx"
ALL = ["seed.conf", "debian/nginx.conf", "snippet.conf", "multi.conf"]
NGINX_HEADERS = {"Host": "$proxy_host", "X-Real-IP": "", "X-Forwarded-For": "",
                 "X-Forwarded-Proto": ""}


def fixture(name: str) -> Translated:
    return translate(FIXTURES / name)


def write(folder: Path, text: str, others: dict[str, str] | None = None) -> Path:
    """nginx.conf with ``text`` in ``folder``, and the other files named in ``others``."""
    for name, body in (others or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    main = folder / "nginx.conf"
    main.write_text(text)
    return main


def document(tmp_path: Path, text: str) -> dict[str, Any]:
    return translate(write(tmp_path, text)).document


def labels(value: object, path: str = "") -> Iterator[str]:
    """Every key and table of a document, as key-path labels."""
    if isinstance(value, dict):
        for name, item in value.items():
            inner = label(path, name)
            yield inner
            yield from labels(item, inner)
    elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
        for index, item in enumerate(value):
            inner = label(path, index)
            yield inner
            yield from labels(item, inner)


# -- the fixtures ------------------------------------------------------------------------


def test_the_seed() -> None:
    result = fixture("seed.conf")
    assert result.document == {
        "map": {"connection_upgrade": {"source": "$http_upgrade", "default": "upgrade",
                                       "values": {"": "close"}}},
        "upstream": {"websocket": {"server": ["localhost:8010", "localhost:8011"],
                                   "keepalive": 0}},
        "server": [{
            "listen": ["80"],
            "server_name": ["localhost"],
            "location": {"/": {
                "proxy_pass": "http://websocket",
                "proxy_read_timeout": "300s",
                "proxy_http_version": "1.1",
                "proxy_set_header": {"Host": "$host", "X-Real-IP": "$remote_addr",
                                     "X-Forwarded-For": "$proxy_add_x_forwarded_for",
                                     "X-Forwarded-Proto": ""},
            }},
        }],
        "proxy_set_header": NGINX_HEADERS,
        "access_log": "/var/log/nginx/yourdomain.log",
    }
    seed = str(FIXTURES / "seed.conf")
    assert result.ignored == ()
    assert result.handled == (
        Origin(seed, 25, "proxy_set_header Upgrade $http_upgrade;"),
        Origin(seed, 26, "proxy_set_header Connection $connection_upgrade;"))
    origins = result.origins
    assert origins['server[0].location."/".proxy_pass'] == Origin(
        seed, 19, "proxy_pass http://websocket;")
    assert origins["upstream.websocket.server[1]"] == Origin(seed, 11, "server localhost:8011;")
    assert origins['map.connection_upgrade.values.""'] == Origin(seed, 5, "'' close;")
    assert origins["access_log"] == Origin(seed, 17,
                                           "access_log /var/log/nginx/yourdomain.log;")
    assert origins["proxy_set_header"] == Origin(seed, 2, "http {")
    assert {"upstream.websocket.keepalive", "proxy_set_header",
            'server[0].location."/".proxy_set_header.X-Forwarded-Proto'} <= result.defaults
    assert 'server[0].location."/".proxy_set_header.Host' not in result.defaults


def test_a_whole_debian_nginx_conf() -> None:
    result = fixture("debian/nginx.conf")
    folder = FIXTURES / "debian"
    document = dict(result.document)
    types = document.pop("types")
    assert document == {
        "user": "www-data",
        "worker_processes": "auto",
        "pid": "/run/nginx.pid",
        "error_log": "/var/log/nginx/error.log",
        "default_type": "application/octet-stream",
        "ssl_protocols": ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"],
        "map": {"connection_upgrade": {"source": "$http_upgrade", "default": "upgrade",
                                       "values": {"": "close"}}},
        "upstream": {"websocket": {"server": ["localhost:8010", "localhost:8011"],
                                   "keepalive": 8}},
        "server": [{
            "listen": ["80 default_server", "[::]:80 default_server"],
            "server_name": ["_"],
            "location": {"/": {
                "proxy_pass": "http://websocket",
                "proxy_http_version": "1.1",
                "proxy_read_timeout": "300s",
                "proxy_set_header": {**NGINX_HEADERS, "Host": "$host"},
            }},
        }],
        "proxy_set_header": NGINX_HEADERS,
        "access_log": "/var/log/nginx/access.log",
    }
    # include mime.types: every line of nginx's own file, in order
    text = (folder / "mime.types").read_text()
    entries = [entry.split() for entry in text[text.index("{") + 1:text.rindex("}")].split(";")]
    assert list(types) == list(dict.fromkeys(words[0] for words in entries if words))
    assert sum(map(len, types.values())) == sum(len(words) - 1 for words in entries if words)
    # one type on several lines: one key, the extensions in order
    assert types["application/octet-stream"] == ["bin", "exe", "dll", "deb", "dmg", "iso",
                                                 "img", "msi", "msp", "msm"]
    assert types["text/html"] == ["html", "htm", "shtml"]
    assert types["application/vnd.openxmlformats-officedocument.wordprocessingml.document"] \
        == ["docx"]
    assert result.ignored == ("worker_connections", "sendfile", "tcp_nopush",
                              "types_hash_max_size", "ssl_prefer_server_ciphers", "gzip")
    # the glob's files in name order; the snippet found from the main file's folder
    snippet = str(folder / "snippets/websocket-proxy.conf")
    assert result.handled == (
        Origin(snippet, 4, "proxy_set_header Upgrade $http_upgrade;"),
        Origin(snippet, 5, "proxy_set_header Connection $connection_upgrade;"))
    assert result.origins["upstream.websocket"].file == str(folder / "conf.d/00-upstreams.conf")
    assert result.origins["server[0]"] == Origin(str(folder / "conf.d/10-site.conf"), 1,
                                                 "server {")
    assert result.origins['types."text/css"'] == Origin(str(folder / "mime.types"), 4,
                                                       "text/css css;")


def test_a_conf_d_snippet_is_read_as_if_inside_http() -> None:
    result = fixture("snippet.conf")
    assert result.document == {
        "log_format": {"ws": '$remote_addr [$time_local] "$request" $status '
                             "$upstream_addr $request_time"},
        "proxy_read_timeout": "1h",
        "client_max_body_size": "10m",
        "map": {"connection_upgrade": {"source": "$http_upgrade", "default": "upgrade",
                                       "values": {"": "close"}}},
        "upstream": {"chat": {
            "balance": "least_conn",
            "server": ["10.0.0.1:9000 weight=2 max_fails=3 fail_timeout=30s",
                       "10.0.0.2:9000 max_conns=100", "10.0.0.3:9000 backup"],
            "keepalive": 16,
        }},
        "server": [{
            "listen": ["8080"],
            "server_name": ["chat.example.com"],
            # only Upgrade and Connection lines: still nginx's rule, the defaults
            "location": {"/ws/": {"proxy_pass": "http://chat", "proxy_http_version": "1.1",
                                  "proxy_set_header": NGINX_HEADERS}},
        }],
        "proxy_set_header": NGINX_HEADERS,
        "access_log": {"path": "/var/log/nginx/ws.log", "format": "ws"},
    }
    assert result.ignored == ("access_log buffer=", "zone")
    assert [origin.line for origin in result.handled] == [29, 30]
    assert 'server[0].location."/ws/".proxy_set_header' not in result.defaults


def test_several_servers() -> None:
    result = fixture("multi.conf")
    none = {"X-Real-IP": "", "X-Forwarded-For": "", "X-Forwarded-Proto": ""}
    assert result.document == {
        "worker_processes": 4,
        "worker_shutdown_timeout": "30s",
        "types": {"text/html": ["html", "htm"], "application/javascript": ["js"]},
        "default_type": "application/octet-stream",
        "keepalive_timeout": "65",
        "server_tokens": False,
        "log_format": {"jsonlog": {"format": '{"addr":"$remote_addr","status":$status}',
                                "escape": "json"}},
        "map": {
            "connection_upgrade": {"source": "$http_upgrade", "default": "upgrade",
                                   "values": {"": "close"}},
            "backend": {"source": "$host", "hostnames": True,
                        "values": {".example.com": "app", "~^api\\.": "api"}},
        },
        "upstream": {
            "app": {"balance": "ip_hash", "server": ["127.0.0.1:8010", "127.0.0.1:8011 down"],
                    "keepalive": 0},
            "api": {"balance": "hash", "hash": "$remote_addr", "consistent": True,
                    "server": ["127.0.0.1:9010", "127.0.0.1:9011"], "keepalive": 32},
        },
        "server": [
            {"listen": ["80 default_server", "[::]:80 default_server"],
             "server_name": ["example.com", "www.example.com"],
             "return": "301 https://$host$request_uri"},
            {"listen": ["443 ssl"],
             "server_name": ["example.com", "www.example.com"],
             "ssl_certificate": "/etc/ssl/example.com.pem",
             "ssl_certificate_key": "/etc/ssl/example.com.key",
             "ssl_protocols": ["TLSv1.2", "TLSv1.3"],
             "ssl_ciphers": "HIGH:!aNULL:!MD5",
             "root": "/srv/www",
             "index": ["index.html", "index.htm"],
             "error_page": ["404 /404.html", "500 502 503 504 /50x.html"],
             "location": {
                 "/": {"try_files": ["$uri", "$uri/", "/index.html"]},
                 "= /50x.html": {"root": "/usr/share/nginx/html"},
                 "~* \\.(png|jpg|css|js)$": {"root": "/srv/static"},
                 "^~ /ws/": {"proxy_pass": "http://$backend", "proxy_read_timeout": "1h",
                             "proxy_next_upstream": ["error", "timeout", "http_502"],
                             "proxy_next_upstream_tries": 2,
                             "proxy_set_header": {"Host": "$host", **none}},
                 "/api/": {"proxy_pass": "http://api", "location": {
                     "~ ^/api/v(\\d+)/": {"proxy_set_header": {
                         "Host": "$proxy_host", **none, "X-Api-Version": "$1"}}}},
                 "= /health": {"return": "200 up and running"},
                 "@fallback": {"proxy_pass": "http://app"},
             }},
        ],
        "proxy_set_header": {"Host": "$proxy_host", "X-Real-IP": "", "X-Forwarded-For": "",
                             "X-Forwarded-Proto": "$scheme"},
        "access_log": {"path": "/var/log/nginx/access.json", "format": "jsonlog"},
    }
    assert result.ignored == ("keepalive_timeout (header timeout)", "listen ... ipv6only",
                              "listen ... http2", "ssl_session_cache")
    # the http level's line, not the location's that agrees with it
    assert result.origins["access_log"].line == 15
    nested = 'server[1].location."/api/".location."~ ^/api/v(\\\\d+)/".proxy_set_header'
    assert result.origins[nested + ".X-Api-Version"].line == 86


@pytest.mark.parametrize("name", ALL)
def test_every_key_and_table_has_an_origin(name: str) -> None:
    result = fixture(name)
    missing = [path for path in labels(result.document) if path not in result.origins]
    assert missing == []
    assert result.defaults <= set(result.origins)


# -- proxy_set_header: nginx's rule and defaults -------------------------------------------


def test_proxy_set_header_starts_from_nginx_defaults_at_each_level(tmp_path: Path) -> None:
    result = document(tmp_path, """
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        server {
            location /a { proxy_pass http://a:1; }
            location /b {
                proxy_pass http://a:1;
                proxy_set_header host $host;
                proxy_set_header X-Real-IP "";
                proxy_set_header X-Request-Id $request_id;
            }
        }
    """)
    assert result["proxy_set_header"] == {**NGINX_HEADERS,
                                          "X-Forwarded-For": "$proxy_add_x_forwarded_for"}
    locations = result["server"][0]["location"]
    assert "proxy_set_header" not in locations["/a"]
    # the user's spelling, in the place of the default it replaces
    assert list(locations["/b"]["proxy_set_header"].items()) == [
        ("host", "$host"), ("X-Real-IP", ""), ("X-Forwarded-For", ""),
        ("X-Forwarded-Proto", ""), ("X-Request-Id", "$request_id")]


def test_upgrade_and_connection_lines_are_handled_whatever_their_case(tmp_path: Path) -> None:
    main = write(tmp_path, """server { location / {
        proxy_pass http://a:1;
        proxy_set_header upgrade $http_upgrade;
        proxy_set_header CONNECTION "upgrade";
    } }""")
    result = translate(main)
    assert result.document["server"][0]["location"]["/"]["proxy_set_header"] == NGINX_HEADERS
    assert [(origin.line, origin.text) for origin in result.handled] == [
        (3, "proxy_set_header upgrade $http_upgrade;"),
        (4, "proxy_set_header CONNECTION upgrade;")]


# -- other values --------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "value"), [
    ("return 301 https://$host$request_uri;", "301 https://$host$request_uri"),
    ("return 404;", "404"),
    ("return 200 'some text';", "200 some text"),
    ('return 200 " leading space";', "200  leading space"),
    ("return https://example.com/;", "https://example.com/"),
    ("return $scheme://example.com;", "$scheme://example.com"),
    ('return 200 "a \\"quoted\\"\\ttab";', '200 a "quoted"\ttab'),
])
def test_return_is_the_code_then_the_text_verbatim(tmp_path: Path, line: str,
                                                   value: str) -> None:
    result = document(tmp_path, f"server {{ {line} }}")
    assert result["server"][0]["return"] == value


def test_words_are_unescaped_as_nginx_reads_them(tmp_path: Path) -> None:
    result = document(tmp_path, r"""
        map $uri $kind {
            \default    literal;
            ~\.php$     php;
            "~\\.js$"   js;
        }
        server {
            location ~ "\\.css$" { root /srv; }
            location ~ \.png$ { root /srv; }
        }
    """)
    assert result["map"]["kind"]["values"] == {"default": "literal", "~\\.php$": "php",
                                               "~\\.js$": "js"}
    assert list(result["server"][0]["location"]) == ["~ \\.css$", "~ \\.png$"]


def test_location_modifiers_written_against_the_pattern(tmp_path: Path) -> None:
    result = document(tmp_path, """server {
        location =/exact { return 204; }
        location ^~/static/ { root /srv; }
        location ~*\\.gif$ { root /srv; }
        location @named { return 404; }
    }""")
    assert list(result["server"][0]["location"]) == [
        "= /exact", "^~ /static/", "~* \\.gif$", "@named"]


def test_listen_parameters(tmp_path: Path) -> None:
    main = write(tmp_path, """server {
        listen 127.0.0.1:8443 ssl default_server backlog=1024 reuseport deferred;
        listen [::]:8443 ssl default fastopen=256 so_keepalive=on rcvbuf=64k sndbuf=64k;
    }""")
    result = translate(main)
    assert result.document["server"][0]["listen"] == [
        "127.0.0.1:8443 ssl default_server backlog=1024", "[::]:8443 ssl default"]
    assert result.ignored == ("listen ... reuseport", "listen ... deferred",
                              "listen ... fastopen", "listen ... so_keepalive",
                              "listen ... rcvbuf", "listen ... sndbuf")


def test_main_and_server_values(tmp_path: Path) -> None:
    result = document(tmp_path, """
        user nginx nginx;
        error_log logs/error.log warn;
        worker_processes 2;
        pcre_jit on;
        events { use epoll; }
        http {
            client_header_timeout 10s;
            large_client_header_buffers 4 8k;
            server {
                server_tokens build;
                keepalive_timeout 75s;
                client_max_body_size 0;
                proxy_redirect off;
                access_log off;
            }
        }
    """)
    assert result == {
        "user": "nginx nginx", "error_log": "logs/error.log warn", "worker_processes": 2,
        "client_header_timeout": "10s", "large_client_header_buffers": "4 8k",
        "server": [{"server_tokens": True, "keepalive_timeout": "75s",
                    "client_max_body_size": "0", "proxy_redirect": "off",
                    "listen": ["80"]}],
        "proxy_set_header": NGINX_HEADERS, "access_log": "off",
    }


def test_upstream_balance_the_last_one_counts_as_in_nginx(tmp_path: Path) -> None:
    result = document(tmp_path, """upstream a {
        hash $remote_addr consistent;
        least_conn;
        server a:1;
        keepalive_timeout 60s;
        keepalive_requests 100;
    }""")
    assert result["upstream"]["a"] == {"balance": "least_conn", "server": ["a:1"],
                                       "keepalive": 0}


def test_types_an_extension_given_again_moves(tmp_path: Path) -> None:
    result = document(tmp_path, """
        types { text/plain txt log; application/x-log LOG; }
        types { text/x-c c; }
    """)
    assert result["types"] == {"text/plain": ["txt"], "application/x-log": ["log"],
                               "text/x-c": ["c"]}


def test_an_include_inside_a_map(tmp_path: Path) -> None:
    main = write(tmp_path, "map $http_upgrade $c {\n    default close;\n"
                           "    include maps/upgrade.map;\n    volatile;\n}\n",
                 {"maps/upgrade.map": "'~*^websocket$' upgrade;\n"})
    result = translate(main)
    assert result.document["map"]["c"] == {"source": "$http_upgrade", "default": "close",
                                           "values": {"~*^websocket$": "upgrade"}}
    assert result.origins['map.c.values."~*^websocket$"'] == Origin(
        str(tmp_path / "maps/upgrade.map"), 1, "~*^websocket$ upgrade;")
    assert result.ignored == ("volatile",)


def test_a_glob_that_matches_nothing_is_fine(tmp_path: Path) -> None:
    result = document(tmp_path, "include conf.d/*.conf;\nhttp { include sites/*; }\n")
    assert result == {"proxy_set_header": NGINX_HEADERS}


# -- origin_of ---------------------------------------------------------------------------


def test_origin_of_finds_the_longest_labelled_prefix() -> None:
    origins = fixture("multi.conf").origins
    css = 'server[1].location."~* \\\\.(png|jpg|css|js)$"'
    assert origin_of(origins, css + ".root") == origins[css + ".root"]
    assert origin_of(origins, css + ".root.deeper[2]") == origins[css + ".root"]
    assert origin_of(origins, "server[1].listen[0]") == origins["server[1].listen[0]"]
    assert origin_of(origins, "server[1].listen[7]") == origins["server[1].listen"]
    assert origin_of(origins, 'map.backend.values."~^api\\\\."').line == 25
    assert origin_of(origins, "nothing.here") is None
    assert origin_of(origins, "server[1].location.\"unclosed") == origins["server[1].location"]


# -- mistakes, in nginx's words ----------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    # crossplane's and nginx's parse errors
    ("server {\n    listen 80;\n}\n}\n", 'unexpected "}" in {main}:4'),
    ("server {\n    location / {\n        proxy_pass http://x\n    }\n}\n",
     'unexpected "}" in {main}:4'),
    ("server {\n    listen 80;\n", 'unexpected end of file, expecting "}" in {main}:2'),
    ("worker_processes 1", 'unexpected end of file, expecting ";" or "}" in {main}:1'),
    ("server {\n    ;\n}\n", 'unexpected ";" in {main}:2'),
    ("include;\n", 'invalid number of arguments in "include" directive in {main}:1'),
    ("http {\n    include missing.conf;\n}\n",
     'open() "{dir}/missing.conf" failed (2: No such file or directory) in {main}:2'),
    # context and arguments, as nginx checks them
    ("location / {\n}\n", '"location" directive is not allowed here in {main}:1'),
    ("server {\n    proxy_pass http://x;\n}\n",
     '"proxy_pass" directive is not allowed here in {main}:2'),
    ("http {\n}\nserver {\n}\n", '"server" directive is not allowed here in {main}:3'),
    ("http {\n    events {\n    }\n}\n", '"events" directive is not allowed here in {main}:2'),
    ("server {\n    location / {\n        proxy_pass a b;\n    }\n}\n",
     'invalid number of arguments in "proxy_pass" directive in {main}:3'),
    ("gzip maybe;\n",
     'invalid value "maybe" in "gzip" directive, it must be "on" or "off" in {main}:1'),
    ("server {\n    location / {\n        proxy_read_timeout 1s;\n"
     "        proxy_read_timeout 2s;\n    }\n}\n",
     '"proxy_read_timeout" directive is duplicate in {main}:4'),
    ("http {\n}\nhttp {\n}\n", '"http" directive is duplicate in {main}:3'),
    ("upstream a {\n    server a:1;\n    keepalive 2;\n    keepalive 3;\n}\n",
     '"keepalive" directive is duplicate in {main}:4'),
    # what wsgate does not do
    ("server {\n    location / {\n        if ($x) { return 404; }\n    }\n}\n",
     'unsupported directive "if" in {main}:3'),
    ("server {\n    rewrite ^ /x;\n}\n", 'unsupported directive "rewrite" in {main}:2'),
    ("server {\n    location / {\n        alias /srv/;\n    }\n}\n",
     'unsupported directive "alias" in {main}:3'),
    ("stream {\n}\n", 'unsupported directive "stream" in {main}:1'),
    ("server {\n    frobnicate on;\n}\n", 'unsupported directive "frobnicate" in {main}:2'),
    ("server {\n    location / {\n        content_by_lua_block {\n            ngx.say(1)\n"
     "        }\n    }\n}\n", 'unsupported directive "content_by_lua_block" in {main}:3'),
    ("upstream a {\n    random;\n    server a:1;\n}\n",
     'unsupported directive "random" in {main}:2'),
    ("proxy_cache_path /tmp keys_zone=x:1m;\n",
     'unsupported directive "proxy_cache_path" in {main}:1'),
    # one error log, one access log
    ("error_log /a.log;\nhttp {\n    error_log /b.log warn;\n}\n",
     'a second "error_log": wsgate writes one error log (the first is in {main}:1) in '
     "{main}:3"),
    ("access_log /a.log;\nserver {\n    access_log /b.log;\n}\n",
     'wsgate writes one access log, but "access_log /a.log;" in {main}:1 and "access_log '
     '/b.log;" in {main}:3 differ'),
    ("server {\n    location / {\n        access_log off;\n    }\n    access_log /b.log;\n}\n",
     'wsgate writes one access log, but "access_log off;" in {main}:3 and "access_log '
     '/b.log;" in {main}:5 differ'),
    ("access_log /a.log main;\n", 'unknown log format "main" in {main}:1'),
    ("access_log /a.log combined if=$loggable;\n",
     'unsupported access_log parameter "if=$loggable" in {main}:1'),
    ("access_log /a.log combined gzip;\n", 'unsupported access_log parameter "gzip" in {main}:1'),
    ("log_format combined '$status';\n", 'duplicate "log_format" name "combined" in {main}:1'),
    # listen and upstream servers
    ("server {\n    listen unix:/run/x.sock;\n}\n",
     'unsupported listen address "unix:/run/x.sock" (wsgate listens on TCP) in {main}:2'),
    ("server {\n    listen 80 proxy_protocol;\n}\n",
     'unsupported listen parameter "proxy_protocol" in {main}:2'),
    ("server {\n    listen 443 quic;\n}\n", 'unsupported listen parameter "quic" in {main}:2'),
    ("server {\n    listen 80 nonsense;\n}\n", 'invalid parameter "nonsense" in {main}:2'),
    ("upstream a {\n    server unix:/x.sock;\n}\n",
     'unsupported upstream server "unix:/x.sock" (wsgate connects over TCP) in {main}:2'),
    ("upstream a {\n    server a:1 resolve;\n}\n",
     'unsupported server parameter "resolve" in {main}:2'),
    ("upstream a {\n    server a:1 slow_start=30s;\n}\n",
     'unsupported server parameter "slow_start=30s" in {main}:2'),
    ("upstream a {\n    keepalive 2;\n}\n", "no servers are inside upstream in {main}:1"),
    ("upstream a {\n    server a:1;\n}\nupstream A {\n    server a:1;\n}\n",
     'duplicate upstream "A" in {main}:4'),
    ("upstream a {\n    server a:1;\n    hash $x nonsense;\n}\n",
     'invalid parameter "nonsense" in {main}:3'),
    # map
    ("map $a $b {\n    x 1;\n    X 2;\n}\n", 'conflicting parameter "X" in {main}:3'),
    ("map $a $b {\n    x 1 2;\n}\n", "invalid number of the map parameters in {main}:2"),
    ("map $a $b {\n    default 1;\n    default 2;\n}\n",
     "duplicate default map parameter in {main}:3"),
    ("map $a b {\n}\n", 'invalid variable name "b" in {main}:1'),
    # locations, return and the rest
    ("server {\n    location = /a {\n        location /a/b {\n        }\n    }\n}\n",
     'location "/a/b" cannot be inside the exact location "/a" in {main}:3'),
    ("server {\n    location /a {\n        location /b {\n        }\n    }\n}\n",
     'location "/b" is outside location "/a" in {main}:3'),
    ("server {\n    location /a {\n        location @b {\n        }\n    }\n}\n",
     'named location "@b" can be on the server level only in {main}:3'),
    ("server {\n    location /a {\n    }\n    location ^~ /a {\n    }\n}\n",
     'duplicate location "/a" in {main}:4'),
    ("server {\n    location !! /a {\n    }\n}\n", 'invalid location modifier "!!" in {main}:2'),
    ("server {\n    return abc;\n}\n", 'invalid return code "abc" in {main}:2'),
    ("server {\n    return 1000;\n}\n", 'invalid return code "1000" in {main}:2'),
    ("server {\n    return 404;\n    return 410;\n}\n",
     'a second "return" here is not supported: only the first is ever reached in {main}:3'),
    ("server {\n    location / {\n        server_tokens off;\n    }\n}\n",
     '"server_tokens" in a location is not supported: wsgate takes it from the server in '
     "{main}:3"),
    ("server {\n    types {\n    }\n}\n",
     '"types" is only supported at the http level: wsgate has one for all servers in {main}:2'),
    ("proxy_next_upstream_tries many;\n",
     '"proxy_next_upstream_tries" directive invalid number in {main}:1'),
    ("server {\n    proxy_redirect http://a/ /;\n}\n",
     'unsupported "proxy_redirect" form: wsgate takes "default" or "off" in {main}:2'),
    ("proxy_http_version 2;\n", 'invalid value "2" in {main}:1'),
    ("proxy_set_header X-A 1;\nproxy_set_header x-a 2;\n",
     'proxy_set_header "x-a" is set twice here (wsgate sends one value) in {main}:2'),
    ("server {\n    include nginx.conf;\n}\n",
     '"{main}" is included from inside itself in {main}:2'),
])
def test_mistakes(tmp_path: Path, text: str, message: str) -> None:
    main = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        translate(main)
    assert str(caught.value) == message.replace("{main}", str(main)).replace("{dir}", str(tmp_path))


def test_an_unsupported_directive_is_blamed_on_its_included_file(tmp_path: Path) -> None:
    main = write(tmp_path, "http {\n    include conf.d/*.conf;\n}\n",
                 {"conf.d/a.conf": "upstream a {\n    server a:1;\n}\n",
                  "conf.d/b.conf": "server {\n    listen 80;\n    add_header X-A 1;\n}\n"})
    with pytest.raises(ConfigError) as caught:
        translate(main)
    assert str(caught.value) == f'unsupported directive "add_header" in {tmp_path}/conf.d/b.conf:3'


def test_a_parse_error_in_an_included_file(tmp_path: Path) -> None:
    main = write(tmp_path, "http {\n    include conf.d/*.conf;\n}\n",
                 {"conf.d/a.conf": "server {\n    listen 80\n}\n"})
    with pytest.raises(ConfigError) as caught:
        translate(main)
    assert str(caught.value) == f'unexpected "}}" in {tmp_path}/conf.d/a.conf:3'


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        translate(tmp_path / "nope.conf")
    assert str(caught.value) == (
        f'open() "{tmp_path}/nope.conf" failed (2: No such file or directory)')


def test_an_include_in_an_include_is_relative_to_the_main_file(tmp_path: Path) -> None:
    """As nginx resolves against its conf prefix, not the including file's folder."""
    main = write(tmp_path, "http {\n    include conf.d/site.conf;\n}\n",
                 {"conf.d/site.conf": "include snippets/x.conf;\n",
                  "snippets/x.conf": "proxy_read_timeout 5s;\n"})
    assert translate(main).document["proxy_read_timeout"] == "5s"
    (tmp_path / "conf.d/snippets").mkdir()
    (tmp_path / "snippets/x.conf").rename(tmp_path / "conf.d/snippets/x.conf")
    with pytest.raises(ConfigError) as caught:
        translate(main)
    assert str(caught.value) == (f'open() "{tmp_path}/snippets/x.conf" failed (2: No such '
                                 f"file or directory) in {tmp_path}/conf.d/site.conf:1")
