"""nginx ``map`` against the map module's documentation and its source's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.proxy.maps import MapTable
from wsgate.values import Invalid

FAST = settings(max_examples=200, deadline=None, database=None)


def value(table: MapTable, source: str) -> str:
    return table.lookup(source.encode())[0]


# --- nginx's documentation -----------------------------------------------------------------


# ngx_http_map_module's example:  map $http_host $name { hostnames; default 0; ... }
HOSTS = MapTable("0", True, [
    ("example.com", "1"),
    ("*.example.com", "1"),
    ("example.org", "2"),
    ("*.example.org", "2"),
    (".example.net", "3"),
    ("wap.*", "4"),
])


@pytest.mark.parametrize(("host", "expected"), [
    ("example.com", "1"),
    ("www.example.com", "1"),
    ("EXAMPLE.ORG", "2"),
    ("a.b.example.org", "2"),
    ("example.net", "3"),
    ("www.example.net", "3"),
    ("wap.example.io", "4"),
    ("wap", "0"),
    ("example.com.", "1"),  # hostnames: one trailing dot is ignored
    ("other.io", "0"),
    ("", "0"),
])
def test_documentation_hostnames_example(host: str, expected: str) -> None:
    assert value(HOSTS, host) == expected


def test_documentation_regex_example() -> None:
    """map $http_user_agent $mobile { default 0; "~Opera Mini" 1; }"""
    mobile = MapTable("0", False, [("~Opera Mini", "1")])
    assert value(mobile, "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80)") == "1"
    assert value(mobile, "opera mini") == "0"  # "~" is case-sensitive
    assert value(mobile, "Mozilla/5.0") == "0"


def test_websocket_connection_upgrade() -> None:
    """The map every WebSocket proxy config has."""
    upgrade = MapTable("upgrade", False, [("", "close")])
    assert value(upgrade, "websocket") == "upgrade"
    assert value(upgrade, "") == "close"
    assert MapTable("", False, [("default", "upgrade"), ("", "close")]).lookup(b"x") == (
        "upgrade", (), {})


def test_documentation_captures_example() -> None:
    """map $uri $new { /aa /mapped_aa; ~^/bb/(.*) /mapped_bb/$1; ~^/cc/(?<suffix>.*)$ ...}"""
    table = MapTable("", False, [
        ("/aa", "/mapped_aa"),
        ("~^/bb/(.*)", "/mapped_bb/$1"),
        ("~^/cc/(?<suffix>.*)$", "/mapped_cc/${suffix}"),
    ])
    assert table.lookup(b"/aa") == ("/mapped_aa", (), {})
    assert table.lookup(b"/bb/x/y") == ("/mapped_bb/$1", (b"x/y",), {})
    assert table.lookup(b"/cc/z") == ("/mapped_cc/${suffix}", (b"z",), {"suffix": b"z"})
    assert table.lookup(b"/dd") == ("", (), {})


# --- the order and the details -----------------------------------------------------------------


def test_exact_keys_are_caseless() -> None:
    table = MapTable("none", False, [("WebSocket", "ws"), ("h2c", "h2")])
    assert value(table, "websocket") == "ws"
    assert value(table, "WEBSOCKET") == "ws"
    assert value(table, "H2C") == "h2"


def test_exact_before_regex_whatever_the_order() -> None:
    table = MapTable("d", False, [("~.*", "regex"), ("abc", "exact")])
    assert value(table, "abc") == "exact"
    assert value(table, "ABC") == "exact"
    assert value(table, "abd") == "regex"


def test_regexes_in_order() -> None:
    table = MapTable("d", False, [("~^a", "1"), ("~*^A", "2"), ("~b", "3")])
    assert value(table, "ab") == "1"
    assert value(table, "Ab") == "2"
    assert value(table, "cb") == "3"
    assert value(table, "c") == "d"


def test_regex_sees_the_value_as_it_is() -> None:
    table = MapTable("d", False, [("~^Up$", "cased")])
    assert value(table, "Up") == "cased"
    assert value(table, "up") == "d"


def test_empty_value_never_reaches_a_regex() -> None:
    table = MapTable("d", False, [("~^$", "empty"), ("~.*", "any")])
    assert value(table, "") == "d"
    assert value(table, "x") == "any"


def test_wildcards_only_with_hostnames() -> None:
    plain = MapTable("d", False, [("*.example.com", "literal"), (".example.net", "dot")])
    assert value(plain, "*.example.com") == "literal"
    assert value(plain, "a.example.com") == "d"
    assert value(plain, "example.net") == "d"
    assert value(plain, "example.com.") == "d"  # no trailing-dot stripping either
    hosts = MapTable("d", True, [("*.example.com", "star"), (".example.net", "dot")])
    assert value(hosts, "a.example.com") == "star"
    assert value(hosts, "example.net") == "dot"


def test_hostnames_order_and_regex_after_wildcards() -> None:
    table = MapTable("d", True, [
        ("~^www\\.", "regex"), ("www.*", "tail"), ("*.com", "head"), ("www.a.com", "exact"),
    ])
    assert value(table, "www.a.com") == "exact"
    assert value(table, "www.b.com") == "head"
    assert value(table, "www.b.org") == "tail"
    assert value(table, "wwwx.org") == "d"
    assert value(MapTable("d", True, [("~^www\\.", "regex")]), "www.b.org.") == "regex"


@pytest.mark.parametrize(("key", "source", "expected"), [
    ("\\default", "default", "escaped"),
    ("\\~x", "~x", "escaped"),
    ("\\\\x", "\\x", "escaped"),
    ("hostnames", "hostnames", "escaped"),  # only a line of its own is the parameter
    ("volatile", "volatile", "escaped"),
    ("include", "include", "escaped"),
])
def test_special_keys(key: str, source: str, expected: str) -> None:
    table = MapTable("d", False, [(key, expected)])
    assert value(table, source) == expected


def test_default_is_empty_unless_set() -> None:
    assert MapTable("", False, []).lookup(b"x") == ("", (), {})
    assert MapTable("", False, []).default == ""
    assert MapTable("dflt", False, []).default == "dflt"
    assert MapTable("", False, [("default", "$x")]).default == "$x"


def test_values_are_templates_returned_as_written() -> None:
    table = MapTable("$http_x", False, [("a", "$scheme://$host$1")])
    assert value(table, "a") == "$scheme://$host$1"
    assert value(table, "b") == "$http_x"


def test_unmatched_groups_are_empty() -> None:
    table = MapTable("", False, [("~^(a)?(?<b>b)?(c)", "v")])
    assert table.lookup(b"c") == ("v", (b"", b"", b"c"), {"b": b""})


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("default", "hostnames", "entries", "message"), [
    ("", False, [("a", "1"), ("a", "2")], 'conflicting parameter "a"'),
    ("", False, [("A", "1"), ("a", "2")], 'conflicting parameter "a"'),
    ("", False, [("a", "1"), ("\\a", "2")], 'conflicting parameter "a"'),
    ("", False, [("", "1"), ("", "2")], 'conflicting parameter ""'),
    ("", False, [("default", "1"), ("default", "2")], "duplicate default map parameter"),
    ("x", False, [("default", "1")], "duplicate default map parameter"),
    ("", True, [(".a.com", "1"), ("*.a.com", "2")], 'conflicting parameter "*.a.com"'),
    ("", True, [("a.com", "1"), (".a.com", "2")], 'conflicting parameter ".a.com"'),
    ("", True, [("www.*", "1"), ("www.*", "2")], 'conflicting parameter "www.*"'),
    ("", True, [("www.*.com", "1")], 'invalid hostname or wildcard "www.*.com"'),
    ("", True, [("a..com", "1")], 'invalid hostname or wildcard "a..com"'),
    ("", False, [("~(", "1")], "pcre2_compile() failed"),
    ("", False, [("~*[b-a]", "1")], "pcre2_compile() failed"),
])
def test_errors(default: str, hostnames: bool, entries: list[tuple[str, str]],
                message: str) -> None:
    with pytest.raises(Invalid) as caught:
        MapTable(default, hostnames, entries)
    assert caught.value.message.startswith(message)


def test_not_errors() -> None:
    table = MapTable("", False, [("~a", "1"), ("~a", "2"), ("a.com", "3"), ("..", "4")])
    assert value(table, "xa") == "1"
    assert value(table, "..") == "4"  # without hostnames any key is plain


# --- properties ------------------------------------------------------------------------------


KEYS = st.text(alphabet="aAbB.-", max_size=4)


@FAST
@given(st.dictionaries(KEYS.map(str.lower), st.text(max_size=3), max_size=6), KEYS)
def test_plain_map_is_a_caseless_dict(entries: dict[str, str], source: str) -> None:
    table = MapTable("default!", False, list(entries.items()))
    assert value(table, source) == entries.get(source.lower(), "default!")
