"""The error log: nginx's ``error_log`` through :mod:`logging`.

Every module of the proxy logs to its own logger (``wsgate.proxy.connection``,
``wsgate.proxy.server``, ...); this module sends the ``wsgate.proxy`` tree to stderr or a
file, at nginx's levels, in nginx's line form::

    2026/12/01 14:28:53 [error] 4242: connect() to 127.0.0.1:8011 failed: connection refused ...

Each line is one ``write``, as in the access log, so worker processes sharing the file do
not interleave inside a line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from wsgate.proxy.directives import ErrorLogConfig, LogLevel

ROOT = "wsgate.proxy"
NOTICE = 25
ALERT = 55
EMERG = 60
LEVELS: dict[LogLevel, int] = {
    "debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE, "warn": logging.WARNING,
    "error": logging.ERROR, "crit": logging.CRITICAL, "alert": ALERT, "emerg": EMERG,
}
_NAMES = {number: name for name, number in LEVELS.items()}


class _Formatter(logging.Formatter):
    """``YYYY/MM/DD HH:MM:SS [level] PID: message``, as nginx writes it."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = _NAMES.get(record.levelno, record.levelname.lower())
        return f"{when} [{level}] {record.process}: {record.getMessage()}"


class _FdHandler(logging.Handler):
    """One ``os.write`` a record; a full disk or a closed pipe loses the line, not the
    connection that was being logged about."""

    def __init__(self, fd: int, owned: bool) -> None:
        super().__init__()
        self.fd = fd
        self.owned = owned
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        line = (self.format(record) + "\n").encode("utf-8", "replace")
        with contextlib.suppress(OSError):
            os.write(self.fd, line)

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.owned = False
        super().close()


class ErrorLog:
    """Where the proxy's error lines go, opened once before the workers fork."""

    def __init__(self, config: ErrorLogConfig) -> None:
        """Open the destination; an OSError says the file cannot be opened."""
        self.config = config
        if config.path is None:
            self.handler = _FdHandler(2, owned=False)
        else:
            fd = os.open(config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.handler = _FdHandler(fd, owned=True)

    def install(self) -> None:
        """Send the ``wsgate.proxy`` loggers here, from ``config.level`` up, and nowhere else."""
        logger = logging.getLogger(ROOT)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(self.handler)
        logger.setLevel(LEVELS[self.config.level])
        logger.propagate = False

    def close(self) -> None:
        logging.getLogger(ROOT).removeHandler(self.handler)
        self.handler.close()
