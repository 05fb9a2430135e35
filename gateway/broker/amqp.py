"""RabbitMQ (AMQP 0-9-1) with aio-pika: filings consumed from the ERP's queues, events published with confirms.

Acknowledgement semantics (README "Fed by ERP queues"):

* a message is acknowledged only after its filing is durably journaled by ``Acceptor.accept`` (the same path
  as the spool and the API); a crash before that leaves it unacknowledged, the broker redelivers it, and the
  deterministic MessageId makes the second intake find the first one's filing: filed once;
* a message that can never be a filing (unreadable, invalid, conflicting LRN) is answered with an
  ``intake.rejected.<reason>`` event carrying the reason and findings, confirmed by the broker, then
  acknowledged: never requeued in a loop;
* the journal cannot take it (disk full, read-only, a PostgreSQL journal that does not answer): the machine's
  condition, not the message's, so it is requeued with back-off (0.5 s doubling to 30 s) without counting toward
  dead-lettering, an ``intake-blocked`` alert is raised once per episode and the recovery logged: a valid filing is
  never dead-lettered because of the gateway's storage;
* any other failure (a broker hiccup, a bug) requeues it after a pause; after ``max_attempts`` deliveries
  (a quorum queue's ``x-delivery-count``; else redeliveries are counted durably in the journal) it goes to the
  dead-letter queue with the reason in ``x-ics2gw-reason``, so even a message that kills the process each time
  it is read ends there instead of in a crash loop;
* ``prefetch`` bounds the messages in flight: when the journal or the sender falls behind, consumption slows
  instead of memory growing.

The connection is ``connect_robust``: it reconnects by itself with back-off, and the consumer and publisher
resume on the new channel.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import ssl
import time
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from gateway.broker import formats
from gateway.broker.config import AmqpConfig
from gateway.pipeline.storage import storage_cause

log = logging.getLogger("ics2gw.amqp")


def _ssl_context(cfg: AmqpConfig) -> ssl.SSLContext | None:
    if not cfg.url.startswith("amqps://"):
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.client_cert:
        ctx.load_cert_chain(str(cfg.client_cert), str(cfg.client_key) if cfg.client_key else None)
    return ctx


class AmqpBroker:
    """One robust connection: a confirming publisher channel and (with intake) a consumer channel per queue."""

    def __init__(self, cfg: AmqpConfig) -> None:
        self.cfg = cfg
        self.connection: Any = None
        self._pub_channel: Any = None
        self._exchange: Any = None
        self._pub_lock = asyncio.Lock()
        self.connected = False
        self.last_error: str | None = None

    async def connect(self, stop: asyncio.Event) -> bool:
        """Connects, retrying with back-off until it works or ``stop`` is set (a broker down at start is not fatal)."""
        delay = self.cfg.reconnect_initial
        while not stop.is_set():
            try:
                self.connection = await aio_pika.connect_robust(
                    self.cfg.connection_url(), ssl_context=_ssl_context(self.cfg),
                    reconnect_interval=self.cfg.reconnect_initial, timeout=10)
                self.connection.reconnect_callbacks.add(self._on_reconnect)
                self.connection.close_callbacks.add(self._on_close)
                self.connected = True
                self.last_error = None
                log.info("amqp connected url=%s", self.cfg.url)
                if self.cfg.declare:
                    await self._declare()
                return True
            except (aio_pika.exceptions.AMQPError, OSError, asyncio.TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("amqp connect failed url=%s retry_in=%.1f error=%s", self.cfg.url, delay,
                            self.last_error)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(self.cfg.reconnect_max, delay * 2)
        return False

    def _on_reconnect(self, *_: Any) -> None:
        self.connected = True
        log.info("amqp reconnected url=%s", self.cfg.url)

    def _on_close(self, *_: Any) -> None:
        self.connected = False

    async def _declare(self) -> None:
        ch = await self.connection.channel()
        try:
            if self.cfg.events:
                await ch.declare_exchange(self.cfg.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            await ch.declare_queue(self.cfg.dead_letter_queue, durable=True)
            if self.cfg.intake:
                for q in self.cfg.queues:
                    # classic durable queues: they come back at once after a broker restart on one node (a
                    # quorum queue's leader election can keep a lone node refusing consumers for minutes)
                    await ch.declare_queue(q, durable=True)
        finally:
            await ch.close()

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    # --------------------------------------------------------------------------------------------- publishing
    async def _publisher(self) -> Any:
        if self._pub_channel is None or self._pub_channel.is_closed:
            # on_return_raises: a mandatory message nobody can route (a dead-letter queue that does not exist) is a
            # failure, not a silent confirm
            self._pub_channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange = None
        return self._pub_channel

    async def publish(self, msg: formats.EventMessage, *, exchange: str | None = None,
                      routing_key: str | None = None, mandatory: bool = False) -> None:
        """Publishes persistently and returns once the broker confirmed it (raises if it did not)."""
        async with self._pub_lock:
            ch = await self._publisher()
            name = self.cfg.exchange if exchange is None else exchange
            ex = ch.default_exchange if name == "" else await ch.get_exchange(name, ensure=False)
            message = aio_pika.Message(msg.body, content_type=msg.content_type, message_id=msg.message_id,
                                       correlation_id=msg.correlation_id, headers=msg.headers,
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                       timestamp=dt.datetime.now(dt.timezone.utc), app_id="ics2gw")
            await ex.publish(message, routing_key=routing_key or msg.routing_key, mandatory=mandatory, timeout=30)

    # ------------------------------------------------------------------------------------------------ intake
    async def consume(self, acceptor: Any, writer: Any, stop: asyncio.Event, *, on_accepted: Any = None,
                      alert: Any = None) -> None:
        """Consumes every configured queue until ``stop``; each message through ``IntakeHandler``."""
        ch = await self.connection.channel()
        await ch.set_qos(prefetch_count=self.cfg.prefetch)
        handler = IntakeHandler(self, acceptor, writer, on_accepted=on_accepted, alert=alert)
        self.intake_handler = handler
        tags = []
        for name in self.cfg.queues:
            queue = await ch.get_queue(name, ensure=True)
            tags.append((queue, await queue.consume(handler.handle)))
        try:
            await stop.wait()
        finally:
            for queue, tag in tags:
                try:
                    await queue.cancel(tag)
                except Exception:  # the channel may be gone with the connection; nothing is left to cancel
                    pass
            await handler.drain()
            try:
                await ch.close()
            except Exception:
                pass


class IntakeHandler:
    # while the journal cannot take filings: the pause before a message goes back to the queue, doubling per refusal
    storage_backoff_initial = 0.5
    storage_backoff_max = 30.0

    def __init__(self, broker: AmqpBroker, acceptor: Any, writer: Any, *, on_accepted: Any = None,
                 alert: Any = None) -> None:
        self.broker, self.acceptor, self.writer = broker, acceptor, writer
        self.on_accepted = on_accepted
        self.alert = alert or (lambda kind, **detail: None)
        self.accepted = self.rejected = self.dead_lettered = self.retried = self.blocked = 0
        self._attempts: dict[str, int] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._storage_requeued: set[str] = set()     # put back by us for the storage's sake: not an attempt
        self._blocked_since: float | None = None     # monotonic start of a storage episode
        self._blocked_streak = 0

    async def drain(self, timeout: float = 10.0) -> None:
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout)

    async def _attempt(self, message: AbstractIncomingMessage) -> int:
        """Which delivery this is: a redelivered message is counted in the journal (durable, so a message that
        kills the gateway each time it is read is bounded across restarts), one we requeued ourselves in memory.
        A first delivery costs no write. Headers are not trusted for this (``x-delivery-count`` can be set by any
        publisher on a classic queue)."""
        key = self._key(message)
        if key in self._storage_requeued:   # we put it back because the journal could not take it: not an attempt
            self._storage_requeued.discard(key)
            return max(1, self._attempts.get(key, 0))
        mine = self._attempts.get(key, 0)
        if message.redelivered and mine == 0:
            now = dt.datetime.now(dt.timezone.utc)
            durable = await self.writer.submit(lambda j: j.bump_intake_attempt(key, now=now))
            return durable + 1
        self._attempts[key] = mine + 1
        if len(self._attempts) > 10000:
            self._attempts.clear()
        return mine + 1

    @staticmethod
    def _key(message: AbstractIncomingMessage) -> str:
        return hashlib.sha256(f"{message.routing_key}/{message.message_id}/".encode() + bytes(message.body)).hexdigest()

    async def _storage_blocked(self, message: AbstractIncomingMessage, cause: tuple[str, BaseException]) -> None:
        """The journal cannot take the message now: back to the queue after a pause, not counted as an attempt."""
        problem, exc = cause
        if len(self._storage_requeued) > 10000:
            self._storage_requeued.clear()
        self._storage_requeued.add(self._key(message))
        self.blocked += 1
        error = f"{type(exc).__name__}: {exc}"
        if self._blocked_since is None:
            self._blocked_since = time.monotonic()
            log.error("amqp intake blocked: the journal cannot take filings problem=%s queue=%s error=%s", problem,
                      message.routing_key, error)
            self.alert("intake-blocked", channel="amqp", queue=message.routing_key or "?", step="journal",
                       problem=problem, error=error)
        delay = min(self.storage_backoff_max, self.storage_backoff_initial * 2 ** min(self._blocked_streak, 10))
        self._blocked_streak += 1
        await asyncio.sleep(delay)
        await message.nack(requeue=True)

    def _storage_ok(self) -> None:
        if self._blocked_since is not None:
            log.warning("amqp intake unblocked after %.1f s: the journal takes filings again",
                        time.monotonic() - self._blocked_since)
            self._blocked_since = None
        self._blocked_streak = 0

    async def handle(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._handle(message)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        from gateway.pipeline.accept import IntakeRefused
        queue = message.routing_key or "?"
        try:
            attempt = await self._attempt(message)
        except Exception as exc:
            cause = storage_cause(exc)
            if cause is None:
                raise
            await self._storage_blocked(message, cause)
            return
        ref = {"channel": f"amqp:{queue}", "message_id": message.message_id,
               "correlation_id": message.correlation_id}
        if attempt > self.broker.cfg.max_attempts:
            await self._dead_letter(message, f"delivered {attempt} times without being taken in (the gateway "
                                             "stopped each time it read it)", attempt)
            return
        try:
            req = formats.parse_intake(message.body, message.content_type, dict(message.headers or {}))
            kwargs: dict[str, Any] = {"action": req.action, "endpoint": req.endpoint,
                                      "source": f"amqp:{queue}:{message.message_id or message.delivery_tag}",
                                      "intake_ref": ref}
            if req.attachments:
                kwargs["attachments"] = list(req.attachments)
            accepted = await self.acceptor.accept(req.data, **kwargs)
        except formats.IntakeFormatError as exc:
            await self._reject(message, exc.reason, str(exc), [])
            return
        except IntakeRefused as exc:
            await self._reject(message, exc.reason, str(exc), exc.findings)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the storage's condition, or transient / a bug: bounded
            cause = storage_cause(exc)
            if cause is not None:
                await self._storage_blocked(message, cause)
                return
            reason = f"{type(exc).__name__}: {exc}"
            if attempt >= self.broker.cfg.max_attempts:
                await self._dead_letter(message, reason, attempt)
                return
            self.retried += 1
            log.warning("amqp intake failed, requeueing queue=%s message_id=%s attempt=%d error=%s", queue,
                        message.message_id, attempt, reason)
            await asyncio.sleep(min(5.0, 0.2 * attempt))
            await message.nack(requeue=True)
            return
        self._storage_ok()
        self.accepted += 1
        await message.ack()
        if self.on_accepted is not None:
            self.on_accepted()
        log.info("amqp filing accepted queue=%s message_id=%s lrn=%s created=%s", queue, message.message_id,
                 accepted.filing.lrn, accepted.created)

    async def _reject(self, message: AbstractIncomingMessage, reason: str, text: str,
                      findings: list[dict[str, Any]]) -> None:
        ev = formats.rejection_event(reason=reason, message=text, findings=findings,
                                     amqp_message_id=message.message_id, correlation_id=message.correlation_id,
                                     queue=message.routing_key or "?",
                                     body_sha256=hashlib.sha256(bytes(message.body)).hexdigest())
        try:
            await self.broker.publish(ev)          # confirmed before the message is let go
        except Exception as exc:
            log.warning("amqp rejection event not published, requeueing message_id=%s error=%s",
                        message.message_id, exc)
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            return
        self.rejected += 1
        await message.ack()
        log.info("amqp filing rejected queue=%s message_id=%s reason=%s", message.routing_key, message.message_id,
                 reason)

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str, attempt: int) -> None:
        headers = dict(message.headers or {})
        headers.update({"x-ics2gw-reason": reason[:500], "x-ics2gw-attempts": attempt,
                        "x-ics2gw-queue": message.routing_key or "?"})
        dead = formats.EventMessage(self.broker.cfg.dead_letter_queue, bytes(message.body),
                                    message.content_type or "application/octet-stream",
                                    message.message_id or f"dead-{message.delivery_tag}", message.correlation_id,
                                    headers)
        try:
            await self.broker.publish(dead, exchange="", routing_key=self.broker.cfg.dead_letter_queue, mandatory=True)
        except Exception as exc:   # the dead-letter queue is missing or the broker refused: keep the message
            log.error("amqp dead-letter queue %s refused the message, keeping it message_id=%s error=%s",
                      self.broker.cfg.dead_letter_queue, message.message_id, exc)
            await asyncio.sleep(5.0)
            await message.nack(requeue=True)
            return
        self.dead_lettered += 1
        await message.ack()
        log.error("amqp message dead-lettered queue=%s message_id=%s attempts=%d reason=%s", message.routing_key,
                  message.message_id, attempt, reason)
