"""nginx ``location`` matching against nginx's documentation and an independent reference.

The reference below follows nginx's own data structures (ngx_http.c, ngx_http_core_module.c):
the static locations of a level sorted with ngx_filename_cmp ("/" sorts lowest), exact and
inclusive ones joined, nested into lists, built into the binary tree that
ngx_queue_middle splits, and searched by ngx_http_core_find_static_location. locations.py
uses dicts and sorted antichains instead, so a shared mistake is unlikely.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgate.proxy.locations import (
    LocationKey,
    Locations,
    Match,
    Modifier,
    Node,
    compile_regex,
    parse_key,
)
from wsgate.values import Invalid

MANY = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def node(key: str, value: str, *children: Node[str], proxied: bool = False,
         label: str = "") -> Node[str]:
    return Node(parse_key(key), value, list(children), label=label, proxied=proxied)


def build(*nodes: Node[str]) -> Locations[str]:
    return Locations(list(nodes))


def chosen(locations: Locations[str], uri: str) -> str | None:
    match = locations.match(uri.encode())
    if match is None:
        return None
    return "301" if match.redirect else match.value


# --- nginx's documentation -----------------------------------------------------------------


DOCS = build(
    node("= /", "A"),
    node("/", "B"),
    node("/documents/", "C"),
    node("^~ /images/", "D"),
    node(r"~* \.(gif|jpg|jpeg)$", "E"),
)


@pytest.mark.parametrize(("uri", "expected"), [
    ("/", "A"),
    ("/index.html", "B"),
    ("/documents/document.html", "C"),
    ("/images/1.gif", "D"),
    ("/documents/1.jpg", "E"),
    ("/documents/1.JPG", "E"),  # ~* is caseless
    ("/images/", "D"),
    ("/img/1.gif", "E"),
    ("/documents", "B"),
])
def test_nginx_documentation_example(uri: str, expected: str) -> None:
    assert chosen(DOCS, uri) == expected


def test_docs_example_captures() -> None:
    match = DOCS.match(b"/documents/1.jpg")
    assert match == Match("E", (b"jpg",), {}, False)


# --- parse_key -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "modifier", "pattern"), [
    ("/plain", "prefix", "/plain"),
    ("  /plain  ", "prefix", "/plain"),
    ("= /x", "exact", "/x"),
    ("=/x", "exact", "/x"),
    ("^~ /static/", "noregex", "/static/"),
    ("^~/static/", "noregex", "/static/"),
    (r"~ ^/api/(\d+)$", "regex", r"^/api/(\d+)$"),
    (r"~^/api/", "regex", "^/api/"),
    (r"~* \.png$", "iregex", r"\.png$"),
    (r"~*\.png$", "iregex", r"\.png$"),
    ("~ ^/a b$", "regex", "^/a b$"),
    ("~\t^/tab$", "regex", "^/tab$"),
    ("@fallback", "named", "fallback"),
    ("/with space", "prefix", "/with space"),
    ("= /", "exact", "/"),
])
def test_parse_key(text: str, modifier: str, pattern: str) -> None:
    assert parse_key(text) == LocationKey(modifier, pattern)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "message"), [
    ("", "needs a path"),
    ("=", "needs a path"),
    ("= ", "needs a path"),
    ("^~", "needs a path"),
    ("~", "needs a path"),
    ("~*", "needs a path"),
    ("@", 'needs a name after "@"'),
    ("plain", 'a location prefix starts with "/"'),
    ("= x", 'a location prefix starts with "/"'),
    ("^~ static/", 'a location prefix starts with "/"'),
    ("!= /x", 'invalid location modifier "!="'),
    ("~~ /x", 'invalid location modifier "~~"'),
    ("/a\x01", "control character"),
    ("= /a\x7f", "control character"),
    ("~ (unclosed", "pcre2_compile() failed"),
    ("~* [z-a]", "pcre2_compile() failed"),
])
def test_parse_key_rejects(text: str, message: str) -> None:
    with pytest.raises(Invalid, match=re.escape(message)):
        parse_key(text)


def test_key_names_and_text() -> None:
    assert parse_key("= /x").name == "/x"
    assert parse_key("@up").name == "@up"
    assert str(parse_key("=/x")) == "= /x"
    assert str(parse_key("~*\\.png$")) == "~* \\.png$"
    assert str(parse_key("@up")) == "@up"
    assert str(parse_key("/p")) == "/p"


# --- nesting rules and duplicates ------------------------------------------------------------


@pytest.mark.parametrize(("tree", "message", "where"), [
    (node("= /a", "x", node("/a/b", "y", label="f:2")),
     'location "/a/b" cannot be inside the exact location "/a"', "f:2"),
    (node("@n", "x", node("/a", "y", label="f:3")),
     'location "/a" cannot be inside the named location "@n"', "f:3"),
    (node("/a", "x", node("@n", "y", label="f:4")),
     'named location "@n" can be on the server level only', "f:4"),
    (node("/a/", "x", node("/b", "y", label="f:5")),
     'location "/b" is outside location "/a/"', "f:5"),
    (node("/a/", "x", node("= /a", "y", label="f:6")),
     'location "/a" is outside location "/a/"', "f:6"),
    (node("/a/", "x", node("/b/", "y", node("/b/c", "z", label="f:7"))),
     'location "/b/" is outside location "/a/"', None),
    (node(r"~ \.php$", "x", node("/a", "y", label="f:8")),
     r'location "/a" is outside location "\.php$"', "f:8"),
    (node("/a", "x", node("/a/b", "y", node("= /a/b/c", "z", node("~ x", "w", label="f:9")))),
     'location "x" cannot be inside the exact location "/a/b/c"', "f:9"),
])
def test_nesting_rules(tree: Node[str], message: str, where: str | None) -> None:
    with pytest.raises(Invalid) as caught:
        build(tree)
    assert caught.value.message == message
    if where is not None:
        assert caught.value.where == where


def test_allowed_nestings() -> None:
    locations = build(
        node("/a/", "a",
             node("/a/", "a-again"),  # the same name one level down is not a duplicate
             node("= /a/x", "a-exact"),
             node("^~ /a/s/", "a-noregex"),
             node(r"~ \.js$", "a-js")),
        node("^~ /n/", "n", node(r"~ \.js$", "n-js")),
        node(r"~ ^/r/", "r", node(r"~ \.css$", "r-css")),
        # a prefix inside a regex location starts with the regex's text (nginx's rule)
        node("~ /t/", "t", node("/t/deep/", "t-deep")),
        node("@fallback", "fb"),
    )
    assert chosen(locations, "/a/") == "a-again"
    assert chosen(locations, "/a/x") == "a-exact"
    assert chosen(locations, "/a/s/1.js") == "a-noregex"
    assert chosen(locations, "/a/1.js") == "a-js"
    assert chosen(locations, "/n/1.js") == "n-js"
    assert chosen(locations, "/r/1.css") == "r-css"
    assert chosen(locations, "/r/1.txt") == "r"
    assert chosen(locations, "/x/t/deep/1") == "t"  # the nested prefix compares from "/"
    assert chosen(locations, "/t/deep/1") == "t-deep"
    assert locations.named("@fallback") == "fb"
    assert locations.named("fallback") == "fb"
    assert locations.named("@other") is None


@pytest.mark.parametrize(("first", "second", "message"), [
    ("/a", "/a", 'duplicate location "/a"'),
    ("= /a", "=/a", 'duplicate location "/a"'),
    ("^~ /a", "/a", 'duplicate location "/a"'),  # both inclusive
    ("/a", "^~ /a", 'duplicate location "/a"'),
])
def test_duplicates(first: str, second: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        build(node(first, "1", label="one"), node(second, "2", label="two"))
    assert caught.value.message == message
    assert caught.value.where == "two"


def test_duplicates_nested_and_reported_with_label() -> None:
    with pytest.raises(Invalid, match=r'^f:9: duplicate location "/a/b"$'):
        build(node("/a/", "a", node("/a/b", "1"), node("/a/b", "2", label="f:9")))


def test_not_duplicates() -> None:
    locations = build(
        node("= /a", "exact"), node("/a", "prefix"),
        node("~ x", "first-x"), node("~ x", "second-x"),  # regexes are never duplicates
        node("@n", "first-n"), node("@n", "second-n"),  # nginx keeps the first, silently
    )
    assert chosen(locations, "/a") == "exact"
    assert chosen(locations, "/ab") == "prefix"
    assert chosen(locations, "/x") == "first-x"
    assert locations.named("n") == "first-n"


def test_nesting_checked_before_duplicates() -> None:
    with pytest.raises(Invalid, match="outside"):
        build(node("/a", "1"), node("/a", "2"), node("/b", "3", node("/c", "4")))


# --- the order of matching -------------------------------------------------------------------


def test_longest_prefix_wins_whatever_the_order() -> None:
    locations = build(node("/", "root"), node("/api/v1/", "v1"), node("/api/", "api"),
                      node("/api/v1/users", "users"), node("/apix", "apix"))
    assert chosen(locations, "/") == "root"
    assert chosen(locations, "/api") == "root"
    assert chosen(locations, "/api/") == "api"
    assert chosen(locations, "/api/v2/x") == "api"
    assert chosen(locations, "/api/v1/") == "v1"
    assert chosen(locations, "/api/v1/users/7") == "users"
    assert chosen(locations, "/apix/y") == "apix"
    assert chosen(locations, "/other") == "root"


def test_prefixes_are_case_sensitive() -> None:
    locations = build(node("/Api/", "upper"), node("/api/", "lower"))
    assert chosen(locations, "/api/x") == "lower"
    assert chosen(locations, "/Api/x") == "upper"
    assert chosen(locations, "/API/x") is None


def test_no_location_matches() -> None:
    locations = build(node("/a/", "a"), node("= /b", "b"), node("@n", "n"))
    assert locations.match(b"/") is None
    assert locations.match(b"/b/") is None
    assert locations.match(b"@n") is None  # named locations never match a request
    assert build().match(b"/") is None


def test_exact_beats_everything() -> None:
    locations = build(node("~ ^/x$", "regex"), node("^~ /x", "noregex"), node("= /x", "exact"))
    assert chosen(locations, "/x") == "exact"
    assert chosen(locations, "/x/") == "noregex"


def test_regexes_in_config_order_after_the_prefix() -> None:
    locations = build(node("/", "root"), node("~ a", "has-a"), node("~ ab", "has-ab"),
                      node("~* B", "has-b"))
    assert chosen(locations, "/ab") == "has-a"
    assert chosen(locations, "/b") == "has-b"
    assert chosen(locations, "/c") == "root"


def test_regex_case() -> None:
    locations = build(node(r"~ \.PNG$", "cased"), node(r"~* \.png$", "caseless"))
    assert chosen(locations, "/a.PNG") == "cased"
    assert chosen(locations, "/a.png") == "caseless"
    assert chosen(locations, "/a.PnG") == "caseless"


def test_noregex_stops_regexes_of_its_level() -> None:
    locations = build(node("^~ /static/", "static"), node(r"~ \.js$", "js"))
    assert chosen(locations, "/static/app.js") == "static"
    assert chosen(locations, "/other/app.js") == "js"


def test_noregex_only_counts_when_it_is_the_longest_prefix() -> None:
    locations = build(node("^~ /s/", "s"), node("/s/long/", "long"), node(r"~ \.js$", "js"))
    assert chosen(locations, "/s/a.js") == "s"
    assert chosen(locations, "/s/long/a.js") == "js"


def test_nested_noregex_does_not_stop_the_outer_regexes() -> None:
    """nginx remembers ``^~`` per level: a nested ``^~`` skips only its parent's regexes."""
    locations = build(
        node("/a/", "a", node("^~ /a/b/", "b"), node(r"~ \.js$", "inner-js")),
        node(r"~ \.js$", "outer-js"),
    )
    assert chosen(locations, "/a/b/x.js") == "outer-js"
    assert chosen(locations, "/a/b/x.css") == "b"
    assert chosen(locations, "/a/c.js") == "inner-js"


