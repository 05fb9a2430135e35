"""Polling HMRC's outcome and notification APIs: fetch, journal, then acknowledge (DELETE), in that order.

An item is acknowledged only after ``sink.deliver`` has committed it to the journal. A crash between the commit
and the DELETE leaves the item at HMRC; the next poll fetches it again, the journal's duplicate elimination
(``lookup_inbound`` by the item's id) recognises it, nothing is delivered a second time, and the DELETE is sent.

An item that cannot be read or journaled (a malformed body, an unsafe id, a journal error) is skipped, left
unacknowledged at HMRC and alerted once; it never blocks the items behind it.

Pacing: every ``interval`` seconds while idle; at once again when a full page (100 items) brought new ones; on 429 the
``Retry-After`` (or the doubled interval) and on 5xx / transport failures an exponential back-off up to
``max_interval``. A refused authorisation raises an urgent alert and waits for the operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.hmrc import protocol
from gateway.hmrc.client import HmrcClient, PollError
from gateway.hmrc.oauth import AuthorisationNeeded
from gateway.hmrc.tokens import crash_point

log = logging.getLogger("ics2gw.hmrc.poller")

Deliver = Callable[..., Awaitable[bool]]


@dataclass
class PollReport:
    listed: int = 0
    delivered: int = 0
    duplicates: int = 0
    acknowledged: int = 0
    full_page: bool = False
    errors: list[str] = field(default_factory=list)


class HmrcPoller:
    def __init__(self, client: HmrcClient, deliver: Deliver, *, interval: float = 60.0, max_interval: float = 900.0,
                 alerts: Any = None, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.client, self.deliver = client, deliver
        self.interval, self.max_interval = interval, max_interval
        self.alerts = alerts
        self._sleep = sleep
        self.polls = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.backoff = interval
        self._skipped: set[str] = set()

    async def _one_kind(self, report: PollReport, *, notifications: bool) -> None:
        if notifications:
            refs: list[Any] = await self.client.list_notifications()
        else:
            refs = await self.client.list_outcomes()
        refs = refs[:protocol.PAGE_SIZE]
        report.listed += len(refs)
        report.full_page = report.full_page or len(refs) >= protocol.PAGE_SIZE
        seen: set[str] = set()
        for ref in refs:
            ident = ref.notification_id if notifications else ref.correlation_id
            if ident in seen:          # listed twice in one page: one fetch, one delivery, one DELETE
                continue
            seen.add(ident)
            source = f"{'notification' if notifications else 'outcome'}/{ident}"
            try:
                fetched = await (self.client.get_notification(ident) if notifications
                                 else self.client.get_outcome(ident))
                if fetched is None:    # acknowledged meanwhile (by an earlier run of ours): nothing to do
                    continue
                delivered = await self.deliver(fetched, source_id=source)
            except (PollError, AuthorisationNeeded, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if isinstance(exc, PollError) and not exc.transient:
                    self._skip(report, source, exc)    # this item only (403 / 404-like answers for one id)
                    continue
                raise                                 # HMRC or the network is unwell: the whole round backs off
            except protocol.ProtocolError as exc:
                self._skip(report, source, exc)        # unreadable or unsafe item: never acknowledged, never blocks
                continue
            except Exception as exc:  # a journal error or a bug on one item must not block every item behind it
                log.exception("hmrc item could not be journaled source=%s", source)
                self._skip(report, source, exc)
                continue
            if delivered:
                report.delivered += 1
            else:
                report.duplicates += 1
            crash_point("outcome-journaled")
            acked = await (self.client.ack_notification(ident) if notifications else self.client.ack_outcome(ident))
            report.acknowledged += int(acked)

    def _skip(self, report: PollReport, source: str, exc: BaseException) -> None:
        """An item that cannot be journaled stays at HMRC, unacknowledged (nothing is lost), and the operator is
        told once per item; the items behind it keep flowing."""
        why = f"{type(exc).__name__}: {str(exc)[:300]}"
        report.errors.append(f"{source}: {why}")
        if source in self._skipped:
            return
        if len(self._skipped) >= 10_000:
            self._skipped.clear()
        self._skipped.add(source)
        log.error("hmrc item left unacknowledged source=%s reason=%r", source, why)
        if self.alerts is not None:
            self.alerts.raise_alert("hmrc-item-unreadable", source=source, reason=why,
                                    action="inspect it at HMRC; it stays there unacknowledged")

    async def poll_once(self) -> PollReport:
        """One round over both APIs; raises ``PollError`` / ``AuthorisationNeeded`` / transport errors."""
        report = PollReport()
        self.polls += 1
        await self._one_kind(report, notifications=False)
        await self._one_kind(report, notifications=True)
        return report

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = self.interval
            try:
                report = await self.poll_once()
                self.last_error = None
                self.last_success = asyncio.get_running_loop().time()
                self.backoff = self.interval
                if report.full_page and report.delivered:
                    # more are waiting; but a full page of items we cannot take, or of ones HMRC keeps listing
                    # after their DELETE, waits for the interval instead of spinning
                    delay = 0.0
                if report.listed:
                    log.info("hmrc poll listed=%d delivered=%d duplicates=%d acknowledged=%d", report.listed,
                             report.delivered, report.duplicates, report.acknowledged)
            except PollError as exc:
                self.last_error = str(exc)
                self.backoff = min(self.max_interval, self.backoff * 2)
                delay = max(exc.retry_after or 0.0, self.backoff)
                log.warning("hmrc poll failed error=%r retry_in=%.1f", str(exc), delay)
                if not exc.transient and self.alerts is not None:
                    self.alerts.raise_alert("hmrc-poll-failed", reason=str(exc))
            except AuthorisationNeeded as exc:
                self.last_error = str(exc)
                delay = self.max_interval
                log.error("hmrc poll needs authorisation error=%r", str(exc))
                if self.alerts is not None:
                    self.alerts.raise_alert("hmrc-authorisation-needed", category="A", reason=str(exc),
                                            action="run `ics2gw hmrc authorize`")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, protocol.ProtocolError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.backoff = min(self.max_interval, self.backoff * 2)
                delay = self.backoff
                log.warning("hmrc poll failed error=%r retry_in=%.1f", self.last_error, delay)
            except Exception as exc:   # anything else (a bug, the journal): the poller backs off, it never dies
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.backoff = min(self.max_interval, self.backoff * 2)
                delay = self.backoff
                log.exception("hmrc poll failed unexpectedly retry_in=%.1f", delay)
            if delay > 0:
                if self._sleep is not None:
                    await self._sleep(delay)
                else:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                    except asyncio.TimeoutError:
                        pass

    def status(self) -> dict[str, Any]:
        return {"polls": self.polls, "last_error": self.last_error, "backoff_seconds": self.backoff}
