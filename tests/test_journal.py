"""The SQLite journal on real files: schema, durability settings, filings, messages, inbound, retention."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.journal import (
    DuplicateFilingConflict, InboundMessage, InvalidTransition, Journal, JournalLocked, LeaseLost, NewFiling, NotFound,
    OutboundMessage, ReadOnlyJournal, SchemaTooNew, SqliteJournal,
)
from gateway.journal import schema
from tests.journal_backends import backend, jcfg, open_any  # noqa: F401 - fixtures

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def filing(lrn: str = "LRN1", payload: str = "<ens/>", **kw: object) -> NewFiling:
    args: dict = dict(filer_eori="NL123456789", lrn=lrn, sender_eori="NL123456789", action="IE3F32",
                      payload_sha256=sha(payload), priority="B", endpoint="TI-NL")
    args.update(kw)
    return NewFiling(**args)


def out_msg(mid: str, filing_id: int | None, priority: str = "B", body: bytes = b"sealed-bytes") -> OutboundMessage:
    return OutboundMessage(message_id=mid, action="IE3F32", sealed=body, content_type="multipart/related",
                           filing_id=filing_id, priority=priority, endpoint="TI-NL")


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


@pytest.fixture
def sqlite_journal(jpath: Path):
    j = SqliteJournal.open(jpath, now=T0)
    yield j
    j.close()


@pytest.fixture
def journal(open_any):
    """The journal on each backend (tests/journal_backends.py): the same meaning on SQLite and PostgreSQL."""
    return open_any(now=T0)


# -- schema and durability -----------------------------------------------------------------------------------------

def test_migrates_from_empty_and_reopens_idempotently(jpath: Path) -> None:
    j = SqliteJournal.open(jpath, now=T0)
    assert isinstance(j, Journal)
    assert j.pragma("user_version") == schema.LATEST
    j.close()
    conn = sqlite3.connect(jpath)
    applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
    conn.close()
    assert applied == [(m.version,) for m in schema.MIGRATIONS]
    j2 = SqliteJournal.open(jpath, now=T0 + timedelta(days=1))  # nothing left to apply
    assert j2.pragma("user_version") == schema.LATEST
    j2.close()
    conn = sqlite3.connect(jpath)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(schema.MIGRATIONS)
    conn.close()


def test_refuses_a_newer_schema(jpath: Path) -> None:
    SqliteJournal.open(jpath, now=T0).close()
    conn = sqlite3.connect(jpath)
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer"):
        SqliteJournal.open(jpath, now=T0)


def test_wal_full_sync_and_foreign_keys(sqlite_journal: SqliteJournal) -> None:
    assert sqlite_journal.pragma("journal_mode") == "wal"
    assert sqlite_journal.pragma("synchronous") == 2  # FULL
    assert sqlite_journal.pragma("foreign_keys") == 1
    assert sqlite_journal.pragma("busy_timeout") == 5000


def test_committed_data_survives_reopen(jpath: Path) -> None:
    j = SqliteJournal.open(jpath, now=T0)
    f, created = j.insert_filing(filing(), now=T0)
    assert created
    j.close()
    j = SqliteJournal.open(jpath, now=T0)
    again = j.get_filing_by_key("NL123456789", "LRN1")
    assert again == f
    j.close()


def test_reader_sees_committed_data_while_writer_holds_a_transaction(sqlite_journal: SqliteJournal, jpath: Path) -> None:
    sqlite_journal.insert_filing(filing("A"), now=T0)
    reader = SqliteJournal.open_reader(jpath)
    try:
        with sqlite_journal.transaction():
            sqlite_journal.insert_filing(filing("B"), now=T0)  # not committed yet
            lrns = [d["lrn"] for d in reader.list_filings()]
            assert lrns == ["A"]  # the reader is not blocked and sees only committed data
        assert sorted(d["lrn"] for d in reader.list_filings()) == ["A", "B"]
        with pytest.raises(ReadOnlyJournal):
            reader.insert_filing(filing("C"), now=T0)
    finally:
        reader.close()


def test_second_daemon_is_refused_but_tools_may_open(sqlite_journal: SqliteJournal, jpath: Path) -> None:
    with pytest.raises(JournalLocked, match="another gateway daemon"):
        SqliteJournal.open(jpath, now=T0)
    tool = SqliteJournal.open(jpath, now=T0, daemon=False)
    tool.close()


def test_rollback_leaves_nothing(journal: SqliteJournal) -> None:
    with pytest.raises(RuntimeError):
        with journal.transaction():
            journal.insert_filing(filing("X"), now=T0)
            raise RuntimeError("boom")
    assert journal.get_filing_by_key("NL123456789", "X") is None


# -- filings ---------------------------------------------------------------------------------------------------

def test_insert_is_idempotent_and_conflicts_on_other_payload(journal: SqliteJournal) -> None:
    f1, created1 = journal.insert_filing(filing(), now=T0)
    f2, created2 = journal.insert_filing(filing(), now=T0 + timedelta(seconds=5))
    assert created1 and not created2 and f1 == f2
    with pytest.raises(DuplicateFilingConflict) as exc:
        journal.insert_filing(filing(payload="<ens>other</ens>"), now=T0)
    assert "LRN LRN1" in str(exc.value) and "received" in str(exc.value)
    # another filer may use the same LRN
    f3, created3 = journal.insert_filing(filing(filer_eori="DE999"), now=T0)
    assert created3 and f3.id != f1.id
    assert len(journal.find_filings_by_lrn("LRN1")) == 2


def test_transitions_are_enforced_and_logged(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    with pytest.raises(InvalidTransition) as exc:
        journal.transition(f.id, "registered", now=T0)
    assert "'received'" in str(exc.value) and "'registered'" in str(exc.value)
    journal.transition(f.id, "queued", now=T0)
    journal.transition(f.id, "sending", now=T0, count_attempt=True)
    journal.transition(f.id, "sent", now=T0)
    g = journal.transition(f.id, "registered", now=T0 + timedelta(minutes=1), mrn="25NLABCDEFGHIJKLM1")
    assert g.state == "registered" and g.mrn == "25NLABCDEFGHIJKLM1" and g.attempts == 1
    assert g.updated_at == "2025-03-01T08:01:00.000Z"
    assert journal.get_filing_by_mrn("25NLABCDEFGHIJKLM1") == g
    journal.transition(f.id, "do-not-load", now=T0)
    with pytest.raises(InvalidTransition):
        journal.transition(f.id, "registered", now=T0)  # terminal
    states = [e.detail.get("to") for e in journal.events(filing_id=f.id) if e.event.startswith("state:")]
    assert states == ["queued", "sending", "sent", "registered", "do-not-load"]


def test_event_log_is_append_only(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    with pytest.raises(Exception, match="append-only"), journal.transaction():
        journal._x("UPDATE events SET event = 'x'")
    with pytest.raises(Exception, match="append-only"), journal.transaction():
        journal._x("DELETE FROM events WHERE filing_id = ?", (f.id,))
    if journal.backend == "postgresql":
        with pytest.raises(Exception, match="append-only"), journal.transaction():
            journal._x("TRUNCATE events")
    assert len(journal.events(filing_id=f.id)) == 1


def test_list_filings_filters(journal: SqliteJournal) -> None:
    for i in range(5):
        f, _ = journal.insert_filing(filing(f"L{i}"), now=T0 + timedelta(minutes=i))
        if i % 2:
            journal.transition(f.id, "queued", now=T0 + timedelta(minutes=i))
    rows = journal.list_filings(state="queued")
    assert [r["lrn"] for r in rows] == ["L3", "L1"]
    assert set(rows[0]) >= {"lrn", "action", "state", "mrn", "updated"}
    assert rows[0]["updated"].endswith("Z")
    assert [r["lrn"] for r in journal.list_filings(since=T0 + timedelta(minutes=3))] == ["L4", "L3"]
    assert len(journal.list_filings(limit=2)) == 2
    assert journal.count_by_state() == {"received": 3, "queued": 2}


# -- outbound messages -----------------------------------------------------------------------------------------

def test_claims_never_overlap_and_follow_priority(journal: SqliteJournal, open_any) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("c@x", f.id, "C"), now=T0)
    journal.enqueue_message(out_msg("b@x", f.id, "B"), now=T0)
    journal.enqueue_message(out_msg("a@x", f.id, "A"), now=T0 + timedelta(seconds=1))
    journal.enqueue_message(out_msg("later@x", f.id, "A"), now=T0, not_before=T0 + timedelta(hours=1))
    other = open_any()  # a second process / instance
    try:
        now = T0 + timedelta(seconds=2)
        first = journal.claim_due_messages(now=now, worker="w1", limit=2, lease_seconds=86400)
        second = other.claim_due_messages(now=now, worker="w2", limit=10)
        assert [m.message_id for m in first] == ["a@x", "b@x"]
        assert [m.message_id for m in second] == ["c@x"]
        assert first[0].sealed == b"sealed-bytes" and first[0].state == "sending" and first[0].attempts == 1
        assert journal.claim_due_messages(now=now, worker="w3", limit=10) == []
        only_a = other.claim_due_messages(now=T0 + timedelta(hours=2), worker="w4", limit=10, priorities=["A"])
        assert [m.message_id for m in only_a] == ["later@x"]
    finally:
        other.close()


def test_expired_lease_is_taken_over_and_late_report_refused(journal: SqliteJournal) -> None:
    journal.enqueue_message(out_msg("m@x", None), now=T0)
    [m] = journal.claim_due_messages(now=T0, worker="w1", lease_seconds=60)
    assert journal.claim_due_messages(now=T0 + timedelta(seconds=59), worker="w2") == []
    [m2] = journal.claim_due_messages(now=T0 + timedelta(seconds=61), worker="w2")
    assert m2.message_id == m.message_id and m2.attempts == 2
    with pytest.raises(LeaseLost, match="w2"):
        journal.record_receipt("m@x", worker="w1", now=T0, outcome="receipt", receipt=b"<r/>")
    done = journal.record_receipt("m@x", worker="w2", now=T0, outcome="receipt", receipt=b"<r/>",
                                  content_type="application/soap+xml")
    assert done.state == "receipted" and done.claimed_by is None


def test_renewed_lease_is_not_taken_over_and_a_lost_one_is_reported(journal: SqliteJournal) -> None:
    for mid in ("r1@x", "r2@x"):
        journal.enqueue_message(out_msg(mid, None), now=T0)
    got = journal.claim_due_messages(now=T0, worker="w1", limit=2, lease_seconds=60)
    assert len(got) == 2
    # renewed at 50 s for another 60 s: at 100 s nobody may take it over
    assert sorted(journal.renew_claims("w1", ["r1@x", "r2@x", "nope@x"], now=T0 + timedelta(seconds=50),
                                       lease_seconds=60)) == ["r1@x", "r2@x"]
    assert journal.claim_due_messages(now=T0 + timedelta(seconds=100), worker="w2", limit=5) == []
    # another worker cannot renew what it does not hold
    assert journal.renew_claims("w2", ["r1@x"], now=T0 + timedelta(seconds=100), lease_seconds=600) == []
    [taken] = journal.claim_due_messages(now=T0 + timedelta(seconds=111), worker="w2", limit=1)
    lost = journal.renew_claims("w1", ["r1@x", "r2@x"], now=T0 + timedelta(seconds=112), lease_seconds=60)
    assert lost == [m for m in ("r1@x", "r2@x") if m != taken.message_id]
    journal.record_receipt(lost[0], worker="w1", now=T0 + timedelta(seconds=113), outcome="receipt", receipt=b"<r/>")
    assert journal.renew_claims("w1", lost, now=T0 + timedelta(seconds=114), lease_seconds=60) == []


def test_retry_fail_hold_and_operator_requeue(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("m@x", f.id), now=T0)
    journal.claim_due_messages(now=T0, worker="w")
    r = journal.schedule_retry("m@x", worker="w", now=T0, next_attempt_at=T0 + timedelta(minutes=5),
                               error="connection refused")
    assert r.state == "queued" and r.next_attempt_at == "2025-03-01T08:05:00.000Z"
    assert journal.claim_due_messages(now=T0 + timedelta(minutes=1), worker="w") == []
    journal.claim_due_messages(now=T0 + timedelta(minutes=5), worker="w")
    h = journal.fail_message("m@x", worker="w", now=T0, error="EBMS:0004", hold=True, receipt=b"<err/>")
    assert h.state == "held" and h.receipt_outcome == "EBMS:0004"
    q = journal.requeue_message("m@x", now=T0, reason="helpdesk ticket 42 solved")
    assert q.state == "queued"
    with pytest.raises(InvalidTransition):
        journal.requeue_message("m@x", now=T0, reason="again")
    c = journal.cancel_message("m@x", now=T0, reason="operator abandoned the filing")
    assert c.state == "cancelled" and journal.claim_due_messages(now=T0 + timedelta(days=1), worker="w") == []
    with pytest.raises(InvalidTransition):
        journal.requeue_message("m@x", now=T0, reason="too late")


def test_recovery_returns_in_flight_messages_byte_identical(jpath: Path) -> None:
    j = SqliteJournal.open(jpath, now=T0)
    f, _ = j.insert_filing(filing(), now=T0)
    j.transition(f.id, "queued", now=T0)
    body = bytes(range(256)) * 10
    j.enqueue_message(out_msg("m@x", f.id, body=body), now=T0)
    [m] = j.claim_due_messages(now=T0, worker="dead-worker", lease_seconds=3600)
    j.transition(f.id, "sending", now=T0)
    j.close()  # the daemon "dies" with the message in sending
    j = SqliteJournal.open(jpath, now=T0 + timedelta(seconds=10))
    try:
        assert j.recovered_at_open == 1
        assert j.get_filing(f.id).state == "queued"
        [again] = j.claim_due_messages(now=T0 + timedelta(seconds=10), worker="new-worker")
        assert again.message_id == m.message_id and again.sealed == body
        assert [e.event for e in j.events(message_id="m@x")].count("message-recovered") == 1
        assert j.recover_in_flight(now=T0) == 1  # the new claim; only called by the daemon at start
    finally:
        j.close()


# -- inbound, correlation, orphans, requests ---------------------------------------------------------------------

def test_inbound_duplicate_gets_the_same_receipt(journal: SqliteJournal) -> None:
    msg = InboundMessage(sender_party="customs", message_id="in1@eu", raw=b"<IE3R01/>", content_type="multipart/x",
                         action="IE3R01", ref_to_message_id="m@x", functional_reference="LRN1")
    first = journal.record_inbound(msg, now=T0, receipt=b"<receipt-1/>", receipt_content_type="application/xml")
    assert not first.duplicate
    again = journal.record_inbound(msg, now=T0 + timedelta(minutes=1), receipt=b"<receipt-2/>")
    assert again.duplicate and again.receipt == b"<receipt-1/>" and again.message.id == first.message.id
    # same MessageId from another sender is another message
    other = journal.record_inbound(InboundMessage(sender_party="other", message_id="in1@eu", raw=b"x",
                                                  content_type="text/xml"), now=T0, receipt=b"<r3/>")
    assert not other.duplicate
    assert journal.lookup_inbound("customs", "in1@eu").receipt == b"<receipt-1/>"
    assert journal.lookup_inbound("customs", "nope") is None


def test_correlation_and_business_outcome(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("m@x", f.id), now=T0)
    journal.claim_due_messages(now=T0, worker="w")
    journal.record_receipt("m@x", worker="w", now=T0, outcome="receipt", receipt=b"<receipt/>")
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="r01@eu", raw=b"<IE3R01/>",
                                          content_type="text/xml", action="IE3R01", ref_to_message_id="m@x"),
                           now=T0, receipt=b"<our-receipt/>")
    assert journal.get_filing_by_message_id("m@x").id == f.id
    journal.attach_inbound("r01@eu", "customs", f.id, now=T0, outcome="IE3R01")
    assert journal.get_message("m@x").business_outcome == "IE3R01"
    assert journal.get_filing_by_message_id("r01@eu").id == f.id
    life = journal.lifecycle(f.id)
    assert [m["message_id"] for m in life["messages"]] == ["m@x", "r01@eu"]
    assert "sealed" not in life["messages"][0] and life["messages"][0]["sealed_bytes"] == len(b"sealed-bytes")
    kinds = [e.kind for e in journal.evidence(f.id)]
    assert kinds == ["sealed-message", "receipt", "inbound-message", "returned-receipt"]
    names = [e.name for e in journal.evidence(f.id)]
    assert len(set(names)) == 4 and names[0].endswith(".mime")


def test_orphans_are_kept_listed_and_resolvable(journal: SqliteJournal) -> None:
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="o@eu", raw=b"<IE3Q02/>",
                                          content_type="text/xml", action="IE3Q02",
                                          functional_reference="25NLUNKNOWN"), now=T0, receipt=b"<r/>")
    o = journal.record_orphan("o@eu", "customs", now=T0, reason="no filing with MRN 25NLUNKNOWN")
    [listed] = journal.list_orphans()
    assert listed.id == o.id and listed.message.functional_reference == "25NLUNKNOWN"
    assert listed.message.state == "orphan"
    f, _ = journal.insert_filing(filing(), now=T0)
    r = journal.resolve_orphan(o.id, now=T0, resolution="operator matched it", filing_id=f.id)
    assert r.resolved_at is not None and r.message.filing_id == f.id and r.message.state == "processed"
    assert journal.list_orphans() == [] and len(journal.list_orphans(include_resolved=True)) == 1


def test_customs_requests(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    q = journal.open_request(f.id, "IE3Q02", "q02@eu", now=T0)
    assert [r.id for r in journal.list_requests()] == [q.id]
    done = journal.close_request(q.id, now=T0, answer_message_id="r02@x")
    assert done.state == "answered" and journal.list_requests() == []
    with pytest.raises(InvalidTransition):
        journal.close_request(q.id, now=T0)
    assert len(journal.list_requests(filing_id=f.id, open_only=False)) == 1


# -- retention ---------------------------------------------------------------------------------------------------

def _with_evidence(j: SqliteJournal, lrn: str, final: bool, now: datetime) -> int:
    f, _ = j.insert_filing(filing(lrn), now=now)
    j.transition(f.id, "queued", now=now)
    j.enqueue_message(out_msg(f"{lrn}@x", f.id), now=now)
    j.claim_due_messages(now=now, worker="w")
    j.record_receipt(f"{lrn}@x", worker="w", now=now, outcome="receipt", receipt=b"<r/>")
    j.transition(f.id, "sending", now=now)
    j.transition(f.id, "sent", now=now)
    j.record_inbound(InboundMessage(sender_party="customs", message_id=f"{lrn}-r@eu", raw=b"<a/>",
                                    content_type="text/xml", ref_to_message_id=f"{lrn}@x"), now=now, receipt=b"<r/>")
    j.attach_inbound(f"{lrn}-r@eu", "customs", f.id, now=now, outcome="IE3N99" if final else "IE3R01")
    j.transition(f.id, "rejected" if final else "registered", now=now)
    return f.id


def test_purge_keeps_non_final_evidence(journal: SqliteJournal) -> None:
    old = T0 - timedelta(days=2000)
    final_id = _with_evidence(journal, "OLD-FINAL", True, old)
    live_id = _with_evidence(journal, "OLD-LIVE", False, old)
    recent_id = _with_evidence(journal, "RECENT-FINAL", True, T0)
    journal.enqueue_message(OutboundMessage(message_id="ping@x", action=None, sealed=b"p", content_type="x",
                                            kind="ping"), now=old)
    journal.claim_due_messages(now=old, worker="w")
    journal.record_receipt("ping@x", worker="w", now=old, outcome="receipt", receipt=b"<r/>")
    report = journal.purge(T0 - timedelta(days=1095), now=T0)
    assert report.filings == 1 and report.messages == 3 and report.dedup_entries == 1
    assert journal.get_filing(final_id) is None and journal.events(filing_id=final_id) == []
    assert journal.get_filing(live_id) is not None and journal.get_filing(recent_id) is not None
    assert len(journal.evidence(live_id)) == 4
    assert journal.lookup_inbound("customs", "OLD-LIVE-r@eu") is not None
    assert journal.lookup_inbound("customs", "OLD-FINAL-r@eu") is None
    # the schema itself refuses to delete evidence of a live filing, whatever the query
    with pytest.raises(Exception, match="not in a final state"), journal.transaction():
        journal._x("DELETE FROM messages WHERE filing_id = ?", (live_id,))
    with pytest.raises(Exception, match="not in a final state"), journal.transaction():
        journal._x("DELETE FROM filings WHERE id = ?", (live_id,))
    assert journal.integrity_check() == "ok"


def test_naive_datetimes_are_refused(journal: SqliteJournal) -> None:
    with pytest.raises(ValueError, match="naive"):
        journal.insert_filing(filing(), now=datetime(2025, 1, 1))


def test_reader_works_when_no_daemon_runs(jpath: Path) -> None:
    j = SqliteJournal.open(jpath, now=T0)
    f, _ = j.insert_filing(filing(), now=T0)
    j.enqueue_message(out_msg("m@x", f.id), now=T0)
    j.close()  # a clean close removes the -wal and -shm files
    reader = SqliteJournal.open_reader(jpath)
    try:
        life = reader.lifecycle(f.id)
        assert life["filing"]["lrn"] == "LRN1" and life["messages"][0]["sealed_bytes"] == 12
        assert [e.kind for e in reader.evidence(f.id)] == ["sealed-message"]
    finally:
        reader.close()


def test_reader_refuses_a_missing_journal(tmp_path: Path) -> None:
    from gateway.journal import NotFound
    with pytest.raises(NotFound, match="no journal here"):
        SqliteJournal.open_reader(tmp_path / "nope.sqlite3")


def test_read_journal_config(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_toml
    from gateway.journal import read_journal_config
    conf = tmp_path / "gateway.toml"
    conf.write_text('[journal]\npath = "var/j.sqlite3"\ngroup_commit_max_delay_ms = 5\n')
    cfg = read_journal_config(load_toml(conf).section("journal"))
    assert cfg.path == (tmp_path / "var" / "j.sqlite3").resolve()
    assert cfg.group_commit_max_delay_ms == 5 and cfg.busy_timeout_ms == 5000 and cfg.retention_days == 1095
    conf.write_text('[journal]\npaht = "x"\n')
    with pytest.raises(ConfigError, match=r"\[journal.paht\] unknown key"):
        read_journal_config(load_toml(conf).section("journal"))


def test_concurrent_claimers_on_separate_connections_never_share(sqlite_journal: SqliteJournal, jpath: Path) -> None:
    import threading
    for i in range(200):
        sqlite_journal.enqueue_message(out_msg(f"m{i}@x", None, "ABC"[i % 3]), now=T0)
    got: dict[str, list[str]] = {}

    def claimer(name: str) -> None:
        j = SqliteJournal.open(jpath, daemon=False)
        mine: list[str] = []
        try:
            while batch := j.claim_due_messages(now=T0, worker=name, limit=3, lease_seconds=3600):
                mine += [m.message_id for m in batch]
        finally:
            j.close()
        got[name] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [mid for mids in got.values() for mid in mids]
    assert len(claimed) == len(set(claimed)) == 200


def test_outbox_cursor_is_created_once_at_the_newest_event(journal: SqliteJournal, open_any) -> None:
    journal.append_event("old", now=T0)
    first = journal.init_outbox_cursor("erp", now=T0)
    assert first == journal.last_event_id() and journal.outbox_cursor("erp") == first
    journal.append_event("new-after-start", now=T0)
    other = open_any()                       # a second instance starting later must not skip "new-after-start"
    assert other.init_outbox_cursor("erp", now=T0) == first
    assert [e.event for e in other.events_after(first)] == ["new-after-start"]


def test_a_healthy_endpoint_is_not_rewritten_on_every_success(journal: SqliteJournal) -> None:
    first = T0
    journal.note_endpoint_ok("TI-NL", "P", now=first)
    journal.note_endpoint_ok("TI-NL", "P", now=first + timedelta(seconds=1))      # a moment later: no write
    assert journal.endpoint_state("TI-NL", "P").last_ok_at == "2025-03-01T08:00:00.000Z"
    journal.note_endpoint_ok("TI-NL", "P", now=first + timedelta(seconds=3))      # stale enough: refreshed
    assert journal.endpoint_state("TI-NL", "P").last_ok_at == "2025-03-01T08:00:03.000Z"
    journal.note_endpoint_failure("TI-NL", "P", now=first + timedelta(seconds=4))
    before = journal.note_endpoint_ok("TI-NL", "P", now=first + timedelta(seconds=4.5))   # a recovery: written
    assert before.failing_since is not None
    after = journal.endpoint_state("TI-NL", "P")
    assert after.failing_since is None and after.last_ok_at == "2025-03-01T08:00:04.500Z"
    assert [e.event for e in journal.events() if e.event == "endpoint-recovered"] == ["endpoint-recovered"]


def test_outbox_cursor_advances_only_forward(journal: SqliteJournal) -> None:
    """A sink's cursor is created by its first advance, moves forward, never back (a late report of an older
    batch must not replay delivered events), and is kept per sink name with the time of its last report."""
    assert journal.outbox_cursor("erp") is None
    journal.advance_outbox_cursor("erp", 5, now=T0)
    assert journal.outbox_cursor("erp") == 5 and journal.outbox_cursor("amqp") is None
    journal.advance_outbox_cursor("erp", 9, now=T0 + timedelta(seconds=1))
    assert journal.outbox_cursor("erp") == 9
    journal.advance_outbox_cursor("erp", 3, now=T0 + timedelta(seconds=2))
    assert journal.outbox_cursor("erp") == 9
    journal.advance_outbox_cursor("amqp", 2, now=T0)
    assert (journal.outbox_cursor("erp"), journal.outbox_cursor("amqp")) == (9, 2)
    rows = journal._all("SELECT name, updated_at FROM outbox_cursors ORDER BY name")
    assert [tuple(r) for r in rows] == [("amqp", "2025-03-01T08:00:00.000Z"), ("erp", "2025-03-01T08:00:02.000Z")]


def test_purge_counts_every_row_it_deletes_across_chunks(journal: SqliteJournal,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention deletes in chunks (bounded SQL parameter lists); with chunks of 2, every list spans several, and
    the report counts each kind of row exactly. The purge leaves its never-purged marker event first."""
    from gateway.journal import core
    from gateway.journal.timeutil import iso
    monkeypatch.setattr(core, "_CHUNK", 2)
    old = T0 - timedelta(days=2000)
    fids = [_with_evidence(journal, f"OLD-{i}", True, old) for i in range(3)]
    for i in range(3):  # filing-less inbound messages, orphaned long ago
        journal.record_inbound(InboundMessage(sender_party="customs", message_id=f"orphan-{i}@eu", raw=b"<x/>",
                                              content_type="text/xml"), now=old, receipt=b"<r/>")
        journal.record_orphan(f"orphan-{i}@eu", "customs", now=old, reason="matches no filing")
    journal.append_event("old-note", now=old)   # an old event of no filing and no message goes too
    before = len(journal._all("SELECT id FROM events"))
    cutoff = T0 - timedelta(days=1095)
    report = journal.purge(cutoff, now=T0)
    after = len(journal._all("SELECT id FROM events"))
    assert (report.filings, report.messages, report.orphans, report.dedup_entries) == (3, 9, 3, 6)
    assert report.events == before + 2 - after > 0
    assert all(journal.get_filing(f) is None for f in fids)
    assert all(journal.lookup_inbound("customs", f"orphan-{i}@eu") is None for i in range(3))
    assert journal.list_orphans(include_resolved=True) == []
    gone = [*(f"orphan-{i}@eu" for i in range(3)), *(f"OLD-{i}-r@eu" for i in range(3))]
    assert [e for e in journal.events(limit=10000) if e.message_id in gone or e.event == "old-note"] == []
    marker, done = [e for e in journal.events() if e.event in ("journal-purge", "purged")]
    assert (marker.event, marker.detail, marker.filing_id, marker.message_id) == (
        "journal-purge", {"older_than": iso(cutoff)}, None, None)
    assert done.event == "purged" and done.detail["filings"] == 3 and done.detail["older_than"] == iso(cutoff)


