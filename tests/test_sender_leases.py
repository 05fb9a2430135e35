"""The sender and its leases: renewed while a send is slow (no other instance takes the message over), and an
outcome refused with LeaseLost after a takeover is dropped without crashing the sender. Runs on SQLite and, when
the ``pg_dsn`` fixture can start a server, on PostgreSQL (the other "instance" is a second journal on the same
database)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gateway.journal.committer import JournalWriter
from gateway.journal.config import JournalConfig
from gateway.journal.factory import open_journal
from gateway.journal.records import OutboundMessage
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import AlertsConfig, PipelineConfig
from gateway.pipeline.retry import RetryPolicy
from gateway.pipeline.sender import Sender


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Receipted:
    raw = b"receipt"
    content_type = "application/soap+xml"

    def classification(self) -> tuple[str, str, str | None]:
        return "receipted", "receipt verified", None


class SlowRoute:
    """A route whose sends wait until the test lets them finish."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def send(self, msg: Any) -> Any:
        self.started.append(msg.message_id)
        await self.release.wait()
        return Receipted()

    def after_send(self, j: Any, msg: Any, outcome: Any, filing: Any, now: Any) -> Any:
        return filing


@pytest.fixture(params=["sqlite", "postgresql"])
def journals(request: pytest.FixtureRequest, tmp_path: Path):
    """(journal of this instance, journal of "another instance") on one database."""
    if request.param == "sqlite":
        jcfg = JournalConfig(path=tmp_path / "journal.sqlite3")
    else:
        pg_dsn = request.getfixturevalue("pg_dsn")
        jcfg = JournalConfig(path=None, backend="postgresql", dsn=str(pg_dsn),  # type: ignore[arg-type]
                             password=pg_dsn.password, connect_timeout_seconds=5)
    mine = open_journal(jcfg, daemon=False)
    other = open_journal(jcfg, daemon=False, migrate=False)
    yield mine, other
    other.close()
    mine.close()


def _sender(journal: Any, writer: Any, route: SlowRoute, tmp_path: Path, lease: float) -> Sender:
    # one worker slot: with a free slot, a sender whose own lease expired would take its own message over
    cfg = PipelineConfig(workers=1, per_endpoint_concurrency=1, retry=RetryPolicy(jitter=0), lease_seconds=lease,
                         idle_poll_seconds=0.05, answer_timeout_seconds=3600, request_timeout_seconds=3600,
                         drain_seconds=2)
    return Sender(journal, writer, client=None, endpoints={}, cfg=cfg,
                  alerts=Alerts(AlertsConfig((), None), "conformance"), status_dir=tmp_path,
                  default_endpoint="TI-NL", routes={"TI-NL": route})


def _enqueue(j: Any, mid: str) -> None:
    j.enqueue_message(OutboundMessage(message_id=mid, action="IE3F32", sealed=b"sealed", content_type="x",
                                      filing_id=None, priority="B", endpoint="TI-NL"), now=_now())


