"""Selection policies against nginx's documented behaviour and independent references.

The references below are written the way the original algorithms are described (ip_hash
as nginx's arithmetic, ``hash`` as Cache::Memcached's bucket list, ``consistent`` as a
plain ketama ring searched linearly), not the way balancer.py implements them, so a
shared mistake is unlikely.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.proxy.balancer import (
    ConsistentHash,
    Hash,
    IpHash,
    LeastConn,
    RoundRobin,
    ip_hash_bytes,
    ip_hash_key,
    make_policy,
)
from wsgate.proxy.directives import ServerConfig
from wsgate.proxy.servers import ServerState
from wsgate.proxy.upstreams import UpstreamGroup

FAST = settings(max_examples=60, deadline=None)


def v4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def weighted(*weights: int, host: str = "10.0.0.", port: int = 80) -> list[ServerConfig]:
    return [ServerConfig(f"{host}{i + 1}", port, weight=w) for i, w in enumerate(weights)]


def names(group: UpstreamGroup) -> dict[ServerState, str]:
    return {server: "abcdefghijklmnopqrstuvwxyz"[i] for i, server in enumerate(group.servers)}


def sequence(group: UpstreamGroup, count: int, now: float = 0.0, key: bytes | None = None) -> str:
    label = names(group)
    out = []
    for _ in range(count):
        server = group.pick(now, key)
        assert server is not None
        out.append(label[server])
    return "".join(out)


# --- references ---------------------------------------------------------------------------


def ref_ip_hash(addr: bytes, weights: Sequence[int], usable: Sequence[bool]) -> int | None:
    """nginx's ip_hash candidate walk; None when all 21 candidates are unusable."""
    data = addr[:3] if len(addr) == 4 else addr
    value = 89
    total = sum(weights)
    for _ in range(21):
        for byte in data:
            value = (value * 113 + byte) % 6271
        slot = value % total
        index = 0
        while slot >= weights[index]:
            slot -= weights[index]
            index += 1
        if usable[index]:
            return index
    return None


def memcached_hashfunc(data: bytes) -> int:
    return (zlib.crc32(data) >> 16) & 0x7FFF


def ref_memcached(key: bytes, weights: Sequence[int], usable: Sequence[bool]) -> int | None:
    """Cache::Memcached's get_sock: a bucket per unit of weight, ``$hv += hash($tries.$key)``
    on a dead server (nginx looks at 21 candidates, the Perl module at 20)."""
    buckets = [index for index, weight in enumerate(weights) for _ in range(weight)]
    value = memcached_hashfunc(key)
    for tries in range(1, 22):
        index = buckets[value % len(buckets)]
        if usable[index]:
            return index
        value += memcached_hashfunc(str(tries).encode() + key)
    return None


def ref_ring(addresses: Sequence[str], weights: Sequence[int]) -> list[tuple[int, int]]:
    """Cache::Memcached::Fast's ketama points: crc32(HOST \\0 PORT prev_le32)."""
    points: dict[int, int] = {}
    for index, (address, weight) in enumerate(zip(addresses, weights, strict=True)):
        host, _, port = address.rpartition(":")
        prev = 0
        for _ in range(160 * weight):
            prev = zlib.crc32(host.encode() + b"\0" + port.encode() + prev.to_bytes(4, "little"))
            points.setdefault(prev, index)
    return sorted(points.items())


def ref_ketama(ring: list[tuple[int, int]], key: bytes, usable: Sequence[bool]) -> int | None:
    target = zlib.crc32(key)
    start = next((i for i, (point, _) in enumerate(ring) if point >= target), 0)
    for step in range(21):
        index = ring[(start + step) % len(ring)][1]
        if usable[index]:
            return index
    return None


# --- smooth weighted round robin ------------------------------------------------------------


def test_smooth_wrr_gives_nginx_sequence_for_5_1_1() -> None:
    group = UpstreamGroup("u", weighted(5, 1, 1))
    assert sequence(group, 14) == "aabacaa" * 2


def test_smooth_wrr_equal_weights_cycle_in_order() -> None:
    assert sequence(UpstreamGroup("u", weighted(1, 1, 1)), 7) == "abcabca"


def test_smooth_wrr_interleaves_within_a_cycle() -> None:
    # A plain weighted round robin gives a a a b; nginx's puts b inside the cycle.
    assert sequence(UpstreamGroup("u", weighted(3, 1)), 8) == "aaba" * 2


