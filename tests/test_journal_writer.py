"""Group commit: batching, acknowledgement after commit, per-caller failure isolation, and a SIGKILL crash test."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.journal import InvalidTransition, JournalWriter, NewFiling, SqliteJournal

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parent.parent


def nf(lrn: str) -> NewFiling:
    return NewFiling(filer_eori="NL123456789", lrn=lrn, sender_eori="NL123456789", action="IE3F32",
                     payload_sha256=hashlib.sha256(lrn.encode()).hexdigest())


@pytest.fixture
def journal(tmp_path: Path):
    j = SqliteJournal.open(tmp_path / "j.sqlite3", now=T0)
    yield j
    j.close()


async def test_concurrent_changes_share_commits(journal: SqliteJournal) -> None:
    n = 1000
    before = journal.commits
    async with JournalWriter(journal, max_batch=512) as writer:
        results = await asyncio.gather(*(writer.submit(lambda j, i=i: j.insert_filing(nf(f"L{i}"), now=T0)[0].lrn)
                                         for i in range(n)))
    assert results == [f"L{i}" for i in range(n)]
    s = writer.stats
    assert s.changes == n and s.failed == 0
    assert s.commits == journal.commits - before
    assert s.commits < n / 10, f"{s.commits} commits for {n} changes"
    print(f"\ngroup commit: {n} changes, {s.commits} commits ({s.changes_per_commit:.0f} changes per fsync), "
          f"{s.batches} batches, largest {s.max_batch_seen}")
    assert len(journal.list_filings(limit=n + 1)) == n


async def test_acknowledged_only_after_commit(tmp_path: Path, journal: SqliteJournal) -> None:
    reader = SqliteJournal.open_reader(tmp_path / "j.sqlite3")
    seen: list[bool] = []

    def fn(j: SqliteJournal) -> int:
        f, _ = j.insert_filing(nf("ACK"), now=T0)
        seen.append(reader.get_filing_by_key("NL123456789", "ACK") is not None)  # inside the tx: not yet visible
        return f.id

    async with JournalWriter(journal) as writer:
        await writer.submit(fn)
        assert reader.get_filing_by_key("NL123456789", "ACK") is not None  # visible once acknowledged
    assert seen == [False]
    reader.close()


async def test_one_bad_change_does_not_fail_the_batch(journal: SqliteJournal) -> None:
    f, _ = journal.insert_filing(nf("F"), now=T0)
    gate = threading.Event()
    async with JournalWriter(journal, max_batch=100) as writer:
        blocker = asyncio.ensure_future(writer.submit(lambda j: gate.wait(5)))
        await asyncio.sleep(0.05)  # the writer is busy: the next submissions pile up into one batch
        good = [asyncio.ensure_future(writer.submit(lambda j, i=i: j.insert_filing(nf(f"G{i}"), now=T0)[1]))
                for i in range(5)]
        bad = asyncio.ensure_future(writer.submit(lambda j: j.transition(f.id, "arrived", now=T0)))
        more = asyncio.ensure_future(writer.submit(lambda j: j.transition(f.id, "queued", now=T0).state))
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        assert await asyncio.gather(*good) == [True] * 5
        with pytest.raises(InvalidTransition, match="'received' -> 'arrived'"):
            await bad
        assert await more == "queued"
    assert writer.stats.fallbacks == 0 and writer.stats.failed == 1
    assert writer.stats.commits == 2  # the blocker's batch, then one for the seven others
    assert journal.get_filing(f.id).state == "queued"


async def test_failed_commit_falls_back_to_one_by_one(journal: SqliteJournal) -> None:
    gate = threading.Event()

    def commit_breaker(j: SqliteJournal) -> None:
        # a deferred foreign key violation passes the savepoint and makes the COMMIT itself fail
        j._conn.execute("PRAGMA defer_foreign_keys = ON")
        j._conn.execute("INSERT INTO customs_requests (filing_id, kind, request_message_id, state, opened_at, "
                        "updated_at) VALUES (424242, 'IE3Q02', 'x', 'open', 'a', 'a')")

    async with JournalWriter(journal, max_batch=100) as writer:
        blocker = asyncio.ensure_future(writer.submit(lambda j: gate.wait(5)))
        await asyncio.sleep(0.05)
        a = asyncio.ensure_future(writer.submit(lambda j: j.insert_filing(nf("A"), now=T0)[0].lrn))
        bad = asyncio.ensure_future(writer.submit(commit_breaker))
        b = asyncio.ensure_future(writer.submit(lambda j: j.insert_filing(nf("B"), now=T0)[0].lrn))
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        assert await a == "A" and await b == "B"
        with pytest.raises(Exception, match="FOREIGN KEY"):
            await bad
    assert writer.stats.fallbacks == 1
    assert {d["lrn"] for d in journal.list_filings()} == {"A", "B"}
    assert journal.list_requests(open_only=False) == []


async def test_submit_after_close_is_refused(journal: SqliteJournal) -> None:
    writer = JournalWriter(journal).start()
    await writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.submit(lambda j: None)



def test_close_sync_finishes_the_queue_stops_the_thread_and_refuses_more(journal: SqliteJournal,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    writer = JournalWriter(journal).start()
    futures = [writer.submit_threadsafe(lambda j, i=i: j.insert_filing(nf(f"S{i}"), now=T0)[0].lrn) for i in range(3)]
    writer.close_sync()
    assert [f.result(0) for f in futures] == ["S0", "S1", "S2"]    # done before close_sync returned
    assert not writer._thread.is_alive() and crashed == []        # stopped by its sentinel, not by a crash
    with pytest.raises(RuntimeError, match="the journal writer is closed"):
        writer.submit_threadsafe(lambda j: None)
    writer.close_sync()                                            # a second close is a no-op
    assert writer.stats.changes == 3

CHILD = textwrap.dedent("""
    import asyncio, hashlib, sys
    from datetime import datetime, timezone
    from gateway.journal import JournalWriter, NewFiling, OutboundMessage, SqliteJournal

    def now():
        return datetime.now(timezone.utc)

    async def main(path):
        journal = SqliteJournal.open(path)
        async with JournalWriter(journal, max_batch=64) as writer:
            async def lane(k):
                n = 0
                while True:
                    lrn = f"L{k}-{n}"
                    def change(j, lrn=lrn):
                        f, _ = j.insert_filing(NewFiling(filer_eori="NL1", lrn=lrn, sender_eori="NL1",
                            action="IE3F32", payload_sha256=hashlib.sha256(lrn.encode()).hexdigest()), now=now())
                        j.transition(f.id, "queued", now=now())
                        j.enqueue_message(OutboundMessage(message_id=lrn + "@x", action="IE3F32",
                            sealed=lrn.encode() * 200, content_type="multipart/related", filing_id=f.id), now=now())
                    await writer.submit(change)
                    sys.stdout.write("ACK " + lrn + "\\n")
                    sys.stdout.flush()
                    n += 1
            await asyncio.gather(*(lane(k) for k in range(32)))

    asyncio.run(main(sys.argv[1]))
