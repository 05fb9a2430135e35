"""Sending with reception awareness: claim due messages by priority, send, act on the typed outcome.

- A/B/C lanes through ``PriorityPicker`` (A first, B and C not starved); a concurrency bound per endpoint.
- Every attempt sends the journaled sealed bytes unchanged, under the same eb:MessageId (a new MessageId for a
  retry is the classic bug: customs' duplicate detection would see two filings).
- Transient outcomes (transport failure, 5xx, timeout, EBMS:0004/A003, missing or invalid receipt, an unsigned
  error that is not known to be permanent) are retried with exponential backoff and jitter within the retry
  *time budget* (``retry.py``: 12 h by default, counted from the first failure), with ``endpoint-outage`` alerts
  while the endpoint keeps failing and ``endpoint-recovered`` once it answers again;
  permanent errors (EBMS:0101/0103/0010 ...) stop at once and raise an alert, signed or not;
  a bare EBMS:0004 holds the filing for the helpdesk; A002 raises a configuration alert; a transport failure the
  client flags as not retryable (HTTP 3xx/4xx other than 408/425/429, TLS refusal, wrong environment) fails at
  once, except HTTP 4xx from an endpoint that worked before (a proxy's maintenance page), which is retried for
  ``http_4xx_grace_seconds``.
- EBMS:0004/A001 means customs refuses this *sender* for every further message (ICD 5.1.1 p.62): sending as this
  PartyId to that endpoint is paused, durably (``endpoint_state`` in the journal), the refused message goes back
  to the queue unchanged with everything behind it, an ``authorisation-refused`` alert is raised, and only
  ``ics2gw endpoint resume NAME`` (after the registration is fixed) lets the queue flow again.
- Leases (several instances on one journal): a claim is leased for ``[pipeline] lease_seconds`` under this
  instance's id (``gateway.instance``); while a message is being sent its lease is renewed every third of that,
  so a slow send is never taken over by another instance while we live. If we stall longer than the lease (a
  frozen VM, a lost database) another instance takes the message over and sends the same bytes under the same
  MessageId; our late outcome is then refused by the journal (``LeaseLost``), logged and dropped: the new holder's
  outcome counts. Nothing here assumes that every ``sending`` message is ours.
"""

from __future__ import annotations

import asyncio
import itertools
import datetime as dt
import logging
from typing import Any

from gateway.ebms.engine import OutboundMessage as EngineOutbound
from gateway.ebms.errors import find_sub_code, is_permanent
from gateway.instance import instance_id
from gateway.journal.errors import LeaseLost
from gateway.journal.states import FilingState as S
from gateway.ops import metrics as ops_metrics
from gateway.journal.states import can_transition
from gateway.journal.timeutil import parse_iso
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import PipelineConfig
from gateway.pipeline.correlate import answers_request, follow_up_state
from gateway.pipeline.delivery import write_status
from gateway.pipeline.priority import PriorityPicker

log = logging.getLogger("ics2gw.sender")


def classify(outcome: Any) -> tuple[str, str, str | None]:
    """(verdict, reason, sub_code) with verdict one of receipted, retry, permanent, hold."""
    if hasattr(outcome, "classification"):   # outcomes of another route (HMRC) classify themselves
        return outcome.classification()
    kind = type(outcome).__name__
    if kind == "ReceiptOk":
        return "receipted", "receipt verified", None
    if kind == "EbmsErrorOutcome":
        errors = list(getattr(outcome, "errors", ()) or ())
        first = errors[0] if errors else None
        code = getattr(first, "error_code", None) or "EBMS:0004"
        sub = getattr(outcome, "sub_code", None) or (find_sub_code(first.error_detail, first.description,
                                                                   first.short_description) if first else None)
        text = f"{code}{'/' + sub if sub else ''} {getattr(first, 'short_description', '') or ''}: " \
               f"{getattr(first, 'description', '') or getattr(first, 'error_detail', '') or ''}".strip()
        if not getattr(outcome, "signed", False):
            text += " (unsigned error)"
        if code == "EBMS:0004" and sub is None:
            return "hold", text + " - contact the customs helpdesk", None
        if code == "EBMS:0004" and sub == "A001":  # the sender is refused, not this message: pause the endpoint
            return "pause", text + " - sending paused: fix the registration, then `ics2gw endpoint resume`", sub
        permanent = getattr(outcome, "permanent", None)
        if permanent is None:
            permanent = is_permanent(code, sub)
        return ("permanent" if permanent else "retry"), text, sub
    if kind == "InvalidReceipt":
        fault = getattr(outcome, "fault", None)
        return "retry", f"invalid receipt: {getattr(fault, 'message', fault)}", None
    cause = getattr(outcome, "cause", None) or kind
    status = getattr(outcome, "http_status", None)
    text = f"transport failure: {cause}" + (f" (HTTP {status})" if status else "")
    if getattr(outcome, "retryable", True) is False:  # the client knows resending cannot help (4xx, TLS, environment)
        return "permanent", text + " - not retried: fix the cause, then `ics2gw resend`", None
    return "retry", text, None