def test_claims_are_renewed_across_chunks(journal: SqliteJournal, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker renews many leases at once: every message it still holds is returned, whatever the chunking."""
    from gateway.journal import core
    monkeypatch.setattr(core, "_CHUNK", 2)
    for i in range(5):
        journal.enqueue_message(out_msg(f"m{i}@x", None), now=T0)
    held = [m.message_id for m in journal.claim_due_messages(now=T0, worker="w", limit=5, lease_seconds=60)]
    assert len(held) == 5
    renewed = journal.renew_claims("w", [*held, "unknown@x"], now=T0 + timedelta(seconds=30), lease_seconds=60)
    assert sorted(renewed) == sorted(held)
    assert journal.renew_claims("other", held, now=T0, lease_seconds=60) == []


def test_outcomes_of_a_send_are_journalled_with_their_event_and_detail(journal: SqliteJournal) -> None:
    """Each outcome a worker reports (retry, failure, hold, receipt) and the operator's resend is one event of its
    own name, on the filing and the message, whose detail says what happened; the returned message is the row
    as it now is, without its bytes."""
    from gateway.journal.timeutil import iso
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("a@x", f.id), now=T0)
    journal.claim_due_messages(now=T0, worker="w", lease_seconds=60)
    t1, next_at = T0 + timedelta(seconds=5), T0 + timedelta(seconds=60)
    m = journal.schedule_retry("a@x", worker="w", now=t1, next_attempt_at=next_at, error="HTTP 503")
    assert (m.state, m.last_error, m.next_attempt_at, m.retry_since, m.claimed_by, m.sealed) == (
        "queued", "HTTP 503", iso(next_at), iso(t1), None, None)
    journal.claim_due_messages(now=next_at, worker="w", lease_seconds=60)
    m = journal.fail_message("a@x", worker="w", now=next_at, error="EBMS:0004 refused")
    assert (m.state, m.last_error, m.next_attempt_at, m.claimed_by, m.sealed) == (
        "failed", "EBMS:0004 refused", None, None, None)
    assert journal.get_message("a@x").retry_since == iso(t1)   # the retry budget runs since the first failure
    m = journal.requeue_message("a@x", now=next_at, reason="operator resend")
    assert (m.state, m.next_attempt_at, m.retry_since, m.sealed) == ("queued", iso(next_at), None, None)
    journal.claim_due_messages(now=next_at, worker="w", lease_seconds=60)
    with pytest.raises(InvalidTransition, match=r"filing message a@x \(operator resend\): invalid state transition "
                                                r"'sending' -> 'queued'"):
        journal.requeue_message("a@x", now=next_at, reason="while it is being sent")   # not failed, not held
    m = journal.fail_message("a@x", worker="w", now=next_at, error="held for the operator", hold=True)
    assert m.state == "held" and m.sealed is None
    journal.requeue_message("a@x", now=next_at, reason="checked")
    journal.claim_due_messages(now=next_at, worker="w", lease_seconds=60)
    m = journal.record_receipt("a@x", worker="w", now=next_at, outcome="receipt", receipt=b"<r/>",
                               content_type="application/soap+xml")
    assert (m.state, m.receipt_outcome, m.claimed_by, m.next_attempt_at, m.retry_since, m.sealed) == (
        "receipted", "receipt", None, None, None, None)
    got = [(e.event, e.filing_id, e.detail) for e in journal.events(message_id="a@x")
           if e.event not in ("message-queued", "message-claimed")]
    assert got == [
        ("message-retry-scheduled", f.id, {"error": "HTTP 503", "next_attempt_at": iso(next_at), "attempts": 1}),
        ("message-failed", f.id, {"error": "EBMS:0004 refused", "attempts": 2}),
        ("message-requeued", f.id, {"reason": "operator resend"}),
        ("message-held", f.id, {"error": "held for the operator", "attempts": 3}),
        ("message-requeued", f.id, {"reason": "checked"}),
        ("message-receipted", f.id, {"outcome": "receipt", "from": "sending", "receipt_bytes": 4}),
    ], got


@pytest.mark.parametrize("report", ["receipt", "retry", "fail"])
def test_a_worker_that_lost_its_lease_cannot_report_an_outcome(journal: SqliteJournal, report: str) -> None:
    """A worker whose lease expired and was taken over reports too late: refused, the message unchanged."""
    journal.enqueue_message(out_msg("l@x", None), now=T0)
    journal.claim_due_messages(now=T0, worker="w1", lease_seconds=10)
    journal.claim_due_messages(now=T0 + timedelta(seconds=20), worker="w2", lease_seconds=60)
    late = T0 + timedelta(seconds=21)
    calls = {"receipt": lambda w: journal.record_receipt("l@x", worker=w, now=late, outcome="receipt", receipt=b"r"),
             "retry": lambda w: journal.schedule_retry("l@x", worker=w, now=late, next_attempt_at=late, error="e"),
             "fail": lambda w: journal.fail_message("l@x", worker=w, now=late, error="e")}
    with pytest.raises(LeaseLost, match="worker w1 reported an outcome but the message is now claimed by w2"):
        calls[report]("w1")
    m = journal.get_message("l@x")
    assert (m.state, m.claimed_by, m.attempts) == ("sending", "w2", 2)
    assert calls[report]("w2").claimed_by is None


def test_a_transition_is_one_event_saying_from_to_and_what_came_with_it(journal: SqliteJournal) -> None:
    """``transition`` writes the new state, the MRN, the error and the attempt count, and journals one event
    (its own name or ``state:<new>``) whose detail holds from, to, the caller's detail, the MRN and the error;
    a refused transition names the filing by its key, a missing filing by its id."""
    f, _ = journal.insert_filing(filing("T-1"), now=T0)
    journal.transition(f.id, "queued", now=T0)
    g = journal.transition(f.id, "sending", now=T0, detail={"endpoint": "TI-NL"}, count_attempt=True)
    assert (g.state, g.attempts) == ("sending", 1)
    g = journal.transition(f.id, "failed", now=T0, error="HTTP 500", event="filing-send-failed")
    assert (g.state, g.last_error, g.attempts) == ("failed", "HTTP 500", 1)
    g = journal.transition(f.id, "registered", now=T0, mrn="26NL1234567890ABC1")
    assert (g.state, g.mrn, g.last_error) == ("registered", "26NL1234567890ABC1", "HTTP 500")
    got = [(e.event, e.filing_id, e.detail) for e in journal.events(filing_id=f.id) if e.event != "filing-received"]
    assert got == [
        ("state:queued", f.id, {"from": "received", "to": "queued"}),
        ("state:sending", f.id, {"from": "queued", "to": "sending", "endpoint": "TI-NL"}),
        ("filing-send-failed", f.id, {"from": "sending", "to": "failed", "error": "HTTP 500"}),
        ("state:registered", f.id, {"from": "failed", "to": "registered", "mrn": "26NL1234567890ABC1"}),
    ], got
    with pytest.raises(InvalidTransition, match=r"^filing NL123456789/T-1: invalid state transition 'registered' "
                                                r"-> 'received'"):
        journal.transition(f.id, "received", now=T0)
    with pytest.raises(NotFound, match=r"^filing id 999999 does not exist$"):
        journal.transition(999999, "queued", now=T0)


def test_claims_are_journalled_with_the_worker_the_lease_and_a_takeover(journal: SqliteJournal) -> None:
    """Each claim is an event on the filing and the message naming the worker and the lease's end; taking over
    an expired lease also names the worker it was taken from. Without arguments one message is claimed, for
    300 seconds."""
    from gateway.journal.timeutil import iso
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("c1@x", f.id), now=T0)
    journal.enqueue_message(out_msg("c2@x", f.id), now=T0)
    (m,) = journal.claim_due_messages(now=T0, worker="w1")
    assert (m.message_id, m.claim_expires_at, m.sealed) == ("c1@x", iso(T0 + timedelta(seconds=300)), b"sealed-bytes")
    later = T0 + timedelta(seconds=301)
    (m,) = journal.claim_due_messages(now=later, worker="w2", lease_seconds=30)
    assert (m.message_id, m.claimed_by, m.attempts) == ("c1@x", "w2", 2)   # the expired lease, before c2 (older)
    got = [(e.event, e.filing_id, e.message_id, e.detail) for e in journal.events(message_id="c1@x")
           if e.event == "message-claimed"]
    assert got == [
        ("message-claimed", f.id, "c1@x", {"worker": "w1", "lease_until": iso(T0 + timedelta(seconds=300))}),
        ("message-claimed", f.id, "c1@x", {"worker": "w2", "lease_until": iso(later + timedelta(seconds=30)),
                                           "taken_over_from": "w1"}),
    ], got


def test_a_filing_with_a_bad_priority_or_digest_is_refused_naming_it(journal: SqliteJournal) -> None:
    with pytest.raises(ValueError, match=r"^filing LRN1: priority must be one of .*, not 'Z'$"):
        journal.insert_filing(filing(priority="Z"), now=T0)
    with pytest.raises(ValueError, match=r"^filing LRN1: payload_sha256 must be 64 lowercase hex digits$"):
        journal.insert_filing(filing(payload_sha256="AB" * 32), now=T0)
    with pytest.raises(NotFound, match=r"^outbound message none@x does not exist$"):
        journal.fail_message("none@x", worker=None, now=T0, error="e")


def test_inbound_results_events_and_an_attached_orphan(journal: SqliteJournal) -> None:
    """record_inbound returns the stored message (per sender: the same MessageId from two parties is two messages)
    and the Receipt; a duplicate returns the first Receipt; attaching an orphan resolves it, and an outcome is
    copied to the outbound message answered (an attach without outcome leaves it). Each step is one event."""
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("req@x", f.id), now=T0)
    r1 = journal.record_inbound(InboundMessage(sender_party="customs", message_id="in@eu", raw=b"<IE3R01/>",
                                               content_type="multipart/related", action="IE3R01",
                                               ref_to_message_id="req@x", functional_reference="LRN1"),
                                now=T0, receipt=b"<rc/>", receipt_content_type="application/soap+xml")
    assert (r1.duplicate, r1.receipt, r1.receipt_content_type) == (False, b"<rc/>", "application/soap+xml")
    assert (r1.message.sender_party, r1.message.ack_state, r1.message.state, r1.message.sealed) == (
        "customs", None, "received", None)
    r2 = journal.record_inbound(InboundMessage(sender_party="other", message_id="in@eu", raw=b"x",
                                               content_type="text/xml"), now=T0, receipt=b"<o/>")
    assert (r2.duplicate, r2.message.sender_party, r2.receipt) == (False, "other", b"<o/>")
    with pytest.raises(NotFound, match=r"^filing id 999999 does not exist$"):
        journal.attach_inbound("in@eu", "customs", 999999, now=T0)
    journal.record_orphan("in@eu", "customs", now=T0, reason="no filing yet")
    m = journal.attach_inbound("in@eu", "customs", f.id, now=T0, outcome="IE3R01")
    assert (m.state, m.filing_id, m.sender_party, m.business_outcome, m.sealed) == (
        "processed", f.id, "customs", "IE3R01", None)
    (o,) = journal.list_orphans(include_resolved=True)
    assert o.resolved_at is not None and o.resolution == f"attached to filing {f.id}"
    assert journal.get_message("req@x").business_outcome == "IE3R01"
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="in2@eu", raw=b"y", content_type="x",
                                          ref_to_message_id="req@x"), now=T0, receipt=b"<r2/>")
    journal.attach_inbound("in2@eu", "customs", f.id, now=T0)              # no outcome: req@x keeps IE3R01
    assert journal.get_message("req@x").business_outcome == "IE3R01"
    d = journal.record_inbound(InboundMessage(sender_party="customs", message_id="in@eu", raw=b"<IE3R01/>",
                                              content_type="multipart/related"), now=T0, receipt=b"<new/>")
    assert (d.duplicate, d.receipt, d.receipt_content_type, d.message.id) == (
        True, b"<rc/>", "application/soap+xml", r1.message.id)
    got = [(e.event, e.filing_id, e.detail) for e in journal.events(message_id="in@eu")
           if e.event in ("inbound-received", "inbound-duplicate", "inbound-correlated")]
    assert got == [
        ("inbound-received", None, {"sender": "customs", "action": "IE3R01", "ref_to": "req@x", "reference": "LRN1",
                                    "bytes": 9}),
        ("inbound-received", None, {"sender": "other", "action": None, "ref_to": None, "reference": None,
                                    "bytes": 1}),
        ("inbound-correlated", f.id, {"outcome": "IE3R01", "ref_to": "req@x", "action": "IE3R01"}),
        ("inbound-duplicate", f.id, {"sender": "customs"}),
    ], got
    received = [e for e in journal.events(filing_id=f.id) if e.event == "filing-received"]
    assert [e.detail for e in received] == [{"lrn": "LRN1", "filer": "NL123456789", "action": "IE3F32",
                                             "sha256": sha("<ens/>"), "priority": "B", "source": filing().source}]


# -- fourth pass of issue 16 (mutation testing of the journal core): exact outcomes, refusals and events -----------

def _iso(t: datetime) -> str:
    from gateway.journal.timeutil import iso
    return iso(t)


def _ev(j, **where: object) -> list[tuple]:
    return [(e.event, e.filing_id, e.message_id, e.detail) for e in j.events(limit=100000, **where)]


def test_a_refused_message_transition_names_the_message_and_both_states_by_value(journal: SqliteJournal) -> None:
    journal.enqueue_message(out_msg("t@x", None), now=T0)
    with pytest.raises(InvalidTransition) as exc:
        journal.record_receipt("t@x", worker=None, now=T0, outcome="receipt", receipt=b"<r/>")   # never sent
    assert str(exc.value) == ("filing message t@x: invalid state transition 'queued' -> 'receipted' (see "
                              "docs/states.md for the allowed transitions out of 'queued')")
    assert (exc.value.old, exc.value.new, exc.value.filing) == ("queued", "receipted", "message t@x")
    journal.claim_due_messages(now=T0, worker="w")
    journal.record_receipt("t@x", worker="w", now=T0, outcome="receipt", receipt=b"<r/>")
    with pytest.raises(InvalidTransition) as exc:
        journal.cancel_message("t@x", now=T0, reason="too late")
    assert str(exc.value) == ("filing message t@x: invalid state transition 'receipted' -> 'cancelled' (see "
                              "docs/states.md for the allowed transitions out of 'receipted')")
    with pytest.raises(NotFound, match=r"^outbound message nope@x does not exist$"):
        journal.cancel_message("nope@x", now=T0, reason="r")
    assert journal.get_message("t@x").state == "receipted"


def test_a_pause_requeues_without_starting_or_moving_the_retry_budget(journal: SqliteJournal) -> None:
    """``failed=False`` (the sender was refused, not the message) requeues it and leaves ``retry_since`` as it
    was: unset before any failure, the first failure's time after one."""
    t1, t2, t3 = (T0 + timedelta(seconds=s) for s in (10, 20, 30))
    journal.enqueue_message(out_msg("p@x", None), now=T0)
    journal.claim_due_messages(now=T0, worker="w")
    m = journal.schedule_retry("p@x", worker="w", now=t1, next_attempt_at=t1, error="EBMS:0004 paused",
                               event="message-paused", failed=False)
    assert (m.state, m.retry_since, m.last_error, m.next_attempt_at) == ("queued", None, "EBMS:0004 paused", _iso(t1))
    journal.claim_due_messages(now=t1, worker="w")
    assert journal.schedule_retry("p@x", worker="w", now=t2, next_attempt_at=t2, error="HTTP 503").retry_since \
        == _iso(t2)
    journal.claim_due_messages(now=t2, worker="w")
    m = journal.schedule_retry("p@x", worker="w", now=t3, next_attempt_at=t3, error="paused again", failed=False)
    assert m.retry_since == _iso(t2)
    assert [e[0] for e in _ev(journal, message_id="p@x") if e[0] != "message-claimed"] == [
        "message-queued", "message-paused", "message-retry-scheduled", "message-retry-scheduled"]


def test_a_failure_without_a_receipt_keeps_the_receipt_and_outcome_it_had(journal: SqliteJournal) -> None:
    journal.enqueue_message(out_msg("f@x", None), now=T0)
    journal.claim_due_messages(now=T0, worker="w")
    m = journal.fail_message("f@x", worker="w", now=T0, error="timeout")       # no signal at all
    assert (m.state, m.receipt_outcome, m.receipt_content_type) == ("failed", None, None)
    journal.requeue_message("f@x", now=T0, reason="again")
    journal.claim_due_messages(now=T0, worker="w")
    m = journal.fail_message("f@x", worker="w", now=T0, error="EBMS:0004", hold=True, receipt=b"<err/>",
                             content_type="application/soap+xml")
    assert (m.state, m.receipt_outcome, m.receipt_content_type) == ("held", "EBMS:0004", "application/soap+xml")
    journal.requeue_message("f@x", now=T0, reason="again")
    journal.claim_due_messages(now=T0, worker="w")
    m = journal.fail_message("f@x", worker="w", now=T0, error="connection reset")
    assert (m.state, m.last_error, m.receipt_outcome, m.receipt_content_type) == (
        "failed", "connection reset", "EBMS:0004", "application/soap+xml")
    assert journal.get_message("f@x", with_bytes=True).receipt == b"<err/>"


def test_claims_skip_excluded_endpoints_and_messages_without_one_go_to_the_default(journal: SqliteJournal) -> None:
    """A message without endpoint goes to the default endpoint, so it is held back when that one is excluded;
    several endpoints may be excluded at once."""
    for mid, ep in (("none@x", None), ("nl@x", "TI-NL"), ("be@x", "TI-BE"), ("fr@x", "TI-FR")):
        journal.enqueue_message(OutboundMessage(message_id=mid, action="IE3F32", sealed=b"s", content_type="x",
                                                endpoint=ep), now=T0)
    got = journal.claim_due_messages(now=T0, worker="w", limit=10, exclude_endpoints=["TI-NL", "TI-BE"],
                                     default_endpoint="TI-NL")
    assert [m.message_id for m in got] == ["fr@x"]
    got = journal.claim_due_messages(now=T0, worker="w", limit=10, exclude_endpoints=["TI-NL"],
                                     default_endpoint="TI-BE")
    assert [m.message_id for m in got] == ["none@x", "be@x"]      # "none@x" goes to TI-BE: not excluded
    journal.enqueue_message(OutboundMessage(message_id="none2@x", action="IE3F32", sealed=b"s", content_type="x"),
                            now=T0)
    got = journal.claim_due_messages(now=T0, worker="w", limit=10, exclude_endpoints=["TI-NL"])
    assert [m.message_id for m in got] == ["none2@x"]             # no default endpoint known: not held back


def test_a_conflicting_filing_names_its_filer_lrn_digests_and_state(journal: SqliteJournal) -> None:
    journal.insert_filing(filing("C-1"), now=T0)
    with pytest.raises(DuplicateFilingConflict) as exc:
        journal.insert_filing(filing("C-1", payload="<ens>2</ens>"), now=T0)
    e = exc.value
    assert (e.filer_eori, e.lrn, e.state, e.existing_digest, e.new_digest) == (
        "NL123456789", "C-1", "received", sha("<ens/>"), sha("<ens>2</ens>"))
    assert str(e).startswith(f"filing (NL123456789, LRN C-1) already exists in state 'received' with payload sha256 "
                             f"{sha('<ens/>')[:16]}..., the new payload has sha256 {sha('<ens>2</ens>')[:16]}...")


def test_purge_of_filing_less_messages_only_deletes_each_ones_events(journal: SqliteJournal) -> None:
    """No filing is old enough: the purge list holds only filing-less messages, and the events of every one of
    them (the first included) go with it, the younger one's stay."""
    old = T0 - timedelta(days=2000)
    for i in range(2):
        journal.record_inbound(InboundMessage(sender_party="customs", message_id=f"lo-{i}@eu", raw=b"<x/>",
                                              content_type="text/xml"), now=old, receipt=b"<r/>")
        journal.record_orphan(f"lo-{i}@eu", "customs", now=old, reason="matches no filing")
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="young@eu", raw=b"<x/>",
                                          content_type="text/xml"), now=T0, receipt=b"<r/>")
    journal.record_orphan("young@eu", "customs", now=T0, reason="matches no filing")
    report = journal.purge(T0 - timedelta(days=1095), now=T0)
    assert (report.filings, report.messages, report.orphans, report.dedup_entries, report.events) == (0, 2, 2, 2, 4)
    assert _ev(journal, message_id="lo-0@eu") == [] and _ev(journal, message_id="lo-1@eu") == []
    assert [e[0] for e in _ev(journal, message_id="young@eu")] == ["inbound-received", "inbound-orphan"]


