"""The side-by-side suite, in its seconds-long smoke form, so it never rots (no speed
assertions: speed lives in docs/benchmarks.md, measured by the full run)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import require_nginx

SUITE = Path(__file__).parent.parent / "benchmarks" / "suite.py"


def installed(binary: str) -> bool:
    return bool(shutil.which(binary)) or Path(f"/usr/sbin/{binary}").exists()


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A module of benchmarks/ (they import each other by their bare names)."""
    monkeypatch.syspath_prepend(str(SUITE.parent))
    return importlib.import_module(name)


@pytest.mark.timeout(300)
def test_suite_smoke_run_writes_the_report(tmp_path: Path) -> None:
    require_nginx()
    output = tmp_path / "benchmarks.md"
    result = subprocess.run([sys.executable, str(SUITE), "--smoke", "--output", str(output)],
                            capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stderr
    report = output.read_text()
    for heading in ("### Messages per second, latency and CPU", "### Goals",
                    "### Idle memory and RSS after close", "### Handshakes per second"):
        assert heading in report
    # Every target side by side, HAProxy and Caddy where they are installed (a smoke run
    # installs neither, and their absence is no failure).
    header = next(line for line in report.splitlines() if line.startswith("| size | conns |"))
    for target in ("upstream direct", "nginx", "wsgate proxy"):
        assert f"| {target} |" in header
    for target, binary in (("HAProxy", "haproxy"), ("Caddy", "caddy")):
        assert (f"| {target} |" in header) == installed(binary), header
    assert "| 32 B | C=20 | proxy CPU s/100k |" in report
    assert "RSS after close, MiB" in report and "**" in report  # the best peer, marked
    assert (tmp_path / "benchmarks" / "throughput.png").exists()
    assert "- proxies: 1 worker each" in report and "TLS terminated" not in report
    # Running it again keeps what is outside the results (the optimisation log); this time
    # with TLS at every proxy, and two workers each.
    output.write_text("# Benchmarks\n\nnotes before\n\n" + report.split("# Benchmarks\n\n", 1)[1]
                      + "\nnotes after\n")
    result = subprocess.run([sys.executable, str(SUITE), "--smoke", "--tls", "--workers", "2",
                             "--output", str(output)],
                            capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stderr
    again = output.read_text()
    assert "notes before" in again and "notes after" in again
    assert again.count("### Goals") == 1
    assert "- proxies: `--workers 2`: 2 workers each" in again and "`wsgate bench -p 2`" in again
    for heading in ("### TLS terminated at the proxy: messages per second, latency and CPU",
                    "### TLS terminated at the proxy: handshakes per second"):
        assert heading in again
    tls = again.split("### TLS terminated at the proxy", 1)[1]
    header = next(line for line in tls.splitlines() if line.startswith("| size | conns |"))
    assert "| nginx |" in header and "| wsgate proxy |" in header
    assert "upstream direct" not in header
    assert "| 32 B | C=20 | proxy CPU s/100k |" in tls and "| TLS handshakes/s |" in tls
    assert "nginx TLSv1.3" in again and "wsgate proxy TLSv1.3" in again  # what was negotiated


@pytest.mark.timeout(120)
def test_reload_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/reload.py in its short form: it runs, and wsgate loses nothing through a
    reload and an upgrade (nginx's row is whatever nginx does)."""
    require_nginx()
    output = tmp_path / "reload.md"
    result = subprocess.run([sys.executable, str(SUITE.parent / "reload.py"), "--quick",
                             "--output", str(output)],
                            capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    report = output.read_text()
    assert "| nginx |" in report
    assert "| wsgate proxy | 0 | 0 |" in report, report
    assert "1 reload, 1 upgrade signalled" in report


def test_the_best_peer_is_marked_and_is_the_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load("suite", monkeypatch)
    cpu = suite.Figure(["32 B", "C=50", "proxy CPU s/100k"],
                       {"upstream direct": 0.1, "nginx": 0.6604, "HAProxy": 0.7581,
                        "wsgate proxy": 0.5}, "{:.3f}".format, False)
    names = ["upstream direct", "nginx", "HAProxy", "wsgate proxy"]
    # Lower is better; only peers are marked (not the upstream, not wsgate itself).
    assert cpu.row(names, ["nginx", "HAProxy"]) == \
        "| 32 B | C=50 | proxy CPU s/100k | 0.100 | **0.660** | 0.758 | 0.500 |"
    assert cpu.goal(["nginx", "HAProxy"]) == \
        "| 32 B, C=50, proxy CPU s/100k (≤ 1) | nginx 0.660 | 0.76x | 0.76x |"
    rates = suite.Figure(["handshakes/s"], {"nginx": 4783.0, "HAProxy": 4882.0,
                                            "wsgate proxy": 3377.0}, "{:,.0f}".format, True)
    assert rates.goal(["nginx", "HAProxy"]) == \
        "| handshakes/s (≥ 1) | HAProxy 4,882 | 0.69x | 0.71x |"
    assert "**4,882**" in rates.row(["nginx", "HAProxy", "wsgate proxy"], ["nginx", "HAProxy"])


def test_a_missing_peer_is_skipped_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = load("peers", monkeypatch)
    ghost = peers.Kind("ghost", "Ghost", "ghost-proxy", "no-such-proxy-here", peers.make_nginx,
                       ("-v",))
    monkeypatch.setitem(peers.KINDS, "ghost", ghost)
    installs: list[str] = []
    monkeypatch.setattr(peers, "apt_install", lambda package: installs.append(package) or False)
    assert "not installed" in peers.find_peer("ghost", install=False, required=False)
    assert installs == []
    with pytest.raises(SystemExit, match="Ghost"):
        peers.find_peer("ghost", install=True, required=True)
    assert installs == ["ghost-proxy"]
    with pytest.raises(SystemExit, match="unknown bogus"):
        peers.choose_peers("nginx,bogus", smoke=True)


def test_peer_configs_carry_the_seeds_semantics(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    peers = load("peers", monkeypatch)
    haproxy = peers.Peer(peers.KINDS["haproxy"], "haproxy").make(tmp_path / "h", 8000, 8001,
                                                                    8002)
    text = (tmp_path / "h" / "haproxy.cfg").read_text()
    for line in ("nbthread 1", "balance roundrobin", "timeout tunnel 300s", "option forwardfor",
                 "X-Real-IP", "server up1 127.0.0.1:8001", "server up2 127.0.0.1:8002"):
        assert line in text
    assert haproxy.stdout == tmp_path / "h" / "access.log"
    caddy = peers.Peer(peers.KINDS["caddy"], "caddy").make(tmp_path / "c", 8000, 8001, 8002)
    text = (tmp_path / "c" / "Caddyfile").read_text()
    for line in ("lb_policy round_robin", "read_timeout 300s", "X-Real-IP",
                 "127.0.0.1:8001 127.0.0.1:8002", "admin off"):
        assert line in text
    assert caddy.env["GOMAXPROCS"] == "1"


def test_peer_configs_with_tls_and_workers(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """``--tls`` and ``--workers``: each proxy's own words for them, and the rest as before."""
    peers = load("peers", monkeypatch)
    suite = load("suite", monkeypatch)
    tls = peers.Tls(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "both.pem")
    setup = peers.Setup(workers="auto", tls=tls)
    cores = os.cpu_count() or 1
    made = {key: peers.Peer(peers.KINDS[key], key).make(tmp_path / key, 8000, 8001, 8002, setup)
            for key in ("nginx", "haproxy", "caddy")}
    nginx = (tmp_path / "nginx" / "nginx.conf").read_text()
    for line in ("worker_processes auto;", "listen 127.0.0.1:8000 ssl;",
                 f"ssl_certificate {tls.cert};", f"ssl_certificate_key {tls.key};",
                 "ssl_protocols TLSv1.2 TLSv1.3;", "proxy_read_timeout 300s;"):
        assert line in nginx
    haproxy = (tmp_path / "haproxy" / "haproxy.cfg").read_text()
    assert f"nbthread {cores}\n" in haproxy
    assert f"bind 127.0.0.1:8000 ssl crt {tls.both}\n" in haproxy
    caddy = (tmp_path / "caddy" / "Caddyfile").read_text()
    assert "https://:8000 {" in caddy and f"\ttls {tls.cert} {tls.key}\n" in caddy
    assert "auto_https off" in caddy and "lb_policy round_robin" in caddy
    assert made["caddy"].env["GOMAXPROCS"] == str(cores)
    wsgate = suite.wsgate_conf(tmp_path, 8000, 8001, 8002, setup=setup)
    for line in ('listen = ["127.0.0.1:8000 ssl"]', 'worker_processes = "auto"',
                 f'ssl_certificate = "{tls.cert}"', f'ssl_certificate_key = "{tls.key}"'):
        assert line in wsgate
    plain = suite.wsgate_conf(tmp_path, 8000, 8001, 8002, 9000, peers.Setup(workers=3))
    assert "worker_processes = 3\n" in plain and 'listen = ["127.0.0.1:8000"]' in plain
    assert 'status_listen = "127.0.0.1:9000"' in plain and "ssl" not in plain
