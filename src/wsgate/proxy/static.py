"""Static files as nginx serves them: ``root`` + ``index`` + ``try_files`` pick a file, and
the static module's answer for it (types, ETag, conditional requests, one byte range).

Pure apart from the file system, which is reached only through a :class:`FileSystem`
(tests pass fakes for the errors a tmp_path cannot produce). Each rule names the nginx
source it follows: ngx_http_static_module.c, ngx_http_index_module.c,
ngx_http_try_files_module.c, ngx_http_not_modified_filter_module.c,
ngx_http_range_filter_module.c.
"""

from __future__ import annotations

import calendar
import errno
import os
import re
import stat as stat_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol

from wsgate.proxy.mimetypes import DEFAULT_TYPE, STOCK_TYPES, Types, content_type

Headers = list[tuple[bytes, bytes]]
HeaderGet = Callable[[bytes], bytes | None]
"""A request header's first value by lowercase name (``RequestHead.get``, ``dict.get``)."""


class FileSystem(Protocol):
    """What static serving asks of the disk; methods raise OSError as ``os`` does."""

    def stat(self, path: bytes) -> os.stat_result:
        """``os.stat`` (symlinks followed: nginx's ``disable_symlinks off``)."""
        ...

    def open(self, path: bytes) -> tuple[int, os.stat_result]:
        """Open for reading and fstat the fd (race-free size and mtime). A directory is
        closed again and given as fd -1."""
        ...

    def close(self, fd: int) -> None: ...


class RealFileSystem:
    """The disk, opened as nginx's ``ngx_open_and_stat_file`` does."""

    def stat(self, path: bytes) -> os.stat_result:
        return os.stat(path)

    def open(self, path: bytes) -> tuple[int, os.stat_result]:
        # O_NONBLOCK: a FIFO under the root must not hang the worker (it then 404s).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if stat_module.S_ISDIR(info.st_mode):
            os.close(fd)
            return -1, info
        return fd, info

    def close(self, fd: int) -> None:
        os.close(fd)


REAL_FS = RealFileSystem()


