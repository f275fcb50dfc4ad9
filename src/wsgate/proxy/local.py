"""What the proxy answers itself, and where a request goes after nginx's rewrite and
content phases: ``return``, the auto-redirect of ``/prefix`` to ``/prefix/``, no location
(404), static files (``root``, ``index``, ``try_files``), internal redirects, named
locations, and ``error_page`` for each of them.

:func:`decide` runs once per request, at its head (a ``try_files`` that ends in a proxied
named location must know before the body comes). Its answer is either :class:`Proxy` (go
upstream) or :class:`Answer` (what to write once the request is read). Pure apart from
the file system (:mod:`~wsgate.proxy.static`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from wsgate.proxy import http1, static
from wsgate.proxy.dispatch import Dispatch, choose_host, dispatch, settle
from wsgate.proxy.exchange import Exchange
from wsgate.proxy.filesend import FileSender
from wsgate.proxy.http1 import HeadError, Headers, RequestHead
from wsgate.proxy.location_values import REDIRECTS, ErrorPage
from wsgate.proxy.mimetypes import STOCK_TYPES, Types, content_type
from wsgate.proxy.routes import Route, Routes, Site, VirtualHost
from wsgate.proxy.variables import Template, Variables, compile_template

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
"""nginx's NGX_HTTP_MAX_URI_CHANGES: more internal redirects than this is a loop (500)."""


@dataclass(slots=True)
class Proxy:
    """Go upstream: ``route`` (its group chosen) with this request target."""

    route: Route
    target: bytes
    status: int | None = None
    """An error page's status, which replaces the upstream's (nginx's ``error_page``)."""


@dataclass(slots=True)
class Answer:
    """The proxy's own response: a head's status and headers (framing and persistence are
    added when it is written), then ``body``, or ``length`` bytes of ``file`` from
    ``offset``. ``close``: nginx's 444, no answer at all. ``server``: the Server header
    (``server_tokens``)."""

    route: Route
    server: bytes
    status: int
    headers: Headers
    body: bytes = b""
    file: int | None = None
    offset: int = 0
    length: int = 0
    close: bool = False

    def discard(self) -> None:
        """Close the file of an answer that will not be sent."""
        if self.file is not None:
            os.close(self.file)
            self.file = None


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    return compile_template(text)


def types_of(routes: Routes) -> Types:
    return routes.types if routes.types is not None else STOCK_TYPES


def prepare(routes: Routes, site: Site, exchange: Exchange) -> Proxy | Answer:
    """A request's head is in: check it, choose its server (its keepalive_timeout counts
    from here) and decide; an answer of the proxy's own waits for the body, which is
    dropped (raises HeadError for what is refused at once)."""
    head, variables = exchange.head, exchange.variables
    assert variables is not None
    exchange.check(None)
    host = choose_host(site, head, variables)
    exchange.host = host
    exchange.idle_timeout = host.config.keepalive_timeout
    if exchange.idle_timeout <= 0:  # nginx: keepalive_timeout 0 turns keep-alive off
        exchange.keep_alive = False
    outcome = decide(routes, host, head, variables)
    exchange.route = outcome.route
    try:
        exchange.check_size(outcome.route.location.client_max_body_size)
    except HeadError:
        if isinstance(outcome, Answer):
            outcome.discard()
        raise
    if isinstance(outcome, Answer):
        exchange.head_sent("-")  # nothing goes upstream: the body is read and dropped
    return outcome


def write(answer: Answer, exchange: Exchange, transport: asyncio.WriteTransport,
          paused: bool, done: Callable[[BaseException | None], None]) -> FileSender | None:
    """Write the answer; ``done`` is called when it is all out, never from here (so that a
    pipelined request after it does not nest in this call): from the loop for one without
    a file, from the FileSender, which the caller keeps, for a file."""
    exchange.answered(answer.status)
    head = head_of(answer, exchange.keep_alive, exchange.head.version == "1.0",
                   static.http_date(time.time()))
    if answer.file is None:
        body = b"" if exchange.head.method == b"HEAD" else answer.body
        exchange.sent(len(body))
        transport.write(head + body)
        asyncio.get_running_loop().call_soon(done, None)
        return None
    sender = FileSender(asyncio.get_running_loop(), transport, answer.file, answer.offset,
                        answer.length, done, head=head)
    if paused:
        sender.pause()
    return sender


def abandon(sender: FileSender | None, answer: Answer | None) -> None:
    """The connection is gone: close the file being sent, or the one still to be."""
    if sender is not None:
        sender.cancel()
    if answer is not None:
        answer.discard()


def decide(routes: Routes, host: VirtualHost, head: RequestHead, variables: Variables
           ) -> Proxy | Answer:
    """Where the request goes, or what it gets (raises HeadError for the proxy's own
    errors, e.g. 502 for a proxy_pass variable naming no upstream)."""
    return _follow(routes, dispatch(routes, host, head, variables), head, variables, 0, None)


