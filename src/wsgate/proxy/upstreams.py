"""Upstream servers and groups: configuration, runtime state and passive health.

An :class:`UpstreamGroup` is nginx's ``upstream`` block. Selection itself lives in
:mod:`wsgate.proxy.balancer`; this module decides which tier (primaries, then backups)
to ask, counts connections for ``max_conns`` and ``least_conn``, and keeps nginx's
passive health accounting: ``max_fails`` failures take a server out for
``fail_timeout``, after which it gets one trial. All of it is pure: callers pass ``now``
(``time.monotonic()`` in the proxy), so the rules are tested without sleeping.

A proxied connection goes::

    peer = group.pick(now, key, exclude=tried)
    group.acquire(peer)          # at once: max_conns and least_conn count from here
    ...connect and proxy...
    group.release(peer)
    group.report_success(peer, now)  # or report_failure(peer, now), then pick again
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from wsgate.proxy.balancer import BALANCES, Balance, Policy, make_policy


@dataclass(frozen=True)
class ServerConfig:
    """One ``server`` line of an upstream block, with nginx's defaults.

    ``max_fails=0`` turns failure accounting off; ``max_conns=0`` means unlimited;
    ``host`` is a name or an IP address without brackets.
    """

    host: str
    port: int
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False
    max_conns: int = 0

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("["):
            raise ValueError(f"server host must be a name or a bare IP address: {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"server port out of range: {self.port}")
        if self.weight < 1:
            raise ValueError(f"server weight must be at least 1: {self.weight}")
        if self.max_fails < 0:
            raise ValueError(f"server max_fails must not be negative: {self.max_fails}")
        if self.fail_timeout < 0:
            raise ValueError(f"server fail_timeout must not be negative: {self.fail_timeout}")
        if self.max_conns < 0:
            raise ValueError(f"server max_conns must not be negative: {self.max_conns}")

    @property
    def address(self) -> str:
        """``host:port``, with an IPv6 address in brackets; also the consistent-hash
        ring's server name, so it must not change between processes."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


class Peer:
    """Runtime state of one server: connections, failures, and its round-robin weights.

    The config's numbers are copied onto the peer because a pick reads them for every
    server. ``down`` may be flipped at run time (an admin draining a server). Peers
    compare by identity, so they can sit in the ``exclude`` set of a retry.
    """

    __slots__ = (
        "accessed",
        "active",
        "address",
        "checked",
        "config",
        "current_weight",
        "down",
        "effective_weight",
        "fail_timeout",
        "fails",
        "max_conns",
        "max_fails",
        "weight",
    )

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.address = config.address
        self.weight = config.weight
        self.max_fails = config.max_fails
        self.fail_timeout = config.fail_timeout
        self.max_conns = config.max_conns
        self.down = config.down
        self.active = 0
        self.fails = 0
        self.checked = 0.0
        """Start of the current fail_timeout window: the last failure, or the pick that
        gave the peer its trial after the window passed."""
        self.accessed = 0.0
        """When the last failure happened."""
        self.current_weight = 0
        self.effective_weight = config.weight

    @property
    def backup(self) -> bool:
        """Whether the server is used only when no primary is available."""
        return self.config.backup

    def available(self, now: float) -> bool:
        """Whether a pick may choose this peer at ``now``.

        Not down, below ``max_conns``, and not out for failures: a peer that failed
        ``max_fails`` times is out until ``fail_timeout`` has passed since ``checked``.
        """
        if self.down:
            return False
        if self.max_conns and self.active >= self.max_conns:
            return False
        return not (
            self.max_fails
            and self.fails >= self.max_fails
            and now - self.checked <= self.fail_timeout
        )

    def __repr__(self) -> str:
        return (f"Peer({self.address}, active={self.active}, fails={self.fails}, "
                f"cw={self.current_weight}, ew={self.effective_weight})")