@FAST
@given(st.lists(st.integers(1, 10), min_size=1, max_size=6), st.integers(1, 3))
def test_smooth_wrr_weights_hold_exactly_per_cycle(weights: list[int], cycles: int) -> None:
    group = UpstreamGroup("u", weighted(*weights))
    picks = Counter(group.pick(0.0) for _ in range(sum(weights) * cycles))
    assert [picks[server] for server in group.servers] == [w * cycles for w in weights]
    assert all(server.current_weight == 0 for server in group.servers)


@FAST
@given(st.data())
def test_never_picks_down_or_excluded(data: st.DataObject) -> None:
    weights = data.draw(st.lists(st.integers(1, 5), min_size=2, max_size=6))
    down = data.draw(st.lists(st.booleans(), min_size=len(weights), max_size=len(weights)))
    balance = data.draw(st.sampled_from(["round_robin", "least_conn", "ip_hash", "hash"]))
    configs = [ServerConfig(f"10.0.0.{i}", 80, weight=w, down=d)
               for i, (w, d) in enumerate(zip(weights, down, strict=True))]
    group = UpstreamGroup("u", configs, balance)
    excluded = data.draw(st.sets(st.sampled_from(group.servers)))
    key = data.draw(st.binary(min_size=4, max_size=4))
    picked = group.pick(0.0, key, excluded)
    usable = [p for p in group.servers if not p.down and p not in excluded]
    if usable:
        assert picked in usable
    else:
        assert picked is None


def test_failure_cuts_effective_weight_and_picks_restore_it() -> None:
    configs = [ServerConfig("10.0.0.1", 80, weight=10, max_fails=2),
               ServerConfig("10.0.0.2", 80, weight=10, max_fails=2)]
    group = UpstreamGroup("u", configs)
    a, b = group.servers
    group.report_failure(a, 0.0)
    assert a.effective_weight == 5 and a.available(0.0)
    seen = []
    order = []
    for _ in range(8):
        order.append(group.pick(1.0))
        seen.append(a.effective_weight)
    assert seen == [6, 7, 8, 9, 10, 10, 10, 10]
    # Healthy, a would win the first tie; weakened, it yields the first turn to b.
    assert order[:2] == [b, a]


def test_effective_weight_never_negative() -> None:
    configs = [ServerConfig("10.0.0.1", 80, weight=3, max_fails=1),
               ServerConfig("10.0.0.2", 80)]
    group = UpstreamGroup("u", configs)
    a = group.servers[0]
    for _ in range(3):
        group.report_failure(a, 0.0)
    assert a.effective_weight == 0


def test_round_robin_ignores_key() -> None:
    group = UpstreamGroup("u", weighted(1, 1))
    assert sequence(group, 4, key=b"same") == "abab"


# --- least_conn -----------------------------------------------------------------------------


def test_least_conn_prefers_idle_server() -> None:
    group = UpstreamGroup("u", weighted(1, 1, 1), "least_conn")
    a, b, c = group.servers
    group.acquire(a)
    group.acquire(a)
    group.acquire(c)
    assert group.pick(0.0) is b


def test_least_conn_weighs_connections() -> None:
    # a: 2 connections / weight 3 beats b: 1 connection / weight 1.
    group = UpstreamGroup("u", weighted(3, 1), "least_conn")
    a, b = group.servers
    group.acquire(a)
    group.acquire(a)
    group.acquire(b)
    assert group.pick(0.0) is a
    group.acquire(a)  # a: 3/3 == b: 1/1, a tie broken by weighted round robin
    assert sequence(group, 4) == "aaba"


def test_least_conn_ties_share_by_smooth_wrr() -> None:
    group = UpstreamGroup("u", weighted(5, 1, 1), "least_conn")
    assert sequence(group, 7) == "aabacaa"


def test_least_conn_tie_among_some() -> None:
    group = UpstreamGroup("u", weighted(1, 1, 1), "least_conn")
    group.acquire(group.servers[0])
    assert sequence(group, 4) == "bcbc"


def test_least_conn_spreads_held_connections() -> None:
    group = UpstreamGroup("u", weighted(1, 2, 1), "least_conn")
    for _ in range(8):
        server = group.pick(0.0)
        assert server is not None
        group.acquire(server)
    assert [server.active for server in group.servers] == [2, 4, 2]


