"""Everything a configuration needs from the file system, opened once, before any worker
starts: the TLS context, the access log and the error log.

Running and ``--check`` both go through :func:`open_resources`, so ``--check`` finds every
mistake that running would (``nginx -t`` does the same). A file that cannot be used is a
:class:`~wsgate.errors.ConfigError` (or, for flags, a UsageError) naming the key or flag.
"""

from __future__ import annotations

import logging
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsgate.errors import ConfigError, UsageError
from wsgate.proxy.accesslog import AccessLog
from wsgate.proxy.config import ProxyConfig, VirtualServer, directives
from wsgate.proxy.errorlog import ErrorLog
from wsgate.proxy.location_values import protocol_range
from wsgate.proxy.logformat import LogFormat, compile_format
from wsgate.proxy.server_names import ServerNames, valid_host
from wsgate.proxy.variables import is_request_variable
from wsgate.values import Invalid

log = logging.getLogger(__name__)

TLSContexts = dict[str, ssl.SSLContext]
"""The TLS context of each ssl listening address: its default server's certificate, and
SNI choosing another server's (nginx's per-server ssl_certificate)."""


@dataclass(slots=True)
class Resources:
    tls: TLSContexts
    access_log: AccessLog
    error_log: ErrorLog

    def close(self) -> None:
        self.access_log.close()
        self.error_log.close()


def _mistake(config: ProxyConfig, label: str, message: str, nginx: str = "") -> UsageError:
    """A mistake about the value at ``label`` (a key path), named as the user wrote it: the
    flag, the TOML key, or (``nginx``'s wording) the nginx file and line."""
    if config.source == "command line":
        field = label.rsplit(".", 1)[-1]
        flag = next((declared.flag for cls in (ProxyConfig, VirtualServer)
                     for _, declared in directives(cls) if declared.key == field), field)
        return UsageError(f"{flag}: {message}")
    origin = config.origin(label)
    if origin is not None:
        return ConfigError(f"{nginx or message} in {origin}")
    return ConfigError(f"{config.source}: {label}: {message}")


def _key(server: VirtualServer, name: str) -> str:
    """A TLS key's path: in the server's table, or at the top level it inherited from."""
    return f"{server.tls_label}.{name}" if server.tls_label else name


