"""Server configs, server states and groups: tiers, connection counting, passive health.

Timelines are written in the seconds nginx counts (``now`` is passed in), following
ngx_http_upstream_round_robin.c: a failure sets ``checked``; a server is out while it has
``max_fails`` fails and ``now - checked <= fail_timeout``; picking it after that moves
``checked`` to now; a success clears fails only if it came after such a pick.
"""

from __future__ import annotations

import dataclasses

import pytest

from wsgate.proxy.directives import ServerConfig
from wsgate.proxy.servers import ServerState
from wsgate.proxy.upstreams import UpstreamGroup


def two(max_fails: int = 1, fail_timeout: float = 10.0) -> UpstreamGroup:
    return UpstreamGroup("u", [
        ServerConfig("10.0.0.1", 80, max_fails=max_fails, fail_timeout=fail_timeout),
        ServerConfig("10.0.0.2", 80, max_fails=max_fails, fail_timeout=fail_timeout),
    ])


def pick_until(group: UpstreamGroup, server: ServerState, now: float) -> None:
    """Pick (as a request would) until ``server`` is chosen, failing if it never is."""
    for _ in range(len(group.servers) * 4):
        if group.pick(now) is server:
            return
    raise AssertionError(f"{server} was never picked at {now}")


# --- ServerConfig ---------------------------------------------------------------------------


def test_server_config_defaults_are_nginx_defaults() -> None:
    config = ServerConfig("10.0.0.1", 80)
    assert (config.weight, config.max_fails, config.fail_timeout) == (1, 1, 10.0)
    assert (config.backup, config.down, config.max_conns) == (False, False, 0)


@pytest.mark.parametrize(("host", "port", "address"), [
    ("10.0.0.1", 80, "10.0.0.1:80"),
    ("backend.internal", 8080, "backend.internal:8080"),
    ("::1", 8080, "[::1]:8080"),
    ("2001:db8::7", 443, "[2001:db8::7]:443"),
])
def test_server_address(host: str, port: int, address: str) -> None:
    assert ServerConfig(host, port).address == address


@pytest.mark.parametrize("kwargs", [
    {"host": "", "port": 80},
    {"host": "[::1]", "port": 80},
    {"host": "a", "port": 0},
    {"host": "a", "port": 65536},
    {"host": "a", "port": 80, "weight": 0},
    {"host": "a", "port": 80, "max_fails": -1},
    {"host": "a", "port": 80, "fail_timeout": -1.0},
    {"host": "a", "port": 80, "max_conns": -1},
])
def test_server_config_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_server_config_is_frozen() -> None:
    config = ServerConfig("a", 80)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.weight = 2  # type: ignore[misc]


# --- ServerState ----------------------------------------------------------------------------


def test_server_state_available_window_edges() -> None:
    server = ServerState(ServerConfig("a", 80, max_fails=2, fail_timeout=10.0))
    server.fails, server.checked = 1, 10.0
    assert server.available(10.0)
    server.fails = 2
    assert not server.available(10.0)
    assert not server.available(20.0)  # nginx: out while now - checked <= fail_timeout
    assert server.available(20.5)


def test_server_state_available_down_and_max_conns() -> None:
    server = ServerState(ServerConfig("a", 80, max_conns=2))
    server.active = 1
    assert server.available(0.0)
    server.active = 2
    assert not server.available(0.0)
    server.active = 0
    server.down = True
    assert not server.available(0.0)


def test_server_states_compare_by_identity() -> None:
    group = UpstreamGroup("u", [ServerConfig("a", 80), ServerConfig("a", 80)])
    first, second = group.servers
    assert first != second and len({first, second}) == 2
    assert group.pick(0.0, exclude=[first]) is second


# --- group construction ---------------------------------------------------------------------


def test_group_tiers_keep_config_order() -> None:
    group = UpstreamGroup("u", [ServerConfig("b1", 80, backup=True), ServerConfig("p1", 80),
                                ServerConfig("p2", 80), ServerConfig("b2", 80, backup=True)])
    assert [p.address for p in group.primary] == ["p1:80", "p2:80"]
    assert [p.address for p in group.backup] == ["b1:80", "b2:80"]
    assert [p.address for p in group.servers] == ["b1:80", "p1:80", "p2:80", "b2:80"]
    assert group.backup[0].backup and not group.primary[0].backup


