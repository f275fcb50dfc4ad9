"""Text that came from elsewhere (a peer, a server's reason phrase), made safe to show.

A message holding ``ESC ] 0 ; ... BEL`` would retitle the user's terminal, ``ESC [ 2 J``
clear it, a newline forge a line of our own. So control characters are shown escaped,
exactly as the ``websockets`` command-line client does: C0 (0-31), DEL and C1 (127-159)
become their Python escapes (``\\x1b``, ``\\n``). Pure.
"""

from __future__ import annotations

import itertools

_ESCAPES = str.maketrans(
    {i: repr(chr(i))[1:-1] for i in itertools.chain(range(32), range(127, 160))}
)


def escape(text: str) -> str:
    """``text`` on one line, with every control character escaped."""
    return text.translate(_ESCAPES)


def escape_lines(text: str) -> str:
    """Like :func:`escape`, but the line breaks stay (pretty-printed JSON keeps its layout)."""
    return "\n".join(escape(line) for line in text.split("\n"))
