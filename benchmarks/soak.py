"""Soak: does ``wsgate proxy`` stay flat under an hour of mixed traffic?

Usage: python benchmarks/soak.py [--seconds 3600] [--interval 10] [--warmup SECONDS]
                                 [--tunnels 500] [--churn-rate 20] [--http-rate 10]
                                 [--workers 1] [--csv FILE] [--plot docs/soak.png]
                                 [--output docs/soak.md]
       python benchmarks/soak.py --seconds 30 --interval 5 --tunnels 40 ...   (what CI runs)

A leak shows only with time: a few bytes or one descriptor per connection is invisible in a
benchmark of seconds and fatal after a week. So this runs the kinds of traffic a proxy sees
for a long time, and watches the proxy's memory and descriptors rather than its speed.

Two upstream ports of one ``wsgate echo``; in front of them ``wsgate proxy -c FILE`` (one
worker by default, its status listener and a health check every 5 s on, so the master,
the workers and the monitor all run; access log to a temporary file, error log at info to
another). One asyncio process (uvloop) drives it:

- long-lived tunnels (``websockets``), each sending a small message every second or so and
  checking every echo, reopened if one fails;
- churn: WebSockets that open, exchange three messages (16 B, 1 KB, 8 KB) and close with
  1000, --churn-rate a second; a share of them (--abort-share) drop the TCP connection
  instead, as vanishing mobile clients do, because leaks hide on the error paths;
- plain HTTP GETs over raw keep-alive sockets (several requests a connection, some
  pipelined in pairs, the last with ``Connection: close``): the upstream answers them with
  a 400 (no Upgrade header), and each answer must be that status and body, as the upstream
  gives them directly;
- slow readers: tunnels with a small receive buffer that keep sending 16 KB messages but
  stop reading for --slow-pause seconds, then drain and check everything (the proxy must
  push back, not buffer: its RSS stays flat);
- slow senders: raw sockets that send the opening handshake in pieces and then every
  message byte by byte, in two fragments, answering the echo server's pings between frames.

Every --interval seconds it records, for the proxy's processes (found from /proc and the
status listener's /status): VmRSS and open descriptors per kind (master, workers, monitor),
their CPU, and the load's counters and errors; a CSV row (stdout, or --csv FILE) and a
progress line (stderr). At the end the load stops cleanly, and the proxy must give back its
descriptors and count no open WebSocket.

Exit status 1, with the reasons, when: any error; the descriptor floor (the least of three
samples) grew after the warm-up by more than --fd-slack; the RSS grew from the first sample
after the warm-up to the last by more than --rss-growth plus --rss-slack MiB; or the
descriptors were not given back after the load. Every process it starts is stopped at the
end, on an error or Ctrl+C too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import hashlib
import itertools
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import picows
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.version import version as websockets_version

import suite
from suite import say

PREFIX = "Server received from client: "  # wsgate echo's reply to a message
KINDS = ("master", "workers", "monitor")
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's handshake constant
PROCESS_LABELS = re.compile(r"^wsgate_process_resident_memory_bytes\{([^}]*)\}", re.MULTILINE)
ECHO_TIMEOUT = 10.0
"""An echo later than this is an error (the load is light: a healthy echo takes ms)."""

PROXY_CONF = """\
listen = ["127.0.0.1:{port}"]
worker_processes = {workers}
access_log = "{access_log}"
error_log = "{folder}/error.log info"
{status}
[upstream.websocket]
server = ["127.0.0.1:{up1}", "127.0.0.1:{up2}"]
{health}
[location."/"]
proxy_pass = "http://websocket"
proxy_read_timeout = "300s"
"""
HEALTH_CONF = """[upstream.websocket.health_check]
interval = "5s"
"""


# -- the processes ------------------------------------------------------------------------------

def logged(argv: list[str], log: Path) -> list[str]:
    """argv run with its output appended to log (suite.Service sends it to /dev/null): what
    a process says before it dies is the first thing to read after a failed soak."""
    return ["sh", "-c", f'exec "$@" >>{shlex.quote(str(log))} 2>&1', "sh", *argv]


def stop_proxy(proxy: suite.Service) -> list[str]:
    """SIGTERM to the master alone, as the systemd unit does (KillMode=mixed): it stops its
    workers itself. SIGKILL to whatever of its process group is left after 15 s (suite's
    Service.stop signals the whole group at once, which races the master's own stop).
    Returns what was odd about it."""
    odd: list[str] = []
    if proxy.proc is None:
        return odd
    group = proxy.proc.pid  # start_new_session: the master leads its own group
    if proxy.proc.poll() is None:
        proxy.proc.send_signal(signal.SIGTERM)
        try:
            proxy.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            odd.append("the master had not exited 15 s after SIGTERM")
    left = [pid for pid in group_members(group) if pid != group]
    if left:
        odd.append(f"processes {left} outlived the master")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proxy.proc.wait(timeout=5)
    return odd


def group_members(group: int) -> list[int]:
    """Live processes of a process group (field 5 of /proc/PID/stat)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def children(pid: int) -> list[int]:
    """Every child of pid, whichever of its threads forked it."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def vm_rss_kib(pid: int) -> int:
    return suite.rss_kib([pid])


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text: str = answer.read().decode()
        return text


def get_json(url: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(get_text(url))
    return result


# -- the load's bookkeeping ---------------------------------------------------------------------

@dataclass
class Tally:
    """What the load did and what went wrong, by kind; the first few errors of each kind are
    printed as they happen, so an hour-long run shows a problem when it starts."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        seen = self.examples.setdefault(kind, [])
        if len(seen) < 3:
            line = f"{time.monotonic() - self.t0:7.1f} s: {detail}"
            seen.append(line)
            say(f"  error {kind}: {line}")


def why(error: BaseException) -> str:
    """A failure in a few words: a close code, or the exception's type and text."""
    if isinstance(error, ConnectionClosed):
        return f"closed {error.rcvd.code if error.rcvd else 1006}"
    return f"{type(error).__name__}: {error}"[:160]


def text_payload(tag: str, size: int) -> str:
    return tag.ljust(size, "x")


@dataclass
class Options:
    url: str
    host: str
    port: int
    tunnels: int
    tunnel_period: float
    ramp: float
    churn_rate: float
    abort_share: float
    http_rate: float
    http_connections: int
    http_per_connection: int
    slow_readers: int
    slow_pause: float
    slow_senders: int
    byte_delay: float


class Load:
    """Every kind of client, sharing one Tally and one stop signal."""

    def __init__(self, options: Options, expected_http: tuple[int, bytes]) -> None:
        self.o = options
        self.expected_http = expected_http
        self.tally = Tally()
        self.stopping = asyncio.Event()
        self.open_tunnels = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.churning: set[asyncio.Task[None]] = set()
        self.slow_lag_max = 0
        """Most messages a slow reader had sent and not yet read back (backpressure's reach)."""

    async def pause(self, seconds: float) -> bool:
        """Sleep, or less if the load is stopping; say whether it is."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    def start(self) -> None:
        self.tally.t0 = time.monotonic()
        spawn = asyncio.create_task
        self.tasks += [spawn(self.tunnel(i, self.o.ramp * i / max(1, self.o.tunnels)))
                       for i in range(self.o.tunnels)]
        if self.o.churn_rate > 0:
            self.tasks.append(spawn(self.churner()))
        self.tasks += [spawn(self.http_client(i)) for i in range(self.o.http_connections)
                       if self.o.http_rate > 0]
        self.tasks += [spawn(self.slow_reader(i)) for i in range(self.o.slow_readers)]
        self.tasks += [spawn(self.slow_sender(i)) for i in range(self.o.slow_senders)]

    async def stop(self) -> None:
        """Every client ends as it would: tunnels close with 1000 after their last echo."""
        self.stopping.set()
        pending = self.tasks + list(self.churning)
        _done, late = await asyncio.wait(pending, timeout=30)
        for task in late:
            task.cancel()
            self.tally.error("stop", f"a client did not finish within 30 s: {task.get_name()}")
        await asyncio.gather(*pending, return_exceptions=True)

    async def close_cleanly(self, ws: ClientConnection, kind: str) -> None:
        await ws.close()
        received = ws.protocol.close_rcvd
        if received is None or received.code != 1000:
            code = received.code if received else "no Close frame"
            self.tally.error(f"{kind}_close", f"closing with 1000 got {code} back")

    # -- long-lived tunnels ---------------------------------------------------------------------

    async def tunnel(self, cid: int, delay: float) -> None:
        """A small message about every tunnel_period, each echo checked; reopened on error."""
        if await self.pause(delay):
            return
        seq = 0
        while not self.stopping.is_set():
            try:
                ws = await connect(self.o.url, open_timeout=10, close_timeout=5)
            except Exception as error:
                self.tally.error("tunnel_open", f"tunnel {cid}: {why(error)}")
                await self.pause(5)
                continue
            self.open_tunnels += 1
            try:
                while not await self.pause(self.o.tunnel_period * random.uniform(0.8, 1.2)):
                    message = text_payload(f"tunnel {cid} {seq} ", 48)
                    await asyncio.wait_for(ws.send(message), ECHO_TIMEOUT)
                    reply = await asyncio.wait_for(ws.recv(), ECHO_TIMEOUT)
                    seq += 1
                    if reply != PREFIX + message:
                        self.tally.error("tunnel_echo", f"tunnel {cid}: {str(reply)[:80]!r}")
                        break
                    self.tally.counts["messages"] += 1
                else:
                    await self.close_cleanly(ws, "tunnel")
                    return
            except Exception as error:
                kind = "tunnel_timeout" if isinstance(error, TimeoutError) else "tunnel_drop"
                self.tally.error(kind, f"tunnel {cid} message {seq}: {why(error)}")
            finally:
                self.open_tunnels -= 1
            ws.transport.abort()
            await self.pause(1)

    # -- churn ----------------------------------------------------------------------------------

    async def churner(self) -> None:
        """Starts churn_rate connections a second, however long each one takes."""
        period, due, number = 1.0 / self.o.churn_rate, time.monotonic(), 0
        while not await self.pause(due - time.monotonic()):
            due += period
            if len(self.churning) >= max(50, 10 * self.o.churn_rate):
                self.tally.error("churn_backlog", f"{len(self.churning)} still open")
                continue
            task = asyncio.create_task(self.churn_one(number))
            self.churning.add(task)
            task.add_done_callback(self.churning.discard)
            number += 1

    async def churn_one(self, number: int) -> None:
        try:
            ws = await connect(self.o.url, open_timeout=10, close_timeout=5, ping_interval=None)
        except Exception as error:
            self.tally.error("churn_open", f"churn {number}: {why(error)}")
            return
        try:
            for index, size in enumerate((16, 1000, 8000)):
                message = text_payload(f"churn {number} {index} ", size)
                await asyncio.wait_for(ws.send(message), ECHO_TIMEOUT)
                reply = await asyncio.wait_for(ws.recv(), ECHO_TIMEOUT)
                if reply != PREFIX + message:
                    self.tally.error("churn_echo", f"churn {number}: {str(reply)[:80]!r}")
                    return
                self.tally.counts["messages"] += 1
            if random.random() < self.o.abort_share:
                self.tally.counts["churn_aborted"] += 1
            else:
                await self.close_cleanly(ws, "churn")
            self.tally.counts["churned"] += 1
        except Exception as error:
            self.tally.error("churn_failed", f"churn {number}: {why(error)}")
        finally:
            ws.transport.abort()  # after a clean close, a no-op; otherwise, the abrupt end

    # -- plain HTTP -----------------------------------------------------------------------------

    async def http_client(self, index: int) -> None:
        """Keep-alive connections, reopened after http_per_connection requests or a failure."""
        period = self.o.http_connections / self.o.http_rate
        await self.pause(random.uniform(0, period))
        while not self.stopping.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.o.host, self.o.port), ECHO_TIMEOUT)
            except Exception as error:
                self.tally.error("http_connect", f"http {index}: {why(error)}")
                await self.pause(1)
                continue
            try:
                await self.http_connection(reader, writer, index, period)
            except Exception as error:
                kind = "http_timeout" if isinstance(error, TimeoutError) else "http_failed"
                self.tally.error(kind, f"http {index}: {why(error)}")
                await self.pause(1)
            finally:
                writer.transport.abort()

    async def http_connection(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter, index: int, period: float) -> None:
        """One connection's requests: one in ten pipelined in pairs, the last with
        Connection: close (the proxy must then close it)."""
        for request in range(self.o.http_per_connection):
            last = request == self.o.http_per_connection - 1
            pipelined = 2 if request % 10 == 5 and not last else 1
            head = (f"GET /soak/http/{index}/{request} HTTP/1.1\r\n"
                    f"Host: {self.o.host}:{self.o.port}\r\nUser-Agent: soak\r\n")
            plain = (head + "\r\n").encode()
            writer.write(plain * (pipelined - 1)
                         + ((head + "Connection: close\r\n\r\n").encode() if last else plain))
            for _ in range(pipelined):
                if not await self.http_answer(reader, index):
                    return
            if last:
                rest = await asyncio.wait_for(reader.read(1), ECHO_TIMEOUT)
                if rest:
                    self.tally.error("http_close", "an answer to Connection: close was "
                                     f"followed by {rest!r}, not the end")
            if await self.pause(period * pipelined):
                return

    async def http_answer(self, reader: asyncio.StreamReader, index: int) -> bool:
        status, body = await asyncio.wait_for(read_response(reader), ECHO_TIMEOUT)
        self.tally.counts["http"] += 1
        if (status, body) != self.expected_http:
            self.tally.error("http_status", f"http {index}: {status} {body[:60]!r}, expected "
                             f"{self.expected_http[0]} {self.expected_http[1][:60]!r}")
            return False
        return True

    # -- slow readers ---------------------------------------------------------------------------

    async def slow_reader(self, index: int) -> None:
        """One slow reader's sessions: reopened after a failure, as a client would."""
        while not self.stopping.is_set():
            try:
                await self.slow_session(index)
            except Exception as error:
                self.tally.error("slow_reader", f"slow reader {index}: {why(error)}")
                await self.pause(1)

    async def slow_session(self, index: int) -> None:
        """Sends 16 KB messages ten times a second, reads for slow_pause seconds, then stops
        reading for as long; every echo is checked once it is read, in order."""
        size, sent, received = 16 * 1024, 0, 0
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # push back sooner
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (self.o.host, self.o.port)), 10)
            # No pings of its own: a pong would wait behind the unread data and time out.
            ws = await connect(self.o.url, sock=sock, open_timeout=10, close_timeout=10,
                               ping_interval=None, max_queue=4)
        except BaseException:
            sock.close()
            raise
        reading = asyncio.Event()
        reading.set()

        def payload(seq: int) -> str:
            return text_payload(f"slow {index} {seq} ", size)

        async def send() -> None:
            nonlocal sent
            while not await self.pause(0.1):
                await ws.send(payload(sent))
                sent += 1
                self.slow_lag_max = max(self.slow_lag_max, sent - received)

        async def read() -> None:
            """Echoes in order; at the end, until every message sent is back."""
            nonlocal received
            progress = time.monotonic()
            while not (self.stopping.is_set() and received == sent):
                if not reading.is_set():
                    await reading.wait()
                    progress = time.monotonic()  # the pause was the reader's own doing
                try:  # websockets' recv() may be cancelled without losing a message
                    reply = await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    if received < sent and time.monotonic() - progress > ECHO_TIMEOUT:
                        raise TimeoutError(f"no echo for {ECHO_TIMEOUT:g} s") from None
                    continue
                if reply != PREFIX + payload(received):
                    raise ValueError(f"echo {received} was {str(reply)[:60]!r}")
                received += 1
                progress = time.monotonic()
                self.tally.counts["messages"] += 1

        async def switch() -> None:
            """Read, then not, slow_pause each; the readers out of step with each other."""
            stagger = self.o.slow_pause * index / max(1, self.o.slow_readers)
            while not await self.pause(self.o.slow_pause + stagger):
                stagger = 0.0
                reading.clear()
                self.tally.counts["slow_pauses"] += 1
                stopped = await self.pause(self.o.slow_pause)
                reading.set()
                if stopped:
                    return

        tasks = [asyncio.create_task(job()) for job in (send, read, switch)]
        try:
            await asyncio.gather(*tasks)
            await self.close_cleanly(ws, "slow")
        except Exception as error:
            raise RuntimeError(f"at {received} read of {sent} sent: {why(error)}") from error
        finally:
            for task in tasks:
                task.cancel()
            ws.transport.abort()

    # -- slow senders ---------------------------------------------------------------------------

    async def slow_sender(self, index: int) -> None:
        """Connections of ten messages each, everything sent in small pieces; reopened."""
        while not self.stopping.is_set():
            try:
                await SlowSender(self, index).run()
            except Exception as error:
                self.tally.error("slow_sender", f"slow sender {index}: {why(error)}")
                await self.pause(1)