def test_group_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="no primary"):
        UpstreamGroup("u", [ServerConfig("a", 80, backup=True)])
    with pytest.raises(ValueError, match="no primary"):
        UpstreamGroup("u", [])
    with pytest.raises(ValueError, match="unknown balance"):
        UpstreamGroup("u", [ServerConfig("a", 80)], "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="consistent"):
        UpstreamGroup("u", [ServerConfig("a", 80)], "least_conn", consistent=True)


# --- connection counting --------------------------------------------------------------------


def test_acquire_release_count() -> None:
    group = two()
    a = group.servers[0]
    group.acquire(a)
    group.acquire(a)
    group.release(a)
    assert a.active == 1
    group.release(a)
    with pytest.raises(ValueError, match="release without acquire"):
        group.release(a)
    assert a.active == 0


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "ip_hash", "hash"])
def test_max_conns_respected(balance: str) -> None:
    group = UpstreamGroup("u", [ServerConfig("10.0.0.1", 80, max_conns=2),
                                ServerConfig("10.0.0.2", 80, max_conns=1)], balance)  # type: ignore[arg-type]
    a, b = group.servers
    held = []
    for _ in range(3):
        server = group.pick(0.0, b"\x0a\x00\x00\x01")
        assert server is not None
        group.acquire(server)
        held.append(server)
    assert sorted(p.address for p in held) == [a.address, a.address, b.address]
    assert group.pick(0.0, b"\x0a\x00\x00\x01") is None
    group.release(b)
    assert group.pick(0.0, b"\x0a\x00\x00\x01") is b


# --- backups --------------------------------------------------------------------------------


def backed() -> UpstreamGroup:
    return UpstreamGroup("u", [ServerConfig("p1", 80), ServerConfig("p2", 80, max_conns=1),
                               ServerConfig("b1", 80, backup=True),
                               ServerConfig("b2", 80, backup=True, weight=2)])


def test_backup_unused_while_a_primary_is_available() -> None:
    group = backed()
    p1, p2, _, _ = group.servers
    assert {group.pick(0.0) for _ in range(50)} == {p1, p2}
    p1.down = True
    assert {group.pick(0.0) for _ in range(10)} == {p2}


def test_backup_used_when_primaries_down_full_or_failed() -> None:
    group = backed()
    p1, p2, b1, b2 = group.servers
    p1.down = True
    group.acquire(p2)  # p2 is at max_conns
    assert [group.pick(0.0) for _ in range(3)] == [b2, b1, b2]
    group.release(p2)
    assert group.pick(0.0) is p2
    p1.down = False
    group.report_failure(p1, 1.0)
    group.report_failure(p2, 1.0)
    assert group.pick(2.0) in (b1, b2)
    assert group.pick(11.5) in (p1, p2)  # fail_timeout over: primaries again


def test_backup_with_hash_keeps_keys_sticky() -> None:
    group = UpstreamGroup("u", [ServerConfig("p1", 80, down=True), ServerConfig("p2", 80),
                                ServerConfig("b1", 80, backup=True),
                                ServerConfig("b2", 80, backup=True)], "hash", consistent=True)
    _, p2, b1, b2 = group.servers
    p2.down = True
    chosen = {key: group.pick(0.0, key) for key in (b"k1", b"k2", b"k3", b"k4", b"k5", b"k6")}
    assert set(chosen.values()) == {b1, b2}
    for key, server in chosen.items():
        assert group.pick(0.0, key) is server


def test_none_when_everything_is_down() -> None:
    group = backed()
    for server in group.servers:
        server.down = True
    assert group.pick(0.0) is None


# --- passive health -------------------------------------------------------------------------


