"""Journal pieces of issue 11 on SQLite and PostgreSQL: the endpoint pause (durable, skipped by claims, lifted only by
resume), the retry-budget clock (retry_since), pending acknowledgements of pulled messages, reopened requests and
their timer, and migration 2 applied to a journal written by migration 1."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from gateway.journal import schema
from gateway.journal.records import InboundMessage, NewFiling, OutboundMessage
from gateway.journal.factory import open_journal
from gateway.journal.sqlite import SqliteJournal
from tests.journal_backends import backend, jcfg  # noqa: F401 - fixtures
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import AlertsConfig, PipelineConfig
from gateway.pipeline.retry import RetryPolicy
from gateway.pipeline.timers import Expectations

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
S = dt.timedelta(seconds=1)


def _journal(jcfg: Any) -> Any:
    """This journal on each backend (tests/journal_backends.py); reopening it is a restart."""
    return open_journal(jcfg, now=T0)


def _queue(j: SqliteJournal, lrn: str, endpoint: str | None, priority: str = "B") -> str:
    f, _ = j.insert_filing(NewFiling("NL123456789", lrn, "NL123456789", "IE3F32", "0" * 64, priority,
                                     endpoint=endpoint), now=T0)
    mid = f"{lrn}@gw.test"
    j.enqueue_message(OutboundMessage(mid, "IE3F32", b"sealed", "application/soap+xml", filing_id=f.id,
                                      priority=priority, endpoint=endpoint), now=T0)
    return mid


def test_pause_is_durable_skipped_by_claims_and_lifted_only_by_resume(jcfg: Any) -> None:
    j = _journal(jcfg)
    a, b, default = _queue(j, "L1", "sti"), _queue(j, "L2", "nti-be"), _queue(j, "L3", None)
    state, new = j.pause_endpoint("sti", "NL123456789", now=T0, reason="EBMS:0004/A001", message_id=a)
    assert new and state.paused and state.pause_message_id == a
    assert j.pause_endpoint("sti", "NL123456789", now=T0 + S, reason="again")[1] is False   # one pause, kept
    j.close()
    j = _journal(jcfg)                                                   # a restart keeps it
    paused = j.paused_endpoints("NL123456789")
    assert paused == ["sti"] and j.paused_endpoints("NL000000001") == []    # per identity
    got = j.claim_due_messages(now=T0 + S, worker="w", limit=10, exclude_endpoints=paused, default_endpoint="sti")
    assert [m.message_id for m in got] == [b]          # the message without endpoint goes to the default: paused
    assert j.get_message(a).state == "queued" and j.get_message(default).state == "queued"
    [resumed] = j.resume_endpoint("sti", now=T0 + 2 * S, by="ops")
    assert not resumed.paused and resumed.resumed_by == "ops"
    assert j.resume_endpoint("sti", now=T0 + 3 * S) == []                    # nothing to resume any more
    got = j.claim_due_messages(now=T0 + 3 * S, worker="w", limit=10,
                               exclude_endpoints=j.paused_endpoints("NL123456789"), default_endpoint="sti")
    assert sorted(m.message_id for m in got) == sorted([a, default])
    assert [e.event for e in j.events(message_id=None, limit=1000) if e.event.startswith("endpoint-")] == \
        ["endpoint-paused", "endpoint-resumed"]
    j.close()


def test_retry_since_marks_the_budget_start_and_is_reset(jcfg: Any) -> None:
    j = _journal(jcfg)
    mid = _queue(j, "L1", "sti")
    for n in range(3):
        [m] = j.claim_due_messages(now=T0 + n * 10 * S, worker="w")
        j.schedule_retry(mid, worker="w", now=T0 + n * 10 * S, next_attempt_at=T0 + (n * 10 + 5) * S, error="503")
    assert j.get_message(mid).retry_since == "2026-03-02T08:00:00.000Z"      # the first failure, kept
    j.claim_due_messages(now=T0 + 60 * S, worker="w")
    j.schedule_retry(mid, worker="w", now=T0 + 60 * S, next_attempt_at=T0 + 60 * S, error="A001", failed=False,
                     event="message-paused")
    assert j.get_message(mid).retry_since == "2026-03-02T08:00:00.000Z"      # a pause is no failure
    j.claim_due_messages(now=T0 + 70 * S, worker="w")
    j.fail_message(mid, worker="w", now=T0 + 70 * S, error="budget spent")
    j.requeue_message(mid, now=T0 + 80 * S, reason="operator resend")
    assert j.get_message(mid).retry_since is None                            # a resend starts a new budget
    j.close()


def test_pending_acks_of_pulled_messages(jcfg: Any) -> None:
    j = _journal(jcfg)
    for mid, pulled in (("p1@ti", True), ("p2@ti", True), ("push@ti", False)):
        j.record_inbound(InboundMessage("sti-taxud", mid, b"raw", "multipart/related", action="IE3R01"), now=T0,
                         receipt=b"receipt-" + mid.encode(), receipt_content_type="application/soap+xml",
                         ack_pending=pulled)
    assert [(a.message_id, a.receipt) for a in j.pending_acks()] == [("p1@ti", b"receipt-p1@ti"),
                                                                     ("p2@ti", b"receipt-p2@ti")]
    assert j.set_ack_state(None, "p1@ti", "acknowledged", now=T0 + S)
    assert not j.set_ack_state(None, "p1@ti", "acknowledged", now=T0 + S)   # no change, no second event
    assert not j.set_ack_state(None, "push@ti", "acknowledged", now=T0 + S)  # pushed: its receipt went back inline
    assert [a.message_id for a in j.pending_acks()] == ["p2@ti"]
    j.close()


def test_reopened_request_restarts_its_timer(jcfg: Any) -> None:
    j = _journal(jcfg)
    f, _ = j.insert_filing(NewFiling("NL123456789", "L1", "NL123456789", "IE3F32", "0" * 64), now=T0)
    req = j.open_request(f.id, "IE3Q02", "q2@ti", now=T0)
    cfg = PipelineConfig(workers=1, per_endpoint_concurrency=1, retry=RetryPolicy(), lease_seconds=60,
                         idle_poll_seconds=1, answer_timeout_seconds=10_000, request_timeout_seconds=60,
                         drain_seconds=1)
    clock = [T0]
    alerts = Alerts(AlertsConfig((), None), "test")
    exp = Expectations(j, cfg, alerts, clock=lambda: clock[0])
    clock[0] = T0 + 61 * S
    assert [a["request_message_id"] for a in exp.check()] == ["q2@ti"]
    assert exp.check() == []                                                  # once per expectation
    j.close_request(req.id, now=T0 + 70 * S, answer_message_id="r2@gw")
    again = j.reopen_request(req.id, now=T0 + 100 * S, reason="IE3N01 rejected the answer")
    assert again.state == "open" and again.answer_message_id is None and again.opened_at > req.opened_at
    clock[0] = T0 + 130 * S
    assert exp.check() == []                                                  # the timer restarted at the reopening
    clock[0] = T0 + 161 * S
    assert len(exp.check()) == 1
    j.close()


def test_migration_2_brings_a_version_1_journal_forward(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                 "applied_at TEXT NOT NULL)")
    schema.MIGRATIONS[0].apply(conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO filings (filer_eori, lrn, sender_eori, action, payload_sha256, state, priority, "
                 "created_at, updated_at) VALUES ('NL1', 'L1', 'NL1', 'IE3F32', ?, 'queued', 'B', 'x', 'x')",
                 ("0" * 64,))
    conn.execute("COMMIT")
    conn.close()
    j = SqliteJournal.open(path, now=T0)
    assert j.pragma("user_version") == schema.LATEST >= 2
    assert j.get_filing_by_key("NL1", "L1").state == "queued"
    assert j.paused_endpoints("NL1") == [] and j.pending_acks() == []
    j.close()


def test_endpoint_command_pause_list_resume(tmp_path: Path, pki: Path) -> None:
    """`ics2gw endpoint` against a journal (no daemon needed: the daemon reads the pause at every claim)."""
    import json

    from tests.pipeline_harness import GatewayEnv, SimEnv
    gw = GatewayEnv.create(tmp_path / "gw", SimEnv.create(tmp_path / "sim", []))
    j = SqliteJournal.open(gw.var / "journal.sqlite3", now=T0)
    _queue(j, "L1", "sti")
    j.close()
    r = gw.cli("endpoint", "pause", "sti", "--reason", "certificate renewal")
    assert r.returncode == 0 and json.loads(r.stdout)["paused"] is True, r.stderr
    [row] = [json.loads(line) for line in gw.cli("endpoint", "list", "--json").stdout.splitlines()]
    assert (row["endpoint"], row["paused"], row["pause_reason"], row["queued"]) == \
        ("sti", True, "certificate renewal", 1)
    assert "PAUSED" in gw.cli("endpoint", "list").stdout
    r = gw.cli("endpoint", "pause", "nowhere")
    assert r.returncode == 1 and "configured: sti" in r.stderr
    r = gw.cli("endpoint", "resume", "sti", "--by", "alice")
    assert r.returncode == 0 and json.loads(r.stdout)["resumed_by"] == "alice"
    assert json.loads(gw.cli("endpoint", "list", "--json").stdout)["paused"] is False


def test_an_expectation_alerts_once_across_a_failover_of_the_timers(jcfg: Any) -> None:
    """The timers singleton moves to another instance (or the daemon restarts): the new holder does not alert
    again what the previous one already alerted, but alerts what is new (the mark is journaled, not in memory)."""
    from gateway.journal.committer import JournalWriter
    j = _journal(jcfg)
    writer = JournalWriter(j).start()
    try:
        f, _ = j.insert_filing(NewFiling("NL123456789", "L1", "NL123456789", "IE3F32", "0" * 64), now=T0)
        j.open_request(f.id, "IE3Q02", "q2@ti", now=T0)
        cfg = PipelineConfig(workers=1, per_endpoint_concurrency=1, retry=RetryPolicy(), lease_seconds=60,
                             idle_poll_seconds=1, answer_timeout_seconds=10_000, request_timeout_seconds=60,
                             drain_seconds=1)
        clock = [T0 + 61 * S]
        first = Expectations(j, cfg, Alerts(AlertsConfig((), None), "test"), clock=lambda: clock[0], writer=writer)
        assert [a["request_message_id"] for a in first.check()] == ["q2@ti"]
        second = Expectations(j, cfg, Alerts(AlertsConfig((), None), "test"), clock=lambda: clock[0], writer=writer)
        assert second.check() == []                                    # the new holder: already alerted
        j.open_request(f.id, "IE3Q03", "q3@ti", now=T0 + 10 * S)
        clock[0] = T0 + 80 * S
        assert [a["request_message_id"] for a in second.check()] == ["q3@ti"]   # but new ones alert
        assert first.check() == [] and second.check() == []
        assert [e.event for e in j.events(filing_id=f.id)].count("expectation-alerted") == 2
    finally:
        writer.close_sync()
        j.close()
