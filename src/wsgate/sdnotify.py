"""systemd's ``sd_notify`` protocol, without libsystemd or a Python dependency.

Under ``Type=notify`` (or ``notify-reload``) systemd passes ``$NOTIFY_SOCKET``, a Unix
datagram socket, and waits for ``READY=1`` before it calls the service started: so a
``systemctl start`` (and every unit ordered after it) waits until the proxy really
listens, and a reload (``RELOADING=1`` ... ``READY=1``) until the new configuration
serves. The protocol is one datagram of ``KEY=VALUE`` lines; that is all this module sends.

Outside systemd the variable is unset and every call is a no-op. A notification is never
worth a crash: a failure to send is ignored (systemd, if it waits, times out and says so).
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["mainpid", "notify", "ready", "reloading", "status", "stopping"]


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram to
    ``$NOTIFY_SOCKET``; True if it was sent.

    False without sending when the variable is unset, empty or not an address systemd
    uses (an absolute path, or ``@name`` for the abstract namespace), or when sending
    fails: never raises.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not fields or not address.startswith(("/", "@")):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # the Linux abstract namespace
    message = "\n".join(fields).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except (OSError, ValueError):  # ValueError: a NUL byte inside a path
        return False
    return True


def ready() -> bool:
    """Start-up is done (the listeners are bound and workers serve), or a reload is: what
    ``systemctl start`` and ``systemctl reload`` wait for."""
    return notify("READY=1")


def reloading() -> bool:
    """A reload has begun; send :func:`ready` when it is done.

    The monotonic timestamp is what ``Type=notify-reload`` (systemd 253) requires, to tell
    this reload from an earlier one; older versions ignore it.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    """A graceful stop has begun: systemd shows the unit as deactivating rather than
    failing while open connections drain."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status for ``systemctl status`` (line breaks become spaces, since each
    line of the datagram is a field)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def mainpid(pid: int) -> bool:
    """Tell systemd that ``pid`` is now the service's main process (an upgrade that hands
    over to a new process rather than re-executing in place)."""
    return notify(f"MAINPID={pid}")
