"""Where WebSocket frames end in a byte stream, from their headers alone (RFC 6455 §5.2).

The proxy never parses what it relays, but to end a tunnel with a Close frame it must
write that frame between two frames, not inside one. So the upstream→client direction
keeps a :class:`Cursor`: how many bytes of the current frame are still to come. A read
that ends inside a frame costs one subtraction; one that holds whole frames costs a few
integer operations per frame header, and nothing is copied (except the few bytes of a
header split across two reads).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

__all__ = ["Cursor", "close_frame"]


class Cursor:
    """The frame position of one direction of a WebSocket stream.

    ``left``: bytes still to come before the next frame header starts. ``held``: the start
    of a header that a read cut short (at most 13 bytes). ``closed``: a Close frame has
    begun (after which this side sends no other frame). ``on_close`` runs when it begins:
    the one moment worth telling, so nothing is checked per read for it.
    """

    __slots__ = ("closed", "held", "left", "on_close")

    def __init__(self, left: int = 0, held: bytes = b"", closed: bool = False) -> None:
        self.left = left
        self.held = held
        self.closed = closed
        self.on_close: Callable[[], None] | None = None

    def _saw_close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_close is not None:
                self.on_close()

    def advance(self, data: bytes) -> None:
        """Move past ``data``, which the stream carries next."""
        n = len(data)
        i = self.left
        if i >= n:
            self.left = i - n
            return
        if self.held:
            i = self._finish_header(data)
            if i < 0:
                return
        while i < n:
            if n - i < 2:
                break
            if data[i] == 0x88:
                self._saw_close()
            size = data[i + 1]
            start = i + (6 if size & 0x80 else 2)
            size &= 0x7F
            if size == 126:
                if n - i < 4:
                    break
                size = (data[i + 2] << 8) | data[i + 3]
                start += 2
            elif size == 127:
                if n - i < 10:
                    break
                size = int.from_bytes(data[i + 2:i + 10], "big")
                start += 8
            i = start + size
        else:
            self.left = i - n
            return
        self.held = bytes(data[i:])
        self.left = 0

    def _finish_header(self, data: bytes) -> int:
        """With a header begun in an earlier read: where its frame ends in ``data``, or -1
        if ``data`` does not complete the header either (then it is held)."""
        joined = self.held + bytes(data[:14])
        before = len(self.held)
        end = header_end(joined)
        if joined[0] == 0x88:
            self._saw_close()
        if end < 0:  # data is shorter than 14 bytes: joined holds all of it
            self.held = joined
            self.left = 0
            return -1
        self.held = b""
        return end - before

    def at_boundary(self) -> bool:
        """Whether the next byte starts a frame."""
        return self.left == 0 and not self.held

    def boundary_in(self, data: bytes) -> int:
        """Where, in ``data`` (which comes next), the first frame boundary is: len(data) or
        more when there is none in it; 0 when data starts with a frame."""
        if self.at_boundary():
            return 0
        probe = Cursor(self.left, self.held, self.closed)
        if probe.left:
            return probe.left
        end = probe._finish_header(data)
        return len(data) + 1 if end < 0 else end


def header_end(data: bytes) -> int:
    """The end of the frame whose header starts ``data`` (header and payload), or -1 when
    ``data`` is too short to hold the whole header."""
    n = len(data)
    if n < 2:
        return -1
    size = data[1]
    start = 6 if size & 0x80 else 2
    size &= 0x7F
    if size == 126:
        if n < 4:
            return -1
        size = (data[2] << 8) | data[3]
        start += 2
    elif size == 127:
        if n < 10:
            return -1
        size = int.from_bytes(data[2:10], "big")
        start += 8
    return start + size


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked Close frame, as a server sends it (the proxy speaks as one to clients)."""
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()  # whole characters
    payload = struct.pack("!H", code) + text
    return bytes((0x88, len(payload))) + payload