def test_recovery_requeues_what_was_in_flight_and_says_who_held_it(sqlite_journal: SqliteJournal) -> None:
    """After a crash every outbound message in ``sending`` is due again (claim and lease cleared, one event naming
    the worker that held it) and filings left in ``sending`` are ``queued``; nothing else is touched. (SQLite,
    where one daemon owns the journal: ``JournalCore.recover_in_flight``; PostgreSQL overrides it and recovers
    only expired leases, since other instances' sends are live.)"""
    journal = sqlite_journal
    t1 = T0 + timedelta(minutes=1)
    f, _ = journal.insert_filing(filing("R-1"), now=T0)
    g, _ = journal.insert_filing(filing("R-2"), now=T0)
    for fil in (f, g):
        journal.transition(fil.id, "queued", now=T0)
    journal.transition(f.id, "sending", now=T0)
    journal.enqueue_message(out_msg("r1@x", f.id), now=T0)
    journal.enqueue_message(out_msg("r2@x", None), now=T0)
    journal.claim_due_messages(now=T0, worker="w1", lease_seconds=3600)
    journal.claim_due_messages(now=T0, worker="w2", lease_seconds=3600)
    journal.enqueue_message(out_msg("r3@x", g.id), now=T0, not_before=T0 + timedelta(hours=1))   # stays as it is
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="r1@x", raw=b"<x/>",
                                          content_type="text/xml"), now=T0, receipt=b"<r/>")
    before = journal.last_event_id()
    assert journal.recover_in_flight(now=t1) == 2
    for mid in ("r1@x", "r2@x"):
        m = journal.get_message(mid)
        assert (m.state, m.next_attempt_at, m.claimed_by, m.claim_expires_at, m.updated_at, m.attempts) == (
            "queued", _iso(t1), None, None, _iso(t1), 1)
    r3 = journal.get_message("r3@x")
    assert (r3.state, r3.next_attempt_at, r3.updated_at) == ("queued", _iso(T0 + timedelta(hours=1)), _iso(T0))
    assert journal.get_message("r1@x", direction="in", sender_party="customs").state == "received"
    assert [(e.event, e.filing_id, e.message_id, e.detail) for e in journal.events_after(before)] == [("message-recovered", f.id, "r1@x", {"was_claimed_by": "w1"}),
                  ("message-recovered", None, "r2@x", {"was_claimed_by": "w2"}),
                  ("state:queued", f.id, None, {"from": "sending", "to": "queued", "reason": "recovered after restart"})]
    assert (journal.get_filing(f.id).state, journal.get_filing(f.id).updated_at) == ("queued", _iso(t1))
    assert (journal.get_filing(g.id).state, journal.get_filing(g.id).updated_at) == ("queued", _iso(T0))
    assert journal.recover_in_flight(now=t1) == 0


