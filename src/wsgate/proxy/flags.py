"""Command-line flags -> :class:`~wsgate.proxy.config.ProxyConfig`, for the simple case
without a file: one upstream group "backend" served at location "/".

The flags are the directives that declare one (``--listen``, ``--upstream``,
``--read-timeout``...), and their values use the config file's syntax
(``--upstream "host:8011 weight=2"``); relative paths are relative to the current folder.
A mistake names the flag and its value.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wsgate.errors import UsageError
from wsgate.proxy.config import (
    Directive,
    Location,
    ProxyConfig,
    UpstreamConfig,
    VirtualServer,
    check_tls,
    directives,
    parse_directives,
    resolve_paths,
)
from wsgate.proxy.directives import check_servers, distinct_listeners
from wsgate.proxy.location_values import ProxyPass
from wsgate.values import Invalid, blame, fail, show

Flags = Mapping[str, "str | Sequence[str] | None"]
"""Flag name ("--listen") -> the value given, or every value of a repeated flag."""

_SCHEMA = (VirtualServer, ProxyConfig, UpstreamConfig, Location)


def dest(flag: str) -> str:
    """The argparse attribute of ``flag``."""
    return flag.lstrip("-").replace("-", "_")


def add_arguments(group: argparse._ActionsContainer) -> None:
    """One flag per directive that declares one, with its metavar and help."""
    for cls in _SCHEMA:
        for _, item in directives(cls):
            if item.flag is not None:
                group.add_argument(item.flag, action="append" if item.many else "store",
                                   metavar=item.metavar, help=item.help)


def given(args: argparse.Namespace) -> dict[str, str | Sequence[str]]:
    """The directive flags set on the command line, in declaration order."""
    found = {item.flag: getattr(args, dest(item.flag))
             for cls in _SCHEMA for _, item in directives(cls) if item.flag is not None}
    return {flag: value for flag, value in found.items() if value is not None}


def from_flags(flags: Flags) -> ProxyConfig:
    """The config the flags describe; a mistake is a one-line UsageError naming the flag."""
    try:
        return _from_flags(flags)
    except Invalid as error:
        raise UsageError(str(error)) from None


def _label(flag: str, value: str) -> str:
    return f"{flag} {show(value)}"


def _read(cls: type, flags: Flags) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Every directive of ``cls`` whose flag was given, parsed, each value blamed on its
    flag and value (``--upstream "a:1"``)."""

    def given(item: Directive) -> list[tuple[str, object]] | None:
        raw = flags.get(item.flag) if item.flag is not None else None
        if raw is None or item.flag is None:
            return None
        texts = [raw] if isinstance(raw, str) else list(raw)
        return [(_label(item.flag, text), text) for text in texts]

    return parse_directives(cls, given)


def _from_flags(flags: Flags) -> ProxyConfig:
    if not flags.get("--listen"):
        raise Invalid("required (e.g. --listen :8080)", "--listen")
    if not flags.get("--upstream"):
        raise Invalid("required (e.g. --upstream 127.0.0.1:8010)", "--upstream")
    method = flags.get("--balance")
    if isinstance(method, str):  # "least-conn" is how a flag would be spelled
        with blame(_label("--balance", method)):
            if method.replace("-", "_") == "hash":
                fail("needs a hash key, which only a config file can set (or use ip_hash)")
        flags = {**flags, "--balance": method.replace("-", "_")}
    top, _ = _read(ProxyConfig, flags)
    server, labels = _read(VirtualServer, flags)
    distinct_listeners(server["listeners"], labels["listeners"])
    listen = flags["--listen"] or ()
    check_tls(server["listeners"], [listen] if isinstance(listen, str) else list(listen),
              server.get("ssl_certificate"), server.get("ssl_certificate_key"),
              ("--ssl-certificate", "--ssl-certificate-key", "--listen"))
    group, labels = _read(UpstreamConfig, flags)
    check_servers(group["servers"], group.get("balance", "round_robin"), labels["servers"])
    location, _ = _read(Location, flags)
    proxy_pass = ProxyPass("http://backend", "backend", None)
    config = ProxyConfig(
        **top,
        upstreams=MappingProxyType({"backend": UpstreamConfig("backend", **group)}),
        servers=(VirtualServer(**server, locations=(
            Location("/", proxy_pass, **location, label="--upstream"),)),),
    )
    return resolve_paths(config, Path.cwd())
