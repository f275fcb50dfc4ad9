"""Operating ``wsgate proxy`` as nginx is operated, end to end with real processes: the pid
file, ``wsgate proxy -s reload|reopen|quit|stop``, systemd's sd_notify, signals that come
while the command is still starting, and a worker killed under load.

Every process goes through the ``wsgate``/``spawn`` fixtures (killed at teardown), every
port is 0, and every wait has a deadline. Run these in a loop when touching the master.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Proc, Spawn, run_wsgate
from ops_helpers import (
    Background,
    Stream,
    Streams,
    Upstream,
    children,
    start,
    wait_for,
    who,
    write_config,
)
from test_signals import catches


def no_pid() -> int:
    """A PID no process has: none reaches pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def signal_cli(config: Path, name: str) -> None:
    """``wsgate proxy -c FILE -s NAME`` (run from the tests' folder, not the file's): silent,
    status 0."""
    result = run_wsgate("proxy", "-c", str(config), "-s", name)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result


def exits_cleanly(proc: Proc, timeout: float = 15) -> str:
    """Exit 0, no traceback, no process left in its group; its stderr."""
    _out, err = proc.drain(timeout=timeout)
    assert proc.popen.returncode == 0, err
    assert "Traceback" not in err, err
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.popen.pid, 0)
    return err


# -- 1. the pid file -------------------------------------------------------------------------


def test_pid_file_is_written_relative_to_the_config_and_removed_at_exit(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    folder, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    (folder / "run").mkdir(parents=True)
    elsewhere.mkdir()
    pid_path = folder / "run" / "wsgate.pid"
    pid_path.write_text(f"{no_pid()}\n")  # stale: left by a process long gone
    config = folder / "wsgate.toml"
    write_config(config, [a.address], extra='pid = "run/wsgate.pid"\nworker_processes = 2')
    proxy = wsgate(["proxy", "-c", str(config)], cwd=elsewhere)
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)", stream="out").group(1))
    # Written before "Listening on", replacing the stale one, relative to the file's folder.
    assert pid_path.read_text() == f"{proxy.popen.pid}\n"
    assert sorted(p.name for p in (folder / "run").iterdir()) == ["wsgate.pid"]
    assert list(elsewhere.iterdir()) == []
    assert who(port) == "A"
    proxy.signal(signal.SIGTERM)
    exits_cleanly(proxy)
    assert not pid_path.exists()
    assert list((folder / "run").iterdir()) == []


def test_a_pid_file_taken_over_by_another_master_is_left_at_exit(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='pid = "wsgate.pid"')
    proxy, _port = start(wsgate, config)
    pid_path = tmp_path / "wsgate.pid"
    assert pid_path.read_text() == f"{proxy.popen.pid}\n"
    other = f"{no_pid()}\n"
    pid_path.write_text(other)
    proxy.signal(signal.SIGTERM)
    exits_cleanly(proxy)
    assert pid_path.read_text() == other


# -- 2. wsgate proxy -s ----------------------------------------------------------------------


def test_s_reload_sends_new_connections_to_the_new_upstream_and_keeps_tunnels(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='pid = "wsgate.pid"\nworker_processes = 2')
    proxy, port = start(wsgate, config)
    assert who(port) == "A"
    streams = Streams(bg, port, 10)
    streams.open()
    time.sleep(0.3)
    # B first, A kept as a backup: a server removed outright would drain its tunnels.
    write_config(config, [b.address, f"{a.address} backup"],
                 extra='pid = "wsgate.pid"\nworker_processes = 2')
    signal_cli(config, "reload")
    wait_for(lambda: who(port) == "B", what="new connections to go to B")
    assert {who(port) for _ in range(6)} == {"B"}
    time.sleep(0.3)
    assert streams.dropped() == []
    streams.finish()
    assert streams.dropped() == []
    assert [s.first_disorder for s in streams.streams if s.disorder] == []
    assert streams.total("echoed") == streams.total("sent") > 10 * 10
    assert all(stream.servers == {"A"} for stream in streams.streams)
    assert proxy.popen.poll() is None
    assert proxy.popen.pid == int((tmp_path / "wsgate.pid").read_text())


