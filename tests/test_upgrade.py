"""SIGUSR2 upgrades ``wsgate proxy`` in place: the code installed now runs under the same
PID, plain tunnels move to the new workers with nothing lost, no connection attempt fails,
and no old process remains; a broken install changes nothing; a TLS tunnel stays in its
old worker until ``worker_shutdown_timeout``, then gets Close 1001.

The proxy runs from a copy of the package (PYTHONPATH), which a test edits as
``pip install -U`` would, so the repository's own files are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import trustme

import wsgate
from conftest import Proc, Spawn
from ops_helpers import (
    Background,
    Streams,
    Upstream,
    children,
    wait_for,
    who,
    write_config,
)
from proxy_helpers import closed_port

NEW_LINE = "upgraded to the new code: "



@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A copy of the package, importable through PYTHONPATH: the "installed" code."""
    root = tmp_path / "site"
    shutil.copytree(Path(wsgate.__file__).parent, root / "wsgate",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def start_from(wsgate_: Spawn, installed: Path, config: Path) -> tuple[Proc, int]:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = wsgate_(["proxy", "-c", str(config)], env=env)
    port = int(proc.expect(r"Listening on https?://[^ ]+:(\d+)").group(1))
    return proc, port


def edit(installed: Path, module: str, old: str, new: str) -> None:
    path = installed / "wsgate" / module
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))