def test_nested_regexes_come_before_the_outer_ones() -> None:
    locations = build(
        node("/app/", "app", node(r"~ \.js$", "app-js")),
        node(r"~ \.js$", "js"),
        node(r"~ \.css$", "css"),
    )
    assert chosen(locations, "/app/a.js") == "app-js"
    assert chosen(locations, "/app/a.css") == "css"  # the outer regexes still run
    assert chosen(locations, "/app/a.txt") == "app"
    assert chosen(locations, "/b.js") == "js"


def test_deep_prefix_nesting() -> None:
    locations = build(node("/a/", "a", node("/a/b/", "b", node("/a/b/c/", "c"),
                                             node("= /a/b/x", "x"))))
    assert chosen(locations, "/a/z") == "a"
    assert chosen(locations, "/a/b/z") == "b"
    assert chosen(locations, "/a/b/c/z") == "c"
    assert chosen(locations, "/a/b/x") == "x"
    assert chosen(locations, "/a/b/xy") == "b"


def test_a_regex_location_searches_its_nested_locations() -> None:
    locations = build(
        node(r"~ ^/api/", "api", node(r"~ /v(\d)/", "versioned"), node("~ /api/old/", "old")),
    )
    match = locations.match(b"/api/v2/x")
    assert match == Match("versioned", (b"2",), {}, False)
    assert chosen(locations, "/api/x") == "api"
    assert chosen(locations, "/api/old/x") == "old"