def test_enqueue_refusals_name_the_message_and_the_rule(journal: SqliteJournal) -> None:
    from gateway.journal import JournalError
    f, _ = journal.insert_filing(filing(), now=T0)
    with pytest.raises(ValueError, match=r"^message k@x: kind must be one of \('user-message', 'receipt', 'error', "
                                         r"'pull-request', 'ping'\)$"):
        journal.enqueue_message(OutboundMessage(message_id="k@x", action=None, sealed=b"s", content_type="x",
                                                kind="signal"), now=T0)
    with pytest.raises(ValueError, match=r"^message k@x: priority must be one of \('A', 'B', 'C'\)$"):
        journal.enqueue_message(out_msg("k@x", f.id, priority="D"), now=T0)
    journal.enqueue_message(out_msg("k@x", f.id), now=T0)
    with pytest.raises(JournalError, match=r"^outbound MessageId k@x is already journaled; every message sealed "
                                           r"gets a fresh MessageId$"):
        journal.enqueue_message(out_msg("k@x", f.id), now=T0)
    with pytest.raises(JournalError, match=r"^message k2@x: filing id 999999 does not exist$"):
        journal.enqueue_message(out_msg("k2@x", 999999), now=T0)
    assert journal.get_message("k2@x") is None


def test_an_enqueued_message_is_stored_as_given_and_due_at_not_before(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    later = T0 + timedelta(minutes=10)
    msg = OutboundMessage(message_id="e@x", action="IE3Q05", sealed=b"0123456789", content_type="multipart/related",
                          filing_id=f.id, kind="user-message", ref_to_message_id="prev@x", priority="A",
                          endpoint="TI-BE", functional_reference="26NLMRN")
    m = journal.enqueue_message(msg, now=T0, not_before=later)
    assert (m.message_id, m.ref_to_message_id, m.direction, m.kind, m.action, m.filing_id, m.priority, m.endpoint,
            m.state, m.next_attempt_at, m.content_type, m.functional_reference, m.attempts, m.created_at,
            m.updated_at, m.sealed, m.sender_party) == (
        "e@x", "prev@x", "out", "user-message", "IE3Q05", f.id, "A", "TI-BE", "queued", _iso(later),
        "multipart/related", "26NLMRN", 0, _iso(T0), _iso(T0), None, None)
    assert journal.get_message("e@x", with_bytes=True).sealed == b"0123456789"
    assert journal.claim_due_messages(now=later - timedelta(seconds=1), worker="w") == []
    assert [m.message_id for m in journal.claim_due_messages(now=later, worker="w")] == ["e@x"]
    assert _ev(journal, message_id="e@x")[0] == ("message-queued", f.id, "e@x", {
        "action": "IE3Q05", "kind": "user-message", "priority": "A", "bytes": 10, "endpoint": "TI-BE"})
    n = journal.enqueue_message(out_msg("n@x", None), now=T0)
    assert n.next_attempt_at == _iso(T0)


def test_cancel_records_the_reason_and_the_state_it_left(journal: SqliteJournal) -> None:
    t1 = T0 + timedelta(seconds=7)
    journal.enqueue_message(out_msg("c@x", None), now=T0)
    journal.claim_due_messages(now=T0, worker="w")
    journal.fail_message("c@x", worker="w", now=T0, error="e")
    m = journal.cancel_message("c@x", now=t1, reason="operator gave up")
    assert (m.state, m.next_attempt_at, m.updated_at, m.sealed) == ("cancelled", None, _iso(t1), None)
    journal.enqueue_message(out_msg("q@x", None), now=T0)
    m = journal.cancel_message("q@x", now=t1, reason="wrong ENS")
    assert (m.state, m.next_attempt_at) == ("cancelled", None)
    assert [e for e in _ev(journal) if e[0] == "message-cancelled"] == [
        ("message-cancelled", None, "c@x", {"reason": "operator gave up", "from": "failed"}),
        ("message-cancelled", None, "q@x", {"reason": "wrong ENS", "from": "queued"})]


def test_update_filing_records_what_it_is_given_keeps_the_rest_and_says_so(journal: SqliteJournal) -> None:
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    f, _ = journal.insert_filing(filing("U-1"), now=T0)
    g = journal.update_filing(f.id, now=t1, mrn="26NLMRN000000001", error="late")
    assert (g.state, g.mrn, g.endpoint, g.last_error, g.updated_at) == (
        "received", "26NLMRN000000001", "TI-NL", "late", _iso(t1))
    g = journal.update_filing(f.id, now=t2, endpoint="TI-BE", event="endpoint-chosen", detail={"why": "config"})
    assert (g.mrn, g.endpoint, g.last_error, g.updated_at) == ("26NLMRN000000001", "TI-BE", "late", _iso(t2))
    assert journal.get_filing(f.id) == g
    assert [e for e in _ev(journal, filing_id=f.id) if e[0] != "filing-received"] == [
        ("updated", f.id, None, {"mrn": "26NLMRN000000001", "error": "late"}),
        ("endpoint-chosen", f.id, None, {"endpoint": "TI-BE", "why": "config"})]
    with pytest.raises(NotFound, match=r"^filing id 999999 does not exist$"):
        journal.update_filing(999999, now=t1, mrn="X")


def test_a_business_outcome_is_recorded_on_the_outbound_message_only(journal: SqliteJournal) -> None:
    t1 = T0 + timedelta(seconds=3)
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("b@x", f.id), now=T0)
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="in-b@eu", raw=b"<x/>",
                                          content_type="text/xml"), now=T0, receipt=b"<r/>")
    m = journal.set_business_outcome("b@x", "IE3R01", now=t1)
    assert (m.message_id, m.business_outcome, m.updated_at, m.state, m.sealed) == ("b@x", "IE3R01", _iso(t1),
                                                                                  "queued", None)
    assert _ev(journal, message_id="b@x")[-1] == ("message-answered", f.id, "b@x", {"outcome": "IE3R01"})
    with pytest.raises(NotFound, match=r"^outbound message in-b@eu does not exist$"):
        journal.set_business_outcome("in-b@eu", "IE3R01", now=t1)


