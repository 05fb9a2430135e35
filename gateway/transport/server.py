"""The inbound side: customs pushes c2t messages to us (ICD 4.1.3.2, option A), plus the loopback health endpoint.

Why a single ``InboundSink``: the journal must make a received message durable *before* the receipt goes
back (DESIGN.md "durability first"), and duplicates (same eb:MessageId, AS4 reception awareness) must get
the receipt that was stored the first time. Both decisions belong to the sink; this module only verifies,
answers, and never hands a ping to the business side (eDelivery 1.4.2.4).

``InboundProcessor`` is the protocol core shared by the HTTPS server and the puller: verify (engine), match
the P-Mode, build the signed receipt, call ``sink.deliver``, and produce the answer: the receipt, or a signed
ebMS Error (EBMS:0202 DeliveryFailure when the sink raised: eDelivery 1.4.3.2 forbids a receipt for a message
that could not be processed).

HTTP statuses of our answers: 200 with the signed receipt; 500 with a signed ebMS Error signal (the SOAP 1.2
HTTP binding convention for a refused message, also what Domibus does); 413 without reading the body when
the request is over ``max_request_bytes``; 404/405 for wrong paths or methods (plain text).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from gateway.ebms.constants import DEFAULT_MPC
from gateway.ebms.engine import Engine, InboundMessage, OutboundMessage
from gateway.ebms.errors import EbmsFault
from gateway.ops import metrics as ops_metrics
from gateway.transport.config import InboundConfig, ListenAddress, TransportConfig
from gateway.transport.logfmt import log
from gateway.transport.tls import peer_summary, server_context

try:  # the P-Mode module is optional for this layer (tests may run without P-Modes)
    from gateway.pmode import PModeSet
except ImportError:  # pragma: no cover
    PModeSet = Any  # type: ignore[misc,assignment]


# ------------------------------------------------------------------------------------------------ sink
@dataclass(frozen=True)
class DeliveryResult:
    """What the sink answers: the receipt bytes to send back (fresh, or stored for a duplicate)."""
    receipt_content_type: str
    receipt_body: bytes = field(repr=False)
    duplicate: bool = False


class InboundSink(Protocol):
    """The pipeline's entry for received c2t messages; ``deliver`` must commit durably before returning."""

    async def deliver(self, message: InboundMessage, content_type: str, body: bytes, receipt: OutboundMessage,
                      channel: str) -> DeliveryResult: ...


@dataclass
class StoredMessage:
    message: InboundMessage
    content_type: str
    body: bytes = field(repr=False)
    channel: str = "push"


class MemorySink:
    """An in-memory sink for tests and standalone runs: keeps each message once, answers duplicates with the
    first receipt. ``fail_with`` makes ``deliver`` raise (to exercise EBMS:0202)."""

    def __init__(self) -> None:
        self.messages: dict[str, StoredMessage] = {}
        self.receipts: dict[str, tuple[str, bytes]] = {}
        self.order: list[str] = []
        self.fail_with: Exception | None = None
        self.arrived = asyncio.Event()

    async def deliver(self, message: InboundMessage, content_type: str, body: bytes, receipt: OutboundMessage,
                      channel: str) -> DeliveryResult:
        if self.fail_with is not None:
            raise self.fail_with
        mid = message.message_id
        if mid in self.receipts:
            ct, rb = self.receipts[mid]
            return DeliveryResult(ct, rb, duplicate=True)
        self.messages[mid] = StoredMessage(message, content_type, body, channel)
        self.receipts[mid] = (receipt.content_type, receipt.body)
        self.order.append(mid)
        self.arrived.set()
        return DeliveryResult(receipt.content_type, receipt.body)


# ------------------------------------------------------------------------------------------------ core
@dataclass(frozen=True)
class Answer:
    """The signal to return for one received message."""
    kind: str                      # "receipt" | "error"
    content_type: str
    body: bytes = field(repr=False)
    message_id: str | None = None  # of the received message
    signal_id: str | None = None   # of our receipt / error (None for a stored duplicate receipt)
    delivered: bool = False
    duplicate: bool = False
    ping: bool = False
    error_code: str | None = None
    reason: str | None = None

    @property
    def http_status(self) -> int:
        return 200 if self.kind == "receipt" else 500


