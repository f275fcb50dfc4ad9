"""The tables and small value rules of the nginx reader (:mod:`wsgate.proxy.nginxconf`).

Kept apart so the walk reads as nginx's contexts and this file as the list of what wsgate
takes, ignores and refuses. Everything here is pure: a rule gets a line's words (already
unescaped as nginx unescapes them) and returns the TOML value, or raises :class:`Refused`
with nginx's own wording; the walker adds ``in FILE:LINE``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any


class Refused(Exception):
    """A line wsgate cannot take, said as nginx says it, without the "in FILE:LINE"."""


#: Directives that cannot change what the proxy sends: accepted and listed as ignored.
IGNORED = frozenset({
    # connections and workers
    "sendfile", "tcp_nopush", "tcp_nodelay", "worker_connections", "multi_accept", "use",
    "accept_mutex", "accept_mutex_delay", "load_module", "worker_rlimit_nofile",
    "worker_cpu_affinity", "worker_priority", "worker_rlimit_core", "working_directory",
    "timer_resolution", "lock_file", "pcre_jit", "daemon", "master_process", "thread_pool",
    # hash table sizing
    "types_hash_max_size", "types_hash_bucket_size", "server_names_hash_bucket_size",
    "server_names_hash_max_size", "proxy_headers_hash_max_size",
    "proxy_headers_hash_bucket_size",
    # compression, buffering, disk
    "gzip", "proxy_buffering", "proxy_buffer_size", "proxy_buffers",
    "proxy_busy_buffers_size", "proxy_request_buffering", "proxy_cache_bypass",
    "proxy_no_cache", "proxy_max_temp_file_size", "client_body_buffer_size",
    "client_body_temp_path", "open_file_cache", "open_log_file_cache", "output_buffers",
    "postpone_output", "aio", "directio",
    # TLS session reuse and tuning
    "ssl_session_cache", "ssl_session_timeout", "ssl_session_tickets",
    "ssl_prefer_server_ciphers", "ssl_dhparam", "ssl_stapling", "ssl_stapling_verify",
    "ssl_ecdh_curve", "ssl_buffer_size",
    # connection closing
    "lingering_close", "lingering_time", "lingering_timeout", "reset_timedout_connection",
    "keepalive_requests", "send_timeout",
    # redirects, charsets and caching headers of static files
    "server_name_in_redirect", "port_in_redirect", "absolute_redirect", "http2", "charset",
    "source_charset", "etag", "if_modified_since", "log_not_found",
})
IGNORED_PREFIXES = ("gzip_", "open_file_cache_", "variables_hash_", "map_hash_",
                    "proxy_temp_")

#: Directives nginx refuses to see twice in one block (``"X" directive is duplicate``).
DUPLICATE = frozenset({
    "worker_processes", "worker_shutdown_timeout", "user", "pid", "http", "proxy_pass",
    "proxy_read_timeout", "proxy_send_timeout", "proxy_connect_timeout",
    "proxy_next_upstream", "proxy_next_upstream_tries", "proxy_next_upstream_timeout",
    "proxy_http_version", "proxy_redirect", "root", "try_files", "client_max_body_size",
    "default_type", "client_header_timeout", "client_body_timeout",
    "large_client_header_buffers", "keepalive_timeout", "server_tokens", "ssl_protocols",
    "ssl_ciphers", "keepalive",
})

#: Directives nginx takes more than once that wsgate takes once per block.
ONCE = {
    "ssl_certificate": "wsgate serves one certificate per server",
    "ssl_certificate_key": "wsgate serves one certificate per server",
    "return": "only the first is ever reached",
}

#: One value, kept as written (durations like "300s", sizes like "10m", paths).
WORD = frozenset({
    "proxy_pass", "proxy_read_timeout", "proxy_send_timeout", "proxy_connect_timeout",
    "proxy_next_upstream_timeout", "root", "client_max_body_size", "default_type",
    "client_header_timeout", "client_body_timeout", "ssl_certificate", "ssl_certificate_key",
    "ssl_ciphers", "worker_shutdown_timeout", "pid",
})
#: The words joined by a space: ``user nginx nginx`` -> "nginx nginx".
JOINED = frozenset({"user", "large_client_header_buffers"})
#: The words as a list.
LIST = frozenset({"ssl_protocols", "try_files", "proxy_next_upstream"})
#: A list with one item per line (nginx adds up repeated lines).
PER_LINE = {"index": False, "server_name": False, "error_page": True}
"""name -> whether a line is one item (its words joined) rather than one item per word."""

#: Keys of the server level that are also top-level defaults, but not location keys.
SERVER_LEVEL = frozenset({
    "client_header_timeout", "large_client_header_buffers", "keepalive_timeout",
    "server_tokens", "ssl_certificate", "ssl_certificate_key", "ssl_protocols",
    "ssl_ciphers",
})

#: nginx's proxy_set_header defaults, less wsgate's own (X-Real-IP and the others are sent
#: by wsgate unless "" removes them; nginx sends none of them unless told).
NGINX_SET_HEADERS = {"Host": "$proxy_host", "X-Real-IP": "", "X-Forwarded-For": "",
                     "X-Forwarded-Proto": ""}
#: proxy_set_header lines wsgate does itself (the WebSocket handshake's headers).
HANDLED_HEADERS = frozenset({"upgrade", "connection"})

_LISTEN_KEPT = frozenset({"ssl", "default_server", "default"})
_LISTEN_IGNORED = frozenset({"http2", "reuseport", "deferred", "bind", "fastopen",
                             "so_keepalive", "ipv6only", "rcvbuf", "sndbuf"})
_LISTEN_REFUSED = frozenset({"proxy_protocol", "quic", "accept_filter", "setfib"})
_SERVER_FLAGS = frozenset({"backup", "down"})
_SERVER_VALUED = frozenset({"weight", "max_fails", "fail_timeout", "max_conns"})
_SERVER_REFUSED = frozenset({"resolve", "service", "slow_start", "route", "drain"})
_LOCATION_MODIFIERS = ("=", "^~", "~", "~*")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def ignored(name: str) -> bool:
    """Whether a directive is one wsgate accepts and does nothing with."""
    return name in IGNORED or name.startswith(IGNORED_PREFIXES)


def unescape(word: str) -> str:
    """A word as nginx sees it: crossplane keeps backslashes that nginx's reader removes
    (``\\\\`` ``\\"`` ``\\'``) or turns into controls (``\\t`` ``\\r`` ``\\n``)."""
    if "\\" not in word:
        return word
    out: list[str] = []
    index = 0
    while index < len(word):
        char = word[index]
        following = word[index + 1:index + 2]
        if char == "\\" and following in ("\\", '"', "'"):
            out.append(following)
            index += 2
        elif char == "\\" and following in ("t", "r", "n"):
            out.append({"t": "\t", "r": "\r", "n": "\n"}[following])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def directive_text(name: str, words: Sequence[str], block: bool) -> str:
    """A line as written, on one line: ``proxy_pass http://websocket;``, ``server {``.
    ``words`` are crossplane's (escapes kept), so quoting them again gives nginx's text."""
    parts = [_quoted(word) for word in (name, *words)]
    return " ".join(parts) + (" {" if block else ";")


def _quoted(word: str) -> str:
    special = not word or any(char.isspace() or char in ";{}\"'" for char in word)
    special = special or word.startswith("#")
    if not special:
        return word
    word = word.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    if "'" not in word:
        return f"'{word}'"
    return '"' + word.replace('"', '\\"') + '"'


def key_label(name: str | int) -> str:
    """A key as a key-path label part: ``name``, ``"/"``, or ``[0]``."""
    if isinstance(name, int):
        return f"[{name}]"
    return name if _BARE.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def label(base: str, *parts: str | int) -> str:
    """``base`` extended by ``parts`` as TOML spells a key path: ``server[0].location."/"``."""
    text = base
    for part in parts:
        piece = key_label(part)
        text += piece if isinstance(part, int) or not text else "." + piece
    return text


def integer(name: str, word: str) -> int:
    if not word.isdigit():
        raise Refused(f'"{name}" directive invalid number')
    return int(word)


def listen(words: Sequence[str]) -> tuple[str, list[str]]:
    """``listen ADDRESS [PARAMS]`` -> the kept words joined, and the ignored parameters."""
    address = words[0]
    if address.startswith("unix:"):
        raise Refused(f'unsupported listen address "{address}" (wsgate listens on TCP)')
    kept, dropped = [address], []
    for word in words[1:]:
        name, equals, _ = word.partition("=")
        if word in _LISTEN_KEPT or (name == "backlog" and equals):
            kept.append(word)
        elif name in _LISTEN_IGNORED:
            dropped.append(f"listen ... {name}")
        elif name in _LISTEN_REFUSED:
            raise Refused(f'unsupported listen parameter "{word}"')
        else:
            raise Refused(f'invalid parameter "{word}"')
    return " ".join(kept), dropped


def upstream_server(words: Sequence[str]) -> str:
    """An upstream's ``server ADDRESS [PARAMS]`` line, checked, as one string."""
    address = words[0]
    if address.startswith("unix:"):
        raise Refused(f'unsupported upstream server "{address}" (wsgate connects over TCP)')
    for word in words[1:]:
        name, equals, _ = word.partition("=")
        if (word in _SERVER_FLAGS) or (name in _SERVER_VALUED and equals):
            continue
        if name in _SERVER_REFUSED:
            raise Refused(f'unsupported server parameter "{word}"')
        raise Refused(f'invalid parameter "{word}"')
    return " ".join(words)


def return_value(words: Sequence[str]) -> str:
    """``return CODE [TEXT|URL]`` or ``return URL`` -> "CODE", "CODE TEXT" or "URL": the
    code is the first word, and everything after the first space is the text verbatim."""
    first = words[0]
    if first.isdigit():
        if int(first) > 999:
            raise Refused(f'invalid return code "{first}"')
        return first if len(words) == 1 else f"{first} {words[1]}"
    if len(words) == 1 and first.startswith(("http://", "https://", "$scheme")):
        return first
    raise Refused(f'invalid return code "{first}"')


def location_key(words: Sequence[str]) -> tuple[str, str, str]:
    """``location [MOD] PATTERN`` -> (key, modifier, name): the key is "MOD PATTERN" (a
    modifier written against its pattern, ``=/x``, is parted as nginx parts it), the
    pattern alone for a prefix or a named location."""
    if len(words) == 2:
        modifier, name = words
        if modifier not in _LOCATION_MODIFIERS:
            raise Refused(f'invalid location modifier "{modifier}"')
    else:
        word = words[0]
        modifier = next((mod for mod in ("=", "^~", "~*", "~") if word.startswith(mod)), "")
        name = word[len(modifier):]
    return (f"{modifier} {name}" if modifier else name), modifier, name


def check_nesting(parent: tuple[str, str], child: tuple[str, str]) -> None:
    """nginx's rules for a location inside a location; each is (modifier, name)."""
    (parent_mod, parent_name), (child_mod, child_name) = parent, child
    if parent_mod == "=":
        raise Refused(f'location "{child_name}" cannot be inside the exact location '
                      f'"{parent_name}"')
    if not parent_mod and parent_name.startswith("@"):
        raise Refused(f'location "{child_name}" cannot be inside the named location '
                      f'"{parent_name}"')
    if not child_mod and child_name.startswith("@"):
        raise Refused(f'named location "{child_name}" can be on the server level only')
    if child_mod not in ("~", "~*") and not child_name.startswith(parent_name):
        raise Refused(f'location "{child_name}" is outside location "{parent_name}"')


def access_log(words: Sequence[str]) -> tuple[str | dict[str, Any], list[str]]:
    """``access_log PATH [FORMAT [PARAMS]]`` or ``off`` -> the TOML value ("PATH", or
    {path, format} for a named format other than combined) and the ignored parameters.
    buffer= and flush= only say when lines reach the disk, so they are ignored; gzip and
    if= change what is written, so they are refused."""
    path = words[0]
    if path == "off":
        if len(words) > 1:
            raise Refused(f'invalid parameter "{words[1]}"')
        return "off", []
    if path.startswith("syslog:"):
        raise Refused(f'unsupported access_log destination "{path}" (wsgate writes a file)')
    rest = list(words[1:])
    log_format = "combined"
    if rest and "=" not in rest[0] and rest[0] != "gzip":
        log_format = rest.pop(0)
    dropped = []
    for word in rest:
        name = word.partition("=")[0]
        if name in ("buffer", "flush"):
            dropped.append(f"access_log {name}=")
        elif name in ("gzip", "if"):
            raise Refused(f'unsupported access_log parameter "{word}"')
        else:
            raise Refused(f'invalid parameter "{word}"')
    if log_format == "combined":
        return path, dropped
    return {"path": path, "format": log_format}, dropped


def log_format(words: Sequence[str]) -> str | dict[str, str]:
    """``log_format NAME [escape=...] STRING...`` (NAME already taken off) -> the strings
    joined, as nginx joins them, or {format, escape}."""
    escape = None
    if words and words[0].startswith("escape="):
        escape = words[0][len("escape="):]
        if escape not in ("default", "json", "none"):
            raise Refused(f'unknown log format escaping "{escape}"')
        words = words[1:]
    text = "".join(words)
    return text if escape is None else {"format": text, "escape": escape}


def error_log(words: Sequence[str]) -> str:
    """``error_log FILE [LEVEL]`` -> "FILE [LEVEL]"; syslog and memory are not files."""
    if words[0].startswith(("syslog:", "memory:")):
        raise Refused(f'unsupported error_log destination "{words[0]}" (wsgate writes a file '
                      "or stderr)")
    return " ".join(words)