def test_equal_prefix_is_not_searched_below() -> None:
    """A URI equal to a prefix stops at that prefix on its level; nested blocks still run."""
    locations = build(node("/a/", "a", node("= /a/", "a-exact")), node("/a/b", "ab"))
    assert chosen(locations, "/a/") == "a-exact"
    assert chosen(locations, "/a/b") == "ab"


# --- auto_redirect -----------------------------------------------------------------------------


def test_auto_redirect_of_a_proxied_prefix() -> None:
    locations = build(node("/", "root"), node("/api/", "api", proxied=True),
                      node("/static/", "static"), node("~ api$", "regex"))
    assert chosen(locations, "/api") == "301"  # ahead of the regex
    assert chosen(locations, "/api/") == "api"
    assert chosen(locations, "/static") == "root"  # not proxied: no redirect
    assert chosen(locations, "/xapi") == "regex"
    match = locations.match(b"/api")
    assert match is not None and match.value == "api" and match.captures == ()


@pytest.mark.parametrize(("nodes", "uri", "expected"), [
    ([node("= /api", "exact"), node("/api/", "api", proxied=True)], "/api", "exact"),
    ([node("/api", "prefix"), node("/api/", "api", proxied=True)], "/api", "prefix"),
    ([node("/ap", "ap"), node("/api/", "api", proxied=True)], "/api", "301"),
    ([node("/api-v2/", "v2"), node("/api/", "api", proxied=True)], "/api", "301"),
    ([node("= /api/", "e", proxied=True)], "/api", "301"),
    ([node("/a/", "a", node("/a/b/", "b", proxied=True))], "/a/b", "301"),
    ([node("/a/", "a", node("/a/b/", "b", proxied=True)), node("~ b$", "re")], "/a/b", "301"),
    ([node("/api", "api", proxied=True)], "/ap", None),  # the name must end with "/"
    ([node("~ ^/api/", "re", proxied=True)], "/api", None),  # only for static locations
    ([node("/api/", "api", proxied=True)], "/api/x", "api"),
    ([node("/api/", "api", proxied=True)], "/ap", None),
])
def test_auto_redirect_cases(nodes: list[Node[str]], uri: str, expected: str | None) -> None:
    assert chosen(Locations(nodes), uri) == expected


