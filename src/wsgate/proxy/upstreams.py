"""Upstream groups: nginx's ``upstream`` block at run time.

An :class:`UpstreamGroup` decides which tier (primaries, then backups) to ask for a
server, counts connections for ``max_conns`` and ``least_conn``, and keeps nginx's passive
health accounting: ``max_fails`` failures take a server out for ``fail_timeout``, after
which it gets one trial. The rules for choosing within a tier live in
:mod:`wsgate.proxy.balancer`, the per-server state in :mod:`wsgate.proxy.servers`, the
``server`` lines in :mod:`wsgate.proxy.directives`. All of it is pure: callers pass
``now`` (``time.monotonic()`` in the proxy), so the rules are tested without sleeping.

A proxied connection goes::

    server = group.pick(now, key, exclude=tried)
    group.acquire(server)        # at once: max_conns and least_conn count from here
    ...connect and proxy...
    group.release(server)
    group.report_success(server, now)  # or report_failure(server, now), then pick again
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from wsgate.proxy.balancer import Policy, make_policy
from wsgate.proxy.directives import BALANCES, Balance, ServerConfig
from wsgate.proxy.servers import ServerState


class UpstreamGroup:
    """nginx's ``upstream`` block: primaries, backups, one balancing method.

    A group with exactly one server and no backups is nginx's "single" case: its
    failures are not counted, so it is never taken out (there is nowhere else to go),
    though ``down`` and ``max_conns`` still apply. Backups, unlike in nginx, may be
    used with every method, including the hash ones (see :meth:`pick`).
    """

    __slots__ = ("_backup", "_primary", "_single", "backup", "balance", "consistent",
                 "name", "primary", "servers")

    def __init__(self, name: str, configs: Sequence[ServerConfig],
                 balance: Balance = "round_robin", consistent: bool = False) -> None:
        if balance not in BALANCES:
            raise ValueError(f"unknown balance {balance!r}; expected one of "
                             f"{', '.join(BALANCES)}")
        self.name = name
        self.balance = balance
        self.consistent = consistent
        self.servers: tuple[ServerState, ...] = tuple(ServerState(c) for c in configs)
        """Every server, primaries and backups, in configuration order."""
        self.primary = tuple(server for server in self.servers if not server.backup)
        self.backup = tuple(server for server in self.servers if server.backup)
        if not self.primary:
            raise ValueError(f"no primary servers in upstream {name!r}")
        self._single = len(self.primary) == 1 and not self.backup
        self._primary: Policy = make_policy(balance, self.primary, consistent=consistent)
        self._backup: Policy | None = (
            make_policy(balance, self.backup, consistent=consistent) if self.backup else None
        )

    def pick(self, now: float, key: bytes | None = None,
             exclude: Collection[ServerState] = ()) -> ServerState | None:
        """The server for a new connection, or None ("no live upstreams": answer 502).

        ``key``: for ``ip_hash`` the client's packed address (4 or 16 bytes from
        ``socket.inet_pton`` or :func:`wsgate.proxy.balancer.ip_hash_key`; None for a
        client without one); for ``hash`` the evaluated key as bytes (None or empty
        falls back to round robin, as nginx does); ignored otherwise. ``exclude``: the
        servers this request already tried. Backups are asked, with the same method,
        only when no primary is eligible.

        Picking does not count a connection; call :meth:`acquire` straight away. When
        nothing is eligible every server's fail count is reset, nginx's "quick recovery",
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
        server = self._primary.pick(now, key, exclude)
        if server is None and self._backup is not None:
            server = self._backup.pick(now, key, exclude)
        if server is None:
            self._quick_recovery(exclude)
        return server

    def _quick_recovery(self, exclude: Collection[ServerState]) -> None:
        if exclude and all(server.down or server in exclude for server in self.servers):
            return
        for server in self.servers:
            server.fails = 0

    def acquire(self, server: ServerState) -> None:
        """Count a connection to ``server`` (for ``max_conns`` and ``least_conn``)."""
        server.active += 1

    def release(self, server: ServerState) -> None:
        """Uncount a connection to ``server``; more releases than acquires is a bug."""
        if server.active <= 0:
            raise ValueError(f"release without acquire: {server.address}")
        server.active -= 1

    def report_failure(self, server: ServerState, now: float) -> None:
        """A connect error or bad response from ``server`` (what proxy_next_upstream counts).

        The failure starts a new fail_timeout window, and costs the server
        ``weight // max_fails`` of effective weight, which round robin gives back one
        unit per pick, so a flapping server gets less traffic while it recovers.
        """
        if self._single:
            return
        server.fails += 1
        server.accessed = now
        server.checked = now
        if server.max_fails:
            cut = server.weight // server.max_fails
            server.effective_weight = max(0, server.effective_weight - cut)

    def report_success(self, server: ServerState, now: float) -> None:
        """A good exchange with ``server``.

        As in nginx, this clears the fail count only when the server was picked after its
        fail_timeout window (accessed < checked): failures inside one window keep
        adding up even between successes. ``now`` is taken for symmetry with
        :meth:`report_failure`; nginx's rule does not need it.
        """
        if server.accessed < server.checked:
            server.fails = 0