def test_an_answer_to_a_request_without_filing_is_processed_and_recorded_on_the_request(
        journal: SqliteJournal) -> None:
    t1 = T0 + timedelta(seconds=4)
    journal.enqueue_message(out_msg("q05@x", None), now=T0)
    journal.enqueue_message(out_msg("other@x", None), now=T0)
    for mid in ("r08@eu", "r08b@eu"):
        journal.record_inbound(InboundMessage(sender_party="customs", message_id=mid, raw=b"<x/>", action="IE3R08",
                                              content_type="text/xml", ref_to_message_id="q05@x"), now=T0,
                               receipt=b"<r/>")
    m = journal.settle_inbound_without_filing("r08@eu", "customs", now=t1, outcome="IE3R08", answers="q05@x")
    assert (m.message_id, m.direction, m.state, m.business_outcome, m.filing_id, m.updated_at, m.sealed) == (
        "r08@eu", "in", "processed", "IE3R08", None, _iso(t1), None)
    q = journal.get_message("q05@x")
    assert (q.business_outcome, q.updated_at) == ("IE3R08", _iso(t1))
    m = journal.settle_inbound_without_filing("r08b@eu", "customs", now=t1, outcome="IE3N99")
    assert (m.state, m.business_outcome) == ("processed", "IE3N99")
    assert journal.get_message("q05@x").business_outcome == "IE3R08"
    assert journal.get_message("other@x").business_outcome is None
    assert [e for e in _ev(journal) if e[0] == "inbound-answered-request"] == [
        ("inbound-answered-request", None, "r08@eu", {"outcome": "IE3R08", "answers": "q05@x", "action": "IE3R08"}),
        ("inbound-answered-request", None, "r08b@eu", {"outcome": "IE3N99", "answers": None, "action": "IE3R08"})]
    with pytest.raises(InvalidTransition, match=r"^filing inbound message r08@eu: invalid state transition "
                                                r"'processed' -> 'processed'"):
        journal.settle_inbound_without_filing("r08@eu", "customs", now=t1, outcome="IE3R08")
    with pytest.raises(NotFound, match=r"^inbound message r08@eu from other does not exist$"):
        journal.settle_inbound_without_filing("r08@eu", "other", now=t1, outcome="IE3R08")


def test_the_fate_of_a_pulled_messages_receipt_is_recorded_once_per_change(journal: SqliteJournal) -> None:
    t1 = T0 + timedelta(seconds=5)
    with pytest.raises(ValueError, match=r"^ack state must be pending, acknowledged or abandoned, not 'lost'$"):
        journal.set_ack_state("ti", "pl@eu", "lost", now=T0)
    for mid, sender, pending in (("pl@eu", "ti", True), ("pl2@eu", "ti", True), ("pushed@eu", "ti", False)):
        journal.record_inbound(InboundMessage(sender_party=sender, message_id=mid, raw=b"<x/>", content_type="x"),
                               now=T0, receipt=f"<r-{mid}/>".encode(), receipt_content_type="application/xml",
                               ack_pending=pending)
    assert [(a.sender_party, a.message_id, a.receipt, a.receipt_content_type) for a in journal.pending_acks()] == [
        ("ti", "pl@eu", b"<r-pl@eu/>", "application/xml"), ("ti", "pl2@eu", b"<r-pl2@eu/>", "application/xml")]
    assert journal.set_ack_state("other", "pl@eu", "acknowledged", now=t1) is False      # not from that sender
    assert journal.set_ack_state("ti", "pushed@eu", "acknowledged", now=t1) is False     # not a pulled message
    assert journal.set_ack_state("ti", "pl@eu", "acknowledged", now=t1, detail={"http": 200}) is True
    assert journal.set_ack_state("ti", "pl@eu", "acknowledged", now=t1) is False         # no change
    assert journal.set_ack_state(None, "pl2@eu", "abandoned", now=t1) is True            # whoever sent it
    m = journal.get_message("pl@eu", direction="in", sender_party="ti")
    assert (m.ack_state, m.updated_at) == ("acknowledged", _iso(t1))
    assert journal.get_message("pushed@eu", direction="in").ack_state is None
    assert journal.pending_acks() == []
    assert [e for e in _ev(journal) if e[0].startswith("ack-")] == [
        ("ack-acknowledged", None, "pl@eu", {"sender": "ti", "http": 200}),
        ("ack-abandoned", None, "pl2@eu", {"sender": None})]
    assert journal.set_ack_state("ti", "pl2@eu", "pending", now=t1) is True
    assert [a.message_id for a in journal.pending_acks(limit=1)] == ["pl2@eu"]


def test_an_orphan_is_kept_with_its_reason_and_resolved_with_or_without_a_filing(journal: SqliteJournal) -> None:
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    for mid in ("o1@eu", "o2@eu"):
        journal.record_inbound(InboundMessage(sender_party="customs", message_id=mid, raw=b"<x/>",
                                              content_type="text/xml", action="IE3Q02"), now=T0, receipt=b"<r/>")
    with pytest.raises(NotFound, match=r"^inbound message o1@eu from other does not exist$"):
        journal.record_orphan("o1@eu", "other", now=t1, reason="r")
    o1 = journal.record_orphan("o1@eu", "customs", now=t1, reason="no filing with MRN X")
    assert (o1.reason, o1.created_at, o1.resolved_at, o1.resolution, o1.message.message_id, o1.message.state,
            o1.message.updated_at) == ("no filing with MRN X", _iso(t1), None, None, "o1@eu", "orphan", _iso(t1))
    with pytest.raises(InvalidTransition, match=r"^filing inbound message o1@eu: invalid state transition "
                                                r"'orphan' -> 'orphan'"):
        journal.record_orphan("o1@eu", "customs", now=t1, reason="again")
    o2 = journal.record_orphan("o2@eu", "customs", now=t1, reason="no LRN")
    r = journal.resolve_orphan(o1.id, now=t2, resolution="not ours, ignored")
    assert (r.id, r.resolved_at, r.resolution, r.message.state, r.message.filing_id) == (
        o1.id, _iso(t2), "not ours, ignored", "orphan", None)
    f, _ = journal.insert_filing(filing(), now=T0)
    r = journal.resolve_orphan(o2.id, now=t2, resolution="matched by hand", filing_id=f.id)
    assert (r.resolution, r.message.state, r.message.filing_id) == ("matched by hand", "processed", f.id)
    assert [e for e in _ev(journal) if e[0] in ("inbound-orphan", "orphan-resolved")] == [
        ("inbound-orphan", None, "o1@eu", {"sender": "customs", "reason": "no filing with MRN X"}),
        ("inbound-orphan", None, "o2@eu", {"sender": "customs", "reason": "no LRN"}),
        ("orphan-resolved", None, "o1@eu", {"resolution": "not ours, ignored"}),
        ("orphan-resolved", f.id, "o2@eu", {"resolution": "matched by hand"})]
    assert [o.id for o in journal.list_orphans(include_resolved=True, limit=1)] == [o1.id]
    with pytest.raises(NotFound, match=r"^orphan 999999 does not exist$"):
        journal.resolve_orphan(999999, now=t2, resolution="x")


