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

Slow and large peers (docs/security.md "Daemon robustness"). Any client whose certificate the TLS layer
accepts can open connections, so nothing a connection does may hold a resource another peer needs:

- every connection is wrapped by ``_ConnectionGuard``, which sees every decrypted byte: the TLS handshake and
  then each request (headers and body, from its first byte) must complete within ``read_timeout_seconds``,
  and after ``rate_grace_seconds`` a request arriving slower than ``min_rate_bytes_per_second`` is cut; an
  idle keep-alive connection is closed after ``read_timeout_seconds``;
- at most ``max_connections`` connections in total and ``max_connections_per_peer`` per client IP address;
  more are closed at once (logged, with the peer);
- the body is spooled to a temporary file as it arrives (never held in memory while it trickles in), and only
  then does the request take one of ``max_concurrent`` processing slots and reserve its size from the
  ``max_inflight_bytes`` budget: slow peers hold a socket and a file, never a slot; a large body is mapped
  (``mmap``) for verification rather than copied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import tempfile
import time
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
    """The pipeline's entry for received c2t messages; ``deliver`` must commit durably before returning.

    ``body`` may be a ``memoryview`` of a mapped temporary file that is closed once ``deliver`` returns: a sink
    that keeps the bytes beyond the call must copy them."""

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
    first receipt. ``fail_with`` makes ``deliver`` raise (to exercise EBMS:0202). It copies ``body``: a body
    is only valid during ``deliver`` (the server may hand a view of a mapped file)."""

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
        self.messages[mid] = StoredMessage(message, content_type, bytes(body), channel)
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
        # told of every sink outcome (the exception, or None for a delivery): the daemon alerts on storage faults
        self.sink_watch: Callable[[BaseException | None], None] | None = None

    def _watch(self, exc: BaseException | None) -> None:
        if self.sink_watch is not None:
            try:
                self.sink_watch(exc)
            except Exception:  # noqa: BLE001 - a broken watcher must not change the answer
                logging.getLogger("ics2gw.transport").exception("sink watch failed")

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
            pm = self.pmodes.match(um, channel=channel)  # a pulled c2t message is kept, never refused
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
        except EbmsFault as exc:  # the sink refused the content itself (EBMS:0303 ...): resending cannot help
            answer = await self._error(exc, exc.ref_to_message_id or um.message_id)
            self._log(channel, answer, peer)
            return answer
        except Exception as exc:  # noqa: BLE001 - any sink failure means "not processed": EBMS:0202
            log(logging.ERROR, "deliver_failed", self.environment, channel=channel, message_id=um.message_id,
                error=type(exc).__name__)
            self._watch(exc)
            answer = await self._error(EbmsFault("EBMS:0202", "the message could not be stored; it was not "
                                                 "processed, resend it", ref_to_message_id=um.message_id),
                                       um.message_id)
            self._log(channel, answer, peer)
            return answer
        self._watch(None)
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
IN_MEMORY_MAX = 1024 * 1024   # bodies up to this size are read into memory; larger ones are mapped


class _ConnectionGuard(asyncio.Protocol):
    """Sits between the transport and aiohttp's protocol of one connection: counts the bytes that arrive and
    lets the server's sweeper cut a connection that reads too slowly or for too long.

    Phases: ``idle`` (no byte of a request yet), ``reading`` (from the first byte of a request until its body
    is spooled), ``processing`` (our time: verification, journal, answer; never cut)."""

    def __init__(self, inner: asyncio.Protocol, server: InboundServer) -> None:
        self.inner, self.server = inner, server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.received = 0
        self.phase = "idle"
        self.since = time.monotonic()
        self.base = 0
        self.admitted = False

    # -- asyncio.Protocol, delegated
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else "?"
        refused = self.server._admit(self)  # noqa: SLF001
        if refused:
            log(logging.WARNING, "inbound_connection_refused", self.server.environment, peer=self.peer,
                reason=refused)
            transport.abort()
            return
        self.admitted = True
        self.since = time.monotonic()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.phase == "idle":
            self.phase, self.since, self.base = "reading", time.monotonic(), self.received
        self.received += len(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.admitted = False
            self.server._release(self)  # noqa: SLF001
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the handler's signals
    def request_started(self) -> None:
        """A request whose bytes were already buffered (HTTP pipelining) still gets its own deadline."""
        if self.phase == "idle":
            self.phase, self.since, self.base = "reading", time.monotonic(), self.received

    def body_done(self) -> None:
        self.phase = "processing"

    def answered(self) -> None:
        self.phase, self.since, self.base = "idle", time.monotonic(), self.received

    def verdict(self, now: float, cfg: InboundConfig) -> str | None:
        """Why this connection must be cut now, or None."""
        if self.phase == "processing":
            return None
        elapsed = now - self.since
        if elapsed > cfg.read_timeout_seconds:
            return "idle-timeout" if self.phase == "idle" else "read-timeout"
        if self.phase == "reading" and cfg.min_rate_bytes_per_second and elapsed > cfg.rate_grace_seconds \
                and (self.received - self.base) / elapsed < cfg.min_rate_bytes_per_second:
            return "too-slow"
        return None


class _ByteBudget:
    """A weighted semaphore over bytes: bodies being processed at once never exceed ``limit`` in total."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        n = min(n, self.limit)
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n

    async def release(self, n: int) -> None:
        n = min(n, self.limit)
        async with self._cond:
            self.used -= n
            self._cond.notify_all()