def server_context(config: ProxyConfig, server: VirtualServer) -> ssl.SSLContext:
    """A server's TLS context: its certificate chain and key, its ssl_protocols and
    ssl_ciphers."""
    tls = server.tls
    assert tls is not None
    for name, path in (("ssl_certificate", tls.certificate), ("ssl_certificate_key", tls.key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            what = "certificate" if name == "ssl_certificate" else "certificate key"
            raise _mistake(config, _key(server, name), f"cannot read {path}: {error.strerror}",
                           f'cannot load {what} "{path}": {error.strerror}') from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    context.minimum_version, context.maximum_version = protocol_range(server.ssl_protocols)
    try:
        if server.ssl_ciphers is not None:
            context.set_ciphers(server.ssl_ciphers)
    except ssl.SSLError:
        raise _mistake(config, _key(server, "ssl_ciphers"),
                       f"no cipher matches {server.ssl_ciphers!r}",
                       f'SSL_CTX_set_cipher_list("{server.ssl_ciphers}") failed') from None
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "reason", None) or error
        raise _mistake(config, _key(server, "ssl_certificate"),
                       f"cannot load {tls.certificate} with its key: {reason}",
                       f'cannot load certificate "{tls.certificate}" with its key: '
                       f"{reason}") from None
    return context


def tls_context(config: ProxyConfig) -> TLSContexts:
    """Every ssl address's context. An address whose servers have several certificates
    picks one by SNI, as nginx does: the server the name would choose, else the
    address's default server."""
    by_files: dict[object, ssl.SSLContext] = {}
    contexts: dict[int, ssl.SSLContext] = {}
    for server in config.servers:
        if server.tls is None:
            continue
        files = (server.tls, server.ssl_protocols, server.ssl_ciphers)
        if files not in by_files:
            by_files[files] = server_context(config, server)
        contexts[id(server)] = by_files[files]
    found: TLSContexts = {}
    for address, entries in _ssl_addresses(config).items():
        names: ServerNames[ssl.SSLContext | None] = ServerNames(
            [(server.names, contexts.get(id(server)), default, server.label)
             for server, default in entries])
        default = names.default
        if default is None:
            continue  # its default server has no certificate: the readers refused that
        if len({id(context) for context in contexts.values()
                if any(contexts.get(id(server)) is context for server, _ in entries)}) > 1:
            default = _with_sni(default, names)
        found[address] = default
    return found


def _ssl_addresses(config: ProxyConfig) -> dict[str, list[tuple[VirtualServer, bool]]]:
    ssl_addresses = {item.address for item in config.listeners if item.ssl}
    entries: dict[str, list[tuple[VirtualServer, bool]]] = {}
    for server in config.servers:
        for item in server.listeners:
            if item.address in ssl_addresses:
                entries.setdefault(item.address, []).append((server, item.default_server))
    return entries


def _with_sni(default: ssl.SSLContext, names: ServerNames[ssl.SSLContext | None]
              ) -> ssl.SSLContext:
    """A context like ``default`` whose handshake switches to the context of the server
    the client's SNI names (none named: the default's)."""

    def choose(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name:
            host = valid_host(name.encode("ascii", "replace"))
            chosen = names.find(host).value if host is not None else None
            if chosen is not None and chosen is not sock.context:
                sock.context = chosen

    default.sni_callback = choose
    _quiet_undecodable_names()
    return default


def _quiet_undecodable_names() -> None:
    """CPython decodes the SNI name before calling the callback, and a client's name that
    is not valid IDNA would print a traceback ("Exception ignored"): the handshake fails,
    as it should, with one info line instead."""
    previous = sys.unraisablehook
    if getattr(previous, "wsgate_sni", False):
        return

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, UnicodeError) and getattr(
                unraisable.object, "__qualname__", "").endswith("_with_sni.<locals>.choose"):
            log.info("TLS handshake refused: the client's SNI name is not valid (%s)",
                     unraisable.exc_value)
            return
        previous(unraisable)

    hook.wsgate_sni = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _cannot_open(config: ProxyConfig, field: str, path: Path | None,
                 error: OSError) -> UsageError:
    return _mistake(config, field, f"cannot open {path}: {error.strerror}",
                    f'open() "{path}" failed ({error.errno}: {error.strerror})')


def open_resources(config: ProxyConfig) -> Resources:
    """Load the TLS chains and open both logs, or raise naming the one that failed."""
    context = tls_context(config)
    access_log, error_log = open_logs(config)
    return Resources(context, access_log, error_log)


def open_logs(config: ProxyConfig) -> tuple[AccessLog, ErrorLog]:
    """Open both logs (at start, on a reload, or again for SIGUSR1), or raise naming the
    one that failed."""
    try:
        access_log = AccessLog.open(config.access_log, formats(config))
    except OSError as error:
        raise _cannot_open(config, "access_log", config.access_log.path, error) from None
    try:
        error_log = ErrorLog(config.error_log)
    except OSError as error:
        access_log.close()
        raise _cannot_open(config, "error_log", config.error_log.path, error) from None
    return access_log, error_log


def formats(config: ProxyConfig) -> dict[str, LogFormat]:
    """The configuration's log_format definitions, compiled."""
    known = set(config.maps)
    found = {}
    for name, item in config.log_formats.items():
        try:
            found[name] = compile_format(item.format, lambda variable: (
                is_request_variable(variable) or variable in known), escape=item.escape)
        except Invalid as error:
            raise _mistake(config, f"log_format.{name}", error.message) from None
    return found


def check(config: ProxyConfig) -> None:
    """What ``--check`` does beyond reading the config: open everything, then close it."""
    open_resources(config).close()
