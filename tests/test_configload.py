"""The checks of a whole configuration (:mod:`wsgate.proxy.configload`): upstream host names
become every address they resolve to, as nginx resolves them when it reads its file."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from wsgate.errors import ConfigError
from wsgate.proxy import configload

CONFIG = """
[upstream.websocket]
server = ["localhost:8010 weight=2", "127.0.0.1:8011"]
[[server]]
listen = ["127.0.0.1:0"]
[server.location."/"]
proxy_pass = "http://websocket"
"""


def _addresses(*found: str) -> Any:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "localhost"
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6,
                 "", (address, port)) for address in found]
    return getaddrinfo


def test_a_name_is_every_address_it_resolves_to(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wsgate.toml").write_text(CONFIG)
    monkeypatch.setattr(socket, "getaddrinfo", _addresses("127.0.0.1", "::1", "127.0.0.1"))
    config = configload.read(str(tmp_path / "wsgate.toml"))
    servers = config.upstreams["websocket"].servers
    assert [(server.address, server.weight) for server in servers] == [
        ("127.0.0.1:8010", 2), ("[::1]:8010", 2), ("127.0.0.1:8011", 1)]


def test_a_name_that_does_not_resolve_is_nginx_s_host_not_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nginx.conf").write_text(
        "http {\n    upstream websocket {\n        server localhost:8010;\n    }\n"
        "    server {\n        listen 127.0.0.1:0;\n"
        "        location / { proxy_pass http://websocket; }\n    }\n}\n")

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fails)
    with pytest.raises(ConfigError) as error:
        configload.read(str(tmp_path / "nginx.conf"))
    assert str(error.value) == (f'host not found in upstream "localhost:8010" in '
                                f"{tmp_path}/nginx.conf:3")


@pytest.mark.parametrize(("name", "given", "expected"), [
    ("nginx.conf", None, "nginx"), ("site.conf", None, "nginx"), ("x.toml", None, "toml"),
    ("X.TOML", None, "toml"), ("x.toml", "nginx", "nginx"), ("nginx.conf", "toml", "toml"),
])
def test_the_syntax_is_the_file_s_unless_told(name: str, given: str | None,
                                              expected: str) -> None:
    assert configload.syntax_of(name, given) == expected
