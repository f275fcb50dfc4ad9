"""The lightest possible load for echo_bench.py: C connections, one message in flight each.

Prints one JSON line: {"messages": N, "seconds": T, "errors": E}. ``wsgate bench`` is the
load generator users get; this one skips what makes it useful (round-trip times, checking
each reply against its own message, progress) because on a 2-core machine the generator
shares the cores with the server it measures: with ``wsgate bench`` driving, wsgate echo
measures about 1.3x Node ws instead of 1.7x, the difference being the generator's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class Pinger(WSListener):  # type: ignore[misc]
    def __init__(self, payload: bytes, expected: bytes, counts: list[int]) -> None:
        self.payload = payload
        self.expected = expected
        self.counts = counts

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, self.payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            if frame.get_payload_as_bytes() == self.expected:
                self.counts[0] += 1
            else:
                self.counts[1] += 1
            transport.send(WSMsgType.TEXT, self.payload)


async def _load(url: str, connections: int, size: int, seconds: float, warmup: float,
                prefix: bytes) -> tuple[int, int, float]:
    payload = b"x" * size
    counts = [0, 0]
    transports = []
    for _ in range(connections):
        transport, _listener = await ws_connect(
            lambda: Pinger(payload, prefix + payload, counts), url, max_frame_size=1 << 24
        )
        transports.append(transport)
    await asyncio.sleep(warmup)
    start_counts, start = counts[:], time.perf_counter()
    await asyncio.sleep(seconds)
    done, elapsed = counts[:], time.perf_counter() - start
    for transport in transports:
        transport.disconnect()
    return done[0] - start_counts[0], done[1] - start_counts[1], elapsed


def _worker(args: tuple[str, int, int, float, float, bytes]) -> tuple[int, int, float]:
    return uvloop.run(_load(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--prefix", default="Server received from client: ")
    args = parser.parse_args()
    per = max(1, args.connections // args.processes)
    job = (args.url, per, args.size, args.seconds, args.warmup, args.prefix.encode())
    with multiprocessing.Pool(args.processes) as pool:
        results = pool.map(_worker, [job] * args.processes)
    messages = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    seconds = max(r[2] for r in results)
    print(json.dumps({"messages": messages, "seconds": seconds, "errors": errors,
                      "rate": messages / seconds}))


if __name__ == "__main__":
    main()
