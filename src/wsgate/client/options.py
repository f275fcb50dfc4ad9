"""Pure helpers for the client commands: turning what the user typed into checked values.

Nothing here does I/O, so every rule about URLs, headers, slash commands and waits can be
tested without a socket; each mistake becomes a one-line :class:`UsageError` (or
:class:`SlashError` for a slash command, which only warns and keeps the session open).
"""

from __future__ import annotations

import base64
import json
import math
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from websockets.exceptions import InvalidProxy, InvalidURI, ProtocolError
from websockets.frames import Close
from websockets.proxy import parse_proxy
from websockets.uri import parse_uri

from wsgate import values
from wsgate.errors import UsageError
from wsgate.terminal import escape, escape_lines

#: RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

#: Close codes that end a session well: the ones websockets' iterator treats as OK.
OK_CLOSE_CODES = frozenset({1000, 1001, 1005})

#: A control frame's payload (ping, pong, close reason + 2) is at most 125 bytes.
MAX_CONTROL_PAYLOAD = 125


def normalize_url(text: str) -> str:
    """A ``ws://`` or ``wss://`` URL from what was typed; no scheme means ``ws://``.

    wscat's own test (``/^[a-z][a-z0-9.+-]*:/``) takes ``localhost:8080`` for a URL with
    the scheme ``localhost``; looking for ``://`` instead gives that the ``ws://`` it needs.
    """
    url = text.strip()
    if not url:
        raise UsageError("the URL is empty")
    if "://" not in url:
        url = f"ws://{url}"
    scheme, rest = url.split("://", 1)
    if scheme.lower() not in ("ws", "wss"):
        raise UsageError(f"bad URL scheme {scheme}:// in {text} (use ws:// or wss://)")
    url = f"{scheme.lower()}://{rest}"
    check_url(url)
    return url


def check_url(url: str) -> None:
    """Raise :class:`UsageError` unless ``url`` is a WebSocket URL websockets can dial."""
    try:
        port = urllib.parse.urlsplit(url).port
        if port == 0:
            raise ValueError("port 0")
        parse_uri(url)
    except ValueError as error:
        raise UsageError(f"bad URL {url}: bad port") from error
    except InvalidURI as error:
        raise UsageError(f"bad URL {url}: {error.msg}") from error


def redirect_target(current: str, location: str) -> str:
    """Where a ``Location`` header sends a handshake, as a ws:// or wss:// URL.

    A relative location is resolved against the current URL; http(s) locations become
    ws(s), as Node's ws (hence wscat -L) accepts them; a wss -> ws downgrade is refused.
    """
    target = urllib.parse.urljoin(current, location.strip())
    scheme, sep, rest = target.partition("://")
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower())
    if not sep or scheme not in ("ws", "wss"):
        raise ValueError(f"cannot follow a redirect to {target}")
    target = f"{scheme}://{rest}"
    if current.startswith("wss://") and scheme == "ws":
        raise ValueError(f"refusing to follow a redirect from wss:// to {target}")
    return target


def same_origin(first: str, second: str) -> bool:
    """Whether two URLs share scheme, host and port (credentials may follow a redirect)."""
    a, b = parse_uri(first), parse_uri(second)
    return (a.secure, a.host, a.port) == (b.secure, b.host, b.port)


