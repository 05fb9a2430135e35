"""Retry-After (RFC 9110 10.2.3): read from the wire bounded and fail-safe, and a floor for the sender's back-off
that never extends the retry budget. The daemon-level check (a 503 with Retry-After from the simulator) is
tests/test_pipeline_e2e.py::test_a_503_with_retry_after_is_not_retried_before_that."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

import pytest

from gateway.hmrc.client import RetryLater
from gateway.journal.committer import JournalWriter
from gateway.journal.config import JournalConfig
from gateway.journal.factory import open_journal
from gateway.journal.records import OutboundMessage
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import AlertsConfig, PipelineConfig
from gateway.pipeline.retry import RetryPolicy
from gateway.pipeline.sender import Sender
from gateway.transport.client import _http_failure
from gateway.transport.retryafter import MAX_RETRY_AFTER_SECONDS, parse_retry_after

NOW = dt.datetime(2026, 12, 2, 8, 0, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5),
    ("3600", 3600.0), ("3601", MAX_RETRY_AFTER_SECONDS), ("99999999999", MAX_RETRY_AFTER_SECONDS),
    ("Wed, 02 Dec 2026 08:01:30 GMT", 90.0),            # IMF-fixdate
    ("Wednesday, 02-Dec-26 08:00:10 GMT", 10.0),        # obsolete RFC 850 form, still to be accepted
    ("Wed Dec  2 08:00:20 2026", 20.0),                 # obsolete asctime form (no zone: GMT)
    ("Wed, 02 Dec 2026 07:59:00 GMT", 0.0),             # in the past: now
    ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
])
def test_delay_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize("value", [None, "", "   ", "-1", "+5", "1e3", "0x10", "nan", "inf", "5 s", "soon",
                                   "Wed, 32 Dec 2026 08:00:00 GMT", "12" * 20])
def test_unusable_values_are_ignored(value: str | None) -> None:
    """Unusable means the normal back-off applies, never an exception and never a wait the peer did not ask for."""
    assert parse_retry_after(value, now=NOW) is None


def test_the_cap_is_a_parameter() -> None:
    assert parse_retry_after("600", cap=60) == 60 and parse_retry_after("30", cap=60) == 30


def test_retry_after_is_a_floor_for_the_backoff() -> None:
    policy = RetryPolicy(initial_seconds=5, jitter=0)
    assert policy.next_attempt(1, NOW) == NOW + dt.timedelta(seconds=5)
    assert policy.next_attempt(1, NOW, retry_after=120) == NOW + dt.timedelta(seconds=120)
    assert policy.next_attempt(1, NOW, retry_after=2) == NOW + dt.timedelta(seconds=5)     # never sooner
    assert policy.next_attempt(1, NOW, retry_after=0) == NOW + dt.timedelta(seconds=5)
    assert policy.next_attempt(1, NOW, retry_after=None) == NOW + dt.timedelta(seconds=5)
    jittered = RetryPolicy(initial_seconds=5)
    assert all(jittered.next_attempt(1, NOW, random.Random(i), retry_after=30) == NOW + dt.timedelta(seconds=30)
               for i in range(20))


def test_retry_after_never_extends_the_budget() -> None:
    policy = RetryPolicy(initial_seconds=5, jitter=0, budget_seconds=600)
    since = NOW - dt.timedelta(seconds=590)
    # 10 s of budget left: the peer's hour is cut to the budget's end, where the last attempt goes
    assert policy.next_attempt(3, NOW, since=since, retry_after=3600) == NOW + dt.timedelta(seconds=10)
    assert policy.next_attempt(3, NOW + dt.timedelta(seconds=10), since=since, retry_after=3600) is None
    capped = RetryPolicy(initial_seconds=5, jitter=0, max_attempts=2)
    assert capped.next_attempt(2, NOW, retry_after=30) is None


@pytest.mark.parametrize("status, kept", [(503, True), (429, True), (500, True), (408, True),
                                          (404, False), (403, False), (302, False)])
def test_the_as4_client_keeps_retry_after_only_where_it_retries(status: int, kept: bool) -> None:
    """A 4xx that ends the send keeps no wait (nothing is retried); a retried status carries the peer's wait."""
    failure = _http_failure(status, "test", 0.1, 42.0)
    assert failure.retryable is kept
    assert failure.retry_after == (42.0 if kept else None)


class RateLimitedRoute:
    """The HMRC route's contract: ``send`` returns the HMRC client's outcome; here HMRC's 429 with Retry-After as
    ``HmrcClient.submit`` returns it (tests/test_hmrc_client.py reads it from the stand-in's real answer)."""

    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after
        self.sent: list[str] = []

    async def send(self, msg: object) -> object:
        self.sent.append(msg.message_id)  # type: ignore[attr-defined]
        return RetryLater("rate limited", 429, self.retry_after)

    def after_send(self, j: object, msg: object, outcome: object, filing: object, now: object) -> object:
        return filing


@pytest.mark.parametrize("retry_after", [None, 90.0])
async def test_the_sender_waits_what_hmrc_asked(tmp_path: Path, retry_after: float | None) -> None:
    journal = open_journal(JournalConfig(path=tmp_path / "journal.sqlite3"), daemon=False)
    writer = JournalWriter(journal).start()
    route = RateLimitedRoute(retry_after)
    cfg = PipelineConfig(workers=1, per_endpoint_concurrency=1, retry=RetryPolicy(initial_seconds=5, jitter=0),
                         lease_seconds=60, answer_timeout_seconds=3600, request_timeout_seconds=3600,
                         idle_poll_seconds=0.05, drain_seconds=2)
    sender = Sender(journal, writer, client=None, endpoints={}, cfg=cfg,
                    alerts=Alerts(AlertsConfig((), None), "conformance"), status_dir=tmp_path,
                    default_endpoint="hmrc", routes={"hmrc": route})
    before = dt.datetime.now(dt.timezone.utc)
    journal.enqueue_message(OutboundMessage(message_id="m1@x", action="IE315", sealed=b"<x/>",
                                            content_type="application/xml", filing_id=None, priority="B",
                                            endpoint="hmrc"), now=before)
    task = asyncio.create_task(sender.run())
    try:
        for _ in range(500):
            if journal.get_message("m1@x").attempts >= 1:
                break
            await asyncio.sleep(0.02)
        msg = journal.get_message("m1@x")
        assert route.sent == ["m1@x"] and msg.state == "queued" and msg.attempts == 1, msg
        due = dt.datetime.fromisoformat(msg.next_attempt_at) - before
        if retry_after is None:
            assert dt.timedelta(seconds=5) <= due < dt.timedelta(seconds=30), due
        else:
            assert dt.timedelta(seconds=90) <= due < dt.timedelta(seconds=120), due
    finally:
        await sender.stop(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()
        journal.close()
