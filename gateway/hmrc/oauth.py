"""OAuth 2.0 as HMRC runs it for user-restricted endpoints: one authorisation-code grant, then refreshes.

* ``authorize_url`` builds the URL the operator opens once (``ics2gw hmrc authorize``); the code comes back to
  a loopback redirect or is pasted in, and ``exchange_code`` turns it into the first token set.
* ``TokenManager.bearer`` hands out a valid access token, refreshing early (half-way through its lifetime by
  default). Each refresh returns a new refresh token and invalidates the old one at HMRC, so the new set is
  written to the token file (atomic, fsynced, 0600) before any of it is used; one refresh at a time.
* If a rotation is ever lost (a crash after HMRC issued the new pair, before it reached the disk), HMRC answers
  the next refresh with ``invalid_grant``: the access token in hand still works for the rest of its lifetime
  (hours, because we refresh early), the manager says so in an urgent alert, and the operator re-authorises.

Tokens and the client secret are never logged.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from gateway.hmrc import protocol
from gateway.hmrc.tokens import TokenSet, TokenStore, TokenStoreError, crash_point

log = logging.getLogger("ics2gw.hmrc.oauth")
MAX_TOKEN_ANSWER_BYTES = 64 * 1024


class AuthorisationNeeded(Exception):
    """No usable token: the operator must run ``ics2gw hmrc authorize`` (the message says why)."""


@dataclass(frozen=True)
class OAuthSettings:
    base_url: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str = protocol.SCOPE

    def __repr__(self) -> str:
        return f"OAuthSettings(base_url={self.base_url!r}, client_id={self.client_id!r}, client_secret=<hidden>)"


def authorize_url(settings: OAuthSettings, state: str | None = None) -> tuple[str, str]:
    """(URL to open in a browser, the ``state`` to expect back on the redirect)."""
    state = state or secrets.token_urlsafe(16)
    query = urllib.parse.urlencode({"response_type": "code", "client_id": settings.client_id,
                                    "scope": settings.scope, "redirect_uri": settings.redirect_uri,
                                    "state": state})
    return f"{settings.base_url.rstrip('/')}{protocol.AUTHORIZE}?{query}", state


async def _token_request(session: aiohttp.ClientSession, settings: OAuthSettings,
                         form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    url = settings.base_url.rstrip("/") + protocol.TOKEN
    body = {**form, "client_id": settings.client_id, "client_secret": settings.client_secret}
    # no redirects: a 307 would re-POST the client secret and the refresh token to wherever it points
    async with session.post(url, data=body, headers={"Accept": "application/json"}, allow_redirects=False) as resp:
        raw = b""
        async for chunk in resp.content.iter_chunked(16 * 1024):
            raw += chunk
            if len(raw) > MAX_TOKEN_ANSWER_BYTES:     # a token answer is a few hundred bytes
                raise aiohttp.ClientPayloadError(f"token endpoint answer larger than {MAX_TOKEN_ANSWER_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        return resp.status, doc if isinstance(doc, dict) else {}


async def exchange_code(session: aiohttp.ClientSession, settings: OAuthSettings, code: str, *,
                        now: float | None = None) -> TokenSet:
    status, doc = await _token_request(session, settings, {"grant_type": "authorization_code", "code": code,
                                                            "redirect_uri": settings.redirect_uri})
    if status != 200:
        raise AuthorisationNeeded(f"HMRC refused the authorisation code (HTTP {status} "
                                  f"{doc.get('error', '')}: {doc.get('error_description', '')}); authorise again")
    return TokenSet.from_grant(doc, now=time.time() if now is None else now, generation=1)


class TokenManager:
    """The daemon's source of bearer tokens; ``on_alert(kind, **detail)`` reports what the operator must know."""

    def __init__(self, store: TokenStore, settings: OAuthSettings, *, clock: Callable[[], float] = time.time,
                 refresh_fraction: float = 0.5, on_alert: Callable[..., None] | None = None) -> None:
        self.store, self.settings, self.clock = store, settings, clock
        self.refresh_fraction = refresh_fraction
        self.on_alert = on_alert or (lambda kind, **detail: None)
        self._lock = asyncio.Lock()
        self._tokens: TokenSet | None = None
        self._fp: tuple[int, int, int] | None = None     # the token file's identity when it was read
        self.refresh_broken: str | None = None   # why refreshing no longer works (shown in health)
        self.refreshes = 0

    def current(self) -> TokenSet:
        """The token set on disk. Re-read whenever the file was replaced (by ``hmrc authorize`` while the daemon
        runs, or by another process's refresh): a re-authorisation takes effect without a restart, and a
        refresh-broken state ends with it."""
        fp = self.store.fingerprint()
        if self._tokens is None or fp != self._fp:
            previous = self._tokens
            try:
                self._tokens = self.store.load()
            except TokenStoreError as exc:
                self._tokens, self._fp = None, None
                raise AuthorisationNeeded(str(exc)) from None
            self._fp = fp
            if previous is not None and self._tokens.refresh_token != previous.refresh_token:
                if self.refresh_broken is not None:
                    log.info("hmrc token file replaced: new authorisation picked up generation=%d",
                             self._tokens.generation)
                self.refresh_broken = None
            if self._tokens.refresh_started_at is not None and previous is None:
                # the previous process died during a refresh: HMRC may or may not have rotated; the next refresh
                # will tell (invalid_grant) and the access token in hand covers the meantime
                log.warning("hmrc token refresh was interrupted by a stop (generation %d); will refresh again",
                            self._tokens.generation)
        return self._tokens

    def status(self) -> dict[str, Any]:
        try:
            t = self.current()
        except AuthorisationNeeded as exc:
            return {"authorised": False, "reason": str(exc)}
        now = self.clock()
        return {"authorised": t.valid(now), "generation": t.generation,
                "access_seconds_left": round(t.seconds_left(now)), "refresh_broken": self.refresh_broken}

    async def bearer(self, session: aiohttp.ClientSession) -> str:
        """A valid access token, refreshed first when due."""
        tokens = self.current()
        if tokens.due_for_refresh(self.clock(), fraction=self.refresh_fraction) and self.refresh_broken is None:
            tokens = await self.refresh(session, reason="due")
        if not tokens.valid(self.clock()):
            raise AuthorisationNeeded(f"the HMRC access token has expired and cannot be refreshed "
                                      f"({self.refresh_broken or 'no refresh possible'}); run `ics2gw hmrc authorize`")
        return tokens.access_token

    async def refresh(self, session: aiohttp.ClientSession, *, reason: str, stale: str | None = None) -> TokenSet:
        """Refreshes once, whoever asks; ``stale`` (the access token HMRC just refused) avoids a second refresh
        when another task has already replaced it."""
        async with self._lock:
            fd = self.store.open_lock()
            try:
                while True:     # not a blocking flock in a thread: a cancelled wait must not leave it held
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.05)
                return await self._refresh_locked(session, reason=reason, stale=stale)
            finally:
                os.close(fd)    # releases the lock

    async def _refresh_locked(self, session: aiohttp.ClientSession, *, reason: str, stale: str | None) -> TokenSet:
        """One refresh, holding the in-process and the cross-process lock."""
        tokens = self.current()      # re-read under the lock: another process may have refreshed already
        if stale is not None and tokens.access_token != stale and tokens.valid(self.clock()):
            return tokens
        if reason == "due" and not tokens.due_for_refresh(self.clock(), fraction=self.refresh_fraction):
            return tokens
        tokens = self.store.mark_refresh_started(tokens, self.clock())
        self._tokens, self._fp = tokens, self.store.fingerprint()
        try:
            status, doc = await _token_request(session, self.settings, {
                "grant_type": "refresh_token", "refresh_token": tokens.refresh_token})
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("hmrc token refresh failed, will retry error=%s", type(exc).__name__)
            return tokens
        crash_point("refresh-answered")   # HMRC has rotated; the new pair exists only in this process
        if status == 200:
            try:
                new = TokenSet.from_grant(doc, now=self.clock(), generation=tokens.generation + 1)
            except TokenStoreError as exc:
                self._broken(f"unusable token response: {exc}")
                return tokens
            self.store.save(new)          # durable before the new access token is used anywhere
            crash_point("refresh-saved")
            self._tokens, self._fp = new, self.store.fingerprint()
            self.refresh_broken = None
            self.refreshes += 1
            log.info("hmrc token refreshed generation=%d expires_in=%.0f reason=%s", new.generation,
                     new.lifetime(), reason)
            return new
        err = doc.get("error", "")
        if status in (400, 401) and err in ("invalid_grant", "invalid_client", "unauthorized_client", ""):
            self._broken(f"HMRC refused the refresh token (HTTP {status} {err or 'no error code'})")
            cleared = replace(tokens, refresh_started_at=None)
            self.store.save(cleared)
            self._tokens, self._fp = cleared, self.store.fingerprint()
            return cleared
        log.warning("hmrc token refresh failed, will retry status=%d error=%s", status, err)
        return tokens

    def _broken(self, why: str) -> None:
        self.refresh_broken = why
        left = self._tokens.seconds_left(self.clock()) if self._tokens else 0
        log.error("hmrc authorisation needed reason=%r access_seconds_left=%.0f", why, left)
        self.on_alert("hmrc-authorisation-needed", category="A", reason=why,
                      access_seconds_left=round(left), action="run `ics2gw hmrc authorize`")
