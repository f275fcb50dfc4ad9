"""The runtime state of one upstream server: its connections, failures and round-robin weights.

Selection (:mod:`wsgate.proxy.balancer`) reads and steers this state, the group
(:mod:`wsgate.proxy.upstreams`) counts connections and failures on it; it lives apart from
both so that neither has to import the other for it. Pure: ``now`` is passed in.
"""

from __future__ import annotations

from wsgate.proxy.directives import ServerConfig


class ServerState:
    """Runtime state of one server: connections, failures, and its round-robin weights.

    The config's numbers are copied onto the state because a pick reads them for every
    server. ``down`` may be flipped at run time (an admin draining a server). States
    compare by identity, so two ``server`` lines with the same address stay two servers,
    and a retry can keep the ones it tried in its ``exclude`` set.
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
        gave the server its trial after the window passed."""
        self.accessed = 0.0
        """When the last failure happened."""
        self.current_weight = 0
        self.effective_weight = config.weight

    @property
    def backup(self) -> bool:
        """Whether the server is used only when no primary is available."""
        return self.config.backup

    def available(self, now: float) -> bool:
        """Whether a pick may choose this server at ``now``.

        Not down, below ``max_conns``, and not out for failures: a server that failed
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
        return (f"ServerState({self.address}, active={self.active}, fails={self.fails}, "
                f"cw={self.current_weight}, ew={self.effective_weight})")
