"""The values of the directives that decide what a server or location does with a request:
``proxy_pass``, ``return``, ``error_page``, ``try_files``, ``index``, ``server_name``,
``ssl_protocols``, ``map`` and the like, in nginx's syntax. Pure.

Like :mod:`~wsgate.proxy.directives`, each parser takes what TOML gave and returns it
checked, or raises :class:`~wsgate.values.Invalid`; the caller says where.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any, Literal

from wsgate.proxy.directives import choice, key_name, template, text, unknown_keys
from wsgate.values import blame, check_host, fail, host_port, join_address, must, show

REDIRECTS = (301, 302, 303, 307, 308)


# -- proxy_pass --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyPass:
    """``proxy_pass http://HOST[:PORT][/URI]``. ``upstream``: the group it names (an upstream's
    name or ``host:port``); None when the host part has variables, and the group is found
    per request. ``uri``: the URI part, which replaces the matched prefix (None: the
    request's URI goes as sent)."""

    target: str
    upstream: str | None
    uri: str | None

    @property
    def variable(self) -> bool:
        return "$" in self.target


def proxy_pass(value: object) -> ProxyPass:
    """Where a location sends requests, checked as far as it can be without the upstreams."""
    target = text(value)
    rest = target
    if "://" in target:
        scheme, rest = target.split("://", 1)
        if scheme.lower() != "http":
            fail(f'{scheme}:// is not supported: write "http://" (WebSocket upgrades ride on it)')
    slash = rest.find("/")
    host_part, uri = (rest, None) if slash < 0 else (rest[:slash], rest[slash:])
    if not host_part:
        fail(f"no host in {show(target)}")
    if uri is not None:
        template(uri)
    if "$" in host_part:
        template(host_part)
        return ProxyPass(target, None, uri)
    if host_part.startswith("unix:"):
        fail("unix: sockets are not supported as upstreams")
    if ":" not in host_part and not host_part.startswith("["):
        check_host(host_part)
        return ProxyPass(target, host_part, uri)
    host, number = host_port(host_part)
    return ProxyPass(target, join_address(host, number), uri)


def proxy_http_version(value: object) -> str:
    return choice(value, ("1.0", "1.1"))


NEXT_UPSTREAM = ("error", "timeout", "invalid_header", "http_500", "http_502", "http_503",
                 "http_504", "http_403", "http_404", "http_429", "non_idempotent", "off")


def next_upstream(value: object) -> str:
    """One ``proxy_next_upstream`` condition."""
    return choice(value, NEXT_UPSTREAM)


def proxy_redirect(value: object) -> Literal["default", "off"]:
    """``proxy_redirect default|off`` (a rewrite of one's own is not supported)."""
    if isinstance(value, str) and value not in ("default", "off"):
        fail(f'only "default" and "off" are supported, got {show(value)}')
    return choice(value, ("default", "off"))


# -- return and error_page ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Return:
    """nginx ``return CODE [TEXT]``, ``return CODE URL`` (3xx) or ``return URL`` (302).
    ``text``: the body or the Location, a template; None: no body (nginx's own page for
    an error code). Code 444 closes the connection without an answer."""

    status: int
    text: str | None


def return_(value: object) -> Return:
    """``"301 https://$host$request_uri"``: the code, then everything after the one space
    that follows it as the text or URL, verbatim (a trailing newline included)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        must("", 'a string like "301 https://$host$request_uri"', value)
    code, space, rest = value.lstrip().partition(" ")
    if code.startswith(("http://", "https://", "$scheme")):
        return Return(302, template(value.strip()))
    if not code.isdigit() or not 0 <= int(code) <= 999:
        fail(f'must be "CODE [TEXT]" or a URL, got {show(value)} (e.g. "301 https://$host'
             '$request_uri")')
    status = int(code)
    return Return(status, template(rest, body=status not in REDIRECTS) if space else None)


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """``error_page CODE... [=[RESPONSE]] URI``: for the codes, answer with ``target`` (a
    URI: an internal redirect; ``@name``: a named location; an ``http(s)://`` URL: a 302)
    and the status ``status`` (None: the original code; 0: the target's own)."""

    codes: tuple[int, ...]
    status: int | None
    target: str


def error_page(value: object) -> ErrorPage:
    words = text(value).split()
    if len(words) < 2:
        fail(f'must be "CODE... [=RESPONSE] URI" like "500 502 /50x.html", got {show(value)}')
    target = words[-1]
    codes: list[int] = []
    status: int | None = None
    for word in words[:-1]:
        if word.startswith("="):
            if status is not None or word is not words[-2]:
                fail(f'"=RESPONSE" comes once, just before the URI, got {show(value)}')
            if word == "=":
                status = 0
            elif word[1:].isdigit():
                status = int(word[1:])
            else:
                fail(f"invalid response code {show(word)}")
        elif word.isdigit() and 300 <= int(word) <= 599:
            codes.append(int(word))
        else:
            fail(f'value "{word}" must be between 300 and 599')
    if not codes:
        fail(f"no code before the URI in {show(value)}")
    if not target.startswith(("/", "@", "http://", "https://", "$")):
        fail(f'the page must be a URI ("/50x.html"), "@name" or a URL, got {show(target)}')
    return ErrorPage(tuple(codes), status, template(target))


# -- files -------------------------------------------------------------------------------------


def try_files(value: object) -> str:
    """One ``try_files`` item: a file or directory template; the last may be "=CODE",
    "@name" or a URI (checked across items by the reader)."""
    item = template(text(value))
    if item.startswith("=") and not (item[1:].isdigit() and 0 <= int(item[1:]) <= 999):
        fail(f"invalid code {show(item)}")
    return item


def index_file(value: object) -> str:
    return template(text(value))


def mime_type(value: object) -> str:
    found = text(value)
    if not re.fullmatch(r"[A-Za-z0-9.+-]+/[A-Za-z0-9.+*-]+(;.*)?", found):
        fail(f'must be a MIME type like "text/html", got {show(found)}')
    return found


def types(value: object) -> dict[str, tuple[str, ...]]:
    """nginx ``types { text/html html htm; }`` as ``{"text/html": ["html", "htm"]}``."""
    if not isinstance(value, dict):
        must("", 'a table like { "text/html" = ["html", "htm"] }', value)
    found: dict[str, tuple[str, ...]] = {}
    for name, extensions in value.items():
        with blame("." + key_name(name)):
            mime_type(name)
            items = extensions if isinstance(extensions, list) else [extensions]
            found[name] = tuple(text(item).lower() for item in items)
    return found


# -- servers -----------------------------------------------------------------------------------


_NAME = re.compile(r"[A-Za-z0-9_.*-]*")


def server_name(value: object) -> str:
    """One ``server_name``: exact, ``*.example.com``, ``.example.com``, ``www.example.*``,
    ``~regex`` or "" (requests without a Host)."""
    if not isinstance(value, str):
        must("", 'a name like "example.com"', value)
    name = value.strip()
    if name.startswith("~"):
        try:
            re.compile(name[1:].replace("(?<", "(?P<").replace("(?P<=", "(?<=")
                       .replace("(?P<!", "(?<!"))
        except re.error as error:
            fail(f"invalid regex {show(name[1:])}: {error}")
        return name
    if not _NAME.fullmatch(name):
        fail(f"{show(name)} is not a server name (letters, digits, ., -, a leading or "
             "trailing *)")
    if name.count("*") > 1 or ("*" in name and not (name.startswith("*.") or
                                                    name.endswith(".*"))):
        fail(f'invalid wildcard {show(name)}: "*" is a whole first or last part')
    return name.lower()


_PROTOCOLS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def ssl_protocol(value: object) -> str:
    """One of ``ssl_protocols``, checked against what this Python's OpenSSL offers."""
    if value in ("SSLv2", "SSLv3"):
        fail(f"{value} is not supported by Python's ssl module (and is broken)")
    found = choice(value, tuple(_PROTOCOLS))
    supported = {"TLSv1": ssl.HAS_TLSv1, "TLSv1.1": ssl.HAS_TLSv1_1,
                 "TLSv1.2": ssl.HAS_TLSv1_2, "TLSv1.3": ssl.HAS_TLSv1_3}
    if not supported[found]:
        fail(f"{found} is not supported by this Python's OpenSSL")
    return found


def protocol_range(protocols: tuple[str, ...]) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """The lowest and highest version of ``ssl_protocols`` (OpenSSL takes a range)."""
    versions = sorted(_PROTOCOLS[name] for name in protocols)
    return versions[0], versions[-1]


def user(value: object) -> tuple[str, str | None]:
    """nginx ``user USER [GROUP]``: whether they exist is checked when the config is used."""
    words = text(value).split()
    if len(words) > 2:
        fail(f'must be "USER [GROUP]", got {show(value)}')
    return words[0], words[1] if len(words) == 2 else None


# -- map and log_format ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapConfig:
    """nginx ``map SOURCE $NAME { ... }``: ``values`` in the order written."""

    name: str
    source: str
    default: str = ""
    hostnames: bool = False
    values: tuple[tuple[str, str], ...] = ()


def map_config(name: str, value: object) -> MapConfig:
    if not isinstance(value, dict):
        must("", 'a table like { source = "$http_upgrade", values = { "" = "close" } }', value)
    unknown_keys(value, ["source", "default", "hostnames", "values"])
    if "source" not in value:
        fail('missing source (e.g. source = "$http_upgrade")')
    with blame(".source"):
        source = template(text(value["source"]))
        if "$" not in source:
            fail("the source has no $variable: the map would always give one value")
    with blame(".default"):
        default = value.get("default", "")
        if not isinstance(default, str):
            must("", "a string", default)
        template(default)
    with blame(".hostnames"):
        hostnames = value.get("hostnames", False)
        if not isinstance(hostnames, bool):
            must("", "true or false", hostnames)
    entries = value.get("values", {})
    with blame(".values"):
        if not isinstance(entries, dict):
            must("", 'a table like { "" = "close", "~^ws" = "upgrade" }', entries)
    pairs: list[tuple[str, str]] = []
    for key, item in entries.items():
        with blame(".values." + key_name(key)):
            if not isinstance(item, str):
                must("", "a string", item)
            template(item)
        pairs.append((key, item))
    return MapConfig(name, source, default, hostnames, tuple(pairs))


@dataclass(frozen=True, slots=True)
class LogFormatConfig:
    name: str
    format: str
    escape: Literal["default", "json", "none"] = "default"


def log_format(name: str, value: object) -> LogFormatConfig:
    if isinstance(value, str):
        return LogFormatConfig(name, value)
    if not isinstance(value, dict):
        must("", 'a string, or a table like { format = "...", escape = "json" }', value)
    unknown_keys(value, ["format", "escape"])
    with blame(".format"):
        written = value.get("format")
        if not isinstance(written, str):
            must("", "a string", written)
    with blame(".escape"):
        escape: Any = choice(value.get("escape", "default"), ("default", "json", "none"))
    return LogFormatConfig(name, written, escape)