def test_fail_and_recover_timeline() -> None:
    group = two(max_fails=2, fail_timeout=10.0)
    a, b = group.servers
    group.report_failure(a, 0.0)
    assert a.available(0.5)  # one failure of two allowed
    group.report_failure(a, 1.0)
    for now in (1.0, 5.0, 11.0):  # out for fail_timeout after the last failure
        assert {group.pick(now) for _ in range(4)} == {b}
    pick_until(group, a, 11.5)  # another chance...
    group.report_failure(a, 12.0)  # ...spent: out for a whole fail_timeout again
    assert {group.pick(22.0) for _ in range(4)} == {b}
    pick_until(group, a, 22.5)
    group.report_success(a, 23.0)  # success after re-admission: fails cleared
    assert a.fails == 0
    group.report_failure(a, 24.0)
    assert a.available(24.0)


def test_success_inside_the_window_does_not_clear_fails() -> None:
    group = two(max_fails=2, fail_timeout=10.0)
    a, _ = group.servers
    group.report_failure(a, 0.0)
    pick_until(group, a, 5.0)
    group.report_success(a, 5.0)
    assert a.fails == 1
    group.report_failure(a, 6.0)
    assert not a.available(6.0)


def test_failure_after_long_quiet_still_counts_without_a_success() -> None:
    # nginx keeps counting until a success follows a re-admission pick.
    group = two(max_fails=2, fail_timeout=10.0)
    a, _ = group.servers
    group.report_failure(a, 0.0)
    pick_until(group, a, 100.0)
    group.report_failure(a, 100.0)
    assert a.fails == 2 and not a.available(100.0)


def test_max_fails_zero_disables_accounting() -> None:
    group = two(max_fails=0)
    a, _ = group.servers
    for now in range(10):
        group.report_failure(a, float(now))
    assert a.available(10.0)
    assert a.effective_weight == a.weight
    pick_until(group, a, 10.0)


def test_single_server_is_never_marked_unavailable() -> None:
    group = UpstreamGroup("u", [ServerConfig("only", 80, max_fails=1, max_conns=1)])
    (only,) = group.servers
    for now in range(5):
        group.report_failure(only, float(now))
        assert group.pick(float(now)) is only
    assert only.fails == 0
    assert group.pick(5.0, exclude=[only]) is None
    group.acquire(only)
    assert group.pick(5.0) is None  # max_conns still applies
    group.release(only)
    only.down = True
    assert group.pick(5.0) is None  # and down


def test_one_primary_with_backup_is_not_single() -> None:
    group = UpstreamGroup("u", [ServerConfig("p", 80), ServerConfig("b", 80, backup=True)])
    p, b = group.servers
    assert group.pick(0.0) is p
    group.report_failure(p, 0.0)
    assert group.pick(1.0) is b
    assert group.pick(10.5) is p


def test_all_failed_quick_recovery() -> None:
    group = two()
    a, b = group.servers
    group.report_failure(a, 0.0)
    group.report_failure(b, 0.0)
    assert group.pick(1.0) is None  # this request gets 502...
    assert (a.fails, b.fails) == (0, 0)
    assert group.pick(1.0) in (a, b)  # ...the next one tries again


def test_quick_recovery_when_the_rest_failed_earlier() -> None:
    group = two()
    a, b = group.servers
    group.report_failure(a, 0.0)
    group.report_failure(b, 1.0)  # b tried for this request and failed too
    assert group.pick(1.0, exclude=[b]) is None
    assert (a.fails, b.fails) == (0, 0)


def test_no_reset_when_the_request_tried_everything() -> None:
    group = two()
    a, b = group.servers
    first = group.pick(0.0)
    assert first is a
    group.report_failure(a, 0.0)
    assert group.pick(0.0, exclude=[a]) is b
    group.report_failure(b, 0.0)
    assert group.pick(0.0, exclude=[a, b]) is None
    assert (a.fails, b.fails) == (1, 1)
    assert group.pick(0.5) is None  # a new request: nothing live, so reset
    assert group.pick(0.5) is not None


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "ip_hash", "hash"])
def test_exclude_walks_through_every_server_once(balance: str) -> None:
    group = UpstreamGroup("u", [ServerConfig(f"10.0.0.{i}", 80) for i in range(1, 6)],
                          balance)  # type: ignore[arg-type]
    tried: list[ServerState] = []
    while (server := group.pick(0.0, b"\xc0\x00\x02\x01", tried)) is not None:
        assert server not in tried
        tried.append(server)
    assert sorted(p.address for p in tried) == sorted(p.address for p in group.servers)
