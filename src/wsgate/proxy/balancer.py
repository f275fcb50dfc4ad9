"""Upstream selection policies with nginx's semantics, as pure functions of server state.

Each policy picks one server from a *tier* (the primary servers, or the backup servers) of
an :class:`~wsgate.proxy.upstreams.UpstreamGroup`; the group decides which tier to ask,
and owns passive health and connection counting. Nothing here reads a clock or touches a
socket: callers pass ``now``, so the rules can be tested to the second.

The algorithms follow nginx's upstream modules (round robin, ``least_conn``,
``ip_hash``, ``hash`` and ``hash ... consistent``) closely enough that a group of the same
servers in the same order sends the same client or key to the same server as nginx does.
Every hash is a fixed function (crc32 or nginx's ip_hash arithmetic), never Python's
``hash()``, which is salted per process: several proxy processes must agree.
"""

from __future__ import annotations

import ipaddress
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Sequence
from typing import Protocol

from wsgate.proxy.directives import BALANCES, Balance
from wsgate.proxy.servers import ServerState

HASH_TRIES = 21
"""Candidates a hash policy looks at before falling back to round robin: nginx's first
guess plus 20 rehashes (``if (++tries > 20) return get_rr_peer(...)``)."""

POINTS_PER_WEIGHT = 160
"""Consistent-hash ring points per unit of weight, as in nginx and Cache::Memcached::Fast."""

_IP_HASH_SEED = 89
_IP_HASH_MUL = 113
_IP_HASH_MOD = 6271
_PSEUDO_ADDR = b"\x00\x00\x00"
"""What nginx hashes for a client with no IP address (a unix socket): all such clients
go to one server."""

_REHASH_PREFIX_CRC = tuple(zlib.crc32(str(i).encode()) for i in range(HASH_TRIES))
"""crc32 of the decimal rehash counter, precomputed so a rehash is one crc32 call that
continues from it (crc32(prefix + key) == crc32(key, crc32(prefix)))."""


class Policy(Protocol):
    """One tier's selection rule. ``pick`` may update the servers' weights, never counts."""

    def pick(self, now: float, key: bytes | None,
             exclude: Collection[ServerState]) -> ServerState | None:
        """The server to use, or None when no server in the tier is eligible."""
        ...


def _admit(server: ServerState, now: float) -> None:
    """Start a new fail_timeout window for a chosen server once the old one has passed.

    This is how nginx gives a failed server "another chance": after fail_timeout it is
    eligible again, choosing it moves ``checked`` to now, so one more failure puts it out
    for a whole fail_timeout, and a success (accessed < checked) clears its fails.
    """
    if now - server.checked > server.fail_timeout:
        server.checked = now


def _eligible(server: ServerState, now: float, exclude: Collection[ServerState]) -> bool:
    return not (exclude and server in exclude) and server.available(now)


def _wrr_step(server: ServerState) -> int:
    """One server's turn in a smooth WRR round: it gains its effective weight, and a weight
    cut by failures earns one unit back. Returns the gain, for the total the round's winner
    pays back. One helper for round robin and least_conn's tie-break, so they cannot drift.
    """
    effective = server.effective_weight
    server.current_weight += effective
    if effective < server.weight:
        server.effective_weight = effective + 1
    return effective


def _recover_weight(server: ServerState) -> None:
    """What smooth WRR over a one-server group leaves behind (:func:`_wrr_step`, then the
    server pays back its own gain): current weight unchanged, effective weight one step
    nearer its configured weight. Cheaper than a round for the ring's common case."""
    if server.effective_weight < server.weight:
        server.effective_weight += 1


def smooth_wrr(servers: Sequence[ServerState], now: float,
               exclude: Collection[ServerState]) -> ServerState | None:
    """nginx's smooth weighted round robin over the eligible ``servers``.

    Every eligible server gains its effective weight, the largest current weight wins
    (the first on a tie) and pays back the total. Weights 5,1,1 give a a b a c a a: the
    heavy server's turns are spread out rather than bunched. A server whose effective
    weight was cut by failures earns one unit back each time it is considered.
    """
    best: ServerState | None = None
    total = 0
    for server in servers:
        if exclude and server in exclude:
            continue
        if not server.available(now):
            continue
        total += _wrr_step(server)
        if best is None or server.current_weight > best.current_weight:
            best = server
    if best is None:
        return None
    best.current_weight -= total
    _admit(best, now)
    return best


