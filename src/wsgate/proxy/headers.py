"""Header rules toward the upstream: hop-by-hop removal (RFC 9110 7.6.1), forwarded headers
with trust, and ``proxy_set_header`` values (templates of :mod:`~wsgate.proxy.variables`). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsgate.proxy.http1 import OWS, BodyFraming, Headers, RequestHead, comma_list
from wsgate.proxy.variables import Template, Variables

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade"}
)
FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded"}
)
"""Headers a client could forge to pass for someone else: kept only from trusted proxies."""

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
