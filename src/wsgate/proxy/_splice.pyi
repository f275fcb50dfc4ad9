"""Types of the C tunnel core (src/wsgate/proxy/_splice.c)."""

from collections.abc import Callable

CLIENT: int
UPSTREAM: int
WAKE: int
FAILED: int
STALLED: int
FLOWING: int
CHUNK: int

class Core:
    members: int
    def __init__(self) -> None: ...
    def fileno(self) -> int: ...
    def poll(self) -> None: ...
    def close(self) -> None: ...

class Splice:
    client_received: int
    upstream_received: int
    left: int
    held: bytes
    closed: bool
    pending: int
    running: bool
    tls_closed: bool
    def __init__(self, core: Core, client_fd: int, upstream_fd: int,
                 on_event: Callable[[int, int, int], object], left: int, held: bytes,
                 closed: bool, tls: tuple[object, object] | None = None) -> None: ...
    def stop(self) -> tuple[bytes, bytes]: ...

def tls_bind(path: str) -> bool: ...
def advance(left: int, held: bytes, closed: bool, data: bytes) -> tuple[int, bytes, bool]: ...
