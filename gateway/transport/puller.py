"""One-Way/Pull from customs (ICD 4.1.3.3, option B): the pull loop and the acknowledgement lane.

Why an adaptive interval: the TI queues c2t messages on our MPC and only tells us "nothing now" (EBMS:0006
EmptyMessagePartitionChannel, a warning). While messages flow we pull again at once, draining the queue
(eDelivery 1.5.5.4); each empty answer doubles the wait from ``min_interval`` up to ``max_interval``, so an
idle gateway costs the TI little and a busy one never lets the TI's retry window expire (EBMS:0301).

Why a separate acknowledgement lane: a pulled message is acknowledged by a signed Receipt (or a signed
Error such as EBMS:0101/0303 when it fails verification, EBMS:0010 when its @mpc is not the one pulled)
POSTed to the URL it was pulled from (eDelivery 1.5.5.3; the
ICD says "synchronous only", so this is to be confirmed in conformance testing: docs/transport.md). Those
signals must reach the TI well inside its retry window, so they travel on their own queue and worker, ahead
of and independent from the A/B/C business queue, and are retried until the TI acknowledges them.

Why durable: the lane's queue lives in memory, but a Receipt it carries was journaled with its message (pending)
by the sink before the lane got it. When the lane settles a signal it tells the sink (``ack_settled``), and
when the puller starts it replays every Receipt the sink still holds as pending (``pending_acks``), before it
pulls anything new: a crash between pulling and acknowledging loses nothing, and the TI does not have to wait
for its re-offer (or run out of re-offers, EBMS:0301) to learn that the message arrived.
"""

from __future__ import annotations

import asyncio
import logging
import time
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.ebms.engine import Engine
from gateway.transport.client import (
    As4Client, EbmsErrorOutcome, EmptyChannel, InvalidMessage, PulledMessage, SignalAccepted, TransportFailure,
)
from gateway.transport.config import Endpoint
from gateway.transport.logfmt import log
from gateway.transport.server import Answer, InboundProcessor, InboundSink

try:
    from gateway.pmode import PModeSet
except ImportError:  # pragma: no cover
    PModeSet = Any  # type: ignore[misc,assignment]


@dataclass
class _Ack:
    content_type: str
    body: bytes = field(repr=False)
    signal_id: str
    ref_to_message_id: str | None
    attempts: int = 0
    replayed: bool = False