class InboundProcessor:
    """Verifies one received message and produces the answer; shared by the push server and the puller."""

    def __init__(self, engine: Engine, sink: InboundSink, *, environment: str, pmodes: PModeSet | None = None) -> None:
        self.engine, self.sink, self.environment, self.pmodes = engine, sink, environment, pmodes

    async def _error(self, fault: EbmsFault, ref: str | None) -> Answer:
        out = await asyncio.to_thread(self.engine.error_signal, fault, ref_to_message_id=ref)
        return Answer("error", out.content_type, out.body, message_id=ref, signal_id=out.message_id,
                      error_code=fault.code, reason=fault.message)

    def _check(self, inbound: InboundMessage, channel: str, expected_mpc: str | None) -> None:
        um = inbound.messaging.user_message
        if um is None:
            raise EbmsFault("EBMS:0010", f"a {inbound.kind} signal was pushed to the c2t endpoint, which accepts "
                                         "user messages only (ICS2 signals are synchronous)",
                            ref_to_message_id=inbound.message_id)
        if expected_mpc is not None and (um.mpc or DEFAULT_MPC) != expected_mpc:
            raise EbmsFault("EBMS:0010", f"pulled message {um.message_id} is on MPC {um.mpc!r}, not on the MPC "
                                         f"pulled ({expected_mpc})", detail="mpc", ref_to_message_id=um.message_id)
        if self.pmodes is not None:
            pm = self.pmodes.match(um)
            if not um.is_ping and pm.is_pull != (channel == "pull"):
                raise EbmsFault("EBMS:0010", f"message {um.message_id} matches P-Mode {pm.id} "
                                             f"({'pull' if pm.is_pull else 'push'}) but arrived by {channel}",
                                ref_to_message_id=um.message_id)
        elif um.to_party.party_id != self.engine.party_id:
            raise EbmsFault("EBMS:0010", f"message {um.message_id} is addressed to {um.to_party.party_id}, not to "
                                         f"{self.engine.party_id}", ref_to_message_id=um.message_id)

    async def process(self, content_type: str, body: bytes, *, channel: str = "push",
                      opened: InboundMessage | None = None, fault: EbmsFault | None = None,
                      expected_mpc: str | None = None, peer: str | None = None) -> Answer:
        """The whole receive path for one message; never raises for anything the peer sent."""
        if fault is None and opened is None:
            try:
                opened = await asyncio.to_thread(self.engine.open, content_type, body)
            except EbmsFault as exc:
                fault = exc
        if fault is not None:
            answer = await self._error(fault, fault.ref_to_message_id)
            self._log(channel, answer, peer)
            return answer
        assert opened is not None
        try:
            self._check(opened, channel, expected_mpc)
            receipt = await asyncio.to_thread(self.engine.receipt_for, opened)
        except EbmsFault as exc:
            answer = await self._error(exc, exc.ref_to_message_id or opened.message_id)
            self._log(channel, answer, peer)
            return answer
        um = opened.messaging.user_message
        assert um is not None
        if um.is_ping:  # eDelivery 1.4.2.4: answered, never delivered to the business side
            answer = Answer("receipt", receipt.content_type, receipt.body, message_id=um.message_id,
                            signal_id=receipt.message_id, ping=True)
            self._log(channel, answer, peer)
            return answer
        try:
            result = await self.sink.deliver(opened, content_type, body, receipt, channel)
        except Exception as exc:  # noqa: BLE001 - any sink failure means "not processed": EBMS:0202
            log(logging.ERROR, "deliver_failed", self.environment, channel=channel, message_id=um.message_id,
                error=type(exc).__name__)
            answer = await self._error(EbmsFault("EBMS:0202", "the message could not be stored; it was not "
                                                 "processed, resend it", ref_to_message_id=um.message_id),
                                       um.message_id)
            self._log(channel, answer, peer)
            return answer
        answer = Answer("receipt", result.receipt_content_type, result.receipt_body, message_id=um.message_id,
                        signal_id=None if result.duplicate else receipt.message_id, delivered=True,
                        duplicate=result.duplicate)
        self._log(channel, answer, peer, action=um.action)
        return answer

    def _log(self, channel: str, answer: Answer, peer: str | None, **extra: Any) -> None:
        level = logging.INFO if answer.kind == "receipt" else logging.WARNING
        log(level, "receive", self.environment, channel=channel, message_id=answer.message_id, answer=answer.kind,
            ping=answer.ping or None, duplicate=answer.duplicate or None, code=answer.error_code,
            reason=answer.reason, peer=peer, **extra)
        ops_metrics.message_received(channel, extra.get("action"), answer.kind, duplicate=answer.duplicate,
                                     ping=answer.ping, error_code=answer.error_code)


