"""The PostgreSQL journal shared by several instances: what only concurrency on one database can show.

Every case runs real instances (``PostgresJournal`` objects with their own connection pools, as separate gateway
processes have) against a fresh database on the test run's private server (tests/pg_support.py).
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from gateway.journal import InboundMessage, NewFiling, OutboundMessage
from gateway.journal.committer import JournalWriter
from gateway.journal.errors import JournalError, ReadOnlyJournal
from gateway.journal.factory import journal_checks, migrate_journal, open_journal, open_reader, schema_version
from gateway.journal import schema_pg
from tests.journal_backends import pg_config

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=timezone.utc)


def filing(lrn: str, payload: str = "<ens/>") -> NewFiling:
    return NewFiling(filer_eori="NL123456789", lrn=lrn, sender_eori="NL123456789", action="IE3F32",
                     payload_sha256=hashlib.sha256(payload.encode()).hexdigest(), priority="B")


def out(mid: str, fid: int | None, priority: str = "B") -> OutboundMessage:
    return OutboundMessage(message_id=mid, action="IE3F32", sealed=b"sealed:" + mid.encode(),
                           content_type="multipart/related", filing_id=fid, priority=priority)


@pytest.fixture
def cfg(pg_dsn: Any) -> Any:
    return pg_config(str(pg_dsn), pg_dsn.password)


@pytest.fixture
def instances(cfg: Any) -> Any:
    opened: list[Any] = []

    def make(n: int) -> list[Any]:
        js = [open_journal(cfg, now=T0, instance=f"i{k}") for k in range(n)]
        opened.extend(js)
        return js

    yield make
    for j in opened:
        j.close()


def test_migrate_from_nothing_concurrently_and_check(cfg: Any) -> None:
    assert schema_version(cfg) == 0
    checks = {name: (ok, detail) for name, ok, detail in journal_checks(cfg)}
    assert checks["journal reachable"][0] and not checks["journal schema"][0]
    assert "journal migrate" in checks["journal schema"][1]
    with ThreadPoolExecutor(4) as pool:            # four instances starting at once
        results = list(pool.map(lambda _: migrate_journal(cfg), range(4)))
    assert sorted(after for _, after in results) == [schema_pg.LATEST] * 4
    assert all(ok for _, ok, _ in journal_checks(cfg))
    with psycopg.connect(cfg.conninfo()) as c:
        assert c.execute("SELECT version FROM schema_migrations").fetchall() == [(schema_pg.LATEST,)]


def test_run_refuses_a_journal_that_was_never_migrated(cfg: Any) -> None:
    with pytest.raises(JournalError, match="journal migrate"):
        open_journal(cfg, migrate=False)


def test_reader_cannot_write(instances: Any, cfg: Any) -> None:
    [j] = instances(1)
    j.insert_filing(filing("R1"), now=T0)
    reader = open_reader(cfg)
    try:
        assert reader.get_filing_by_key("NL123456789", "R1") is not None
        with pytest.raises(ReadOnlyJournal):
            reader.insert_filing(filing("R2"), now=T0)
        with pytest.raises(Exception, match="read-only"):
            reader._x("DELETE FROM events")
    finally:
        reader.close()


def test_claims_across_instances_never_share_and_keep_lanes(instances: Any) -> None:
    a, b, c = instances(3)
    for i in range(300):
        a.enqueue_message(out(f"m{i}@x", None, "ABC"[i % 3]), now=T0)
    claimed: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    first_lane: dict[str, str] = {}

    def claim(name: str, j: Any) -> None:
        while True:
            got = j.claim_due_messages(now=T0, worker=name, limit=7, lease_seconds=600)
            if not got:
                return
            first_lane.setdefault(name, got[0].priority)
            claimed[name] += [m.message_id for m in got]

    threads = [threading.Thread(target=claim, args=(n, j)) for n, j in zip("abc", (a, b, c))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = claimed["a"] + claimed["b"] + claimed["c"]
    assert len(every) == len(set(every)) == 300
    assert set(first_lane.values()) == {"A"}          # each instance began with the most urgent lane
    owners = {m.message_id: m.claimed_by for m in a.list_messages(state="sending", limit=1000)}
    assert all(owners[mid] == name for name, mids in claimed.items() for mid in mids)


def test_same_filing_from_two_instances_is_created_once(instances: Any) -> None:
    js = instances(4)
    barrier = threading.Barrier(len(js))

    def take(j: Any) -> tuple[int, bool]:
        barrier.wait()
        f, created = j.insert_filing(filing("SAME"), now=T0)
        return f.id, created

    with ThreadPoolExecutor(len(js)) as pool:
        results = list(pool.map(take, js))
    assert len({fid for fid, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert [e.event for e in js[0].events(filing_id=results[0][0])] == ["filing-received"]


def test_same_inbound_message_at_two_instances_is_stored_once(instances: Any) -> None:
    js = instances(4)
    barrier = threading.Barrier(len(js))
    msg = InboundMessage(sender_party="sti-taxud", message_id="dup@customs", raw=b"<x/>",
                         content_type="application/xml", action="IE3R01")

    def receive(k: int) -> Any:
        barrier.wait()
        return js[k].record_inbound(msg, now=T0, receipt=f"receipt-{k}".encode())

    with ThreadPoolExecutor(len(js)) as pool:
        results = list(pool.map(receive, range(len(js))))
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.receipt for r in results}) == 1     # every instance answers with the first Receipt
    assert len(js[0].list_messages(direction="in")) == 1


def test_outbox_never_skips_an_event_committed_late(instances: Any) -> None:
    a, b = instances(2)
    a.append_event("before", now=T0)
    holding = threading.Event()
    release = threading.Event()

    def slow_writer() -> None:     # takes an id first, commits last
        with a.transaction():
            a.append_event("late", now=T0)
            holding.set()
            release.wait(10)

    t = threading.Thread(target=slow_writer)
    t.start()
    holding.wait(10)
    b.append_event("early", now=T0)                 # a higher id, committed first
    seen: list[list[str]] = []
    reader = threading.Thread(target=lambda: seen.append([e.event for e in b.events_after(0)]))
    reader.start()
    time.sleep(0.5)
    assert reader.is_alive()          # the horizon waits for the transaction that holds the lower id
    release.set()
    t.join()
    reader.join(10)
    assert seen == [["before", "late", "early"]]
    assert b.last_event_id() == max(e.id for e in b.events())


def test_singleton_fails_over_when_its_holder_dies(instances: Any, pg_dsn: Any) -> None:
    a, b = instances(2)
    la, lb = a.singleton("timers"), b.singleton("timers")
    assert la.try_acquire() and la.held()
    assert not lb.try_acquire() and not lb.held()
    assert la.try_acquire()                           # re-entrant for its holder
    # the holder's database session dies (a SIGKILLed instance, a network cut): the lock goes with it
    pid = la._conn.info.backend_pid
    with psycopg.connect(pg_dsn.server.admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert not la.held()
    assert lb.try_acquire() and lb.held()
    assert not la.try_acquire()
    lb.release()
    assert la.try_acquire()
    other = a.singleton("pull:TI-NL")                 # another name is another lock
    assert other.try_acquire()


def test_renewed_lease_survives_and_expired_one_moves_to_another_instance(instances: Any) -> None:
    a, b = instances(2)
    a.enqueue_message(out("lease@x", None), now=T0)
    [m] = a.claim_due_messages(now=T0, worker="a", lease_seconds=5)
    assert a.renew_claims("a", ["lease@x"], now=T0 + timedelta(seconds=4), lease_seconds=5) == ["lease@x"]
    assert b.claim_due_messages(now=T0 + timedelta(seconds=8), worker="b") == []
    [taken] = b.claim_due_messages(now=T0 + timedelta(seconds=10), worker="b")
    assert taken.sealed == m.sealed and taken.attempts == 2   # byte-identical resend, same MessageId
    assert a.renew_claims("a", ["lease@x"], now=T0 + timedelta(seconds=10), lease_seconds=5) == []


def test_group_commit_waits_through_a_database_restart(instances: Any, pg_dsn: Any) -> None:
    [j] = instances(1)
    writer = JournalWriter(j, unavailable_budget=120).start()
    try:
        f, _ = writer.submit_threadsafe(lambda jj: jj.insert_filing(filing("BEFORE"), now=T0)).result(30)
        pg_dsn.server.restart()
        results = [writer.submit_threadsafe(lambda jj, i=i: jj.insert_filing(filing(f"AFTER{i}"), now=T0))
                   for i in range(20)]
        assert all(r.result(120)[1] for r in results)
        assert writer.stats.failed == 0
        assert {x["lrn"] for x in j.list_filings(limit=100)} == {"BEFORE", *(f"AFTER{i}" for i in range(20))}
    finally:
        writer.close_sync()


def test_killed_database_recovers_committed_work(instances: Any, pg_dsn: Any) -> None:
    [j] = instances(1)
    writer = JournalWriter(j, unavailable_budget=120).start()
    try:
        done = [writer.submit_threadsafe(lambda jj, i=i: jj.insert_filing(filing(f"K{i}"), now=T0)).result(30)
                for i in range(10)]
        pg_dsn.server.kill()            # SIGKILL the postmaster: crash recovery at the next start
        pg_dsn.server.start()
        assert writer.submit_threadsafe(lambda jj: jj.count_by_state()).result(120) == {"received": 10}
        assert len(done) == 10
    finally:
        writer.close_sync()


def test_journal_over_tls_verify_full_from_the_configuration(tmp_path: Any, pki: Any) -> None:
    """`[journal] sslmode = "verify-full"` and `sslrootcert` (relative to the configuration file) reach libpq: the
    journal works over TLS, doctor says so, and a server whose certificate the CA did not sign is refused."""
    from pathlib import Path
    from gateway.config import Section
    from gateway.journal.config import read_journal_config
    from gateway.journal.pglocal import LocalPostgres
    with LocalPostgres(tls=True) as pg:
        pg.create_role("ics2gw", "tls-pw")
        pg.create_database("tlsjournal", owner="ics2gw")
        conf = tmp_path / "etc" / "gateway.toml"
        conf.parent.mkdir()
        (tmp_path / "db-ca.pem").write_bytes(Path(pg.ca_path).read_bytes())
        (tmp_path / "pw").write_text("tls-pw\n")
        section = {"backend": "postgresql", "dsn": f"host=localhost hostaddr=127.0.0.1 port={pg.port} "
                   "dbname=tlsjournal user=ics2gw", "password_file": "../pw", "sslmode": "verify-full",
                   "sslrootcert": "../db-ca.pem"}
        cfg = read_journal_config(Section(section, file=conf, prefix="journal"))
        migrate_journal(cfg)
        j = open_journal(cfg, now=T0)
        try:
            assert j.insert_filing(filing("TLS1"), now=T0)[1]
        finally:
            j.close()
        reach = {n: d for n, ok, d in journal_checks(cfg) if ok}
        assert ", TLS)" in reach["journal reachable"]
        wrong = tmp_path / "wrong-ca.pem"
        wrong.write_bytes((Path(pki) / "customs-root.pem").read_bytes())
        bad = read_journal_config(Section({**section, "sslrootcert": str(wrong)}, file=conf, prefix="journal"))
        with pytest.raises(JournalError, match="certificate verify failed|cannot connect"):
            open_journal(bad, now=T0)


def _superuser(pg_dsn: Any) -> Any:
    s = pg_dsn.server
    return psycopg.connect(s.dsn(pg_dsn.dbname, s.superuser, s.superuser_password, unix=True), autocommit=True)


def test_singleton_session_is_autocommit_with_a_statement_timeout(instances: Any, pg_dsn: Any) -> None:
    """The lock's session sits idle (not idle in a transaction: no snapshot held against vacuum) and its liveness
    check cannot stall longer than 5 s (the failover depends on it)."""
    [a] = instances(1)
    lock = a.singleton("timers")
    assert lock.name == "timers"
    assert lock.try_acquire()
    assert lock._conn.execute("SHOW statement_timeout").fetchone()[0] == "5s"
    pid = lock._conn.info.backend_pid
    with _superuser(pg_dsn) as admin:
        state = admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]
        assert state == "idle"
        held = admin.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND granted",
                             (pid,)).fetchone()[0]
        assert held == 1
    lock.release()
    assert not lock.held()


def test_singleton_is_not_taken_when_the_database_cannot_be_reached_or_refuses(instances: Any, pg_dsn: Any) -> None:
    import socket

    from gateway.journal.postgres import PgSingleton
    with socket.socket() as s:          # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert PgSingleton(f"host=127.0.0.1 port={port} dbname=x user=x connect_timeout=2", "timers").try_acquire() \
        is False
    # the session opens but the lock function is refused (a privilege the role lacks in this database)
    [a] = instances(1)
    with _superuser(pg_dsn) as admin:
        admin.execute("REVOKE EXECUTE ON FUNCTION pg_try_advisory_lock(bigint) FROM PUBLIC")
    lock = a.singleton("timers")
    assert lock.try_acquire() is False
    assert not lock.held() and lock._conn is None


def test_integrity_check_counts_filings_in_an_unknown_state(instances: Any) -> None:
    [a] = instances(1)
    assert a.integrity_check() == "ok"
    f, _ = a.insert_filing(filing("ODD"), now=T0)
    a.insert_filing(filing("FINE"), now=T0)
    a._x("UPDATE filings SET state = 'bogus' WHERE id = ?", (f.id,))
    assert a.integrity_check() == "1 filings in an unknown state"


def test_queries_read_this_journal(instances: Any) -> None:
    [a] = instances(1)
    a.insert_filing(filing("Q1"), now=T0)
    counts = a.queries().counts_by_state(fresh=True)
    assert counts["received"] == 1 and sum(counts.values()) == 1


def test_doctor_reports_each_check_exactly(cfg: Any, pg_dsn: Any) -> None:
    from gateway.journal.postgres import pg_checks
    with psycopg.connect(cfg.conninfo()) as c:
        version = c.execute("SHOW server_version").fetchone()[0]      # e.g. "15.18 (Debian 15.18-0+deb12u1)"
    assert version[:1].isdigit() and "." in version
    name = cfg.describe()
    reachable = ("journal reachable", True, f"{name} (PostgreSQL {version}, no TLS)")
    assert pg_checks(cfg) == [
        reachable,
        ("journal schema", False, f"version 0, this ics2gw uses {schema_pg.LATEST} (run `ics2gw journal migrate`)"),
        ("journal permissions", True, "may create the schema")]
    with _superuser(pg_dsn) as admin:     # the owner's CREATE comes from the PUBLIC-less database grant: revoke it
        admin.execute(f'ALTER DATABASE "{pg_dsn.dbname}" OWNER TO {pg_dsn.server.superuser}')
        admin.execute(f'REVOKE ALL ON DATABASE "{pg_dsn.dbname}" FROM PUBLIC')
        admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{pg_dsn.dbname}" TO ics2gw')
    assert pg_checks(cfg)[2] == ("journal permissions", False,
                                 "the role may not create the schema: run `ics2gw journal migrate` as the owner")
    with _superuser(pg_dsn) as admin:
        admin.execute(f'ALTER DATABASE "{pg_dsn.dbname}" OWNER TO ics2gw')
    migrate_journal(cfg)
    assert pg_checks(cfg) == [
        reachable, ("journal schema", True, f"version {schema_pg.LATEST}, this ics2gw uses {schema_pg.LATEST}"),
        ("journal permissions", True, "read and write on every table")]
    # one privilege missing is enough (has_table_privilege with a list of privileges is true if ANY is held: the
    # check named every table readable and writable while a privilege was missing)
    lost = {"filings": "UPDATE", "messages": "DELETE", "events": "INSERT", "inbound_dedup": "SELECT",
            "outbox_cursors": "UPDATE"}
    with _superuser(pg_dsn) as admin:
        for table, privilege in lost.items():
            admin.execute(f"REVOKE {privilege} ON {table} FROM ics2gw")
    assert pg_checks(cfg)[2] == ("journal permissions", False, "the role lacks SELECT/INSERT/UPDATE/DELETE on "
                                 "filings, messages, events, inbound_dedup, outbox_cursors")


def test_an_unreachable_database_is_named_by_the_first_line_of_its_error(pg_dsn: Any) -> None:
    import socket

    from gateway.journal.postgres import pg_checks
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = pg_config(f"host=127.0.0.1 port={port} dbname=j user=ics2gw", "pw", connect_timeout_seconds=2.0)
    [(check, ok, detail)] = pg_checks(cfg)
    assert (check, ok) == ("journal reachable", False)
    # psycopg's message has a second line ("Is the server running ...?"): only the first is kept
    assert detail.startswith(f"{cfg.describe()}: cannot connect: connection failed: ") and "\n" not in detail
    assert "Connection refused" in detail and "Is the server running" not in detail


def test_event_horizon_waiting_too_long_for_its_lock_is_unavailability(instances: Any, pg_dsn: Any) -> None:
    from gateway.journal.errors import JournalUnavailable
    [a] = instances(1)
    a.insert_filing(filing("H"), now=T0)
    horizon = a.event_horizon()
    events = a.events_after(0)
    assert [e.id for e in events] == [e.id for e in a.events()] and events[-1].id == horizon
    assert [(e.filing_id, e.message_id, e.event) for e in events] == \
        [(e.filing_id, e.message_id, e.event) for e in a.events()]
    a.enqueue_message(out("hz@x", None), now=T0)
    [queued] = a.events_after(horizon)
    assert (queued.message_id, queued.event) == ("hz@x", "message-queued")
    with psycopg.connect(pg_dsn.with_password) as other, other.transaction():
        other.execute("LOCK TABLE events IN ROW EXCLUSIVE MODE")     # a writer that has not committed yet
        with pytest.raises(JournalUnavailable, match=r"^database unavailable \(LockNotAvailable\): canceling "
                                                     r"statement due to lock timeout$"):
            a.event_horizon(lock_timeout_ms=50)


def test_statement_results_read_like_sqlite_cursors(instances: Any, tmp_path: Any) -> None:
    """`JournalCore` is written against sqlite3's cursor and row: the PostgreSQL adapter's results must read the
    same way (fetchone advancing row by row then None, fetchall the rest, iteration, rowcount of a change, rows by
    position and by column name, keys in column order), compared with SQLite on the same statements."""
    import sqlite3

    [j] = instances(1)
    lite = sqlite3.connect(tmp_path / "cmp.sqlite3")
    lite.row_factory = sqlite3.Row
    sql = "SELECT * FROM (SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, 'y' UNION ALL SELECT 3, 'z') t ORDER BY a"
    pg_res, lite_res = j._x(sql), lite.execute(sql)
    for _ in range(3):
        p, s = pg_res.fetchone(), lite_res.fetchone()
        assert (tuple(p), p["b"], p[1], p.keys(), len(p)) == (tuple(s), s["b"], s[1], s.keys(), len(s))
    assert pg_res.fetchone() is None and lite_res.fetchone() is None
    pg_res, lite_res = j._x(sql), lite.execute(sql)
    assert tuple(pg_res.fetchone()) == tuple(lite_res.fetchone()) == (1, "x")
    assert [tuple(r) for r in pg_res.fetchall()] == [tuple(r) for r in lite_res.fetchall()] == [(2, "y"), (3, "z")]
    assert pg_res.fetchall() == [] and pg_res.fetchone() is None
    assert [tuple(r) for r in j._x(sql)] == [(1, "x"), (2, "y"), (3, "z")]
    j.enqueue_message(out("rc1@x", None), now=T0)
    j.enqueue_message(out("rc2@x", None), now=T0)
    changed = j._x("UPDATE messages SET attempts = attempts WHERE message_id IN (?, ?)", ("rc1@x", "rc2@x"))
    assert changed.rowcount == 2 and changed.fetchall() == [] and changed.fetchone() is None
    lite.close()


def test_a_fresh_postgresql_journal_counts_its_own_commits_and_rollbacks_from_zero(instances: Any) -> None:
    """Nothing is recovered at open on PostgreSQL (the daemon logs a non-zero `recovered_at_open`), there is no
    file path, and the commit / rollback counters start at zero and count this journal's transactions."""
    [j] = instances(1)
    assert (j.commits, j.rollbacks, j.recovered_at_open, j.path) == (0, 0, 0, None)
    with j.transaction():
        j.insert_filing(filing("COUNT-1"), now=T0)
    with pytest.raises(ZeroDivisionError):
        with j.transaction():
            j.insert_filing(filing("COUNT-2"), now=T0)
            1 / 0
    assert (j.commits, j.rollbacks) == (1, 1)
    assert [f["lrn"] for f in j.list_filings(limit=10)] == ["COUNT-1"]