@dataclass(frozen=True, slots=True)
class Found:
    """A regular file to answer with: ``fd`` is open and now the caller's to close (or to
    hand to a FileSender). ``uri`` is the one served (an index file's, after ``index``),
    which picks the Content-Type."""

    uri: bytes
    path: bytes
    fd: int
    stat: os.stat_result


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer ``status`` (the caller's error page, or ``return``-like redirect body). A 301
    for a directory has ``location``: the URI-escaped path + "/" (+ "?args"), relative;
    :func:`absolute_location` makes it what nginx sends with ``absolute_redirect on``."""

    status: int
    location: bytes | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """An internal redirect: match locations again for ``uri`` with ``args``."""

    uri: bytes
    args: bytes


@dataclass(frozen=True, slots=True)
class Named:
    """Continue in the named location ``name`` (with its "@", as the config's key)."""

    name: str


@dataclass(frozen=True, slots=True)
class Tried:
    """try_files picked ``uri``: it becomes ``$uri``; serve it with :func:`resolve`."""

    uri: bytes


Resolved = Found | Answer | Redirect
TryResult = Tried | Answer | Redirect | Named

_NOT_FOUND = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG)
_FORBIDDEN = (errno.EACCES, errno.ELOOP, errno.EMLINK)
_METHODS = (b"GET", b"HEAD", b"POST")


def _open_status(code: int | None) -> int:
    """ngx_http_static_handler's status for a failed open: 404, 403, else 500."""
    if code in _NOT_FOUND:
        return 404
    return 403 if code in _FORBIDDEN else 500


def resolve(root: str | bytes, uri: bytes, index: Sequence[str] = ("index.html",), *,
            method: bytes = b"GET", args: bytes = b"", fs: FileSystem = REAL_FS,
            index_redirect: bool = False) -> Resolved:
    """The file for ``uri`` (normalised, percent-decoded) under ``root``, or the answer
    nginx's content phase gives instead. Methods other than GET/HEAD/POST get 405 before
    the disk is asked; POST finds its file, then gets 405 (nginx's order: POST to a
    directory still gets the 301). A URI ending in "/" tries ``index`` in order: an entry
    starting with "/" is an internal redirect; the first existing one is served
    (``index_redirect=True`` gives nginx's internal redirect to it instead, for a caller
    that re-matches locations, so ``index index.php`` can reach a ``\\.php$`` location)."""
    if method not in _METHODS:
        return Answer(405)
    if not uri.startswith(b"/") or b"\x00" in uri:
        return Answer(400)
    base = os.fsencode(root)
    if uri.endswith(b"/"):
        return _index(base, uri, index, method, args, fs, index_redirect)
    return _file(base, uri, method, args, fs)


def _file(base: bytes, uri: bytes, method: bytes, args: bytes, fs: FileSystem) -> Resolved:
    path = base + uri
    try:
        fd, info = fs.open(path)
    except OSError as error:
        return Answer(_open_status(error.errno))
    if fd < 0:
        location = escape_uri(uri) + b"/" + (b"?" + args if args else b"")
        return Answer(301, location)
    if not stat_module.S_ISREG(info.st_mode):
        fs.close(fd)  # nginx: '"..." is not a regular file', a 404 (a socket fails the open)
        return Answer(404)
    if method == b"POST":
        fs.close(fd)
        return Answer(405)
    return Found(uri, path, fd, info)


def _index(base: bytes, uri: bytes, index: Sequence[str], method: bytes, args: bytes,
           fs: FileSystem, index_redirect: bool) -> Resolved:
    """ngx_http_index_handler, then the content phase's "directory index is forbidden"."""
    dir_tested = False
    for entry in index:
        name = os.fsencode(entry)
        if name.startswith(b"/"):
            return Redirect(name, args)
        try:
            fs.stat(base + uri + name)
        except OSError as error:
            if error.errno in _FORBIDDEN:
                return Answer(403)
            if error.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
                return Answer(404)
            if not dir_tested:
                status = _test_dir(base + uri[:-1] or b"/", fs)
                if status:
                    return Answer(status)
                dir_tested = True
            if error.errno == errno.ENOENT:
                continue
            return Answer(500)
        if index_redirect:
            return Redirect(uri + name, args)
        return _file(base, uri + name, method, args, fs)
    return Answer(403)


def _test_dir(path: bytes, fs: FileSystem) -> int:
    """ngx_http_index_test_dir: 0 when the directory is there (or unsearchable: the index
    test already passed its permissions), else the status to answer."""
    try:
        info = fs.stat(path)
    except OSError as error:
        if error.errno == errno.ENOENT:
            return 404
        if error.errno == errno.EACCES:
            return 0
        return 403 if error.errno in _FORBIDDEN else 500
    return 0 if stat_module.S_ISDIR(info.st_mode) else 500


def try_files(items: Sequence[str], expand: Callable[[str], bytes], root: str | bytes, *,
              fs: FileSystem = REAL_FS) -> TryResult:
    """nginx's try_files: each item but the last, expanded, names a file under ``root``
    (a directory when the item ends in "/": that slash is dropped before expanding, so
    ``$uri/`` tests ``root$uri`` and picks ``$uri``); any error skips it. The last is the
    fallback: "=CODE", "@name", or a URI (with "?args", else none: nginx drops the
    request's args there, hence the usual ``/index.php?$args``)."""
    base = os.fsencode(root)
    for item in items[:-1]:
        test_dir = item.endswith("/")
        name = expand(item[:-1] if test_dir else item)
        if b"\x00" in name:
            continue
        try:
            info = fs.stat(base + name)
        except OSError:
            continue
        if stat_module.S_ISDIR(info.st_mode) == test_dir:
            return Tried(name)
    last = items[-1]
    if last.startswith("="):
        return Answer(int(last[1:]))
    target = expand(last)
    if target.startswith(b"@"):
        return Named(target.decode("utf-8", "surrogateescape"))
    uri, _, args = target.partition(b"?")
    return Redirect(uri, args)


# -- the answer for a found file ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileHead:
    """The response for a found file. ``length`` bytes of the file from ``offset`` follow
    the head (0 for HEAD, 304 and errors). For a status of 400 and up, ``headers`` are
    the ones to add to the caller's error page (416's Content-Range)."""

    status: int
    headers: Headers
    offset: int
    length: int


def file_head(uri: bytes, info: os.stat_result, method: bytes, header: HeaderGet, *,
              types: Types = STOCK_TYPES, default_type: str = DEFAULT_TYPE) -> FileHead:
    """The answer nginx gives GET or HEAD of a regular file (anything else: 405). Order as
    nginx's filters: If-Unmodified-Since, If-Match (412); If-Modified-Since and
    If-None-Match (304 only when every one present says so, as nginx; RFC 9110 would
    ignore IMS beside INM); then Range. One range gets a 206; several (nginx answers
    multipart/byteranges) get 200 and the whole file: a simplification."""
    if method not in (b"GET", b"HEAD"):
        return FileHead(405, [], 0, 0)
    size = info.st_size
    mtime = int(info.st_mtime)
    etag = b'"%x-%x"' % (mtime, size)
    modified = http_date(mtime)
    unmodified_since = _value(header, b"if-unmodified-since")
    if unmodified_since is not None and parse_http_date(unmodified_since) < mtime:
        return FileHead(412, [], 0, 0)  # an unparsable date is -1: 412, as nginx
    if_match = _value(header, b"if-match")
    if if_match is not None and not etag_matches(if_match, etag, weak=False):
        return FileHead(412, [], 0, 0)
    since = _value(header, b"if-modified-since")
    none_match = _value(header, b"if-none-match")
    if (since is not None or none_match is not None) and (
            since is None or parse_http_date(since) == mtime) and (
            none_match is None or etag_matches(none_match, etag, weak=True)):
        return FileHead(304, [(b"Last-Modified", modified), (b"ETag", etag)], 0, 0)
    kind = content_type(uri, types, default_type).encode("latin-1")
    start, end = 0, size
    status = 200
    ranges = _requested_ranges(header, size, etag, mtime)
    if ranges is not None:
        if not ranges:
            return FileHead(416, [(b"Content-Range", b"bytes */%d" % size)], 0, 0)
        if len(ranges) == 1:
            status = 206
            start, end = ranges[0]
    headers = [(b"Content-Type", kind), (b"Content-Length", b"%d" % (end - start)),
               (b"Last-Modified", modified), (b"ETag", etag)]
    if status == 206:
        headers.append((b"Content-Range", b"bytes %d-%d/%d" % (start, end - 1, size)))
    else:
        headers.append((b"Accept-Ranges", b"bytes"))
    return FileHead(status, headers, start, 0 if method == b"HEAD" else end - start)


def _value(header: HeaderGet, name: bytes) -> bytes | None:
    value = header(name)
    return None if value is None else value.strip(b" \t")


def etag_matches(value: bytes, etag: bytes, *, weak: bool) -> bool:
    """ngx_http_test_if_match: ``value`` is "*" or a list holding ``etag``; ``weak`` (for
    If-None-Match) also accepts it as W/"...". Byte for byte nginx's scan."""
    if value == b"*":
        return True
    start, end, size = 0, len(value), len(etag)
    while start < end:
        if weak and end - start > 2 and value.startswith(b"W/", start):
            start += 2
        if size > end - start:
            return False
        if value.startswith(etag, start):
            after = start + size
            while after < end and value[after] in b" \t":
                after += 1
            if after == end or value[after] == 0x2C:
                return True
        comma = value.find(b",", start)
        if comma < 0:
            return False
        start = comma
        while start < end and value[start] in b" \t,":
            start += 1
    return False


def _requested_ranges(header: HeaderGet, size: int, etag: bytes,
                      mtime: int) -> list[tuple[int, int]] | None:
    """ngx_http_range_header_filter: None for the whole file (no Range, an If-Range that
    does not hold, or nginx declining), [] for 416, else the [start, end) ranges."""
    value = _value(header, b"range")
    if value is None or len(value) < 7 or value[:6].lower() != b"bytes=":
        return None
    if_range = _value(header, b"if-range")
    if if_range is not None:
        if len(if_range) >= 2 and if_range.endswith(b'"'):
            if if_range != etag:
                return None
        elif parse_http_date(if_range) != mtime:
            return None
    return parse_ranges(value[6:], size)


_MAX_OFF_T = 2**63 - 1
_RANGE = re.compile(rb" *(?:([0-9]+) *- *([0-9]*)|-([0-9]+)) *(,?)")
"""One element of a byte-range set as nginx scans it: spaces (not tabs) around the numbers
and the comma, none between a suffix's "-" and its length."""


def parse_ranges(spec: bytes, size: int) -> list[tuple[int, int]] | None:
    """ngx_http_range_parse of what follows "bytes=": [start, end) pairs clipped to
    ``size`` (empty ones dropped), [] when unsatisfiable or malformed (416, as nginx), None
    when nginx declines (an empty range from 0), or for several ranges (nginx would send
    multipart/byteranges; the whole file instead is this module's simplification)."""
    ranges: list[tuple[int, int]] = []
    pos = 0
    while True:
        match = _RANGE.match(spec, pos)
        if match is None:
            return []
        first, last, suffix, comma = match.groups()
        pos = match.end()
        if not comma and pos != len(spec):
            return []
        numbers = [int(text) for text in (first, last, suffix) if text]
        if any(number > _MAX_OFF_T for number in numbers):
            return []
        if suffix is not None:
            start, end = max(size - int(suffix), 0), size
        else:
            start, end = int(first), min(int(last) + 1, size) if last else size
        if start < end:
            ranges.append((start, end))
        elif start == 0:
            return None
        if not comma:
            break
    return ranges if len(ranges) == 1 else None if ranges else []


# -- dates and locations -----------------------------------------------------------------


def http_date(seconds: float) -> bytes:
    """``Mon, 28 Sep 1970 06:00:00 GMT`` (ngx_http_time; never the locale's names)."""
    return formatdate(seconds, usegmt=True).encode("ascii")


_MONTHS = {name: n for n, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_RFC1123 = re.compile(rb"[A-Za-z]*, *(\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d)")
_RFC850 = re.compile(rb"[A-Za-z]*, *(\d\d)-(\w{3})-(\d\d) (\d\d):(\d\d):(\d\d)")
_ASCTIME = re.compile(rb"[A-Za-z]* +(\w{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})")


def parse_http_date(value: bytes) -> int:
    """Seconds since the epoch of an HTTP date in any of its three forms (what follows the
    time, "GMT", is not read, as ngx_parse_http_time); -1 when it is not one."""
    if match := _RFC1123.match(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.match(value):
        day, month, year, hour, minute, second = match.groups()
        year = b"%d" % (int(year) + (2000 if int(year) < 70 else 1900))
    elif match := _ASCTIME.match(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return -1
    number = _MONTHS.get(month.decode("latin-1"))
    fields = (int(year), int(day), int(hour), int(minute), int(second))
    if number is None or not (1 <= fields[1] <= 31 and fields[2] < 24 and fields[3] < 60
                              and fields[4] < 60 and fields[0] >= 1970):
        return -1
    if fields[1] > calendar.monthrange(fields[0], number)[1]:
        return -1
    return calendar.timegm((fields[0], number, *fields[1:], 0, 0, 0))


_UNESCAPED = frozenset(b"!$&'()*+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_"
                       b"abcdefghijklmnopqrstuvwxyz~")
"""What ngx_escape_uri(NGX_ESCAPE_URI) leaves: it escapes controls, space, " # % < > ? \\
^ ` { | } DEL and every byte over 0x7f."""


def escape_uri(uri: bytes) -> bytes:
    """A decoded path made fit for a Location header again, as nginx escapes it."""
    if all(byte in _UNESCAPED for byte in uri):
        return uri
    return b"".join(bytes((byte,)) if byte in _UNESCAPED else b"%%%02X" % byte
                    for byte in uri)


def absolute_location(location: bytes, scheme: str, host: bytes, port: int) -> bytes:
    """What nginx's header filter sends for a Location starting with "/" under its defaults
    (``absolute_redirect on``, ``server_name_in_redirect off``, ``port_in_redirect on``):
    ``scheme://host`` where host is the request's Host without its port (or the local
    address), then the port the connection came in on unless it is the scheme's own."""
    default = 443 if scheme == "https" else 80
    suffix = b"" if port == default else b":%d" % port
    return scheme.encode("ascii") + b"://" + host + suffix + location