def test_s_reopen_reopens_a_renamed_access_log(wsgate: Spawn, tmp_path: Path,
                                               bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    log, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    write_config(config, [a.address], extra='pid = "wsgate.pid"\naccess_log = "access.log"\n'
                                             "worker_processes = 2")
    _proxy, port = start(wsgate, config)
    assert who(port) == "A"
    wait_for(lambda: log.exists() and log.read_text().count(" 101 ") == 1,
             what="the first line")
    log.rename(rotated)
    signal_cli(config, "reopen")
    wait_for(log.exists, what="a new access.log")
    for _ in range(4):  # whichever worker takes them, each writes to the new file
        assert who(port) == "A"
    wait_for(lambda: log.read_text().count(" 101 ") == 4, what="4 lines in the new file")
    assert rotated.read_text().count(" 101 ") == 1


def test_s_quit_ends_tunnels_with_1001_after_worker_shutdown_timeout(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='pid = "wsgate.pid"\n'
                                             'worker_shutdown_timeout = "1s"')
    proxy, port = start(wsgate, config)
    streams = Streams(bg, port, 3)
    streams.open()
    time.sleep(0.2)
    began = time.monotonic()
    signal_cli(config, "quit")
    time.sleep(0.4)
    echoed = streams.total("echoed")
    time.sleep(0.2)
    assert streams.dropped() == []
    assert streams.total("echoed") > echoed  # still served while draining
    wait_for(lambda: len(streams.dropped()) == 3, what="every client to see the close")
    assert {stream.closed for stream in streams.streams} == {1001}
    assert 0.8 < min(stream.closed_at for stream in streams.streams) - began < 4
    assert streams.total("disorder") == 0
    exits_cleanly(proxy)
    assert not (tmp_path / "wsgate.pid").exists()


def test_s_stop_ends_tunnels_with_1001_at_once(wsgate: Spawn, tmp_path: Path,
                                               bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='pid = "wsgate.pid"\n'
                                             'worker_shutdown_timeout = "20s"')
    proxy, port = start(wsgate, config)
    streams = Streams(bg, port, 3)
    streams.open()
    time.sleep(0.2)
    began = time.monotonic()
    signal_cli(config, "stop")
    wait_for(lambda: len(streams.dropped()) == 3, what="every client to see the close")
    assert {stream.closed for stream in streams.streams} == {1001}
    assert max(stream.closed_at for stream in streams.streams) - began < 3
    exits_cleanly(proxy)
    assert time.monotonic() - began < 5
    assert not (tmp_path / "wsgate.pid").exists()


# -- 3. sd_notify ----------------------------------------------------------------------------


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket bound in tmp_path, as systemd's NOTIFY_SOCKET is."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        yield sock


def under_systemd(wsgate: Spawn, sock: socket.socket, config: Path) -> Proc:
    env = {**os.environ, "NOTIFY_SOCKET": sock.getsockname()}
    return wsgate(["proxy", "-c", str(config)], env=env)


def note(sock: socket.socket, timeout: float = 10) -> list[str]:
    """The next datagram's fields."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode().split("\n")
    except TimeoutError:
        raise AssertionError(f"no notification within {timeout}s") from None


def nothing_more(sock: socket.socket, wait: float = 0.3) -> list[str]:
    """What else comes within ``wait`` (nothing, it should be)."""
    sock.settimeout(wait)
    try:
        return sock.recv(4096).decode().split("\n")
    except TimeoutError:
        return []


def reloading(fields: list[str], before: int, after: int) -> None:
    """RELOADING=1 with a MONOTONIC_USEC taken between ``before`` and ``after``."""
    assert len(fields) == 2 and fields[0] == "RELOADING=1", fields
    name, _, value = fields[1].partition("=")
    assert name == "MONOTONIC_USEC", fields
    assert before <= int(value) <= after, (before, value, after)


def usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_sd_notify_ready_reloading_and_stopping(wsgate: Spawn, tmp_path: Path,
                                                bg: Background,
                                                systemd: socket.socket) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra="worker_processes = 2")
    proxy = under_systemd(wsgate, systemd, config)
    assert note(systemd) == ["READY=1"]  # the first word, and only once listening
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)", stream="out").group(1))
    assert who(port) == "A"
    assert nothing_more(systemd) == []

    write_config(config, [b.address], extra="worker_processes = 2")
    before = usec()
    proxy.signal(signal.SIGHUP)
    reloading(note(systemd), before, usec())
    assert note(systemd) == ["READY=1"]
    # READY=1 comes once every worker serves the new file: each next connection is B's.
    assert [who(port) for _ in range(6)] == ["B"] * 6
    assert nothing_more(systemd) == []

    proxy.signal(signal.SIGTERM)
    assert note(systemd) == ["STOPPING=1"]
    exits_cleanly(proxy)
    assert nothing_more(systemd) == []


def test_sd_notify_ready_after_an_invalid_reload(wsgate: Spawn, tmp_path: Path,
                                                 bg: Background,
                                                 systemd: socket.socket) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address])
    proxy = under_systemd(wsgate, systemd, config)
    assert note(systemd) == ["READY=1"]
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)", stream="out").group(1))
    write_config(config, [f"{a.address} weight=two"])
    before = usec()
    proxy.signal(signal.SIGHUP)
    reloading(note(systemd), before, usec())
    assert note(systemd) == ["READY=1"]  # not left "reloading" for ever
    proxy.expect("reload failed", stream="err")
    assert who(port) == "A"
    # One that fails later, at binding (the port is taken), says READY=1 too.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        write_config(config, [a.address], listen=f'"127.0.0.1:{port}", "127.0.0.1:{busy}"')
        proxy.signal(signal.SIGHUP)
        assert note(systemd)[0] == "RELOADING=1"
        assert note(systemd) == ["READY=1"]
        proxy.expect("reload failed", stream="err")
    assert who(port) == "A"
    assert proxy.popen.poll() is None
    assert nothing_more(systemd) == []


def test_sd_notify_ready_again_after_an_in_place_upgrade(wsgate: Spawn, tmp_path: Path,
                                                         bg: Background,
                                                         systemd: socket.socket) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='worker_processes = 2\npid = "wsgate.pid"')
    proxy = under_systemd(wsgate, systemd, config)
    master = proxy.popen.pid
    assert note(systemd) == ["READY=1"]
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)", stream="out").group(1))
    old = set(children(master))
    assert len(old) == 2
    proxy.signal(signal.SIGUSR2)
    seen = [note(systemd, timeout=40)]  # the dry run of the new code comes first
    while seen[-1] != ["READY=1"]:
        seen.append(note(systemd, timeout=10))
    assert all("STOPPING=1" not in fields for fields in seen), seen
    assert proxy.popen.poll() is None  # the same process: the PID systemd knows
    assert int((tmp_path / "wsgate.pid").read_text()) == master
    wait_for(lambda: not old & set(children(master)), what="the old workers to exit")
    wait_for(lambda: len(children(master)) == 2, what="2 new workers")
    assert who(port) == "A"
    assert nothing_more(systemd) == []
    proxy.signal(signal.SIGTERM)
    assert note(systemd) == ["STOPPING=1"]
    exits_cleanly(proxy)


# -- 4. signals while the command is starting ------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                                 signal.SIGQUIT], ids=["HUP", "USR1", "USR2", "QUIT"])
def test_a_signal_during_start_up_is_acted_on_not_died_of(
        wsgate: Spawn, tmp_path: Path, bg: Background, sig: int, delay: float) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra="worker_processes = 2")
    proxy = wsgate(["proxy", "-c", str(config)])
    pid = proxy.popen.pid
    deadline = time.monotonic() + 10
    while not catches(pid, sig):
        assert proxy.popen.poll() is None, proxy.drain()
        assert time.monotonic() < deadline, f"the command never caught {sig}"
        time.sleep(0.001)
    time.sleep(delay)
    os.kill(pid, sig)
    if sig == signal.SIGQUIT:
        err = exits_cleanly(proxy)
        assert err == ""
        return
    port = int(proxy.expect(r"Listening on http://[^ ]+:(\d+)", stream="out",
                            timeout=30).group(1))
    assert who(port) == "A"
    if sig == signal.SIGUSR2:  # upgraded in place: wait until the new workers serve
        wait_for(lambda: len(children(pid)) == 2 and who(port) == "A", timeout=30,
                 what="the upgrade to finish")
    time.sleep(0.2)
    assert proxy.popen.poll() is None, proxy.drain()
    assert who(port) == "A"
    proxy.signal(signal.SIGTERM)
    err = exits_cleanly(proxy)
    assert "Traceback" not in err and "[alert]" not in err and "[crit]" not in err, err


# -- 5. a worker killed ----------------------------------------------------------------------


def _tcp_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the proxy's end of the connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if (int(local.split(":")[1], 16) == server_port
                and int(remote.split(":")[1], 16) == client_port):
            return inode
    return None


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(int(match.group(1)))
    return inodes


def owners(port: int, streams: list[Stream], workers: list[int]) -> dict[int, list[Stream]]:
    """Which worker holds the client side of each stream's tunnel."""
    held = {pid: _socket_inodes(pid) for pid in workers}
    found: dict[int, list[Stream]] = {pid: [] for pid in workers}
    for stream in streams:
        assert stream.ws is not None
        inode = _tcp_inode(port, stream.ws.local_address[1])
        owner = [pid for pid in workers if inode in held[pid]]
        assert len(owner) == 1, (stream.index, inode, owner)
        found[owner[0]].append(stream)
    return found


def test_a_killed_worker_is_replaced_and_the_other_keeps_its_tunnels(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra="worker_processes = 2")
    proxy, port = start(wsgate, config)
    started = time.monotonic()  # the workers were forked before "Listening on"
    master = proxy.popen.pid
    workers = sorted(children(master))
    assert len(workers) == 2
    batches: list[Streams] = []
    held: dict[int, list[Stream]] = {pid: [] for pid in workers}
    while not all(held.values()) and len(batches) < 6:  # both workers must hold some
        batch = Streams(bg, port, 8)
        batch.open()
        batches.append(batch)
        for pid, streams in owners(port, batch.streams, workers).items():
            held[pid] += streams
    assert all(held.values()), {pid: len(streams) for pid, streams in held.items()}
    victim, survivor = workers
    doomed, kept = held[victim], held[survivor]
    # A worker that dies within 2 s of its fork is taken as broken: the whole proxy stops
    # ("exited on signal 9 at start-up; stopping"), by design. Wait past that.
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))
    os.kill(victim, signal.SIGKILL)
    match = proxy.expect(rf"\[alert\] {master}: worker process {victim} exited on signal 9; "
                         r"started worker process (\d+) in its place", stream="err")
    new = int(match.group(1))
    assert sorted(children(master)) == sorted([survivor, new])
    wait_for(lambda: all(stream.closed is not None for stream in doomed),
             what="the dead worker's tunnels to end")
    for _ in range(6):  # whichever worker accepts, the new one included
        assert who(port) == "A"
    echoed = [stream.echoed for stream in kept]
    time.sleep(0.3)
    assert all(stream.echoed > before for stream, before in zip(kept, echoed, strict=True))
    for batch in batches:
        batch.finish(settle=0.5)
    dropped = [id(stream) for batch in batches for stream in batch.dropped()]
    assert sorted(dropped) == sorted(id(stream) for stream in doomed)
    for stream in kept:
        assert stream.closed is None and stream.disorder == 0, stream
        assert stream.echoed == stream.sent > 0, stream
    assert proxy.popen.poll() is None
    proxy.signal(signal.SIGTERM)
    exits_cleanly(proxy)
