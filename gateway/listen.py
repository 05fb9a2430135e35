"""Opening a listening socket with an error an operator can act on: which address, set by which key.

Why: ``OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8481): address already
in use`` in a traceback does not say which of the gateway's three listeners (submit API, inbound AS4 server,
health/status) collided, nor where to change it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

_REASONS = {errno.EADDRINUSE: "address already in use (another process listens there: `ss -ltnp`)",
            errno.EADDRNOTAVAIL: "address not available on this host",
            errno.EACCES: "permission denied (ports below 1024 need privileges)"}


class ListenError(Exception):
    """A listener could not bind; the message names the address and the configuration key."""

    def __init__(self, key: str, address: str, reason: str) -> None:
        self.key, self.address, self.reason = key, address, reason
        super().__init__(f"cannot listen on {address} ([{key}]): {reason}")


@contextmanager
def listening(key: str, address: str) -> Iterator[None]:
    """Turns a bind failure inside the block into ``ListenError(key, address, reason)``."""
    try:
        yield
    except ListenError:
        raise
    except OSError as exc:
        code = exc.errno
        if code is None:  # asyncio wraps the bind error: the cause carries the errno
            cause = exc.__cause__ or exc.__context__
            code = getattr(cause, "errno", None)
        if code is None and "address already in use" in str(exc).lower():
            code = errno.EADDRINUSE
        raise ListenError(key, address, _REASONS.get(code, exc.strerror or str(exc))) from exc