class SlowSender:
    """A WebSocket client on a raw socket, because no library sends a frame byte by byte.
    Frames are written under a lock so that a pong never lands inside a data frame."""

    def __init__(self, load: Load, index: int) -> None:
        self.load, self.index = load, index
        self.lock = asyncio.Lock()
        self.messages: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None

    async def write(self, data: bytes, delay: float) -> None:
        """data at once, or with delay, one byte at a time (each its own TCP segment)."""
        assert self.writer is not None
        async with self.lock:
            if not delay:
                self.writer.write(data)
                await self.writer.drain()
                return
            for offset in range(len(data)):
                self.writer.write(data[offset:offset + 1])
                await self.writer.drain()
                await asyncio.sleep(delay)

    async def run(self) -> None:
        o = self.load.o
        reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(o.host, o.port), ECHO_TIMEOUT)
        frames: asyncio.Task[None] | None = None
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (f"GET /soak/slow/{self.index} HTTP/1.1\r\nHost: {o.host}:{o.port}\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
            step = len(request) // 8 + 1
            for offset in range(0, len(request), step):  # the head in 8 pieces over 1.6 s
                self.writer.write(request[offset:offset + step])
                await asyncio.sleep(0.2)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ECHO_TIMEOUT)
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest())
            if not head.startswith(b"HTTP/1.1 101") or accept not in head:
                raise ValueError(f"handshake answered {head[:60]!r}")
            frames = asyncio.create_task(self.read_frames(reader))
            for seq in range(10):
                text = text_payload(f"slow sender {self.index} {seq} ", 40).encode()
                await self.write(frame(0x1, text[:20], fin=False), o.byte_delay)
                await self.write(frame(0x0, text[20:]), o.byte_delay)
                opcode, reply = await asyncio.wait_for(self.messages.get(), ECHO_TIMEOUT)
                if (opcode, reply) != (0x1, PREFIX.encode() + text):
                    raise ValueError(f"echo {seq} was {opcode} {reply[:60]!r}")
                self.load.tally.counts["messages"] += 1
                if self.load.stopping.is_set():
                    break
            await self.write(frame(0x8, struct.pack("!H", 1000)), 0)
            opcode, reply = await asyncio.wait_for(self.messages.get(), ECHO_TIMEOUT)
            if opcode != 0x8 or reply[:2] != struct.pack("!H", 1000):
                self.load.tally.error("slow_close", f"Close 1000 answered {opcode} {reply!r}")
            await asyncio.wait_for(frames, ECHO_TIMEOUT)  # the connection's end
        finally:
            if frames is not None:
                frames.cancel()
            self.writer.transport.abort()

    async def read_frames(self, reader: asyncio.StreamReader) -> None:
        """Messages (fragments joined) and Close frames onto the queue; pings answered."""
        parts: list[bytes] = []
        opcode = 0
        while True:
            try:
                first, second = await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            data = await reader.readexactly(length)
            kind = first & 0x0F
            if kind == 0x9:
                pong = asyncio.create_task(self.write(frame(0xA, data), 0))
                pong.add_done_callback(lambda task: task.cancelled() or task.exception())
            elif kind == 0x8:
                await self.messages.put((kind, data))
            elif kind in (0x1, 0x2, 0x0):
                opcode = kind or opcode
                parts.append(data)
                if first & 0x80:
                    await self.messages.put((opcode, b"".join(parts)))
                    parts = []


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients); payloads under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + masked


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """An HTTP/1.1 answer's status and body (Content-Length, or up to the end)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    return status, await reader.read()


async def ask_directly(host: str, port: int) -> tuple[int, bytes]:
    """What the upstream itself answers a plain GET: what every proxied answer must be."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                     .encode())
        return await asyncio.wait_for(read_response(reader), ECHO_TIMEOUT)
    finally:
        writer.close()


