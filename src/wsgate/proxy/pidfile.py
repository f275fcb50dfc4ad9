"""The master's pid file, with nginx's semantics: how ``wsgate proxy -s`` and init scripts
find the process to signal.

The master writes its PID when it starts and removes the file when it exits, but only if
the file still holds its own PID: during an upgrade or a quick restart another master may
already have written its own, and deleting that would leave the new one unreachable.
Reading is strict, because a PID read wrong (0, -1, a stray number) would signal a whole
process group, or every process this user may signal.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from wsgate.errors import Failure
from wsgate.values import show

_MAX_BYTES = 64
"""More than any PID with its newline: a pid file this long is not one (and a path such as
/dev/zero must not be read forever)."""

_MAX_PID = 2**31 - 1
"""pid_t is 32 bits; above this os.kill would raise OverflowError instead of failing cleanly."""


def write(path: Path) -> None:
    """Write this process's PID and a newline to ``path``, atomically.

    The text goes to a temporary file in the same folder, which then replaces ``path``
    (``rename`` within one file system), so a reader (``-s``, systemd's ``PIDFile=``)
    sees the old content or the new, never an empty or half-written file. Mode 0644, as
    nginx's, so that an unprivileged ``-s`` or monitoring script can read it. No fsync:
    after a crash the PID means nothing anyway.

    Raises :class:`~wsgate.errors.Failure` ("cannot write pid file PATH: reason").
    """
    content = f"{os.getpid()}\n".encode("ascii")
    temporary: str | None = None
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                 dir=path.parent)
        with open(descriptor, "wb") as file:
            os.fchmod(file.fileno(), 0o644)
            file.write(content)
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise Failure(f"cannot write pid file {path}: {_reason(error)}") from None


def remove(path: Path, pid: int) -> bool:
    """Remove ``path`` if it still holds ``pid``; True if it was removed.

    A file holding another PID (a newer master's) or none at all is left alone. Never
    raises: this runs on the way out, where nothing better can be done about a file that
    cannot be removed, and a stale file is caught by ``-s`` (no such process).
    """
    try:
        if _parse(_read_bytes(path)) != pid:
            return False
        path.unlink()
    except (OSError, ValueError):
        return False
    return True


def read(path: Path) -> int:
    """The PID in ``path``, for ``wsgate proxy -s``.

    Raises :class:`~wsgate.errors.Failure`, one line each: no file ("no pid file PATH: is
    wsgate proxy running?"), a file that cannot be read, or one that does not hold a
    positive PID (``invalid PID number "x" in PATH``, as nginx says).
    """
    try:
        data = _read_bytes(path)
    except FileNotFoundError:
        raise Failure(f"no pid file {path}: is wsgate proxy running?") from None
    except OSError as error:
        raise Failure(f"cannot read pid file {path}: {_reason(error)}") from None
    try:
        return _parse(data)
    except ValueError:
        shown = show(data[:_MAX_BYTES].decode("utf-8", "replace").strip())
        raise Failure(f"invalid PID number {shown} in {path}") from None


def _read_bytes(path: Path) -> bytes:
    """At most one byte more than a pid file may hold, so that too long is detectable."""
    with open(path, "rb") as file:
        return file.read(_MAX_BYTES + 1)


def _parse(data: bytes) -> int:
    """A positive PID in ASCII digits, surrounding whitespace (the newline) allowed."""
    text = data.strip()
    if len(data) > _MAX_BYTES or not text.isdigit():  # bytes.isdigit: ASCII digits only
        raise ValueError(data)
    pid = int(text)
    if not 0 < pid <= _MAX_PID:
        raise ValueError(data)
    return pid


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
