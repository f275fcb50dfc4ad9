"""What active health checks know about one upstream server, and when it flips. Pure.

A server's state changes only after a run of like outcomes (NGINX Plus's ``fails`` and
``passes``), so one lost probe does not take a server out of selection and one lucky probe
does not bring a failing one back. The clock is the caller's: :meth:`ServerHealth.record`
is given the time, so the thresholds can be tested without sleeping.
:mod:`wsgate.proxy.probes` does the probing.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsgate.proxy.directives import HealthCheck


@dataclass(slots=True)
class ServerHealth:
    """The health of one server of one group, as its probes found it.

    A server starts healthy (NGINX Plus without ``mandatory``): a proxy that has just
    started or reloaded keeps serving through servers it has not probed yet, rather than
    refusing every client until the first probes come back.
    """

    healthy: bool = True
    fails_in_row: int = 0
    """Failed probes since the last good one."""
    passes_in_row: int = 0
    """Good probes since the last failed one."""
    detail: str = ""
    """The last probe's outcome in a few words ("ok", "connection refused", "status 503");
    empty before the first."""
    checked: float | None = None
    """Wall-clock time (``time.time()``) of the last probe; None before the first."""
    probes: int = 0
    """Probes recorded, in all."""
    failures: int = 0
    """Failed probes recorded, in all."""

    def record(self, ok: bool, detail: str, check: HealthCheck, when: float) -> bool:
        """Count one probe's outcome at ``when``; True if that flipped :attr:`healthy`.

        ``check.fails`` failures in a row turn a healthy server unhealthy and
        ``check.passes`` successes in a row bring an unhealthy one back; an outcome
        breaks the other kind's run.
        """
        self.probes += 1
        self.detail = detail
        self.checked = when
        if ok:
            self.passes_in_row += 1
            self.fails_in_row = 0
            if not self.healthy and self.passes_in_row >= check.passes:
                self.healthy = True
                return True
        else:
            self.failures += 1
            self.fails_in_row += 1
            self.passes_in_row = 0
            if self.healthy and self.fails_in_row >= check.fails:
                self.healthy = False
                return True
        return False