class Knocker:
    """New connections, one after another, in a thread: every one must be answered."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tries = 0
        self.failures: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            self.tries += 1
            try:
                assert who(self.port) == "A"
            except Exception as error:
                self.failures.append(repr(error))

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def test_upgrade_moves_tunnels_to_new_code_under_the_same_pid(
        wsgate: Spawn, tmp_path: Path, bg: Background, installed: Path) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra='worker_processes = 2\nerror_log = "stderr info"')
    proxy, port = start_from(wsgate, installed, config)
    master = proxy.popen.pid
    streams = Streams(bg, port, 20)
    streams.open()
    old = set(children(master))
    assert len(old) == 2
    edit(installed, "proxy/master.py", 'log.info("upgraded: ', f'log.info("{NEW_LINE}')
    knocker = Knocker(port)
    time.sleep(0.3)
    proxy.signal(signal.SIGUSR2)
    proxy.expect(NEW_LINE, timeout=30, stream="err")
    wait_for(lambda: not old & set(children(master)), timeout=5, what="the old workers to exit")
    assert len(children(master)) == 2
    time.sleep(0.3)
    knocker.stop()
    assert knocker.failures == [] and knocker.tries > 5
    assert proxy.popen.poll() is None  # the same process, now running the new code
    streams.finish()
    assert streams.dropped() == []
    assert [s.first_disorder for s in streams.streams if s.disorder] == []
    assert streams.total("echoed") == streams.total("sent")
    proxy.signal(signal.SIGTERM)
    assert proxy.popen.wait(timeout=15) == 0


def test_a_broken_install_leaves_the_old_processes_serving(
        wsgate: Spawn, tmp_path: Path, bg: Background, installed: Path) -> None:
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address])
    proxy, port = start_from(wsgate, installed, config)
    streams = Streams(bg, port, 5)
    streams.open()
    workers = children(proxy.popen.pid)
    edit(installed, "proxy/server.py", '"""One worker', 'this is not Python\n"""One worker')
    proxy.signal(signal.SIGUSR2)
    line = proxy.expect("upgrade failed", timeout=30, stream="err").string
    assert "the old processes keep serving" in line and "Error" in line
    assert children(proxy.popen.pid) == workers
    assert who(port) == "A"
    streams.finish()
    assert streams.dropped() == [] and streams.total("echoed") == streams.total("sent")


def test_a_tls_tunnel_stays_in_its_old_worker_then_gets_1001(
        wsgate: Spawn, tmp_path: Path, bg: Background, installed: Path) -> None:
    a = bg.run(Upstream("A").start())
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], listen='"127.0.0.1:0 ssl"',
                 extra=f'ssl_certificate = "{cert}"\nssl_certificate_key = "{key}"\n'
                       'worker_shutdown_timeout = "2s"')
    proxy, port = start_from(wsgate, installed, config)
    master = proxy.popen.pid
    [old] = children(master)
    streams = Streams(bg, port, 3, context=context)
    streams.open()
    time.sleep(0.2)
    began = time.monotonic()
    proxy.signal(signal.SIGUSR2)
    wait_for(lambda: len(children(master)) == 2, timeout=30, what="a new worker")
    assert old in children(master)  # kept for its TLS tunnels
    echoed = streams.total("echoed")
    time.sleep(0.5)
    assert streams.total("echoed") > echoed and streams.dropped() == []
    wait_for(lambda: len(streams.dropped()) == 3, timeout=10, what="the TLS tunnels to end")
    assert {stream.closed for stream in streams.streams} == {1001}
    assert min(stream.closed_at for stream in streams.streams) - began > 1.5
    wait_for(lambda: old not in children(master), timeout=5, what="the old worker to exit")
    assert who(port, "wss", context) == "A"
    assert streams.total("disorder") == 0


def test_an_upgrade_to_an_address_that_cannot_be_bound_changes_nothing(
        wsgate: Spawn, tmp_path: Path, bg: Background, installed: Path) -> None:
    """Checked before the exec, since after it there is no way back."""
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address])
    proxy, port = start_from(wsgate, installed, config)
    workers = children(proxy.popen.pid)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        write_config(config, [a.address], listen=f'"127.0.0.1:{port}", "127.0.0.1:{taken}"')
        proxy.signal(signal.SIGUSR2)
        line = proxy.expect("upgrade failed", timeout=30, stream="err").string
    assert f"cannot listen on 127.0.0.1:{taken}: address already in use" in line
    assert children(proxy.popen.pid) == workers
    assert who(port) == "A"


def test_new_workers_that_cannot_start_leave_the_old_ones_serving(
        wsgate: Spawn, tmp_path: Path, bg: Background, installed: Path) -> None:
    """The new code imports and checks the file, but its workers die at once: the old
    workers are not told to hand over, and keep every tunnel."""
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra="worker_processes = 2")
    proxy, port = start_from(wsgate, installed, config)
    master = proxy.popen.pid
    workers = set(children(master))
    streams = Streams(bg, port, 5)
    streams.open()
    edit(installed, "proxy/server.py", "        await self.accepting.start(self.accepting.sockets)",
         '        raise RuntimeError("this worker cannot start")')
    proxy.signal(signal.SIGUSR2)
    proxy.expect("no new worker started; the old ones keep serving", timeout=30, stream="err")
    wait_for(lambda: set(children(master)) == workers, what="only the old workers")
    time.sleep(0.5)
    assert who(port) == "A"
    streams.finish()
    assert streams.dropped() == [] and streams.total("echoed") == streams.total("sent")
    assert proxy.popen.poll() is None


def test_two_upgrades_in_a_row_keep_every_tunnel(
        wsgate: Spawn, tmp_path: Path, bg: Background, installed: Path) -> None:
    """The second comes while the first's old workers may still be handing over: they
    carry on, and the tunnels they pass are passed on again."""
    a = bg.run(Upstream("A").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra="worker_processes = 2")
    proxy, port = start_from(wsgate, installed, config)
    master = proxy.popen.pid
    first = set(children(master))
    streams = Streams(bg, port, 20)
    streams.open()
    time.sleep(0.2)
    proxy.signal(signal.SIGUSR2)
    time.sleep(0.3)
    proxy.signal(signal.SIGUSR2)
    wait_for(lambda: len(children(master)) == 2 and not first & set(children(master)),
             timeout=30, what="two new workers only")
    time.sleep(1.5)  # the second generation exits too
    assert len(children(master)) == 2
    streams.finish()
    assert streams.dropped() == []
    assert streams.total("echoed") == streams.total("sent")
    assert streams.total("disorder") == 0
    proxy.signal(signal.SIGTERM)
    _out, err = proxy.drain(timeout=15)
    assert proxy.popen.returncode == 0
    assert "error" not in err, err  # no message was sent to a worker that had gone


def test_the_status_listener_and_its_counts_survive_an_upgrade(
        wsgate: Spawn, installed: Path, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    status_port = closed_port()
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address, b.address],
                 extra=f'status_listen = "127.0.0.1:{status_port}"')
    proxy, port = start_from(wsgate, installed, config)
    status = f"http://127.0.0.1:{status_port}"

    def document() -> dict[str, object]:
        with urllib.request.urlopen(status + "/status", timeout=10) as answer:
            found: dict[str, object] = json.load(answer)
            return found

    def upgrades() -> int:
        return int(document()["requests"].get("101", 0))  # type: ignore[attr-defined]

    assert {who(port), who(port)} == {"A", "B"}
    wait_for(lambda: upgrades() == 2, what="two requests counted")
    request = urllib.request.Request(f"{status}/admin/down?server={b.address}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.load(answer)["state"] == "down"
    time.sleep(2.5)  # the monitor tells the master its state within a second or two
    before = set(children(proxy.popen.pid))
    proxy.signal(signal.SIGUSR2)
    wait_for(lambda: not before & set(children(proxy.popen.pid)), timeout=30,
             what="only new processes")
    # The old worker's counts (it exited) and the admin's mark came through the exec.
    wait_for(lambda: upgrades() == 2 and len(children(proxy.popen.pid)) == 2,
             what="the counts after the upgrade")
    assert {who(port) for _ in range(4)} == {"A"}
    wait_for(lambda: upgrades() == 6, what="new requests counted on top")