def test_migrate_upgrades_a_journal_of_an_older_release_and_refuses_a_newer_one(cfg: Any, pg_dsn: Any,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal written by this release (version 5) meets a release with one more migration: only the new step runs,
    and is recorded. A journal newer than the running release is refused by name, version and the way out."""
    from gateway.journal.errors import SchemaTooNew
    from gateway.journal.postgres import pg_migrate
    assert pg_migrate(cfg, now=T0) == [schema_pg.LATEST]
    step = (schema_pg.LATEST + 1, "a later release's step", "CREATE TABLE later_release_step (x INTEGER)")
    monkeypatch.setattr(schema_pg, "MIGRATIONS", [*schema_pg.MIGRATIONS, step])
    monkeypatch.setattr(schema_pg, "LATEST", step[0])
    assert pg_migrate(cfg, now=T0) == [step[0]]
    assert pg_migrate(cfg, now=T0) == []
    with psycopg.connect(pg_dsn.with_password) as c:
        assert c.execute("SELECT version, description FROM schema_migrations ORDER BY version").fetchall() == [
            (step[0] - 1, schema_pg.MIGRATIONS[0][1]), (step[0], "a later release's step")]
    monkeypatch.undo()
    with pytest.raises(SchemaTooNew) as exc:
        pg_migrate(cfg, now=T0)
    assert str(exc.value) == (f"{cfg.describe()}: schema version {schema_pg.LATEST + 1} is newer than this ics2gw "
                              f"knows ({schema_pg.LATEST}); upgrade ics2gw")
    with pytest.raises(SchemaTooNew) as exc:             # the daemon's open (no migration) refuses it the same way
        open_journal(cfg, migrate=False)
    assert str(exc.value) == (f"{cfg.describe()}: schema version {schema_pg.LATEST + 1} is newer than this ics2gw "
                              f"knows ({schema_pg.LATEST}); upgrade ics2gw")


def test_opening_an_unreachable_journal_fails_at_once_naming_the_cause(pg_dsn: Any) -> None:
    """The daemon's open waits for its pool's first connection (`connect_timeout_seconds`) and fails naming libpq's
    cause (refused, wrong password), not the pool's "initialization incomplete" nor later on the first statement."""
    import socket

    from gateway.journal.errors import JournalUnavailable
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = pg_config(f"host=127.0.0.1 port={port} dbname=j user=ics2gw", "pw", connect_timeout_seconds=1.0)
    with pytest.raises(JournalUnavailable) as exc:
        open_journal(cfg, migrate=False)
    assert str(exc.value).startswith("cannot connect to the journal database: ") and "\n" not in str(exc.value)
    assert "Connection refused" in str(exc.value)
    wrong = pg_config(str(pg_dsn), "not-the-password", connect_timeout_seconds=1.0)
    with pytest.raises(JournalUnavailable) as exc:
        open_journal(wrong, migrate=False)
    assert str(exc.value).startswith("cannot connect to the journal database: ")
    assert 'password authentication failed for user "ics2gw"' in str(exc.value) and "not-the-password" not in str(exc.value)


def test_a_role_that_may_not_create_the_schema_is_told_how_to_migrate(cfg: Any, pg_dsn: Any) -> None:
    from gateway.journal.postgres import pg_migrate
    with _superuser(pg_dsn) as admin:     # the database and its public schema belong to the superuser, not the role
        admin.execute(f'ALTER DATABASE "{pg_dsn.dbname}" OWNER TO {pg_dsn.server.superuser}')
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        admin.execute(f'GRANT CONNECT ON DATABASE "{pg_dsn.dbname}" TO {pg_dsn.user}')
    with pytest.raises(JournalError) as exc:
        pg_migrate(cfg, now=T0)
    text = str(exc.value)
    assert text.startswith(f"{cfg.describe()}: the journal role may not create the schema: permission denied ")
    assert text.endswith(" (grant CREATE on the database or schema, or run `ics2gw journal migrate` as the owner)")
    assert "\n" not in text


def test_a_reader_survives_a_database_restart_without_an_error(cfg: Any, pg_dsn: Any) -> None:
    """The pools check a connection before lending it: after the database restarted, the first read on a pool whose
    connections all died answers normally instead of failing once with `JournalUnavailable`."""
    writer = open_journal(cfg, now=T0)
    reader = open_reader(cfg)
    try:
        writer.insert_filing(filing("RESTART-1"), now=T0)
        assert [f["lrn"] for f in reader.list_filings(limit=5)] == ["RESTART-1"]
        pg_dsn.server.restart()
        assert [f["lrn"] for f in reader.list_filings(limit=5)] == ["RESTART-1"]
        assert writer.count_by_state() == {"received": 1}
    finally:
        reader.close()
        writer.close()
        if not pg_dsn.server.running():
            pg_dsn.server.start()
