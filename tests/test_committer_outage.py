"""The group-commit writer when PostgreSQL is away: retry before COMMIT, hand over past the budget or during COMMIT,
and the one-by-one fallback with its own unavailability loop.

A private server of this module (``LocalPostgres``), since these tests stop and start it. The database faults are
real: a stopped server (the pool cannot connect within ``connect_timeout_seconds``), a session that terminates
itself (``pg_terminate_backend(pg_backend_pid())``: the statement fails with a lost connection, before COMMIT), a
deferred constraint trigger that terminates the session at COMMIT (the COMMIT's outcome is unknown), and a deferred
unique constraint that makes a COMMIT fail (the writer falls back to one by one). No timing assertions: counts,
logs, states and outcomes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest

from gateway.journal import NewFiling
from gateway.journal.committer import JournalWriter
from gateway.journal.errors import JournalUnavailable
from gateway.journal.factory import open_journal
from gateway.journal import pglocal
from gateway.journal.pglocal import LocalPostgres
from tests.journal_backends import pg_config
from tests.pg_support import ROLE, SHARED_ENV, _attach_shared, new_database

T0 = datetime(2026, 12, 2, 9, 0, 0, tzinfo=timezone.utc)
WAIT = 30.0       # the longest a future may take (a hung writer thread fails the test instead of hanging it)
UNAVAILABLE = ("journal unavailable: the database does not answer, waiting for it (writes retried for up to "
               "{budget} s, new API submissions answered 503) error=database unavailable (")


def nf(lrn: str) -> NewFiling:
    return NewFiling(filer_eori="NL123456789", lrn=lrn, sender_eori="NL123456789", action="IE3F32",
                     payload_sha256=hashlib.sha256(lrn.encode()).hexdigest(), priority="B")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    """This module's own server, or the one a mutation run shares among its test runs (every test here that stops
    it starts it again before it ends, as tests/test_journal_pg.py does with a restart)."""
    reason = pglocal.available()
    if reason:
        pytest.skip(reason)
    if os.environ.get(SHARED_ENV):
        yield _attach_shared(os.environ[SHARED_ENV])
        return
    pg = LocalPostgres()
    try:
        pg.start()
        pg.role_password = secrets.token_urlsafe(12)  # type: ignore[attr-defined]
        pg.create_role(ROLE, pg.role_password)  # type: ignore[attr-defined]
        yield pg
    finally:
        pg.close()


@pytest.fixture
def journal(server: LocalPostgres) -> Iterator[Any]:
    if not server.running():
        server.start()
    db = new_database(server)
    # 1 s: how long the pool waits for a connection while the server is stopped (one failed attempt)
    j = open_journal(pg_config(str(db), db.password, connect_timeout_seconds=1.0), now=T0, instance="w")
    j.test_dsn = db.with_password  # type: ignore[attr-defined]
    with psycopg.connect(db.with_password, autocommit=True) as c:
        # a deferred unique constraint: two equal rows pass every statement and savepoint and fail the COMMIT
        c.execute("CREATE TABLE commit_breaker (k INTEGER, CONSTRAINT commit_breaker_k UNIQUE (k) "
                  "DEFERRABLE INITIALLY DEFERRED)")
        # a deferred trigger that terminates its own session: the connection is lost during the COMMIT
        c.execute("CREATE TABLE commit_killer (k INTEGER)")
        c.execute("CREATE FUNCTION kill_own_session() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$")
        c.execute("CREATE CONSTRAINT TRIGGER commit_killer_t AFTER INSERT ON commit_killer DEFERRABLE INITIALLY "
                  "DEFERRED FOR EACH ROW EXECUTE FUNCTION kill_own_session()")
    yield j
    j.close()
    if not server.running():
        server.start()
    server.drop_database(db.dbname)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.WARNING, logger="ics2gw.journal")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "ics2gw.journal"]


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def lrns(j: Any) -> set[str]:
    return {f["lrn"] for f in j.list_filings(limit=100)}


def kill_own_session(j: Any) -> None:
    """A real lost connection before COMMIT: the statement fails, the backend raises JournalUnavailable."""
    j._x("SELECT pg_terminate_backend(pg_backend_pid())")


def break_commit(j: Any) -> None:
    j._x("INSERT INTO commit_breaker VALUES (1), (1)")


def kill_at_commit(j: Any) -> None:
    j._x("INSERT INTO commit_killer VALUES (1)")


class Flaky:
    """A submission whose calls ``lose`` (1-based) lose the session (a real self-termination); the others insert a
    filing. Counting calls makes the fault hit an exact run: the batch's, or one of the one-by-one runs."""

    def __init__(self, lrn: str, lose: set[int], how: Callable[[Any], None] = kill_own_session) -> None:
        self.lrn, self.lose, self.how, self.calls = lrn, lose, how, 0

    def __call__(self, j: Any) -> str:
        self.calls += 1
        if self.calls in self.lose:
            self.how(j)
            if self.how is kill_own_session:
                raise AssertionError("the session survived its termination")
            return "armed"               # kill_at_commit: the fault comes at the COMMIT
        return j.insert_filing(nf(self.lrn), now=T0)[0].lrn


