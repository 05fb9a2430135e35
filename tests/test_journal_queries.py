"""gateway/journal/queries.py and the ``to_dict`` of gateway/journal/records.py, in-process and exactly.

The daemon tests exercise these through /health, /metrics and the status page in a subprocess; here each query is
asked on a real journal of each backend (SQLite and the private PostgreSQL server of tests/pg_support.py) whose
content the test wrote, and the answer is compared whole: counts, ordering, limits at their boundary, the keyset
cursor, the three kinds of search, the per-hour buckets, the timeline, and each record's dictionary.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.journal import InboundMessage, NewFiling, OutboundMessage, SqliteJournal
from gateway.journal.errors import JournalError, NotFound
from gateway.journal.queries import FilingsPage, JournalQueries, LaneStats, decode_cursor, encode_cursor
from gateway.journal.records import Message
from gateway.journal.states import FILING_STATES
from gateway.journal.timeutil import iso
from tests.journal_backends import backend, jcfg, open_any  # noqa: F401 - fixtures

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
FILER = "NL123456789"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def new_filing(lrn: str, priority: str = "B", filer: str = FILER) -> NewFiling:
    return NewFiling(filer_eori=filer, lrn=lrn, sender_eori=filer, action="IE3F32",
                     payload_sha256=hashlib.sha256(lrn.encode()).hexdigest(), priority=priority)


def out_msg(mid: str, filing_id: int | None = None, priority: str = "B", action: str | None = "IE3F32",
            kind: str = "user-message") -> OutboundMessage:
    return OutboundMessage(message_id=mid, action=action, sealed=b"sealed:" + mid.encode(),
                           content_type="multipart/related", filing_id=filing_id, priority=priority, kind=kind)


def in_msg(mid: str, action: str | None = "IE3R01", sender: str = "sti-taxud",
           ref: str | None = None) -> InboundMessage:
    return InboundMessage(sender_party=sender, message_id=mid, raw=b"<in/>", content_type="application/xml",
                          action=action, ref_to_message_id=ref)


def to_do_not_load(j: Any, fid: int, when: dt.datetime) -> None:
    for s in ("queued", "registered", "do-not-load"):
        j.transition(fid, s, now=when)


@pytest.fixture
def jq(open_any: Any, jcfg: Any) -> Any:
    """(writer journal, a function opening the queries over a read-only reader of the same journal)."""
    from gateway.journal.factory import open_reader
    j = open_any(now=T0)
    readers: list[Any] = []

    def queries(**kw: Any) -> JournalQueries:
        reader = open_reader(jcfg)
        readers.append(reader)
        if kw:
            return JournalQueries(reader.path if jcfg.backend == "sqlite" else reader, **kw)
        return reader.queries()

    yield j, queries
    for r in readers:
        r.close()


# ------------------------------------------------------------------------------------------------- records
def test_record_dicts_have_exactly_their_keys_and_values(jq: Any) -> None:
    j, _ = jq
    f, _ = j.insert_filing(new_filing("LRN-R"), now=at(0))
    f = j.update_filing(f.id, now=at(1), mrn="26NL00000000000R1")
    d = f.to_dict()
    assert d == {**{k.name: getattr(f, k.name) for k in dataclasses.fields(f)},
                 "updated": iso(at(1)), "created": iso(at(0))}
    assert d["mrn"] == "26NL00000000000R1" and d["updated_at"] == iso(at(1)) and d["created_at"] == iso(at(0))

    j.enqueue_message(out_msg("m-r@ap", f.id), now=at(2))
    m = j.get_message("m-r@ap", with_bytes=True)
    fields = [k.name for k in dataclasses.fields(Message)]
    plain = m.to_dict()
    assert list(plain) == [k for k in fields if k not in ("sealed", "receipt")]
    assert plain == {k: getattr(m, k) for k in fields if k not in ("sealed", "receipt")}
    assert m.to_dict(with_bytes=False) == plain
    full = m.to_dict(with_bytes=True)
    assert list(full) == fields and full["sealed"] == b"sealed:m-r@ap" and full["receipt"] is None

    j.record_inbound(in_msg("orph-r@customs"), now=at(3), receipt=b"rcpt")
    o = j.record_orphan("orph-r@customs", "sti-taxud", now=at(4), reason="no filing has this LRN")
    assert o.to_dict() == {"id": o.id, "reason": "no filing has this LRN", "created": iso(at(4)), "resolved": None,
                           "resolution": None, "message": o.message.to_dict()}
    assert "sealed" not in o.to_dict()["message"] and o.to_dict()["message"]["message_id"] == "orph-r@customs"
    r = j.resolve_orphan(o.id, now=at(5), resolution="an operator looked")
    assert r.to_dict() == {"id": o.id, "reason": "no filing has this LRN", "created": iso(at(4)),
                           "resolved": iso(at(5)), "resolution": "an operator looked",
                           "message": r.message.to_dict()}

    req = j.open_request(f.id, "IE3Q02", "q2@customs", now=at(6))
    assert req.to_dict() == {"id": req.id, "filing_id": f.id, "kind": "IE3Q02", "request_message_id": "q2@customs",
                             "state": "open", "answer_message_id": None, "opened_at": iso(at(6)),
                             "updated_at": iso(at(6))}
    [ev] = [e for e in j.events(filing_id=f.id) if e.event == "request-opened"]
    assert ev.to_dict() == {"id": ev.id, "at": iso(at(6)), "filing_id": f.id, "message_id": "q2@customs",
                            "event": "request-opened", "detail": {"kind": "IE3Q02"}}

    st, new = j.pause_endpoint("sti", "GW1", now=at(7), reason="EBMS:0004 A001", message_id="m-r@ap")
    assert new and st.to_dict() == {"endpoint": "sti", "party_id": "GW1", "paused_at": iso(at(7)),
                                    "pause_reason": "EBMS:0004 A001", "pause_message_id": "m-r@ap",
                                    "resumed_at": None, "resumed_by": None, "last_ok_at": None,
                                    "failing_since": None, "outage_alerted_at": None, "updated_at": iso(at(7)),
                                    "paused": True}
    [st] = j.resume_endpoint("sti", "GW1", now=at(8), by="ops")
    assert st.to_dict() == {"endpoint": "sti", "party_id": "GW1", "paused_at": None,
                            "pause_reason": "EBMS:0004 A001", "pause_message_id": "m-r@ap",
                            "resumed_at": iso(at(8)), "resumed_by": "ops", "last_ok_at": None,
                            "failing_since": None, "outage_alerted_at": None, "updated_at": iso(at(8)),
                            "paused": False}


# ------------------------------------------------------------------------------------------------- lanes
def test_oldest_age_seconds_is_now_minus_oldest_never_negative() -> None:
    assert LaneStats("A", 0, 0, None).oldest_age_seconds(T0) == 0.0
    lane = LaneStats("A", 1, 0, iso(T0))
    assert lane.oldest_age_seconds(at(0.25)) == 0.25
    assert lane.oldest_age_seconds(at(90.5)) == 90.5
    assert lane.oldest_age_seconds(T0) == 0.0
    assert lane.oldest_age_seconds(at(-30)) == 0.0     # a clock behind the journal: 0, not negative


def test_lanes_count_queued_and_sending_outbound_per_priority(jq: Any) -> None:
    j, queries = jq
    for i, p in enumerate("AAABBB"):
        j.enqueue_message(out_msg(f"m{i}@ap", priority=p), now=at(1 + i))
    assert len(j.claim_due_messages(now=at(10), worker="w", limit=2, priorities=["B"])) == 2   # m3, m4
    assert [m.message_id for m in j.claim_due_messages(now=at(10), worker="w", limit=1, priorities=["A"])] == \
        ["m0@ap"]
    j.record_receipt("m3@ap", worker="w", now=at(11), outcome="receipt-ok", receipt=b"r")  # receipted: not counted
    j.record_inbound(in_msg("in-1@customs"), now=at(0), receipt=b"r")                     # inbound: not counted
    lanes = queries().lanes()
    assert lanes == {"A": LaneStats("A", 2, 1, iso(at(2))), "B": LaneStats("B", 1, 1, iso(at(6))),
                     "C": LaneStats("C", 0, 0, None)}
    assert list(lanes) == ["A", "B", "C"]
    assert lanes["A"].oldest_age_seconds(at(62)) == 60.0 and lanes["C"].oldest_age_seconds(at(62)) == 0.0


# ------------------------------------------------------------------------------------------------- requests
def test_open_requests_most_urgent_kind_first_oldest_first_and_limit(jq: Any) -> None:
    j, queries = jq
    f1, _ = j.insert_filing(new_filing("LRN-Q1", priority="A"), now=at(0))
    f2, _ = j.insert_filing(new_filing("LRN-Q2", priority="C"), now=at(0))
    j.update_filing(f1.id, now=at(0), mrn="26NL0000000000Q1")
    # opened out of order: the query orders them
    j.open_request(f2.id, "IE3Q02", "q02-b", now=at(9))
    j.open_request(f1.id, "IE3Q03", "q03-b", now=at(8))
    j.open_request(f1.id, "IE3Q01", "q01-b", now=at(7))
    j.open_request(f2.id, "IE3Q02", "q02-a", now=at(6))
    j.open_request(f2.id, "IE3Q03", "q03-a", now=at(5))
    r = j.open_request(f1.id, "IE3Q01", "q01-a", now=at(4))
    closed = j.open_request(f1.id, "IE3Q01", "q01-closed", now=at(1))
    j.close_request(closed.id, now=at(2), answer_message_id="ans")
    q = queries()
    rows = q.open_requests()
    assert [x["request_message_id"] for x in rows] == ["q01-a", "q01-b", "q03-a", "q03-b", "q02-a", "q02-b"]
    assert rows[0] == {"id": r.id, "kind": "IE3Q01", "request_message_id": "q01-a", "opened_at": iso(at(4)),
                       "filing_id": f1.id, "lrn": "LRN-Q1", "mrn": "26NL0000000000Q1", "filer_eori": FILER,
                       "priority": "A", "state": "received"}
    for n, want in ((1, ["q01-a"]), (2, ["q01-a", "q01-b"]), (3, ["q01-a", "q01-b", "q03-a"]),
                    (5, ["q01-a", "q01-b", "q03-a", "q03-b", "q02-a"])):
        assert [x["request_message_id"] for x in q.open_requests(limit=n)] == want, n
    assert q.open_request_counts() == {"IE3Q01": 2, "IE3Q02": 2, "IE3Q03": 2}
    j.close_request(r.id, now=at(20), state="closed")
    assert q.open_request_counts() == {"IE3Q01": 1, "IE3Q02": 2, "IE3Q03": 2}


def test_open_request_counts_zero_for_every_kind_without_requests(jq: Any) -> None:
    j, queries = jq
    f, _ = j.insert_filing(new_filing("LRN-Z"), now=at(0))
    assert queries().open_request_counts() == {"IE3Q01": 0, "IE3Q02": 0, "IE3Q03": 0}
    j.open_request(f.id, "IE3Q03", "q3", now=at(1))
    assert queries().open_request_counts() == {"IE3Q01": 0, "IE3Q02": 0, "IE3Q03": 1}


# ------------------------------------------------------------------------------------------------- orphans, do-not-load
def test_orphans_newest_first_unresolved_only_with_limit(jq: Any) -> None:
    j, queries = jq
    ids = []
    for i in range(4):
        j.record_inbound(InboundMessage(sender_party="sti-taxud", message_id=f"o{i}@customs", raw=b"<x/>",
                                        content_type="application/xml", action="IE3R01",
                                        functional_reference=f"LRN-O{i}"), now=at(i), receipt=b"r")
        ids.append(j.record_orphan(f"o{i}@customs", "sti-taxud", now=at(10 + i), reason=f"reason {i}").id)
    j.resolve_orphan(ids[1], now=at(30), resolution="handled")
    q = queries()
    rows = q.orphans()
    assert rows == [{"id": ids[i], "reason": f"reason {i}", "created_at": iso(at(10 + i)),
                     "message_id": f"o{i}@customs", "action": "IE3R01", "sender_party": "sti-taxud",
                     "functional_reference": f"LRN-O{i}"} for i in (3, 2, 0)]
    assert [r["id"] for r in q.orphans(limit=2)] == [ids[3], ids[2]]
    assert q.orphans_open() == 3
    j.resolve_orphan(ids[3], now=at(31), resolution="handled")
    assert q.orphans_open() == 2 and [r["id"] for r in q.orphans()] == [ids[2], ids[0]]


def test_do_not_load_newest_change_first_with_limit(jq: Any) -> None:
    j, queries = jq
    fids = []
    for i in range(4):
        f, _ = j.insert_filing(new_filing(f"LRN-D{i}"), now=at(i))
        fids.append(f.id)
    to_do_not_load(j, fids[0], at(50))
    to_do_not_load(j, fids[1], at(50))     # same updated_at as fids[0]: the higher id first
    to_do_not_load(j, fids[2], at(40))
    j.transition(fids[3], "queued", now=at(60))   # not do-not-load
    q = queries()
    rows = q.do_not_load()
    assert [r["id"] for r in rows] == [fids[1], fids[0], fids[2]]
    assert rows[0] == {"id": fids[1], "filer_eori": FILER, "lrn": "LRN-D1", "action": "IE3F32",
                       "state": "do-not-load", "mrn": None, "priority": "B", "endpoint": None, "last_error": None,
                       "created_at": iso(at(1)), "updated_at": iso(at(50))}
    assert [r["id"] for r in q.do_not_load(limit=2)] == [fids[1], fids[0]]
    assert [r["id"] for r in q.do_not_load(limit=1)] == [fids[1]]


# ------------------------------------------------------------------------------------------------- counts
def test_counts_by_state_every_state_and_the_short_cache(jq: Any) -> None:
    j, queries = jq
    for i in range(3):
        f, _ = j.insert_filing(new_filing(f"LRN-C{i}"), now=at(i))
        if i:
            j.transition(f.id, "queued", now=at(i))
    q = queries(counts_ttl_seconds=3600)
    want = {s: 0 for s in FILING_STATES} | {"received": 1, "queued": 2}
    counts = q.counts_by_state()
    assert counts == want and list(counts) == list(FILING_STATES)
    counts["received"] = 99                       # a copy: the cache is not the caller's
    j.insert_filing(new_filing("LRN-C9"), now=at(9))
    assert q.counts_by_state() == want            # within the time to live: the cached counts
    fresh = want | {"received": 2}
    assert q.counts_by_state(fresh=True) == fresh
    assert q.counts_by_state() == fresh           # fresh=True refreshed the cache
    assert queries(counts_ttl_seconds=0).counts_by_state() == fresh


# ------------------------------------------------------------------------------------------------- per hour
def test_created_per_hour_buckets_from_since(jq: Any) -> None:
    j, queries = jq
    since = T0
    plan = [(-0.001, "received"), (0, "received"), (1, "queued"), (1799, "queued"), (3599.999, "received"),
            (3600, "received"), (3601, "queued"), (7200, "received"), (24 * 3600 - 1, "received"),
            (24 * 3600, "queued"), (744 * 3600 - 1, "received"), (744 * 3600, "received")]
    for n, (sec, state) in enumerate(plan):
        f, _ = j.insert_filing(new_filing(f"LRN-H{n}"), now=at(sec))
        if state == "queued":
            j.transition(f.id, "queued", now=at(sec))
    q = queries()

    def norm(rows: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
        # hours in order; within an hour the states come in the database's GROUP BY order
        hours = [r["hour"] for r in rows]
        assert hours == sorted(hours)
        assert all(set(r) == {"hour", "state", "n"} for r in rows)
        return sorted((r["hour"], r["state"], r["n"]) for r in rows)

    assert norm(q.created_per_hour(since, hours=1)) == [("2026-11-01T12", "queued", 2),
                                                         ("2026-11-01T12", "received", 2)]
    assert norm(q.created_per_hour(since, hours=0)) == norm(q.created_per_hour(since, hours=1))   # at least one
    assert norm(q.created_per_hour(since, hours=3)) == [
        ("2026-11-01T12", "queued", 2), ("2026-11-01T12", "received", 2),
        ("2026-11-01T13", "queued", 1), ("2026-11-01T13", "received", 1),
        ("2026-11-01T14", "received", 1)]
    day = q.created_per_hour(since)                    # 24 hours by default: up to 2026-11-02T11
    assert norm(day)[-1] == ("2026-11-02T11", "received", 1) and len(day) == 6
    later = q.created_per_hour(since + dt.timedelta(hours=24), hours=2)
    assert norm(later) == [("2026-11-02T12", "queued", 1)]
    # at most 31 days of hours: the filing of hour 744 is outside, the one of hour 743 inside
    month = norm(q.created_per_hour(since, hours=10_000))
    assert month[-1] == ("2026-12-02T11", "received", 1) and len(month) == 8
    assert norm(q.created_per_hour(since - dt.timedelta(hours=1), hours=1)) == [("2026-11-01T11", "received", 1)]


# ------------------------------------------------------------------------------------------------- filings pages
def _many(j: Any, n: int) -> list[int]:
    """``n`` filings, filing i last changed at T0 + i s (two share each second from i = 10: the id breaks ties)."""
    ids = []
    with j.transaction():
        for i in range(n):
            f, _ = j.insert_filing(new_filing(f"LRN-P{i:04d}", priority="ABC"[i % 3]), now=at(i if i < 10 else
                                                                                              10 + (i - 10) // 2))
            ids.append(f.id)
    return ids


def test_filings_pages_newest_change_first_cursor_and_limits(jq: Any) -> None:
    j, queries = jq
    ids = _many(j, 503)
    q = queries()
    newest = sorted(ids, key=lambda i: (j.get_filing(i).updated_at, i), reverse=True)
    assert [r["id"] for r in q.filings().rows] == newest[:50]                 # 50 by default
    first = q.filings(limit=3)
    assert [r["id"] for r in first.rows] == newest[:3] and first.search is None
    last = first.rows[-1]
    assert first.next_cursor == encode_cursor(last["updated_at"], last["id"]) == f"{last['updated_at']}~{last['id']}"
    assert decode_cursor(first.next_cursor) == (last["updated_at"], last["id"])
    second = q.filings(limit=3, cursor=first.next_cursor)
    assert [r["id"] for r in second.rows] == newest[3:6]
    assert set(first.rows[0]) == {"id", "filer_eori", "lrn", "action", "state", "mrn", "priority", "endpoint",
                                  "last_error", "created_at", "updated_at"}
    assert [r["id"] for r in q.filings(limit=0).rows] == newest[:1]         # at least one
    assert [r["id"] for r in q.filings(limit=-5).rows] == newest[:1]
    big = q.filings(limit=501)                                                # at most 500
    assert [r["id"] for r in big.rows] == newest[:500]
    assert big.next_cursor == encode_cursor(big.rows[-1]["updated_at"], big.rows[-1]["id"])
    rest = q.filings(limit=500, cursor=big.next_cursor)
    assert [r["id"] for r in rest.rows] == newest[500:] and rest.next_cursor is None
    # a page that ends exactly at the last filing has no next cursor; one row fewer has one
    exact = q.filings(limit=3, cursor=q.filings(limit=500).next_cursor)
    assert [r["id"] for r in exact.rows] == newest[500:] and exact.next_cursor is None
    short = q.filings(limit=2, cursor=big.next_cursor)
    assert [r["id"] for r in short.rows] == newest[500:502]
    assert short.next_cursor == encode_cursor(short.rows[-1]["updated_at"], short.rows[-1]["id"])


def test_filings_state_filter_with_cursor(jq: Any) -> None:
    j, queries = jq
    ids = _many(j, 12)
    for i in (2, 5, 7, 11):
        j.transition(ids[i], "queued", now=at(100 + i))
    q = queries()
    page = q.filings(state="queued", limit=2)
    assert [r["id"] for r in page.rows] == [ids[11], ids[7]] and page.next_cursor is not None
    page2 = q.filings(state="queued", limit=2, cursor=page.next_cursor)
    assert [r["id"] for r in page2.rows] == [ids[5], ids[2]] and page2.next_cursor is None
    assert [r["id"] for r in q.filings(state="received", limit=500).rows] == \
        [ids[i] for i in (10, 9, 8, 6, 4, 3, 1, 0)]
    assert q.filings(state="do-not-load").rows == [] and q.filings(state="do-not-load").next_cursor is None
    with pytest.raises(ValueError, match=r"^unknown state 'nope'$"):
        q.filings(state="nope")


def test_decode_cursor_accepts_only_its_own_cursors() -> None:
    assert decode_cursor(encode_cursor("2026-11-01T12:00:00.000Z", 42)) == ("2026-11-01T12:00:00.000Z", 42)
    forty = "2026-11-01T12:00:00.0000+00:00:00.000000"     # 40 characters that parse: the longest accepted
    assert len(forty) == 40 and decode_cursor(f"{forty}~7") == (forty, 7)
    bad = ["2026-11-01T12:00:00.00000+00:00:00.000000~7",    # 41 characters
           "12", "2026-11-01T12:00:00.000Z~", "2026-11-01T12:00:00.000Z~x", "2026-11-01T12:00:00.000Z12",
           "2026-11-01T12:00:00.000Z~-1"]
    for cursor in bad:
        with pytest.raises(ValueError, match=r"^not a page cursor: "):
            decode_cursor(cursor)
    long = "x" * 70 + "~1"
    with pytest.raises(ValueError) as e:
        decode_cursor(long)
    assert str(e.value) == f"not a page cursor: {'x' * 60!r}"
    with pytest.raises(ValueError):
        decode_cursor("not-a-time~1")


# ------------------------------------------------------------------------------------------------- search
def test_search_by_message_id_mrn_and_lrn(jq: Any, backend: str) -> None:
    j, queries = jq
    a, _ = j.insert_filing(new_filing("ABC-1"), now=at(0))
    b, _ = j.insert_filing(new_filing("ABC-2"), now=at(1))
    c, _ = j.insert_filing(new_filing("ABD-1"), now=at(2))
    d, _ = j.insert_filing(new_filing("26NL-LRN", filer="DE999"), now=at(3))
    j.update_filing(b.id, now=at(4), mrn="26NL0000000000000B")
    j.update_filing(c.id, now=at(5), mrn="26NL0000000000000C")
    j.transition(a.id, "queued", now=at(6))
    j.enqueue_message(out_msg("shared-id@x", a.id), now=at(7))
    # an inbound message with the same MessageId, attached to the same filing: one row, not two
    j.record_inbound(in_msg("shared-id@x"), now=at(8), receipt=b"r")
    j.attach_inbound("shared-id@x", "sti-taxud", a.id, now=at(9))
    j.record_inbound(in_msg("in-only@customs"), now=at(10), receipt=b"r")
    j.attach_inbound("in-only@customs", "sti-taxud", c.id, now=at(11))
    q = queries()

    def ids(page: FilingsPage) -> list[int]:
        return [r["id"] for r in page.rows]

    page = q.filings(search="shared-id@x")
    assert (ids(page), page.search, page.next_cursor) == ([a.id], "message-id", None)
    assert page.rows[0] == {"id": a.id, "filer_eori": FILER, "lrn": "ABC-1", "action": "IE3F32", "state": "queued",
                            "mrn": None, "priority": "B", "endpoint": None, "last_error": None,
                            "created_at": iso(at(0)), "updated_at": iso(at(6))}
    page = q.filings(search="  in-only@customs ")          # inbound MessageIds too; the text is stripped
    assert (ids(page), page.search) == ([c.id], "message-id")
    assert q.filings(search="shared-id@x", state="received").rows == []
    assert ids(q.filings(search="shared-id@x", state="queued")) == [a.id]
    # MRN prefix, ordered by MRN, before any LRN
    page = q.filings(search="26NL")
    assert (ids(page), page.search) == ([b.id, c.id], "mrn")
    assert ids(q.filings(search="26NL", limit=1)) == [b.id]
    assert ids(q.filings(search="26NL", state="received")) == [b.id, c.id]
    page = q.filings(search="26NL", state="queued")   # no MRN match in that state, and no LRN either
    assert (page.rows, page.search) == ([], None)
    # LRN prefix, ordered by LRN then id
    page = q.filings(search="AB")
    assert (ids(page), page.search, page.next_cursor) == ([a.id, b.id, c.id], "lrn", None)
    assert ids(q.filings(search="ABC")) == [a.id, b.id] and ids(q.filings(search="AB", limit=2)) == [a.id, b.id]
    assert ids(q.filings(search="AB", state="received")) == [b.id, c.id]
    page = q.filings(search="26NL-")                        # the LRN "26NL-LRN" (no MRN has that prefix)
    assert (ids(page), page.search) == ([d.id], "lrn")
    page = q.filings(search="zzz")
    assert page == FilingsPage([], None, None)
    assert ids(q.filings(search="   ")) == ids(q.filings())          # blank: no search
    assert q.filings(search="   ").search is None
    # the length limit: 200 characters are searched, 201 refused
    assert q.filings(search="x" * 200) == FilingsPage([], None, None)
    with pytest.raises(ValueError, match=r"^search text longer than 200 characters$"):
        q.filings(search="x" * 201)


def test_search_prefix_includes_the_highest_code_point_on_postgresql(jq: Any, backend: str) -> None:
    """PostgreSQL searches a prefix with starts_with(): an LRN whose next character is U+10FFFF starts with the
    text. (SQLite's index range ``>= text AND < text || U+10FFFF`` leaves exactly those out; not an LRN
    anyone files.)"""
    j, queries = jq
    f, _ = j.insert_filing(new_filing("TOP\U0010ffffA"), now=at(0))
    page = queries().filings(search="TOP")
    if backend == "postgresql":
        assert ([r["id"] for r in page.rows], page.search) == ([f.id], "lrn")
    else:
        assert page == FilingsPage([], None, None)


# ------------------------------------------------------------------------------------------------- one filing
def test_timeline_lists_messages_signals_requests_and_events_in_time_order(jq: Any) -> None:
    j, queries = jq
    f, _ = j.insert_filing(new_filing("LRN-T"), now=at(0))
    j.transition(f.id, "queued", now=at(0))
    j.enqueue_message(out_msg("m1@ap", f.id), now=at(1))
    j.claim_due_messages(now=at(1), worker="w")
    j.record_receipt("m1@ap", worker="w", now=at(3), outcome="receipt-ok", receipt=b"<receipt/>")
    j.set_business_outcome("m1@ap", "IE3R01", now=at(3))   # m1's updated_at (its signal's time) stays at(3)
    j.enqueue_message(out_msg("m2@ap", f.id, action=None, kind="ping"), now=at(3))   # same time as m1's receipt
    j.claim_due_messages(now=at(3), worker="w")
    j.fail_message("m2@ap", worker="w", now=at(4), error="EBMS:0004", receipt=b"<error/>")
    j.enqueue_message(out_msg("m3@ap", f.id), now=at(5))
    j.claim_due_messages(now=at(5), worker="w")
    # a retry after an error signal: the signal is kept, without a receipt outcome
    j.schedule_retry("m3@ap", worker="w", now=at(6), next_attempt_at=at(60), error="timeout", receipt=b"<err/>")
    j.record_inbound(in_msg("in1@customs", ref="m1@ap"), now=at(7), receipt=b"<our-receipt/>")
    j.attach_inbound("in1@customs", "sti-taxud", f.id, now=at(8))
    r1 = j.open_request(f.id, "IE3Q02", "q2@customs", now=at(9))
    j.close_request(r1.id, now=at(10), answer_message_id="ans@ap")
    j.open_request(f.id, "IE3Q03", "q3@customs", now=at(11))
    j.append_event("note", now=at(12), filing_id=f.id, detail={"z": 1, "a": "x" * 400})
    q = queries()
    t = q.timeline(f.id)
    life = q.lifecycle(f.id)
    assert t["filing"] == life["filing"] and t["messages"] == life["messages"] and t["requests"] == life["requests"]
    assert t["filing"]["lrn"] == "LRN-T" and [m["message_id"] for m in t["messages"]] == \
        ["m1@ap", "m2@ap", "m3@ap", "in1@customs"]
    assert set(t) == {"filing", "entries", "messages", "requests"}
    entries = t["entries"]
    not_events = [e for e in entries if e["kind"] != "event"]
    assert not_events == [
        {"at": iso(at(1)), "kind": "message", "direction": "out", "action": "IE3F32", "message_id": "m1@ap",
         "what": "queued IE3F32", "state": "receipted", "detail": "IE3R01"},
        # m2 was queued at the moment m1's receipt came: the message first, then the signal
        {"at": iso(at(3)), "kind": "message", "direction": "out", "action": "ping", "message_id": "m2@ap",
         "what": "queued ping", "state": "failed", "detail": "EBMS:0004"},
        {"at": iso(at(3)), "kind": "signal", "direction": "in", "action": "Receipt", "message_id": "m1@ap",
         "what": "receipt received", "state": "receipt-ok", "detail": ""},
        {"at": iso(at(4)), "kind": "signal", "direction": "in", "action": "Error", "message_id": "m2@ap",
         "what": "signal received", "state": "EBMS:0004", "detail": ""},
        {"at": iso(at(5)), "kind": "message", "direction": "out", "action": "IE3F32", "message_id": "m3@ap",
         "what": "queued IE3F32", "state": "queued", "detail": "timeout"},
        {"at": iso(at(6)), "kind": "signal", "direction": "in", "action": "Error", "message_id": "m3@ap",
         "what": "signal received", "state": "", "detail": ""},
        {"at": iso(at(7)), "kind": "message", "direction": "in", "action": "IE3R01", "message_id": "in1@customs",
         "what": "received IE3R01", "state": "processed", "detail": ""},
        {"at": iso(at(8)), "kind": "signal", "direction": "out", "action": "Receipt", "message_id": "in1@customs",
         "what": "receipt returned", "state": "receipt-returned", "detail": ""},
        {"at": iso(at(9)), "kind": "request", "direction": "in", "action": "IE3Q02", "message_id": "q2@customs",
         "what": "IE3Q02 answered", "state": "answered", "detail": "ans@ap"},
        {"at": iso(at(11)), "kind": "request", "direction": "in", "action": "IE3Q03", "message_id": "q3@customs",
         "what": "IE3Q03 open", "state": "open", "detail": ""},
    ]
    events = [e for e in entries if e["kind"] == "event"]
    assert [(e["at"], e["action"], e["what"], e["message_id"]) for e in events] == \
        [(e["at"], e["event"], e["event"], e["message_id"] or "") for e in life["events"]]
    assert all(e["direction"] == "" and e["state"] == "" for e in events)
    [note] = [e for e in events if e["action"] == "note"]
    assert note["detail"] == ("a=" + "x" * 400 + ", z=1")[:300] and len(note["detail"]) == 300
    assert note["message_id"] == ""
    [queued] = [e for e in events if e["action"] == "message-queued" and e["message_id"] == "m1@ap"]
    assert queued["detail"] == "action=IE3F32, bytes=12, endpoint=None, kind=user-message, priority=B"
    # time order; at the same instant: message, signal, request, event
    rank = {"message": 0, "signal": 1, "request": 2, "event": 3}
    assert [(e["at"], rank[e["kind"]]) for e in entries] == sorted((e["at"], rank[e["kind"]]) for e in entries)
    # (at(3): m1 receipted and answered, m2 queued and claimed: four events)
    assert [e["kind"] for e in entries if e["at"] == iso(at(3))] == ["message", "signal"] + ["event"] * 4
    assert [e["kind"] for e in entries if e["at"] == iso(at(9))] == ["request", "event"]


def test_evidence_and_lifecycle_are_the_readers(jq: Any) -> None:
    j, queries = jq
    f, _ = j.insert_filing(new_filing("LRN-E"), now=at(0))
    other, _ = j.insert_filing(new_filing("LRN-E2"), now=at(0))
    j.enqueue_message(out_msg("e1@ap", f.id), now=at(1))
    j.enqueue_message(out_msg("e2@ap", other.id), now=at(1))
    q = queries()
    items = q.evidence(f.id)
    assert [(i.kind, i.message_id, i.data) for i in items] == [("sealed-message", "e1@ap", b"sealed:e1@ap")]
    assert q.lifecycle(f.id)["filing"]["lrn"] == "LRN-E"
    with pytest.raises(NotFound):
        q.lifecycle(99999)


# ------------------------------------------------------------------------------------------------- opening
def test_opening_by_path_or_by_reader(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with pytest.raises(NotFound, match=r"no journal here \(check \[journal\] path\)$"):
        JournalQueries(path)
    with SqliteJournal.open(path, now=T0) as j:
        j.insert_filing(new_filing("LRN-O"), now=at(0))
    q = JournalQueries(str(path))
    assert q.path == path and q.counts_by_state()["received"] == 1
    q.close()
    reader = SqliteJournal.open_reader(path)
    q = JournalQueries(reader)
    assert q.path == path and q.filings().rows[0]["lrn"] == "LRN-O"
    q.close()                                        # the reader stays the caller's
    assert reader.get_filing_by_key(FILER, "LRN-O") is not None
    reader.close()
    con = sqlite3.connect(path)
    con.execute("DROP TABLE filing_state_counts")
    con.commit()
    con.close()
    with pytest.raises(JournalError) as e:
        JournalQueries(path)
    assert str(e.value) == (f"{path}: the journal lacks the operations read paths (the filing_state_counts "
                            "migration); start the daemon of this version once to migrate it")


def test_default_limits_of_the_lists(jq: Any) -> None:
    """The status page's lists without a limit: 50 do-not-load filings, 100 orphans, 200 open requests."""
    j, queries = jq
    with j.transaction():
        for i in range(201):
            f, _ = j.insert_filing(new_filing(f"LRN-L{i:03d}"), now=at(i))
            j.open_request(f.id, "IE3Q02", f"q-{i:03d}", now=at(i))
            if i < 51:
                to_do_not_load(j, f.id, at(1000 + i))
            if i < 101:
                j.record_inbound(in_msg(f"o-{i:03d}@customs"), now=at(i), receipt=b"r")
                j.record_orphan(f"o-{i:03d}@customs", "sti-taxud", now=at(i), reason="none")
    q = queries()
    dnl = q.do_not_load()
    assert len(dnl) == 50 and [r["lrn"] for r in dnl] == [f"LRN-L{i:03d}" for i in range(50, 0, -1)]
    orphans = q.orphans()
    assert len(orphans) == 100 and [r["message_id"] for r in orphans] == \
        [f"o-{i:03d}@customs" for i in range(100, 0, -1)]
    reqs = q.open_requests()
    assert len(reqs) == 200 and [r["request_message_id"] for r in reqs] == [f"q-{i:03d}" for i in range(200)]
    assert q.open_request_counts() == {"IE3Q01": 0, "IE3Q02": 201, "IE3Q03": 0} and q.orphans_open() == 101