""")


def test_sigkill_leaves_no_torn_state(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    acked: list[str] = []
    deadline = time.monotonic() + 15
    assert proc.stdout is not None
    while len(acked) < 400 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.decode().split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # acknowledgements written before the kill are acknowledgements too
    proc.wait()
    acked += [ln.split()[1] for ln in rest.decode().splitlines() if ln.startswith("ACK ")]
    assert len(acked) >= 400, "the child did not get going"

    j = SqliteJournal.open(path)
    try:
        assert j.integrity_check() == "ok"
        present = {d["lrn"]: d for d in j.list_filings(limit=10**6)}
        missing = [lrn for lrn in acked if lrn not in present]
        assert not missing, f"acknowledged but lost: {missing[:5]}"
        for lrn, d in present.items():  # every change is whole: filing, state, message and events, or nothing
            assert d["state"] == "queued", lrn
            m = j.get_message(lrn + "@x", with_bytes=True)
            assert m is not None and m.sealed == lrn.encode() * 200 and m.filing_id == d["id"]
            assert [e.event for e in j.events(filing_id=d["id"])][:3] == [
                "filing-received", "state:queued", "message-queued"]
    finally:
        j.close()


def test_writer_defaults(journal: SqliteJournal) -> None:
    """The defaults `[journal]` documents: batches of up to 256 changes, no added wait (batching happens while the
    previous fsync runs), five minutes of waiting for an unavailable database; the thread is named in dumps."""
    writer = JournalWriter(journal)
    assert (writer.max_batch, writer.max_delay, writer.unavailable_budget) == (256, 0.0, 300.0)
    assert writer._thread.name == "journal-writer" and writer._thread.daemon
    assert JournalWriter(journal, max_delay_ms=250).max_delay == 0.25          # milliseconds in the configuration


def test_a_batch_holds_at_least_one_change(journal: SqliteJournal) -> None:
    assert JournalWriter(journal, max_batch=1).max_batch == 1
    for bad in (0, -1):
        with pytest.raises(ValueError) as exc:
            JournalWriter(journal, max_batch=bad)
        assert str(exc.value) == "max_batch must be at least 1"


async def test_submissions_before_start_and_after_close_are_refused_by_name(journal: SqliteJournal,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer not yet started refuses work (it would wait forever) and says how to start it; `close()` finishes the
    queue, stops the thread by its sentinel (no crash) and later submissions are refused; every accepted submission is
    counted once."""
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    writer = JournalWriter(journal)
    with pytest.raises(RuntimeError) as exc:
        writer.submit_threadsafe(lambda j: None)
    assert str(exc.value) == "the journal writer is not started (call start() or use 'async with')"
    assert writer.stats.submitted == 0
    writer.start()
    results = await asyncio.gather(*(writer.submit(lambda j, i=i: j.insert_filing(nf(f"C{i}"), now=T0)[0].lrn)
                                     for i in range(3)))
    assert results == ["C0", "C1", "C2"] and writer.stats.submitted == 3
    await writer.close()
    assert not writer._thread.is_alive() and crashed == []
    with pytest.raises(RuntimeError) as exc:
        writer.submit_threadsafe(lambda j: None)
    assert str(exc.value) == "the journal writer is closed"
    assert writer.stats.submitted == 3
    await writer.close()                                           # a second close is a no-op


