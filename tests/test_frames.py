"""Where WebSocket frames end (:mod:`wsgate.proxy.frames`), checked against a reference parser.

Hypothesis builds streams of frames (any first byte, Close frames among them, masked or
not, payload sizes at every length-encoding boundary, non-minimal length encodings too)
and cuts them into reads in every way that matters: one byte at a time, through the 2-,
4- and 10-byte length fields and the mask key, at frame ends and anywhere. After each read
the :class:`~wsgate.proxy.frames.Cursor` must know exactly where the next frame starts,
and :class:`~wsgate.proxy.tunnel.UpstreamEnd`, whose fast path skips ``Cursor.advance``
for the usual short frame, must end in the very same state.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgate.proxy.frames import Cursor, close_frame, header_end
from wsgate.proxy.tunnel import UpstreamEnd

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SIZES = (0, 1, 2, 124, 125, 126, 127, 128, 255, 256, 65534, 65535, 65536, 65537)
"""Payload sizes at the edges of the 7-bit, 16-bit and 64-bit length encodings."""


# -- the reference ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One frame as the stream carries it. ``encoding``: 0 for a 7-bit length, 126 or 127
    for a 16- or 64-bit one (not always the shortest, which a parser must take as well)."""

    first: int
    size: int
    encoding: int
    masked: bool
    filler: bytes
    """Repeated to make the payload: bytes that look like headers (0x88, 126, 127)."""

    @property
    def length_bytes(self) -> int:
        """Bytes from the frame's start until its length is known."""
        return {0: 2, 126: 4, 127: 10}[self.encoding]

    def header(self) -> bytes:
        mask = 0x80 if self.masked else 0
        if self.encoding == 0:
            head = bytes((self.first, mask | self.size))
        elif self.encoding == 126:
            head = bytes((self.first, mask | 126)) + struct.pack("!H", self.size)
        else:
            head = bytes((self.first, mask | 127)) + struct.pack("!Q", self.size)
        return head + (b"\x37\x88\x7e\x7f" if self.masked else b"")

    def encode(self) -> bytes:
        payload = (self.filler * (self.size // len(self.filler) + 1))[:self.size]
        return self.header() + payload


class Layout:
    """Where each frame of a stream starts, where its length is known, and where it ends."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self.stream = b"".join(frame.encode() for frame in frames)
        self.starts: list[int] = []
        self.known: list[int] = []
        self.ends: list[int] = []
        self.closes: list[int] = []
        """Starts of Close frames (first byte 0x88)."""
        position = 0
        for frame in frames:
            self.starts.append(position)
            self.known.append(position + frame.length_bytes)
            if frame.first == 0x88:
                self.closes.append(position)
            position += len(frame.header()) + frame.size
            self.ends.append(position)
        assert position == len(self.stream)

    def __repr__(self) -> str:
        return f"Layout({self.frames!r})"

    def at_boundary(self, p: int) -> bool:
        return p == 0 or p in self.ends

    def state(self, p: int) -> tuple[int, bytes]:
        """(left, held) of a cursor that has seen the first ``p`` bytes: a header cut short
        before its length is complete is held; otherwise ``left`` counts to the frame end."""
        if self.at_boundary(p):
            return 0, b""
        k = bisect.bisect_right(self.starts, p) - 1
        if p < self.known[k]:
            return 0, self.stream[self.starts[k]:p]
        return self.ends[k] - p, b""

    def first_end_in(self, p: int, n: int) -> int | None:
        """The first frame end in the ``n`` bytes after position ``p``, counted from ``p``."""
        k = bisect.bisect_right(self.ends, p)
        if k < len(self.ends) and self.ends[k] <= p + n:
            return self.ends[k] - p
        return None

    def closed_bounds(self, p: int) -> tuple[bool, bool]:
        """(must, may): ``closed`` must be set once a Close frame's whole header has passed,
        and may be only once its first byte has."""
        must = may = False
        for k, frame in enumerate(self.frames):
            if frame.first != 0x88:
                continue
            start = self.starts[k]
            may = may or start < p
            must = must or start + len(frame.header()) <= p
        return must, may


# -- strategies -------------------------------------------------------------------------------

@st.composite
def frames(draw: Any) -> Frame:
    if draw(st.integers(0, 3)) == 0:
        first = 0x88  # a Close frame
    else:
        fin = draw(st.booleans())
        rsv = draw(st.integers(0, 7))
        opcode = draw(st.sampled_from((0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xF)))
        first = (fin << 7) | (rsv << 4) | opcode
    size = draw(st.one_of(
        st.sampled_from(SIZES),
        st.integers(0, 300),
        st.integers(65536, 70_000),
        st.sampled_from((100_000, 1 << 18)),
    ))
    encodings = [127]
    if size <= 0xFFFF:
        encodings.insert(0, 126)
    if size <= 125:
        encodings.insert(0, 0)
    # Mostly the shortest encoding, as every sender uses; sometimes a longer one.
    encoding = encodings[0] if draw(st.integers(0, 3)) else draw(st.sampled_from(encodings))
    filler = draw(st.binary(min_size=1, max_size=6).map(lambda b: b + b"\x88\x7e\x7f"[:len(b)]))
    return Frame(first, size, encoding, draw(st.booleans()), filler)


class Case:
    """A stream and the reads that carry it, shown as frames and read sizes."""

    def __init__(self, layout: Layout, bounds: list[int]) -> None:
        self.layout = layout
        self.reads = [layout.stream[a:b] for a, b in itertools.pairwise(bounds)]
        self.sizes = [len(read) for read in self.reads]

    def __repr__(self) -> str:
        return f"Case({self.layout!r}, read sizes {self.sizes})"


@st.composite
def cut_streams(draw: Any) -> Case:
    """A stream of frames and reads that carry it, in order."""
    layout = Layout(draw(st.lists(frames(), min_size=1, max_size=7)))
    total = len(layout.stream)
    points: list[int] = list(draw(st.lists(st.integers(0, total), max_size=30)))
    near: list[int] = []
    for start, end in zip(layout.starts, layout.ends, strict=True):
        near.extend(q for q in range(start - 1, min(start + 16, end) + 1) if 0 <= q <= total)
        # Reads that end in the last bytes of a frame (a fast path that miscounts a header
        # would put the end there) and just after it.
        near.extend(q for q in range(end - 15, end + 2) if start < q <= total)
    how = draw(st.sampled_from(("some", "headers byte by byte", "every byte", "by frame")))
    if how == "by frame":  # a cut or two per frame: reads of about one frame each
        for start, end in zip(layout.starts, layout.ends, strict=True):
            for base, shift in ((start, st.integers(0, 14)), (end, st.integers(-15, 2))):
                offset = draw(st.one_of(st.none(), shift))
                if offset is not None and 0 <= base + offset <= total:
                    points.append(base + offset)
    elif how == "headers byte by byte" or (how == "every byte" and total > 4000):
        points.extend(near)
    elif how == "every byte":
        points.extend(range(total + 1))
    else:
        points.extend(draw(st.lists(st.sampled_from(near), max_size=40)))
    if not draw(st.booleans()):
        points = list(set(points))  # otherwise repeated points are empty reads
    points.sort()
    return Case(layout, [0, *points, total])


# -- the property -----------------------------------------------------------------------------

class Sink:
    """The client's transport, as UpstreamEnd sees it: only ``write`` is called."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written.extend(data)


def upstream_end() -> tuple[UpstreamEnd, Sink]:
    sink = Sink()
    end = UpstreamEnd(object(), sink)  # type: ignore[arg-type]  # the tunnel is not used
    return end, sink


def state(cursor: Cursor) -> tuple[int, bytes, bool]:
    return cursor.left, cursor.held, cursor.closed


@SETTINGS
@given(cut_streams(), st.data())
def test_cursor_tracks_every_frame_end_whatever_the_reads(
        case: Case, data: Any) -> None:
    layout, reads = case.layout, case.reads
    cursor = Cursor()
    end, sink = upstream_end()
    p = 0
    was_closed = False
    restart_at = data.draw(st.integers(0, len(reads)))
    for index, read in enumerate(reads):
        if index == restart_at:  # handed over to another process: the state is all there is
            cursor = Cursor(cursor.left, cursor.held, cursor.closed)
        before = state(cursor)
        found = cursor.boundary_in(read)
        assert state(cursor) == before, "boundary_in moved the cursor"
        if layout.at_boundary(p):
            assert found == 0
        else:
            first = layout.first_end_in(p, len(read))
            if first is None:
                assert found > len(read), (p, len(read), found)
            else:
                assert found == first, (p, len(read), found, first)

        cursor.advance(read)
        end.data_received(read)
        p += len(read)

        assert cursor.at_boundary() == layout.at_boundary(p), p
        assert (cursor.left, cursor.held) == layout.state(p), p
        must, may = layout.closed_bounds(p)
        assert (not must or cursor.closed) and (may or not cursor.closed), (p, cursor.closed)
        assert cursor.closed or not was_closed, "closed was unset"
        was_closed = cursor.closed
        assert state(end.cursor) == state(cursor), (p, read[:16])
    assert p == len(layout.stream)
    assert bytes(sink.written) == layout.stream
    assert end.received == len(layout.stream)
    assert cursor.at_boundary() and end.cursor.at_boundary()
    assert cursor.closed == bool(layout.closes)


SHORT_FIRSTS = (0x81, 0x82, 0x01, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0x08)


@st.composite
def short_frames(draw: Any) -> bytes:
    """A frame the fast path might take: mostly short and unmasked, some masked (whose
    second byte is 0x80 or more), some with a 16-bit length."""
    first = draw(st.sampled_from(SHORT_FIRSTS))
    masked = draw(st.integers(0, 3)) == 0
    size = draw(st.one_of(st.integers(0, 125), st.sampled_from((126, 127, 130, 300))))
    frame = Frame(first, size, 0 if size <= 125 else 126, masked, b"\x88\x7e")
    return frame.encode()


@SETTINGS
@given(st.lists(short_frames(), min_size=1, max_size=12), st.integers(0, 200), st.data())
def test_upstream_end_fast_path_agrees_with_advance_on_whole_frames(
        encoded: list[bytes], left: int, data: Any) -> None:
    """Whole frames, one per read or a few together, from any ``left`` (the end of a frame
    in flight shares the first read): the fast path's own ground."""
    reads: list[bytes] = [b"x" * left + encoded[0]]
    for frame in encoded[1:]:
        if data.draw(st.booleans()):
            reads.append(frame)
        else:
            reads[-1] += frame
    cursor = Cursor(left)
    end, sink = upstream_end()
    end.cursor = Cursor(left)
    for read in reads:
        cursor.advance(read)
        end.data_received(read)
        assert state(end.cursor) == state(cursor), read[:16]
        assert cursor.at_boundary()
    assert cursor.closed == any(frame[0] == 0x88 for frame in encoded)
    assert bytes(sink.written) == b"".join(reads)


@SETTINGS
@given(short_frames(), st.integers(0, 20), st.integers(1, 6), st.booleans())
def test_upstream_end_fast_path_agrees_with_advance_on_a_frame_cut_short(
        frame: bytes, left: int, short: int, held: bool) -> None:
    """A read that stops a few bytes before the frame's end, or one that finishes a held
    header: the fast path must leave either to ``advance``."""
    if held:
        cut = min(short, len(frame) - 1)
        cursor = Cursor(0, frame[:1])
        end, _ = upstream_end()
        end.cursor = Cursor(0, frame[:1])
        read = frame[1:len(frame) - cut + 1] if cut > 1 else frame[1:]
    else:
        cursor = Cursor(left)
        end, _ = upstream_end()
        end.cursor = Cursor(left)
        read = b"x" * left + frame[:max(len(frame) - short, 0)]
    cursor.advance(read)
    end.data_received(read)
    assert state(end.cursor) == state(cursor)


# -- cases by hand ----------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "read"), [
    ((0, b"\x81", False), b"\x05\x03abc"),  # a held header, its rest looking like a frame
    ((0, b"", False), b"\x81\x83\x01\x02\x03"),  # masked: 4 bytes of key are not payload
    ((0, b"", False), b"\x88\x02\x03\xe8"),  # a Close frame must be seen
    ((3, b"", False), b"abc\x88\x00"),  # one after the end of the frame in flight
    ((2, b"", False), b"ab\x81\x7e\x00"),  # a 16-bit length is not a 126-byte payload
    ((1, b"", False), b"a\x81\x7f\x00\x00\x00\x00\x00\x00\x00"),
    ((0, b"", False), b"\x81\x7d" + b"p" * 125),  # the longest short frame
    ((0, b"", False), b"\x81\x7d" + b"p" * 124),
    ((0, b"", False), b"\x81\x7d" + b"p" * 126),
    ((5, b"", False), b"abcde\x81"),  # a header's first byte ends the read
    ((0, b"", True), b"\x81\x00"),
])
def test_upstream_end_fast_path_traps(start: tuple[int, bytes, bool], read: bytes) -> None:
    """Reads shaped like "one short frame ends the read" that are not that."""
    expected = Cursor(*start)
    expected.advance(read)
    end, sink = upstream_end()
    end.cursor = Cursor(*start)
    end.data_received(read)
    assert state(end.cursor) == state(expected)
    assert bytes(sink.written) == read


