"""The flow-control helpers of :mod:`wsgate.proxy.flow` on a fake transport: who may read,
and when a stuck writer is given up on. Timers run for a few hundredths of a second."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fakes import FakeTransport
from wsgate.proxy.flow import ReadGate, Stall

QUEUE, UPSTREAM = 1, 2


# -- ReadGate ------------------------------------------------------------------------------------

def test_gate_pauses_on_the_first_reason_and_resumes_after_the_last() -> None:
    transport = FakeTransport()
    gate = ReadGate(transport)
    gate.hold(QUEUE)
    assert not transport.reading
    gate.hold(UPSTREAM)
    gate.release(QUEUE)
    assert not transport.reading  # the upstream still takes nothing
    assert gate.holds(UPSTREAM) and not gate.holds(QUEUE)
    gate.release(UPSTREAM)
    assert transport.reading
    assert gate.reasons == 0


def test_gate_resumes_whichever_reason_goes_last() -> None:
    transport = FakeTransport()
    gate = ReadGate(transport)
    gate.hold(QUEUE)
    gate.hold(UPSTREAM)
    gate.release(UPSTREAM)
    assert not transport.reading
    gate.release(QUEUE)
    assert transport.reading


def test_holding_a_reason_twice_is_holding_it_once() -> None:
    transport = FakeTransport()
    gate = ReadGate(transport)
    gate.hold(QUEUE)
    gate.hold(QUEUE)
    gate.release(QUEUE)
    assert transport.reading


def test_releasing_an_unheld_reason_does_nothing() -> None:
    transport = FakeTransport()
    gate = ReadGate(transport)
    gate.hold(QUEUE)
    gate.release(UPSTREAM)
    assert not transport.reading
    assert gate.holds(QUEUE)


def test_releasing_on_an_open_gate_does_not_touch_the_transport() -> None:
    """A transport paused by someone else (a tunnel handing over) is not resumed by a
    gate that holds nothing."""
    transport = FakeTransport()
    transport.pause_reading()
    ReadGate(transport).release(QUEUE)
    assert not transport.reading


def test_gate_does_not_resume_a_closing_transport() -> None:
    async def main() -> None:
        transport = FakeTransport()
        gate = ReadGate(transport)
        gate.hold(QUEUE)
        transport.close()
        gate.release(QUEUE)
        assert not transport.reading
        assert gate.reasons == 0

    asyncio.run(main())


# -- Stall ---------------------------------------------------------------------------------------

async def fired_within(fired: list[float], limit: float = 1.0) -> None:
    """Wait until the stall fired: a bound far above its timeout, so a slow machine never
    makes this fail; the assertions say how early it fired."""
    deadline = asyncio.get_running_loop().time() + limit
    while not fired and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert fired, "the stall never fired"


def recorder(fired: list[float]) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    return lambda: fired.append(loop.time())


EARLY = 0.002
"""call_later may run up to the clock's resolution early; this is well above it."""


def test_stall_fires_after_the_timeout_with_a_writer_stuck() -> None:
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0.02)
        expire = recorder(fired)
        start = asyncio.get_running_loop().time()
        stall.begin(expire)
        await fired_within(fired)
        assert fired[0] - start >= 0.02 - EARLY
        assert stall.count == 1  # the writer is still stuck; the owner decides what ends
        await asyncio.sleep(0.03)
        assert len(fired) == 1  # once

    asyncio.run(main())


def test_stall_timer_is_armed_once_for_several_writers() -> None:
    """A second stuck writer does not push the deadline back."""
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0.1)
        expire = recorder(fired)
        stall.begin(expire)
        await asyncio.sleep(0.05)
        second = asyncio.get_running_loop().time()
        stall.begin(expire)
        await fired_within(fired)
        assert fired[0] < second + 0.1

    asyncio.run(main())


def test_stall_timer_is_cancelled_when_no_writer_is_left() -> None:
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0.02)
        expire = recorder(fired)
        stall.begin(expire)
        stall.begin(expire)
        stall.end()
        await asyncio.sleep(0)
        stall.end()
        assert stall.count == 0
        await asyncio.sleep(0.05)
        assert fired == []

    asyncio.run(main())


def test_stall_timer_still_fires_while_one_of_two_writers_is_stuck() -> None:
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0.02)
        expire = recorder(fired)
        stall.begin(expire)
        stall.begin(expire)
        stall.end()
        await fired_within(fired)
        assert stall.count == 1

    asyncio.run(main())


def test_stall_rearms_for_a_new_stuck_writer_after_recovering() -> None:
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0.02)
        expire = recorder(fired)
        stall.begin(expire)
        stall.end()
        start = asyncio.get_running_loop().time()
        stall.begin(expire)
        await fired_within(fired)
        assert fired[0] - start >= 0.02 - EARLY

    asyncio.run(main())


def test_stall_with_timeout_zero_never_fires() -> None:
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0)
        expire = recorder(fired)
        stall.begin(expire)
        await asyncio.sleep(0.05)
        assert fired == []
        assert stall.count == 1

    asyncio.run(main())


def test_stall_end_without_begin_is_harmless() -> None:
    """A transport that was paused before this count began resumes: it must not make the
    count negative, or a later stuck writer would never arm the timer."""
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0.02)
        expire = recorder(fired)
        stall.end()
        assert stall.count == 0
        stall.begin(expire)
        await fired_within(fired)

    asyncio.run(main())


def test_stall_timeout_set_after_creation_applies_to_the_next_begin() -> None:
    """The client connection learns send_timeout from the route, after creating its Stall."""
    async def main() -> None:
        fired: list[float] = []
        stall = Stall(0.0)
        expire = recorder(fired)
        stall.timeout = 0.02
        stall.begin(expire)
        await fired_within(fired)

    asyncio.run(main())