# --- captures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "uri", "captures", "named"), [
    (r"~ ^/api/(\d+)/(\w+)$", "/api/7/x", (b"7", b"x"), {}),
    (r"~ ^/u/(?<user>[^/]+)/(?<tab>.*)$", "/u/ann/posts", (b"ann", b"posts"),
     {"user": b"ann", "tab": b"posts"}),
    (r"~ ^/u/(?'user'[^/]+)", "/u/bob/", (b"bob",), {"user": b"bob"}),
    (r"~ ^/u/(?P<user>[^/]+)", "/u/cy", (b"cy",), {"user": b"cy"}),
    (r"~ ^/(a)?(b)", "/b", (b"", b"b"), {}),  # a group that took no part is empty
    (r"~ \.php$", "/x.php", (), {}),
    (r"~ ^/(?<x>a)(?<y>z)?", "/a", (b"a", b""), {"x": b"a", "y": b""}),
])
def test_captures(key: str, uri: str, captures: tuple[bytes, ...],
                  named: dict[str, bytes]) -> None:
    match = build(node(key, "v")).match(uri.encode())
    assert match == Match("v", captures, named, False)


def test_captures_of_the_outer_regex_when_a_nested_prefix_is_chosen() -> None:
    locations = build(node(r"~ /(a)/", "outer", node("/(a)/deep", "inner")))
    assert locations.match(b"/(a)/deep/a/") == Match("inner", (b"a",), {}, False)
    assert locations.match(b"/(a)/deep") is None  # the regex fails: its block is not entered
    match = build(node(r"~ ^/(\w)/", "outer", node(r"~ (\d)", "digit"))).match(b"/a/1")
    assert match == Match("digit", (b"1",), {}, False)
    match = build(node(r"~ ^/(\w)/", "outer", node(r"~ (\d)", "digit"))).match(b"/a/b")
    assert match == Match("outer", (b"a",), {}, False)