def parse_header(text: str) -> tuple[str, str]:
    """``Name: value`` (as wscat's ``-H``) into a checked name and a stripped value."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not _TOKEN.match(name):
        raise UsageError(f"bad header {text!r} (expected NAME:VALUE)")
    if "\r" in value or "\n" in value:
        raise UsageError(f"bad header {text!r} (a value cannot span lines)")
    return name, value.strip()


def basic_auth(text: str) -> str:
    """The ``Authorization`` value for ``--auth user:pass``."""
    if ":" not in text:
        raise UsageError(f"bad --auth value {text!r} (expected USER:PASSWORD)")
    return "Basic " + base64.b64encode(text.encode()).decode("ascii")


def normalize_proxy(text: str) -> str:
    """``--proxy [protocol://]host[:port]`` as a URL; no scheme means an ``http://`` proxy."""
    proxy = text.strip()
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    scheme = proxy.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise UsageError(f"bad --proxy {text} (only http:// and https:// CONNECT proxies)")
    try:
        parse_proxy(proxy)
    except InvalidProxy as error:
        raise UsageError(f"bad --proxy {text}: {error.msg}") from error
    except ValueError as error:
        raise UsageError(f"bad --proxy {text}: bad port") from error
    return proxy


def parse_wait(text: str) -> float:
    """``--wait``: a duration, or ``-1`` (wscat's "hold open"), which is forever (``inf``)."""
    if text.strip() == "-1":
        return math.inf
    try:
        return values.duration(text, zero=True)
    except values.Invalid:
        values.must("", f"{values.DURATION_TEXT}, or -1 to hold the connection open", text)


def format_close(code: int, reason: str) -> str:
    """wscat's line for the end of a connection."""
    return f'Disconnected (code: {code}, reason: "{reason}")'


# -- slash commands ------------------------------------------------------------------------


class SlashError(Exception):
    """A slash command that cannot be sent; the session prints it and carries on."""


@dataclass(frozen=True)
class Ping:
    """``/ping [data]``."""

    data: bytes


@dataclass(frozen=True)
class Pong:
    """``/pong [data]``."""

    data: bytes


@dataclass(frozen=True)
class CloseCommand:
    """``/close [code [reason]]``."""

    code: int
    reason: str


SlashCommand = Ping | Pong | CloseCommand


def parse_slash(line: str) -> SlashCommand | None:
    """The control frame a ``--slash`` line asks for, or ``None`` for an ordinary message.

    As in wscat, words are split on whitespace and the close reason is the rest of the
    line joined by single spaces; ping and pong data is the rest of the line too (wscat
    keeps only the first word, which is the same for the one-word payloads it shows).
    """
    if not line.startswith("/"):
        return None
    words = line.split()
    name = words[0][1:] if words else ""
    rest = " ".join(words[1:])
    if name in ("ping", "pong"):
        data = rest.encode()
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise SlashError(f"{name} data is too long ({len(data)} bytes, at most 125)")
        return Ping(data) if name == "ping" else Pong(data)
    if name == "close":
        code = 1000
        if len(words) >= 2:
            try:
                code = int(words[1])
            except ValueError:
                raise SlashError(f"bad close code {words[1]!r} (a number such as 1000)") from None
        reason = " ".join(words[2:])
        try:
            Close(code, reason).check()
        except ProtocolError:
            raise SlashError(f"bad close code {code} (1000-1003, 1007-1014 or 3000-4999)") from None
        if len(reason.encode()) > MAX_CONTROL_PAYLOAD - 2:
            raise SlashError("close reason is too long (at most 123 bytes)")
        return CloseCommand(code, reason)
    raise SlashError("Unrecognized slash command.")


# -- showing messages ----------------------------------------------------------------------


def indented_json(text: str) -> str | None:
    """``text`` indented if it is a JSON object or array, else ``None``."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def pretty_json(text: str) -> str:
    """``text`` indented if it is a JSON object or array; anything else comes back as is."""
    indented = indented_json(text)
    return text if indented is None else indented


def hex_bytes(data: bytes) -> str:
    """How a binary message shows on a terminal: its size and bytes in hex."""
    return f"[binary, {len(data)} bytes] {data.hex(' ')}".rstrip()


def terminal_text(message: str | bytes, *, json_pretty: bool) -> str:
    """An incoming message as the terminal shows it (without the ``< `` prefix): control
    characters escaped, so a message cannot drive the terminal; pretty JSON keeps its
    line breaks (any in its strings are escaped already)."""
    if isinstance(message, bytes):
        return hex_bytes(message)
    indented = indented_json(message) if json_pretty else None
    return escape(message) if indented is None else escape_lines(indented)


def pipe_bytes(message: str | bytes, *, json_pretty: bool) -> bytes:
    """An incoming message as one stdout line in pipe mode: text as UTF-8, binary raw."""
    if isinstance(message, bytes):
        return message + b"\n"
    text = pretty_json(message) if json_pretty else message
    return text.encode("utf-8", "replace") + b"\n"


def control_notice(kind: str, data: bytes) -> str:
    """wscat's ``-P`` line for a received ping or pong."""
    return f'Received {kind} (data: "{data.decode("utf-8", "replace")}")'


def backoff(first: float = 0.5, factor: float = 2.0, limit: float = 30.0) -> Iterator[float]:
    """Reconnection delays: 0.5 s, doubling, never more than 30 s."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, limit)
