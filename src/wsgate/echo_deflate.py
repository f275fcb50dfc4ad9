"""permessage-deflate (RFC 7692) for ``wsgate echo --deflate``, on picows' frames.

picows implements no extension: it only hands over and accepts the RSV1 bit. The offer's
negotiation and the compression itself come from websockets' Sans-I/O extension (the one
its own server uses with ``compression="deflate"``), so the echo server keeps its one data
path (picows) and every behaviour of it, and the extension code is one that many
servers already run.
"""

from __future__ import annotations

from collections.abc import Iterable

from picows import WSFrame, WSMsgType
from websockets.exceptions import InvalidHeader, NegotiationError, PayloadTooBig, ProtocolError
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    enable_server_permessage_deflate,
)
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension

__all__ = ["Deflate", "DeflateError", "PayloadTooBig"]

DeflateError = ProtocolError
"""A compressed message that is not valid (RFC 7692 6.1, 6.2: the connection fails)."""

_FACTORY = next(
    factory for factory in enable_server_permessage_deflate(None)
    if isinstance(factory, ServerPerMessageDeflateFactory)
)
"""websockets' server settings: 12-bit windows and memLevel 5, so that each connection
keeps tens of KiB of zlib state, not the ~400 KiB of zlib's defaults."""


class Deflate:
    """One connection's negotiated permessage-deflate: it inflates what the client sends
    and deflates the replies, keeping each direction's context as negotiated."""

    def __init__(self, extension: PerMessageDeflate) -> None:
        self._extension = extension

    @classmethod
    def negotiate(cls, offers: Iterable[str]) -> tuple[str, Deflate] | None:
        """The response's Sec-WebSocket-Extensions and the codec for the first offer that
        can be accepted, in the client's order of preference; None if none can (or the
        header is malformed: the connection then goes on uncompressed, as RFC 6455 9.1
        lets a server decline any extension)."""
        try:
            parsed = [item for header in offers for item in parse_extension(header)]
        except InvalidHeader:
            return None
        for name, params in parsed:
            if name != _FACTORY.name:
                continue
            try:
                response, extension = _FACTORY.process_request_params(params, [])
            except NegotiationError:
                continue
            return build_extension([(name, response)]), cls(extension)
        return None

    def decode(self, frame: WSFrame, max_size: int) -> bytes:
        """A data frame's payload, inflated if its message is compressed; PayloadTooBig past
        ``max_size`` bytes (a small frame may inflate to gigabytes), DeflateError for a
        frame the extension forbids (RSV1 on a continuation) or that does not inflate."""
        decoded = self._extension.decode(
            Frame(Opcode(frame.msg_type.value), frame.get_payload_as_bytes(), frame.fin,
                  frame.rsv1, frame.rsv2, frame.rsv3),
            max_size=max_size,
        )
        if decoded.rsv1:  # left as it came: a continuation of an uncompressed message
            raise DeflateError("RSV1 set on a frame of an uncompressed message")
        return bytes(decoded.data)

    def encode(self, kind: WSMsgType, payload: bytes) -> bytes:
        """A whole message (one frame), deflated: it goes out with RSV1 set."""
        return bytes(self._extension.encode(Frame(Opcode(kind.value), payload)).data)
