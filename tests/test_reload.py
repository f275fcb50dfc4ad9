"""SIGHUP reloads ``wsgate proxy -c FILE`` under load: no tunnel closes, no message is lost,
and new connections follow the new file; an invalid file changes nothing; a removed
server's tunnels drain with Close 1001, spread out; SIGUSR1 reopens the logs.
Run these in a loop when touching the master or the worker's loop.
"""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from conftest import Spawn
from ops_helpers import (
    Background,
    Streams,
    Upstream,
    children,
    start,
    wait_for,
    who,
    write_config,
)
from proxy_helpers import closed_port


def test_reload_under_load_keeps_every_tunnel(wsgate: Spawn, tmp_path: Path,
                                              bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra="worker_processes = 2")
    proxy, port = start(wsgate, config)
    streams = Streams(bg, port, 30)
    streams.open()
    time.sleep(0.3)
    # B first, A kept as a backup (so its tunnels stay); more workers, other timeouts.
    write_config(config, [b.address, f"{a.address} backup"],
                 extra='worker_processes = 3\nkeepalive_timeout = "5s"')
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: who(port) == "B", what="new connections to go to B")
    wait_for(lambda: len(children(proxy.popen.pid)) == 3, what="3 workers")
    for workers in (1, 2):
        time.sleep(0.3)
        write_config(config, [b.address, f"{a.address} backup"],
                     extra=f"worker_processes = {workers}")
        proxy.signal(signal.SIGHUP)
        wait_for(lambda n=workers: len(children(proxy.popen.pid)) == n,  # type: ignore[misc]
                 what=f"{workers} workers")
    assert who(port) == "B"
    time.sleep(0.3)
    streams.finish()
    assert streams.dropped() == []
    assert [s.first_disorder for s in streams.streams if s.disorder] == []
    assert streams.total("sent") > 30 * 20
    assert streams.total("echoed") == streams.total("sent")
    assert all(stream.servers == {"A"} for stream in streams.streams)
    wait_for(lambda: len(a.close_codes) == a.connections, what="A to see every close")
    assert set(a.close_codes) == {1000}


def test_invalid_reload_keeps_the_old_configuration(wsgate: Spawn, tmp_path: Path,
                                                    bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address])
    proxy, port = start(wsgate, config)
    streams = Streams(bg, port, 5)
    streams.open()
    write_config(config, [f"{b.address} weight=two"])
    proxy.signal(signal.SIGHUP)
    line = proxy.expect("reload failed", stream="err").string
    assert f"{config}: upstream.backend.server[0]" in line
    assert "still running the old configuration" in line
    assert who(port) == "A"
    streams.finish()
    assert streams.dropped() == [] and streams.total("echoed") == streams.total("sent")
    assert proxy.popen.poll() is None


def test_removed_server_drains_with_1001_spread_over_drain_timeout(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    b = bg.run(Upstream("B").start())
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address])
    proxy, port = start(wsgate, config)
    streams = Streams(bg, port, 10, interval=0.05)
    streams.open()
    time.sleep(0.2)
    write_config(config, [b.address], upstream='drain_timeout = "2s"')
    began = time.monotonic()
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: len(streams.dropped()) == 10, timeout=10, what="every tunnel to close")
    spread = [stream.closed_at - began for stream in streams.streams]
    assert {stream.closed for stream in streams.streams} == {1001}
    assert min(spread) < 0.6, spread
    assert 1.6 < max(spread) < 3.5, spread
    # Evenly: every half of the period closes about half of them.
    assert 3 <= sum(1 for t in spread if t < min(spread) + 1.0) <= 7, spread
    wait_for(lambda: len(a.close_codes) == 10, what="A to see every close")
    assert set(a.close_codes) == {1001}
    assert who(port) == "B"
    streams.finish()
    assert streams.total("disorder") == 0


def test_reload_adds_and_removes_listeners_and_serves_renewed_certificates(
        wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    first_ca, second_ca = trustme.CA(), trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"

    def issue(ca: trustme.CA) -> ssl.SSLContext:
        leaf = ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return context

    first = issue(first_ca)
    tls = f'ssl_certificate = "{cert}"\nssl_certificate_key = "{key}"'
    plain_port, tls_port = closed_port(), closed_port()
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra=tls,
                 listen=f'"127.0.0.1:{plain_port}", "127.0.0.1:{tls_port} ssl"')
    proxy, _port = start(wsgate, config)
    assert who(tls_port, "wss", first) == "A"
    streams = Streams(bg, plain_port, 3)
    streams.open()
    extra_port = closed_port()
    second = issue(second_ca)  # renewed in place, as certbot does
    write_config(config, [a.address], extra=tls,
                 listen=f'"127.0.0.1:{extra_port}", "127.0.0.1:{tls_port} ssl"')
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: _accepts(extra_port), what="the new listener")
    wait_for(lambda: not _accepts(plain_port), what="the removed listener to close")
    assert who(tls_port, "wss", second) == "A"
    with pytest.raises(ssl.SSLCertVerificationError):
        who(tls_port, "wss", first)
    streams.finish()  # opened through the removed listener, still whole
    assert streams.dropped() == [] and streams.total("echoed") == streams.total("sent")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_sigusr1_reopens_the_logs(wsgate: Spawn, tmp_path: Path, bg: Background) -> None:
    a = bg.run(Upstream("A").start())
    log = tmp_path / "access.log"
    config = tmp_path / "wsgate.toml"
    write_config(config, [a.address], extra=f'access_log = "{log}"\nworker_processes = 2')
    proxy, port = start(wsgate, config)
    assert who(port) == "A"
    wait_for(lambda: log.exists() and "101" in log.read_text(), what="the first line")
    log.rename(tmp_path / "access.log.1")
    proxy.signal(signal.SIGUSR1)
    wait_for(log.exists, what="a new access.log")
    assert who(port) == "A"
    wait_for(lambda: "101" in log.read_text(), what="a line in the new file")
    assert (tmp_path / "access.log.1").read_text().count("101") == 1
