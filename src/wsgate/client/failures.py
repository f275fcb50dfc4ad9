"""Why a connection attempt failed, in one line a person can act on.

websockets and the event loop report failures as a chain of exceptions (an SSL error
inside an "invalid HTTP response", a refused connect inside "Multiple exceptions"); this
module walks the chain and picks the most telling cause.
"""

from __future__ import annotations

import errno
import socket
import ssl

from websockets.exceptions import (
    InvalidHandshake,
    InvalidProxyMessage,
    InvalidProxyStatus,
    InvalidStatus,
    WebSocketException,
)


def _chain(error: BaseException) -> list[BaseException]:
    """The exception and its causes and contexts, outermost first, without loops."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not other for other in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _refused(error: BaseException) -> bool:
    if isinstance(error, ConnectionRefusedError):
        return True
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return True
    # asyncio joins the errors of every address it tried ("Multiple exceptions: ...").
    text = str(error)
    return isinstance(error, OSError) and (
        "Connection refused" in text or "Connect call failed" in text
    )


def describe(error: BaseException, address: str, host: str) -> str:
    """One line for a failed connect to ``address`` (host:port, the proxy's with --proxy)."""
    chain = _chain(error)
    for item in chain:
        if isinstance(item, InvalidStatus):
            response = item.response
            return (
                "server rejected the WebSocket handshake: "
                f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
            )
        if isinstance(item, InvalidProxyStatus):
            response = item.response
            return (
                "proxy rejected the CONNECT request: "
                f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
            )
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return f"TLS error: certificate verify failed: {item.verify_message}"
        if isinstance(item, ssl.SSLError):
            return f"TLS error: {item.reason or item.strerror or item}"
    for item in chain:
        if isinstance(item, socket.gaierror):
            return f"DNS lookup failed for {host}: {item.strerror or item}"
        if _refused(item):
            return f"connection refused: {address}"
        if isinstance(item, TimeoutError):
            return f"timed out connecting to {address}"
        if isinstance(item, ConnectionResetError):
            return f"connection reset by {address}"
    for item in chain:
        if isinstance(item, OSError):
            return f"cannot connect to {address}: {item.strerror or item}"
    for item in chain:
        if isinstance(item, InvalidProxyMessage):
            return f"bad response from the proxy {address}"
        if isinstance(item, InvalidHandshake):
            return f"WebSocket handshake with {address} failed: {item}"
        if isinstance(item, WebSocketException):
            return f"{item}"
    return f"cannot connect to {address}: {error}"


def closed_abnormally(code: int, reason: str) -> str:
    """The error line for a connection that ended with a code other than 1000/1001/1005."""
    line = f"connection closed abnormally with code {code}"
    return f'{line} (reason: "{reason}")' if reason else line
