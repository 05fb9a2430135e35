"""run_as_singleton: one holder at a time, failover when the holder's lock goes, release on stop; and the instance
id. (Two PostgreSQL journals on one database: at the end, when the ``pg_dsn`` fixture exists.)"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from gateway.instance import instance_id
from gateway.pipeline.singleton import Leadership, run_as_singleton


class SharedLock:
    """What a database advisory lock does for several sessions: one holder; ``kill`` ends the holder's session."""

    def __init__(self) -> None:
        self.holder: object | None = None
        self.mutex = threading.Lock()
        self.calls = 0

    def session(self) -> Session:
        return Session(self)


class Session:
    def __init__(self, shared: SharedLock) -> None:
        self.shared, self.dead = shared, False

    def try_acquire(self) -> bool:
        with self.shared.mutex:
            self.shared.calls += 1
            if self.dead:
                raise ConnectionError("server closed the connection")
            if self.shared.holder in (None, self):
                self.shared.holder = self
                return True
            return False

    def held(self) -> bool:
        with self.shared.mutex:
            return not self.dead and self.shared.holder is self

    def release(self) -> None:
        with self.shared.mutex:
            if self.shared.holder is self:
                self.shared.holder = None

    def kill(self) -> None:
        """The session's connection dies: the database releases its locks."""
        with self.shared.mutex:
            self.dead = True
            if self.shared.holder is self:
                self.shared.holder = None

    def revive(self) -> None:
        self.dead = False


def _task(log: list[str], who: str):
    async def run() -> None:
        log.append(f"{who}:start")
        try:
            while True:
                await asyncio.sleep(0.01)
        finally:
            log.append(f"{who}:end")
    return run


