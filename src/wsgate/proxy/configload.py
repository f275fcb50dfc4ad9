"""A configuration file, in TOML or in nginx's syntax, read and made ready to run.

Reading (:mod:`~wsgate.proxy.configfile` for TOML, :mod:`~wsgate.proxy.nginxconf` for
nginx's syntax, both into the same schema) is followed by the checks that need the whole
configuration or the system: the routes are built once (nesting of locations, default
servers), ``user`` must exist, and each upstream server's host name becomes every address
it resolves to, as nginx resolves them when it reads its file. Any mistake is one
:class:`~wsgate.errors.ConfigError` line: ``file: key: what`` for TOML, nginx's
``what in file:line`` for nginx's syntax.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import logging
import os
import pwd
import socket
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from wsgate.errors import ConfigError
from wsgate.proxy import configfile, routes
from wsgate.proxy.config import ProxyConfig, UpstreamConfig
from wsgate.proxy.directives import ServerConfig
from wsgate.values import Invalid

log = logging.getLogger(__name__)

Syntax = Literal["toml", "nginx"]


def syntax_of(path: str, given: str | None = None) -> Syntax:
    """``--format`` if given; else TOML for a ``.toml`` file and nginx's syntax otherwise."""
    if given is not None:
        return "nginx" if given == "nginx" else "toml"
    return "toml" if path.lower().endswith(".toml") else "nginx"


def read(path: str, syntax: str | None = None) -> ProxyConfig:
    """Read, check and resolve the configuration at ``path`` (in ``syntax``: "toml",
    "nginx", or None to go by its name)."""
    chosen = syntax_of(path, syntax)
    if chosen == "toml":
        config = configfile.load(path)
    else:
        from wsgate.proxy import nginxconf

        translated = nginxconf.translate(Path(path))
        origins = {label: f"{origin.file}:{origin.line}"
                   for label, origin in translated.origins.items()}
        config = configfile.from_document(translated.document, Path(path).absolute().parent,
                                          path, origins, translated.ignored, "nginx")
    return ready(config)


def ready(config: ProxyConfig) -> ProxyConfig:
    """The checks of a whole configuration, and its upstream names resolved."""
    with _named(config):
        routes.check(config)
        if config.user is not None:
            user_ids(config.user, "user")
        return dataclasses.replace(config, upstreams=MappingProxyType(
            {name: _resolved(group, f"upstream.{name}")
             for name, group in config.upstreams.items()}))


class _named:
    """Turn an Invalid into the ConfigError of the file it is about."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if isinstance(error, Invalid):
            raise configfile.config_error(self.config.source, self.config.origins,
                                          error) from None


def user_ids(user: tuple[str, str | None], label: str) -> tuple[int, int]:
    """nginx ``user``: the user's uid and the group's gid (the user's own group if none
    is named)."""
    name, group = user
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise Invalid(f'getpwnam("{name}") failed: no such user', label) from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise Invalid(f'getgrnam("{group}") failed: no such group', label) from None
    return entry.pw_uid, gid


def _resolved(group: UpstreamConfig, label: str) -> UpstreamConfig:
    """Each server named by host becomes one server per address (nginx: "localhost" is
    127.0.0.1 and ::1, each with the line's parameters)."""
    servers: list[ServerConfig] = []
    for index, server in enumerate(group.servers):
        try:
            ipaddress.ip_address(server.host)
            servers.append(server)
            continue
        except ValueError:
            pass
        try:
            found = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise Invalid(f'host not found in upstream "{server.address}"',
                          f"{label}.server[{index}]") from None
        addresses = list(dict.fromkeys(str(item[4][0]) for item in found))
        seen = {(item.host, item.port) for item in servers}
        servers.extend(dataclasses.replace(server, host=address) for address in addresses
                       if (address, server.port) not in seen)
    if servers == list(group.servers):
        return group
    return dataclasses.replace(group, servers=tuple(servers))


def drop_privileges(config: ProxyConfig) -> None:
    """A worker's: become ``user`` after the master bound the sockets, as nginx does (only
    a process started as root can; others keep running as they are, as nginx does)."""
    if config.user is None or os.geteuid() != 0:
        return
    try:
        uid, gid = user_ids(config.user, "user")
    except Invalid as error:
        raise ConfigError(str(error)) from None
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
