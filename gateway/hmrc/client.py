"""The HMRC S&S GB REST client on aiohttp: submissions, outcomes and notifications, each with a typed result.

HTTP statuses, as the API definitions and HMRC's reference guide describe them:

=====  ==========================================================  ==================================
200    accepted for risking; the CorrelationId comes back          ``Submitted``
400    schema or business-rule errors (``err:ErrorResponse``)      ``Refused`` with findings
401    the access token was refused                                refresh once and repeat, else hold
403    the EORI is not enrolled or MesSenMES3 is not ours          ``Refused``
404    unknown MRN (amendment) or unknown resource                 ``Refused``
406    Accept header not accepted                                  ``Refused`` (a configuration bug)
413    body too large                                              ``Refused``
415    Content-Type not accepted                                   ``Refused``
429    rate limit                                                  ``RetryLater`` (Retry-After honoured)
5xx    HMRC unavailable                                            ``RetryLater``
=====  ==========================================================  ==================================

A network failure or timeout is ``RetryLater`` too: a POST that may have reached HMRC is sent again, which
HMRC's LRN uniqueness check (R891, surfacing as an IE316) covers; the journal keeps every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.hmrc import protocol
from gateway.hmrc.oauth import AuthorisationNeeded, TokenManager
from gateway.transport.retryafter import parse_retry_after

log = logging.getLogger("ics2gw.hmrc.client")

_PERMANENT = {400: "rejected", 403: "forbidden", 404: "not found", 406: "not acceptable (Accept header)",
              413: "request too large", 415: "unsupported media type (Content-Type)"}
MAX_ANSWER_BYTES = protocol.MAX_DOCUMENT_BYTES


class AnswerUnreadable(aiohttp.ClientPayloadError):
    """HMRC's status line arrived but its body did not (too large, cut off, timed out). ``status`` says what HMRC
    had answered: for a 200 to a submission it means HMRC has the filing, so it must not be sent again."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(f"HTTP {status} answer unreadable: {why}")
        self.status = status


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body (after content decoding), at most ``limit`` bytes. ``resp.content.read(n)`` is not this: it
    returns as soon as *some* bytes are buffered, so a body that comes in several TCP segments was cut short."""
    if resp.content_length is not None and resp.content_length > limit:
        raise AnswerUnreadable(resp.status, f"Content-Length {resp.content_length} exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise AnswerUnreadable(resp.status, f"answer larger than {limit} bytes")
            chunks.append(chunk)
    except AnswerUnreadable:
        raise
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise AnswerUnreadable(resp.status, f"{type(exc).__name__}: {exc}") from None
    return b"".join(chunks)


@dataclass(frozen=True)
class Submitted:
    correlation_id: str
    raw: bytes = field(repr=False)
    content_type: str | None = None
    http_status: int = 200

    def classification(self) -> tuple[str, str, str | None]:
        return "receipted", f"HMRC accepted the submission, correlation id {self.correlation_id}", None


@dataclass(frozen=True)
class Refused:
    http_status: int
    reason: str
    findings: tuple[dict[str, Any], ...] = ()
    raw: bytes = field(repr=False, default=b"")
    content_type: str | None = None

    def classification(self) -> tuple[str, str, str | None]:
        return "permanent", f"HMRC HTTP {self.http_status}: {self.reason}", None


@dataclass(frozen=True)
class RetryLater:
    reason: str
    http_status: int | None = None
    retry_after: float | None = None
    raw: bytes = field(repr=False, default=b"")
    content_type: str | None = None

    def classification(self) -> tuple[str, str, str | None]:
        status = f"HTTP {self.http_status}: " if self.http_status else ""
        return "retry", f"HMRC {status}{self.reason}", None


@dataclass(frozen=True)
class NotAuthorised:
    reason: str
    raw: bytes = field(repr=False, default=b"")
    content_type: str | None = None

    def classification(self) -> tuple[str, str, str | None]:
        return "hold", f"HMRC authorisation: {self.reason} - run `ics2gw hmrc authorize`, then `ics2gw resend`", None


SubmitResult = Submitted | Refused | RetryLater | NotAuthorised


class HmrcClient:
    def __init__(self, base_url: str, tokens: TokenManager, *, ca_file: Path | None = None,
                 timeout_seconds: float = 30.0, test_headers: dict[str, str] | None = None,
                 client_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.test_headers = dict(test_headers or {})
        self.client_id = client_id
        self._ssl: ssl.SSLContext | bool = True
        if ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(ca_file))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout,
                                                  connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, *, body: bytes | None = None,
                       extra: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        """One authorised request; a 401 refreshes the token once and repeats. Raises ``AuthorisationNeeded``
        when no token works, ``aiohttp.ClientError`` / ``asyncio.TimeoutError`` on transport failures."""
        session = await self.session()
        for attempt in (1, 2):
            bearer = await self.tokens.bearer(session)
            headers = {"Accept": protocol.ACCEPT, "Authorization": f"Bearer {bearer}", **(extra or {})}
            if body is not None:
                headers["Content-Type"] = protocol.CONTENT_TYPE
            async with session.request(method, self.base_url + path, data=body, headers=headers,
                                       allow_redirects=False) as resp:
                data = await _read_capped(resp, MAX_ANSWER_BYTES)
                if resp.status == 401 and attempt == 1:
                    log.info("hmrc refused the access token; refreshing path=%s", path)
                    await self.tokens.refresh(session, reason="401", stale=bearer)
                    continue
                return resp.status, data, {k.lower(): v for k, v in resp.headers.items()}
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------ submissions
    async def submit(self, declaration: bytes, *, kind: str, mrn: str | None = None) -> SubmitResult:
        """POST an IE315, or PUT an IE313 to ``/declarations/{mrn}``."""
        if kind == "IE313":
            if not mrn or not protocol.MRN_RE.match(mrn):
                return Refused(0, f"an IE313 needs the MRN of the ENS it amends, not {mrn!r}")
            method, path = "PUT", protocol.DECLARATIONS + mrn
        else:
            method, path = "POST", protocol.DECLARATIONS
        extra = dict(self.test_headers)
        if self.client_id:
            extra["X-Client-Id"] = self.client_id
        try:
            status, data, headers = await self._request(method, path, body=declaration, extra=extra)
        except AuthorisationNeeded as exc:
            return NotAuthorised(str(exc))
        except AnswerUnreadable as exc:
            if 200 <= exc.status < 300:
                # HMRC said yes and the correlation id was lost on the way: sending again would file twice
                return Refused(exc.status, f"success response unreadable ({exc}) - check the filing with HMRC "
                                           "before resending")
            return RetryLater(f"answer unreadable: {exc}", exc.status)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return RetryLater(f"transport failure: {type(exc).__name__}: {exc}")
        ct = headers.get("content-type")
        if status == 200:
            try:
                return Submitted(protocol.parse_success(data), data, ct)
            except protocol.ProtocolError as exc:
                # HMRC said yes but we cannot read the correlation id: sending again would file twice
                return Refused(status, f"unreadable success response: {exc} - check the filing with HMRC "
                                       "before resending", raw=data, content_type=ct)
        if status == 401:
            return NotAuthorised("HMRC refused a freshly refreshed access token (HTTP 401)", data, ct)
        if status == 429:
            return RetryLater("rate limited", status, parse_retry_after(headers.get("retry-after")), data, ct)
        if status >= 500 or status in (408, 425):
            return RetryLater("HMRC unavailable", status, parse_retry_after(headers.get("retry-after")), data, ct)
        if status == 400:
            errors = protocol.parse_error_response(data)
            findings = tuple(e.as_finding() for e in errors)
            return Refused(status, f"{len(errors)} error(s): {errors[0].number} {errors[0].text}", findings, data, ct)
        code, message = protocol.parse_simple_error(data)
        why = _PERMANENT.get(status, "unexpected status")
        return Refused(status, f"{why}{': ' + code if code else ''}{' ' + message if message else ''}",
                       ({"code": code or str(status), "rule": f"HTTP-{status}", "pointer": "/",
                         "text": message or why, "source": "HMRC"},), data, ct)

    # -------------------------------------------------------------------------------- outcomes / notifications
    async def _get_list(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        return await self._request("GET", path)

    async def list_outcomes(self) -> list[protocol.OutcomeRef]:
        status, data, headers = await self._get_list(protocol.OUTCOMES)
        if status == 204:
            return []
        _raise_for(status, headers, "outcome list")
        return protocol.parse_outcome_list(data)

    async def get_outcome(self, correlation_id: str) -> protocol.Outcome | None:
        cid = protocol.safe_id(correlation_id, "correlationId")
        status, data, headers = await self._request("GET", protocol.OUTCOMES + cid)
        if status == 404:
            return None
        _raise_for(status, headers, "outcome")
        return protocol.parse_wrapped(data)

    async def ack_outcome(self, correlation_id: str) -> bool:
        """DELETE: True if HMRC acknowledged it now, False if it was already gone (404: acknowledged before)."""
        cid = protocol.safe_id(correlation_id, "correlationId")
        status, _, headers = await self._request("DELETE", protocol.OUTCOMES + cid)
        if status == 404:
            return False
        _raise_for(status, headers, "outcome acknowledgement")
        return True

    async def list_notifications(self) -> list[protocol.NotificationRef]:
        status, data, headers = await self._get_list(protocol.NOTIFICATIONS)
        if status == 204:
            return []
        _raise_for(status, headers, "notification list")
        return protocol.parse_notification_list(data)

    async def get_notification(self, notification_id: str) -> protocol.Outcome | None:
        nid = protocol.safe_id(notification_id, "notificationId")
        status, data, headers = await self._request("GET", protocol.NOTIFICATIONS + nid)
        if status == 404:
            return None
        _raise_for(status, headers, "notification")
        return protocol.parse_wrapped(data, notification=True)

    async def ack_notification(self, notification_id: str) -> bool:
        nid = protocol.safe_id(notification_id, "notificationId")
        status, _, headers = await self._request("DELETE", protocol.NOTIFICATIONS + nid)
        if status == 404:
            return False
        _raise_for(status, headers, "notification acknowledgement")
        return True


class PollError(Exception):
    """A poll request failed; ``retry_after`` (seconds) when HMRC asked for a pause, ``transient`` if a later
    poll may succeed."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 transient: bool = True) -> None:
        super().__init__(message)
        self.status, self.retry_after, self.transient = status, retry_after, transient


def _raise_for(status: int, headers: dict[str, str], what: str) -> None:
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500:
        raise PollError(f"HMRC {what}: HTTP {status}", status=status,
                        retry_after=parse_retry_after(headers.get("retry-after")))
    if status == 401:
        raise AuthorisationNeeded(f"HMRC {what}: access token refused after a refresh (HTTP 401)")
    raise PollError(f"HMRC {what}: HTTP {status} ({_PERMANENT.get(status, 'unexpected status')})", status=status,
                    transient=False)