def _follow(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
            depth: int, page: ErrorPage | None) -> Proxy | Answer:
    if depth > MAX_REDIRECTS:
        log.error("rewrite or internal redirection cycle while processing %r",
                  (variables.uri or head.uri).decode("latin-1"))
        return _error(routes, found, head, variables, 500, depth, page=False)
    route = found.route
    if found.kind == "redirect":  # "/prefix" of a proxied "/prefix/" location
        args = _args(head, variables)
        location = (variables.uri or head.uri) + b"/" + (b"?" + args if args else b"")
        return _redirect(routes, found, head, variables, 301, location, depth, page)
    if found.kind == "return":
        return _returned(routes, found, head, variables, depth, page)
    if found.kind == "none":
        return _error(routes, found, head, variables, 404, depth, page=page is None)
    if found.group is not None:
        if found.group is not route.target:  # a variable chose it
            route = dataclasses.replace(route, target=found.group)
        return Proxy(route, found.target)
    return _files(routes, found, head, variables, depth, page)


def _args(head: RequestHead, variables: Variables) -> bytes:
    return head.target.partition(b"?")[2] if variables.args is None else variables.args


def _returned(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
              depth: int, page: ErrorPage | None) -> Answer | Proxy:
    answer = found.route.answer
    status = found.status
    if status == 444:
        return Answer(found.route, _token(found), 444, [], close=True)
    text = b"" if answer is None else variables.expand(answer)
    if status in REDIRECTS and answer is not None:
        return _redirect(routes, found, head, variables, status, text, depth, page)
    if answer is None and status >= 300:
        return _error(routes, found, head, variables, status, depth, page=page is None)
    # nginx types the text as a file of the URI's extension would be, else default_type
    kind = content_type(variables.uri or head.uri, types_of(routes),
                        found.route.location.default_type).encode("latin-1")
    return Answer(found.route, _token(found), status, [(b"Content-Type", kind)], body=text)


def _redirect(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
              status: int, location: bytes, depth: int, page: ErrorPage | None
              ) -> Answer | Proxy:
    if location.startswith(b"/"):
        location = static.absolute_location(location, variables.scheme,
                                            variables.variable("host"), variables.server_port)
    chosen = found.route.error_pages.get(status) if page is None else None
    if chosen is not None:
        return _page(routes, found, head, variables, status, chosen, depth)
    return _builtin(found, status, [(b"Location", location)])


def _files(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
           depth: int, page: ErrorPage | None) -> Answer | Proxy:
    route = found.route
    location = route.location
    if route.root is None:
        return _error(routes, found, head, variables, 404, depth, page=page is None)
    root = variables.expand(route.root).decode("utf-8", "surrogateescape")
    variables.root = root
    uri = variables.uri if variables.uri is not None else head.uri
    if location.try_files:
        def expand(text: str) -> bytes:
            return variables.expand(_compiled(text))

        tried = static.try_files(location.try_files, expand, root)
        if isinstance(tried, static.Named):
            return _named(routes, found, head, variables, tried.name, depth)
        if isinstance(tried, static.Redirect):
            return _internal(routes, found, head, variables, tried.uri, tried.args, depth,
                             page)
        if isinstance(tried, static.Answer):
            return _error(routes, found, head, variables, tried.status, depth, page is None)
        uri = tried.uri
        variables.uri = uri
    index = [variables.expand(item).decode("utf-8", "surrogateescape") for item in route.index]
    resolved = static.resolve(root, uri, index, method=head.method,
                              args=_args(head, variables), index_redirect=True)
    if isinstance(resolved, static.Redirect):
        return _internal(routes, found, head, variables, resolved.uri, resolved.args, depth,
                         page)
    if isinstance(resolved, static.Answer):
        if resolved.location is not None:
            return _redirect(routes, found, head, variables, resolved.status, resolved.location,
                             depth, page)
        return _error(routes, found, head, variables, resolved.status, depth, page is None)
    answer = static.file_head(resolved.uri, resolved.stat, head.method, head.get,
                              types=types_of(routes), default_type=location.default_type)
    if answer.status >= 400:
        os.close(resolved.fd)
        return _error(routes, found, head, variables, answer.status, depth, page is None,
                      extra=answer.headers)
    if answer.length == 0:
        os.close(resolved.fd)
        return Answer(route, _token(found), answer.status, answer.headers)
    return Answer(route, _token(found), answer.status, answer.headers, file=resolved.fd,
                  offset=answer.offset, length=answer.length)


