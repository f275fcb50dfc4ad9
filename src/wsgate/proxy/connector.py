"""Picking a server of an upstream group and connecting to it, with nginx's
``proxy_next_upstream``: a connect error or timeout counts against the server (passive
health) and the next one is tried, within ``proxy_next_upstream_tries`` and
``proxy_next_upstream_timeout``. An idle keep-alive connection is used first when there is
one. Each failed try gets an error-log line naming the server and the cause.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from functools import partial

from wsgate.proxy.limits import Limits, is_local
from wsgate.proxy.pool import Pool
from wsgate.proxy.routes import Route
from wsgate.proxy.servers import ServerState
from wsgate.proxy.upstream_connection import UpstreamConnection

log = logging.getLogger(__name__)


_CAUSES = {502: "no_upstream", 503: "local_limit", 504: "upstream_timeout"}
"""The metrics' rejection cause of each answer of :class:`Unreachable`."""


class Unreachable(Exception):
    """No server of the group could be reached: answer ``status`` (502, or 504 when the
    last try timed out, or 503 when this process ran out of something: see
    :mod:`~wsgate.proxy.limits`). The error log already says why."""

    def __init__(self, status: int) -> None:
        super().__init__(f"no server of the upstream group could be reached ({status})")
        self.status = status
        self.cause = _CAUSES[status]


async def connect(route: Route, key: bytes | None, pool: Pool, limits: Limits,
                  started: float, context: Callable[[], str],
                  tried: list[ServerState] | None = None,
                  ) -> tuple[UpstreamConnection, ServerState]:
    """A connection to a server of ``route``'s group, and the server, already counted
    (``acquire``d: the caller releases it). ``key``: the balancing key; ``started``: when
    the request began (for ``proxy_next_upstream_timeout``); ``context``: the tail of an
    error-log line (client, request). If the task is cancelled meanwhile (the client
    left), nothing stays counted. A local error (``limits``) is nobody's fault but ours:
    no server is blamed, none is tried next, and the answer is 503. ``tried``: the servers
    this request has had already (each one picked is added)."""
    loop = asyncio.get_running_loop()
    location, group = route.location, route.group
    tried = [] if tried is None else tried
    before = len(tried)
    timed_out = False
    deadline = started + location.next_upstream_timeout if location.next_upstream_timeout \
        else None
    while True:
        server = group.pick(time.monotonic(), key, tried)
        if server is None:
            if len(tried) == before:
                log.error("no live upstreams in %s%s", group.name, context())
            raise Unreachable(504 if timed_out else 502)
        tried.append(server)
        group.acquire(server)
        conn = pool.take(server.address)
        if conn is not None:
            return conn, server
        try:
            conn = await _connect_within(loop, server, location.connect_timeout)
        except asyncio.CancelledError:
            group.release(server)
            raise
        except (TimeoutError, OSError) as error:
            group.release(server)
            code = error.errno if isinstance(error, OSError) else None
            if is_local(error) and code != errno.EADDRNOTAVAIL:
                assert code is not None and isinstance(error, OSError)
                limits.hit(code, f"connect() to {server.address} failed "
                                 f"({code}: {error.strerror})")
                raise Unreachable(503) from None
            if code != errno.EADDRNOTAVAIL:  # no route from here (no IPv6, no free port
                group.report_failure(server, time.monotonic())  # to it): not its fault
            timed_out = isinstance(error, TimeoutError)
            log.error("connect() to %s failed: %s%s", server.address,
                      _reason(error, location.connect_timeout), context())
            tries = location.next_upstream_tries
            if (tries and len(tried) >= tries) or (
                deadline is not None and time.monotonic() >= deadline
            ) or not goes_next(location.next_upstream, "timeout" if timed_out else "error"):
                raise Unreachable(504 if timed_out else 502) from None
            continue
        return conn, server


async def _connect_within(loop: asyncio.AbstractEventLoop, server: ServerState,
                          timeout: float) -> UpstreamConnection:
    """``create_connection`` within ``timeout`` (raises TimeoutError): a timer that cancels
    this task, as ``asyncio.timeout`` does, without its context manager and task lookups,
    which showed in a storm of handshakes."""
    task = asyncio.current_task(loop)
    assert task is not None
    base = task.cancelling()  # a cancel pending before this one is not the timer's
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = loop.call_later(timeout, expire)
    try:
        _transport, conn = await loop.create_connection(
            partial(UpstreamConnection, server.address), server.config.host, server.config.port)
    except asyncio.CancelledError:
        if expired and task.uncancel() <= base:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
    return conn


def goes_next(conditions: tuple[str, ...], condition: str) -> bool:
    """nginx's proxy_next_upstream: whether ``condition`` ("error", "timeout", "http_502")
    sends the request to the next server."""
    return condition in conditions and "off" not in conditions


def _reason(error: BaseException, timeout: float) -> str:
    """Why a connect failed, in a few lowercase words ("connection refused")."""
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g}s (proxy_connect_timeout)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
