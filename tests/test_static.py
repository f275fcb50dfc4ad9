"""Static files as nginx picks and answers them: root, index, try_files, types, ETag,
conditional requests and byte ranges (wsgate.proxy.static, wsgate.proxy.mimetypes)."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wsgate.proxy.mimetypes import STOCK_TYPES, content_type, extension, parse_types
from wsgate.proxy.static import (
    Answer,
    FileHead,
    Found,
    Named,
    Redirect,
    Resolved,
    Tried,
    absolute_location,
    escape_uri,
    etag_matches,
    file_head,
    http_date,
    parse_http_date,
    parse_ranges,
    resolve,
    try_files,
)

MTIME = 1_700_000_000  # 0x6553f100: Tue, 14 Nov 2023 22:13:20 GMT
BODY = b"0123456789abcdefghij"  # 20 bytes
ETAG = b'"6553f100-14"'
DATE = b"Tue, 14 Nov 2023 22:13:20 GMT"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A document root: files, a symlink, a FIFO, directories with and without index."""
    files = {"index.html": b"<h1>home</h1>", "a.txt": BODY, "photo.JPG": b"jpg",
             "noext": b"n", "dir/index.htm": b"htm", "sub/page.html": b"page",
             "a b/x.css": b"css", "d2/index.html/inner": b"deep", "empty.txt": b""}
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a.txt")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


@pytest.fixture
def found_files() -> Iterator[list[Found]]:
    """Closes every fd a test was handed."""
    opened: list[Found] = []
    yield opened
    for found in opened:
        os.close(found.fd)


def served(result: Resolved, opened: list[Found]) -> Found:
    assert isinstance(result, Found), result
    opened.append(result)
    return result


# -- resolve: root and index ---------------------------------------------------------------


def test_a_file_is_found_open(root: Path, found_files: list[Found]) -> None:
    found = served(resolve(str(root), b"/a.txt"), found_files)
    assert found.uri == b"/a.txt" and found.path == os.fsencode(root / "a.txt")
    assert os.pread(found.fd, 100, 0) == BODY and found.stat.st_size == len(BODY)


def test_a_symlink_is_followed(root: Path, found_files: list[Found]) -> None:
    found = served(resolve(root.as_posix(), b"/link"), found_files)
    assert os.pread(found.fd, 100, 0) == BODY


@pytest.mark.parametrize(("uri", "status"), [
    (b"/missing", 404), (b"/a.txt/x", 404), (b"/fifo", 404), (b"/x" * 200, 404),
])
def test_what_is_not_a_file_is_not_found(root: Path, uri: bytes, status: int) -> None:
    assert resolve(str(root), uri) == Answer(status)


def test_a_directory_without_its_slash_is_moved(root: Path) -> None:
    assert resolve(str(root), b"/dir") == Answer(301, b"/dir/")
    assert resolve(str(root), b"/dir", args=b"a=1&b") == Answer(301, b"/dir/?a=1&b")
    assert resolve(str(root), b"/a b") == Answer(301, b"/a%20b/")
    assert resolve(str(root), b"/sub", method=b"POST") == Answer(301, b"/sub/")


def test_index_files_are_tried_in_order(root: Path, found_files: list[Found]) -> None:
    home = served(resolve(str(root), b"/", ["index.html"]), found_files)
    assert home.uri == b"/index.html"
    found = served(resolve(str(root), b"/dir/", ["index.html", "index.htm"]), found_files)
    assert found.uri == b"/dir/index.htm" and os.pread(found.fd, 10, 0) == b"htm"


def test_a_directory_with_no_index_is_forbidden_and_a_missing_one_not_found(root: Path) -> None:
    assert resolve(str(root), b"/empty/") == Answer(403)
    assert resolve(str(root), b"/nothing/") == Answer(404)
    assert resolve(str(root), b"/a.txt/") == Answer(404)  # ENOTDIR
    assert resolve(str(root / "gone"), b"/") == Answer(404)


def test_index_redirects(root: Path) -> None:
    assert resolve(str(root), b"/empty/", ["index.html", "/fallback.html"],
                   args=b"q=1") == Redirect(b"/fallback.html", b"q=1")
    assert resolve(str(root), b"/", index_redirect=True, args=b"q") == Redirect(
        b"/index.html", b"q")
    # An "index.html" that is a directory: served as its URI is, so moved to the slash.
    assert resolve(str(root), b"/d2/") == Answer(301, b"/d2/index.html/")


def test_methods(root: Path) -> None:
    assert resolve(str(root), b"/a.txt", method=b"PUT") == Answer(405)
    assert resolve(str(root), b"/missing", method=b"DELETE") == Answer(405)
    assert resolve(str(root), b"/a.txt", method=b"POST") == Answer(405)
    assert resolve(str(root), b"/missing", method=b"POST") == Answer(404)
    assert resolve(str(root), b"/empty/", method=b"POST") == Answer(403)
    assert resolve(str(root), b"/", method=b"POST") == Answer(405)


