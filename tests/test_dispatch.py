"""Where a request goes and what goes upstream (:mod:`wsgate.proxy.dispatch`), and one
request's ``$variables`` (:mod:`wsgate.proxy.variables`): pure, from TOML configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsgate.proxy.configfile import load
from wsgate.proxy.dispatch import choose_host, dispatch, rewrite_location
from wsgate.proxy.http1 import HeadError, RequestHead, normalize_path
from wsgate.proxy.routes import Routes
from wsgate.proxy.variables import Variables, compile_template

CONFIG = """
[map.backend]
source = "$http_x_app"
default = "app"
values = { api = "api", "~^v(?<version>\\\\d+)$" = "app" }

[upstream.app]
server = "127.0.0.1:1"
[upstream.api]
server = "127.0.0.1:2"

[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["example.com"]
[server.location."/api/"]
proxy_pass = "http://api/v1/"
[server.location."/plain/"]
proxy_pass = "http://app"
[server.location."= /exact"]
proxy_pass = "http://app/other"
[server.location."~ ^/user/(\\\\d+)$"]
proxy_pass = "http://app/profile?id=$1"
[server.location."/pick"]
proxy_pass = "http://$backend"
[server.location."/nowhere"]
proxy_pass = "http://$http_x_nowhere"
"""


@pytest.fixture
def routes(tmp_path: Path) -> Routes:
    (tmp_path / "wsgate.toml").write_text(CONFIG)
    return Routes(load(tmp_path / "wsgate.toml"))


def request(target: bytes, *headers: tuple[bytes, bytes], routes: Routes | None = None
            ) -> tuple[RequestHead, Variables]:
    head = RequestHead(b"GET", target, "1.1", [(b"Host", b"example.com"), *headers])
    head.uri = normalize_path(head.path)
    return head, Variables(head, "10.0.0.1", 5555, "http", 8080, "127.0.0.1", False,
                           maps=routes.maps if routes is not None else {})


@pytest.mark.parametrize(("target", "upstream", "sent"), [
    (b"/api/items?limit=2", "api", b"/v1/items?limit=2"),
    (b"/api/", "api", b"/v1/"),
    (b"/api/a%20b/../c", "api", b"/v1/c"),
    (b"/api/caf%C3%A9", "api", b"/v1/caf%C3%A9"),
    (b"/plain/a%2Fb;x?q=+", "app", b"/plain/a%2Fb;x?q=+"),  # no URI part: as sent
    (b"/exact?x=1", "app", b"/other?x=1"),
    (b"/user/42?x=1", "app", b"/profile?id=42"),  # variables: the URI as written, no args
])
def test_what_goes_upstream(routes: Routes, target: bytes, upstream: str, sent: bytes) -> None:
    head, variables = request(target)
    site = routes.site("127.0.0.1:8080")
    found = dispatch(routes, choose_host(site, head, variables), head, variables)
    assert found.kind == "proxy"
    assert found.group is not None and found.group.group.name == upstream
    assert found.target == sent


def test_a_map_picks_the_upstream_and_its_captures_are_variables(routes: Routes) -> None:
    site = routes.site("127.0.0.1:8080")
    for value, upstream in ((b"api", "api"), (b"API", "api"), (b"other", "app"),
                            (b"v7", "app")):
        head, variables = request(b"/pick", (b"X-App", value), routes=routes)
        found = dispatch(routes, choose_host(site, head, variables), head, variables)
        assert found.group is not None and found.group.group.name == upstream, value
    head, variables = request(b"/pick", (b"X-App", b"v7"), routes=routes)
    assert variables.expand(compile_template("$backend:$version")) == b"app:7"


def test_a_variable_naming_no_upstream_is_502(routes: Routes) -> None:
    head, variables = request(b"/nowhere", (b"X-Nowhere", b"evil.example:80"))
    site = routes.site("127.0.0.1:8080")
    with pytest.raises(HeadError) as error:
        dispatch(routes, choose_host(site, head, variables), head, variables)
    assert error.value.status == 502
    assert "no upstream" in str(error.value)


def test_a_proxied_prefix_without_its_slash_is_redirected(routes: Routes) -> None:
    head, variables = request(b"/api")
    found = dispatch(routes, routes.site("127.0.0.1:8080").default, head, variables)
    assert (found.kind, found.status) == ("redirect", 301)


def test_proxy_redirect_default(routes: Routes) -> None:
    site = routes.site("127.0.0.1:8080")
    head, variables = request(b"/api/x")
    api = dispatch(routes, choose_host(site, head, variables), head, variables).route
    assert rewrite_location(api, b"http://api/v1/login") == b"/api/login"
    assert rewrite_location(api, b"http://elsewhere/v1/login") == b"http://elsewhere/v1/login"
    assert rewrite_location(api, b"5; url=http://api/v1/x") == b"5; url=/api/x"
    head, variables = request(b"/plain/x")
    plain = dispatch(routes, choose_host(site, head, variables), head, variables).route
    assert rewrite_location(plain, b"http://app/next") == b"/next"


@pytest.mark.parametrize(("template", "expected"), [
    ("$request_method $uri $args $is_args", b"GET /a/b x=1&Id=2 ?"),
    ("$arg_id|$arg_x|$arg_none", b"2|1|"),
    ("$cookie_session|$cookie_theme", b"abc|dark"),
    ("$http_user_agent $host $server_port $remote_addr:$remote_port", b"t/1 example.com 8080 "
                                                                       b"10.0.0.1:5555"),
    ("${scheme}://$host$request_uri", b"http://example.com/a//b?x=1&Id=2"),
    ("$https|$server_protocol", b"|HTTP/1.1"),
])
def test_request_variables(template: str, expected: bytes) -> None:
    _head, variables = request(b"/a//b?x=1&Id=2", (b"User-Agent", b"t/1"),
                              (b"Cookie", b"session=abc; theme=dark"))
    assert variables.expand(compile_template(template)) == expected