def test_a_fresh_cursor_is_at_a_boundary() -> None:
    cursor = Cursor()
    assert cursor.at_boundary() and not cursor.closed
    assert cursor.boundary_in(b"\x81\x05hello") == 0
    cursor.advance(b"")
    assert state(cursor) == (0, b"", False)


def test_a_read_inside_a_frame_costs_a_subtraction() -> None:
    cursor = Cursor()
    cursor.advance(b"\x82\x7e\x01\x00" + b"a" * 10)
    assert state(cursor) == (246, b"", False)
    assert cursor.boundary_in(b"b" * 100) == 246
    assert cursor.boundary_in(b"b" * 246) == 246
    assert cursor.boundary_in(b"b" * 300) == 246
    cursor.advance(b"b" * 246)
    assert cursor.at_boundary()


@pytest.mark.parametrize("cut", range(1, 14))
def test_a_64_bit_masked_header_split_anywhere(cut: int) -> None:
    header = b"\x02\xff" + struct.pack("!Q", 1 << 40) + b"\x01\x02\x03\x04"
    cursor = Cursor()
    cursor.advance(header[:cut])
    if cut < 10:
        assert state(cursor) == (0, header[:cut], False)
        assert not cursor.at_boundary()
        assert cursor.boundary_in(header[cut:]) > len(header) - cut
    else:
        assert state(cursor) == ((1 << 40) + 14 - cut, b"", False)
    cursor.advance(header[cut:] + b"z" * 1000)
    assert state(cursor) == ((1 << 40) - 1000, b"", False)
    assert cursor.boundary_in(b"z" * 5000) == (1 << 40) - 1000