def test_evidence_is_every_stored_message_and_signal_named_in_order(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("a/b c@x", f.id), now=T0)
    journal.claim_due_messages(now=T0, worker="w")
    journal.record_receipt("a/b c@x", worker="w", now=T0, outcome="receipt", receipt=b"<receipt/>",
                           content_type="application/soap+xml")
    long_id = "L" * 130 + "@x"
    journal.enqueue_message(OutboundMessage(message_id=long_id, action=None, kind="ping", sealed=b"ping",
                                            content_type=None, filing_id=f.id), now=T0)
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="in.1@eu", raw=b"<IE3R01/>",
                                          content_type="Application/XML", action="IE3R01"), now=T0,
                           receipt=b"<ours/>", receipt_content_type="multipart/related")
    journal.attach_inbound("in.1@eu", "customs", f.id, now=T0)
    got = [(e.name, e.kind, e.message_id, e.content_type, e.data) for e in journal.evidence(f.id)]
    assert got == [
        ("001-out-IE3F32-a_b_c@x.mime", "sealed-message", "a/b c@x", "multipart/related", b"sealed-bytes"),
        ("001-out-IE3F32-a_b_c@x-receipt.xml", "receipt", "a/b c@x", "application/soap+xml", b"<receipt/>"),
        (f"002-out-ping-{'L' * 120}.bin", "sealed-message", long_id, None, b"ping"),
        ("003-in-IE3R01-in.1@eu.xml", "inbound-message", "in.1@eu", "Application/XML", b"<IE3R01/>"),
        ("003-in-IE3R01-in.1@eu-receipt.mime", "returned-receipt", "in.1@eu", "multipart/related", b"<ours/>"),
    ], got
    assert journal.evidence(999999) == []


def test_events_are_read_by_filing_message_or_both_oldest_first_within_a_limit(journal: SqliteJournal) -> None:
    journal.append_event("a", now=T0, filing_id=None, message_id="m1", detail={"n": 1})
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.append_event("b", now=T0, filing_id=f.id, message_id="m1")
    journal.append_event("c", now=T0, filing_id=f.id, message_id="m2", detail={"n": 3})
    journal.append_event("d", now=T0 + timedelta(seconds=1), filing_id=f.id)
    assert [e.event for e in journal.events(message_id="m1")] == ["a", "b"]
    assert [e.event for e in journal.events(filing_id=f.id)] == ["filing-received", "b", "c", "d"]
    assert [e.event for e in journal.events(filing_id=f.id, message_id="m1")] == ["b"]
    assert [e.event for e in journal.events(filing_id=f.id, limit=2)] == ["filing-received", "b"]
    (c,) = journal.events(message_id="m2")
    assert (c.at, c.filing_id, c.message_id, c.event, c.detail) == (_iso(T0), f.id, "m2", "c", {"n": 3})
    everything = journal.events()
    assert [e.event for e in everything] == ["a", "filing-received", "b", "c", "d"]
    first = everything[0].id
    after = journal.events_after(first, limit=2)
    assert [(e.id, e.event) for e in after] == [(everything[1].id, "filing-received"), (everything[2].id, "b")]
    (d,) = journal.events_after(everything[3].id)
    assert (d.at, d.filing_id, d.message_id, d.event, d.detail) == (
        _iso(T0 + timedelta(seconds=1)), f.id, None, "d", {})
    assert journal.events_after(everything[-1].id) == [] and journal.last_event_id() == everything[-1].id


def test_customs_requests_open_close_reopen_with_their_events(journal: SqliteJournal) -> None:
    t1, t2, t3 = (T0 + timedelta(seconds=s) for s in (1, 2, 3))
    f, _ = journal.insert_filing(filing(), now=T0)
    with pytest.raises(ValueError, match=r"^request kind must be one of \('IE3Q01', 'IE3Q02', 'IE3Q03'\), "
                                         r"not 'IE3Q04'$"):
        journal.open_request(f.id, "IE3Q04", "q@eu", now=T0)
    with pytest.raises(NotFound, match=r"^filing id 999999 does not exist$"):
        journal.open_request(999999, "IE3Q01", "q@eu", now=T0)
    q = journal.open_request(f.id, "IE3Q01", "q01@eu", now=T0)
    assert (q.filing_id, q.kind, q.request_message_id, q.state, q.answer_message_id, q.opened_at, q.updated_at) == (
        f.id, "IE3Q01", "q01@eu", "open", None, _iso(T0), _iso(T0))
    q3 = journal.open_request(f.id, "IE3Q03", "q03@eu", now=T0)
    for bad in ("open", "pending"):
        with pytest.raises(ValueError, match=rf"^a request is closed as 'answered' or 'closed', not '{bad}'$"):
            journal.close_request(q.id, now=t1, state=bad)
    a = journal.close_request(q.id, now=t1, answer_message_id="r01@x")
    assert (a.state, a.answer_message_id, a.updated_at, a.opened_at) == ("answered", "r01@x", _iso(t1), _iso(T0))
    c = journal.close_request(q3.id, now=t1, state="closed")
    assert (c.state, c.answer_message_id) == ("closed", None)
    with pytest.raises(InvalidTransition, match=r"^filing request \d+ \(IE3Q03\): invalid state transition "
                                                r"'closed' -> 'answered'"):
        journal.close_request(q3.id, now=t1)
    r = journal.reopen_request(q.id, now=t2, reason="IE3N99 on our IE3R01")
    assert (r.state, r.answer_message_id, r.opened_at, r.updated_at) == ("open", None, _iso(t2), _iso(t2))
    assert journal.reopen_request(q.id, now=t3, reason="again") == r          # already open: unchanged
    assert [x.id for x in journal.list_requests()] == [q.id]
    assert [x.id for x in journal.list_requests(filing_id=f.id, open_only=False)] == [q.id, q3.id]
    assert journal.list_requests(filing_id=999999, open_only=False) == []
    with pytest.raises(NotFound, match=r"^customs request 999999 does not exist$"):
        journal.reopen_request(999999, now=t2, reason="x")
    assert [e for e in _ev(journal, filing_id=f.id) if e[0].startswith("request-")] == [
        ("request-opened", f.id, "q01@eu", {"kind": "IE3Q01"}),
        ("request-opened", f.id, "q03@eu", {"kind": "IE3Q03"}),
        ("request-answered", f.id, "r01@x", {"kind": "IE3Q01", "request": "q01@eu"}),
        ("request-closed", f.id, "q03@eu", {"kind": "IE3Q03", "request": "q03@eu"}),
        ("request-reopened", f.id, "r01@x", {"kind": "IE3Q01", "request": "q01@eu", "rejected_answer": "r01@x",
                                             "reason": "IE3N99 on our IE3R01"})]


def test_an_answer_without_ref_finds_the_oldest_unanswered_request_about_its_reference(
        journal: SqliteJournal) -> None:
    def q05(mid: str, ref: str, action: str = "IE3Q05") -> None:
        journal.enqueue_message(OutboundMessage(message_id=mid, action=action, sealed=b"s", content_type="x",
                                                functional_reference=ref), now=T0)
    q05("q1@x", "MRN1")
    q05("q2@x", "MRN1")
    q05("q3@x", "MRN2")
    q05("f1@x", "MRN1", action="IE3F32")
    assert journal.find_unanswered_request("IE3Q05", "MRN1").message_id == "q1@x"
    journal.set_business_outcome("q1@x", "IE3R08", now=T0)
    assert journal.find_unanswered_request("IE3Q05", "MRN1").message_id == "q2@x"
    journal.cancel_message("q2@x", now=T0, reason="r")
    assert journal.find_unanswered_request("IE3Q05", "MRN1") is None
    assert journal.find_unanswered_request("IE3Q05", "MRN2").message_id == "q3@x"
    assert journal.find_unanswered_request("IE3F32", "MRN1").message_id == "f1@x"


def test_an_endpoint_pause_is_journalled_once_and_resumed_per_party(journal: SqliteJournal) -> None:
    t1, t2, t3 = (T0 + timedelta(seconds=s) for s in (1, 2, 3))
    s, new = journal.pause_endpoint("TI-NL", "P1", now=t1, reason="EBMS:0004 A001", message_id="m@x")
    assert new is True
    assert (s.endpoint, s.party_id, s.paused_at, s.pause_reason, s.pause_message_id, s.resumed_at, s.resumed_by,
            s.updated_at) == ("TI-NL", "P1", _iso(t1), "EBMS:0004 A001", "m@x", None, None, _iso(t1))
    s2, new = journal.pause_endpoint("TI-NL", "P1", now=t2, reason="again")
    assert new is False and s2 == s
    journal.pause_endpoint("TI-NL", "P2", now=t1, reason="r2")
    journal.pause_endpoint("TI-BE", "P1", now=t1, reason="r3")
    assert journal.paused_endpoints("P1") == ["TI-BE", "TI-NL"] and journal.paused_endpoints("P2") == ["TI-NL"]
    assert journal.paused_endpoints("P3") == []
    # what waited behind the pause: its retry budget restarts on resume (only on this endpoint, or none)
    for mid, ep in (("nl@x", "TI-NL"), ("none@x", None), ("be@x", "TI-BE")):
        journal.enqueue_message(OutboundMessage(message_id=mid, action="IE3F32", sealed=b"s", content_type="x",
                                                endpoint=ep), now=T0)
    assert len(journal.claim_due_messages(now=T0, worker="w", limit=5)) == 3
    for mid in ("nl@x", "none@x", "be@x"):
        journal.schedule_retry(mid, worker="w", now=T0, next_attempt_at=T0, error="e")
    journal.note_endpoint_failure("TI-NL", "P1", now=t1)
    journal.mark_outage_alerted("TI-NL", "P1", now=t1)
    (r,) = journal.resume_endpoint("TI-NL", "P1", now=t3, by="alice")
    assert (r.party_id, r.paused_at, r.resumed_at, r.resumed_by, r.failing_since, r.outage_alerted_at,
            r.pause_reason, r.updated_at) == ("P1", None, _iso(t3), "alice", None, None, "EBMS:0004 A001", _iso(t3))
    assert journal.paused_endpoints("P1") == ["TI-BE"] and journal.paused_endpoints("P2") == ["TI-NL"]
    assert [(mid, journal.get_message(mid).retry_since) for mid in ("nl@x", "none@x", "be@x")] == [
        ("nl@x", None), ("none@x", None), ("be@x", _iso(T0))]
    assert journal.resume_endpoint("TI-NL", "P1", now=t3) == []           # not paused: nothing to do
    assert [x.party_id for x in journal.resume_endpoint("TI-NL", now=t3)] == ["P2"]
    assert journal.endpoint_state("TI-NL", "P2").resumed_by == "operator"
    assert [e for e in _ev(journal) if e[0].startswith("endpoint-")] == [
        ("endpoint-paused", None, "m@x", {"endpoint": "TI-NL", "party_id": "P1", "reason": "EBMS:0004 A001"}),
        ("endpoint-paused", None, None, {"endpoint": "TI-NL", "party_id": "P2", "reason": "r2"}),
        ("endpoint-paused", None, None, {"endpoint": "TI-BE", "party_id": "P1", "reason": "r3"}),
        ("endpoint-resumed", None, None, {"endpoint": "TI-NL", "party_id": "P1", "by": "alice"}),
        ("endpoint-resumed", None, None, {"endpoint": "TI-NL", "party_id": "P2", "by": "operator"})]


def test_endpoint_health_failing_since_the_first_failure_and_the_outage_alert(journal: SqliteJournal) -> None:
    t1, t2, t3 = (T0 + timedelta(seconds=s) for s in (1, 2, 3))
    assert journal.endpoint_state("TI-NL", "P") is None
    s = journal.note_endpoint_failure("TI-NL", "P", now=t1)
    assert (s.endpoint, s.party_id, s.failing_since, s.last_ok_at, s.outage_alerted_at, s.paused_at,
            s.updated_at) == ("TI-NL", "P", _iso(t1), None, None, None, _iso(t1))
    s = journal.note_endpoint_failure("TI-NL", "P", now=t2)
    assert (s.failing_since, s.updated_at) == (_iso(t1), _iso(t2))
    journal.mark_outage_alerted("TI-NL", "P", now=t2)
    journal.mark_outage_alerted("TI-NL", "Q", now=t2)                     # no such row: nothing
    s = journal.endpoint_state("TI-NL", "P")
    assert (s.outage_alerted_at, s.updated_at) == (_iso(t2), _iso(t2)) and journal.endpoint_state("TI-NL", "Q") is None
    before = journal.note_endpoint_ok("TI-NL", "P", now=t3)
    assert (before.failing_since, before.outage_alerted_at) == (_iso(t1), _iso(t2))
    s = journal.endpoint_state("TI-NL", "P")
    assert (s.failing_since, s.outage_alerted_at, s.last_ok_at, s.updated_at) == (None, None, _iso(t3), _iso(t3))
    first = journal.note_endpoint_ok("TI-BE", "P", now=t1)                # a first success creates the row
    assert (first.endpoint, first.last_ok_at, first.failing_since) == ("TI-BE", None, None)
    journal.mark_outage_alerted("TI-BE", "P", now=t2)                     # alerted while healthy: written again
    journal.note_endpoint_ok("TI-BE", "P", now=t2)
    assert journal.endpoint_state("TI-BE", "P").outage_alerted_at is None
    assert [(e[0], e[3]) for e in _ev(journal) if e[0] == "endpoint-recovered"] == [
        ("endpoint-recovered", {"endpoint": "TI-NL", "party_id": "P", "failing_since": _iso(t1)})]
    assert [(s.endpoint, s.party_id) for s in journal.list_endpoint_states()] == [("TI-BE", "P"), ("TI-NL", "P")]


