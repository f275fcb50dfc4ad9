"""The TLS context for ``wss://``: wscat's ``--ca``, ``--cert``, ``--key``, ``--passphrase``, -n.

Every file is read before connecting, so a missing or unreadable one is a usage error
(exit 2) rather than a failure halfway through a handshake.
"""

from __future__ import annotations

import getpass
import ssl
import sys
from collections.abc import Callable

from wsgate.errors import UsageError

#: ``--passphrase`` given without a value: ask on the terminal, as wscat does.
PROMPT = "\0prompt"


def _check_readable(path: str, flag: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise UsageError(f"cannot read {flag} file {path}: {error.strerror}") from None


def _encrypted(path: str) -> bool:
    with open(path, "rb") as file:
        return b"ENCRYPTED" in file.read()


def _ask_passphrase() -> str:
    if not sys.stdin.isatty():
        raise UsageError("the --key is encrypted: give --passphrase VALUE (no terminal to ask)")
    return getpass.getpass("Passphrase: ")


def build_context(
    *,
    ca: str | None,
    cert: str | None,
    key: str | None,
    passphrase: str | None,
    check: bool,
) -> ssl.SSLContext | None:
    """An SSL context for the options given, or ``None`` for websockets' default."""
    if ca is None and cert is None and key is None and check:
        return None
    if key is not None and cert is None:
        raise UsageError("--key needs --cert")
    for path, flag in ((ca, "--ca"), (cert, "--cert"), (key, "--key")):
        if path is not None:
            _check_readable(path, flag)
    try:
        context = ssl.create_default_context(cafile=ca)
    except ssl.SSLError as error:
        raise UsageError(f"cannot use --ca file {ca}: {error.reason or error}") from None
    if not check:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        password: str | Callable[[], str]
        password = _ask_passphrase() if passphrase == PROMPT else passphrase or _ask_passphrase
        try:
            context.load_cert_chain(cert, key, password=password)
        except ssl.SSLError as error:
            if _encrypted(key or cert):
                reason = "the key could not be decrypted (wrong --passphrase?)"
            else:
                reason = error.reason or "not a PEM certificate and key"
            raise UsageError(f"cannot use --cert/--key: {reason}") from None
    return context