class AckLane:
    """Posts receipts/errors for pulled messages on their own queue; retries until the TI acknowledges."""

    def __init__(self, client: As4Client, endpoint: Endpoint, *, retry_interval: float = 2.0,
                 max_attempts: int = 20, max_backoff: float = 30.0,
                 on_settled: Callable[..., Awaitable[None]] | None = None) -> None:
        self.client, self.endpoint = client, endpoint
        self.on_settled = on_settled   # (message_id, "acknowledged" | "abandoned", detail): journals the outcome
        self.retry_interval, self.max_attempts, self.max_backoff = retry_interval, max_attempts, max_backoff
        self.environment = client.environment
        self._queue: asyncio.Queue[_Ack] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.acknowledged: list[str] = []   # ref_to_message_id of each acknowledged signal, in order
        self.abandoned: list[str] = []

    def submit(self, answer: Answer) -> None:
        self._queue.put_nowait(_Ack(answer.content_type, answer.body, answer.signal_id or "stored-receipt",
                                    answer.message_id))
        self._ensure_running()

    def submit_stored(self, message_id: str, content_type: str | None, body: bytes) -> None:
        """Queues a Receipt journaled before a restart (replay); the same bytes as the first time."""
        self._queue.put_nowait(_Ack(content_type or "application/soap+xml", body, "stored-receipt", message_id,
                                    replayed=True))
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ics2gw-ack-lane")

    async def join(self) -> None:
        """Waits until every submitted signal was acknowledged or abandoned."""
        await self._queue.join()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._deliver(item)
            finally:
                self._queue.task_done()

    async def _deliver(self, item: _Ack) -> None:
        while True:
            item.attempts += 1
            outcome = await self.client.post_signal(self.endpoint, item.content_type, item.body,
                                                    message_id=item.signal_id, ref_to_message_id=item.ref_to_message_id)
            if isinstance(outcome, SignalAccepted):
                self.acknowledged.append(item.ref_to_message_id or "")
                await self._settled(item, "acknowledged", None)
                return
            retry = (isinstance(outcome, TransportFailure) and outcome.retryable) or (
                isinstance(outcome, EbmsErrorOutcome) and not outcome.permanent)
            if not retry or item.attempts >= self.max_attempts:
                log(logging.ERROR, "ack_abandoned", self.environment, endpoint=self.endpoint.name,
                    ref_to_message_id=item.ref_to_message_id, attempts=item.attempts,
                    reason=getattr(outcome, "cause", None) or getattr(outcome, "code", None))
                self.abandoned.append(item.ref_to_message_id or "")
                await self._settled(item, "abandoned",
                                    str(getattr(outcome, "cause", None) or getattr(outcome, "code", None)))
                return
            await asyncio.sleep(min(self.max_backoff, self.retry_interval * 2 ** (item.attempts - 1)))


    async def _settled(self, item: _Ack, state: str, reason: str | None) -> None:
        if self.on_settled is None or not item.ref_to_message_id:
            return
        try:
            await self.on_settled(item.ref_to_message_id, state,
                                  {"attempts": item.attempts, "replayed": item.replayed, "reason": reason})
        except Exception as exc:  # noqa: BLE001 - the journal note failing must not stop the lane; replay covers it
            log(logging.ERROR, "ack_note_failed", self.environment, ref_to_message_id=item.ref_to_message_id,
                error=type(exc).__name__, detail=str(exc)[:200])


@dataclass(frozen=True)
class PullResult:
    kind: str                    # "message" | "empty" | "rejected" | "error" | "failure"
    message_id: str | None = None
    detail: str | None = None