def test_a_held_header_completed_by_a_read_finds_the_end_inside_it() -> None:
    cursor = Cursor()
    cursor.advance(b"\x81\x85\x00")  # masked, 5 bytes: header is 6 bytes
    assert state(cursor) == (3 + 5, b"", False)  # the length is known: nothing held
    cursor = Cursor()
    cursor.advance(b"\x81")
    assert state(cursor) == (0, b"\x81", False)
    assert cursor.boundary_in(b"\x03abc\x81\x00") == 4
    assert cursor.boundary_in(b"\x03ab") == 4  # past the end: no boundary inside
    assert cursor.boundary_in(b"") == 1
    cursor.advance(b"\x03abc\x81\x00")
    assert cursor.at_boundary()


def test_a_close_frame_is_seen_even_when_its_header_comes_byte_by_byte() -> None:
    cursor = Cursor()
    cursor.advance(b"\x81\x00\x88")
    assert not cursor.closed  # only its first byte: it might still be anything
    cursor.advance(b"\x02")
    assert cursor.closed
    cursor.advance(b"\x03")
    assert cursor.closed and not cursor.at_boundary()
    cursor.advance(b"\xe8")
    assert cursor.closed and cursor.at_boundary()


def test_close_detection_looks_at_headers_not_payloads() -> None:
    cursor = Cursor()
    cursor.advance(b"\x82\x04\x88\x02\x03\xe8")
    assert not cursor.closed and cursor.at_boundary()
    cursor.advance(b"\x08\x00\xc8\x00")  # opcode 8 without FIN, or with RSV1: not 0x88
    assert not cursor.closed