def one_batch(writer: JournalWriter, fns: list[Callable[[Any], Any]]) -> list[Any]:
    """Submits ``fns`` so that they form one batch: a blocker holds the writer until all are queued."""
    gate, batches = threading.Event(), writer.stats.batches
    blocker = writer.submit_threadsafe(lambda j: gate.wait(WAIT))
    wait_for(lambda: writer.stats.batches > batches, "the blocker runs")
    futures = [writer.submit_threadsafe(fn) for fn in fns]
    gate.set()
    assert blocker.result(WAIT) is True
    return futures


# ------------------------------------------------------------------------------------------------------------------
# _run_batch / _unavailable: the database away before COMMIT
# ------------------------------------------------------------------------------------------------------------------
def test_a_stopped_database_is_waited_for_and_the_batch_committed_once_it_is_back(
        journal: Any, server: LocalPostgres, logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=120).start()
    try:
        assert writer.submit_threadsafe(lambda j: j.insert_filing(nf("BEFORE"), now=T0)[1]).result(WAIT)
        assert writer.unavailable_since is None and writer.stats.retries == 0
        stopped_at = time.monotonic()
        server.stop()
        futures = [writer.submit_threadsafe(lambda j, i=i: j.insert_filing(nf(f"AWAY{i}"), now=T0)[0].lrn)
                   for i in range(3)]
        wait_for(lambda: writer.stats.retries >= 1, "a first retry")
        since = writer.unavailable_since
        assert since is not None                      # set for the episode (the health endpoint reads it)
        wait_for(lambda: writer.stats.retries >= 3, "three retries")
        assert writer.unavailable_since == since      # kept, not reset, while the episode lasts
        assert not any(f.done() for f in futures)     # callers just wait
        server.start()
        assert [f.result(WAIT) for f in futures] == ["AWAY0", "AWAY1", "AWAY2"]
        assert writer.unavailable_since is None
        s = writer.stats
        assert s.failed == 0 and s.changes == 4 and s.fallbacks == 0 and s.retries >= 3
        assert s.commits == s.batches                 # every batch committed once (the retries did not commit)
        messages = logs()
        assert [m for m in messages if m.startswith("journal unavailable")] == \
            [m for m in messages if m.startswith(UNAVAILABLE.format(budget=120))]
        assert len([m for m in messages if m.startswith(UNAVAILABLE.format(budget=120))]) == 1
        [back] = [m for m in messages if m.startswith("journal available again after ")]
        # the episode's length as logged: within the time this test saw the database away (not a performance bound)
        assert 0 < float(back.split()[-2]) <= time.monotonic() - stopped_at + 0.1
        assert len(messages) == 2
        assert lrns(journal) == {"BEFORE", "AWAY0", "AWAY1", "AWAY2"}
    finally:
        if not server.running():
            server.start()
        writer.close_sync()