def test_a_nul_or_a_relative_uri_is_refused(root: Path) -> None:
    assert resolve(str(root), b"/a\x00.txt") == Answer(400)
    assert resolve(str(root), b"a.txt") == Answer(400)


def _denied_checks(site: Path) -> None:
    assert isinstance(resolve(str(site), b"/open.txt"), Found)  # the user can read the rest
    assert resolve(str(site), b"/secret.txt") == Answer(403)
    assert resolve(str(site), b"/locked/index.html") == Answer(403)
    assert resolve(str(site), b"/locked/") == Answer(403)


def test_permission_denied_is_forbidden() -> None:
    """As root nothing is denied, so the checks run in a child that became nobody (as a
    worker with ``user nobody`` would), over a tree nobody can reach."""
    site = Path(tempfile.mkdtemp(prefix="wsgate-static-"))
    try:
        site.chmod(0o755)
        (site / "open.txt").write_bytes(b"o")
        (site / "open.txt").chmod(0o644)
        (site / "secret.txt").write_bytes(b"s")
        (site / "secret.txt").chmod(0)
        (site / "locked").mkdir()
        (site / "locked" / "index.html").write_bytes(b"i")
        (site / "locked").chmod(0)
        if os.geteuid() != 0:
            _denied_checks(site)
            return
        nobody = pwd.getpwnam("nobody")
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                _denied_checks(site)
                status = 0
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0, "the checks failed as nobody"
    finally:
        (site / "locked").chmod(0o755)
        shutil.rmtree(site)


class FakeFS:
    """A disk that fails as told: path -> errno, for stat and open alike."""

    def __init__(self, errors: dict[bytes, int], dirs: frozenset[bytes] = frozenset()) -> None:
        self.errors = errors
        self.dirs = dirs

    def stat(self, path: bytes) -> os.stat_result:
        if path in self.errors:
            raise OSError(self.errors[path], os.strerror(self.errors[path]))
        if path in self.dirs:
            return os.stat_result((0o40755, 0, 0, 2, 0, 0, 0, 0, 0, 0))
        raise FileNotFoundError(errno.ENOENT, "no")

    def open(self, path: bytes) -> tuple[int, os.stat_result]:
        info = self.stat(path)
        return -1, info

    def close(self, fd: int) -> None:
        raise AssertionError("nothing was opened")


@pytest.mark.parametrize(("code", "status"), [
    (errno.EACCES, 403), (errno.ELOOP, 403), (errno.EIO, 500), (errno.ENXIO, 500),
    (errno.ENAMETOOLONG, 404),
])
def test_open_errors_map_as_nginx(code: int, status: int) -> None:
    assert resolve("/r", b"/f", fs=FakeFS({b"/r/f": code})) == Answer(status)


def test_index_errors_map_as_nginx() -> None:
    assert resolve("/r", b"/d/", fs=FakeFS({b"/r/d/index.html": errno.EACCES})) == Answer(403)
    assert resolve("/r", b"/d/", fs=FakeFS({b"/r/d/index.html": errno.ELOOP})) == Answer(403)
    # The index is missing and the directory unsearchable: nginx goes on, then forbids.
    assert resolve("/r", b"/d/", fs=FakeFS({b"/r/d": errno.EACCES})) == Answer(403)
    assert resolve("/r", b"/d/", fs=FakeFS({b"/r/d/index.html": errno.EIO},
                                             frozenset({b"/r/d"}))) == Answer(500)
    assert resolve("/r", b"/d/", fs=FakeFS({}, frozenset({b"/r/d"}))) == Answer(403)
    assert resolve("/r", b"/d/", fs=FakeFS({})) == Answer(404)


# -- try_files -----------------------------------------------------------------------------


def expander(uri: bytes) -> Callable[[str], bytes]:
    return lambda item: item.encode().replace(b"$uri", uri)


@pytest.mark.parametrize(("uri", "result"), [
    (b"/a.txt", Tried(b"/a.txt")),
    (b"/dir", Tried(b"/dir")),  # "$uri/" picks the directory without its slash: then 301
    (b"/dir/", Tried(b"/dir/")),
    (b"/nope", Redirect(b"/index.html", b"")),
])
def test_try_files_tries_files_then_directories(root: Path, uri: bytes,
                                                 result: object) -> None:
    assert try_files(["$uri", "$uri/", "/index.html"], expander(uri), str(root)) == result


