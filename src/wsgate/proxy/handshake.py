"""The WebSocket opening handshake as a proxy checks it (RFC 6455 4.1, 4.2.1). Pure.

nginx passes any ``Upgrade`` through; wsgate lets a tunnel open only for a well-formed
WebSocket handshake answered by a correct 101, so nothing else can ride the upgrade path.
"""

from __future__ import annotations

import binascii

from websockets.utils import accept_key

from wsgate.proxy.headers import connection_tokens
from wsgate.proxy.http1 import OWS, HeadError, Headers, RequestHead, comma_list


def wants_upgrade(head: RequestHead) -> bool:
    """The client asks to switch protocols: ``Connection: upgrade`` with an ``Upgrade``."""
    return head.get(b"upgrade") is not None and b"upgrade" in connection_tokens(head)


def check_request(head: RequestHead) -> bytes:
    """Raise :class:`HeadError` unless ``head`` is a valid opening handshake; return its key."""
    if head.method != b"GET":
        raise HeadError(400, "WebSocket handshake must be GET")
    if head.version != "1.1":
        raise HeadError(400, "WebSocket handshake must be HTTP/1.1")
    if comma_list(head.get_all(b"upgrade")) != [b"websocket"]:
        raise HeadError(400, "Upgrade must be websocket")
    # llhttp leaves the whitespace after a value in it; the value never includes it
    # (RFC 9110 5.5), and the upstream answers for the key without it.
    length = head.get(b"content-length")
    if (length is not None and length.strip(OWS) != b"0") or head.get(b"transfer-encoding"):
        raise HeadError(400, "WebSocket handshake with a body")
    versions = [version.strip(OWS) for version in head.get_all(b"sec-websocket-version")]
    if versions != [b"13"]:
        raise HeadError(426 if versions else 400, "Sec-WebSocket-Version must be 13")
    keys = head.get_all(b"sec-websocket-key")
    if len(keys) != 1:
        raise HeadError(400, "one Sec-WebSocket-Key is required")
    key = keys[0].strip(OWS)
    try:
        decoded = binascii.a2b_base64(key, strict_mode=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        raise HeadError(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    return key


def response_is_switch(status: int, headers: Headers, key: bytes) -> bool:
    """The upstream really switched: 101, ``Upgrade: websocket``, and the Accept for ``key``.

    Raises :class:`HeadError` (502) for a 101 that is not a correct switch, since the
    client would otherwise get a tunnel to something that is not its WebSocket server.
    """
    if status != 101:
        return False
    upgrade = b""
    connection = b""
    accept = b""
    for name, value in headers:
        low = name.lower()
        if low == b"upgrade":
            upgrade = value.strip().lower()
        elif low == b"connection":
            connection = value
        elif low == b"sec-websocket-accept":
            accept = value.strip()
    if upgrade != b"websocket" or b"upgrade" not in comma_list([connection]):
        raise HeadError(502, "upstream 101 without Upgrade: websocket")
    if accept != accept_key(key.decode("ascii")).encode():
        raise HeadError(502, "upstream 101 with a wrong Sec-WebSocket-Accept")
    return True
