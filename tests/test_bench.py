"""``wsgate bench`` against real servers: every mode, reply checking, reports, mistakes."""

from __future__ import annotations

import json
import signal
import struct
import threading
from pathlib import Path

import pytest
import trustme
from websockets.sync.server import ServerConnection, serve

from conftest import Spawn, run_wsgate, start_echo
from proxy_helpers import closed_port, simple_config, start_proxy


def bench_json(*argv: str, timeout: float = 60) -> dict[str, object]:
    result = run_wsgate("bench", *argv, "--json", timeout=timeout)
    assert result.stdout.strip(), result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    data["status"] = result.returncode
    return data


def test_throughput_checks_every_reply(wsgate: Spawn) -> None:
    _echo, port = start_echo(wsgate, "--quiet")
    data = bench_json(f"ws://127.0.0.1:{port}", "-c", "4", "-d", "2", "-t", "1s",
                      "--warmup", "200ms")
    assert data["status"] == 0
    assert data["errors"] == 0 and data["opened"] == 4
    assert isinstance(data["messages"], int) and data["messages"] > 1000
    assert isinstance(data["rate"], float) and data["rate"] > 1000
    latency = data["latency_us"]
    assert isinstance(latency, dict)
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    timeline = data["timeline"]
    assert isinstance(timeline, list) and len(timeline) >= 8


def test_raw_echo_binary_and_several_processes(wsgate: Spawn) -> None:
    _echo, port = start_echo(wsgate, "--quiet", "--raw")
    data = bench_json(f"ws://127.0.0.1:{port}", "-c", "4", "-s", "4k", "-b", "-p", "2",
                      "-t", "1", "--warmup", "0.2")
    assert data["status"] == 0 and data["errors"] == 0
    assert data["processes"] == 2 and data["opened"] == 4 and data["size"] == 4096


def test_wrong_replies_are_errors() -> None:
    def liar(ws: ServerConnection) -> None:
        """Echoes the first message (so the prefix is learnt), then answers wrongly."""
        for count, message in enumerate(ws):
            ws.send(message if count == 0 else "nope")

    with serve(liar, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        data = bench_json(f"ws://127.0.0.1:{port}", "-c", "1", "-t", "0.5",
                          "--warmup", "0.1")
        server.shutdown()
    assert data["status"] == 1
    assert isinstance(data["errors"], int) and data["errors"] > 0
    assert "nope" in str(data["first_error"])


def test_report_for_people(wsgate: Spawn) -> None:
    _echo, port = start_echo(wsgate, "--quiet")
    result = run_wsgate("bench", f"127.0.0.1:{port}", "-c", "2", "-t", "0.5", "--warmup", "0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wsgate bench ws://127.0.0.1:{port}  throughput: 2 connections")
    assert "msg/s" in lines[1] and "p99" in lines[2] and lines[3].split() == ["errors", "0"]


def test_storm_counts_handshakes(wsgate: Spawn) -> None:
    _echo, port = start_echo(wsgate, "--quiet")
    data = bench_json(f"ws://127.0.0.1:{port}", "--mode", "storm", "-c", "200")
    assert data["status"] == 0
    assert data["opened"] == 200 and data["failed"] == 0
    assert isinstance(data["rate"], float) and data["rate"] > 0


def test_wss_trusts_the_ca_given_or_checks_nothing(wsgate: Spawn, tmp_path: Path) -> None:
    """wss:// to a real TLS endpoint (``wsgate proxy`` with an ECDSA certificate in front of
    the echo server): ``--ca`` trusts the CA given, in every process and in storm mode too;
    ``-n`` checks nothing; with neither the system's CAs do not know it, and nothing opens."""
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    authority = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(authority)
    _echo, echo_port = start_echo(wsgate, "--quiet")
    _proxy, port = start_proxy(
        wsgate, tmp_path, simple_config(f"127.0.0.1:{echo_port}"),
        listen='"127.0.0.1:0 ssl"',
        extra='ssl_certificate = "cert.pem"\nssl_certificate_key = "key.pem"')
    url = f"wss://127.0.0.1:{port}/"
    data = bench_json(url, "--ca", authority, "-c", "4", "-p", "2", "-t", "0.5",
                      "--warmup", "0.1")
    assert (data["status"], data["errors"], data["opened"]) == (0, 0, 4), data["first_error"]
    assert isinstance(data["messages"], int) and data["messages"] > 0
    storm = bench_json(url, "--cacert", authority, "--mode", "storm", "-c", "40")
    assert (storm["status"], storm["opened"], storm["failed"]) == (0, 40, 0)
    unchecked = bench_json(url, "-n", "--mode", "storm", "-c", "4")
    assert (unchecked["status"], unchecked["opened"]) == (0, 4)
    untrusted = run_wsgate("bench", url, "--mode", "storm", "-c", "2")
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr.upper(), untrusted.stderr


def test_idle_holds_and_counts_drops(wsgate: Spawn) -> None:
    echo, port = start_echo(wsgate, "--quiet")
    result = run_wsgate("bench", f"ws://127.0.0.1:{port}", "--mode", "idle", "-c", "30",
                        "--hold", "500ms", "--json")
    data = json.loads(result.stdout)
    assert (data["opened"], data["dropped"]) == (30, 0)
    assert "holding 30 connections for 0.5 s" in result.stderr
    timer = threading.Timer(1.0, echo.signal, args=(signal.SIGTERM,))
    timer.start()
    data = bench_json(f"ws://127.0.0.1:{port}", "--mode", "idle", "-c", "30", "--hold", "3")
    timer.join()
    assert data["opened"] == 30 and data["dropped"] == 30


def test_unreachable_server_is_one_line_and_status_1() -> None:
    port = closed_port()
    result = run_wsgate("bench", f"ws://127.0.0.1:{port}", "-c", "2", "-t", "0.5")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: no connection could be opened to ws://127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["http://x"], "bad URL scheme http://"),
        (["ws://x", "-c", "0"], 'argument -c/--connections: must be a positive integer, got "0"'),
        (["ws://x", "-s", "big"],
         'argument -s/--size: must be a size like "8k", "1m" or "1g", got "big"'),
        (["ws://x", "-t", "0"], 'argument -t/--seconds: must be more than 0, got "0"'),
        (["ws://x", "--warmup", "soon"], "argument --warmup: must be a duration like"),
        (["ws://x", "-p", "many"], 'argument -p/--processes: must be a positive integer'),
        (["ws://x", "--mode", "flood"], "argument --mode: invalid choice"),
        (["wss://x", "--ca", "/no/such/ca.pem"],
         "cannot read --ca file /no/such/ca.pem: No such file or directory"),
        (["ws://x", "--mode", "storm", "--plot", "x.png"], "--plot draws a throughput run"),
    ],
)
def test_mistakes_are_one_line_and_status_2(argv: list[str], message: str) -> None:
    result = run_wsgate("bench", *argv)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}")
    assert result.stderr.endswith(" (see wsgate bench --help)\n")
    assert len(result.stderr.strip().splitlines()) == 1


def test_plot_draws_a_png(wsgate: Spawn, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _echo, port = start_echo(wsgate, "--quiet")
    picture = tmp_path / "bench.png"
    result = run_wsgate("bench", f"ws://127.0.0.1:{port}", "-c", "2", "-t", "0.5",
                        "--warmup", "0", "--plot", str(picture))
    assert result.returncode == 0, result.stderr
    header = picture.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 500 and height > 200
