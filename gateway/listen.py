"""Opening a listening socket with an error an operator can act on: which address, set by which key.

Why: ``OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8481): address already
in use`` in a traceback does not say which of the gateway's three listeners (submit API, inbound AS4 server,
health/status) collided, nor where to change it.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------------------------------ authentication
# Why: the submit API accepts filings and the health/status listener shows what is being filed; on a loopback
# address only local processes reach them, on any other address anyone on the network could. So a non-loopback
# listen address is refused unless the listener authenticates its clients: a bearer token (from *_env or
# *_file, never written in the configuration) and/or TLS with client certificates (issued under client_ca).

# "token" itself is listed so that a literal token gets the clear "never written in the configuration" refusal
AUTH_KEYS = frozenset({"token", "token_env", "token_file", "tls_cert", "tls_key", "client_ca"})


@dataclass(frozen=True)
class ListenerAuth:
    """How a plain HTTP listener (submit API, health/status) authenticates clients; empty = loopback only."""
    token: str | None = field(default=None, repr=False)   # never printed
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: tuple[Path, ...] = ()

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def enabled(self) -> bool:
        return bool(self.token) or self.tls

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS server context that requires a client certificate under ``client_ca``; None without TLS."""
        if not self.tls:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        for ca in self.client_ca:
            ctx.load_verify_locations(cafile=str(ca))
        return ctx

    def middleware(self) -> Any:
        """An aiohttp middleware refusing requests without ``Authorization: Bearer <token>`` (401)."""
        from aiohttp import web

        expected = f"Bearer {self.token}".encode() if self.token else None

        @web.middleware
        async def check(request: web.Request, handler: Any) -> Any:
            if expected is not None:
                given = request.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return web.json_response({"error": "unauthorized",
                                              "message": "send Authorization: Bearer <token>"}, status=401,
                                             headers={"WWW-Authenticate": 'Bearer realm="ics2gw"'})
            return await handler(request)
        return check


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_listener_auth(sec: Any, listen_key: str, host: str) -> ListenerAuth:
    """The auth keys of a listener's section (``gateway.config.Section``); refuses a non-loopback ``host``
    without authentication, naming ``listen_key``."""
    token = sec.secret("token")
    if token is not None and len(token) < 16:
        sec.fail("token_env" if "token_env" in sec else "token_file",
                 "the token must be at least 16 characters (use a random one: `openssl rand -hex 32`)")
    cert, key = sec.path("tls_cert", None), sec.path("tls_key", None)
    cas = tuple(sec.paths("client_ca", []))
    if bool(cert) != bool(key):
        sec.fail("tls_key" if cert else "tls_cert", "tls_cert and tls_key go together")
    if cert and not cas:
        sec.fail("client_ca", "TLS on this listener requires client certificates: give client_ca (the CAs that "
                              "issue them)")
    auth = ListenerAuth(token=token, tls_cert=cert, tls_key=key, client_ca=cas)
    token_configured = token is not None or "token_env" in sec or "token_file" in sec   # (not read: secrets=False)
    if not is_loopback(host) and not (token_configured or auth.tls):
        sec.fail(listen_key, f"{host!r} is not a loopback address: a listener reachable from the network needs "
                             "authentication (token_env or token_file for a bearer token, or tls_cert + tls_key + "
                             "client_ca for TLS client certificates)")
    return auth