def test_prefix_match_has_no_captures() -> None:
    assert build(node("/", "root")).match(b"/x") == Match("root", (), {}, False)


def test_bytes_outside_ascii() -> None:
    locations = build(node("/caf\u00e9/", "utf8"), node("~ \u00e9t\u00e9$", "summer"))
    assert chosen(locations, "/caf\u00e9/menu") == "utf8"
    assert locations.match("/\u00e9t\u00e9".encode()) is not None
    assert locations.match(b"/caf\xe9/menu") is None  # Latin-1 bytes are other bytes


# --- PCRE ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "subject", "matches"), [
    (r"^/a\z", "/a", True),
    (r"^/a\z", "/a\n", False),
    (r"^/a\Z", "/a\n", True),
    (r"^/a$", "/a\n", True),  # PCRE's "$" also takes a final newline, as Python's
    (r"^\Q/a.b\E$", "/a.b", True),
    (r"^\Q/a.b\E$", "/axb", False),
    (r"^/[[:digit:]]+$", "/123", True),
    (r"^/[[:alpha:]_]+$", "/ab_c", True),
    (r"^/[^[:space:]]+$", "/a b", False),
    (r"(?<=/x)y", "/xy", True),
    (r"(?<!/x)y", "/xy", False),
    (r"^/(?<w>a)\k<w>$", "/aa", True),
    (r"^/(?<w>a)\k'w'$", "/aa", True),
    (r"^/(?<w>a)\k{w}$", "/ab", False),
    (r"^/[]a]+$", "/]a", True),
    (r"^/[^]a]+$", "/bc", True),
    (r"(?i)^/ABC", "/abc", True),
])
def test_pcre_translation(pattern: str, subject: str, matches: bool) -> None:
    assert bool(compile_regex(pattern).search(subject.encode())) is matches