async def _until(cond, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_one_holder_and_failover_when_the_holder_session_dies() -> None:
    shared = SharedLock()
    a, b = shared.session(), shared.session()
    log: list[str] = []
    alerts: list[tuple[str, dict]] = []
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    lead_a, lead_b = Leadership(), Leadership()
    ta = asyncio.create_task(run_as_singleton(a, "timers", _task(log, "a"), stop_a,
                                              lambda k, **d: alerts.append((k, d)), retry_seconds=0.02,
                                              check_seconds=0.02, leadership=lead_a))
    await _until(lambda: "a:start" in log)
    tb = asyncio.create_task(run_as_singleton(b, "timers", _task(log, "b"), stop_b,
                                              lambda k, **d: alerts.append((k, d)), retry_seconds=0.02,
                                              check_seconds=0.02, grace_seconds=0.1, leadership=lead_b))
    await asyncio.sleep(0.2)
    assert log == ["a:start"] and lead_a.held() == ["timers"] and lead_b.held() == []
    a.kill()                                # the holder's connection died
    await _until(lambda: "b:start" in log)
    assert log.index("a:end") < log.index("b:start")     # never both at once
    assert lead_a.held() == [] and lead_b.held() == ["timers"] and lead_a.lost == {"timers": 1}
    assert alerts == [("singleton-lost", {"task": "timers"})]
    a.revive()                              # the database is back for a: it waits, b keeps the task
    await asyncio.sleep(0.2)
    assert log.count("a:start") == 1 and lead_a.held() == []
    stop_b.set()
    await asyncio.wait_for(tb, 5)
    assert shared.holder is not b           # released on stop ...
    await _until(lambda: log.count("a:start") == 2)   # ... and taken over
    stop_a.set()
    await asyncio.wait_for(ta, 5)
    assert shared.holder is None and log[-1] == "a:end"


async def test_a_task_that_fails_releases_the_lock_and_raises() -> None:
    shared = SharedLock()
    s = shared.session()

    async def boom() -> None:
        raise RuntimeError("pull failed")

    with pytest.raises(RuntimeError, match="pull failed"):
        await run_as_singleton(s, "pull:sti", boom, asyncio.Event(), None, leadership=Leadership())
    assert shared.holder is None


async def test_the_lock_checks_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    class Lock:
        def try_acquire(self) -> bool:
            seen.append(threading.get_ident())
            return True

        def held(self) -> bool:
            seen.append(threading.get_ident())
            return True

        def release(self) -> None:
            seen.append(threading.get_ident())

    stop = asyncio.Event()
    t = asyncio.create_task(run_as_singleton(Lock(), "hmrc-poller", _task([], "x"), stop, None,
                                             check_seconds=0.02, leadership=Leadership()))
    await asyncio.sleep(0.15)
    stop.set()
    await asyncio.wait_for(t, 5)
    assert len(seen) >= 3 and loop_thread not in seen


async def test_sqlite_locks_are_always_ours(tmp_path) -> None:
    from gateway.journal.config import JournalConfig
    from gateway.journal.factory import open_journal
    j = open_journal(JournalConfig(path=tmp_path / "j.sqlite3"), daemon=False)
    try:
        log: list[str] = []
        stop = asyncio.Event()
        lead = Leadership()
        t = asyncio.create_task(run_as_singleton(j.singleton("timers"), "timers", _task(log, "x"), stop, None,
                                                 check_seconds=0.02, leadership=lead))
        await _until(lambda: log == ["x:start"])
        assert lead.held() == ["timers"]
        stop.set()
        await asyncio.wait_for(t, 5)
        assert log == ["x:start", "x:end"] and lead.held() == []
    finally:
        j.close()


def test_instance_id_is_unique_per_process_and_stable() -> None:
    a = instance_id()
    assert a == instance_id()
    _host, pid, rnd = a.rsplit("-", 2)
    assert pid == str(os.getpid()) and len(rnd) == 6 and int(rnd, 16) >= 0
    r, w = os.pipe()
    child = os.fork()
    if child == 0:   # a forked child is another process: another id
        os.write(w, instance_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    other = os.read(r, 200).decode()
    os.close(r), os.close(w)
    assert other != a and other.rsplit("-", 2)[1] == str(child)


# ------------------------------------------------------------------------------------------------- PostgreSQL
def _pg_journal(pg_dsn, monkeypatch):
    from gateway.journal.config import JournalConfig
    from gateway.journal.factory import open_journal
    jcfg = JournalConfig(path=None, backend="postgresql", dsn=str(pg_dsn), password=pg_dsn.password,  # type: ignore[arg-type]
                         connect_timeout_seconds=5)
    return open_journal(jcfg, instance=instance_id(), migrate=True)


async def test_two_postgresql_journals_one_holder_and_failover_when_its_session_is_killed(pg_dsn, monkeypatch) -> None:
    import psycopg
    ja, jb = _pg_journal(pg_dsn, monkeypatch), _pg_journal(pg_dsn, monkeypatch)
    try:
        log: list[str] = []
        alerts: list[tuple[str, dict]] = []
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        lead_a, lead_b = Leadership(), Leadership()
        ta = asyncio.create_task(run_as_singleton(ja.singleton("pull:sti"), "pull:sti", _task(log, "a"), stop_a,
                                                  lambda k, **d: alerts.append((k, d)), retry_seconds=0.1,
                                                  check_seconds=0.1, leadership=lead_a))
        await _until(lambda: "a:start" in log)
        tb = asyncio.create_task(run_as_singleton(jb.singleton("pull:sti"), "pull:sti", _task(log, "b"), stop_b,
                                                  lambda k, **d: alerts.append((k, d)), retry_seconds=0.1,
                                                  check_seconds=0.1, grace_seconds=0.5, leadership=lead_b))
        await asyncio.sleep(0.5)
        assert log == ["a:start"] and lead_b.held() == []
        # the holder's database session dies (a crashed host, a cut connection): the database releases the lock
        with psycopg.connect(pg_dsn.with_password, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                                   "AND granted AND pid <> pg_backend_pid()").fetchall()
        assert len(killed) == 1
        await _until(lambda: "b:start" in log, timeout=10)
        assert log.index("a:end") < log.index("b:start")
        assert lead_a.lost == {"pull:sti": 1} and lead_b.held() == ["pull:sti"]
        assert ("singleton-lost", {"task": "pull:sti"}) in alerts
        await asyncio.sleep(0.5)
        assert log.count("a:start") == 1              # a waits: b holds it now
        stop_b.set()
        await asyncio.wait_for(tb, 10)
        await _until(lambda: log.count("a:start") == 2, timeout=10)   # b released on stop: a takes it again
        stop_a.set()
        await asyncio.wait_for(ta, 10)
    finally:
        ja.close()
        jb.close()
