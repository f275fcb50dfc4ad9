"""The configuration of ``wsgate proxy``: frozen dataclasses, each directive declared once.

A field that a user can set is declared with :func:`directive`: its key (the nginx directive
it mirrors, so an nginx config translates line by line), its default, its parser (from
:mod:`wsgate.proxy.directives`), and the command-line flag that sets it, if any. The TOML
reader (:mod:`~wsgate.proxy.configfile`), the flags (:mod:`~wsgate.proxy.flags`) and the
hints for unknown keys all work from these declarations, so a new directive is one line
here. Times are in seconds. Pure: no file is read here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wsgate.proxy import directives as d
from wsgate.proxy import location_values as lv
from wsgate.proxy.directives import (
    DEFAULT_SET_HEADERS,
    AccessLogConfig,
    Balance,
    ErrorLogConfig,
    HealthCheck,
    Listener,
    Network,
    ServerConfig,
)
from wsgate.proxy.location_values import (
    ErrorPage,
    LogFormatConfig,
    MapConfig,
    ProxyPass,
    Return,
)
from wsgate.values import Invalid, blame, show

__all__ = [
    "DEFAULT_SET_HEADERS",
    "AccessLogConfig",
    "Directive",
    "ErrorLogConfig",
    "HealthCheck",
    "Listener",
    "Location",
    "ProxyConfig",
    "ServerConfig",
    "TLSFiles",
    "UpstreamConfig",
    "VirtualServer",
    "check_tls",
    "describe",
    "directives",
    "parse_directives",
    "resolve_paths",
]


@dataclass(frozen=True, slots=True)
class Directive:
    """How one configuration key is written and read.

    ``many``: the key takes one value or an array; ``parse`` reads one item, and each item
    is blamed on its own (``listen[1]``, ``--listen "x"``). ``nginx`` names the nginx
    directive (or parameter) it mirrors. ``flag``, ``metavar`` and ``help``: the
    command-line flag of ``wsgate proxy`` that sets it without a file.
    """

    key: str
    parse: Callable[[Any], Any]
    nginx: str
    many: bool = False
    flag: str | None = None
    metavar: str | None = None
    help: str = ""


def directive(key: str, parse: Callable[[Any], Any], default: Any = dataclasses.MISSING, *,
              nginx: str | None = None, many: bool = False, flag: str | None = None,
              metavar: str | None = None, help: str = "") -> Any:
    """A dataclass field that is a directive: see :class:`Directive`. Without a default it
    is required."""
    declared = Directive(key, parse, nginx or key, many, flag, metavar, help)
    return dataclasses.field(default=default, metadata={"directive": declared})


def directives(cls: type) -> Iterator[tuple[str, Directive]]:
    """The directives a schema class declares, as (field name, declaration), in order."""
    for item in dataclasses.fields(cls):
        declared = item.metadata.get("directive")
        if declared is not None:
            yield item.name, declared


Given = Callable[[Directive], Sequence[tuple[str, object]] | None]
"""Where a reader finds a directive's value: None when it is not set, else each item with
the label to blame it by (one item for a directive that takes one value)."""


def parse_directives(cls: type, given: Given) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Every directive of ``cls`` that is set, parsed, each item blamed on its own label:
    field name -> value; and field name -> the items' labels (for rules across items)."""
    values: dict[str, Any] = {}
    labels: dict[str, list[str]] = {}
    for name, declared in directives(cls):
        items = given(declared)
        if items is None:
            continue
        parsed = []
        for label, raw in items:
            with blame(label):
                parsed.append(declared.parse(raw))
        values[name] = tuple(parsed) if declared.many else parsed[0]
        labels[name] = [label for label, _ in items]
    return values, labels


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """The certificate chain and private key a ``listen ... ssl`` address serves (PEM files)."""

    certificate: Path
    key: Path