@pytest.mark.parametrize(("pattern", "message"), [
    ("(", 'pcre2_compile() failed: missing ), unterminated subpattern in "("'),
    ("a)", 'pcre2_compile() failed: unbalanced parenthesis in "a)" at ")"'),
    ("*a", 'pcre2_compile() failed: nothing to repeat in "*a"'),
    ("(?<n>a)(?<n>b)", "pcre2_compile() failed: redefinition of group name"),
])
def test_pcre_errors(pattern: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        compile_regex(pattern)
    assert caught.value.message.startswith(message)


def test_regex_error_in_a_tree() -> None:
    with pytest.raises(Invalid, match="pcre2_compile"):
        Locations([Node(LocationKey("regex", "(x"), "v")])


# --- against the reference ---------------------------------------------------------------------


DECLINED, OK, AGAIN, DONE = "declined", "ok", "again", "done"


@dataclass
class Conf:
    """nginx's ngx_http_core_loc_conf_t, the fields location search reads."""

    name: bytes
    value: str
    exact: bool = False
    noregex: bool = False
    named: bool = False
    regex: re.Pattern[bytes] | None = None
    auto_redirect: bool = False
    children: list[Conf] = field(default_factory=list)
    tree: TreeNode | None = None
    regexes: list[Conf] = field(default_factory=list)


@dataclass
class Queued:
    """ngx_http_location_queue_t."""

    name: bytes
    exact: Conf | None
    inclusive: Conf | None
    list: list[Queued] = field(default_factory=list)


@dataclass
class TreeNode:
    """ngx_http_location_tree_node_t."""

    name: bytes
    exact: Conf | None
    inclusive: Conf | None
    auto_redirect: bool
    left: TreeNode | None = None
    right: TreeNode | None = None
    tree: TreeNode | None = None


def filename_cmp(one: bytes, two: bytes, n: int) -> int:
    """ngx_filename_cmp on Linux: bytes, with "/" lowest and the string's end lower still."""
    for i in range(n):
        c1 = one[i] if i < len(one) else 0
        c2 = two[i] if i < len(two) else 0
        if c1 == c2:
            if c1 == 0:
                return 0
            continue
        if c1 == 0 or c2 == 0:
            return c1 - c2
        return (0 if c1 == 0x2F else c1) - (0 if c2 == 0x2F else c2)
    return 0


def cmp_locations(one: Conf, two: Conf) -> int:
    rc = filename_cmp(one.name, two.name, min(len(one.name), len(two.name)) + 1)
    if rc == 0 and not one.exact and two.exact:
        return 1
    return rc


def init(conf: Conf) -> None:
    """ngx_http_init_locations and ngx_http_init_static_location_trees for one level."""
    for child in conf.children:
        init(child)
    conf.regexes = [child for child in conf.children if child.regex is not None]
    static = [c for c in conf.children if c.regex is None and not c.named]
    static.sort(key=cmp_to_key(cmp_locations))
    queue = [Queued(c.name, c if c.exact else None, None if c.exact else c) for c in static]
    i = 0
    while i + 1 < len(queue):  # ngx_http_join_exact_locations
        one, two = queue[i], queue[i + 1]
        if one.name == two.name:
            if (one.exact and two.exact) or (one.inclusive and two.inclusive):
                raise Invalid(f'duplicate location "{two.name.decode()}"')
            one.inclusive = one.inclusive or two.inclusive
            one.exact = one.exact or two.exact
            del queue[i + 1]
            continue
        i += 1
    nest(queue)
    conf.tree = make_tree(queue, 0)


def nest(queue: list[Queued]) -> None:
    """ngx_http_create_locations_list."""
    i = 0
    while i < len(queue):
        item = queue[i]
        if item.inclusive is not None:
            j = i + 1
            while j < len(queue) and queue[j].name.startswith(item.name):
                j += 1
            item.list = queue[i + 1:j]
            del queue[i + 1:j]
            nest(item.list)
        i += 1


def make_tree(queue: Sequence[Queued], prefix: int) -> TreeNode | None:
    """ngx_http_create_locations_tree, split at ngx_queue_middle."""
    if not queue:
        return None
    middle = len(queue) // 2
    item = queue[middle]
    auto = bool((item.exact and item.exact.auto_redirect)
                or (item.inclusive and item.inclusive.auto_redirect))
    top = TreeNode(item.name[prefix:], item.exact, item.inclusive, auto)
    top.left = make_tree(queue[:middle], prefix)
    top.right = make_tree(queue[middle + 1:], prefix)
    top.tree = make_tree(item.list, len(item.name))
    return top


@dataclass
class Request:
    uri: bytes
    loc: Conf | None = None
    captures: re.Match[bytes] | None = None


def find_static(request: Request, top: TreeNode | None) -> str:
    """ngx_http_core_find_static_location."""
    uri, rv = request.uri, DECLINED
    while top is not None:
        n = min(len(uri), len(top.name))
        rc = filename_cmp(uri, top.name, n)
        if rc != 0:
            top = top.left if rc < 0 else top.right
            continue
        if len(uri) > len(top.name):
            if top.inclusive is not None:
                request.loc, rv = top.inclusive, AGAIN
                top, uri = top.tree, uri[n:]
                continue
            top = top.right
            continue
        if len(uri) == len(top.name):
            if top.exact is not None:
                request.loc = top.exact
                return OK
            request.loc = top.inclusive
            return AGAIN
        if len(uri) + 1 == len(top.name) and top.auto_redirect:
            request.loc, rv = top.exact or top.inclusive, DONE
        top = top.left
    return rv


def find_location(request: Request, parent: Conf) -> str:
    """ngx_http_core_find_location."""
    noregex = False
    rc = find_static(request, parent.tree)
    if rc == AGAIN:
        assert request.loc is not None
        noregex = request.loc.noregex
        rc = find_location(request, request.loc)
    if rc in (OK, DONE):
        return rc
    if not noregex:
        for conf in parent.regexes:
            assert conf.regex is not None
            found = conf.regex.search(request.uri)
            if found:
                request.loc, request.captures = conf, found
                find_location(request, conf)
                return OK
    return rc


def reference(nodes: Sequence[Node[str]], uri: bytes) -> tuple[str, ...] | None:
    def conf(item: Node[str]) -> Conf:
        key = item.key
        regex = None
        if key.modifier in ("regex", "iregex"):
            regex = re.compile(key.pattern.encode(), re.I if key.modifier == "iregex" else 0)
        return Conf(key.name.encode(), item.value, exact=key.modifier == "exact",
                    noregex=key.modifier == "noregex", named=key.modifier == "named",
                    regex=regex, children=[conf(c) for c in item.children],
                    auto_redirect=item.proxied and key.name.endswith("/"))

    server = Conf(b"", "server", children=[conf(item) for item in nodes])
    init(server)
    request = Request(uri)
    rc = find_location(request, server)
    if request.loc is None:
        return None
    groups = request.captures.groups() if request.captures else ()
    return (request.loc.value, str(rc == DONE), *[g.decode() for g in groups if g])


def mine(nodes: Sequence[Node[str]], uri: bytes) -> tuple[str, ...] | None:
    match = Locations(nodes).match(uri)
    if match is None:
        return None
    return (match.value, str(match.redirect), *[g.decode() for g in match.captures if g])


TAILS = st.text(alphabet="ab/-.", max_size=3)
REGEXES = [r"a$", r"\.b", r"^/a", r"(b)/", r"/(a)", r"-", r"^/b(.)", r"/a/"]


@st.composite
def locations(draw: st.DrawFn, depth: int = 0, parent: Node[str] | None = None
              ) -> list[Node[str]]:
    items: list[Node[str]] = []
    for _ in range(draw(st.integers(0, 5 if depth == 0 else 3))):
        kinds: list[Modifier] = ["prefix", "prefix", "exact", "noregex", "regex", "iregex"]
        kind = draw(st.sampled_from(kinds))
        if kind in ("regex", "iregex"):
            key = LocationKey(kind, draw(st.sampled_from(REGEXES)))
        else:
            base = parent.key.name if parent is not None else "/"
            key = LocationKey(kind, base + draw(TAILS))
        item: Node[str] = Node(key, f"{key}#{draw(st.integers(0, 99))}",
                               proxied=draw(st.booleans()))
        if kind != "exact" and depth < 2:
            item.children = draw(locations(depth + 1, item))
        items.append(item)
    return items


@MANY
@given(locations(), st.lists(st.text(alphabet="ab/-.", max_size=7), min_size=1, max_size=8))
def test_same_as_nginx_reference(nodes: list[Node[str]], paths: list[str]) -> None:
    try:
        Locations(nodes)
    except Invalid as error:
        with pytest.raises(Invalid, match="duplicate location"):
            reference(nodes, b"/")
        assert error.message.startswith("duplicate location")
        return
    uris = ["/" + path for path in paths]
    for item in nodes:  # the names, and one byte short of them, are the interesting URIs
        uris += [item.key.name, item.key.name[:-1] or "/"]
    for uri in uris:
        assert mine(nodes, uri.encode()) == reference(nodes, uri.encode()), uri