def test_least_conn_skips_unavailable_best() -> None:
    configs = [ServerConfig("10.0.0.1", 80, max_conns=1), ServerConfig("10.0.0.2", 80)]
    group = UpstreamGroup("u", configs, "least_conn")
    a, b = group.servers
    group.acquire(a)
    group.acquire(b)
    group.acquire(b)
    assert group.pick(0.0) is b  # a has fewer, but it is full


# --- ip_hash --------------------------------------------------------------------------------


def test_ip_hash_pinned_value() -> None:
    # 89 -> (89*113+192)%6271=3978 -> 4441 -> 154; 154 % 3 = 1.
    group = UpstreamGroup("u", weighted(1, 1, 1), "ip_hash")
    assert group.pick(0.0, v4("192.168.1.77")) is group.servers[1]


@FAST
@given(st.binary(min_size=3, max_size=3), st.integers(0, 255), st.integers(0, 255))
def test_ip_hash_sticks_per_slash_24(prefix: bytes, last1: int, last2: int) -> None:
    group = UpstreamGroup("u", weighted(1, 2, 1, 3), "ip_hash")
    first = group.pick(0.0, prefix + bytes([last1]))
    for _ in range(3):
        assert group.pick(0.0, prefix + bytes([last2])) is first


@FAST
@given(st.lists(st.integers(1, 5), min_size=2, max_size=6),
       st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16))
def test_ip_hash_matches_reference(weights: list[int], addr: bytes) -> None:
    group = UpstreamGroup("u", weighted(*weights), "ip_hash")
    expected = ref_ip_hash(addr, weights, [True] * len(weights))
    assert expected is not None
    assert group.pick(0.0, addr) is group.servers[expected]


def test_ip_hash_differs_across_networks() -> None:
    group = UpstreamGroup("u", weighted(1, 1, 1), "ip_hash")
    counts = Counter(group.pick(0.0, v4(f"10.{i // 256}.{i % 256}.1")) for i in range(600))
    assert set(counts) == set(group.servers)
    assert min(counts.values()) > 120


def test_ip_hash_uses_whole_ipv6_address() -> None:
    group = UpstreamGroup("u", weighted(1, 1, 1), "ip_hash")
    moved = 0
    for i in range(50):
        base = v6(f"2001:db8:{i:x}::")
        picks = {group.pick(0.0, base[:15] + bytes([last])) for last in range(8)}
        moved += len(picks) > 1
    assert moved > 25  # the last byte matters, unlike IPv4's last octet


def test_ip_hash_without_address_uses_pseudo_address() -> None:
    group = UpstreamGroup("u", weighted(1, 1, 1, 1, 1), "ip_hash")
    assert group.pick(0.0, None) is group.pick(0.0, v4("0.0.0.99"))


def test_ip_hash_rejects_text_key() -> None:
    group = UpstreamGroup("u", weighted(1, 1), "ip_hash")
    with pytest.raises(ValueError, match="packed"):
        group.pick(0.0, b"10.0.0.1")


def test_ip_hash_key_and_bytes() -> None:
    assert ip_hash_key("192.0.2.7") == bytes([192, 0, 2, 7])
    assert ip_hash_key("fe80::1%eth0") == v6("fe80::1")
    assert ip_hash_key("") is None
    assert ip_hash_key("/run/wsgate.sock") is None
    assert ip_hash_bytes(v4("192.0.2.7")) == bytes([192, 0, 2])
    assert ip_hash_bytes(v6("2001:db8::1")) == v6("2001:db8::1")
    assert ip_hash_bytes(None) == b"\0\0\0"


def test_ip_hash_rehashes_past_unavailable() -> None:
    weights = [1, 1, 1, 1]
    checked = 0
    for i in range(40):
        addr = v4(f"172.16.{i}.1")
        group = UpstreamGroup("u", weighted(*weights), "ip_hash")
        home = group.pick(0.0, addr)
        assert home is not None
        home.down = True
        usable = [p is not home for p in group.servers]
        expected = ref_ip_hash(addr, weights, usable)
        if expected is None:
            continue
        assert group.pick(0.0, addr) is group.servers[expected]
        # Everyone else stays put: the down server keeps its slots.
        other = v4(f"172.17.{i}.1")
        home.down = False
        before = group.pick(0.0, other)
        home.down = True
        if before is not home:
            assert group.pick(0.0, other) is before
        checked += 1
    assert checked > 30


