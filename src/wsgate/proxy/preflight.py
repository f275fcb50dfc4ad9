"""Everything a configuration needs from the file system, opened once, before any worker
starts: the TLS context, the access log and the error log.

Running and ``--check`` both go through :func:`open_resources`, so ``--check`` finds every
mistake that running would (``nginx -t`` does the same). A file that cannot be used is a
:class:`~wsgate.errors.ConfigError` (or, for flags, a UsageError) naming the key or flag.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from wsgate.errors import ConfigError, UsageError
from wsgate.proxy.accesslog import AccessLog
from wsgate.proxy.config import ProxyConfig, directives
from wsgate.proxy.errorlog import ErrorLog


@dataclass(slots=True)
class Resources:
    tls: ssl.SSLContext | None
    access_log: AccessLog
    error_log: ErrorLog

    def close(self) -> None:
        self.access_log.close()
        self.error_log.close()


def _mistake(config: ProxyConfig, field: str, message: str) -> UsageError:
    """A mistake about ``field``'s value, named as the user wrote it: key or flag."""
    declared = dict(directives(ProxyConfig))[field]
    if config.source == "command line":
        return UsageError(f"{declared.flag}: {message}")
    return ConfigError(f"{config.source}: {declared.key}: {message}")


def tls_context(config: ProxyConfig) -> ssl.SSLContext | None:
    """The server-side TLS context of the ssl listeners, with the chain loaded."""
    tls = config.tls
    if tls is None:
        return None
    for field, path in (("ssl_certificate", tls.certificate), ("ssl_certificate_key", tls.key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise _mistake(config, field, f"cannot read {path}: {error.strerror}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "reason", None) or error
        raise _mistake(config, "ssl_certificate",
                       f"cannot load {tls.certificate} with its key: {reason}") from None
    return context


def _cannot_open(config: ProxyConfig, field: str, path: Path | None,
                 error: OSError) -> UsageError:
    return _mistake(config, field, f"cannot open {path}: {error.strerror}")


def open_resources(config: ProxyConfig) -> Resources:
    """Load the TLS chain and open both logs, or raise naming the one that failed."""
    context = tls_context(config)
    access_log, error_log = open_logs(config)
    return Resources(context, access_log, error_log)


def open_logs(config: ProxyConfig) -> tuple[AccessLog, ErrorLog]:
    """Open both logs (at start, on a reload, or again for SIGUSR1), or raise naming the
    one that failed."""
    try:
        access_log = AccessLog.open(config.access_log)
    except OSError as error:
        raise _cannot_open(config, "access_log", config.access_log.path, error) from None
    try:
        error_log = ErrorLog(config.error_log)
    except OSError as error:
        access_log.close()
        raise _cannot_open(config, "error_log", config.error_log.path, error) from None
    return access_log, error_log


def check(config: ProxyConfig) -> None:
    """What ``--check`` does beyond reading the config: open everything, then close it."""
    open_resources(config).close()
