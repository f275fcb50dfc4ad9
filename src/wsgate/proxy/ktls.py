"""Whether kernel TLS could carry this proxy's ``wss://`` tunnels, and why not.

With kernel TLS the kernel encrypts and decrypts a socket's records once the handshake has
set its keys: the tunnel then reads and writes plaintext on the socket, as a plain one, so
its bytes need no user-space copy through OpenSSL and kernel splicing
(:mod:`~wsgate.proxy.tunnel`'s offload) becomes possible for ``wss://`` too.

It needs all of the following, which :func:`missing` checks, in this order:

1. Python 3.12 or later, for ``ssl.OP_ENABLE_KTLS``, which asks OpenSSL to hand the keys
   to the kernel after the handshake.
2. OpenSSL 3.0 or later, built with ``enable-ktls`` (Debian's is).
3. The kernel's ``tls`` upper-layer protocol: ``tls`` is listed in
   ``/proc/sys/net/ipv4/tcp_available_ulp`` once the module is loaded.
4. A handshake that OpenSSL runs on the socket itself. uvloop's TLS layer feeds OpenSSL
   through memory buffers, which can never move to the kernel.

The way in, where all four hold: TLS listeners accept plain TCP, and the handshake runs on
an ``ssl.SSLSocket`` whose context has ``OP_ENABLE_KTLS``, non-blocking and driven by the
loop's ``add_reader``/``add_writer``. Afterwards ``getsockopt(SOL_TCP, TCP_ULP)`` tells
whether the kernel took the keys (only AES-GCM and ChaCha20-Poly1305 suites qualify). If
it did, the socket goes to the proxy as a plain transport. If it did not, the
``SSLSocket`` stays in charge, as it would for any other TLS server.

Three cases must then be handled by hand:

- Records that are not data reach ``read()`` as an error: a TLS 1.3 KeyUpdate, and an
  alert. They are read with ``recvmsg`` and the record type in its control message.
- The tunnel's close sends close_notify as an alert record, through ``sendmsg`` with
  ``TLS_SET_RECORD_TYPE``.
- A tunnel handed to a new process keeps its keys, because they live in the socket.

Where any of the four is missing, TLS stays in uvloop's layer, which is how every
``wss://`` tunnel runs today. This machine's kernel (and CI's) has no ``tls`` module, so
only that fallback is exercised here. :func:`missing` says why kernel TLS is off, and the
proxy logs it once at start when it has a TLS listener.
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

ULP_LIST = Path("/proc/sys/net/ipv4/tcp_available_ulp")


def missing(ulp_list: Path = ULP_LIST) -> str:
    """The first of the four conditions (see the module's docstring) that does not hold.
    The fourth, a handshake on the socket itself, is not built, so there is always one."""
    if not hasattr(ssl, "OP_ENABLE_KTLS"):
        return (f"Python {sys.version_info[0]}.{sys.version_info[1]} has no "
                "ssl.OP_ENABLE_KTLS (3.12 or later has)")
    if ssl.OPENSSL_VERSION_INFO < (3, 0):
        return f"{ssl.OPENSSL_VERSION} is older than OpenSSL 3.0"
    try:
        ulps = ulp_list.read_text().split()
    except OSError:
        return f"{ulp_list} cannot be read (not Linux?)"
    if "tls" not in ulps:
        return "the kernel's tls module is not loaded (modprobe tls)"
    return "the TLS handshake runs in uvloop's layer, which keeps the keys in user space"


def notice() -> str:
    """The line logged once at start by a proxy with a TLS listener."""
    return f"kernel TLS is off: {missing()}; TLS is done in user space"