class _TooLarge(Exception):
    pass


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
        self._servers: list[asyncio.AbstractServer] = []
        self._slots = asyncio.Semaphore(self.inbound.max_concurrent)
        self._budget = _ByteBudget(max(self.inbound.max_inflight_bytes, self.inbound.max_request_bytes))
        self._guards: dict[Any, _ConnectionGuard] = {}        # transport -> guard
        self._per_peer: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.cut: dict[str, int] = {}                           # reason -> connections cut or refused

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.inbound.max_request_bytes)
        app.router.add_route("*", self.inbound.path, self.handle)
        return app

    async def start(self) -> list[ListenAddress]:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        http = self._runner.server
        assert http is not None
        loop = asyncio.get_running_loop()
        for addr in self.listen:
            server = await loop.create_server(lambda: _ConnectionGuard(http(), self), addr.host, addr.port,
                                              ssl=self.ssl_context, reuse_address=True, backlog=128,
                                              ssl_handshake_timeout=self.inbound.read_timeout_seconds)
            self._servers.append(server)
            for sock in server.sockets or ():
                self.bound.append(ListenAddress(addr.host, sock.getsockname()[1]))
        self._sweeper = asyncio.create_task(self._sweep(), name="inbound-sweeper")
        log(logging.INFO, "inbound_listening", self.environment, addresses=",".join(map(str, self.bound)),
            path=self.inbound.path, read_timeout=self.inbound.read_timeout_seconds,
            min_rate=self.inbound.min_rate_bytes_per_second, max_connections=self.inbound.max_connections,
            per_peer=self.inbound.max_connections_per_peer)
        return self.bound

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for server in self._servers:
            server.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    async def __aenter__(self) -> InboundServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, index: int = 0) -> str:
        a = self.bound[index]
        host = f"[{a.host}]" if ":" in a.host else a.host
        return f"https://{host}:{a.port}{self.inbound.path}"

    # -- connection accounting (called by the guards)
    def _admit(self, guard: _ConnectionGuard) -> str | None:
        if len(self._guards) >= self.inbound.max_connections:
            return self._count_cut("max-connections")
        if self._per_peer.get(guard.peer, 0) >= self.inbound.max_connections_per_peer:
            return self._count_cut("max-connections-per-peer")
        self._guards[guard.transport] = guard
        self._per_peer[guard.peer] = self._per_peer.get(guard.peer, 0) + 1
        return None

    def _release(self, guard: _ConnectionGuard) -> None:
        if self._guards.pop(guard.transport, None) is not None:
            left = self._per_peer.get(guard.peer, 1) - 1
            if left > 0:
                self._per_peer[guard.peer] = left
            else:
                self._per_peer.pop(guard.peer, None)

    def _count_cut(self, reason: str) -> str:
        self.cut[reason] = self.cut.get(reason, 0) + 1
        return reason

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self._guards), "peers": len(self._per_peer), "cut": dict(self.cut),
                "slots_free": self._slots._value, "inflight_bytes": self._budget.used}  # noqa: SLF001

    async def _sweep(self) -> None:
        interval = max(0.05, min(1.0, self.inbound.read_timeout_seconds / 4, self.inbound.rate_grace_seconds / 2
                                 if self.inbound.rate_grace_seconds else 1.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for guard in list(self._guards.values()):
                try:
                    reason = guard.verdict(now, self.inbound)
                    if reason is not None and guard.transport is not None:
                        self._count_cut(reason)
                        log(logging.WARNING, "inbound_connection_cut", self.environment, peer=guard.peer,
                            reason=reason, received=guard.received - guard.base, seconds=round(now - guard.since, 1))
                        guard.transport.abort()
                except Exception as exc:  # noqa: BLE001 - one odd connection must not stop the deadlines of all
                    log(logging.ERROR, "inbound_sweep_failed", self.environment, peer=guard.peer,
                        error=f"{type(exc).__name__}: {exc}")
                    self._release(guard)

    # -- requests
    async def _spool_body(self, request: web.Request) -> tuple[Any, int]:
        """The body, written to an anonymous temporary file as it arrives; (file, size)."""
        limit = self.inbound.max_request_bytes
        f = tempfile.TemporaryFile(dir=self.inbound.body_dir)
        size = 0
        try:
            async for chunk in request.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > limit:
                    raise _TooLarge()
                if len(chunk) > 65536:  # a large write may block on a slow disk: not on the event loop
                    await asyncio.to_thread(f.write, chunk)
                else:
                    f.write(chunk)
            f.flush()
        except BaseException:
            f.close()
            raise
        return f, size

    async def _process_spooled(self, f: Any, size: int, content_type: str, peer_name: str) -> Answer:
        if size <= IN_MEMORY_MAX:
            f.seek(0)
            return await self.processor.process(content_type, f.read(), channel="push", peer=peer_name)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            return await self.processor.process(content_type, view, channel="push", peer=peer_name)
        finally:
            try:
                view.release()
                mm.close()
            except BufferError:  # a view is still referenced somewhere: the mapping goes with the last one
                pass

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = peer_summary(request.transport.get_extra_info("ssl_object") if request.transport else None)
        peer_name = peer.get("peer_subject") or "?"
        guard = self._guards.get(request.transport)
        if guard is not None:
            guard.request_started()
        try:
            return await self._handle(request, guard, peer_name)
        finally:
            if guard is not None:
                guard.answered()

    async def _handle(self, request: web.Request, guard: _ConnectionGuard | None,
                      peer_name: str) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405, text="AS4 endpoint: POST only\n", headers={"Allow": "POST"})
        declared = request.content_length
        limit = self.inbound.max_request_bytes
        if declared is not None and declared > limit:
            log(logging.WARNING, "receive_too_large", self.environment, peer=peer_name, bytes=declared, limit=limit)
            return _close(web.Response(status=413, text=f"request over {limit} bytes\n"))
        try:
            f, size = await self._spool_body(request)
        except _TooLarge:
            log(logging.WARNING, "receive_too_large", self.environment, peer=peer_name, limit=limit)
            return _close(web.Response(status=413, text=f"request over {limit} bytes\n"))
        except OSError as exc:  # the spool disk is full or failing: not the peer's fault, a retry may succeed
            log(logging.ERROR, "receive_spool_failed", self.environment, peer=peer_name, error=str(exc))
            return _close(web.Response(status=503, text="the message could not be stored; retry later\n",
                                       headers={"Retry-After": "30"}))
        if guard is not None:
            guard.body_done()
        try:
            await self._budget.acquire(size)
            try:
                async with self._slots:  # taken only now: a peer still sending holds no slot
                    content_type = request.headers.get("Content-Type", "")
                    answer = await self._process_spooled(f, size, content_type, peer_name)
            finally:
                await self._budget.release(size)
        finally:
            f.close()
        return web.Response(status=answer.http_status, body=answer.body,
                            headers={"Content-Type": answer.content_type})


def _close(resp: web.Response) -> web.Response:
    resp.force_close()  # the rest of the body was not read: the connection cannot carry another request
    return resp


# ------------------------------------------------------------------------------------------------ health
class HealthServer:
    """Plain-HTTP ``GET /health`` on a loopback port: environment, listening addresses, pull state."""

    def __init__(self, address: ListenAddress, environment: str,
                 status: Callable[[], dict[str, Any]] | None = None, auth: Any = None) -> None:
        self.address, self.environment, self.status = address, environment, status
        self.auth = auth   # gateway.listen.ListenerAuth: token and/or TLS client certificates
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
        app = web.Application(middlewares=[self.auth.middleware()] if self.auth and self.auth.token else [])
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address.host, self.address.port,
                           ssl_context=self.auth.ssl_context() if self.auth else None)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
