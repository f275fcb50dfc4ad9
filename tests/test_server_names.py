"""Virtual server choice against nginx's documentation and an independent reference.

The reference builds nginx's wildcard hashes the way ngx_hash.c does (keys converted to
"com.example." form, sorted with ngx_dns_strcmp, nested per label by ngx_hash_wildcard_init
with its two tag bits) and searches them with ngx_hash_find_wc_head / _tail. server_names.py
keeps suffix and prefix dicts instead, so a shared mistake is unlikely.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgate.proxy.server_names import Found, HostTable, ServerNames, valid_host
from wsgate.values import Invalid

MANY = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

Spec = tuple[Sequence[str], str, bool, str]


def servers(*specs: Spec, address: str = "0.0.0.0:80") -> ServerNames[str]:
    return ServerNames(list(specs), address=address, hostname="build-host")


def pick(names: ServerNames[str], host: str) -> str:
    return names.find(host.encode()).value


# --- nginx's documentation -----------------------------------------------------------------


# "How nginx processes a request": three servers on *:80, the first is the default.
THREE = servers((["example.org", "www.example.org"], "org", False, ""),
                (["example.net", "www.example.net"], "net", False, ""),
                (["example.com", "www.example.com"], "com", False, ""))


@pytest.mark.parametrize(("host", "expected"), [
    ("example.org", "org"),
    ("www.example.net", "net"),
    ("WWW.Example.COM", "com"),
    ("example.com.", "com"),
    ("unknown.example", "org"),
    ("", "org"),
])
def test_how_nginx_processes_a_request(host: str, expected: str) -> None:
    assert pick(THREE, host) == expected


def test_default_server_parameter() -> None:
    names = servers((["example.org"], "org", False, ""), (["example.net"], "net", True, ""),
                    (["example.com"], "com", False, ""))
    assert names.default == "net"
    assert pick(names, "other") == "net"
    assert pick(names, "example.org") == "org"


# server_name's documentation: the order is exact, longest "*." wildcard, longest ".*"
# wildcard, then the first regex in the configuration's order.
ORDER = servers(
    ([r"~^(?<sub>\w+)\.example\.org$"], "regex-first", False, ""),
    (["www.example.org"], "exact", False, ""),
    (["*.example.org"], "star", False, ""),
    (["*.deep.example.org"], "deeper-star", False, ""),
    (["www.*"], "www-tail", False, ""),
    (["www.example.*"], "longer-tail", False, ""),
    ([r"~^mail\."], "regex-mail", False, ""),
    ([r"~^mail\.(.+)$"], "regex-mail-2", False, ""),
)


@pytest.mark.parametrize(("host", "expected"), [
    ("www.example.org", "exact"),
    ("mail.example.org", "star"),  # a wildcard beats a regex
    ("a.deep.example.org", "deeper-star"),
    ("deep.example.org", "star"),
    ("www.example.net", "longer-tail"),
    ("www.other.net", "www-tail"),
    ("www.example", "www-tail"),
    ("mail.example.net", "regex-mail"),  # the first regex that matches
    ("example.org", "regex-first"),
    ("nothing", "regex-first"),  # the first server is the default
])
def test_server_name_order(host: str, expected: str) -> None:
    assert pick(ORDER, host) == expected


def test_dot_wildcard_takes_the_bare_name() -> None:
    names = servers((["x"], "first", False, ""), ([".example.com"], "dot", False, ""))
    assert pick(names, "example.com") == "dot"
    assert pick(names, "www.example.com") == "dot"
    assert pick(names, "a.b.example.com") == "dot"
    assert pick(names, "notexample.com") == "first"
    assert pick(names, "example.com.au") == "first"


def test_star_wildcard_needs_a_label() -> None:
    names = servers((["x"], "first", False, ""), (["*.example.com"], "star", False, ""))
    assert pick(names, "example.com") == "first"
    assert pick(names, "a.example.com") == "star"
    assert pick(names, "a.b.example.com") == "star"


def test_tail_wildcard_needs_a_label() -> None:
    names = servers((["x"], "first", False, ""), (["www.example.*"], "tail", False, ""))
    assert pick(names, "www.example") == "first"
    assert pick(names, "www.example.com") == "tail"
    assert pick(names, "www.example.co.uk") == "tail"
    assert pick(names, "www.examples.com") == "first"


def test_regex_named_and_numbered_captures() -> None:
    names = servers((["default.test"], "d", False, ""),
                    ([r"~^(?<user>.+)\.example\.net$"], "users", False, ""),
                    ([r"~^(www\.)?(.+)$"], "any", False, ""))
    assert names.find(b"ann.example.net") == Found("users", {"user": b"ann"}, (b"ann",))
    assert names.find(b"www.site.io") == Found("any", {}, (b"www.", b"site.io"))
    assert names.find(b"site.io") == Found("any", {}, (b"", b"site.io"))
    assert names.find(b"default.test") == Found("d")


def test_regex_is_caseless_only_with_a_capital_letter() -> None:
    """The Host is lowercase, so nginx makes a regex with capitals caseless."""
    names = servers((["d"], "d", False, ""), ([r"~^WWW\."], "upper", False, ""),
                    ([r"~^api\."], "lower", False, ""))
    assert pick(names, "www.a") == "upper"
    assert pick(names, "API.a") == "lower"  # the Host is lowercased first


def test_empty_host() -> None:
    names = servers((["a"], "a", True, ""), ([""], "no-host", False, ""),
                    ([r"~.*"], "regex", False, ""), (["*.b"], "wild", False, ""))
    assert pick(names, "") == "no-host"
    assert pick(names, "zzz") == "regex"
    plain = servers((["a"], "a", False, ""), ([r"~.*"], "regex", False, ""))
    assert pick(plain, "") == "a"  # regexes never see an empty host


def test_server_without_names_has_the_empty_name() -> None:
    names = servers((["a"], "a", False, ""), ([], "nameless", False, ""))
    assert pick(names, "") == "nameless"
    assert pick(names, "b") == "a"


def test_hostname_variable() -> None:
    names = ServerNames([(["a"], "a", False, ""), (["$HOSTNAME"], "me", False, "")],
                        hostname="Box.Local")
    assert pick(names, "box.local") == "me"


def test_single_server() -> None:
    names = servers((["only"], "only", False, ""))
    assert pick(names, "anything") == "only"
    assert pick(names, "") == "only"


# --- errors and warnings -------------------------------------------------------------------


def test_duplicate_default_server() -> None:
    with pytest.raises(Invalid) as caught:
        servers((["a"], "a", True, "s1"), (["b"], "b", True, "s2"))
    assert caught.value.message == "a duplicate default server for 0.0.0.0:80"
    assert caught.value.where == "s2"


@pytest.mark.parametrize(("name", "message"), [
    ("*", 'server name "*" is invalid'),
    ("*.", 'server name "*." is invalid'),
    ("*example.com", 'server name "*example.com" is invalid'),
    (".", 'server name "." is invalid'),
    ("~", 'empty regex in server name "~"'),
    ("www.*.com", 'invalid server name or wildcard "www.*.com" on 0.0.0.0:80'),
    ("*.example.*", 'invalid server name or wildcard "*.example.*" on 0.0.0.0:80'),
    ("a..b", 'invalid server name or wildcard "a..b" on 0.0.0.0:80'),
    ("exam*ple", 'invalid server name or wildcard "exam*ple" on 0.0.0.0:80'),
    ("~^(x", "pcre2_compile() failed"),
])
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        servers((["ok"], "a", False, "s1"), ([name], "b", False, "s2"))
    assert caught.value.message.startswith(message)
    assert caught.value.where == "s2"


@pytest.mark.parametrize(("first", "second", "host", "winner"), [
    ("example.com", "example.com", "example.com", "1"),
    ("example.com", "EXAMPLE.com", "example.com", "1"),
    ("*.example.com", "*.example.com", "a.example.com", "1"),
    ("*.example.com", ".example.com", "a.example.com", "1"),
    (".example.com", "*.example.com", "a.example.com", "1"),
    ("example.com", ".example.com", "a.example.com", "d"),  # ignored whole
    (".example.com", "example.com", "example.com", "1"),
    ("www.*", "www.*", "www.a", "1"),
    ("", "", "", "1"),
])
def test_conflicts_keep_the_first(first: str, second: str, host: str, winner: str) -> None:
    names = servers((["d"], "d", False, ""), ([first], "1", False, ""),
                    ([second], "2", False, ""))
    assert names.conflicts == [f'conflicting server name "{second}" on 0.0.0.0:80, ignored']
    assert pick(names, host) == winner


def test_not_conflicts() -> None:
    names = servers((["example.com", "*.example.com", "www.example.*", "~^a", "~^a"], "1",
                     False, ""))
    assert names.conflicts == []


def test_suspicious_symbols() -> None:
    names = servers((["a/b"], "1", False, ""))
    assert names.conflicts == ['server name "a/b" has suspicious symbols']


def test_no_servers() -> None:
    with pytest.raises(Invalid):
        ServerNames([])


# --- valid_host ------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "expected"), [
    ("example.com", "example.com"),
    ("Example.COM", "example.com"),
    ("example.com:8080", "example.com"),
    ("example.com.", "example.com"),
    ("example.com.:80", "example.com"),
    ("example.com:", "example.com"),
    ("example.com:65535", "example.com"),
    ("example.com:0000080", "example.com"),
    ("127.0.0.1:80", "127.0.0.1"),
    ("[::1]", "[::1]"),
    ("[::1]:8080", "[::1]"),
    ("[FE80::1]", "[fe80::1]"),
    ("under_score", "under_score"),
    ("a~b!$&'()*+,;=c", "a~b!$&'()*+,;=c"),
    ("pct%20", "pct%20"),
    (".leading", ".leading"),
    ("x", "x"),
    # rejected: 400 Bad Request
    ("", None),
    (".", None),
    (":80", None),
    ("a..b", None),
    ("a b", None),
    ("a/b", None),
    ("a@b", None),
    ("a\\b", None),
    ("example.com:65536", None),
    ("example.com:80a", None),
    ("example.com:80:80", None),
    ("[::1", None),
    ("[::1]x", None),
    ("[::1]:", "[::1]"),
    ("[a%b]", None),
    ("a[b]", None),
    ("caf\u00e9", None),
    ("a\x00b", None),
])
def test_valid_host(host: str, expected: str | None) -> None:
    assert valid_host(host.encode()) == (expected.encode() if expected is not None else None)


# --- HostTable ---------------------------------------------------------------------------------


def test_host_table_without_wildcards() -> None:
    table: HostTable[str] = HostTable(wildcards=False)
    assert table.add("*.Example.com", "literal") == "ok"
    assert table.add("*.example.com", "again") == "conflict"
    assert table.find(b"*.example.com") == "literal"
    assert table.find(b"a.example.com") is None


# --- against the reference -------------------------------------------------------------------


@dataclass
class Wildcard:
    """ngx_hash_wildcard_t: labels to (value or nested hash, tag bits), and its own value."""

    hash: dict[str, tuple[Any, int]] = field(default_factory=dict)
    value: str | None = None


def dns_order(key: str) -> str:
    return key.lower().replace(".", " ")  # ngx_dns_strcmp: "." sorts lowest


def wildcard_init(names: list[tuple[str, str]]) -> Wildcard:
    """ngx_hash_wildcard_init on keys sorted by ngx_dns_strcmp."""
    wc = Wildcard()
    n = 0
    while n < len(names):
        key, value = names[n]
        dot = "." in key
        label = key.split(".", 1)[0]
        length = len(label) + dot
        nexts = [(key[length:], value)] if len(key) != length else []
        i = n + 1
        while i < len(names):
            other, other_value = names[i]
            if other[:length] != key[:length]:
                break
            if not dot and len(other) > length and other[length] != ".":
                break
            nexts.append((other[len(label) + 1:], other_value))
            i += 1
        entry: tuple[Any, int]
        if nexts:
            inner = wildcard_init(nexts)
            if len(key) == length:
                inner.value = value
            entry = (inner, 3 if dot else 2)
        else:
            entry = (value, 1 if dot else 0)
        wc.hash.setdefault(label, entry)
        n = i
    return wc


def find_head(wc: Wildcard, name: str) -> str | None:
    """ngx_hash_find_wc_head."""
    n = len(name)
    while n and name[n - 1] != ".":
        n -= 1
    entry = wc.hash.get(name[n:])
    if entry is None:
        return wc.value
    value, bits = entry
    if bits & 2:
        if n == 0:
            return None if bits & 1 else value.value
        found = find_head(value, name[:n - 1])
        return found if found is not None else value.value
    if bits & 1 and n == 0:
        return None
    return value  # type: ignore[no-any-return]


def find_tail(wc: Wildcard, name: str) -> str | None:
    """ngx_hash_find_wc_tail."""
    dot = name.find(".")
    if dot < 0:
        return None
    entry = wc.hash.get(name[:dot])
    if entry is None:
        return wc.value
    value, bits = entry
    if bits & 2:
        found = find_tail(value, name[dot + 1:])
        return found if found is not None else value.value
    return value  # type: ignore[no-any-return]


def reference(names: Sequence[tuple[str, str]], host: str) -> str | None:
    """ngx_hash_add_key for every name, then ngx_hash_find_combined."""
    exact: dict[str, str] = {}
    keys_hash: set[str] = set()
    head_keys: set[str] = set()
    tail_keys: set[str] = set()
    head: list[tuple[str, str]] = []
    tail: list[tuple[str, str]] = []
    for name, value in names:
        if name[:2] == "*." or name[:1] == ".":
            skip = 2 if name[0] == "*" else 1
            rest = name[skip:]
            if skip == 1:
                if rest in keys_hash:
                    continue
                keys_hash.add(rest)
            if rest in head_keys:
                continue
            head_keys.add(rest)
            head.append((".".join(reversed(rest.split("."))) + ("." if skip == 2 else ""),
                         value))
        elif name.endswith(".*"):
            if name[:-1] in tail_keys:
                continue
            tail_keys.add(name[:-1])
            tail.append((name[:-2], value))
        elif name not in keys_hash:
            keys_hash.add(name)
            exact[name] = value
    if host in exact:
        return exact[host]
    if not host:
        return None
    if head:
        found = find_head(wildcard_init(sorted(head, key=lambda item: dns_order(item[0]))), host)
        if found is not None:
            return found
    if tail:
        return find_tail(wildcard_init(sorted(tail, key=lambda item: dns_order(item[0]))), host)
    return None


LABELS = st.sampled_from(["a", "b", "ex", "www"])
DOMAINS = st.lists(LABELS, min_size=1, max_size=3).map(".".join)
NAMES = st.one_of(DOMAINS, DOMAINS.map("*.{}".format), DOMAINS.map(".{}".format),
                  DOMAINS.map("{}.*".format))
HOSTS = st.lists(LABELS, min_size=1, max_size=4).map(".".join)


@MANY
@given(st.lists(NAMES, max_size=8), st.lists(HOSTS, min_size=1, max_size=10))
def test_same_as_nginx_reference(names: list[str], hosts: list[str]) -> None:
    valued = [(name, f"{name}#{i}") for i, name in enumerate(names)]
    table: HostTable[str] = HostTable(wildcards=True)
    for name, value in valued:
        table.add(name, value)
    probes = hosts + [re.sub(r"^\*?\.|\.\*$", "", name) for name in names]
    for host in probes:
        assert table.find(host.encode()) == reference(valued, host), host
