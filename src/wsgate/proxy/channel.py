"""Messages between the master and a worker, and between two workers handing tunnels over.

One message is one datagram on an AF_UNIX SOCK_SEQPACKET socket: a JSON object (its
``kind`` and plain fields, readable across versions, since an upgrade has old and new
code talking), then optionally a binary part, and file descriptors alongside
(SCM_RIGHTS). The configuration of a reload is pickled: master and workers run the same
code then.
"""

from __future__ import annotations

import array
import copyreg
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

MAX_MESSAGE = 1 << 18  # a reload's pickled config; the socket buffer allows about this
MAX_FDS = 253  # Linux's SCM_MAX_FD: listening sockets of a reload



def _mapping(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


copyreg.pickle(MappingProxyType,  # a frozen config's mappings
               lambda mapping: (_mapping, (dict(mapping),)))


@dataclass(slots=True)
class Message:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    blob: bytes = b""
    fds: list[int] = field(default_factory=list)
    """Received descriptors belong to the receiver, which must use or close them."""


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, kind: str, fields: dict[str, Any] | None = None,
         blob: bytes = b"", fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send one message (blocking: the peer is a process of ours that reads at once)."""
    head = json.dumps({"kind": kind, **(fields or {})}).encode()
    data = head + b"\n" + blob
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def receive(sock: socket.socket, block: bool = True) -> Message | None:
    """The next message, or None at the end (the peer closed). A non-blocking socket (or
    ``block=False``) with nothing to read raises BlockingIOError."""
    timeout = sock.gettimeout()
    if block or not timeout:
        data, fds, _flags, _address = socket.recv_fds(
            sock, MAX_MESSAGE, MAX_FDS, 0 if block else socket.MSG_DONTWAIT)
    else:  # with a timeout set, Python waits for data before it reads, whatever the flags
        sock.settimeout(0)
        try:
            data, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
        finally:
            sock.settimeout(timeout)
    if not data:
        for fd in fds:
            socket.close(fd)
        return None
    head, _, blob = data.partition(b"\n")
    fields = json.loads(head)
    kind = fields.pop("kind")
    return Message(kind, fields, blob, list(fds))


def waiting(sock: socket.socket) -> Iterator[Message | None]:
    """Every message a non-blocking socket holds now, in order; then None if the peer is
    gone (or the socket failed), which ends it. A reader callback's loop."""
    while True:
        try:
            message = receive(sock)
        except BlockingIOError:
            return
        except OSError:
            message = None
        yield message
        if message is None:
            return