async def test_batches_are_counted_bounded_and_wait_max_delay_for_more(journal: SqliteJournal) -> None:
    """`max_delay_ms` makes the writer wait for more work after the first submission (two submissions 50 ms apart
    share one batch and one commit); `max_batch` bounds a batch exactly; every batch and every fallback is counted."""
    async with JournalWriter(journal, max_batch=2, max_delay_ms=1000) as writer:
        first = asyncio.ensure_future(writer.submit(lambda j: j.insert_filing(nf("D1"), now=T0)[0].lrn))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(writer.submit(lambda j: j.insert_filing(nf("D2"), now=T0)[0].lrn))
        assert await asyncio.wait_for(asyncio.gather(first, second), 30) == ["D1", "D2"]
        assert (writer.stats.batches, writer.stats.commits, writer.stats.max_batch_seen) == (1, 1, 2)
        alone = await asyncio.wait_for(writer.submit(lambda j: j.insert_filing(nf("D3"), now=T0)[0].lrn), 30)
        assert alone == "D3" and writer.stats.batches == 2        # one submission alone: committed after the wait
    gate = threading.Event()
    async with JournalWriter(journal, max_batch=2) as writer:
        blocker = asyncio.ensure_future(writer.submit(lambda j: gate.wait(10)))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(writer.submit(lambda j, i=i: j.insert_filing(nf(f"E{i}"), now=T0)[0].lrn))
                for i in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        assert await asyncio.gather(*rest) == [f"E{i}" for i in range(5)]
        assert writer.stats.max_batch_seen == 2 and writer.stats.batches == 4     # 1 + 2 + 2 + 1


async def test_every_failed_commit_counts_as_a_fallback(journal: SqliteJournal) -> None:
    def commit_breaker(j: SqliteJournal) -> None:
        j._conn.execute("PRAGMA defer_foreign_keys = ON")
        j._conn.execute("INSERT INTO customs_requests (filing_id, kind, request_message_id, state, opened_at, "
                        "updated_at) VALUES (424242, 'IE3Q02', 'x', 'open', 'a', 'a')")

    async with JournalWriter(journal) as writer:
        for _ in range(2):
            with pytest.raises(Exception, match="FOREIGN KEY"):
                await writer.submit(commit_breaker)
    assert (writer.stats.fallbacks, writer.stats.failed, writer.stats.batches) == (2, 2, 2)