def test_ip_hash_falls_back_to_round_robin_after_21_candidates() -> None:
    weights = [8, 1, 1]
    usable = [False, True, True]
    fallback = next(addr for addr in (v4(f"10.{i // 256}.{i % 256}.0") for i in range(5000))
                    if ref_ip_hash(addr, weights, usable) is None)
    sticky = next(addr for addr in (v4(f"11.{i // 256}.{i % 256}.0") for i in range(5000))
                  if ref_ip_hash(addr, weights, usable) is not None)
    configs = [ServerConfig("10.0.0.1", 80, weight=8, down=True),
               ServerConfig("10.0.0.2", 80), ServerConfig("10.0.0.3", 80)]
    group = UpstreamGroup("u", configs, "ip_hash")
    assert len({group.pick(0.0, fallback) for _ in range(4)}) == 2
    assert len({group.pick(0.0, sticky) for _ in range(4)}) == 1


# --- hash (Cache::Memcached compatible) -----------------------------------------------------


@FAST
@given(st.lists(st.integers(1, 5), min_size=2, max_size=6), st.binary(min_size=1, max_size=40))
def test_hash_matches_cache_memcached(weights: list[int], key: bytes) -> None:
    group = UpstreamGroup("u", weighted(*weights), "hash")
    expected = ref_memcached(key, weights, [True] * len(weights))
    assert expected is not None
    assert group.pick(0.0, key) is group.servers[expected]
    assert group.pick(0.0, key) is group.servers[expected]


def test_hash_rehashes_like_cache_memcached() -> None:
    weights = [2, 1, 3, 1]
    checked = 0
    for i in range(60):
        key = f"/user/{i}".encode()
        group = UpstreamGroup("u", weighted(*weights), "hash")
        home = group.pick(0.0, key)
        assert home is not None
        home.down = True
        expected = ref_memcached(key, weights, [p is not home for p in group.servers])
        if expected is None:
            continue
        assert group.pick(0.0, key) is group.servers[expected]
        checked += 1
    assert checked > 50


def test_hash_empty_or_missing_key_is_round_robin() -> None:
    group = UpstreamGroup("u", weighted(1, 1, 1), "hash")
    assert sequence(group, 6, key=b"") == "abcabc"
    assert sequence(group, 3, key=None) == "abc"


def test_hash_falls_back_to_round_robin_after_21_candidates() -> None:
    weights = [8, 1, 1]
    usable = [False, True, True]
    fallback = next(key for key in (f"k{i}".encode() for i in range(20000))
                    if ref_memcached(key, weights, usable) is None)
    configs = [ServerConfig("10.0.0.1", 80, weight=8, down=True),
               ServerConfig("10.0.0.2", 80), ServerConfig("10.0.0.3", 80)]
    group = UpstreamGroup("u", configs, "hash")
    assert len({group.pick(0.0, fallback) for _ in range(4)}) == 2


# --- hash consistent ------------------------------------------------------------------------


def chash(*weights: int, count: int | None = None) -> UpstreamGroup:
    configs = [ServerConfig(f"10.0.0.{i + 1}", 8080, weight=w) for i, w in enumerate(weights)]
    return UpstreamGroup("u", configs[:count], "hash", consistent=True)


KEYS = [f"/session/{i}".encode() for i in range(2000)]


@FAST
@given(st.lists(st.integers(1, 3), min_size=2, max_size=5), st.binary(min_size=1, max_size=30))
def test_consistent_matches_ketama_reference(weights: list[int], key: bytes) -> None:
    group = chash(*weights)
    ring = ref_ring([p.address for p in group.servers], weights)
    expected = ref_ketama(ring, key, [True] * len(weights))
    assert expected is not None
    assert group.pick(0.0, key) is group.servers[expected]


def test_consistent_ring_uses_bracketed_ipv6_host() -> None:
    configs = [ServerConfig("2001:db8::1", 80), ServerConfig("2001:db8::2", 80)]
    group = UpstreamGroup("u", configs, "hash", consistent=True)
    ring = ref_ring(["[2001:db8::1]:80", "[2001:db8::2]:80"], [1, 1])
    for key in KEYS[:200]:
        expected = ref_ketama(ring, key, [True, True])
        assert expected is not None and group.pick(0.0, key) is group.servers[expected]