def test_intake_and_route_references_keep_the_first_and_refuse_another_message(journal: SqliteJournal) -> None:
    from gateway.journal import JournalError
    f, _ = journal.insert_filing(filing(), now=T0)
    assert journal.intake_ref(f.id) is None
    journal.record_intake_ref(f.id, channel="amqp", message_id="erp-1", correlation_id="c-1", now=T0)
    journal.record_intake_ref(f.id, channel="spool", message_id="erp-2", correlation_id=None, now=T0)
    assert journal.intake_ref(f.id) == {"channel": "amqp", "message_id": "erp-1", "correlation_id": "c-1"}
    assert [journal.bump_intake_attempt("k1", now=T0) for _ in range(3)] == [1, 2, 3]
    assert journal.bump_intake_attempt("k2", now=T0) == 1
    assert journal.find_route_ref("hmrc", "R1") is None
    assert journal.record_route_ref("hmrc", "R1", message_id="m@x", filing_id=f.id, now=T0) is True
    assert journal.record_route_ref("hmrc", "R1", message_id="m@x", filing_id=f.id, now=T0) is False
    assert journal.record_route_ref("other", "R1", message_id="n@x", filing_id=None, now=T0) is True
    with pytest.raises(JournalError, match=r"^hmrc reference R1 already names message m@x, not n@x$"):
        journal.record_route_ref("hmrc", "R1", message_id="n@x", filing_id=None, now=T0)
    assert journal.find_route_ref("hmrc", "R1") == ("m@x", f.id)
    assert journal.find_route_ref("other", "R1") == ("n@x", None)


# -- the SQLite backend itself (gateway/journal/sqlite.py) --------------------------------------------------------

def test_a_second_daemon_is_refused_naming_the_holder_and_may_start_once_the_first_closed(jpath: Path) -> None:
    import os
    first = SqliteJournal.open(jpath, now=T0)
    lock = jpath.with_name(jpath.name + ".lock")
    assert lock.read_text() == str(os.getpid())
    with pytest.raises(JournalLocked) as exc:
        SqliteJournal.open(jpath, now=T0)
    assert str(exc.value) == (f"{jpath}: another gateway daemon uses this journal (pid {os.getpid()}, lock file "
                              f"{lock}); stop it first, or open without daemon=True for CLI commands")
    first.close()
    first.close()                                          # closing twice is harmless
    second = SqliteJournal.open(jpath, now=T0)
    try:
        assert second.describe() == f"sqlite:{jpath}" and second.readonly is False
    finally:
        second.close()


def test_only_the_daemon_recovers_at_open(jpath: Path) -> None:
    j = SqliteJournal.open(jpath, now=T0)
    j.enqueue_message(out_msg("s@x", None), now=T0)
    j.claim_due_messages(now=T0, worker="dead", lease_seconds=3600)
    j.close()
    tool = SqliteJournal.open(jpath, now=T0, daemon=False)   # a CLI write command: no lock, no recovery
    try:
        assert tool.recovered_at_open == 0 and tool.get_message("s@x").state == "sending"
        d = SqliteJournal.open(jpath, now=T0 + timedelta(seconds=1))   # the tool holds no daemon lock
        try:
            assert d.recovered_at_open == 1 and d.get_message("s@x").state == "queued"
            assert d.get_message("s@x").next_attempt_at == _iso(T0 + timedelta(seconds=1))
        finally:
            d.close()
    finally:
        tool.close()


def test_open_settings_and_pragma_names(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "j.sqlite3"                 # parents are created
    j = SqliteJournal.open(path, busy_timeout_ms=1234, now=T0)
    try:
        assert (j.pragma("busy_timeout"), j.pragma("journal_mode"), j.pragma("synchronous"),
                j.pragma("foreign_keys")) == (1234, "wal", 2, 1)
        with pytest.raises(ValueError, match=r"^not a pragma name: 'user_version; DROP TABLE filings'$"):
            j.pragma("user_version; DROP TABLE filings")
        with pytest.raises(ValueError, match=r"^not a pragma name: 'User_version'$"):
            j.pragma("User_version")
        s = j.singleton("timers")
        assert (s.name, s.held()) == ("timers", False)
        assert s.try_acquire() is True and s.held() is True
        s.release()
        assert s.held() is False
        assert j.integrity_check() == "ok"
    finally:
        j.close()
    r = SqliteJournal.open_reader(path, busy_timeout_ms=4321)
    try:
        assert (r.pragma("busy_timeout"), r.pragma("query_only"), r.readonly, r.describe()) == (
            4321, 1, True, f"sqlite:{path}")
    finally:
        r.close()


def test_a_reader_refuses_writes_a_missing_file_and_another_schema_version(jpath: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.sqlite3"
    with pytest.raises(NotFound) as exc:
        SqliteJournal.open_reader(missing)
    assert str(exc.value) == (f"{missing}: no journal here (the daemon creates it on first start; check [journal] "
                              "path)")
    SqliteJournal.open(jpath, now=T0).close()
    r = SqliteJournal.open_reader(jpath)
    try:
        with pytest.raises(ReadOnlyJournal) as exc2:
            r.append_event("x", now=T0)
        assert str(exc2.value) == f"{jpath}: opened read-only (open_reader); writes go through the daemon"
        assert r.events() == [] and r.lifecycle.__self__ is r
    finally:
        r.close()
    conn = sqlite3.connect(jpath)
    conn.execute(f"PRAGMA user_version = {schema.LATEST - 1}")
    conn.close()
    from gateway.journal import JournalError
    with pytest.raises(JournalError) as exc3:
        SqliteJournal.open_reader(jpath)
    assert str(exc3.value) == (f"{jpath}: schema version {schema.LATEST - 1}, this ics2gw reads version "
                               f"{schema.LATEST}; start the daemon of this version once to migrate it")


def test_nested_transactions_are_savepoints_rolled_back_alone_and_commits_are_counted(
        sqlite_journal: SqliteJournal, jpath: Path) -> None:
    j = sqlite_journal
    c0, r0 = j.commits, j.rollbacks
    with j.transaction():
        j.append_event("outer", now=T0)
        with pytest.raises(RuntimeError):
            with j.transaction():
                j.append_event("inner-lost", now=T0)
                with j.transaction():                       # a savepoint inside a savepoint
                    j.append_event("inner-inner-lost", now=T0)
                raise RuntimeError("one submission fails")
        with j.transaction():
            j.append_event("inner-kept", now=T0)
            with pytest.raises(RuntimeError):
                with j.transaction():
                    j.append_event("deepest-lost", now=T0)
                    raise RuntimeError("x")
            j.append_event("after-deepest", now=T0)
        reader = SqliteJournal.open_reader(jpath)
        try:
            assert reader.events() == []                   # nothing committed before the outer COMMIT
        finally:
            reader.close()
    assert [e.event for e in j.events()] == ["outer", "inner-kept", "after-deepest"]
    assert (j.commits, j.rollbacks) == (c0 + 1, r0)        # one COMMIT; savepoint rollbacks are not counted
    with pytest.raises(RuntimeError):
        with j.transaction():
            j.append_event("lost", now=T0)
            raise RuntimeError("whole batch fails")
    assert (j.commits, j.rollbacks) == (c0 + 1, r0 + 1)
    assert [e.event for e in j.events()] == ["outer", "inner-kept", "after-deepest"]
    j.append_event("next", now=T0)                          # the connection is usable again
    assert (j.commits, [e.event for e in j.events()][-1]) == (c0 + 2, "next")
    assert not j._conn.in_transaction


def test_a_snapshot_read_inside_and_outside_a_transaction(sqlite_journal: SqliteJournal, jpath: Path) -> None:
    j = sqlite_journal
    f, _ = j.insert_filing(filing(), now=T0)
    life = j.lifecycle(f.id)                                # outside: its own read transaction, then closed
    assert life["filing"]["id"] == f.id and not j._conn.in_transaction
    with j.transaction():
        j.append_event("in-tx", now=T0, filing_id=f.id)
        life = j.lifecycle(f.id)                            # inside: sees the transaction's own writes
        assert [e["event"] for e in life["events"]] == ["filing-received", "in-tx"]
        assert j._conn.in_transaction
    assert [e.event for e in j.events(filing_id=f.id)] == ["filing-received", "in-tx"]
    r = SqliteJournal.open_reader(jpath)
    try:
        assert [e["event"] for e in r.lifecycle(f.id)["events"]] == ["filing-received", "in-tx"]
        assert not r._conn.in_transaction
    finally:
        r.close()


def test_a_cancelled_message_of_a_filing_is_journalled_on_the_filing(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing(), now=T0)
    journal.enqueue_message(out_msg("cf@x", f.id), now=T0)
    journal.cancel_message("cf@x", now=T0, reason="ENS withdrawn")
    assert _ev(journal, filing_id=f.id)[-1] == ("message-cancelled", f.id, "cf@x",
                                                {"reason": "ENS withdrawn", "from": "queued"})


def test_a_success_exactly_the_refresh_interval_after_the_last_one_is_not_written(journal: SqliteJournal) -> None:
    """``last_ok_at`` may be up to 2 s stale, inclusive: a success 2 s after the last one noted writes nothing."""
    journal.note_endpoint_ok("TI-NL", "P", now=T0)
    journal.note_endpoint_ok("TI-NL", "P", now=T0)               # the row exists now: last_ok_at = T0
    journal.note_endpoint_ok("TI-NL", "P", now=T0 + timedelta(seconds=2))
    s = journal.endpoint_state("TI-NL", "P")
    assert (s.last_ok_at, s.updated_at) == (_iso(T0), _iso(T0))
    journal.note_endpoint_ok("TI-NL", "P", now=T0 + timedelta(seconds=2, milliseconds=1))
    assert journal.endpoint_state("TI-NL", "P").last_ok_at == _iso(T0 + timedelta(seconds=2, milliseconds=1))


def test_settling_an_answer_returns_that_senders_message_when_another_sent_the_same_id(
        journal: SqliteJournal) -> None:
    for sender in ("customs", "other"):
        journal.record_inbound(InboundMessage(sender_party=sender, message_id="same@eu", raw=b"<x/>",
                                              content_type="text/xml", action="IE3R08"), now=T0, receipt=b"<r/>")
    m = journal.settle_inbound_without_filing("same@eu", "customs", now=T0, outcome="IE3R08")
    assert (m.sender_party, m.state, m.business_outcome) == ("customs", "processed", "IE3R08")
    o = journal.get_message("same@eu", direction="in", sender_party="other")
    assert (o.state, o.business_outcome) == ("received", None)


def test_event_reads_are_bounded_by_default(journal: SqliteJournal) -> None:
    """An outbox batch is 500 events and an event listing 1000 unless the caller asks otherwise."""
    with journal.transaction():
        for i in range(1001):
            journal.append_event(f"e{i}", now=T0)
    batch = journal.events_after(0)
    assert (len(batch), batch[0].event, batch[-1].event) == (500, "e0", "e499")
    listed = journal.events()
    assert (len(listed), listed[-1].event) == (1000, "e999")


def test_open_requests_of_one_filing(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing("RQ-1"), now=T0)
    g, _ = journal.insert_filing(filing("RQ-2"), now=T0)
    a = journal.open_request(f.id, "IE3Q01", "a@eu", now=T0)
    b = journal.open_request(f.id, "IE3Q02", "b@eu", now=T0)
    c = journal.open_request(g.id, "IE3Q02", "c@eu", now=T0)
    journal.close_request(a.id, now=T0, state="closed")
    assert [r.id for r in journal.list_requests(filing_id=f.id)] == [b.id]
    assert [r.id for r in journal.list_requests()] == [b.id, c.id]


def test_every_failed_batch_is_one_rollback(sqlite_journal: SqliteJournal) -> None:
    j = sqlite_journal
    r0 = j.rollbacks
    for _ in range(3):
        with pytest.raises(RuntimeError), j.transaction():
            j.append_event("lost", now=T0)
            raise RuntimeError("batch fails")
    assert j.rollbacks == r0 + 3 and j.events() == []


def test_the_daemon_lock_file_is_private_and_names_whoever_holds_it(jpath: Path) -> None:
    """The lock file is created 0600 and holds the daemon's pid; a refusal quotes what the file says (at most 64
    bytes, undecodable bytes replaced, "?" when it is empty)."""
    import fcntl
    import os
    import stat
    j = SqliteJournal.open(jpath, now=T0)
    lock = jpath.with_name(jpath.name + ".lock")
    try:
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    finally:
        j.close()
    for content, shown in ((b"", "?"), (b"12\xff", "12\ufffd"), (b"9" * 70, "9" * 64)):
        lock.write_bytes(content)
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)       # another daemon holds it
            with pytest.raises(JournalLocked) as exc:
                SqliteJournal.open(jpath, now=T0)
            assert f"(pid {shown}, lock file {lock})" in str(exc.value)
        finally:
            os.close(fd)


def test_counters_of_a_fresh_connection(jpath: Path) -> None:
    """A connection starts with no commits, rollbacks or recovered messages; a daemon's open commits its recovery
    (one transaction), a tool's and a reader's open commit nothing through the journal."""
    d = SqliteJournal.open(jpath, now=T0)
    try:
        assert (d.commits, d.rollbacks, d.recovered_at_open) == (1, 0, 0)
    finally:
        d.close()
    tool = SqliteJournal.open(jpath, now=T0, daemon=False)
    r = SqliteJournal.open_reader(jpath)
    try:
        assert (tool.commits, tool.rollbacks, tool.recovered_at_open) == (0, 0, 0)
        assert (r.commits, r.rollbacks, r.recovered_at_open) == (0, 0, 0)
    finally:
        tool.close()
        r.close()


def test_a_daemon_refused_for_a_newer_schema_names_the_file_and_releases_its_lock(jpath: Path) -> None:
    SqliteJournal.open(jpath, now=T0).close()
    conn = sqlite3.connect(jpath)
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew) as exc:
        SqliteJournal.open(jpath, now=T0)
    assert str(exc.value).startswith(f"{jpath}: schema version {schema.LATEST + 1} is newer than this ics2gw knows")
    conn = sqlite3.connect(jpath)
    conn.execute(f"PRAGMA user_version = {schema.LATEST}")
    conn.close()
    SqliteJournal.open(jpath, now=T0).close()          # the refused open left no lock behind


