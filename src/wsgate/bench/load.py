"""The load itself: one process's share of the connections, on picows and uvloop.

Each process opens its connections, meets the others at a barrier (so every process
measures the same window), runs its mode, and puts a :class:`WorkerResult` on the queue.
Per message the work is what checking needs: the reply must be the expected prefix plus
exactly the payload sent (each payload carries its sequence number, so a reply to the
wrong message is caught), and its round trip goes into an array.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from wsgate import runtime
from wsgate.bench.plan import Plan
from wsgate.bench.stats import TICK, WorkerResult
from wsgate.client.tls import build_context


class Meter:
    """Counts shared by every connection of one process."""

    def __init__(self) -> None:
        self.result = WorkerResult()
        self.answered = 0
        self.recording = False
        self.sending = True
        self.holding = False
        self.prefix: bytes | None = None

    def error(self, why: str) -> None:
        self.result.errors += 1
        if not self.result.first_error:
            self.result.first_error = why


class Echoer(WSListener):
    """One connection of the throughput mode: ``depth`` messages always in flight."""

    def __init__(self, meter: Meter, plan: Plan) -> None:
        self.meter = meter
        self.size = plan.size
        self.depth = plan.depth
        self.kind = WSMsgType.BINARY if plan.binary else WSMsgType.TEXT
        self.tail = b"x" * max(0, plan.size - 16)
        self.inflight: deque[tuple[int, bytes]] = deque()
        self.seq = 0
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.meter.sending:
            self.meter.error("connection closed during the run")

    def start(self) -> None:
        for _ in range(self.depth):
            self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.seq += 1
        marker = b"%016x" % self.seq  # the sequence number: a reply to another message differs
        payload = marker + self.tail if self.size >= 16 else marker[16 - self.size:]
        self.inflight.append((time.perf_counter_ns(), payload))
        self.transport.send(self.kind, payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = time.perf_counter_ns()
        kind = frame.msg_type
        if kind is not WSMsgType.TEXT and kind is not WSMsgType.BINARY:
            if kind is WSMsgType.CLOSE:
                transport.disconnect()
            return
        meter = self.meter
        if not self.inflight:
            meter.error("a message nobody asked for")
            return
        sent, payload = self.inflight.popleft()
        reply = frame.get_payload_as_bytes()
        prefix = meter.prefix
        if prefix is None:
            if reply.endswith(payload) and frame.fin:
                meter.prefix = reply[: len(reply) - len(payload)]
            else:
                meter.error(f"reply is not an echo: {reply[:60]!r}")
        elif (not frame.fin or len(reply) != len(prefix) + len(payload)
              or not reply.endswith(payload) or not reply.startswith(prefix)):
            meter.error(f"wrong reply: {reply[:60]!r}")
        meter.answered += 1
        if meter.recording:
            meter.result.rtt_us.append((now - sent) // 1000)
        if meter.sending:
            self.send()


class Holder(WSListener):
    """A connection of the storm and idle modes: it only notices being dropped."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.meter.holding:
            self.meter.result.dropped += 1


async def _open(plan: Plan, meter: Meter, count: int,
                factory: Callable[[], WSListener]) -> list[tuple[WSTransport, Any]]:
    """Open ``count`` connections, ``concurrency`` at a time; failures are counted."""
    limit = asyncio.Semaphore(plan.concurrency)
    opened: list[tuple[WSTransport, Any]] = []
    # One context for the process; no session is resumed, so every handshake is a full one.
    context = build_context(ca=plan.ca, cert=None, key=None, passphrase=None, check=plan.check)

    async def one() -> None:
        async with limit:
            started = time.perf_counter_ns()
            try:
                pair = await ws_connect(factory, plan.url, ssl_context=context,
                                        max_frame_size=1 << 26,
                                        websocket_handshake_timeout=plan.connect_timeout)
            except Exception as error:
                meter.result.failed += 1
                if not meter.result.first_error:
                    meter.result.first_error = f"{type(error).__name__}: {error}"
                return
            if meter.recording:
                meter.result.rtt_us.append((time.perf_counter_ns() - started) // 1000)
            meter.result.opened += 1
            meter.answered += 1
            opened.append(pair)

    await asyncio.gather(*(one() for _ in range(count)))
    return opened


def _close(pairs: list[tuple[WSTransport, Any]]) -> None:
    for transport, _listener in pairs:
        with contextlib.suppress(Exception):
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()


async def _ticker(meter: Meter, progress: Any, index: int) -> None:
    """Publish progress and cut the timeline into slices."""
    last = 0
    while True:
        await asyncio.sleep(TICK)
        progress[index] = meter.answered
        if meter.recording:
            meter.result.timeline.append(meter.answered - last)
        last = meter.answered


async def _meet(barrier: Barrier, meter: Meter, progress: Any, index: int) -> None:
    """Wait for every process to be ready, with this one's count published first."""
    progress[index] = meter.answered
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait)


async def _throughput(plan: Plan, meter: Meter, barrier: Barrier, progress: Any,
                      index: int) -> None:
    clients = await _open(plan, meter, plan.connections, lambda: Echoer(meter, plan))
    if meter.result.failed:
        barrier.abort()
        return
    await _meet(barrier, meter, progress, index)
    meter.answered = 0
    for _transport, listener in clients:
        listener.start()
    await asyncio.sleep(plan.warmup)
    counted = meter.answered
    meter.recording = True
    started = time.perf_counter()
    wall = time.time()
    await asyncio.sleep(plan.seconds)
    meter.recording = False
    meter.result.seconds = time.perf_counter() - started
    meter.result.window = (wall, time.time())
    meter.result.messages = meter.answered - counted
    meter.sending = False
    _close(clients)


async def _storm(plan: Plan, meter: Meter, barrier: Barrier, progress: Any,
                 index: int) -> None:
    await _meet(barrier, meter, progress, index)
    meter.recording = True
    started = time.perf_counter()
    wall = time.time()
    pairs = await _open(plan, meter, plan.connections, lambda: Holder(meter))
    meter.result.seconds = time.perf_counter() - started
    meter.result.window = (wall, time.time())
    meter.recording = False
    _close(pairs)


async def _idle(plan: Plan, meter: Meter, barrier: Barrier, progress: Any,
                index: int) -> None:
    pairs = await _open(plan, meter, plan.connections, lambda: Holder(meter))
    meter.holding = True
    await _meet(barrier, meter, progress, index)
    started = time.perf_counter()
    await asyncio.sleep(plan.hold)
    meter.result.seconds = time.perf_counter() - started
    meter.holding = False
    _close(pairs)


_RUNS: dict[str, Callable[[Plan, Meter, Barrier, Any, int], Awaitable[None]]] = {
    "throughput": _throughput,
    "storm": _storm,
    "idle": _idle,
}


async def _work(plan: Plan, barrier: Barrier, progress: Any, index: int) -> WorkerResult:
    meter = Meter()
    ticker = asyncio.ensure_future(_ticker(meter, progress, index))
    try:
        await _RUNS[plan.mode](plan, meter, barrier, progress, index)
        await asyncio.sleep(0.05)  # let the Close frames leave
    finally:
        ticker.cancel()
    return meter.result


def worker(plan: Plan, barrier: Barrier, progress: Any, index: int,
           results: Queue[WorkerResult]) -> None:
    """A load process's entry point (its parent forked it)."""
    try:
        result = runtime.run(_work(plan, barrier, progress, index))
    except Exception as error:
        barrier.abort()
        result = WorkerResult(failed=1, first_error=f"{type(error).__name__}: {error}")
    results.put(result)