def test_consistent_same_key_same_server_across_objects() -> None:
    first, second = chash(1, 1, 1, 1), chash(1, 1, 1, 1)
    label1, label2 = names(first), names(second)
    for key in KEYS[:300]:
        one = first.pick(0.0, key)
        assert one is not None and first.pick(0.0, key) is one
        two = second.pick(0.0, key)
        assert two is not None and label1[one] == label2[two]


def test_consistent_adding_server_moves_about_one_nth_and_only_to_it() -> None:
    before, after = chash(1, 1, 1, 1, 1, count=4), chash(1, 1, 1, 1, 1)
    new = after.servers[4].address
    moved = 0
    for key in KEYS:
        old_server, new_server = before.pick(0.0, key), after.pick(0.0, key)
        assert old_server is not None and new_server is not None
        if old_server.address != new_server.address:
            assert new_server.address == new
            moved += 1
    assert 0.12 < moved / len(KEYS) < 0.28


def test_consistent_down_server_behaves_as_removed() -> None:
    full, without = chash(1, 1, 1, 1), chash(1, 1, 1, count=3)
    full.servers[3].down = True
    for key in KEYS[:500]:
        one, two = full.pick(0.0, key), without.pick(0.0, key)
        assert one is not None and two is not None and one.address == two.address


def test_consistent_weight_scales_share() -> None:
    group = chash(3, 1, 1)
    counts = Counter(group.pick(0.0, key) for key in KEYS)
    heavy, light1, light2 = (counts[server] for server in group.servers)
    assert heavy > 1.8 * max(light1, light2)


def test_consistent_empty_key_is_round_robin() -> None:
    assert sequence(chash(1, 1, 1), 6, key=b"") == "abcabc"


def test_consistent_falls_back_to_round_robin_when_all_points_unusable() -> None:
    group = chash(1, 1, 1)
    a, b, c = group.servers
    a.down = True
    b.down = True
    assert {group.pick(0.0, key) for key in KEYS[:50]} == {c}
    c.down = True
    assert group.pick(0.0, KEYS[0]) is None


PROBE = """
import json, socket, sys
from wsgate.proxy.directives import ServerConfig
from wsgate.proxy.upstreams import UpstreamGroup
out = {}
for balance, consistent in (("hash", True), ("hash", False), ("ip_hash", False)):
    group = UpstreamGroup("u", [ServerConfig(f"10.0.0.{i}", 80) for i in range(1, 6)],
                          balance, consistent)
    picks = []
    for i in range(200):
        key = (socket.inet_pton(socket.AF_INET, f"10.{i}.{i}.1") if balance == "ip_hash"
               else f"/k/{i}".encode())
        picks.append(group.pick(0.0, key).address)
    out[f"{balance}-{consistent}"] = picks
json.dump(out, sys.stdout)
"""


def test_choices_identical_in_another_process_with_other_hash_seed() -> None:
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                env=env, timeout=30, check=True)
        runs.append(json.loads(result.stdout))
    namespace: dict[str, object] = {}
    exec(PROBE.replace("json.dump(out, sys.stdout)", ""), namespace)
    here = namespace["out"]
    assert isinstance(here, dict)
    assert runs[0] == runs[1] == here
    assert len(set(here["hash-True"])) == 5


# --- policies directly ----------------------------------------------------------------------


def test_make_policy_types_and_errors() -> None:
    servers = [ServerState(config) for config in weighted(1, 1)]
    assert isinstance(make_policy("round_robin", servers), RoundRobin)
    assert isinstance(make_policy("least_conn", servers), LeastConn)
    assert isinstance(make_policy("ip_hash", servers), IpHash)
    assert isinstance(make_policy("hash", servers), Hash)
    assert isinstance(make_policy("hash", servers, consistent=True), ConsistentHash)
    with pytest.raises(ValueError, match="consistent"):
        make_policy("round_robin", servers, consistent=True)
    with pytest.raises(ValueError, match="unknown balance"):
        make_policy("random", servers)  # type: ignore[arg-type]


def test_pick_refreshes_checked_only_after_fail_timeout() -> None:
    servers = [ServerState(config) for config in weighted(1, 1)]
    policy = RoundRobin(servers)
    picked = policy.pick(100.0, None, ())
    assert picked is servers[0] and picked.checked == 100.0
    picked = policy.pick(105.0, None, ())
    assert picked is servers[1] and picked.checked == 105.0
    assert policy.pick(108.0, None, ()) is servers[0]
    assert servers[0].checked == 100.0  # 8 s is within fail_timeout: window kept