# ------------------------------------------------------------------------------------------------ server
class InboundServer:
    """The HTTPS server for the ``eu_ics2_c2t`` push channel; binds every configured address (IPv4 and IPv6)."""

    def __init__(self, engine: Engine, sink: InboundSink, config: TransportConfig, *,
                 pmodes: PModeSet | None = None, ssl_context: Any = None,
                 listen: Sequence[ListenAddress] | None = None) -> None:
        self.config = config
        self.inbound: InboundConfig = config.inbound
        self.environment = config.environment
        self.processor = InboundProcessor(engine, sink, environment=config.environment, pmodes=pmodes)
        self.ssl_context = ssl_context if ssl_context is not None else server_context(config)
        self.listen = tuple(listen) if listen is not None else self.inbound.listen
        self.bound: list[ListenAddress] = []
        self._runner: web.AppRunner | None = None
        self._slots = asyncio.Semaphore(self.inbound.max_concurrent)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.inbound.max_request_bytes)
        app.router.add_route("*", self.inbound.path, self.handle)
        return app

    async def start(self) -> list[ListenAddress]:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        for addr in self.listen:
            site = web.TCPSite(self._runner, addr.host, addr.port, ssl_context=self.ssl_context,
                               reuse_address=True, backlog=128)
            await site.start()
            server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port
            for sock in getattr(server, "sockets", None) or ():
                self.bound.append(ListenAddress(addr.host, sock.getsockname()[1]))
        log(logging.INFO, "inbound_listening", self.environment, addresses=",".join(map(str, self.bound)),
            path=self.inbound.path)
        return self.bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> InboundServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, index: int = 0) -> str:
        a = self.bound[index]
        host = f"[{a.host}]" if ":" in a.host else a.host
        return f"https://{host}:{a.port}{self.inbound.path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = peer_summary(request.transport.get_extra_info("ssl_object") if request.transport else None)
        peer_name = peer.get("peer_subject") or "?"
        if request.method != "POST":
            return web.Response(status=405, text="AS4 endpoint: POST only\n", headers={"Allow": "POST"})
        declared = request.content_length
        if declared is not None and declared > self.inbound.max_request_bytes:
            log(logging.WARNING, "receive_too_large", self.environment, peer=peer_name, bytes=declared,
                limit=self.inbound.max_request_bytes)
            return web.Response(status=413, text=f"request over {self.inbound.max_request_bytes} bytes\n")
        async with self._slots:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                log(logging.WARNING, "receive_too_large", self.environment, peer=peer_name,
                    limit=self.inbound.max_request_bytes)
                return web.Response(status=413, text=f"request over {self.inbound.max_request_bytes} bytes\n")
            content_type = request.headers.get("Content-Type", "")
            answer = await self.processor.process(content_type, body, channel="push", peer=peer_name)
        return web.Response(status=answer.http_status, body=answer.body,
                            headers={"Content-Type": answer.content_type})


# ------------------------------------------------------------------------------------------------ health
class HealthServer:
    """Plain-HTTP ``GET /health`` on a loopback port: environment, listening addresses, pull state."""

    def __init__(self, address: ListenAddress, environment: str,
                 status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.address, self.environment, self.status = address, environment, status
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _health(self, request: web.Request) -> web.Response:
        doc: dict[str, Any] = {"status": "ok", "environment": self.environment}
        if self.status is not None:
            try:
                doc.update(self.status())
            except Exception as exc:  # noqa: BLE001 - a broken probe makes the service unhealthy, not dead
                doc.update(status="error", error=type(exc).__name__)
        return web.Response(status=200 if doc.get("status") == "ok" else 503, text=json.dumps(doc) + "\n",
                            content_type="application/json")

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address.host, self.address.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
