"""Header rules toward the upstream: hop-by-hop removal (RFC 9110 7.6.1), forwarded headers
with trust, and nginx-style ``$variables`` in ``proxy_set_header`` values. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from wsgate.proxy.http1 import OWS, BodyFraming, Headers, RequestHead, comma_list

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade"}
)
FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded"}
)
"""Headers a client could forge to pass for someone else: kept only from trusted proxies."""

VARIABLES = frozenset(
    {"host", "http_host", "remote_addr", "remote_port", "scheme", "server_port", "request_uri",
     "uri", "args", "proxy_host", "proxy_add_x_forwarded_for", "proxy_x_forwarded_proto"}
)
VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
"""``$name`` or ``${name}``: one syntax for the config's checks and the templates."""

Template = tuple[bytes | str, ...]
"""A header value: literal bytes and variable names, in order."""


def compile_template(text: str) -> Template:
    """Split ``"$scheme://$host"`` into literals and variable names, once at start-up."""
    parts: list[bytes | str] = []
    position = 0
    for match in VARIABLE.finditer(text):
        if match.start() > position:
            parts.append(text[position:match.start()].encode())
        parts.append(match.group(1) or match.group(2))
        position = match.end()
    if position < len(text):
        parts.append(text[position:].encode())
    return tuple(parts)


@dataclass(slots=True)
class Variables:
    """The ``$variables`` of one request: read from the request and the connection it came
    on, evaluated only when a template asks for them."""

    head: RequestHead
    remote_addr: str
    remote_port: int
    scheme: str
    server_port: int
    server_host: str
    trusted: bool
    proxy_host: str = ""

    def variable(self, name: str) -> bytes:
        head = self.head
        if name == "host":
            host = (head.get(b"host") or b"").strip(OWS)  # llhttp leaves the OWS after it
            if not host:
                return self.server_host.encode()
            return _strip_port(host).lower()
        if name == "remote_addr":
            return self.remote_addr.encode()
        if name == "proxy_add_x_forwarded_for":
            incoming = b", ".join(head.get_all(b"x-forwarded-for")) if self.trusted else b""
            own = self.remote_addr.encode()
            return incoming + b", " + own if incoming else own
        if name == "scheme":
            return self.scheme.encode()
        if name == "proxy_x_forwarded_proto":
            forwarded = head.get(b"x-forwarded-proto") if self.trusted else None
            return forwarded or self.scheme.encode()
        if name == "remote_port":
            return str(self.remote_port).encode()
        if name == "server_port":
            return str(self.server_port).encode()
        if name == "request_uri":
            return head.target
        if name == "uri":
            return head.uri or head.path
        if name == "args":
            return head.target.partition(b"?")[2]
        if name == "proxy_host":
            return self.proxy_host.encode()
        if name.startswith("http_"):
            return b", ".join(head.get_all(name[5:].replace("_", "-").encode()))
        return b""

    def expand(self, template: Template) -> bytes:
        return b"".join(p if isinstance(p, bytes) else self.variable(p) for p in template)


def _strip_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.rsplit(b":", 1)[0] if b":" in host else host


FRAMING = frozenset({b"content-length"})
"""What Connection cannot make hop-by-hop: a body is relayed as its length says, so the
length must go with it, or the body would be read on the next hop as the next message."""


def connection_tokens(head: RequestHead) -> frozenset[bytes]:
    """Header names listed in Connection: each is hop-by-hop for this message."""
    return frozenset(comma_list(head.get_all(b"connection")))


def upstream_request_headers(
    variables: Variables,
    set_headers: Sequence[tuple[bytes, Template]],
    framing: BodyFraming,
    upgrade: bytes | None,
) -> Headers:
    """The request's headers as the upstream gets them.

    Hop-by-hop headers and those named in Connection go; forwarded headers go unless the
    peer is a trusted proxy; ``proxy_set_header`` values replace what the client sent (an
    empty value removes the header, as in nginx). An upgrade carries ``Upgrade`` and
    ``Connection: upgrade`` (the seed's ``map``); otherwise the hop stays keep-alive.
    """
    named = connection_tokens(variables.head)
    replaced = {name.lower() for name, _ in set_headers}
    out: Headers = []
    for name, value in variables.head.headers:
        low = name.lower()
        if low in HOP_BY_HOP or low in replaced or (low in named and low not in FRAMING):
            continue
        if low in FORWARDED and not variables.trusted:
            continue
        if low == b"content-length":  # checked to be digits once its OWS is off
            value = value.strip(OWS)
        out.append((name, value))
    has_host = any(name.lower() == b"host" for name, _ in out)
    for name, template in set_headers:
        value = variables.expand(template)
        if value:
            out.append((name, value))
            has_host = has_host or name.lower() == b"host"
    if not has_host:
        out.append((b"Host", variables.proxy_host.encode()))
    if framing.chunked:
        out.append((b"Transfer-Encoding", b"chunked"))
    if upgrade is not None:
        out.append((b"Upgrade", upgrade))
        out.append((b"Connection", b"upgrade"))
    return out


def client_response_headers(headers: Headers, keep_alive: bool, chunked: bool,
                            http10: bool = False) -> Headers:
    """An upstream response's headers as the client gets them: hop-by-hop ones replaced by
    this hop's own framing and persistence (an HTTP/1.0 client kept alive is told so, as
    its default is to close)."""
    named = frozenset(comma_list([v for name, v in headers if name.lower() == b"connection"]))
    named -= FRAMING
    out: Headers = [
        (name, value) for name, value in headers
        if (low := name.lower()) not in HOP_BY_HOP and low not in named
    ]
    if chunked:
        out.append((b"Transfer-Encoding", b"chunked"))
    if not keep_alive:
        out.append((b"Connection", b"close"))
    elif http10:
        out.append((b"Connection", b"keep-alive"))
    return out
