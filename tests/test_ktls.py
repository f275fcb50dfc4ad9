"""Why kernel TLS is off: each of the conditions, in order (wsgate.proxy.ktls)."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

from wsgate.proxy import ktls


def test_this_python_or_this_kernel_is_named() -> None:
    why = ktls.missing()
    if not hasattr(ssl, "OP_ENABLE_KTLS"):
        assert why == (f"Python {sys.version_info[0]}.{sys.version_info[1]} has no "
                       "ssl.OP_ENABLE_KTLS (3.12 or later has)")
    assert ktls.notice() == f"kernel TLS is off: {why}; TLS is done in user space"


@pytest.fixture
def ktls_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssl, "OP_ENABLE_KTLS", 8, raising=False)
    monkeypatch.setattr(ssl, "OPENSSL_VERSION_INFO", (3, 0, 13, 0, 0))


@pytest.mark.usefixtures("ktls_python")
def test_the_kernel_module_is_next(tmp_path: Path) -> None:
    ulps = tmp_path / "tcp_available_ulp"
    ulps.write_text("mptcp\n")
    assert ktls.missing(ulps) == "the kernel's tls module is not loaded (modprobe tls)"
    assert ktls.missing(tmp_path / "absent") == f"{tmp_path / 'absent'} cannot be read (not Linux?)"


@pytest.mark.usefixtures("ktls_python")
def test_with_everything_else_the_handshake_is_what_is_missing(tmp_path: Path) -> None:
    ulps = tmp_path / "tcp_available_ulp"
    ulps.write_text("mptcp tls\n")
    assert "uvloop's layer" in ktls.missing(ulps)


def test_an_old_openssl_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssl, "OP_ENABLE_KTLS", 8, raising=False)
    monkeypatch.setattr(ssl, "OPENSSL_VERSION_INFO", (1, 1, 1, 23, 15))
    monkeypatch.setattr(ssl, "OPENSSL_VERSION", "OpenSSL 1.1.1w")
    assert ktls.missing() == "OpenSSL 1.1.1w is older than OpenSSL 3.0"
