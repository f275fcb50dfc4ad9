"""The access log: nginx's ``combined`` format by default, one JSON object a line, or a
``log_format`` of the configuration (:mod:`wsgate.proxy.logformat`).

A WebSocket is logged once, when its tunnel closes, with status 101, the bytes each way
and how long it lived. Lines are written with one ``write`` each, as nginx does, so
several worker processes can share a file without interleaving inside a line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from wsgate.proxy.logformat import Entry, LogFormat, time_local

if TYPE_CHECKING:
    from wsgate.proxy.directives import AccessLogConfig

__all__ = ["BUILTIN", "AccessLog", "Entry", "LineFormat", "as_json", "combined", "combined_line",
           "json_line", "line_format"]

LineFormat = Callable[[Entry], bytes]
"""An entry to its line, newline included."""


_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


def _hex(match: re.Match[str]) -> str:
    return f"\\x{ord(match[0]):02X}"


def _quote(text: str) -> str:
    """nginx escapes ``"``, ``\\`` and control bytes as ``\\xHH`` in logged strings."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_hex, text)


def combined(entry: Entry) -> str:
    """nginx's ``combined``: ``$remote_addr - $remote_user [$time_local] "$request" $status
    $body_bytes_sent "$http_referer" "$http_user_agent"``."""
    return (
        f'{entry.remote_addr} - - [{time_local(entry.time_local)}] "{_quote(entry.request)}" '
        f'{entry.status} {entry.body_bytes_sent} "{_quote(entry.http_referer)}" '
        f'"{_quote(entry.http_user_agent)}"'
    )


_JSON_FIELDS = tuple(f.name for f in dataclasses.fields(Entry) if f.name != "variables")


def as_json(entry: Entry) -> str:
    fields = {name: getattr(entry, name) for name in _JSON_FIELDS}
    fields["time_local"] = time_local(entry.time_local)
    fields["request_time"] = round(entry.request_time, 3)
    for key in ("upstream_connect_time", "upstream_header_time", "upstream_response_time"):
        if fields[key] is not None:
            fields[key] = round(fields[key], 3)
    return json.dumps(fields, separators=(",", ":"))


def combined_line(entry: Entry) -> bytes:
    return (combined(entry) + "\n").encode("utf-8", "replace")


def json_line(entry: Entry) -> bytes:
    return (as_json(entry) + "\n").encode("utf-8", "replace")


BUILTIN: dict[str, LineFormat] = {"combined": combined_line, "json": json_line}
"""The formats every configuration has (nginx predefines ``combined``; ``json`` is wsgate's)."""


def line_format(name: str, formats: Mapping[str, LogFormat] | None = None) -> LineFormat:
    """The writer of format ``name``: a built-in one, else a ``log_format`` of the config."""
    if formats is not None and name in formats and name != "combined":
        return formats[name].line  # a log_format "json" of the config's own wins
    if name in BUILTIN:
        return BUILTIN[name]
    raise ValueError(f"unknown log_format {name!r}")


class AccessLog:
    """Where lines go: a file descriptor (stdout, stderr or an opened file), or nowhere."""

    def __init__(self, fd: int | None, json_format: bool = False, owned: bool = False, *,
                 line: LineFormat | None = None) -> None:
        self._fd = fd
        self._owned = owned
        self._line = line or (json_line if json_format else combined_line)
        self.variables = False
        """The format logs request variables: entries keep them (else they would hold a
        tunnel's request head for nothing, for its whole life)."""

    @classmethod
    def open(cls, config: AccessLogConfig,
             formats: Mapping[str, LogFormat] | None = None) -> AccessLog:
        """Open the destination; an OSError says the file cannot be opened. ``formats`` are
        the configuration's ``log_format``s, by name; ``config.format`` names one of them,
        or "combined" or "json"."""
        line = line_format(config.format, formats)
        chosen = (formats or {}).get(config.format)
        if config.destination == "off":
            return cls(None, line=line)
        if config.destination in ("stdout", "stderr"):
            log = cls(1 if config.destination == "stdout" else 2, line=line)
        else:
            assert config.path is not None
            fd = os.open(config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            log = cls(fd, owned=True, line=line)
        log.variables = chosen is not None and chosen.uses_request_variables
        return log

    def write(self, entry: Entry) -> None:
        if self._fd is None:
            return
        line = self._line(entry)
        # A full disk or a closed pipe must not take a connection down with it.
        with contextlib.suppress(OSError):
            os.write(self._fd, line)

    def close(self) -> None:
        """Close the file, if this opened one (stdout and stderr stay open)."""
        if self._owned and self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
