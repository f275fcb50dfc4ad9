"""What an upgrade (SIGUSR2) passes from the old master to the new code it execs: the
listening sockets, the workers' control sockets, and the status listener's socket, as
inheritable descriptors named in one environment variable; and the dry run that must pass
before the exec, since once exec'd the old code cannot come back.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from wsgate.errors import Failure
from wsgate.proxy import listeners
from wsgate.proxy.config import ProxyConfig
from wsgate.proxy.listeners import Bound, Sockets

INHERIT = "WSGATE_INHERIT"
"""What an upgraded master gets from the one it replaces: sockets and workers, as JSON."""
PROBE_TIMEOUT = 60.0


@dataclass
class Passed:
    """What a new master got (nothing, on a fresh start)."""

    sockets: Sockets = field(default_factory=dict)
    workers: list[tuple[int, socket.socket, bool]] = field(default_factory=list)
    """(pid, control socket, retiring) of each old worker."""
    status: tuple[str, socket.socket] | None = None
    """The status listener's address as configured, and its socket."""
    monitor: dict[str, Any] = field(default_factory=dict)
    """What the monitor must not lose (its state, the reload counts)."""


def hand_down(passed: Passed) -> tuple[str, list[socket.socket]]:
    """The environment value that names ``passed``, and the sockets to make inheritable."""
    status = passed.status
    value = json.dumps({
        "sockets": [[address, bound.sock.fileno(), bound.tls]
                    for address, bound in passed.sockets.items()],
        "workers": [[pid, control.fileno(), retiring]
                    for pid, control, retiring in passed.workers],
        "status": None if status is None else [status[0], status[1].fileno()],
        "monitor": passed.monitor,
    })
    shared = [bound.sock for bound in passed.sockets.values()]
    shared += [control for _pid, control, _retiring in passed.workers]
    shared += [] if status is None else [status[1]]
    return value, shared


def _adopt(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


def inherited() -> Passed:
    """What an upgrade passed on, from the environment (which forgets it)."""
    text = os.environ.pop(INHERIT, None)
    if text is None:
        return Passed()
    data = json.loads(text)
    status = None
    if data.get("status") is not None:
        address, fd = data["status"]
        status = (address, _adopt(fd))
    return Passed(
        sockets={address: Bound(_adopt(fd), tls, address)
                 for address, fd, tls in data["sockets"]},
        workers=[(pid, _adopt(fd), retiring) for pid, fd, retiring in data["workers"]],
        status=status, monitor=data.get("monitor") or {})


def status_socket(config: ProxyConfig,
                  have: tuple[str, socket.socket] | None) -> socket.socket | None:
    """The status listener's socket: the one an upgrade passed on if it serves the same
    address, else a new one (Failure naming status_listen if it cannot be bound)."""
    listener = config.status_listen
    held = None
    if have is not None and listener is not None:
        held = listeners.held_for({have[0]: Bound(have[1], False)}, listener)
    if have is not None and held is None:
        have[1].close()
    if held is not None or listener is None:
        return None if held is None else held.sock
    try:
        return listeners.bind(listener)
    except Failure as error:
        raise Failure(f"status_listen: {error}") from None


def probe(command: list[str]) -> str | None:
    """Why the code installed now cannot run this configuration, or None if it can."""
    steps = [[sys.executable, "-c", "import wsgate.proxy.master"], [*command, "--check"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return str(error)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            return lines[-1]
    return None
