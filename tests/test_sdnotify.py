"""sd_notify without libsystemd: real datagram sockets stand in for systemd's, at a path
and in the abstract namespace."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgate import sdnotify


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound in tmp_path, named by NOTIFY_SOCKET, as systemd's is."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def fields(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def nothing_more(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_ready_stopping_status_mainpid(systemd: socket.socket) -> None:
    assert sdnotify.ready() is True
    assert fields(systemd) == ["READY=1"]
    assert sdnotify.stopping() is True
    assert fields(systemd) == ["STOPPING=1"]
    assert sdnotify.status("2 workers\nlistening on :8080") is True
    assert fields(systemd) == ["STATUS=2 workers listening on :8080"]
    assert sdnotify.mainpid(4242) is True
    assert fields(systemd) == ["MAINPID=4242"]
    assert nothing_more(systemd)


def test_reloading_carries_the_monotonic_time(systemd: socket.socket) -> None:
    """Type=notify-reload wants MONOTONIC_USEC with RELOADING=1, in one datagram."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, usec = fields(systemd)
    assert reloading == "RELOADING=1"
    name, _, value = usec.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert nothing_more(systemd)


def test_several_fields_are_one_datagram(systemd: socket.socket) -> None:
    assert sdnotify.notify("READY=1", "STATUS=serving") is True
    assert fields(systemd) == ["READY=1", "STATUS=serving"]
    assert nothing_more(systemd)


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"wsgate-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready() is True
        assert fields(sock) == ["READY=1"]


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.reloading() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.stopping() is False


@pytest.mark.parametrize("address", [
    "{tmp}/nobody-listens",   # no such socket
    "{tmp}",                  # a folder, not a socket
    "relative/notify",        # not an address systemd uses
    "/" + "x" * 200,          # longer than a Unix socket path can be
    "@",                      # an empty abstract name nobody bound
])
def test_failures_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              address: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address.format(tmp=tmp_path))
    assert sdnotify.ready() is False
    assert sdnotify.notify() is False


def test_nothing_to_send_sends_nothing(systemd: socket.socket) -> None:
    assert sdnotify.notify() is False
    assert nothing_more(systemd)