def test_past_the_budget_every_caller_gets_the_unavailability(
        journal: Any, server: LocalPostgres, logs: Callable[[], list[str]]) -> None:
    # max_batch 3 and a long max_delay: the three submissions form one batch, whenever they arrive
    writer = JournalWriter(journal, unavailable_budget=2.5, max_batch=3, max_delay_ms=WAIT * 1000).start()
    try:
        server.stop()
        futures = [writer.submit_threadsafe(lambda j, i=i: j.insert_filing(nf(f"LOST{i}"), now=T0))
                   for i in range(3)]
        for f in futures:
            with pytest.raises(JournalUnavailable, match=r"^database unavailable \(") as err:
                f.result(WAIT)
            assert err.value.before_commit
        s = writer.stats
        assert s.retries >= 1 and s.failed == 3 and s.changes == 0 and s.fallbacks == 0 and s.batches == 1
        assert writer.unavailable_since is None       # the episode ended for the writer: the callers got it
        messages = logs()
        assert len([m for m in messages if m.startswith(UNAVAILABLE.format(budget=2))]) == 1   # %.0f of 2.5
        assert len([m for m in messages if m.startswith("journal available again after ")]) == 1
        assert len(messages) == 2
    finally:
        server.start()
        writer.close_sync()
    with psycopg.connect(journal.test_dsn) as c:     # (the pool reconnects on its own schedule)
        assert c.execute("SELECT COUNT(*) FROM filings").fetchone() == (0,)


def test_no_budget_hands_the_first_failure_over_without_a_retry(
        journal: Any, server: LocalPostgres, logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=0).start()
    try:
        assert writer.submit_threadsafe(lambda j: j.insert_filing(nf("BEFORE"), now=T0)[1]).result(WAIT)
        lost = Flaky("NEVER", {1})
        with pytest.raises(JournalUnavailable, match=r"^database unavailable \(AdminShutdown\)"):
            writer.submit_threadsafe(lost).result(WAIT)
        assert lost.calls == 1 and writer.stats.retries == 0 and writer.unavailable_since is None
        assert logs() == []
    finally:
        writer.close_sync()


def test_a_session_lost_before_commit_runs_the_whole_batch_again(
        journal: Any, logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=120).start()
    try:
        flaky = Flaky("F", {1, 2})
        futures = one_batch(writer, [lambda j: j.insert_filing(nf("A"), now=T0)[0].lrn, flaky,
                                     lambda j: j.insert_filing(nf("B"), now=T0)[0].lrn])
        assert [f.result(WAIT) for f in futures] == ["A", "F", "B"]
        assert flaky.calls == 3
        s = writer.stats
        assert (s.retries, s.failed, s.fallbacks, s.batches, s.commits) == (2, 0, 0, 2, 2)
        assert writer.unavailable_since is None
        messages = logs()
        assert len(messages) == 2
        assert messages[0].startswith(UNAVAILABLE.format(budget=120) + "AdminShutdown)")
        assert messages[1].startswith("journal available again after ")
        assert lrns(journal) == {"A", "F", "B"}
    finally:
        writer.close_sync()


def test_a_session_lost_during_commit_is_handed_to_every_caller(
        journal: Any, logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=120).start()
    try:
        futures = one_batch(writer, [lambda j: j.insert_filing(nf("A"), now=T0)[0].lrn, kill_at_commit,
                                     lambda j: j.insert_filing(nf("B"), now=T0)[0].lrn])
        for f in futures:
            with pytest.raises(JournalUnavailable) as err:
                f.result(WAIT)
            assert not err.value.before_commit         # unknown outcome: not retried by the writer
        s = writer.stats
        assert (s.retries, s.failed, s.fallbacks) == (0, 3, 0)
        assert logs() == []
    finally:
        writer.close_sync()
    assert lrns(journal) == set()


