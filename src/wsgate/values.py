"""Value syntax shared by every command and the proxy's configuration: durations, sizes,
ports and ``host:port``.

One syntax everywhere, nginx's: a duration is ``500ms``, ``10s``, ``1m30s`` or a bare
number of seconds; a size is ``8k``, ``1m`` or a bare number of bytes. So
``wsgate echo --ping-interval 20s`` and ``proxy_read_timeout = "300s"`` read alike.

A parser takes what TOML or a flag gave and returns it checked, or raises :class:`Invalid`
saying what is wrong; the caller says where (:func:`blame`), so a message reads
``upstream.websocket.server[1]: weight must be a positive integer, got "two"``. Pure.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

T = TypeVar("T")

DURATION_TEXT = 'a duration like "60s", "5m" or "500ms"'
SIZE_TEXT = 'a size like "8k", "1m" or "1g"'

_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)\s*")
_TIME = re.compile(rf"(?:{_TIME_PART.pattern})+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SIZE = re.compile(r"(\d+)([kKmMgG]?)")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)


class Invalid(ValueError):
    """A value is wrong: ``where`` (a key path or a flag) is filled in by the nearest caller."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def fail(message: str) -> NoReturn:
    raise Invalid(message)


@contextmanager
def blame(where: str) -> Iterator[None]:
    """Blame ``where`` for a mistake found inside, unless a deeper key already took the blame.

    A deeper blame that is relative (``.weight``, ``[2]``: a key of a table being read, that
    does not know where the table sits) is put after ``where``.
    """
    try:
        yield
    except Invalid as error:
        if error.where is None:
            error.where = where
        elif error.where.startswith((".", "[")):
            error.where = where + error.where
        raise


def show(value: object) -> str:
    """A value as it looks in TOML, for "got ..." in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def must(label: str, expected: str, value: object) -> NoReturn:
    """Fail with "LABEL must be EXPECTED, got VALUE" (no label: "must be ...")."""
    subject = f"{label} must" if label else "must"
    fail(f"{subject} be {expected}, got {show(value)}")


# -- numbers -----------------------------------------------------------------------------------


def duration(value: object, *, zero: bool = False, label: str = "") -> float:
    """Seconds from nginx time syntax ("300s", "5m", "1m30s", "500ms", "10") or a number.

    ``zero``: whether 0 is allowed (it usually means "off" or "no limit").
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        must(label, DURATION_TEXT, value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _TIME.fullmatch(text):
            seconds = sum(float(n) * _TIME_UNITS[unit] for n, unit in _TIME_PART.findall(text))
        else:
            must(label, DURATION_TEXT, value)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        must(label, DURATION_TEXT, value)
    if seconds == 0 and not zero:
        must(label, "more than 0", value)
    return seconds


def size(value: object, *, zero: bool = False, label: str = "") -> int:
    """Bytes from nginx size syntax ("8k", "1m", "1g") or a plain integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        number = int(match[1]) * _SIZE_UNITS[match[2].lower()]
    else:
        must(label, SIZE_TEXT, value)
    if number < 0:
        must(label, SIZE_TEXT, value)
    if number == 0 and not zero:
        must(label, "more than 0", value)
    return number


def integer(value: object, *, minimum: int, label: str = "") -> int:
    """An integer at least ``minimum`` (0 or 1). A string of digits counts too: nginx writes
    every value as text, and a server line's parameters are text."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    must(label, "a positive integer" if minimum >= 1 else "a non-negative integer", value)


def port(text: str, *, zero: bool) -> int:
    """A TCP port; ``zero``: whether 0 ("any free port", for listening) is allowed."""
    low = 0 if zero else 1
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= 65535:
        fail(f"port must be a number from {low} to 65535, got {show(text)}")
    return int(text)


# -- addresses ---------------------------------------------------------------------------------


def join_address(host: str, port: int) -> str:
    """``host:port`` as a user writes it, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(text: str) -> tuple[str, str | None]:
    """``host`` and ``port`` (None if missing) from ``host:port`` or ``[v6]:port``."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            fail(f'missing "]" after the IPv6 address in {show(text)}')
        host, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            fail(f"{show(host)} is not an IPv6 address")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            fail(f'expected ":PORT" after "]", got {show(rest)}')
        return host, rest[1:]
    if text.count(":") > 1:
        fail('an IPv6 address needs brackets, e.g. "[::1]:8010"')
    host, colon, number = text.partition(":")
    return host, (number if colon else None)


def check_host(host: str) -> str:
    """A host name, an IPv4 address, or a bare IPv6 address (from inside brackets)."""
    if ":" in host:
        return host
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            fail(f"{show(host)} is not an IPv4 address")
        return host
    if not _HOST_NAME.fullmatch(host):
        fail(f"{show(host)} is not a valid host name")
    return host


def host_port(text: str) -> tuple[str, int]:
    """A server's address: a host (name, IPv4 or [IPv6]) and a port, both required."""
    host, number = split_address(text)
    if not host:
        fail("missing host")
    if number is None:
        fail("missing port")
    return check_host(host), port(number, zero=False)


# -- command-line flags ------------------------------------------------------------------------


def flag(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """An argparse ``type=`` that parses with ``parse``; a mistake reads like a config's
    ("argument --ping-interval: must be a duration like ..., got "soon"")."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except Invalid as error:
            raise argparse.ArgumentTypeError(error.message) from None

    convert.__name__ = name  # argparse names the type in some of its own messages
    return convert


def duration_flag(*, zero: bool) -> Callable[[str], float]:
    """A duration flag: ``20s``, ``500ms``, ``1m30s`` or a bare number of seconds."""
    return flag(lambda text: duration(text, zero=zero), "duration")


def size_flag(*, zero: bool) -> Callable[[str], int]:
    """A size flag: ``64k``, ``1m`` or a bare number of bytes."""
    return flag(lambda text: size(text, zero=zero), "size")


def port_flag(*, zero: bool) -> Callable[[str], int]:
    """A port flag; ``zero`` allows 0 (pick a free port)."""
    return flag(lambda text: port(text.strip(), zero=zero), "port")