def test_cursor_keeps_its_arguments() -> None:
    cursor = Cursor(7, b"", True)
    assert state(cursor) == (7, b"", True)
    assert not cursor.at_boundary()
    cursor = Cursor(0, b"\x81")
    assert not cursor.at_boundary()


# -- header_end -------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "end"), [
    (b"", -1),
    (b"\x81", -1),
    (b"\x81\x00", 2),
    (b"\x81\x7d", 2 + 125),
    (b"\x81\x80", 6),
    (b"\x81\xfd", 6 + 125),
    (b"\x81\x7e", -1),
    (b"\x81\x7e\x00", -1),
    (b"\x81\x7e\x00\x7e", 4 + 126),
    (b"\x81\xfe\xff\xff", 8 + 65535),
    (b"\x81\x7f" + b"\x00" * 7, -1),
    (b"\x81\x7f" + struct.pack("!Q", 65536), 10 + 65536),
    (b"\x81\xff" + struct.pack("!Q", 1 << 40), 14 + (1 << 40)),
    (b"\x81\x05hello\x81\x00", 7),
])
def test_header_end(data: bytes, end: int) -> None:
    assert header_end(data) == end


@SETTINGS
@given(frames())
def test_header_end_of_any_frame_is_its_length(frame: Frame) -> None:
    encoded = frame.encode()
    assert header_end(encoded) == len(encoded)
    assert header_end(frame.header()[:frame.length_bytes]) == len(encoded)
    assert header_end(frame.header()[:frame.length_bytes - 1]) == -1