# ------------------------------------------------------------------------------------------------------------------
# _one_by_one: the COMMIT failed, each submission runs alone
# ------------------------------------------------------------------------------------------------------------------
def test_one_by_one_after_a_failed_commit_gives_each_caller_its_outcome(journal: Any,
                                                                        logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=120).start()
    try:
        before = writer.stats.commits
        futures = one_batch(writer, [lambda j: j.insert_filing(nf("A"), now=T0)[0].lrn, break_commit,
                                     lambda j: j.insert_filing(nf("B"), now=T0)[0].lrn,
                                     lambda j: j.insert_filing(nf("C"), now=T0)[0].lrn])
        a, bad, b, c = futures
        assert (a.result(WAIT), b.result(WAIT), c.result(WAIT)) == ("A", "B", "C")
        with pytest.raises(psycopg.errors.UniqueViolation):
            bad.result(WAIT)
        s = writer.stats
        assert s.commits - before == 4                 # the blocker's batch, then A, B and C alone
        assert (s.fallbacks, s.failed, s.changes, s.retries) == (1, 1, 4, 0)
        assert logs() == []
        assert lrns(journal) == {"A", "B", "C"}
    finally:
        writer.close_sync()


def test_one_by_one_waits_for_a_lost_session_and_runs_the_change_again(journal: Any,
                                                                       logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=120).start()
    try:
        before = writer.stats.commits
        # call 1: in the batch (whose COMMIT fails); calls 2 and 3: alone, the session lost twice; call 4 commits
        flaky = Flaky("F", {2, 3})
        futures = one_batch(writer, [lambda j: j.insert_filing(nf("A"), now=T0)[0].lrn, break_commit, flaky,
                                     lambda j: j.insert_filing(nf("C"), now=T0)[0].lrn])
        a, bad, f, c = futures
        assert (a.result(WAIT), f.result(WAIT), c.result(WAIT)) == ("A", "F", "C")
        with pytest.raises(psycopg.errors.UniqueViolation):
            bad.result(WAIT)
        assert flaky.calls == 4
        s = writer.stats
        assert s.commits - before == 4 and (s.fallbacks, s.failed, s.changes, s.retries) == (1, 1, 4, 2)
        assert writer.unavailable_since is None
        messages = logs()
        assert len(messages) == 2
        assert messages[0].startswith(UNAVAILABLE.format(budget=120) + "AdminShutdown)")
        assert messages[1].startswith("journal available again after ")
        assert lrns(journal) == {"A", "F", "C"}
    finally:
        writer.close_sync()


def test_one_by_one_past_the_budget_hands_the_unavailability_to_that_caller_only(
        journal: Any, logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=0).start()
    try:
        before = writer.stats.commits
        lost = Flaky("LOST", {2})
        futures = one_batch(writer, [break_commit, lost, lambda j: j.insert_filing(nf("C"), now=T0)[0].lrn])
        bad, f, c = futures
        with pytest.raises(psycopg.errors.UniqueViolation):
            bad.result(WAIT)
        with pytest.raises(JournalUnavailable, match=r"^database unavailable \(AdminShutdown\)") as err:
            f.result(WAIT)
        assert err.value.before_commit and lost.calls == 2
        assert c.result(WAIT) == "C"
        s = writer.stats
        assert s.commits - before == 2 and (s.fallbacks, s.failed, s.changes, s.retries) == (1, 2, 2, 0)
        assert writer.unavailable_since is None and logs() == []
        assert lrns(journal) == {"C"}
    finally:
        writer.close_sync()


def test_one_by_one_does_not_retry_a_session_lost_during_its_commit(journal: Any,
                                                                   logs: Callable[[], list[str]]) -> None:
    writer = JournalWriter(journal, unavailable_budget=120).start()
    try:
        # call 1 in the batch (whose COMMIT fails); call 2, alone: its COMMIT loses the session (unknown outcome)
        lost = Flaky("LOST", {2}, how=kill_at_commit)
        futures = one_batch(writer, [break_commit, lost, lambda j: j.insert_filing(nf("C"), now=T0)[0].lrn])
        bad, f, c = futures
        with pytest.raises(psycopg.errors.UniqueViolation):
            bad.result(WAIT)
        with pytest.raises(JournalUnavailable) as err:
            f.result(WAIT)
        assert not err.value.before_commit and lost.calls == 2
        assert c.result(WAIT) == "C"
        s = writer.stats
        assert (s.fallbacks, s.failed, s.retries) == (1, 2, 0)
        assert logs() == []
    finally:
        writer.close_sync()
