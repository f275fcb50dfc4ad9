"""Giving memory back after a burst (:mod:`wsgate.proxy.memory`): when to trim, and that the
real malloc_trim is found and harmless."""

from __future__ import annotations

import subprocess
import sys

from wsgate.proxy.memory import BURST, Trimmer, _malloc_trim


class Recorder:
    """A malloc_trim that only notes its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, pad: int) -> int:
        self.calls.append(pad)
        return 1


def test_a_burst_that_has_fallen_away_is_trimmed_once() -> None:
    trim = Recorder()
    trimmer = Trimmer(trim)
    calls = trim.calls
    for open_now in (10, BURST * 2, BURST * 2, BURST + 1):  # still over half the peak
        assert not trimmer.observe(open_now)
    assert not trimmer.observe(BURST // 2)  # under half, but still falling: wait
    assert not trimmer.observe(10)
    assert trimmer.observe(10)  # settled
    for open_now in (10, 0, 0, 5):  # the same burst, gone further: no second trim
        assert not trimmer.observe(open_now)
    assert calls == [0]
    for open_now in (BURST * 3, BURST):  # a new burst, falling
        assert not trimmer.observe(open_now)
    assert trimmer.observe(BURST)
    assert calls == [0, 0] and trimmer.trims == 2


def test_a_burst_gone_altogether_is_trimmed_at_once_and_once_more() -> None:
    """Nothing is open: no second to wait for the fall to stop; the next tick trims again
    (what the last tunnels held went only when their transports were lost), then no more."""
    trim = Recorder()
    trimmer = Trimmer(trim)
    assert not trimmer.observe(BURST * 9)
    assert trimmer.observe(0)
    assert trimmer.observe(0)
    for open_now in (0, 0, 5, 0):
        assert not trimmer.observe(open_now)
    assert trim.calls == [0, 0]


def test_no_burst_no_trim() -> None:
    trim = Recorder()
    trimmer = Trimmer(trim)
    calls = trim.calls
    for open_now in (0, BURST - 1, 0, BURST - 1, 0):
        assert not trimmer.observe(open_now)
    assert calls == []


def test_the_c_library_s_malloc_trim_is_found_and_runs() -> None:
    trim = _malloc_trim()
    assert trim is not None  # glibc, as on Debian (CI) and this machine
    assert trim(0) in (0, 1)


def test_a_worker_collector_leaves_startup_objects_alone() -> None:
    """In a process of its own (the setting is process-wide): after tune_collector the
    objects alive at start are frozen, and the thresholds are CPython's own."""
    code = ("import gc; before = gc.get_threshold(); from wsgate.proxy import memory; "
            "memory.tune_collector(); print(gc.get_freeze_count(), gc.get_threshold() == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert int(out[0]) > 1_000 and out[1] == "True"