class UpstreamGroup:
    """nginx's ``upstream`` block: primaries, backups, one balancing method.

    A group with exactly one server and no backups is nginx's "single" case: its
    failures are not counted, so it is never taken out (there is nowhere else to go),
    though ``down`` and ``max_conns`` still apply. Backups, unlike in nginx, may be
    used with every method, including the hash ones (see :meth:`pick`).
    """

    __slots__ = ("_backup", "_primary", "_single", "backup", "balance", "consistent",
                 "name", "peers", "primary")

    def __init__(self, name: str, servers: Sequence[ServerConfig],
                 balance: Balance = "round_robin", consistent: bool = False) -> None:
        if balance not in BALANCES:
            raise ValueError(f"unknown balance {balance!r}; expected one of "
                             f"{', '.join(BALANCES)}")
        self.name = name
        self.balance = balance
        self.consistent = consistent
        self.peers: tuple[Peer, ...] = tuple(Peer(server) for server in servers)
        self.primary: tuple[Peer, ...] = tuple(p for p in self.peers if not p.backup)
        self.backup: tuple[Peer, ...] = tuple(p for p in self.peers if p.backup)
        if not self.primary:
            raise ValueError(f"no primary servers in upstream {name!r}")
        self._single = len(self.primary) == 1 and not self.backup
        self._primary: Policy = make_policy(balance, self.primary, consistent=consistent)
        self._backup: Policy | None = (
            make_policy(balance, self.backup, consistent=consistent) if self.backup else None
        )

    def pick(self, now: float, key: bytes | None = None,
             exclude: Collection[Peer] = ()) -> Peer | None:
        """The peer for a new connection, or None ("no live upstreams": answer 502).

        ``key``: for ``ip_hash`` the client's packed address (4 or 16 bytes from
        ``socket.inet_pton`` or :func:`wsgate.proxy.balancer.ip_hash_key`; None for a
        client without one); for ``hash`` the evaluated key as bytes (None or empty
        falls back to round robin, as nginx does); ignored otherwise. ``exclude``: the
        peers this request already tried. Backups are asked, with the same method,
        only when no primary is eligible.

        Picking does not count a connection; call :meth:`acquire` straight away. When
        nothing is eligible every peer's fail count is reset, nginx's "quick recovery",
        so the next request tries again instead of failing until fail_timeout; not
        when the request has merely tried every server, as nginx's tries limit would
        never ask then.
        """
        if self._single:
            only = self.primary[0]
            if (only.down or (only.max_conns and only.active >= only.max_conns)
                    or (exclude and only in exclude)):
                return None
            return only
        peer = self._primary.pick(now, key, exclude)
        if peer is None and self._backup is not None:
            peer = self._backup.pick(now, key, exclude)
        if peer is None:
            self._quick_recovery(exclude)
        return peer

    def _quick_recovery(self, exclude: Collection[Peer]) -> None:
        if exclude and all(peer.down or peer in exclude for peer in self.peers):
            return
        for peer in self.peers:
            peer.fails = 0

    def acquire(self, peer: Peer) -> None:
        """Count a connection to ``peer`` (for ``max_conns`` and ``least_conn``)."""
        peer.active += 1

    def release(self, peer: Peer) -> None:
        """Uncount a connection to ``peer``; more releases than acquires is a bug."""
        if peer.active <= 0:
            raise ValueError(f"release without acquire: {peer.address}")
        peer.active -= 1

    def report_failure(self, peer: Peer, now: float) -> None:
        """A connect error or bad response from ``peer`` (what proxy_next_upstream counts).

        The failure starts a new fail_timeout window, and costs the peer
        ``weight // max_fails`` of effective weight, which round robin gives back one
        unit per pick, so a flapping server gets less traffic while it recovers.
        """
        if self._single:
            return
        peer.fails += 1
        peer.accessed = now
        peer.checked = now
        if peer.max_fails:
            peer.effective_weight = max(0, peer.effective_weight - peer.weight // peer.max_fails)

    def report_success(self, peer: Peer, now: float) -> None:
        """A good exchange with ``peer``.

        As in nginx, this clears the fail count only when the peer was picked after its
        fail_timeout window (accessed < checked): failures inside one window keep
        adding up even between successes. ``now`` is taken for symmetry with
        :meth:`report_failure`; nginx's rule does not need it.
        """
        if peer.accessed < peer.checked:
            peer.fails = 0
