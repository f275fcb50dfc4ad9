"""HTTP/1.1 message heads: what a request head must satisfy, and the bytes of the heads we
write. Pure: llhttp (via httptools) tokenizes; the rules a proxy must add on top to stop
request smuggling live here (RFC 9112 6.1-6.3, 3.2; RFC 9110 5.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus

from wsgate import __version__

Headers = list[tuple[bytes, bytes]]
"""Header fields in arrival order, names as sent (compare them lowercased)."""

_TOKENS = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?::[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(rb"^[0-9]+\Z")
_HOST = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?\Z")
"""RFC 9112 3.2 and RFC 3986 3.2.2: ``host[:port]``; a host is an IP literal in brackets,
or a name (or IPv4 address) of unreserved characters, sub-delims and %-escapes. Not a
path, not userinfo, not a space."""
_ABSOLUTE = re.compile(rb"^([Hh][Tt][Tt][Pp][Ss]?)://([^/?#]*)(.*)\Z", re.DOTALL)
"""RFC 9112 3.2.2: absolute-form, ``scheme://authority[path][?query]``."""
OWS = b" \t"
"""Optional whitespace (RFC 9110 5.6.3): never part of a field value, though llhttp
leaves what follows a value in it."""
_NONE: list[bytes] = []
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


class HeadError(Exception):
    """A request the proxy answers itself with ``status`` and closes; nothing goes upstream."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: str
    headers: Headers = field(default_factory=list)
    uri: bytes = b""
    """The path as locations match it (nginx's ``$uri``): :func:`normalize_path` of the
    target's, set when the head is checked. The target itself goes upstream untouched."""
    _index: dict[bytes, list[bytes]] | None = None
    """Values by lowercase name, built on the first look-up: a request is asked about a
    dozen headers, and lowercasing every name for each question showed in profiles."""

    def _values(self) -> dict[bytes, list[bytes]]:
        index = self._index
        if index is None:
            index = {}
            for key, value in self.headers:
                index.setdefault(key.lower(), []).append(value)
            self._index = index
        return index

    def get(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lowercase), or None."""
        values = self._values().get(name)
        return values[0] if values else None

    def get_all(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lowercase), in order (do not modify)."""
        return self._values().get(name, _NONE)

    @property
    def path(self) -> bytes:
        """The target's path, without the query (what locations match against)."""
        return self.target.split(b"?", 1)[0]


@dataclass(frozen=True, slots=True)
class BodyFraming:
    """How the body of a message is delimited: by length, by chunks, or not at all."""

    chunked: bool
    length: int | None


NO_BODY = BodyFraming(chunked=False, length=0)


def normalize_path(path: bytes) -> bytes:
    """nginx's normalised path: %-escapes decoded, slashes merged, ``.`` and ``..``
    segments resolved. Raises HeadError 400 for what cannot be normalised: a path that
    climbs above the root, an encoded NUL, a ``%`` that is not an escape."""
    if b"%" in path:
        if _BAD_ESCAPE.search(path):
            raise HeadError(400, "a % in the path that is not an escape")
        path = _ESCAPE.sub(lambda match: bytes((int(match[1], 16),)), path)
        if b"\x00" in path:
            raise HeadError(400, "an encoded NUL in the path")
    if b"//" not in path and b"/." not in path:
        return path  # the usual path: nothing to resolve
    segments: list[bytes] = []
    parts = path.split(b"/")
    for segment in parts[1:]:
        if segment == b"..":
            if not segments:
                raise HeadError(400, "dot segments climb above the root")
            segments.pop()
        elif segment not in (b"", b"."):
            segments.append(segment)
    tail = b"/" if parts[-1] in (b"", b".", b"..") and segments else b""
    return b"/" + b"/".join(segments) + tail


def comma_list(values: list[bytes]) -> list[bytes]:
    """The lowercased elements of header values that are comma-separated lists (RFC 9110
    5.6.1: empty elements are ignored)."""
    return [item.strip().lower() for value in values for item in value.split(b",") if item.strip()]


def _to_origin_form(head: RequestHead) -> None:
    """An absolute-form target (``http://host/path``), as nginx takes it: the path and
    query go upstream, and the authority is the request's host. RFC 9112 3.2.2 has the
    target's authority win over a Host header; a Host that says otherwise is refused
    (stricter than nginx, which ignores it: two hosts in one request is a smuggling tool)."""
    match = _ABSOLUTE.match(head.target)
    assert match is not None
    scheme, authority, rest = match[1].lower(), match[2], match[3]
    if not authority or b"@" in authority or not _HOST.match(authority):
        raise HeadError(400, "invalid host in an absolute-form request target")
    default = b":443" if scheme == b"https" else b":80"
    hosts = head.get_all(b"host")
    if hosts:
        if len(hosts) == 1 and (_authority_key(hosts[0].strip(OWS), default)
                                != _authority_key(authority, default)):
            raise HeadError(400, "Host header disagrees with the absolute-form target")
    elif head.version == "1.1":  # RFC 9112 3.2: whatever the form of the target
        raise HeadError(400, "HTTP/1.1 request without a Host header")
    else:
        head.headers.append((b"Host", authority))
        head._index = None
    head.target = rest if rest.startswith(b"/") else b"/" + rest


def _authority_key(authority: bytes, default_port: bytes) -> bytes:
    """``host[:port]`` as compared: case-insensitive, the scheme's port or none alike."""
    key = authority.lower()
    if key.endswith(default_port):
        return key[: -len(default_port)]
    return key[:-1] if key.endswith(b":") else key


def check_request_head(head: RequestHead, max_body: int | None) -> BodyFraming:
    """Apply the rules llhttp leaves to its user; return how the body is framed.

    Raises :class:`HeadError` for anything a server or proxy behind us could read
    differently (the root of request smuggling), so it never leaves this process.
    """
    if head.version not in ("1.0", "1.1"):
        raise HeadError(505, f"HTTP version {head.version} is not supported")
    if not head.target.startswith(b"/"):
        if _ABSOLUTE.match(head.target):
            _to_origin_form(head)
        elif not (head.target == b"*" and head.method == b"OPTIONS"):
            raise HeadError(400, "request target is not origin-form or absolute-form")
    head.uri = normalize_path(head.path) if head.target != b"*" else head.target
    if head.headers:  # one regex over all names and one over all values, not one per header
        if not _TOKENS.match(b":".join(name for name, _ in head.headers)):
            raise HeadError(400, "invalid header name")
        if _BAD_VALUE.search(b"\t".join(value for _, value in head.headers)):
            raise HeadError(400, "control character in a header value")
    hosts = head.get_all(b"host")
    if len(hosts) > 1:
        raise HeadError(400, "more than one Host header")
    if head.version == "1.1" and not hosts:
        raise HeadError(400, "HTTP/1.1 request without a Host header")
    if hosts and not _HOST.match(hosts[0].strip(OWS)):
        raise HeadError(400, "invalid Host header (not host[:port])")
    lengths = head.get_all(b"content-length")
    encodings = head.get_all(b"transfer-encoding")
    if encodings:
        if head.version == "1.0":
            raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise HeadError(400, "both Content-Length and Transfer-Encoding")
        codings = comma_list(encodings)
        if codings != [b"chunked"]:
            raise HeadError(400, "Transfer-Encoding other than a final chunked")
        return BodyFraming(chunked=True, length=None)
    if lengths:
        value = lengths[0].strip(OWS)  # a field value never includes the OWS around it
        if len(lengths) > 1 or not _DIGITS.match(value):
            raise HeadError(400, "several or invalid Content-Length values")
        length = int(value)
        if max_body is not None and length > max_body:
            raise HeadError(413, "body over client_max_body_size")
        return BodyFraming(chunked=False, length=length)
    return NO_BODY


def response_framing(status: int, headers: Headers, request_method: bytes) -> BodyFraming:
    """How an upstream response's body ends (RFC 9112 6.3); length None means at close."""
    if request_method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return BodyFraming(chunked=False, length=0)
    codings = comma_list([v for k, v in headers if k.lower() == b"transfer-encoding"])
    if codings:
        return BodyFraming(chunked=codings[-1] == b"chunked", length=None)
    lengths = [v for k, v in headers if k.lower() == b"content-length"]
    if lengths and _DIGITS.match(lengths[0]):
        return BodyFraming(chunked=False, length=int(lengths[0]))
    return BodyFraming(chunked=False, length=None)


def serialize_request(method: bytes, target: bytes, headers: Headers) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1"]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def serialize_response(status: int, reason: bytes, headers: Headers) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


_EXTRA: dict[int, Headers] = {426: [(b"Sec-WebSocket-Version", b"13")],
                               503: [(b"Retry-After", b"1")]}
"""What some answers must say besides: the version to use; when to come back."""


SERVER = b"wsgate/" + __version__.encode()
"""The Server header and the error pages' footer (nginx's ``server_tokens on``)."""


def error_body(status: int, server: bytes = SERVER) -> bytes:
    """nginx's page for a status it answers itself, naming nothing internal."""
    phrase = reason_phrase(status)
    return (
        b"<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1>"
        b"</center>\r\n<hr><center>%s</center>\r\n</body>\r\n</html>\r\n"
        % (status, phrase, status, phrase, server)
    )


def extra_headers(status: int) -> Headers:
    """What some answers must say besides (426: the version to use; 503: when to return)."""
    return list(_EXTRA.get(status, ()))


def error_response(status: int, server: bytes = SERVER) -> bytes:
    """The proxy's own answer for an error that ends the connection."""
    body = error_body(status, server)
    headers: Headers = [
        (b"Server", server),
        (b"Content-Type", b"text/html"),
        (b"Content-Length", str(len(body)).encode()),
        *_EXTRA.get(status, ()),
        (b"Connection", b"close"),  # every error the proxy writes itself ends the connection
    ]
    return serialize_response(status, reason_phrase(status), headers) + body
