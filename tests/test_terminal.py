"""wsgate.terminal: what a peer sends is shown with its control characters escaped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.cli import escape as websockets_escape

from wsgate.terminal import escape, escape_lines


def test_escapes_as_the_websockets_client_does() -> None:
    every_latin1 = "".join(chr(i) for i in range(256))
    assert escape(every_latin1) == websockets_escape(every_latin1)


def test_escaped_text_holds_no_control_characters() -> None:
    assert escape("\x1b]0;pwned\x07\x1b[2J hi") == "\\x1b]0;pwned\\x07\\x1b[2J hi"
    assert escape("a\nb\r\tc\x7f\x9b") == "a\\nb\\r\\tc\\x7f\\x9b"
    assert escape("naïve café\xa0\xad ✓") == "naïve café\xa0\xad ✓"


def test_escape_lines_keeps_only_the_line_breaks() -> None:
    assert escape_lines('{\n  "a": "\x1b[2J"\n}') == '{\n  "a": "\\x1b[2J"\n}'


@given(st.text())
def test_escaping_is_idempotent_and_leaves_one_line(text: str) -> None:
    once = escape(text)
    assert escape(once) == once
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in once)
