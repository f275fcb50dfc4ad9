"""Opening one client connection: TLS, proxy, headers, and wscat's ``-L`` redirects.

websockets follows redirects on its own, always, up to a limit fixed at import time;
wscat follows them only with ``-L`` and up to ``--max-redirects``. So websockets is told
never to follow, and this module follows a 3xx itself when asked to.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.proxy import parse_proxy
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

from wsgate import __version__
from wsgate.client.failures import describe
from wsgate.client.observe import WatchedClientConnection
from wsgate.client.options import redirect_target, same_origin
from wsgate.errors import Failure
from wsgate.values import join_address

#: The largest message accepted, as Node's ws (wscat) allows: 100 MiB.
MAX_MESSAGE = 100 * 2**20

_REDIRECTS = (300, 301, 302, 303, 307, 308)

#: Headers that must not follow a redirect to another origin.
_CREDENTIALS = ("authorization", "cookie", "proxy-authorization")


@dataclass(frozen=True)
class DialOptions:
    """Everything needed to open a connection, checked already."""

    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    origin: str | None = None
    subprotocols: list[str] = field(default_factory=list)
    ssl: ssl.SSLContext | None = None
    proxy: str | None = None
    follow_redirects: bool = False
    max_redirects: int = 10
    timeout: float = 10.0
    ping_interval: float | None = None


class _NoRedirects(connect):
    """websockets' ``connect``, handing every 3xx back instead of following it."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def _redirect_location(error: InvalidStatus) -> str | None:
    response = error.response
    if response.status_code in _REDIRECTS and "Location" in response.headers:
        return response.headers["Location"]
    return None


async def dial(options: DialOptions) -> WatchedClientConnection:
    """An open connection to ``options.url``, or :class:`Failure` saying why not."""
    url = options.url
    headers = list(options.headers)
    redirects = 0
    while True:
        target = parse_uri(url)
        if options.proxy is not None:
            proxy = parse_proxy(options.proxy)
            address, host = join_address(proxy.host, proxy.port), proxy.host
        else:
            address, host = join_address(target.host, target.port), target.host
        extra: dict[str, Any] = {}
        if target.secure and options.ssl is not None:
            extra["ssl"] = options.ssl
        try:
            connection = await _NoRedirects(
                url,
                origin=Origin(options.origin) if options.origin is not None else None,
                subprotocols=[Subprotocol(name) for name in options.subprotocols] or None,
                additional_headers=headers or None,
                user_agent_header=f"wsgate/{__version__}",
                proxy=options.proxy,
                open_timeout=options.timeout,
                ping_interval=options.ping_interval,
                ping_timeout=20 if options.ping_interval else None,
                close_timeout=5,
                max_size=MAX_MESSAGE,
                create_connection=WatchedClientConnection,
                **extra,
            )
        except InvalidStatus as error:
            location = _redirect_location(error)
            if location is None or not options.follow_redirects:
                raise Failure(describe(error, address, host)) from None
            redirects += 1
            if redirects > options.max_redirects:
                raise Failure(
                    f"too many redirects (more than --max-redirects {options.max_redirects})"
                ) from None
            try:
                new_url = redirect_target(url, location)
                parse_uri(new_url)
            except (ValueError, InvalidURI) as problem:
                raise Failure(str(problem)) from None
            if not same_origin(url, new_url):
                headers = [(k, v) for k, v in headers if k.lower() not in _CREDENTIALS]
            url = new_url
        except Exception as error:
            raise Failure(describe(error, address, host)) from None
        else:
            assert isinstance(connection, WatchedClientConnection)
            return connection
