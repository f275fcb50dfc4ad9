"""websockets connections that also report the pings and pongs they receive.

websockets answers pings itself and offers no callback for them, so ``-P`` needs a
connection class (its documented extension point, ``create_connection=``) that records
each received ping and pong for the session to print.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers, HeadersLike
from websockets.frames import Frame, Opcode
from websockets.http11 import USER_AGENT, Request
from websockets.protocol import Event


class _ControlFrames(Connection):
    """Records ``(messages before it, "ping" | "pong", payload)`` for each ping and pong.

    The count of complete messages received before each control frame lets the session
    print pings and pongs in the order they arrived among the messages.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control_frames: deque[tuple[int, str, bytes]] = deque()
        self.control_arrived = asyncio.Event()
        self.messages_received = 0

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if not isinstance(event, Frame):
            return
        if event.opcode in (Opcode.PING, Opcode.PONG):
            kind = "ping" if event.opcode is Opcode.PING else "pong"
            self.control_frames.append((self.messages_received, kind, bytes(event.data)))
            self.control_arrived.set()
        elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT) and event.fin:
            self.messages_received += 1


class WatchedClientConnection(_ControlFrames, ClientConnection):
    """A client connection whose extra headers replace websockets' own, not repeat them.

    websockets appends ``additional_headers`` to the request it built, so ``--host`` or
    ``-H Host:`` would send two Host headers; here a header the user gave replaces the
    one websockets put in (Host, Origin, Authorization from the URL...).
    """

    async def handshake(
        self,
        additional_headers: HeadersLike | None = None,
        user_agent_header: str | None = USER_AGENT,
    ) -> None:
        if additional_headers is not None:
            names = {name.lower() for name, _ in Headers(additional_headers).raw_items()}
            build_request = self.protocol.connect

            def connect() -> Request:
                request = build_request()
                for name in names:
                    if name in request.headers:
                        del request.headers[name]
                return request

            self.protocol.connect = connect  # type: ignore[method-assign]
        await super().handshake(additional_headers, user_agent_header)


class WatchedServerConnection(_ControlFrames, ServerConnection):
    """A server connection for ``wsgate listen`` that reports pings and pongs."""