class Sender:
    def __init__(self, journal: Any, writer: Any, client: Any, endpoints: dict[str, Any], cfg: PipelineConfig,
                 alerts: Alerts, *, status_dir: Any, default_endpoint: str, clock: Any = None,
                 routes: dict[str, Any] | None = None) -> None:
        self.journal, self.writer, self.client = journal, writer, client
        self.routes: dict[str, Any] = dict(routes or {})   # endpoint name -> a non-AS4 route (HMRC)
        self.endpoints, self.cfg, self.alerts = endpoints, cfg, alerts
        self.status_dir, self.default_endpoint = status_dir, default_endpoint
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.worker = instance_id()        # the claims' owner: unique per process, across hosts and restarts
        # every claim gets a token of its own (instance id / claim number), so a send that outlived its lease and
        # was re-claimed by this same instance is told apart from the new attempt: only the holder of the current
        # token may record an outcome (the other gets LeaseLost), never both
        self._claims = itertools.count(1)
        self.picker = PriorityPicker()
        self._sems = {name: asyncio.Semaphore(cfg.per_endpoint_concurrency) for name in endpoints}
        self._slots = asyncio.Semaphore(cfg.workers)
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._leased: dict[tuple[str, str], int] = {}   # (message id, claim token) -> sends holding that lease
        self._renewer: asyncio.Task[None] | None = None
        self.leases_lost = 0                  # outcomes refused because another instance took the message over
        self.sent = 0
        # the identity an A001 pause belongs to (one gateway identity per configuration)
        self.party_id: str = getattr(getattr(client, "engine", None), "party_id", "") or ""

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Claims and sends until ``stop``; sleeps when nothing is due (woken by intake).

        All free worker slots are filled by one journal transaction (one fsync for the whole batch of claims)."""
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="sender-lease-renewal")
        while not self._stopping:
            await self._slots.acquire()
            slots = 1
            while slots < self.cfg.workers and not self._slots.locked():
                await self._slots.acquire()  # free right now: does not wait
                slots += 1
            if self._stopping:
                for _ in range(slots):
                    self._slots.release()
                break
            try:
                claimed = await self._claim(slots)
            except BaseException:
                # the slots go back with the failure: a sender the supervisor restarts must find them free
                for _ in range(slots):
                    self._slots.release()
                raise
            for _ in range(slots - len(claimed)):
                self._slots.release()
            if not claimed:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.cfg.idle_poll_seconds)
                except asyncio.TimeoutError:
                    pass
                continue
            for msg in claimed:
                task = asyncio.create_task(self._send(msg))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    # ------------------------------------------------------------------------------------------------ leases
    def claim_token(self) -> str:
        return f"{self.worker}/{next(self._claims)}"

    def _hold(self, message_id: str, token: str | None = None) -> None:
        key = (message_id, token or self.worker)
        self._leased[key] = self._leased.get(key, 0) + 1

    def _unhold(self, message_id: str, token: str | None = None) -> None:
        key = (message_id, token or self.worker)
        n = self._leased.get(key, 0) - 1
        if n > 0:
            self._leased[key] = n
        else:
            self._leased.pop(key, None)

    async def renew_leases(self) -> list[str]:
        """Extends the lease of every message being sent; returns the ids whose lease was found lost (logged)."""
        keys = list(self._leased)
        if not keys:
            return []
        now, lease = self.clock(), self.cfg.lease_seconds

        def renew(j: Any) -> set[tuple[str, str]]:
            held: set[tuple[str, str]] = set()
            for mid, token in keys:
                held.update((m, token) for m in j.renew_claims(token, [mid], now=now, lease_seconds=lease))
            return held

        held = await self.writer.submit(renew)
        lost = [k[0] for k in keys if k not in held and k in self._leased]   # (not those recorded meanwhile)
        for m in lost:
            log.warning("lease lost message_id=%s worker=%s: another instance took the message over (this send "
                        "outlived its lease of %.0fs); our outcome will be refused, the new holder's counts", m,
                        self.worker, lease)
        return lost

    async def _renew_loop(self) -> None:
        """Every lease_seconds/3 while sends are in flight (also while draining at shutdown)."""
        interval = max(0.05, self.cfg.lease_seconds / 3)
        while not (self._stopping and not self._leased):
            await asyncio.sleep(interval)
            try:
                await self.renew_leases()
            except Exception as exc:  # noqa: BLE001 - the journal away: the next round tries again
                log.warning("lease renewal failed worker=%s error=%s: %s", self.worker, type(exc).__name__, exc)

    def _claim_in(self, j: Any, now: dt.datetime, order: list[str], empty: set[str]) -> Any:
        """Claims one due message inside the caller's transaction (lane ``order[0]`` first); None if none is due.
        Messages for an endpoint paused for our PartyId (A001) are left in the queue."""
        paused = j.paused_endpoints(self.party_id)
        for cat in order:
            if cat in empty:
                continue
            got = j.claim_due_messages(now=now, worker=self.claim_token(), limit=1,
                                       lease_seconds=self.cfg.lease_seconds,
                                       priorities=[cat], exclude_endpoints=paused,
                                       default_endpoint=self.default_endpoint)
            if not got:
                empty.add(cat)
                continue
            msg = got[0]
            if msg.filing_id is not None:
                filing = j.get_filing(msg.filing_id)
                if msg.action == filing.action and can_transition(filing.state, S.SENDING):
                    j.transition(filing.id, S.SENDING, now=now, event="sending",
                                 detail={"message_id": msg.message_id, "attempt": msg.attempts})
            return j.get_message(msg.message_id, with_bytes=True)
        return None

    def _order(self) -> list[str]:
        lane = self.picker.pick(["A", "B", "C"]) or "B"
        return [lane] + [c for c in "ABC" if c != lane]

    async def _claim(self, slots: int) -> list[Any]:
        now = self.clock()
        orders = [self._order() for _ in range(slots)]

        def txn(j: Any) -> list[Any]:
            out: list[Any] = []
            empty: set[str] = set()
            for order in orders:
                msg = self._claim_in(j, now, order, empty)
                if msg is None:
                    break
                out.append(msg)
            return out

        return await self.writer.submit(txn)

    async def _send(self, msg: Any) -> None:
        """Sends ``msg``; while work is due, the commit that records an outcome also claims this slot's next
        message (one fsync for both instead of two)."""
        try:
            while msg is not None:
                self._hold(msg.message_id, msg.claimed_by)   # its lease is renewed until the outcome is recorded
                try:
                    msg = await self._send_and_record(msg)
                except LeaseLost as exc:
                    # another instance took the message over after our lease expired; it sends the same bytes
                    # under the same MessageId, and its outcome counts. Ours was rolled back: nothing else to do.
                    self.leases_lost += 1
                    log.warning("outcome refused: lease lost message_id=%s worker=%s detail=%s", msg.message_id,
                                self.worker, exc)
                    ops_metrics.lease_lost()
                    msg = None
        except Exception:  # a bug here must not kill the worker pool; the lease expires and the message is retried
            log.exception("send failed unexpectedly message_id=%s", getattr(msg, "message_id", None))
        finally:
            self._slots.release()

    async def _send_and_record(self, msg: Any) -> Any:
        """One send of ``msg`` and its recorded outcome; returns the next message claimed in the same commit."""
        try:
            route = self.routes.get(msg.endpoint or "")
            if route is not None:
                async with self._sems.setdefault(msg.endpoint, asyncio.Semaphore(self.cfg.per_endpoint_concurrency)):
                    outcome = await route.send(msg)
                return await self._record(msg, outcome, claim_next=not self._stopping)
            endpoint = self.endpoints.get(msg.endpoint or self.default_endpoint) or \
                self.endpoints[self.default_endpoint]
            outbound = await asyncio.to_thread(EngineOutbound.from_wire, msg.message_id, msg.content_type, msg.sealed)
            async with self._sems.setdefault(endpoint.name, asyncio.Semaphore(self.cfg.per_endpoint_concurrency)):
                outcome = await self.client.send(endpoint, outbound)
            return await self._record(msg, outcome, claim_next=not self._stopping)
        finally:
            self._unhold(msg.message_id, msg.claimed_by)

    async def _record(self, msg: Any, outcome: Any, *, claim_next: bool = False) -> Any:
        """Records the outcome of one send; with ``claim_next``, claims the next due message in the same commit
        and returns it (or None)."""
        verdict, reason, sub = classify(outcome)
        order = self._order() if claim_next else []
        now = self.clock()
        raw = getattr(outcome, "raw", None) or getattr(outcome, "body", None)
        raw_ct = getattr(outcome, "content_type", None)
        attempts = msg.attempts  # the claim counted this attempt
        endpoint = msg.endpoint or self.default_endpoint
        since = parse_iso(msg.retry_since) if getattr(msg, "retry_since", None) else None
        policy = self.cfg.retry
        # an AS4 answer of any kind (receipt or ebMS error) proves the endpoint is up
        answered = type(outcome).__name__ in ("ReceiptOk", "EbmsErrorOutcome")
        alerts: list[dict[str, Any]] = []
        alert: dict[str, Any] | None = None

        route = self.routes.get(msg.endpoint or "")

        def txn(j: Any) -> Any:
            filing = apply(j)
            if route is not None:
                filing = route.after_send(j, msg, outcome, filing, now)
            nxt = self._claim_in(j, now, order, set()) if claim_next else None
            return filing, nxt

        def health(j: Any, failed: bool) -> None:
            """Endpoint health: outage alerts while it fails, a recovery alert when it answers again."""
            if not failed:
                before = j.note_endpoint_ok(endpoint, self.party_id, now=now)
                if before.outage_alerted_at is not None:
                    alerts.append({"kind": "endpoint-recovered", "endpoint": endpoint,
                                   "failing_since": before.failing_since})
                return
            st = j.note_endpoint_failure(endpoint, self.party_id, now=now)
            last = parse_iso(st.outage_alerted_at) if st.outage_alerted_at else None
            if policy.outage_alert_due(parse_iso(st.failing_since), last, now):
                j.mark_outage_alerted(endpoint, self.party_id, now=now)
                alerts.append({"kind": "endpoint-outage", "endpoint": endpoint, "failing_since": st.failing_since,
                               "reason": reason, "queued": j.queued_by_endpoint().get(endpoint, 0)})

        def apply(j: Any) -> Any:
            nonlocal alert, verdict, reason
            filing = j.get_filing(msg.filing_id) if msg.filing_id is not None else None
            first = filing is not None and msg.action == filing.action
            if verdict == "receipted":
                health(j, failed=False)
                j.record_receipt(msg.message_id, worker=msg.claimed_by or self.worker, now=now, outcome="receipt-ok",
                                 receipt=raw, content_type=raw_ct)
                if filing is not None:
                    if first and filing.state == S.SENDING:
                        filing = j.transition(filing.id, S.SENT, now=now, event="receipted",
                                              detail={"message_id": msg.message_id})
                    elif not first and (j.get_message(msg.message_id).business_outcome or "") != "rejected":
                        # (a follow-up customs already rejected, the IE3N99 outrunning this receipt: no effect)
                        nxt = follow_up_state(msg.action or "", filing.state)
                        for req in j.list_requests(filing_id=filing.id, open_only=True):
                            if answers_request(msg.action or "", req.kind):
                                j.close_request(req.id, now=now, answer_message_id=msg.message_id)
                        if nxt:
                            filing = j.transition(filing.id, nxt, now=now, event=f"follow-up-{msg.action}",
                                                  detail={"message_id": msg.message_id})
                return filing
            if verdict == "pause":
                health(j, failed=False)
                _, newly = j.pause_endpoint(endpoint, self.party_id, now=now, reason=reason,
                                            message_id=msg.message_id)
                # the message was refused for its sender, not for itself: back in the queue, due, unchanged
                j.schedule_retry(msg.message_id, worker=msg.claimed_by or self.worker, now=now, next_attempt_at=now, error=reason,
                                 receipt=raw, content_type=raw_ct, event="message-paused", failed=False)
                if first and filing.state == S.SENDING:
                    filing = j.transition(filing.id, S.QUEUED, now=now, event="endpoint-paused", error=reason,
                                          detail={"message_id": msg.message_id, "endpoint": endpoint})
                alert = {"kind": "authorisation-refused", "message_id": msg.message_id, "reason": reason,
                         "endpoint": endpoint, "party_id": self.party_id, "paused": True, "newly_paused": newly}
                return filing
            status = getattr(outcome, "http_status", None)
            if verdict == "permanent" and not answered and status is not None:
                st = j.endpoint_state(endpoint, self.party_id)
                if policy.grace_for_4xx(status, healthy_before=bool(st and st.last_ok_at), now=now, since=since):
                    verdict = "retry"
                    reason = (f"{reason.split(' - not retried')[0]} - retried: the endpoint worked before (a proxy "
                              f"maintenance page?), grace period {policy.http_4xx_grace_seconds:.0f} s")
            if verdict in ("retry", "permanent", "hold") and answered:
                health(j, failed=False)
            elif verdict == "retry":
                health(j, failed=True)
            # the peer's Retry-After (HTTP 429 / 503, AS4 or HMRC) is a floor for the back-off, within the budget
            asked = getattr(outcome, "retry_after", None)
            next_at = policy.next_attempt(attempts, now, since=since, retry_after=asked) if verdict == "retry" else None
            if verdict == "retry" and next_at is not None:
                j.schedule_retry(msg.message_id, worker=msg.claimed_by or self.worker, now=now, next_attempt_at=next_at, error=reason,
                                 receipt=raw, content_type=raw_ct)
                if first and filing.state == S.SENDING:
                    detail = {"next_attempt": next_at.isoformat()}
                    if asked is not None:
                        detail["retry_after_seconds"] = asked
                    filing = j.transition(filing.id, S.QUEUED, now=now, event="retry-scheduled", error=reason,
                                          count_attempt=True, detail=detail)
                return filing
            hold = verdict == "hold"
            if verdict == "retry":
                reason_final = f"{policy.exhausted_reason(attempts, now, since)}: {reason}"
            else:
                reason_final = reason
            j.fail_message(msg.message_id, worker=msg.claimed_by or self.worker, now=now, error=reason_final, hold=hold, receipt=raw,
                           content_type=raw_ct)
            target = S.HELD if hold else S.FAILED
            if first and can_transition(filing.state, target):
                filing = j.transition(filing.id, target, now=now, event="held" if hold else "failed",
                                      error=reason_final, detail={"message_id": msg.message_id})
            alert = {"kind": "helpdesk" if hold else ("configuration" if sub == "A002" else "send-failed"),
                     "message_id": msg.message_id, "reason": reason_final}
            return filing

        filing, nxt = await self.writer.submit(txn)
        self.sent += 1
        log.info("sent message_id=%s verdict=%s attempt=%d endpoint=%s reason=%s", msg.message_id, verdict, attempts,
                 endpoint, reason)
        for a in alerts:
            self.alerts.raise_alert(a.pop("kind"), **a)
        ops_metrics.message_sent(msg.endpoint or self.default_endpoint, msg.action, outcome, verdict)
        if filing is not None:
            await asyncio.to_thread(write_status, self.status_dir, filing.to_dict())
        if alert:
            kind = alert.pop("kind")
            if filing is not None:
                self.alerts.raise_alert(kind, lrn=filing.lrn, **alert)
            else:
                self.alerts.raise_alert(kind, **alert)
        return nxt

    async def stop(self, drain_seconds: float) -> None:
        """Stops claiming; lets in-flight sends finish for up to ``drain_seconds`` (leases cover the rest)."""
        self._stopping = True
        self._wake.set()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=drain_seconds)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