# -- the samples --------------------------------------------------------------------------------

@dataclass
class Sample:
    t: float
    rss: dict[str, int]
    fds: dict[str, int]
    proxy_cpu: float
    upstream_rss: int
    load_rss: int
    load_cpu: float
    open_tunnels: int
    counts: dict[str, int]
    errors: int
    error_kinds: str

    def row(self) -> list[object]:
        return [f"{self.t:.1f}", *(self.rss[k] for k in (*KINDS, "total")),
                *(self.fds[k] for k in (*KINDS, "total")), f"{self.proxy_cpu:.1f}",
                self.upstream_rss, self.load_rss, f"{self.load_cpu:.1f}", self.open_tunnels,
                *(self.counts.get(k, 0) for k in ("messages", "churned", "http")),
                self.errors, self.error_kinds]


HEADER = ["t_s", *(f"rss_{k}_kib" for k in (*KINDS, "total")),
          *(f"fds_{k}" for k in (*KINDS, "total")), "proxy_cpu_pct", "upstream_rss_kib",
          "load_rss_kib", "load_cpu_pct", "tunnels_open", "messages", "churned",
          "http_requests", "errors", "error_kinds"]


class Sampler:
    """The proxy's processes by kind, from /proc and the status listener's list of workers;
    a worker or monitor that changes PID (a crash and respawn) is an error."""

    def __init__(self, proxy: suite.Service, upstream: suite.Service, status: int | None,
                 tally: Tally) -> None:
        self.proxy, self.upstream, self.status, self.tally = proxy, upstream, status, tally
        self.seen: dict[str, set[int]] = {}
        self.last_cpu: tuple[float, float, float] | None = None
        self.status_json: dict[str, Any] = {}

    async def processes(self) -> dict[str, list[int]]:
        """Master, monitor (the child /metrics gives the role "monitor": the monitor
        reports itself at once, where a new worker shows in /status only after its first
        counts) and workers (the other children). If /metrics fails, the monitor is the one
        it was, and the failure is an error."""
        assert self.proxy.proc is not None
        master = self.proxy.proc.pid
        kids = children(master)
        monitors = self.seen.get("monitor", set())
        if self.status is not None:
            try:
                text = await asyncio.to_thread(
                    get_text, f"http://127.0.0.1:{self.status}/metrics")
                monitors = {int(pid) for labels in PROCESS_LABELS.findall(text)
                            if 'role="monitor"' in labels
                            for pid in re.findall(r'pid="(\d+)"', labels)}
            except Exception as error:
                self.tally.error("status", f"/metrics: {why(error)}")
        found = {"master": [master], "workers": [pid for pid in kids if pid not in monitors],
                 "monitor": [pid for pid in kids if pid in monitors]}
        for kind, pids in found.items():
            before = self.seen.setdefault(kind, set(pids))
            if set(pids) != before and pids:
                self.tally.error("proxy_process", f"{kind} PIDs {sorted(before)} -> "
                                 f"{sorted(pids)} (a crash and respawn?)")
                self.seen[kind] = set(pids)
        return found

    async def read_status(self) -> None:
        """The proxy's own counts (/status), kept for the report."""
        if self.status is not None:
            try:
                self.status_json = await asyncio.to_thread(
                    get_json, f"http://127.0.0.1:{self.status}/status")
            except Exception as error:
                self.tally.error("status", f"/status: {why(error)}")

    async def ready(self, workers: int) -> None:
        """Wait (10 s at most) until /status lists every worker, from their first counts:
        the baseline is then a proxy that has settled."""
        deadline = time.monotonic() + 10
        while self.status is not None and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                listed = (await asyncio.to_thread(
                    get_json, f"http://127.0.0.1:{self.status}/status")).get("workers", [])
                if len(listed) >= workers:
                    return
            await asyncio.sleep(0.2)

    async def sample(self, t: float, load: Load | None) -> Sample:
        assert self.proxy.proc is not None
        if self.proxy.proc.poll() is not None:
            self.tally.error("proxy_exit", f"the master exited with {self.proxy.proc.returncode}")
        found = await self.processes()
        rss = {kind: sum(vm_rss_kib(pid) for pid in pids) for kind, pids in found.items()}
        fds = {kind: sum(fd_count(pid) for pid in pids) for kind, pids in found.items()}
        rss["total"], fds["total"] = sum(rss.values()), sum(fds.values())
        everyone = [pid for pids in found.values() for pid in pids]
        now = (time.monotonic(), suite.cpu_seconds(everyone), suite.cpu_seconds([os.getpid()]))
        proxy_cpu = load_cpu = 0.0
        if self.last_cpu is not None:
            elapsed = max(1e-6, now[0] - self.last_cpu[0])
            proxy_cpu = max(0.0, now[1] - self.last_cpu[1]) / elapsed * 100
            load_cpu = max(0.0, now[2] - self.last_cpu[2]) / elapsed * 100
        self.last_cpu = now
        errors = self.tally.errors
        return Sample(t=t, rss=rss, fds=fds, proxy_cpu=proxy_cpu,
                      upstream_rss=suite.rss_kib(self.upstream.pids()),
                      load_rss=vm_rss_kib(os.getpid()), load_cpu=load_cpu,
                      open_tunnels=load.open_tunnels if load else 0,
                      counts=dict(self.tally.counts), errors=sum(errors.values()),
                      error_kinds=" ".join(f"{k}={n}" for k, n in sorted(errors.items())))