class Puller:
    """Pulls c2t messages from one endpoint on our MPC, hands them to the sink, acknowledges them."""

    def __init__(self, engine: Engine, client: As4Client, endpoint: Endpoint, sink: InboundSink, *, mpc: str,
                 min_interval: float = 1.0, max_interval: float = 60.0, pmodes: PModeSet | None = None,
                 ack_lane: AckLane | None = None, receipt_retry_interval: float = 2.0,
                 receipt_max_attempts: int = 20,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.engine, self.client, self.endpoint, self.mpc = engine, client, endpoint, mpc
        self.environment = client.environment
        self.processor = InboundProcessor(engine, sink, environment=client.environment, pmodes=pmodes)
        self.min_interval, self.max_interval = min_interval, max_interval
        self.interval = min_interval
        settled = getattr(sink, "ack_settled", None)
        self.ack_lane = ack_lane or AckLane(client, endpoint, retry_interval=receipt_retry_interval,
                                            max_attempts=receipt_max_attempts,
                                            on_settled=settled if inspect.iscoroutinefunction(settled) else None)
        self.sink = sink
        self._sleep = sleep or asyncio.sleep
        self.last: PullResult | None = None
        self.last_at: float | None = None
        self.counts: dict[str, int] = {}

    def next_interval(self, result: PullResult) -> float:
        """0 after a message (drain), otherwise double from min_interval up to max_interval."""
        if result.kind == "message" or result.kind == "rejected":
            self.interval = self.min_interval
            return 0.0
        wait = self.interval
        self.interval = min(self.max_interval, max(self.min_interval, self.interval * 2))
        return wait

    async def pull_once(self) -> PullResult:
        request = await asyncio.to_thread(self.engine.pull_request, self.mpc)
        outcome = await self.client.pull(self.endpoint, request, self.mpc)
        result: PullResult
        if isinstance(outcome, EmptyChannel):
            result = PullResult("empty")
        elif isinstance(outcome, PulledMessage):
            answer = await self.processor.process(outcome.content_type, outcome.body, channel="pull",
                                                  opened=outcome.inbound, expected_mpc=self.mpc)
            if answer.kind == "error" and answer.error_code == "EBMS:0202":
                # our side failed to store it: an error would end the message at the TI (eDelivery 1.5.5.4) and a
                # receipt would be a lie; answering nothing lets the TI offer it again once we can store it
                log(logging.ERROR, "ack_withheld", self.environment, endpoint=self.endpoint.name,
                    message_id=answer.message_id, reason="delivery failed; the TI will offer it again")
                result = PullResult("failure", answer.message_id, "EBMS:0202 not stored: acknowledgement withheld")
            else:
                self.ack_lane.submit(answer)
                result = PullResult("message" if answer.kind == "receipt" else "rejected", answer.message_id,
                                    answer.error_code)
        elif isinstance(outcome, InvalidMessage):
            answer = await self.processor.process(outcome.content_type, outcome.body, channel="pull",
                                                  fault=outcome.fault)
            self.ack_lane.submit(answer)
            result = PullResult("rejected", outcome.fault.ref_to_message_id, outcome.fault.code)
        elif isinstance(outcome, EbmsErrorOutcome):
            result = PullResult("error", None, f"{outcome.code} {outcome.description}")
        else:
            result = PullResult("failure", None, outcome.cause)
        self.last, self.last_at = result, time.time()
        self.counts[result.kind] = self.counts.get(result.kind, 0) + 1
        return result

    async def drain(self, max_messages: int = 1000) -> list[PullResult]:
        """Pulls until the channel is empty (or fails); returns every result, the last one not a message."""
        results: list[PullResult] = []
        for _ in range(max_messages + 1):
            r = await self.pull_once()
            results.append(r)
            if r.kind not in ("message", "rejected"):
                break
        return results

    async def replay_pending(self) -> int:
        """Queues every Receipt the sink journaled for a pulled message and the TI has not acknowledged (a crash or
        stop came between pulling and acknowledging); returns how many."""
        pending = getattr(self.sink, "pending_acks", None)
        if pending is None:
            return 0
        acks = await pending()
        for a in acks:
            self.ack_lane.submit_stored(a.message_id, a.receipt_content_type, a.receipt)
        if acks:
            log(logging.WARNING, "ack_replayed", self.environment, endpoint=self.endpoint.name, count=len(acks),
                first=acks[0].message_id)
        return len(acks)

    async def run(self, stop: asyncio.Event) -> None:
        """The loop: replay pending receipts, then pull, hand over, acknowledge, wait adaptively; ends when
        ``stop`` is set."""
        log(logging.INFO, "pull_started", self.environment, endpoint=self.endpoint.name, mpc=self.mpc,
            min_interval=self.min_interval, max_interval=self.max_interval)
        try:
            await self.replay_pending()
        except Exception as exc:  # noqa: BLE001 - a journal read failing must not stop pulling; logged
            log(logging.ERROR, "ack_replay_failed", self.environment, endpoint=self.endpoint.name,
                error=type(exc).__name__, detail=str(exc)[:200])
        while not stop.is_set():
            try:
                result = await self.pull_once()
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything and keep pulling
                log(logging.ERROR, "pull_crashed", self.environment, endpoint=self.endpoint.name,
                    error=type(exc).__name__, detail=str(exc)[:200])
                result = PullResult("failure", None, type(exc).__name__)
            wait = self.next_interval(result)
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass
        await self.ack_lane.join()

    def status(self) -> dict[str, Any]:
        return {"pull": {"endpoint": self.endpoint.name, "last": self.last.kind if self.last else None,
                         "last_at": self.last_at, "interval": self.interval, "counts": dict(self.counts),
                         "acks_pending": self.ack_lane.pending}}