def test_try_files_checks_the_kind(root: Path) -> None:
    assert try_files(["$uri", "=404"], expander(b"/dir"), str(root)) == Answer(404)
    assert try_files(["$uri/", "=403"], expander(b"/a.txt"), str(root)) == Answer(403)
    assert try_files(["$uri", "=404"], expander(b"/fifo"), str(root)) == Tried(b"/fifo")


def test_try_files_fallbacks(root: Path) -> None:
    expand = expander(b"/nope")
    assert try_files(["$uri", "@app"], expand, str(root)) == Named("@app")
    assert try_files(["$uri", "/x.php?q=$uri"], expand, str(root)) == Redirect(
        b"/x.php", b"q=/nope")
    assert try_files(["=418"], expand, str(root)) == Answer(418)


def test_try_files_then_resolve(root: Path) -> None:
    tried = try_files(["$uri", "$uri/", "=404"], expander(b"/sub"), str(root))
    assert isinstance(tried, Tried)
    assert resolve(str(root), tried.uri) == Answer(301, b"/sub/")


# -- the head ------------------------------------------------------------------------------


def head(method: bytes = b"GET", uri: bytes = b"/a.txt", size: int = len(BODY),
         **headers: str) -> FileHead:
    info = os.stat_result((0o100644, 0, 0, 1, 0, 0, size, MTIME, MTIME, MTIME))
    values = {name.replace("_", "-").encode(): value.encode() for name, value in headers.items()}
    return file_head(uri, info, method, values.get)


def test_a_whole_file() -> None:
    assert head() == FileHead(200, [
        (b"Content-Type", b"text/plain"), (b"Content-Length", b"20"),
        (b"Last-Modified", DATE), (b"ETag", ETAG), (b"Accept-Ranges", b"bytes")], 0, 20)
    assert head(b"HEAD") == FileHead(200, head().headers, 0, 0)
    assert head(b"POST") == FileHead(405, [], 0, 0)


def test_not_modified() -> None:
    not_modified = FileHead(304, [(b"Last-Modified", DATE), (b"ETag", ETAG)], 0, 0)
    assert head(if_modified_since=DATE.decode()) == not_modified
    assert head(if_modified_since="Tuesday, 14-Nov-23 22:13:20 GMT") == not_modified
    assert head(if_modified_since="Tue Nov 14 22:13:20 2023") == not_modified
    assert head(if_modified_since="Tue, 14 Nov 2023 22:13:21 GMT").status == 200  # exact
    assert head(if_modified_since="garbage").status == 200
    assert head(if_none_match=ETAG.decode()) == not_modified
    assert head(if_none_match='W/' + ETAG.decode()) == not_modified
    assert head(if_none_match='"x", ' + ETAG.decode() + " ") == not_modified
    assert head(if_none_match="*") == not_modified
    assert head(if_none_match='"x"').status == 200
    # nginx wants every condition given to hold (RFC 9110 would ignore the date here).
    assert head(if_none_match=ETAG.decode(), if_modified_since="garbage").status == 200
    assert head(b"HEAD", if_none_match=ETAG.decode()) == not_modified


def test_preconditions_fail() -> None:
    failed = FileHead(412, [], 0, 0)
    assert head(if_unmodified_since="Tue, 14 Nov 2023 22:13:19 GMT") == failed
    assert head(if_unmodified_since="garbage") == failed
    assert head(if_unmodified_since=DATE.decode()).status == 200
    assert head(if_match='"other"') == failed
    assert head(if_match="W/" + ETAG.decode()) == failed  # If-Match compares strongly
    assert head(if_match=ETAG.decode()).status == 200
    assert head(if_match="*").status == 200
    assert head(if_match='"other"', if_none_match=ETAG.decode()) == failed


def test_one_range() -> None:
    part = head(range="bytes=2-5")
    assert part == FileHead(206, [
        (b"Content-Type", b"text/plain"), (b"Content-Length", b"4"),
        (b"Last-Modified", DATE), (b"ETag", ETAG), (b"Content-Range", b"bytes 2-5/20")], 2, 4)
    assert head(range="bytes=15-").headers[-1] == (b"Content-Range", b"bytes 15-19/20")
    assert (head(range="bytes=-3").offset, head(range="bytes=-3").length) == (17, 3)
    assert head(range="bytes=10-999").headers[-1] == (b"Content-Range", b"bytes 10-19/20")
    assert head(b"HEAD", range="bytes=2-5") == FileHead(206, part.headers, 2, 0)
    assert head(range="BYTES=0-0").length == 1