class RoundRobin:
    """The default: smooth weighted round robin."""

    __slots__ = ("_servers",)

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._servers = tuple(servers)

    def pick(self, now: float, key: bytes | None,
             exclude: Collection[ServerState]) -> ServerState | None:
        """The next server in weighted turn; ``key`` is ignored."""
        return smooth_wrr(self._servers, now, exclude)


class LeastConn:
    """``least_conn``: fewest active connections per unit of weight.

    Ratios are compared by cross-multiplication (a.active * b.weight) so there is no
    float rounding; servers tied on the lowest ratio share by smooth round robin, which
    is what spreads a burst of new connections over idle servers.
    """

    __slots__ = ("_servers",)

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._servers = tuple(servers)

    def pick(self, now: float, key: bytes | None,
             exclude: Collection[ServerState]) -> ServerState | None:
        """The least loaded eligible server; ``key`` is ignored."""
        servers = self._servers
        best: ServerState | None = None
        start = 0
        many = False
        for i, server in enumerate(servers):
            if not _eligible(server, now, exclude):
                continue
            if best is None or server.active * best.weight < best.active * server.weight:
                best, start, many = server, i, False
            elif server.active * best.weight == best.active * server.weight:
                many = True
        if best is None:
            return None
        if many:
            active, weight = best.active, best.weight
            total = 0
            for i in range(start, len(servers)):
                server = servers[i]
                if server.active * weight != active * server.weight:
                    continue
                if not _eligible(server, now, exclude):
                    continue
                total += _wrr_step(server)
                if server.current_weight > best.current_weight:
                    best = server
            best.current_weight -= total
        _admit(best, now)
        return best


class _WeightWalk:
    """Maps a hash value to a server the way nginx walks ``hash % total_weight`` over
    the servers in order, each covering ``weight`` slots.

    Down and failed servers keep their slots, so marking one server down moves only the
    clients that hashed to it, which is why nginx's documentation says to mark a server
    ``down`` rather than delete it under ``ip_hash``.
    """

    __slots__ = ("_bounds", "_rr", "_servers", "_total")

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._servers = tuple(servers)
        bounds: list[int] = []
        total = 0
        for server in self._servers:
            total += server.weight
            bounds.append(total)
        self._bounds = tuple(bounds)
        self._total = total
        self._rr = RoundRobin(self._servers)

    def _at(self, value: int) -> ServerState:
        return self._servers[bisect_right(self._bounds, value % self._total)]


class IpHash(_WeightWalk):
    """``ip_hash``: a client keeps its server, keyed on its /24 (IPv4) or whole address.

    ``key`` is the client's packed address (4 or 16 bytes, as ``socket.inet_pton`` or
    :func:`ip_hash_key` give); None means no IP address (a unix socket client), hashed
    as nginx's three-zero-byte pseudo address. An IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1`` from a dual-stack listener) is hashed as IPv6, as nginx does.
    """

    __slots__ = ()

    def pick(self, now: float, key: bytes | None,
             exclude: Collection[ServerState]) -> ServerState | None:
        """The client's server; when it is unavailable, nginx's rehash, then round robin."""
        servers = self._servers
        if len(servers) < 2:
            return self._rr.pick(now, key, exclude)
        addr = ip_hash_bytes(key)
        value = _IP_HASH_SEED
        for _ in range(HASH_TRIES):
            for byte in addr:
                value = (value * _IP_HASH_MUL + byte) % _IP_HASH_MOD
            server = self._at(value)
            if _eligible(server, now, exclude):
                _admit(server, now)
                return server
        return self._rr.pick(now, key, exclude)


class Hash(_WeightWalk):
    """``hash KEY`` (not consistent): Cache::Memcached's bucket choice.

    The hash is ``(crc32(KEY) >> 16) & 0x7fff``; each rehash adds
    ``(crc32(str(n) + KEY) >> 16) & 0x7fff``. Adding or removing a server remaps most
    keys; use :class:`ConsistentHash` when that matters. An empty or missing key falls
    back to round robin, as in nginx.
    """

    __slots__ = ()

    def pick(self, now: float, key: bytes | None,
             exclude: Collection[ServerState]) -> ServerState | None:
        """The key's server; when it is unavailable, rehash, then round robin."""
        if not key or len(self._servers) < 2:
            return self._rr.pick(now, key, exclude)
        value = 0
        for n in range(HASH_TRIES):
            crc = zlib.crc32(key, _REHASH_PREFIX_CRC[n]) if n else zlib.crc32(key)
            value += (crc >> 16) & 0x7FFF
            server = self._at(value)
            if _eligible(server, now, exclude):
                _admit(server, now)
                return server
        return self._rr.pick(now, key, exclude)


