"""``PostgresJournal.recover_in_flight``: on PostgreSQL only sends whose lease expired return to the queue.

Other instances' sends are live on a shared database, so recovery never takes a message whose lease still runs; each
message taken back gets a ``message-recovered`` event naming the worker that held it. Real instances on a fresh
database of the test run's private server (tests/pg_support.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.journal import NewFiling, OutboundMessage
from gateway.journal.factory import open_journal
from gateway.journal.timeutil import iso
from tests.journal_backends import pg_config

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=timezone.utc)


def out(mid: str, fid: int | None) -> OutboundMessage:
    return OutboundMessage(message_id=mid, action="IE3F32", sealed=b"sealed:" + mid.encode(),
                           content_type="multipart/related", filing_id=fid, priority="B")


@pytest.fixture
def two(pg_dsn: Any) -> Any:
    cfg = pg_config(str(pg_dsn), pg_dsn.password)
    a, b = open_journal(cfg, now=T0, instance="a"), open_journal(cfg, now=T0, instance="b")
    yield a, b
    a.close()
    b.close()


def test_only_expired_leases_return_to_the_queue_with_an_event(two: Any) -> None:
    a, b = two
    f, _ = a.insert_filing(NewFiling(filer_eori="NL123456789", lrn="REC", sender_eori="NL123456789",
                                     action="IE3F32", payload_sha256="0" * 64, priority="B"), now=T0)
    for mid, fid in (("m1@x", f.id), ("m2@x", None), ("m3@x", None), ("m4@x", None), ("q@x", None)):
        a.enqueue_message(out(mid, fid), now=T0)
    # m1 and m2: worker "a", lease until T0+5 s; m3: worker "b", lease until T0+10 s (exactly the recovery time);
    # m4: worker "b", lease until T0+60 s (live); q@x stays queued (claimed by nobody: not due before T0+1 h)
    a._x("UPDATE messages SET next_attempt_at = ? WHERE message_id = 'q@x'", (iso(T0 + timedelta(hours=1)),))
    assert [m.message_id for m in a.claim_due_messages(now=T0, worker="a", limit=2, lease_seconds=5)] == \
        ["m1@x", "m2@x"]
    assert [m.message_id for m in b.claim_due_messages(now=T0, worker="b", limit=1, lease_seconds=10)] == ["m3@x"]
    assert [m.message_id for m in b.claim_due_messages(now=T0, worker="b", limit=1, lease_seconds=60)] == ["m4@x"]
    before = {e.id for e in a.events()}

    now = T0 + timedelta(seconds=10)
    assert b.recover_in_flight(now=now) == 3            # m1, m2 (expired) and m3 (expires exactly now)

    ts = iso(now)
    for mid in ("m1@x", "m2@x", "m3@x"):
        m = a.get_message(mid)
        assert m is not None
        assert (m.state, m.claimed_by, m.claim_expires_at, m.next_attempt_at, m.updated_at) == \
            ("queued", None, None, ts, ts), mid
        assert m.attempts == 1                           # recovery is not an attempt
    live = a.get_message("m4@x")
    assert live is not None
    assert (live.state, live.claimed_by, live.claim_expires_at) == ("sending", "b", iso(T0 + timedelta(seconds=60)))
    queued = a.get_message("q@x")
    assert queued is not None and (queued.state, queued.claimed_by) == ("queued", None)

    new = sorted((e for e in a.events() if e.id not in before), key=lambda e: e.message_id or "")
    assert [(e.event, e.at, e.filing_id, e.message_id, e.detail) for e in new] == [
        ("message-recovered", ts, f.id, "m1@x", {"was_claimed_by": "a", "lease_expired": True}),
        ("message-recovered", ts, None, "m2@x", {"was_claimed_by": "a", "lease_expired": True}),
        ("message-recovered", ts, None, "m3@x", {"was_claimed_by": "b", "lease_expired": True}),
    ]
    # the recovered messages are due again at once; the live lease is not offered to anyone
    taken = a.claim_due_messages(now=now, worker="a", limit=10, lease_seconds=5)
    assert sorted(m.message_id for m in taken) == ["m1@x", "m2@x", "m3@x"]
    assert a.recover_in_flight(now=now) == 0            # nothing expired any more: no rows, no events
    assert len([e for e in a.events() if e.id not in before and e.event == "message-recovered"]) == 3


def test_nothing_to_recover_changes_nothing(two: Any) -> None:
    a, b = two
    a.enqueue_message(out("live@x", None), now=T0)
    [m] = a.claim_due_messages(now=T0, worker="a", lease_seconds=300)
    events = len(a.events())
    assert b.recover_in_flight(now=T0 + timedelta(seconds=299)) == 0
    again = a.get_message("live@x")
    assert again is not None and (again.state, again.claimed_by, again.claim_expires_at, again.updated_at) == \
        ("sending", "a", m.claim_expires_at, m.updated_at)
    assert len(a.events()) == events
