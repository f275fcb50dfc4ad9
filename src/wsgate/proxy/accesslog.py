"""The access log: nginx's ``combined`` format by default, or one JSON object a line.

A WebSocket is logged once, when its tunnel closes, with status 101, the bytes each way
and how long it lived. Lines are written with one ``write`` each, as nginx does, so
several worker processes can share a file without interleaving inside a line.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass

from wsgate.proxy.directives import AccessLogConfig


@dataclass(slots=True)
class Entry:
    remote_addr: str
    request: str
    status: int
    body_bytes_sent: int
    http_referer: str = "-"
    http_user_agent: str = "-"
    request_time: float = 0.0
    upstream_addr: str = "-"
    upstream_connect_time: float | None = None
    upstream_header_time: float | None = None
    upstream_response_time: float | None = None
    bytes_received: int = 0
    """Bytes from the client after the head (for a tunnel: client to upstream)."""
    time_local: float = 0.0


_last_second: list[tuple[int, str]] = [(-1, "")]


def _time_local(when: float) -> str:
    """nginx's $time_local, formatted once per second (as nginx caches its time strings)."""
    second = int(when)
    cached_second, text = _last_second[0]
    if second != cached_second:
        text = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
        _last_second[0] = (second, text)
    return text


def _quote(text: str) -> str:
    """nginx escapes ``"``, ``\\`` and control bytes as ``\\xHH`` in logged strings."""
    return "".join(
        f"\\x{ord(c):02X}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )


def combined(entry: Entry) -> str:
    """nginx's ``combined``: ``$remote_addr - $remote_user [$time_local] "$request" $status
    $body_bytes_sent "$http_referer" "$http_user_agent"``."""
    return (
        f'{entry.remote_addr} - - [{_time_local(entry.time_local)}] "{_quote(entry.request)}" '
        f'{entry.status} {entry.body_bytes_sent} "{_quote(entry.http_referer)}" '
        f'"{_quote(entry.http_user_agent)}"'
    )


def as_json(entry: Entry) -> str:
    fields = asdict(entry)
    fields["time_local"] = _time_local(entry.time_local)
    fields["request_time"] = round(entry.request_time, 3)
    for key in ("upstream_connect_time", "upstream_header_time", "upstream_response_time"):
        if fields[key] is not None:
            fields[key] = round(fields[key], 3)
    return json.dumps(fields, separators=(",", ":"))


class AccessLog:
    """Where lines go: a file descriptor (stdout, stderr or an opened file), or nowhere."""

    def __init__(self, fd: int | None, json_format: bool, owned: bool = False) -> None:
        self._fd = fd
        self._owned = owned
        self._format = as_json if json_format else combined

    @classmethod
    def open(cls, config: AccessLogConfig) -> AccessLog:
        """Open the destination; an OSError says the file cannot be opened."""
        json_format = config.format == "json"
        if config.destination == "off":
            return cls(None, json_format)
        if config.destination in ("stdout", "stderr"):
            return cls(1 if config.destination == "stdout" else 2, json_format)
        assert config.path is not None
        fd = os.open(config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return cls(fd, json_format, owned=True)

    def write(self, entry: Entry) -> None:
        if self._fd is None:
            return
        line = (self._format(entry) + "\n").encode("utf-8", "replace")
        # A full disk or a closed pipe must not take a connection down with it.
        with contextlib.suppress(OSError):
            os.write(self._fd, line)

    def close(self) -> None:
        """Close the file, if this opened one (stdout and stderr stay open)."""
        if self._owned and self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