def test_the_operations_read_side_reads_this_journal(sqlite_journal: SqliteJournal) -> None:
    sqlite_journal.insert_filing(filing("Q-1"), now=T0)
    q = sqlite_journal.queries()
    try:
        assert q.counts_by_state(fresh=True).get("received") == 1
    finally:
        q.close()


def test_a_reader_waits_five_seconds_for_a_lock_by_default(sqlite_journal: SqliteJournal, jpath: Path) -> None:
    r = SqliteJournal.open_reader(jpath)
    try:
        assert r.pragma("busy_timeout") == 5000
    finally:
        r.close()


def test_readers_of_messages_filings_and_queues(journal: SqliteJournal) -> None:
    """``list_messages`` (one direction, one state, oldest first, bounded), ``queued_by_endpoint`` (queued
    outbound only), ``list_filings`` (states, since inclusive, newest first, bounded) and ``get_message``."""
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    f, _ = journal.insert_filing(filing("LF-1"), now=T0)
    g, _ = journal.insert_filing(filing("LF-2"), now=t1)
    h, _ = journal.insert_filing(filing("LF-3"), now=t2)
    journal.transition(g.id, "queued", now=t1)
    for mid, ep in (("o1@x", "TI-NL"), ("o2@x", None), ("o3@x", "TI-NL"), ("o4@x", "TI-BE")):
        journal.enqueue_message(OutboundMessage(message_id=mid, action="IE3F32", sealed=b"s", content_type="x",
                                                endpoint=ep), now=T0)
    journal.claim_due_messages(now=T0, worker="w")                      # o1@x is sending
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="i1@eu", raw=b"<x/>",
                                          content_type="x"), now=T0, receipt=b"<r/>")
    assert [m.message_id for m in journal.list_messages()] == ["o1@x", "o2@x", "o3@x", "o4@x"]
    assert [m.message_id for m in journal.list_messages(state="queued", limit=2)] == ["o2@x", "o3@x"]
    assert [(m.message_id, m.direction, m.sealed) for m in journal.list_messages(direction="in")] == [
        ("i1@eu", "in", None)]
    assert journal.list_messages(state="sending", direction="in") == []
    assert journal.queued_by_endpoint() == {"TI-NL": 1, None: 1, "TI-BE": 1}
    assert [d["lrn"] for d in journal.list_filings()] == ["LF-3", "LF-2", "LF-1"]
    assert [d["lrn"] for d in journal.list_filings(limit=1)] == ["LF-3"]
    assert [d["lrn"] for d in journal.list_filings(state="received")] == ["LF-3", "LF-1"]
    assert [d["lrn"] for d in journal.list_filings(state=["queued", "received"], since=t1)] == ["LF-3", "LF-2"]
    assert journal.list_filings(state=["sent"]) == []
    assert journal.list_filings(since=t2)[0] == journal.get_filing(h.id).to_dict()
    with pytest.raises(ValueError, match=r"^direction must be one of \('in', 'out'\)$"):
        journal.get_message("o1@x", direction="both")
    assert journal.get_message("o1@x", with_bytes=True).sealed == b"s"
    assert journal.get_message("i1@eu", direction="in", sender_party="other") is None
    assert journal.get_filing_by_message_id("nope@x") is None and f.id


def test_the_lifecycle_of_a_filing_is_everything_about_it_in_one_read(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(filing("LC-1"), now=T0)
    journal.enqueue_message(out_msg("lc@x", f.id, body=b"12345"), now=T0)
    journal.claim_due_messages(now=T0, worker="w")
    journal.record_receipt("lc@x", worker="w", now=T0, outcome="receipt", receipt=b"<r/>")
    q = journal.open_request(f.id, "IE3Q02", "q@eu", now=T0)
    journal.close_request(q.id, now=T0, state="closed")
    life = journal.lifecycle(f.id)
    assert life["filing"] == journal.get_filing(f.id).to_dict()
    (m,) = life["messages"]
    assert (m["message_id"], m["state"], m["sealed_bytes"], m["receipt_bytes"]) == ("lc@x", "receipted", 5, 4)
    assert "sealed" not in m and "receipt" not in m
    assert [(r["id"], r["state"]) for r in life["requests"]] == [(q.id, "closed")]
    assert life["events"] == [e.to_dict() for e in journal.events(filing_id=f.id)]
    assert [e["event"] for e in life["events"]] == ["filing-received", "message-queued", "message-claimed",
                                                    "message-receipted", "request-opened", "request-closed"]
    with pytest.raises(NotFound, match=r"^filing id 999999 does not exist$"):
        journal.lifecycle(999999)


def test_event_detail_is_stored_as_compact_sorted_json(journal: SqliteJournal) -> None:
    journal.append_event("d", now=T0, detail={"b": 1, "a": T0, "c": [1, 2]})
    journal.append_event("n", now=T0)
    rows = journal._all("SELECT detail FROM events ORDER BY id")
    assert [r[0] for r in rows] == ['{"a":"2025-03-01 08:00:00+00:00","b":1,"c":[1,2]}', "{}"]


def test_reader_defaults_and_one_filings_lifecycle_among_others(journal: SqliteJournal) -> None:
    """Listings are bounded by default (100 filings, messages, orphans; 10 000 pending acks), a message is read
    without its bytes unless asked, a filing's lifecycle holds only its own requests and events, and a MessageId
    names the filing of our outbound message before that of an inbound one."""
    with journal.transaction():
        for i in range(101):
            journal.insert_filing(filing(f"D-{i:03d}"), now=T0)
            journal.enqueue_message(out_msg(f"d{i}@x", None), now=T0)
            journal.record_inbound(InboundMessage(sender_party="ti", message_id=f"p{i}@eu", raw=b"x",
                                                  content_type="x"), now=T0, receipt=b"r", ack_pending=True)
            journal.record_orphan(f"p{i}@eu", "ti", now=T0, reason="r")
    assert len(journal.list_filings()) == 100 and len(journal.list_messages()) == 100
    assert len(journal.list_orphans()) == 100 and len(journal.pending_acks()) == 101
    assert len(journal.pending_acks(limit=100)) == 100
    assert journal.get_message("d0@x").sealed is None
    a, _ = journal.insert_filing(filing("LC-A"), now=T0)
    b, _ = journal.insert_filing(filing("LC-B"), now=T0)
    journal.open_request(a.id, "IE3Q01", "qa@eu", now=T0)
    journal.open_request(b.id, "IE3Q02", "qb@eu", now=T0)
    journal.record_inbound(InboundMessage(sender_party="customs", message_id="same@x", raw=b"x", content_type="x"),
                           now=T0, receipt=b"r")
    journal.attach_inbound("same@x", "customs", a.id, now=T0)
    journal.enqueue_message(out_msg("same@x", b.id), now=T0)
    assert journal.get_filing_by_message_id("same@x").id == b.id
    life = journal.lifecycle(a.id)
    assert [r["request_message_id"] for r in life["requests"]] == ["qa@eu"]
    assert {e["filing_id"] for e in life["events"]} == {a.id}


def test_timestamps_read_back_in_utc_whatever_the_hosts_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's timestamps are UTC with a Z; reading one back gives an aware UTC datetime even on a host whose
    local zone is not UTC (a gateway in a carrier's DMZ in Brussels), so deadlines computed from it do not shift."""
    import time

    from gateway.journal.timeutil import iso, parse_iso
    monkeypatch.setenv("TZ", "Europe/Brussels")
    time.tzset()
    try:
        t = parse_iso("2026-07-01T10:00:00.250Z")
        assert t.utcoffset() == timedelta(0) and t.tzinfo is timezone.utc
        assert (t.hour, t.isoformat()) == (10, "2026-07-01T10:00:00.250000+00:00")
        assert iso(t) == "2026-07-01T10:00:00.250Z"
        assert parse_iso("2026-07-01T12:00:00+02:00").isoformat() == "2026-07-01T10:00:00+00:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_unavailable_means_nothing_was_committed_unless_said_otherwise() -> None:
    """`JournalUnavailable` defaults to "before the COMMIT" (the group-commit writer may run the batch again);
    only a failure during the COMMIT itself says otherwise (its outcome is unknown)."""
    from gateway.journal.errors import JournalUnavailable
    assert JournalUnavailable("database unavailable").before_commit is True
    assert JournalUnavailable("lost during COMMIT", before_commit=False).before_commit is False


def test_sqlite_migrate_returns_what_it_applied_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    try:
        assert schema.migrate(conn, now_iso="2026-01-01T00:00:00.000Z") == [m.version for m in schema.MIGRATIONS]
        assert [m.version for m in schema.MIGRATIONS] == list(range(1, schema.LATEST + 1))
        assert schema.migrate(conn, now_iso="2026-01-01T00:00:00.000Z") == []
        conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
        with pytest.raises(schema.SchemaTooNew) as exc:
            schema.migrate(conn, now_iso="2026-01-01T00:00:00.000Z")
        assert str(exc.value) == (f"journal: schema version {schema.LATEST + 1} is newer than this ics2gw knows "
                                  f"({schema.LATEST}); upgrade ics2gw or open the journal with the version that "
                                  "wrote it")
        assert not conn.in_transaction            # rolled back: the file is left as it was
    finally:
        conn.close()


def test_sqlite_migrate_waiting_for_another_process_that_migrated_finds_nothing_to_do(tmp_path: Path) -> None:
    """Two processes open a fresh journal at once: both read version 0, one takes the write lock and migrates;
    the other, once it has the lock, reads the version again and finds it current (not "newer than known")."""
    import threading
    import time

    path = tmp_path / "race.sqlite3"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    second = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        first.execute("PRAGMA journal_mode = WAL")
        first.execute("BEGIN IMMEDIATE")                 # the first process holds the write lock, not committed
        first.execute(f"PRAGMA user_version = {schema.LATEST}")
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(_migrate_or_error(second)))
        t.start()
        time.sleep(0.5)        # let the second read version 0 and wait for the lock (if it is late, it reads LATEST)
        first.execute("COMMIT")
        t.join(30)
        assert result == [[]]
        assert schema.current_version(second) == schema.LATEST
    finally:
        first.close()
        second.close()


def _migrate_or_error(conn: sqlite3.Connection) -> object:
    try:
        return schema.migrate(conn, now_iso="2026-01-01T00:00:00.000Z")
    except Exception as exc:  # noqa: BLE001 - the test compares it
        return exc


def test_a_migration_script_splits_on_top_level_semicolons_and_keeps_a_last_statement_without_one() -> None:
    """A trigger body's inner `;` does not split it; a script whose last statement lacks its `;` still runs it."""
    script = ("CREATE TABLE a (x INTEGER);\n"
              "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = 1;\n  UPDATE a SET x = 2;\nEND;\n"
              "\n"
              "CREATE INDEX i ON a (x)\n")
    assert schema._split(script) == [
        "CREATE TABLE a (x INTEGER);",
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = 1;\n  UPDATE a SET x = 2;\nEND;",
        "CREATE INDEX i ON a (x)"]


def test_a_time_without_a_utc_offset_is_refused_like_a_naive_one() -> None:
    """A tzinfo whose utcoffset() is None makes a datetime naive in Python's sense (astimezone would read it as
    local time): the journal refuses it, as it refuses a datetime without tzinfo."""
    from datetime import tzinfo

    from gateway.journal.timeutil import iso

    class Floating(tzinfo):
        def utcoffset(self, dt: datetime | None) -> None:
            return None

        def dst(self, dt: datetime | None) -> None:
            return None

        def tzname(self, dt: datetime | None) -> None:
            return None

    for ts in (datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 3, 4, 5, tzinfo=Floating())):
        with pytest.raises(ValueError, match="naive datetime .*: the journal needs timezone-aware UTC times"):
            iso(ts)