def test_ranges_nginx_does_not_answer_206() -> None:
    unsatisfiable = FileHead(416, [(b"Content-Range", b"bytes */20")], 0, 0)
    assert head(range="bytes=20-") == unsatisfiable
    assert head(range="bytes=abc") == unsatisfiable
    assert head(range="bytes=-0") == unsatisfiable
    assert head(range="bytes=0-1,4-5").status == 200  # several: the whole file
    assert head(range="bytes=0-1,40-50").headers[-1] == (b"Content-Range", b"bytes 0-1/20")
    assert head(range="items=0-1").status == 200
    assert head(size=0, range="bytes=0-").status == 200
    assert head(if_none_match=ETAG.decode(), range="bytes=0-1").status == 304


def test_if_range() -> None:
    assert head(range="bytes=0-1", if_range=ETAG.decode()).status == 206
    assert head(range="bytes=0-1", if_range='"old"').status == 200
    assert head(range="bytes=0-1", if_range=DATE.decode()).status == 206
    assert head(range="bytes=0-1", if_range="Tue, 14 Nov 2023 22:13:19 GMT").status == 200


@pytest.mark.parametrize(("spec", "size", "ranges"), [
    (b"0-0", 10, [(0, 1)]), (b" 1 - 3 ", 10, [(1, 4)]), (b"-20", 10, [(0, 10)]),
    (b"5-2", 10, []), (b"0-1,", 10, []), (b"- 5", 10, []), (b"1-2\t", 10, []),
    (b"99999999999999999999-", 10, []), (b"3-,5-", 10, None), (b"0-", 0, None),
    (b"-5", 0, None), (b"5-", 0, []),
])
def test_parse_ranges(spec: bytes, size: int, ranges: list[tuple[int, int]] | None) -> None:
    assert parse_ranges(spec, size) == ranges


def test_etag_matches_as_nginx_scans() -> None:
    assert etag_matches(b'"a" , "b"', b'"b"', weak=False)
    assert not etag_matches(b'"a", "bb"', b'"b"', weak=False)
    assert not etag_matches(b'W/"b"', b'"b"', weak=False)
    assert etag_matches(b'W/"b"', b'"b"', weak=True)


# -- types ---------------------------------------------------------------------------------


def test_types() -> None:
    assert STOCK_TYPES["html"] == "text/html" and STOCK_TYPES["js"] == "application/javascript"
    assert STOCK_TYPES["docx"].endswith("wordprocessingml.document")
    assert STOCK_TYPES["dll"] == "application/octet-stream" and len(STOCK_TYPES) >= 100
    assert head(uri=b"/photo.JPG").headers[0] == (b"Content-Type", b"image/jpeg")
    mine = parse_types({"text/html": ["html", "HTM"], "text/x-html": ["html"]})
    assert mine == {"html": "text/x-html", "htm": "text/html"}  # a later duplicate wins
    assert content_type(b"/x.Htm", mine) == "text/html"
    assert content_type(b"/x.css", mine, "application/octet-stream") == (
        "application/octet-stream")


@pytest.mark.parametrize(("uri", "ext"), [
    (b"/a.tar.gz", b"gz"), (b"/.profile", b""), (b"/d.d/file", b""), (b"/d/.x", b""),
    (b"/a.", b""), (b"/a.b", b"b"), (b"/", b""), (b"/x/a.js", b"js"),
])
def test_extension_as_nginx(uri: bytes, ext: bytes) -> None:
    assert extension(uri) == ext


# -- dates and locations -------------------------------------------------------------------


def test_http_dates() -> None:
    assert http_date(MTIME) == DATE
    assert parse_http_date(DATE) == MTIME
    assert parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse_http_date(b"Sun Nov  6 08:49:37 1994") == 784111777
    for bad in (b"", b"Sun, 31 Feb 1994 08:49:37 GMT", b"Sun, 06 Foo 1994 08:49:37 GMT",
                b"Sun, 06 Nov 1994 25:49:37 GMT", b"yesterday"):
        assert parse_http_date(bad) == -1, bad


def test_locations() -> None:
    assert escape_uri(b"/a b/\xc3\xa9?#%\"") == b"/a%20b/%C3%A9%3F%23%25%22"
    assert escape_uri(b"/ok-._~!$&'()*+,;=:@[]/") == b"/ok-._~!$&'()*+,;=:@[]/"
    assert absolute_location(b"/d/", "http", b"example.com", 80) == b"http://example.com/d/"
    assert absolute_location(b"/d/", "https", b"h", 443) == b"https://h/d/"
    assert absolute_location(b"/d/", "http", b"h", 8080) == b"http://h:8080/d/"


def test_a_unix_socket_under_the_root_is_an_error() -> None:
    """open() of a socket fails with ENXIO: nginx logs it as critical and answers 500."""
    short = Path("/tmp") / f"wsgate-static-{os.getpid()}"
    short.mkdir(exist_ok=True)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(short / "s"))
        assert resolve(str(short), b"/s") == Answer(500)
    finally:
        server.close()
        (short / "s").unlink(missing_ok=True)
        short.rmdir()
