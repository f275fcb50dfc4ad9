"""Upstream selection policies with nginx's semantics, as pure functions of peer state.

Each policy picks one peer from a *tier* (the primary servers, or the backup servers) of
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
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from wsgate.proxy.upstreams import Peer

Balance = Literal["round_robin", "least_conn", "ip_hash", "hash"]
BALANCES: tuple[Balance, ...] = ("round_robin", "least_conn", "ip_hash", "hash")

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
    """One tier's selection rule. ``pick`` may update the peers' weights, never counts."""

    def pick(self, now: float, key: bytes | None, exclude: Collection[Peer]) -> Peer | None:
        """The peer to use, or None when no peer in the tier is eligible."""
        ...


def _admit(peer: Peer, now: float) -> None:
    """Start a new fail_timeout window for a chosen peer once the old one has passed.

    This is how nginx gives a failed peer "another chance": after fail_timeout it is
    eligible again, choosing it moves ``checked`` to now, so one more failure puts it out
    for a whole fail_timeout, and a success (accessed < checked) clears its fails.
    """
    if now - peer.checked > peer.fail_timeout:
        peer.checked = now


def _eligible(peer: Peer, now: float, exclude: Collection[Peer]) -> bool:
    return not (exclude and peer in exclude) and peer.available(now)


def smooth_wrr(peers: Sequence[Peer], now: float, exclude: Collection[Peer]) -> Peer | None:
    """nginx's smooth weighted round robin over the eligible ``peers``.

    Every eligible peer gains its effective weight, the largest current weight wins
    (the first on a tie) and pays back the total. Weights 5,1,1 give a a b a c a a: the
    heavy server's turns are spread out rather than bunched. A peer whose effective
    weight was cut by failures earns one unit back each time it is considered.
    """
    best: Peer | None = None
    total = 0
    for peer in peers:
        if exclude and peer in exclude:
            continue
        if not peer.available(now):
            continue
        effective = peer.effective_weight
        peer.current_weight += effective
        total += effective
        if effective < peer.weight:
            peer.effective_weight = effective + 1
        if best is None or peer.current_weight > best.current_weight:
            best = peer
    if best is None:
        return None
    best.current_weight -= total
    _admit(best, now)
    return best


class RoundRobin:
    """The default: smooth weighted round robin."""

    __slots__ = ("_peers",)

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = tuple(peers)

    def pick(self, now: float, key: bytes | None, exclude: Collection[Peer]) -> Peer | None:
        """The next peer in weighted turn; ``key`` is ignored."""
        return smooth_wrr(self._peers, now, exclude)


class LeastConn:
    """``least_conn``: fewest active connections per unit of weight.

    Ratios are compared by cross-multiplication (a.active * b.weight) so there is no
    float rounding; peers tied on the lowest ratio share by smooth round robin, which
    is what spreads a burst of new connections over idle servers.
    """

    __slots__ = ("_peers",)

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = tuple(peers)

    def pick(self, now: float, key: bytes | None, exclude: Collection[Peer]) -> Peer | None:
        """The least loaded eligible peer; ``key`` is ignored."""
        peers = self._peers
        best: Peer | None = None
        start = 0
        many = False
        for i, peer in enumerate(peers):
            if not _eligible(peer, now, exclude):
                continue
            if best is None or peer.active * best.weight < best.active * peer.weight:
                best, start, many = peer, i, False
            elif peer.active * best.weight == best.active * peer.weight:
                many = True
        if best is None:
            return None
        if many:
            active, weight = best.active, best.weight
            total = 0
            for i in range(start, len(peers)):
                peer = peers[i]
                if peer.active * weight != active * peer.weight:
                    continue
                if not _eligible(peer, now, exclude):
                    continue
                effective = peer.effective_weight
                peer.current_weight += effective
                total += effective
                if effective < peer.weight:
                    peer.effective_weight = effective + 1
                if peer.current_weight > best.current_weight:
                    best = peer
            best.current_weight -= total
        _admit(best, now)
        return best


class _WeightWalk:
    """Maps a hash value to a peer the way nginx walks ``hash % total_weight`` over
    the peers in order, each covering ``weight`` slots.

    Down and failed peers keep their slots, so marking one server down moves only the
    clients that hashed to it, which is why nginx's documentation says to mark a server
    ``down`` rather than delete it under ``ip_hash``.
    """

    __slots__ = ("_bounds", "_peers", "_rr", "_total")

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = tuple(peers)
        bounds: list[int] = []
        total = 0
        for peer in self._peers:
            total += peer.weight
            bounds.append(total)
        self._bounds = tuple(bounds)
        self._total = total
        self._rr = RoundRobin(self._peers)

    def _at(self, value: int) -> Peer:
        return self._peers[bisect_right(self._bounds, value % self._total)]


class IpHash(_WeightWalk):
    """``ip_hash``: a client keeps its server, keyed on its /24 (IPv4) or whole address.

    ``key`` is the client's packed address (4 or 16 bytes, as ``socket.inet_pton`` or
    :func:`ip_hash_key` give); None means no IP address (a unix socket client), hashed
    as nginx's three-zero-byte pseudo address. An IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1`` from a dual-stack listener) is hashed as IPv6, as nginx does.
    """

    __slots__ = ()

    def pick(self, now: float, key: bytes | None, exclude: Collection[Peer]) -> Peer | None:
        """The client's peer; when it is unavailable, nginx's rehash, then round robin."""
        peers = self._peers
        if len(peers) < 2:
            return self._rr.pick(now, key, exclude)
        addr = ip_hash_bytes(key)
        value = _IP_HASH_SEED
        for _ in range(HASH_TRIES):
            for byte in addr:
                value = (value * _IP_HASH_MUL + byte) % _IP_HASH_MOD
            peer = self._at(value)
            if _eligible(peer, now, exclude):
                _admit(peer, now)
                return peer
        return self._rr.pick(now, key, exclude)


class Hash(_WeightWalk):
    """``hash KEY`` (not consistent): Cache::Memcached's bucket choice.

    The hash is ``(crc32(KEY) >> 16) & 0x7fff``; each rehash adds
    ``(crc32(str(n) + KEY) >> 16) & 0x7fff``. Adding or removing a server remaps most
    keys; use :class:`ConsistentHash` when that matters. An empty or missing key falls
    back to round robin, as in nginx.
    """

    __slots__ = ()

    def pick(self, now: float, key: bytes | None, exclude: Collection[Peer]) -> Peer | None:
        """The key's peer; when it is unavailable, rehash, then round robin."""
        if not key or len(self._peers) < 2:
            return self._rr.pick(now, key, exclude)
        value = 0
        for n in range(HASH_TRIES):
            crc = zlib.crc32(key, _REHASH_PREFIX_CRC[n]) if n else zlib.crc32(key)
            value += (crc >> 16) & 0x7FFF
            peer = self._at(value)
            if _eligible(peer, now, exclude):
                _admit(peer, now)
                return peer
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

    __slots__ = ("_hashes", "_owners", "_peers", "_rr")

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = tuple(peers)
        self._rr = RoundRobin(self._peers)
        owners: dict[str, list[Peer]] = {}
        for peer in self._peers:
            owners.setdefault(peer.address, []).append(peer)
        groups = {address: tuple(group) for address, group in owners.items()}
        points: list[tuple[int, int, tuple[Peer, ...]]] = []
        for order, peer in enumerate(self._peers):
            base = _server_base_crc(peer.address)
            prev = 0
            for _ in range(peer.weight * POINTS_PER_WEIGHT):
                prev = zlib.crc32(prev.to_bytes(4, "little"), base)
                points.append((prev, order, groups[peer.address]))
        points.sort(key=lambda point: (point[0], point[1]))
        hashes: list[int] = []
        ring: list[tuple[Peer, ...]] = []
        for value, _, group in points:
            if hashes and hashes[-1] == value:
                continue
            hashes.append(value)
            ring.append(group)
        self._hashes = tuple(hashes)
        self._owners = tuple(ring)

    def pick(self, now: float, key: bytes | None, exclude: Collection[Peer]) -> Peer | None:
        """The key's peer on the ring, walking on past unavailable servers."""
        if not key or len(self._peers) < 2:
            return self._rr.pick(now, key, exclude)
        hashes, owners = self._hashes, self._owners
        count = len(hashes)
        index = bisect_left(hashes, zlib.crc32(key))
        for step in range(HASH_TRIES):
            group = owners[(index + step) % count]
            if len(group) == 1:
                peer = group[0]
                if _eligible(peer, now, exclude):
                    _recover_weight(peer)
                    _admit(peer, now)
                    return peer
                continue
            chosen = smooth_wrr(group, now, exclude)
            if chosen is not None:
                return chosen
        return self._rr.pick(now, key, exclude)


def _recover_weight(peer: Peer) -> None:
    """What smooth WRR over a one-peer group leaves behind: current weight unchanged,
    effective weight one step nearer its configured weight."""
    if peer.effective_weight < peer.weight:
        peer.effective_weight += 1


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


def make_policy(balance: Balance, peers: Sequence[Peer], *, consistent: bool = False) -> Policy:
    """The policy object for one tier of a group, precomputing what it needs (the
    weight walk, the ring) so a pick does no set-up work."""
    if consistent and balance != "hash":
        raise ValueError("consistent applies only to balance='hash'")
    if balance == "round_robin":
        return RoundRobin(peers)
    if balance == "least_conn":
        return LeastConn(peers)
    if balance == "ip_hash":
        return IpHash(peers)
    if balance == "hash":
        return ConsistentHash(peers) if consistent else Hash(peers)
    raise ValueError(f"unknown balance {balance!r}; expected one of {', '.join(BALANCES)}")