DRAIN_TIMEOUT = 10.0
"""``drain_timeout``'s default (see :class:`UpstreamConfig`)."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """An nginx ``upstream`` block: a named group of servers and how to spread clients over it."""

    name: str
    servers: tuple[ServerConfig, ...] = directive(
        "server", d.server, many=True, flag="--upstream", metavar="HOST:PORT",
        help='upstream server, with nginx\'s parameters ("h:8011 weight=2 backup"); '
             "repeat for several")
    balance: Balance = directive(
        "balance", d.balance, "round_robin", nginx="least_conn | ip_hash | hash",
        flag="--balance", metavar="METHOD",
        help="round_robin (default), least_conn or ip_hash")
    hash_key: str | None = directive("hash", d.hash_key, None, nginx="hash KEY")
    consistent: bool = directive("consistent", d.boolean, False, nginx="hash KEY consistent")
    keepalive: int = directive("keepalive", d.non_negative, 32)
    drain_timeout: float = directive("drain_timeout", d.optional_duration, DRAIN_TIMEOUT,
                                     nginx="(none: nginx cuts them)")
    """When a reload removes a server, its tunnels get Close 1001 spread evenly over this,
    so their clients do not all reconnect at once. 10 s spreads 10,000 reconnects to 1,000
    a second and still ends well inside the stop grace of Kubernetes (30 s) and systemd
    (90 s), so a deploy that removes a server and then stops it cuts nothing. An admin's
    drain (:mod:`~wsgate.proxy.monitor`) spreads its closes the same way."""
    health_check: HealthCheck | None = directive(
        "health_check", d.health_check, None, nginx="health_check (NGINX Plus)")


@dataclass(frozen=True, slots=True)
class Location:
    """An nginx ``location``: how requests it matches are handled.

    ``key`` is the location line's arguments (``"/"``, ``"= /x"``, ``"~* \\.png$"``,
    ``"@name"``). Its handler is ``return_`` if set, else ``proxy_pass`` if set, else the
    files under ``root``. Values not set here come from the enclosing location, server
    and top level, as in nginx (the readers merge them). ``None`` for
    ``next_upstream_tries`` and ``next_upstream_timeout`` means unlimited (nginx's 0).
    ``set_headers`` are the headers sent upstream: defaults merged with
    ``proxy_set_header``; values are templates with ``$variables``.
    """

    key: str = "/"
    proxy_pass: ProxyPass | None = directive("proxy_pass", lv.proxy_pass, None)
    http_version: str = directive("proxy_http_version", lv.proxy_http_version, "1.1")
    read_timeout: float = directive(
        "proxy_read_timeout", d.positive_duration, 60.0, flag="--read-timeout", metavar="TIME",
        help="close a connection that is idle this long (default: 60s)")
    send_timeout: float = directive("proxy_send_timeout", d.positive_duration, 60.0)
    connect_timeout: float = directive("proxy_connect_timeout", d.positive_duration, 60.0)
    next_upstream: tuple[str, ...] = directive(
        "proxy_next_upstream", lv.next_upstream, ("error", "timeout"), many=True)
    next_upstream_tries: int | None = directive(
        "proxy_next_upstream_tries", d.optional_count, None)
    next_upstream_timeout: float | None = directive(
        "proxy_next_upstream_timeout", d.optional_limit, None)
    set_headers: tuple[tuple[str, str], ...] = directive(
        "proxy_set_header", d.set_headers, DEFAULT_SET_HEADERS)
    redirect: str = directive("proxy_redirect", lv.proxy_redirect, "default")
    return_: Return | None = directive("return", lv.return_, None)
    root: Path | None = directive("root", d.file_path, None)
    index: tuple[str, ...] = directive("index", lv.index_file, ("index.html",), many=True)
    try_files: tuple[str, ...] = directive("try_files", lv.try_files, (), many=True)
    error_pages: tuple[ErrorPage, ...] = directive("error_page", lv.error_page, (), many=True)
    client_max_body_size: int | None = directive("client_max_body_size", d.body_size, 1 << 20)
    default_type: str = directive("default_type", lv.mime_type, "text/plain")
    locations: tuple[Location, ...] = ()
    label: str = ""
    """Where it was written (a key path), for messages."""

    @property
    def upstream(self) -> str | None:
        """The upstream group its proxy_pass names, when no variable picks it."""
        return None if self.proxy_pass is None else self.proxy_pass.upstream


NOT_INHERITED = frozenset({"proxy_pass", "return", "try_files"})
"""Location directives that apply only where they are written (nginx's content handlers and
rewrite-phase ``return``); every other one is the default of the levels inside."""


@dataclass(frozen=True, slots=True)
class VirtualServer:
    """An nginx ``server``: the addresses it listens on, the names it answers to, its TLS
    files, and its locations. ``defaults`` holds the server-level location directives: they
    answer a request no location matches (with 404) and a server-level ``return``."""

    listeners: tuple[Listener, ...] = directive(
        "listen", d.listener, many=True, flag="--listen", metavar="[HOST]:PORT",
        help='address to listen on, with "ssl" for TLS ("443 ssl"); repeat for several '
             "(default :8080)")
    names: tuple[str, ...] = directive("server_name", lv.server_name, ("",), many=True)
    ssl_certificate: Path | None = directive(
        "ssl_certificate", d.file_path, None, flag="--ssl-certificate", metavar="FILE",
        help="certificate chain (PEM) for the ssl listeners")
    ssl_certificate_key: Path | None = directive(
        "ssl_certificate_key", d.file_path, None, flag="--ssl-certificate-key", metavar="FILE",
        help="its private key (PEM)")
    ssl_protocols: tuple[str, ...] = directive(
        "ssl_protocols", lv.ssl_protocol, ("TLSv1.2", "TLSv1.3"), many=True)
    ssl_ciphers: str | None = directive("ssl_ciphers", d.text, None)
    return_: Return | None = directive("return", lv.return_, None)
    client_header_timeout: float = directive(
        "client_header_timeout", d.positive_duration, 10.0)
    header_buffers: tuple[int, int] = directive(
        "large_client_header_buffers", d.header_buffers, (4, 8 << 10))
    keepalive_timeout: float = directive("keepalive_timeout", d.optional_duration, 75.0)
    server_tokens: bool = directive("server_tokens", d.boolean, True)
    locations: tuple[Location, ...] = ()
    defaults: Location = Location("")
    label: str = ""
    tls_label: str = ""
    """The key path of the table the TLS files were written in ("": the top level)."""

    @property
    def tls(self) -> TLSFiles | None:
        """The TLS files, set together (the readers make sure of it)."""
        if self.ssl_certificate is None or self.ssl_certificate_key is None:
            return None
        return TLSFiles(self.ssl_certificate, self.ssl_certificate_key)

    @property
    def name(self) -> str:
        """nginx's ``$server_name``: the first name."""
        return self.names[0] if self.names else ""

    @property
    def max_request_line(self) -> int:
        """A request line over this gets 414 (one of ``large_client_header_buffers``)."""
        return self.header_buffers[1]

    @property
    def max_header_line(self) -> int:
        """A header line over this gets 431."""
        return self.header_buffers[1]

    @property
    def max_header_total(self) -> int:
        """A head over this (all the buffers) gets 431."""
        return self.header_buffers[0] * self.header_buffers[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """Everything ``wsgate proxy`` needs to run, already checked.

    ``servers`` in the order written (the first on an address is its default unless one
    says ``default_server``). Paths are absolute. ``source`` is the config file as the user
    named it, or "command line"; ``origins`` says where each key path came from when the
    file was in nginx's syntax ("nginx.conf:12"), for messages about it.
    """

    workers: int = directive(
        "worker_processes", d.workers, 1, flag="--workers", metavar="N|auto",
        help="worker processes (default: 1)")
    user: tuple[str, str | None] | None = directive("user", lv.user, None)
    trusted_proxies: tuple[Network, ...] = directive(
        "trusted_proxies", d.network, (), many=True, nginx="set_real_ip_from")
    client_body_timeout: float = directive("client_body_timeout", d.positive_duration, 60.0)
    """nginx's: between two reads of a request body, not for the whole body; then 408."""
    shutdown_timeout: float = directive("worker_shutdown_timeout", d.optional_duration, 10.0)
    status_listen: Listener | None = directive(
        "status_listen", d.status_listen, None, nginx="stub_status", flag="--status",
        metavar="HOST:PORT",
        help="serve the status page, /metrics (Prometheus) and the admin actions here "
             "(default: off)")
    pid: Path | None = directive(
        "pid", d.file_path, None, flag="--pid", metavar="FILE",
        help="write the master's process ID here (for wsgate proxy -s and init scripts)")
    access_log: AccessLogConfig = directive(
        "access_log", d.access_log, AccessLogConfig(), flag="--access-log",
        metavar="PATH", help="stdout (default), stderr, off, or a file")
    error_log: ErrorLogConfig = directive(
        "error_log", d.error_log, ErrorLogConfig(), flag="--error-log",
        metavar="FILE [LEVEL]",
        help='stderr (default) or a file, and the least severe level written: debug, info, '
             'notice, warn, error (default), crit, alert, emerg; e.g. "stderr info"')
    types: Mapping[str, tuple[str, ...]] | None = directive("types", lv.types, None)
    """MIME type -> file extensions; None: nginx's stock mime.types."""
    upstreams: Mapping[str, UpstreamConfig] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    maps: Mapping[str, MapConfig] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    log_formats: Mapping[str, LogFormatConfig] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    servers: tuple[VirtualServer, ...] = ()
    source: str = "command line"
    origins: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    ignored: tuple[str, ...] = ()
    """Directives of an nginx file accepted but without effect here (one notice lists them)."""
    syntax: str = "toml"
    """The file's: "toml" or "nginx" (a reload reads it the same way)."""

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """Every address any server listens on, once (TLS if any server's listen says so)."""
        found: dict[str, Listener] = {}
        for server in self.servers:
            for item in server.listeners:
                key = item.address if item.port else f"{item.address}#{id(item)}"
                before = found.get(key)
                if before is None:
                    found[key] = item
                elif item.ssl and not before.ssl:
                    found[key] = dataclasses.replace(before, ssl=True)
        return tuple(found.values())

    @property
    def locations(self) -> tuple[Location, ...]:
        """The first server's locations (the one server of a simple configuration)."""
        return self.servers[0].locations if self.servers else ()

    def origin(self, label: str) -> str | None:
        """``file:line`` of ``label`` (or of the nearest enclosing key that has one)."""
        while label:
            if label in self.origins:
                return self.origins[label]
            cut = max(label.rfind("."), label.rfind("["))
            label = label[:cut] if cut > 0 else ""
        return None

    def trusts(self, address: str) -> bool:
        """Whether X-Forwarded-* headers from a client at ``address`` may be believed."""
        if not self.trusted_proxies:
            return False  # the usual case, and asked once per connection
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted_proxies)


BLOCKS = ("upstream", "map", "log_format", "server", "location")
"""The tables of tables: ``[upstream.NAME]``, ``[map.NAME]``, ``[[server]]`` and the like."""


def check_tls(listeners: Sequence[Listener], shown: Sequence[str], certificate: Path | None,
              key: Path | None, names: tuple[str, str, str]) -> None:
    """The TLS files are given iff a listener uses ssl. ``shown``: each listener as written;
    ``names``: how the certificate, the key and listen are named where they came from."""
    first_ssl = next((text for item, text in zip(listeners, shown, strict=True) if item.ssl),
                     None)
    cert_name, key_name, listen_name = names
    for name, given in ((cert_name, certificate), (key_name, key)):
        if first_ssl is None and given is not None:
            raise Invalid(f'no {listen_name} uses ssl (add " ssl", e.g. "0.0.0.0:443 ssl")',
                          name)
        if first_ssl is not None and given is None:
            raise Invalid(f"required because {listen_name} {show(first_ssl)} uses ssl", name)


def resolve_paths(config: ProxyConfig, base: Path) -> ProxyConfig:
    """``config`` with its relative paths made absolute against ``base`` (the config file's
    folder, or the current one for flags)."""
    changes: dict[str, Any] = {}
    if config.pid is not None:
        changes["pid"] = base / config.pid
    for name in ("access_log", "error_log"):
        log = getattr(config, name)
        if log.path is not None:
            changes[name] = dataclasses.replace(log, path=base / log.path)
    changes["servers"] = tuple(_server_paths(server, base) for server in config.servers)
    return dataclasses.replace(config, **changes)


def _server_paths(server: VirtualServer, base: Path) -> VirtualServer:
    changes: dict[str, Any] = {}
    for name in ("ssl_certificate", "ssl_certificate_key"):
        path = getattr(server, name)
        if path is not None:
            changes[name] = base / path
    return dataclasses.replace(
        server, **changes, defaults=_location_paths(server.defaults, base),
        locations=tuple(_location_paths(location, base) for location in server.locations))


def _location_paths(location: Location, base: Path) -> Location:
    root = None if location.root is None or "$" in str(location.root) else base / location.root
    return dataclasses.replace(
        location, root=root or location.root,
        locations=tuple(_location_paths(inner, base) for inner in location.locations))


def walk(locations: Sequence[Location]) -> Iterator[Location]:
    """Every location, nested ones after their parent."""
    for location in locations:
        yield location
        yield from walk(location.locations)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe(config: ProxyConfig) -> str:
    """One line for ``--check``: the config is fine, and what it amounts to."""
    servers = sum(len(group.servers) for group in config.upstreams.values())
    locations = sum(1 for server in config.servers for _ in walk(server.locations))
    text = (f"{config.source}: ok: {_count(len(config.listeners), 'listener')}, "
            f"{_count(len(config.upstreams), 'upstream')} ({_count(servers, 'server')}), "
            f"{_count(locations, 'location')}")
    if len(config.servers) > 1:
        text += f", {_count(len(config.servers), 'virtual server')}"
    return text