def _server_base_crc(address: str) -> int:
    """crc32 of ``HOST \\0 PORT``, nginx's (and Cache::Memcached::Fast's) ring seed.

    The host part keeps IPv6 brackets, because nginx hashes the ``server`` string as
    written in the configuration and only splits off a trailing ``:digits`` port.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        host, port = address, ""
    return zlib.crc32(host.encode() + b"\x00" + port.encode())


class ConsistentHash:
    """``hash KEY consistent``: a ketama ring, 160 points per unit of weight per server.

    Point j of a server is ``crc32(HOST \\0 PORT prev)`` where ``prev`` is point j-1 as
    four little-endian bytes (zero for the first), so the ring is nginx's for the same
    ``host:port`` strings. A key goes to the first point at or after ``crc32(KEY)``; if
    that server is unavailable the next points are tried (21 in all), then round robin.
    Adding a server takes over only the keys that now land on its points: about 1/n.
    """

    __slots__ = ("_hashes", "_owners", "_rr", "_servers")

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._servers = tuple(servers)
        self._rr = RoundRobin(self._servers)
        owners: dict[str, list[ServerState]] = {}
        for server in self._servers:
            owners.setdefault(server.address, []).append(server)
        groups = {address: tuple(group) for address, group in owners.items()}
        points: list[tuple[int, int, tuple[ServerState, ...]]] = []
        for order, server in enumerate(self._servers):
            base = _server_base_crc(server.address)
            prev = 0
            for _ in range(server.weight * POINTS_PER_WEIGHT):
                prev = zlib.crc32(prev.to_bytes(4, "little"), base)
                points.append((prev, order, groups[server.address]))
        points.sort(key=lambda point: (point[0], point[1]))
        hashes: list[int] = []
        ring: list[tuple[ServerState, ...]] = []
        for value, _, group in points:
            if hashes and hashes[-1] == value:
                continue
            hashes.append(value)
            ring.append(group)
        self._hashes = tuple(hashes)
        self._owners = tuple(ring)

    def pick(self, now: float, key: bytes | None,
             exclude: Collection[ServerState]) -> ServerState | None:
        """The key's server on the ring, walking on past unavailable servers."""
        if not key or len(self._servers) < 2:
            return self._rr.pick(now, key, exclude)
        hashes, owners = self._hashes, self._owners
        count = len(hashes)
        index = bisect_left(hashes, zlib.crc32(key))
        for step in range(HASH_TRIES):
            group = owners[(index + step) % count]
            if len(group) == 1:
                server = group[0]
                if _eligible(server, now, exclude):
                    _recover_weight(server)
                    _admit(server, now)
                    return server
                continue
            chosen = smooth_wrr(group, now, exclude)
            if chosen is not None:
                return chosen
        return self._rr.pick(now, key, exclude)


def ip_hash_bytes(key: bytes | None) -> bytes:
    """The bytes nginx's ip_hash feeds its hash: an IPv4 address's first three octets,
    an IPv6 address's sixteen, or the pseudo address for None (no IP address).

    Any other length is a caller's mistake (a textual address passed as bytes, say) that
    would silently send every client to one server, so it is refused.
    """
    if key is None:
        return _PSEUDO_ADDR
    if len(key) == 4:
        return key[:3]
    if len(key) == 16:
        return key
    raise ValueError(f"ip_hash key must be a packed IPv4 or IPv6 address, got {key!r}")


def ip_hash_key(host: str) -> bytes | None:
    """The ``ip_hash`` key for a textual client address: its packed form, or None when
    it is not an IP address (a unix socket path, an empty string).

    A scope suffix (``fe80::1%eth0``) is dropped: the interface is not part of the
    address nginx hashes.
    """
    try:
        return ipaddress.ip_address(host.partition("%")[0]).packed
    except ValueError:
        return None


def make_policy(balance: Balance, servers: Sequence[ServerState], *,
                consistent: bool = False) -> Policy:
    """The policy object for one tier of a group, precomputing what it needs (the
    weight walk, the ring) so a pick does no set-up work."""
    if consistent and balance != "hash":
        raise ValueError("consistent applies only to balance='hash'")
    if balance == "round_robin":
        return RoundRobin(servers)
    if balance == "least_conn":
        return LeastConn(servers)
    if balance == "ip_hash":
        return IpHash(servers)
    if balance == "hash":
        return ConsistentHash(servers) if consistent else Hash(servers)
    raise ValueError(f"unknown balance {balance!r}; expected one of {', '.join(BALANCES)}")