# -- the run ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    baseline: Sample | None = None
    after: Sample | None = None
    settle_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    slow_lag_max: int = 0
    proxy_status: dict[str, Any] = field(default_factory=dict)
    error_log: Counter[str] = field(default_factory=Counter)
    error_log_lines: list[str] = field(default_factory=list)
    access_log_lines: int | None = None
    stop_seconds: float = 0.0
    stop_notes: list[str] = field(default_factory=list)


async def soak(args: argparse.Namespace, options: Options, proxy: suite.Service,
               upstream: suite.Service, status: int | None, out: IO[str]) -> Outcome:
    outcome = Outcome()
    expected = await ask_directly(options.host, upstream.port)
    say(f"the upstream answers a plain GET with {expected[0]} ({len(expected[1])} bytes): "
        "so must the proxy")
    load = Load(options, expected)
    sampler = Sampler(proxy, upstream, status, load.tally)
    writer = csv.writer(out)
    writer.writerow(HEADER)
    await sampler.ready(args.workers)
    outcome.baseline = await sampler.sample(0.0, None)
    outcome.samples.append(outcome.baseline)
    writer.writerow(outcome.baseline.row())
    load.start()
    t0 = load.tally.t0
    say(f"load running for {args.seconds:g} s: samples every {args.interval:g} s, "
        f"warm-up {args.warmup:g} s")
    step = 1
    while step * args.interval <= args.seconds + 1e-9:
        await asyncio.sleep(max(0.0, t0 + step * args.interval - time.monotonic()))
        sample = await sampler.sample(time.monotonic() - t0, load)
        outcome.samples.append(sample)
        writer.writerow(sample.row())
        out.flush()
        say(f"{sample.t:7.1f} s: RSS {sample.rss['total'] / 1024:.1f} MiB ("
            + ", ".join(f"{k} {sample.rss[k] / 1024:.1f}" for k in KINDS if sample.rss[k])
            + f"), fds {sample.fds['total']}, proxy CPU {sample.proxy_cpu:.0f}%, load CPU "
            f"{sample.load_cpu:.0f}%, messages {sample.counts.get('messages', 0):,}, churned "
            f"{sample.counts.get('churned', 0):,}, http {sample.counts.get('http', 0):,}, "
            f"errors {sample.errors}")
        if proxy.proc is not None and proxy.proc.poll() is not None:
            break
        step += 1
    say("stopping the load")
    await load.stop()
    # The proxy must give back what the load took: descriptors to the baseline, no open
    # WebSocket in its counts (the status listener refreshes them every second).
    assert outcome.baseline is not None
    began = time.monotonic()
    while True:
        await asyncio.sleep(0.5)
        after = await sampler.sample(time.monotonic() - t0, load)
        await sampler.read_status()
        open_now = sampler.status_json.get("tunnels", {}).get("open", 0)
        settled = (after.fds["total"] <= outcome.baseline.fds["total"] + args.fd_after_slack
                   and not open_now)
        if settled or time.monotonic() - began > 10:
            break
    outcome.after, outcome.settle_seconds = after, time.monotonic() - began
    writer.writerow(after.row())  # the last row: after the load, once settled
    outcome.proxy_status = sampler.status_json
    outcome.errors = load.tally.errors
    outcome.examples = load.tally.examples
    outcome.counts = load.tally.counts
    outcome.slow_lag_max = load.slow_lag_max
    return outcome