async def _until(cond: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_a_slow_send_keeps_its_lease(journals, tmp_path: Path) -> None:
    mine, other = journals
    writer = JournalWriter(mine).start()
    route = SlowRoute()
    sender = _sender(mine, writer, route, tmp_path, lease=0.6)
    _enqueue(mine, "slow@x")
    task = asyncio.create_task(sender.run())
    try:
        await _until(lambda: route.started == ["slow@x"])
        # "another instance" keeps trying to claim for three lease periods: the renewals keep the message ours
        for _ in range(36):
            assert other.claim_due_messages(now=_now(), worker="other-instance", limit=10, lease_seconds=60) == []
            await asyncio.sleep(0.05)
        route.release.set()
        await _until(lambda: mine.get_message("slow@x").state == "receipted")
        assert sender.leases_lost == 0 and route.started == ["slow@x"]   # sent once
    finally:
        await sender.stop(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()


async def test_an_outcome_after_a_takeover_is_dropped_and_the_sender_goes_on(journals, tmp_path: Path,
                                                                          caplog) -> None:
    mine, other = journals
    writer = JournalWriter(mine).start()
    route = SlowRoute()
    sender = _sender(mine, writer, route, tmp_path, lease=0.6)

    async def frozen() -> list[str]:   # this instance stalls (a frozen VM): no renewal reaches the database
        return []
    sender.renew_leases = frozen  # type: ignore[method-assign]
    _enqueue(mine, "late@x")
    task = asyncio.create_task(sender.run())
    try:
        await _until(lambda: route.started == ["late@x"])
        await asyncio.sleep(0.8)    # the lease expires; the other instance takes the message over
        [taken] = other.claim_due_messages(now=_now(), worker="other-instance", limit=10, lease_seconds=60)
        assert taken.message_id == "late@x" and taken.sealed == b"sealed"      # the same bytes, same MessageId
        route.release.set()
        await _until(lambda: sender.leases_lost == 1)
        m = mine.get_message("late@x")
        assert m.state == "sending" and m.claimed_by == "other-instance"        # our late outcome changed nothing
        assert "lease lost" in caplog.text
        _enqueue(mine, "next@x")                                               # and the sender still works
        sender.wake()
        await _until(lambda: mine.get_message("next@x").state == "receipted")
    finally:
        await sender.stop(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()


async def test_renewal_reports_a_lost_lease(journals, tmp_path: Path, caplog) -> None:
    mine, other = journals
    writer = JournalWriter(mine).start()
    sender = _sender(mine, writer, SlowRoute(), tmp_path, lease=0.3)
    _enqueue(mine, "r@x")
    try:
        [m] = await writer.submit(lambda j: j.claim_due_messages(now=_now(), worker=sender.worker, limit=1,
                                                                 lease_seconds=0.3))
        sender._hold(m.message_id)
        assert await sender.renew_leases() == []                 # still ours: renewed
        await asyncio.sleep(0.4)
        other.claim_due_messages(now=_now(), worker="other-instance", limit=1, lease_seconds=60)
        assert await sender.renew_leases() == ["r@x"]            # taken over: reported
        assert "lease lost message_id=r@x" in caplog.text
    finally:
        await writer.close()


async def test_a_send_reclaimed_by_its_own_instance_records_one_outcome(journals, tmp_path: Path) -> None:
    """A send outlives its lease and THIS instance (a free worker slot) claims the message again: each claim has a
    token of its own, so the stale first send's outcome is refused (LeaseLost) and only the current one counts."""
    mine, _ = journals
    writer = JournalWriter(mine).start()
    route = SlowRoute()
    sender = _sender(mine, writer, route, tmp_path, lease=0.4)
    sender.cfg = PipelineConfig(**{**sender.cfg.__dict__, "workers": 2, "per_endpoint_concurrency": 2})
    sender._slots = asyncio.Semaphore(2)

    async def frozen() -> list[str]:   # the first send stalls past its lease without renewing
        return []
    sender.renew_leases = frozen  # type: ignore[method-assign]
    _enqueue(mine, "own@x")
    task = asyncio.create_task(sender.run())
    try:
        await _until(lambda: route.started == ["own@x"])
        first_token = mine.get_message("own@x").claimed_by
        await _until(lambda: route.started == ["own@x", "own@x"], timeout=10)   # re-claimed by the same instance
        second_token = mine.get_message("own@x").claimed_by
        assert second_token != first_token and second_token.startswith(sender.worker + "/")
        route.release.set()
        await _until(lambda: mine.get_message("own@x").state == "receipted")
        await _until(lambda: sender.leases_lost == 1)
        receipted = [e for e in mine.events(message_id="own@x") if e.event == "message-receipted"]
        assert len(receipted) == 1          # one outcome recorded, not two
    finally:
        await sender.stop(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()


async def test_a_sender_restarted_after_a_failed_claim_still_has_its_slots(tmp_path: Path) -> None:
    """A claim that fails (the database dropped the connection at that instant) ends the sender's run, and the
    supervisor starts it again: the worker slots the failed claim held must be free, or the restarted sender waits
    for them forever and nothing is sent again (one worker slot here, so one leaked slot is all of them)."""
    journal = open_journal(JournalConfig(path=tmp_path / "journal.sqlite3"), daemon=False)
    writer = JournalWriter(journal).start()

    class FailsOnce:      # the real writer; its first submission fails as a lost connection would
        failed = False

        async def submit(self, fn: Any) -> Any:
            if not self.failed:
                self.failed = True
                raise OSError("server closed the connection unexpectedly")
            return await writer.submit(fn)

        def __getattr__(self, name: str) -> Any:
            return getattr(writer, name)

    route = SlowRoute()
    route.release.set()
    sender = _sender(journal, FailsOnce(), route, tmp_path, lease=60)
    task: asyncio.Task[Any] | None = None
    try:
        with pytest.raises(OSError, match="server closed the connection"):
            await asyncio.wait_for(sender.run(), 10)
        task = asyncio.create_task(sender.run())          # what the supervisor does
        _enqueue(journal, "after-restart@x")
        await _until(lambda: journal.get_message("after-restart@x").state == "receipted")
        assert route.started == ["after-restart@x"]
    finally:
        await sender.stop(2)
        if task is not None:      # the first run's failure may leave no restarted task to stop
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await writer.close()
        journal.close()