def _internal(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
              uri: bytes, args: bytes, depth: int, page: ErrorPage | None) -> Proxy | Answer:
    """Match the locations again for ``uri`` with ``args`` (nginx's internal redirect: the
    request's own args are gone unless the new URI names them)."""
    variables.args = args
    again = dispatch(routes, found.host, head, variables, uri=uri)
    return _follow(routes, again, head, variables, depth + 1, page)


def _named(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
           name: str, depth: int) -> Proxy | Answer:
    route = found.host.named(name)
    if route is None:
        log.error('could not find named location "%s"', name)
        return _error(routes, found, head, variables, 500, depth, page=False)
    again = settle(routes, Dispatch(found.host, route, variables), head, variables.uri)
    return _follow(routes, again, head, variables, depth + 1, None)


def _error(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
           status: int, depth: int, page: bool, extra: Headers | None = None
           ) -> Answer | Proxy:
    """``status`` as the proxy's own answer: the location's error_page for it if there is
    one (and this is not an error page already), else nginx's built-in page."""
    chosen = found.route.error_pages.get(status) if page else None
    if chosen is not None:
        return _page(routes, found, head, variables, status, chosen, depth)
    return _builtin(found, status, [*(extra or []), *http1.extra_headers(status)])


def error_response(routes: Routes, exchange: Exchange, status: int) -> bytes:
    """The whole answer for an error the proxy meets itself (502, 504, 413...), which ends
    the connection: the location's error_page for it, if that is a file or a return (a
    file over 1 MiB, or a page that would go upstream, gives the built-in page instead),
    else nginx's built-in page."""
    route, host, variables = exchange.route, exchange.host, exchange.variables
    chosen = route.error_pages.get(status) if route is not None else None
    answer: Answer | Proxy | None = None
    if chosen is not None and route is not None and host is not None and variables is not None:
        try:
            answer = _page(routes, Dispatch(host, route, variables), exchange.head, variables,
                           status, chosen, 0)
        except HeadError:
            answer = None
    if not isinstance(answer, Answer) or answer.close or answer.length > MAX_PAGE:
        if isinstance(answer, Answer):
            answer.discard()
        token = server_token(host.config.server_tokens) if host is not None else http1.SERVER
        return http1.error_response(status, token)
    body = answer.body
    if answer.file is not None:
        body = os.pread(answer.file, answer.length, answer.offset)
        answer.discard()
    head = head_of(answer, False, exchange.head.version == "1.0", static.http_date(time.time()))
    return head + (b"" if exchange.head.method == b"HEAD" else body)


MAX_PAGE = 1 << 20


def _page(routes: Routes, found: Dispatch, head: RequestHead, variables: Variables,
          status: int, chosen: ErrorPage, depth: int) -> Answer | Proxy:
    if head.method not in (b"GET", b"HEAD"):  # nginx asks for an error page with GET
        head = dataclasses.replace(head, method=b"GET")
    target = variables.expand(_compiled(chosen.target))
    if target.startswith((b"http://", b"https://")):
        return _builtin(found, 302 if chosen.status in (None, 0) else chosen.status,
                        [(b"Location", target)])
    if target.startswith(b"@"):
        result = _named(routes, found, head, variables, target.decode("latin-1"), depth)
    else:
        uri, _, variables.args = target.partition(b"?")
        again = dispatch(routes, found.host, head, variables, uri=uri)
        result = _follow(routes, again, head, variables, depth + 1, chosen)
    override = status if chosen.status is None else (chosen.status or None)
    if override is not None and (isinstance(result, Proxy) or result.status < 300
                                 or chosen.status):
        result.status = override
    return result


def _builtin(found: Dispatch, status: int, headers: Headers) -> Answer:
    server = _token(found)
    return Answer(found.route, server, status, [(b"Content-Type", b"text/html"), *headers],
                  body=http1.error_body(status, server) if status >= 300 else b"")


def _token(found: Dispatch) -> bytes:
    return server_token(found.host.config.server_tokens)


def server_token(tokens: bool) -> bytes:
    """The Server header and the pages' footer: with the version, unless server_tokens off."""
    return http1.SERVER if tokens else b"wsgate"


def head_of(answer: Answer, keep_alive: bool, http10: bool, date: bytes) -> bytes:
    """The answer's head as written: the Server and Date headers, its length (when it has
    a body), and whether the connection stays."""
    headers: Headers = [(b"Server", answer.server), (b"Date", date)]
    headers.extend(answer.headers)
    if (answer.file is None and answer.status not in (204, 304) and answer.status >= 200
            and not any(name == b"Content-Length" for name, _ in answer.headers)):
        headers.append((b"Content-Length", b"%d" % len(answer.body)))
    if not keep_alive:
        headers.append((b"Connection", b"close"))
    elif http10:
        headers.append((b"Connection", b"keep-alive"))
    return http1.serialize_response(answer.status, http1.reason_phrase(answer.status), headers)


