"""The AS4 HTTPS client: pushes sealed messages to a Trader Interface and turns every answer into a typed outcome.

Why typed outcomes (DESIGN.md): the filing pipeline must decide what a send means (done, retry later, give
up, alert) without catching transport exceptions. Nothing here raises for anything the network or the peer
does; every HTTP status and every body (a signed receipt, an ebMS error, a proxy's HTML page, an empty 200)
maps to exactly one of:

- ``ReceiptOk``: a signed receipt that refers to our message and echoes exactly the digests we signed;
- ``EbmsErrorOutcome``: an ebMS Error signal (signed or not), with code, severity, UUM&DS sub-code and
  whether resending can ever help (``gateway.ebms.errors.is_permanent``);
- ``TransportFailure``: no usable AS4 answer (connection, TLS, timeout, HTTP status, non-AS4 body), with
  ``retryable``;
- ``InvalidReceipt``: something AS4-shaped came back that is not acceptable evidence (EBMS:0302 & co).

Pulling (``pull``) adds ``PulledMessage``, ``EmptyChannel`` (EBMS:0006) and ``InvalidMessage`` (a pulled message
that fails verification; the puller answers it with a signed error). ``post_signal`` sends the receipt or
error for a pulled message (eDelivery 1.5.5.3) and returns ``SignalAccepted`` when the TI took it.

One aiohttp session per client: connection pooling with keep-alive, one SSL context per endpoint (2-way
TLS from ``[tls]``), connect and total timeouts per endpoint, an optional forward proxy (CONNECT). The CPU
work of verification runs in a worker thread (``asyncio.to_thread``) so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from gateway import __version__
from gateway.ebms.constants import DEFAULT_MPC, NS_SOAP12
from gateway.ebms.engine import Engine, InboundMessage, OutboundMessage
from gateway.ebms.errors import EbmsFault, find_sub_code, is_permanent_error
from gateway.ebms.model import EbmsError, ErrorSignal, Receipt
from gateway.ops import metrics as ops_metrics
from gateway.transport.config import Endpoint, TransportConfig
from gateway.transport.logfmt import log
from gateway.transport.retryafter import parse_retry_after
from gateway.transport.tls import client_context, describe_tls_error

USER_AGENT = f"ics2gw/{__version__}"
_AS4_TYPES = ("multipart/related", "application/soap+xml", "text/xml", "application/xml")


# ------------------------------------------------------------------------------------------------ outcomes
@dataclass(frozen=True)
class ReceiptOk:
    receipt: Receipt
    http_status: int
    elapsed: float
    content_type: str = ""
    body: bytes = field(default=b"", repr=False)       # the signed receipt as received: NRR evidence to keep
    inbound: InboundMessage | None = field(default=None, repr=False)


@dataclass(frozen=True)
class EbmsErrorOutcome:
    errors: tuple[EbmsError, ...]
    signed: bool
    permanent: bool
    sub_code: str | None
    http_status: int
    elapsed: float = 0.0
    ref_to_message_id: str | None = None
    content_type: str = ""
    body: bytes = field(default=b"", repr=False)

    @property
    def code(self) -> str:
        return self.errors[0].error_code if self.errors else ""

    @property
    def severity(self) -> str:
        return self.errors[0].severity if self.errors else ""

    @property
    def description(self) -> str:
        e = self.errors[0] if self.errors else None
        return (e.description or e.error_detail or e.short_description or "") if e else ""


@dataclass(frozen=True)
class TransportFailure:
    cause: str
    retryable: bool
    http_status: int | None = None
    kind: str = "connect"          # connect | tls | timeout | http | protocol | proxy | too-large
    elapsed: float = 0.0
    retry_after: float | None = None   # seconds the peer asked us to wait (Retry-After on 429 / 503), bounded


@dataclass(frozen=True)
class InvalidReceipt:
    fault: EbmsFault
    http_status: int = 200
    elapsed: float = 0.0
    content_type: str = ""
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class PulledMessage:
    inbound: InboundMessage = field(repr=False)
    content_type: str
    body: bytes = field(repr=False)
    http_status: int
    elapsed: float = 0.0

    @property
    def message_id(self) -> str:
        return self.inbound.message_id


@dataclass(frozen=True)
class EmptyChannel:
    error: EbmsError
    elapsed: float = 0.0


@dataclass(frozen=True)
class InvalidMessage:
    """A pulled message we refuse: the puller answers it with a signed error carrying ``fault``."""
    fault: EbmsFault
    content_type: str
    body: bytes = field(repr=False)
    http_status: int = 200


@dataclass(frozen=True)
class SignalAccepted:
    http_status: int
    elapsed: float = 0.0


SendOutcome = ReceiptOk | EbmsErrorOutcome | TransportFailure | InvalidReceipt
PullOutcome = PulledMessage | EmptyChannel | InvalidMessage | EbmsErrorOutcome | TransportFailure
AckOutcome = SignalAccepted | EbmsErrorOutcome | TransportFailure


def outcome_name(outcome: object) -> str:
    return {ReceiptOk: "receipt-ok", EbmsErrorOutcome: "ebms-error", TransportFailure: "transport-failure",
            InvalidReceipt: "invalid-receipt", PulledMessage: "message", EmptyChannel: "empty",
            InvalidMessage: "invalid-message", SignalAccepted: "accepted"}.get(type(outcome), type(outcome).__name__)


@dataclass(frozen=True)
class _Raw:
    status: int
    content_type: str
    body: bytes
    elapsed: float
    retry_after: float | None = None


# ------------------------------------------------------------------------------------------------ helpers
def _http_failure(status: int, what: str, elapsed: float, retry_after: float | None = None) -> TransportFailure:
    """Classifies an HTTP answer that carries no usable AS4 signal."""
    if 200 <= status < 300:
        return TransportFailure(f"HTTP {status} {what}", retryable=True, http_status=status, kind="protocol",
                                elapsed=elapsed)
    if 300 <= status < 400:
        return TransportFailure(f"HTTP {status} redirect {what}: AS4 endpoints do not redirect; check the URL",
                                retryable=False, http_status=status, kind="http", elapsed=elapsed)
    if status in (408, 425, 429) or status >= 500:
        return TransportFailure(f"HTTP {status} {what}", retryable=True, http_status=status, kind="http",
                                elapsed=elapsed, retry_after=retry_after)
    hint = {401: ": the TI refused our credentials", 403: ": the TI refused our client certificate or address",
            404: ": wrong endpoint URL", 405: ": wrong endpoint URL or method",
            413: ": the message is larger than the TI accepts"}.get(status, "")
    return TransportFailure(f"HTTP {status} {what}{hint}", retryable=False, http_status=status, kind="http",
                            elapsed=elapsed)


def _looks_as4(content_type: str, body: bytes) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in _AS4_TYPES:
        return False
    return b"Envelope" in body[:65536] or media == "multipart/related"


def _soap_fault_reason(body: bytes) -> str | None:
    """The Reason text of a plain SOAP 1.2 Fault (no eb:Messaging), for the failure cause."""
    if b"Fault" not in body:
        return None
    try:
        from gateway.xmlsafe import parse_xml
        start = body.find(b"<")
        root = parse_xml(body[start:] if start >= 0 else body, max_bytes=len(body) + 1, what="SOAP fault")
    except Exception:  # noqa: BLE001 - any failure just means "no reason to show"
        return None
    text = root.find(".//{%s}Fault/{%s}Reason/{%s}Text" % (NS_SOAP12, NS_SOAP12, NS_SOAP12))
    return (text.text or "").strip()[:300] if text is not None else None


def error_outcome(inbound: InboundMessage, status: int, elapsed: float, content_type: str = "",
                  body: bytes = b"") -> EbmsErrorOutcome:
    errors: list[EbmsError] = []
    ref = None
    for s in inbound.messaging.signals:
        if isinstance(s, ErrorSignal):
            errors.extend(s.errors)
            ref = ref or s.ref_to_message_id
    failures = [e for e in errors if (e.severity or "").lower() != "warning"] or errors
    sub = None
    for e in errors:
        sub = sub or find_sub_code(e.error_detail, e.description, e.short_description)
    permanent = any(is_permanent_error(e) for e in failures)
    return EbmsErrorOutcome(errors=tuple(errors), signed=inbound.signed, permanent=permanent, sub_code=sub,
                            http_status=status, elapsed=elapsed, ref_to_message_id=ref,
                            content_type=content_type, body=body)


def _norm_mpc(mpc: str | None) -> str:
    return DEFAULT_MPC if not mpc else mpc


# ------------------------------------------------------------------------------------------------ client
class As4Client:
    """Sends sealed messages to the configured endpoints over 2-way TLS. Use as an async context manager."""

    def __init__(self, engine: Engine, config: TransportConfig, *, pool_size: int = 16,
                 keepalive_timeout: float = 30.0, max_response_bytes: int | None = None) -> None:
        self.engine, self.config = engine, config
        self.environment = config.environment
        self.pool_size, self.keepalive_timeout = pool_size, keepalive_timeout
        self.max_response_bytes = max_response_bytes or engine.limits.recv_max_message_bytes
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> As4Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_for(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size,
                                             keepalive_timeout=self.keepalive_timeout, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT},
                                                  auto_decompress=False, trust_env=False)
        return self._session

    def ssl_context(self, endpoint: Endpoint) -> ssl.SSLContext:
        ctx = self._ssl.get(endpoint.name)
        if ctx is None:
            ctx = self._ssl[endpoint.name] = client_context(self.config, endpoint)
        return ctx

    def _check_environment(self, endpoint: Endpoint) -> TransportFailure | None:
        if endpoint.environment != self.environment:
            return TransportFailure(f"endpoint {endpoint.name} belongs to {endpoint.environment}, this gateway runs "
                                    f"{self.environment}: refused (eDelivery 1.4.4.7)", retryable=False,
                                    kind="config")
        return None

    # -------------------------------------------------------------------------------------------- HTTP
    async def _post(self, endpoint: Endpoint, content_type: str, body: bytes, message_id: str) -> _Raw | TransportFailure:
        bad_env = self._check_environment(endpoint)
        if bad_env is not None:
            return bad_env
        timeout = aiohttp.ClientTimeout(total=endpoint.total_timeout, sock_connect=endpoint.connect_timeout,
                                        connect=endpoint.connect_timeout + self.config.tls.handshake_timeout)
        kwargs: dict[str, object] = {}
        if endpoint.proxy:
            kwargs["proxy"] = endpoint.proxy
            if endpoint.proxy_user:
                kwargs["proxy_auth"] = aiohttp.BasicAuth(endpoint.proxy_user, endpoint.proxy_password or "")
        if endpoint.server_name:
            kwargs["server_hostname"] = endpoint.server_name
        start = time.perf_counter()
        try:
            ctx = self.ssl_context(endpoint)
        except Exception as exc:  # noqa: BLE001 - a broken key file is a configuration failure, not a crash
            return TransportFailure(f"TLS set-up failed: {exc}", retryable=False, kind="tls")
        try:
            async with self._session_for().post(endpoint.url, data=body, ssl=ctx, timeout=timeout,
                                                allow_redirects=False,
                                                headers={"Content-Type": content_type, "MIME-Version": "1.0"},
                                                **kwargs) as resp:  # type: ignore[arg-type]
                declared = resp.content_length
                if declared is not None and declared > self.max_response_bytes:
                    return TransportFailure(f"the response announces {declared} bytes, over the limit of "
                                            f"{self.max_response_bytes}", retryable=False, http_status=resp.status,
                                            kind="too-large", elapsed=time.perf_counter() - start)
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        return TransportFailure(f"the response exceeds {self.max_response_bytes} bytes",
                                                retryable=False, http_status=resp.status, kind="too-large",
                                                elapsed=time.perf_counter() - start)
                    chunks.append(chunk)
                return _Raw(resp.status, resp.headers.get("Content-Type", ""), b"".join(chunks),
                            time.perf_counter() - start, parse_retry_after(resp.headers.get("Retry-After")))
        except aiohttp.ClientConnectorCertificateError as exc:
            cause = describe_tls_error(exc.certificate_error)
            return TransportFailure(f"TLS: {cause}", retryable=False, kind="tls", elapsed=time.perf_counter() - start)
        except aiohttp.ClientSSLError as exc:
            cause = describe_tls_error(exc)
            return TransportFailure(f"TLS: {cause}", retryable=False, kind="tls", elapsed=time.perf_counter() - start)
        except aiohttp.ClientProxyConnectionError as exc:
            return TransportFailure(f"cannot reach the proxy {endpoint.proxy}: {exc}", retryable=True, kind="proxy",
                                    elapsed=time.perf_counter() - start)
        except aiohttp.ClientHttpProxyError as exc:
            return TransportFailure(f"the proxy refused the tunnel: HTTP {exc.status} {exc.message}",
                                    retryable=exc.status != 407, http_status=exc.status, kind="proxy",
                                    elapsed=time.perf_counter() - start)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ssl.SSLError):
                return TransportFailure(f"TLS: {describe_tls_error(exc.os_error)}", retryable=False, kind="tls",
                                        elapsed=time.perf_counter() - start)
            return TransportFailure(f"cannot connect to {endpoint.host}:{exc.port}: {exc.os_error.strerror or exc}",
                                    retryable=True, kind="connect", elapsed=time.perf_counter() - start)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return TransportFailure(f"no complete answer within the timeouts (connect {endpoint.connect_timeout}s, "
                                    f"total {endpoint.total_timeout}s)", retryable=True, kind="timeout",
                                    elapsed=time.perf_counter() - start)
        except aiohttp.ClientResponseError as exc:
            return TransportFailure(f"malformed HTTP response: {exc.message}", retryable=True, kind="protocol",
                                    elapsed=time.perf_counter() - start)
        except (aiohttp.ClientError, OSError) as exc:
            if isinstance(exc, ssl.SSLError) or isinstance(getattr(exc, "__cause__", None), ssl.SSLError):
                return TransportFailure(f"TLS: {describe_tls_error(exc)}", retryable=False, kind="tls",
                                        elapsed=time.perf_counter() - start)
            return TransportFailure(f"connection failed: {type(exc).__name__}: {exc}", retryable=True,
                                    kind="connect", elapsed=time.perf_counter() - start)

    async def _open(self, raw: _Raw) -> InboundMessage | EbmsFault:
        try:
            return await asyncio.to_thread(self.engine.open, raw.content_type, raw.body, accept_unsigned_errors=True)
        except EbmsFault as fault:
            return fault

    def _log(self, event: str, endpoint: Endpoint, message_id: str, outcome: object, **extra: object) -> None:
        fields: dict[str, object] = {"endpoint": endpoint.name, "message_id": message_id,
                                     "outcome": outcome_name(outcome)}
        status = getattr(outcome, "http_status", None)
        elapsed = getattr(outcome, "elapsed", None)
        if status is not None:
            fields["http_status"] = status
        if elapsed is not None:
            fields["elapsed_ms"] = round(elapsed * 1000, 1)
        if isinstance(outcome, EbmsErrorOutcome):
            fields.update(code=outcome.code, severity=outcome.severity, signed=outcome.signed,
                          permanent=outcome.permanent, sub_code=outcome.sub_code)
        elif isinstance(outcome, TransportFailure):
            fields.update(kind=outcome.kind, retryable=outcome.retryable, cause=outcome.cause)
        elif isinstance(outcome, (InvalidReceipt, InvalidMessage)):
            fields.update(code=outcome.fault.code, cause=outcome.fault.message)
        fields.update(extra)
        ok = isinstance(outcome, (ReceiptOk, PulledMessage, EmptyChannel, SignalAccepted))
        log(logging.INFO if ok else logging.WARNING, event, self.environment, **fields)
        ops_metrics.exchange(endpoint.name, "ping" if extra.get("kind") == "ping" else event, outcome)

    # -------------------------------------------------------------------------------------------- push
    async def send(self, endpoint: Endpoint, message: OutboundMessage) -> SendOutcome:
        """Pushes a sealed user message (or ping) and classifies the synchronous answer."""
        raw = await self._post(endpoint, message.content_type, message.body, message.message_id)
        outcome = await self._classify_send(raw, message)
        self._log("send", endpoint, message.message_id, outcome, kind=message.kind)
        return outcome

    async def _open_answer(self, raw: _Raw | TransportFailure, empty: str,
                           what: str) -> InboundMessage | EbmsFault | TransportFailure:
        """The steps every answer goes through: transport failure, empty or non-AS4 body, then the engine.
        An unreadable signal with an HTTP error status is a transport failure; with 2xx the caller decides."""
        if isinstance(raw, TransportFailure):
            return raw
        if not raw.body.strip():
            return _http_failure(raw.status, empty, raw.elapsed, raw.retry_after)
        if not _looks_as4(raw.content_type, raw.body):
            return _http_failure(raw.status, f"with a non-AS4 body ({raw.content_type or 'no Content-Type'})",
                                 raw.elapsed, raw.retry_after)
        opened = await self._open(raw)
        if isinstance(opened, EbmsFault) and raw.status >= 300:
            return _http_failure(raw.status, f"with a SOAP body that is not a readable ebMS {what} "
                                             f"({_soap_fault_reason(raw.body) or opened.message})", raw.elapsed,
                                 raw.retry_after)
        return opened

    async def _classify_send(self, raw: _Raw | TransportFailure, message: OutboundMessage) -> SendOutcome:
        opened = await self._open_answer(raw, "with an empty body: no receipt (EBMS:0301 MissingReceipt)", "signal")
        if isinstance(opened, TransportFailure):
            return opened
        assert isinstance(raw, _Raw)
        if isinstance(opened, EbmsFault):
            return InvalidReceipt(opened, raw.status, raw.elapsed, raw.content_type, raw.body)
        if opened.kind == "error":
            return error_outcome(opened, raw.status, raw.elapsed, raw.content_type, raw.body)
        if opened.kind == "receipt":
            try:
                receipt = await asyncio.to_thread(self.engine.check_receipt, opened, message)
            except EbmsFault as fault:
                return InvalidReceipt(fault, raw.status, raw.elapsed, raw.content_type, raw.body)
            return ReceiptOk(receipt, raw.status, raw.elapsed, raw.content_type, raw.body, opened)
        return InvalidReceipt(EbmsFault("EBMS:0302", f"the response is a {opened.kind}, not a receipt",
                                        ref_to_message_id=message.message_id),
                              raw.status, raw.elapsed, raw.content_type, raw.body)

    # -------------------------------------------------------------------------------------------- pull
    async def pull(self, endpoint: Endpoint, request: OutboundMessage, mpc: str) -> PullOutcome:
        """Sends a sealed PullRequest on ``mpc``; the answer is a user message, EBMS:0006, or a failure."""
        raw = await self._post(endpoint, request.content_type, request.body, request.message_id)
        outcome = await self._classify_pull(raw, mpc)
        extra = {"pulled_message_id": outcome.message_id} if isinstance(outcome, PulledMessage) else {}
        self._log("pull", endpoint, request.message_id, outcome, **extra)
        return outcome

    async def _classify_pull(self, raw: _Raw | TransportFailure, mpc: str) -> PullOutcome:
        opened = await self._open_answer(raw, "with an empty body to a PullRequest", "message")
        if isinstance(opened, TransportFailure):
            return opened
        assert isinstance(raw, _Raw)
        if isinstance(opened, EbmsFault):
            return InvalidMessage(opened, raw.content_type, raw.body, raw.status)
        if opened.kind == "error":
            out = error_outcome(opened, raw.status, raw.elapsed, raw.content_type, raw.body)
            empty = next((e for e in out.errors if e.error_code.upper() == "EBMS:0006"), None)
            if empty is not None and len(out.errors) == 1:
                return EmptyChannel(empty, raw.elapsed)
            return out
        um = opened.messaging.user_message
        if um is None:
            return InvalidMessage(EbmsFault("EBMS:0010", f"the answer to a PullRequest is a {opened.kind}, "
                                                         "not a user message"), raw.content_type, raw.body, raw.status)
        if _norm_mpc(um.mpc) != mpc:
            return InvalidMessage(EbmsFault("EBMS:0010", f"pulled message {um.message_id} is on MPC {um.mpc!r}, "
                                                         f"not on the MPC pulled ({mpc})",
                                            detail="mpc", ref_to_message_id=um.message_id),
                                  raw.content_type, raw.body, raw.status)
        return PulledMessage(opened, raw.content_type, raw.body, raw.status, raw.elapsed)

    # -------------------------------------------------------------------------------------------- signals
    async def post_signal(self, endpoint: Endpoint, content_type: str, body: bytes, *, message_id: str,
                          ref_to_message_id: str | None = None) -> AckOutcome:
        """POSTs a receipt or error for a pulled message to the pull URL (eDelivery 1.5.5.3)."""
        raw = await self._post(endpoint, content_type, body, message_id)
        outcome: AckOutcome
        if isinstance(raw, TransportFailure):
            outcome = raw
        elif 200 <= raw.status < 300 and not raw.body.strip():
            outcome = SignalAccepted(raw.status, raw.elapsed)
        elif _looks_as4(raw.content_type, raw.body):
            opened = await self._open(raw)
            if isinstance(opened, InboundMessage) and opened.kind == "error":
                outcome = error_outcome(opened, raw.status, raw.elapsed, raw.content_type, raw.body)
            elif 200 <= raw.status < 300:
                outcome = SignalAccepted(raw.status, raw.elapsed)
            else:
                outcome = _http_failure(raw.status, "to our signal", raw.elapsed, raw.retry_after)
        elif 200 <= raw.status < 300:
            outcome = SignalAccepted(raw.status, raw.elapsed)
        else:
            outcome = _http_failure(raw.status, "to our signal", raw.elapsed, raw.retry_after)
        self._log("ack", endpoint, message_id, outcome, ref_to_message_id=ref_to_message_id)
        return outcome


def summarize(outcome: object) -> dict[str, object]:
    """A JSON-ready description of any outcome (for the CLI and the journal)."""
    d: dict[str, object] = {"outcome": outcome_name(outcome)}
    for name in ("http_status", "elapsed", "signed", "permanent", "sub_code", "retryable", "kind", "cause",
                 "ref_to_message_id"):
        v = getattr(outcome, name, None)
        if v is not None:
            d[name] = round(v * 1000, 1) if name == "elapsed" else v
    if "elapsed" in d:
        d["elapsed_ms"] = d.pop("elapsed")
    if isinstance(outcome, EbmsErrorOutcome):
        d["errors"] = [{"code": e.error_code, "severity": e.severity, "short_description": e.short_description,
                        "description": e.description, "detail": e.error_detail} for e in outcome.errors]
    if isinstance(outcome, (InvalidReceipt, InvalidMessage)):
        d.update(code=outcome.fault.code, cause=outcome.fault.message)
    if isinstance(outcome, ReceiptOk):
        d["receipt_message_id"] = outcome.receipt.message_id
        d["ref_to_message_id"] = outcome.receipt.ref_to_message_id
    return d


__all__: Sequence[str] = (
    "As4Client", "ReceiptOk", "EbmsErrorOutcome", "TransportFailure", "InvalidReceipt", "PulledMessage",
    "EmptyChannel", "InvalidMessage", "SignalAccepted", "SendOutcome", "PullOutcome", "AckOutcome",
    "outcome_name", "summarize", "error_outcome",
)