# -- close_frame ------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "reason", "frame"), [
    (1001, "going away", b"\x88\x0c\x03\xe9going away"),
    (1000, "", b"\x88\x02\x03\xe8"),
    (1011, "é", b"\x88\x04\x03\xf3\xc3\xa9"),
    (4999, "x", b"\x88\x03\x13\x87x"),
])
def test_close_frame_bytes(code: int, reason: str, frame: bytes) -> None:
    assert close_frame(code, reason) == frame


@pytest.mark.parametrize("length", [122, 123, 124, 200])
def test_close_frame_reason_is_cut_to_fit_a_control_frame(length: int) -> None:
    frame = close_frame(1001, "r" * length)
    kept = min(length, 123)
    assert frame == b"\x88" + bytes((2 + kept,)) + b"\x03\xe9" + b"r" * kept
    assert len(frame) <= 2 + 125
    cursor = Cursor()
    cursor.advance(frame)
    assert cursor.closed and cursor.at_boundary()


@SETTINGS
@given(st.integers(1000, 4999), st.text(max_size=150))
def test_close_frame_is_one_unmasked_close_of_at_most_125_payload_bytes(
        code: int, reason: str) -> None:
    frame = close_frame(code, reason)
    assert frame[0] == 0x88
    assert frame[1] == len(frame) - 2 <= 125  # unmasked, 7-bit length
    assert struct.unpack("!H", frame[2:4]) == (code,)
    assert reason.encode().startswith(frame[4:])
    assert header_end(frame) == len(frame)


def test_close_frame_cuts_a_long_reason_between_characters() -> None:
    """RFC 6455 §5.5.1: the reason is UTF-8; cutting at 123 bytes must not split a
    character (a client such as websockets fails the connection with 1007 otherwise)."""
    frame = close_frame(1001, "é" * 100)  # 200 bytes: the 123rd is the first of a pair
    assert len(frame) <= 2 + 125
    frame[4:].decode()  # raises UnicodeDecodeError if a character was split