def read_logs(folder: Path, outcome: Outcome) -> None:
    """Lines of the proxy's error log by level (nginx's form: date time [level] pid: ...)."""
    with contextlib.suppress(OSError):
        for line in (folder / "error.log").read_text(errors="replace").splitlines():
            level = line.split("[", 1)[1].split("]", 1)[0] if "[" in line else "?"
            outcome.error_log[level] += 1
            if level not in ("info", "notice", "debug") and len(outcome.error_log_lines) < 10:
                outcome.error_log_lines.append(line)
    with contextlib.suppress(OSError), (folder / "access.log").open("rb") as log:
        outcome.access_log_lines = sum(1 for _ in log)


# -- the verdict, the plot and the report -------------------------------------------------------

@dataclass
class Verdict:
    steady: list[Sample]
    failures: list[str]
    notes: list[str]


def judge(outcome: Outcome, args: argparse.Namespace) -> Verdict:
    samples = outcome.samples[1:]  # not the baseline, taken before the load
    steady = [s for s in samples if s.t >= args.warmup] or samples[len(samples) // 2:]
    failures: list[str] = []
    notes: list[str] = []
    errors = sum(outcome.errors.values())
    if errors:
        failures.append(f"{errors} errors: " + ", ".join(
            f"{kind} {n}" for kind, n in outcome.errors.most_common()))
    if steady:
        first, last = steady[0].rss["total"], steady[-1].rss["total"]
        bound = first * (1 + args.rss_growth) + args.rss_slack * 1024
        if last > bound:
            failures.append(f"RSS grew after the warm-up: {first / 1024:.1f} -> "
                            f"{last / 1024:.1f} MiB (bound {bound / 1024:.1f} MiB)")
        head = min(s.fds["total"] for s in steady[:3])
        tail = min(s.fds["total"] for s in steady[-3:])
        if tail - head > args.fd_slack:
            failures.append(f"descriptors grew after the warm-up: floor {head} -> {tail} "
                            f"(slack {args.fd_slack})")
    else:
        failures.append("no sample after the warm-up")
    if outcome.after is not None and outcome.baseline is not None:
        before, after = outcome.baseline.fds["total"], outcome.after.fds["total"]
        if after > before + args.fd_after_slack:
            failures.append(f"descriptors not given back after the load: {before} before, "
                            f"{after} {outcome.settle_seconds:.0f} s after")
        still_open = outcome.proxy_status.get("tunnels", {}).get("open", 0)
        if still_open:
            failures.append(f"the proxy still counts {still_open} open WebSockets after "
                            "every client closed")
    serious = sum(n for level, n in outcome.error_log.items()
                  if level in ("error", "crit", "alert", "emerg"))
    if serious:
        failures.append(f"{serious} error-level lines in the proxy's error log")
    if outcome.error_log.get("warn"):
        notes.append(f"{outcome.error_log['warn']} warn lines in the proxy's error log")
    notes += outcome.stop_notes
    if outcome.stop_seconds > 3:
        notes.append(f"the proxy took {outcome.stop_seconds:.1f} s to stop on SIGTERM")
    return Verdict(steady, failures, notes)


def plot(outcome: Outcome, verdict: Verdict, args: argparse.Namespace, path: Path) -> None:
    """Four panels: RSS by process kind; RSS and descriptors as a change from the end of the
    warm-up (a leak of a few MiB or fds is invisible on an absolute scale); descriptors by
    kind; and the load (rates, CPU), with a red line where errors were counted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = outcome.samples
    minutes = args.seconds >= 600
    scale = 60 if minutes else 1
    xs = [s.t / scale for s in samples]
    figure, (rss, change, fds, load) = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    for kind in (*KINDS, "total"):
        width = 2 if kind == "total" else 1
        if any(s.rss[kind] for s in samples):
            rss.plot(xs, [s.rss[kind] / 1024 for s in samples], label=kind, linewidth=width)
        if any(s.fds[kind] for s in samples):
            fds.plot(xs, [s.fds[kind] for s in samples], label=kind, linewidth=width)
    rss.set_ylabel("proxy RSS (MiB)")
    rss.set_ylim(bottom=0)
    fds.set_ylabel("proxy open fds")
    fds.set_ylim(bottom=0)
    if verdict.steady:
        first = verdict.steady[0]
        steady_x = [s.t / scale for s in verdict.steady]
        rss_delta = [(s.rss["total"] - first.rss["total"]) / 1024 for s in verdict.steady]
        fd_delta = [s.fds["total"] - first.fds["total"] for s in verdict.steady]
        change.plot(steady_x, rss_delta, color="C3", linewidth=2,
                    label=f"RSS total, MiB (from {first.rss['total'] / 1024:.1f})")
        change.set_ylim(min(-1.0, *rss_delta) - 0.5, max(1.0, *rss_delta) + 0.5)
        change.set_ylabel("RSS change (MiB)")
        right = change.twinx()
        right.plot(steady_x, fd_delta, color="C0", label=f"fds total (from {first.fds['total']})")
        right.set_ylim(min(-10, *fd_delta) - 2, max(10, *fd_delta) + 2)
        right.set_ylabel("fds change")
        right.legend(fontsize=8, loc="upper right")
    change.set_title("after the warm-up: change from its end", fontsize=9)
    rates: dict[str, list[float]] = {"messages/s": [], "churned/s": [], "HTTP requests/s": []}
    for before, now in itertools.pairwise(samples):
        span = max(1e-6, now.t - before.t)
        for label, key in zip(rates, ("messages", "churned", "http"), strict=True):
            rates[label].append((now.counts.get(key, 0) - before.counts.get(key, 0)) / span)
    for label, values in rates.items():
        load.plot(xs[1:], values, label=label)
    load.set_yscale("log")
    load.set_ylabel("rate (log)")
    cpu = load.twinx()
    cpu.plot(xs, [s.proxy_cpu for s in samples], color="grey", linestyle="--",
             label="proxy CPU %")
    cpu.set_ylim(0, max(20.0, *(s.proxy_cpu for s in samples)) * 1.2)
    cpu.set_ylabel("proxy CPU %")
    cpu.legend(fontsize=8, loc="upper right")
    errors = sum(outcome.errors.values())
    for before, now in itertools.pairwise(samples):
        if now.errors > before.errors:
            for axis in (rss, change, fds, load):
                axis.axvline(now.t / scale, color="red", alpha=0.5)
    load.set_title(f"load; errors: {errors}" + (" (red lines)" if errors else ""), fontsize=9)
    load.set_xlabel("minutes" if minutes else "seconds")
    for axis in (rss, change, fds, load):
        axis.axvspan(0, args.warmup / scale, color="grey", alpha=0.15)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    rss.set_title(f"wsgate proxy soak: {duration(args.seconds)} (warm-up shaded)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def duration(seconds: float) -> str:
    return f"{seconds / 60:.3g} minutes" if seconds >= 120 else f"{seconds:.3g} seconds"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def render(outcome: Outcome, verdict: Verdict, args: argparse.Namespace, options: Options,
           command: str, plot_link: str | None) -> str:
    machine = suite.versions("nginx", None)[0]
    software = (f"- Python {platform.python_version()}, uvloop {uvloop.__version__}, picows "
                f"{picows.__version__} (the proxy and the echo upstream), websockets "
                f"{websockets_version} (the load, one process)")
    steady, last = verdict.steady, outcome.samples[-1]
    out = ["# Soak: wsgate proxy under mixed traffic", "",
           f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}`: "
           f"{duration(args.seconds)}, a sample every {args.interval:g} s, the first "
           f"{args.warmup:g} s counted as warm-up.", "", machine, software, "",
           "## Verdict", "",
           ("**pass**: " if not verdict.failures else "**FAIL**: ")
           + ("; ".join(verdict.failures) if verdict.failures else
              "no errors, RSS and descriptors flat after the warm-up, descriptors given back "
              "after the load."), ""]
    out += [f"Note: {note}." for note in verdict.notes] + ([""] if verdict.notes else [])
    out += ["## The load", "",
            f"- proxy: `wsgate proxy -c FILE`, {args.workers} worker"
            f"{'s' if args.workers != 1 else ''}, "
            + ("status listener and a health check every 5 s (so a monitor process), "
               if not args.no_status else "no status listener, ")
            + f"access log {'off' if args.access_log == 'off' else 'to a file'}, error log "
            "to a file at info; two upstream ports of one `wsgate echo --quiet`",
            f"- {options.tunnels} long-lived tunnels, a 48-byte message each every "
            f"{options.tunnel_period:g} s or so, every echo checked",
            f"- churn: {options.churn_rate:g} WebSockets a second, three messages (16 B, "
            f"1 KB, 8 KB) each, then Close 1000, or, for {options.abort_share:.0%} of them, "
            "the TCP connection dropped",
            f"- plain HTTP: {options.http_rate:g} GETs a second on {options.http_connections} "
            f"keep-alive connections, {options.http_per_connection} requests each (one in ten "
            "pipelined in pairs, the last with `Connection: close`); the expected answer is "
            "the upstream's own (400, no Upgrade header)",
            f"- {options.slow_readers} slow readers: 16 KB messages ten times a second, "
            f"reading {options.slow_pause:g} s then not reading {options.slow_pause:g} s, "
            "with a 16 KB receive buffer",
            f"- {options.slow_senders} slow senders (raw sockets): the handshake in 8 pieces "
            f"over 1.6 s, every message byte by byte ({options.byte_delay * 1000:g} ms apart) "
            "in two fragments, ten messages a connection", ""]
    out += ["## Memory and descriptors of the proxy", "",
            "| | before the load | first after warm-up | last | max after warm-up | "
            "after the load |", "|---|---:|---:|---:|---:|---:|"]
    base, after = outcome.baseline, outcome.after
    for kind in (*KINDS, "total"):
        if not any(s.rss[kind] for s in outcome.samples):
            continue
        out.append(f"| RSS {kind} (MiB) | {mib(base.rss[kind]) if base else '-'} | "
                   f"{mib(steady[0].rss[kind]) if steady else '-'} | {mib(last.rss[kind])} | "
                   f"{mib(max(s.rss[kind] for s in steady)) if steady else '-'} | "
                   f"{mib(after.rss[kind]) if after else '-'} |")
    for kind in (*KINDS, "total"):
        if not any(s.fds[kind] for s in outcome.samples):
            continue
        out.append(f"| fds {kind} | {base.fds[kind] if base else '-'} | "
                   f"{steady[0].fds[kind] if steady else '-'} | {last.fds[kind]} | "
                   f"{max(s.fds[kind] for s in steady) if steady else '-'} | "
                   f"{after.fds[kind] if after else '-'} |")
    if len(steady) >= 3 and steady[-1].t - steady[0].t >= 600:  # noise over less
        times = [s.t for s in steady]
        slope = statistics.linear_regression(times, [s.rss["total"] for s in steady]).slope
        out += ["", f"RSS trend after the warm-up (least squares): {slope * 3600 / 1024:+.2f} "
                "MiB an hour."]
    cpu = [s.proxy_cpu for s in steady] or [0.0]
    load_cpu = [s.load_cpu for s in steady] or [0.0]
    counts = outcome.counts
    out += ["", "## Totals", "", "| | |", "|---|---:|",
            f"| messages echoed and checked | {counts['messages']:,} |",
            f"| churned WebSockets (of them dropped without a Close) | {counts['churned']:,} "
            f"({counts['churn_aborted']:,}) |",
            f"| plain HTTP requests | {counts['http']:,} |",
            f"| slow readers' pauses (most messages in flight) | {counts['slow_pauses']:,} "
            f"({outcome.slow_lag_max}) |",
            f"| errors | {sum(outcome.errors.values())} |",
            f"| proxy CPU after warm-up, mean (max) | {statistics.fmean(cpu):.0f}% "
            f"({max(cpu):.0f}%) |",
            f"| load generator CPU, mean | {statistics.fmean(load_cpu):.0f}% |",
            f"| upstream RSS, first / last (MiB) | {mib(outcome.samples[0].upstream_rss)} / "
            f"{mib(last.upstream_rss)} |"]
    if outcome.access_log_lines is not None:
        out.append(f"| access log lines | {outcome.access_log_lines:,} |")
    out.append("| error log lines by level | " + (", ".join(
        f"{level} {n}" for level, n in outcome.error_log.most_common()) or "none") + " |")
    if outcome.errors:
        out += ["", "Errors, with the first examples of each kind:", ""]
        for kind, n in outcome.errors.most_common():
            out.append(f"- {kind}: {n}")
            out += [f"  - {line}" for line in outcome.examples.get(kind, [])]
    if outcome.error_log_lines:
        out += ["", "Error log lines above notice (first ten):", "", "```",
                *outcome.error_log_lines, "```"]
    status = outcome.proxy_status
    if status:
        closed: Counter[str] = Counter()
        for group in status.get("upstreams", []):
            for server in group.get("servers", []):
                closed.update(server.get("closed", {}))
        out += ["", "The proxy's own counts at the end (`/status`): "
                f"{status.get('tunnels', {}).get('closed', 0):,} WebSockets closed ("
                + (", ".join(f"{why} {n:,}" for why, n in closed.most_common()) or "none")
                + f"), {status.get('tunnels', {}).get('open', 0)} open; requests by status: "
                + (", ".join(f"{code} {n:,}" for code, n in sorted(
                    status.get("requests", {}).items())) or "none")
                + "; handshake rejections: "
                + (", ".join(f"{cause} {n}" for cause, n in status.get(
                    "rejections", {}).items()) or "none") + "."]
    if plot_link:
        out += ["", f"![RSS, descriptors and load over time]({plot_link})"]
    shown = outcome.samples[:: max(1, len(outcome.samples) // 12)]
    if outcome.samples[-1] not in shown:
        shown.append(outcome.samples[-1])
    out += ["", "<details><summary>Samples (some of them; every one is in the CSV)</summary>",
            "", "| t (s) | RSS MiB master / workers / monitor / total | fds total | "
            "proxy CPU | messages | churned | HTTP | errors |",
            "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for s in shown:
        out.append(f"| {s.t:.0f} | " + " / ".join(mib(s.rss[k]) for k in (*KINDS, "total"))
                   + f" | {s.fds['total']} | {s.proxy_cpu:.0f}% | "
                   f"{s.counts.get('messages', 0):,} | {s.counts.get('churned', 0):,} | "
                   f"{s.counts.get('http', 0):,} | {s.errors} |")
    out += ["", "</details>", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--seconds", type=float, default=3600.0, help="how long the load runs (default 3600)")
    add("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    add("--warmup", type=float, help="seconds not judged (default: a quarter of --seconds, "
        "at most 300)")
    add("--workers", type=int, default=1, help="proxy worker processes (default 1)")
    add("--no-status", action="store_true",
        help="no status listener nor health check (so no monitor process)")
    add("--access-log", choices=("file", "off"), default="file",
        help="the proxy's access log: a temporary file (default) or off")
    add("--tunnels", type=int, default=500, help="long-lived tunnels (default 500)")
    add("--tunnel-period", type=float, default=1.0,
        help="seconds between a tunnel's messages (default 1)")
    add("--churn-rate", type=float, default=20.0,
        help="short WebSockets opened a second (default 20)")
    add("--abort-share", type=float, default=0.1,
        help="share of churned WebSockets dropped without a Close (default 0.1)")
    add("--http-rate", type=float, default=10.0, help="plain HTTP requests a second (default 10)")
    add("--http-connections", type=int, default=2,
        help="keep-alive connections they share (default 2)")
    add("--http-per-connection", type=int, default=20,
        help="requests on a connection before Connection: close (default 20)")
    add("--slow-readers", type=int, default=4, help="tunnels that stop reading (default 4)")
    add("--slow-pause", type=float, default=10.0,
        help="seconds a slow reader reads, then does not (default 10; under the echo "
             "server's 20 s ping timeout)")
    add("--slow-senders", type=int, default=4,
        help="raw clients sending byte by byte (default 4)")
    add("--byte-delay", type=float, default=0.05,
        help="seconds between a slow sender's bytes (default 0.05)")
    add("--rss-growth", type=float, default=0.10,
        help="RSS growth allowed after the warm-up, as a share (default 0.10) ...")
    add("--rss-slack", type=float, default=4.0, help="... plus this many MiB (default 4)")
    add("--fd-slack", type=int, default=8,
        help="descriptor floor growth allowed after the warm-up (default 8)")
    add("--fd-after-slack", type=int, default=2,
        help="descriptors over the baseline allowed once the load has ended (default 2)")
    add("--csv", help="write the samples here (default: stdout)")
    add("--plot", help="write the PNG chart here, e.g. docs/soak.png")
    add("--output", help="write the markdown report here, e.g. docs/soak.md")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = min(300.0, args.seconds / 4)
    if min(args.seconds, args.interval, args.tunnel_period, args.slow_pause) <= 0:
        parser.error("--seconds, --interval, --tunnel-period and --slow-pause must be positive")
    if args.workers < 1 or args.http_connections < 1 or args.http_per_connection < 1:
        parser.error("--workers, --http-connections and --http-per-connection must be >= 1")
    command = "python benchmarks/soak.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    folder = Path(tempfile.mkdtemp(prefix="wsgate-soak-"))
    up1, up2, port = suite.free_port(), suite.free_port(), suite.free_port()
    status = None if args.no_status else suite.free_port()
    (folder / "wsgate.toml").write_text(PROXY_CONF.format(
        port=port, workers=args.workers, folder=folder, up1=up1, up2=up2,
        access_log=folder / "access.log" if args.access_log == "file" else "off",
        status="" if status is None else f'status_listen = "127.0.0.1:{status}"',
        health="" if status is None else HEALTH_CONF))
    upstream = suite.Service("wsgate echo", logged(
        [*suite.WSGATE, "echo", "--quiet", "--port", str(up1), "--port", str(up2)],
        folder / "echo.log"), up1)
    proxy = suite.Service("wsgate proxy", logged(
        [*suite.WSGATE, "proxy", "-c", str(folder / "wsgate.toml")], folder / "proxy.log"),
        port)
    options = Options(
        url=f"ws://127.0.0.1:{port}/soak", host="127.0.0.1", port=port, tunnels=args.tunnels,
        tunnel_period=args.tunnel_period, ramp=min(10.0, args.warmup / 2),
        churn_rate=args.churn_rate, abort_share=args.abort_share, http_rate=args.http_rate,
        http_connections=args.http_connections, http_per_connection=args.http_per_connection,
        slow_readers=args.slow_readers, slow_pause=args.slow_pause,
        slow_senders=args.slow_senders, byte_delay=args.byte_delay)
    out: IO[str] = open(args.csv, "w", newline="") if args.csv else sys.stdout  # noqa: SIM115
    outcome: Outcome | None = None
    say(f"configuration and logs in {folder}")
    try:
        upstream.start()
        proxy.start()
        say(f"proxy on {port} (master {proxy.proc.pid if proxy.proc else '?'}), upstreams "
            f"{up1} and {up2}")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            outcome = runner.run(soak(args, options, proxy, upstream, status, out))
    except KeyboardInterrupt:
        say(f"interrupted: stopping everything (the proxy's files are in {folder})")
        raise SystemExit(130) from None
    finally:
        began = time.monotonic()
        stop_notes = stop_proxy(proxy)
        stop_seconds = time.monotonic() - began
        with contextlib.suppress(Exception):
            upstream.stop()
        if args.csv:
            out.close()
    assert outcome is not None
    outcome.stop_seconds, outcome.stop_notes = stop_seconds, stop_notes
    read_logs(folder, outcome)
    verdict = judge(outcome, args)
    if args.plot:
        plot(outcome, verdict, args, Path(args.plot))
        say(f"wrote {args.plot}")
    if args.output:
        output = Path(args.output)
        link = None
        if args.plot:
            link = os.path.relpath(Path(args.plot).resolve(), output.resolve().parent)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render(outcome, verdict, args, options, command, link))
        say(f"wrote {args.output}")
    steady = verdict.steady
    if steady:
        say(f"summary: RSS after warm-up {mib(steady[0].rss['total'])} -> "
            f"{mib(steady[-1].rss['total'])} MiB (max {mib(max(s.rss['total'] for s in steady))}"
            f"), fds {steady[0].fds['total']} -> {steady[-1].fds['total']}, fds before / after "
            f"the load {outcome.baseline.fds['total'] if outcome.baseline else '?'} / "
            f"{outcome.after.fds['total'] if outcome.after else '?'}, messages "
            f"{outcome.counts['messages']:,}, churned {outcome.counts['churned']:,}, http "
            f"{outcome.counts['http']:,}, errors {sum(outcome.errors.values())}")
    for note in verdict.notes:
        say(f"note: {note}")
    if verdict.failures:
        for failure in verdict.failures:
            say(f"FAIL: {failure}")
        say(f"the proxy's files are kept in {folder}")
        raise SystemExit(1)
    say("pass")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
