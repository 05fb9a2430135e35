"""Nothing found in the spool or sent to the API can stop the daemon (issue 16, "Daemon robustness").

Real parts throughout: the real Acceptor (engine, sealing, validation), a real SQLite journal with its group
committer, real files, FIFOs and symlinks in a temporary spool, a real tmpfs (mounted here when we are root)
for a full disk. A "full journal" is SQLite's own SQLITE_FULL, produced by ``PRAGMA max_page_count``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from gateway.journal.errors import JournalUnavailable
from gateway.pipeline.config import ApiConfig, IntakeConfig
from gateway.pipeline.intake import NAME_MAX, SpoolIntake, bounded_name, display_name
from gateway.pipeline.storage import StorageUnavailable, storage_problem
from gateway.pipeline.supervisor import Supervisor
from tests.pipeline_harness import REPO, ens, fixture

INVALID = "ens-IE3F32-invalid-lrn-eori.xml"


# ----------------------------------------------------------------------------------------------- fixtures
class World:
    def __init__(self, root: Path, acceptor: Any, journal: Any) -> None:
        self.root, self.acceptor, self.journal = root, acceptor, journal
        self.alerts: list[dict[str, Any]] = []
        self.cfg = IntakeConfig(spool_dir=root / "in", work_dir=root / "work", archive_dir=root / "archive",
                                rejected_dir=root / "rejected", status_dir=root / "status", inbox_dir=root / "inbox",
                                poll_seconds=0.05, validation="block", validation_profile=None)
        self.cfg.ensure()
        self.intake = SpoolIntake(self.cfg, acceptor,
                                  alert=lambda kind, **d: self.alerts.append({"alert": kind, **d}))

    def drop(self, name: str | bytes, data: bytes) -> Path:
        tmp = self.root / ".drop.tmp"
        tmp.write_bytes(data)
        target = os.path.join(os.fsencode(self.cfg.spool_dir), name) if isinstance(name, bytes) \
            else self.cfg.spool_dir / name
        os.replace(tmp, target)
        return Path(os.fsdecode(target))

    def names(self, folder: str) -> list[str]:
        return sorted(os.listdir(self.root / folder))

    def reasons(self) -> list[dict[str, Any]]:
        return [json.loads((self.cfg.rejected_dir / n).read_text()) for n in self.names("rejected")
                if n.endswith(".reason.json")]


@pytest.fixture
async def world(tmp_path: Path, pki: Path) -> AsyncIterator[World]:
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.sqlite import SqliteJournal
    from gateway.pipeline.accept import Acceptor
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal.open(path)
    reader = SqliteJournal.open_reader(path)
    writer = JournalWriter(journal).start()
    acc = Acceptor(Engine.from_config(cfg), writer, reader, Router(load_transport_config(cfg)))
    yield World(tmp_path, acc, journal)
    await writer.close()
    reader.close()
    journal.close()


def _filed(w: World, lrn: str) -> bool:
    return any(f.lrn == lrn for f in w.acceptor.journal.find_filings_by_lrn(lrn))


# ----------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("length", [242, 250, 255])
async def test_long_file_names_are_claimed_and_filed(world: World, length: int) -> None:
    """242-255 byte names: the claim rename used to fail with ENAMETOOLONG and kill the intake task."""
    lrn = f"LONG{length}"
    name = ("x" * (length - 4)) + ".xml"
    assert len(name) == length
    world.drop(name, ens(lrn))
    bad = ("y" * (length - 4)) + ".xml"
    world.drop(bad, fixture(INVALID))  # rejected: its reason file needs 12 more bytes of name
    await world.intake.poll_once()
    assert _filed(world, lrn)
    assert world.names("in") == [] and world.names("work") == []
    assert len(world.names("archive")) == 1 and all(len(os.fsencode(n)) <= NAME_MAX for n in world.names("archive"))
    [reason] = world.reasons()
    assert reason["reason"] == "invalid" and reason["file"] == bad  # the whole original name, not the claimed one
    assert not world.alerts


def test_bounded_names_are_distinct_and_fit() -> None:
    a, b = "a" * 250 + "1.xml", "a" * 250 + "2.xml"
    ba, bb = bounded_name("p__", a), bounded_name("p__", b)
    assert ba != bb and ba.endswith("1.xml") and bb.endswith("2.xml")
    assert len(os.fsencode(ba)) <= NAME_MAX - len(".reason.json")
    assert bounded_name("p__", "short.xml") == "p__short.xml"
    # multi-byte characters: the byte length counts, not the number of characters
    assert len(os.fsencode(bounded_name("p__", "é" * 125 + ".xml"))) <= NAME_MAX


async def test_non_utf8_file_name_is_filed(world: World) -> None:
    raw = b"ens-\xff\xfe-latin1-\xe9.xml"
    world.drop(raw, ens("NONUTF8NAME1"))
    await world.intake.poll_once()
    assert _filed(world, "NONUTF8NAME1"), world.reasons()
    assert world.names("rejected") == [] and len(world.names("archive")) == 1
    [f] = world.acceptor.journal.find_filings_by_lrn("NONUTF8NAME1")
    life = world.acceptor.journal.lifecycle(f.id)
    assert "spool:ens-\\\\xff\\\\xfe-latin1-\\\\xe9.xml" in json.dumps(life), json.dumps(life)[:2000]
    assert display_name(os.fsdecode(raw)) == "ens-\\xff\\xfe-latin1-\\xe9.xml"


# ----------------------------------------------------------------------------------------------- file kinds
async def test_symlink_is_rejected_not_followed(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "outside.xml"
    secret.write_bytes(ens("SYMLINK0001"))
    os.symlink(secret, world.cfg.spool_dir / "link.xml")
    os.symlink(tmp_path / "nowhere.xml", world.cfg.spool_dir / "dangling.xml")
    await world.intake.poll_once()
    assert not _filed(world, "SYMLINK0001")
    assert secret.read_bytes() == ens("SYMLINK0001")  # the target is untouched, the link itself moved
    reasons = world.reasons()
    assert sorted(r["file"] for r in reasons) == ["dangling.xml", "link.xml"]
    assert all(r["reason"] == "not-a-regular-file" and "symlink" in r["error"] for r in reasons)
    assert world.names("in") == [] and world.names("work") == []


async def test_fifo_device_and_directory_are_rejected_not_ignored(world: World) -> None:
    os.mkfifo(world.cfg.spool_dir / "pipe.xml")   # reading it would block the intake for ever
    (world.cfg.spool_dir / "folder.xml").mkdir()
    kinds = {"pipe.xml": "fifo", "folder.xml": "directory"}
    try:
        os.mknod(world.cfg.spool_dir / "null.xml", 0o600 | 0o020000, os.makedev(1, 3))  # like /dev/null
        kinds["null.xml"] = "character-device"
    except PermissionError:
        pass  # not root: the FIFO and the directory still cover "not a regular file"
    world.drop("good.xml", ens("FIFOOK0001"))
    await asyncio.wait_for(world.intake.poll_once(), timeout=60)
    assert _filed(world, "FIFOOK0001")
    got = {r["file"]: r for r in world.reasons()}
    assert set(got) == set(kinds)
    for name, kind in kinds.items():
        assert got[name]["reason"] == "not-a-regular-file" and kind in got[name]["error"], got[name]


# ----------------------------------------------------------------------------------------------- storage
@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only): a real file system that runs out of space."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs to simulate a full disk ({r.stderr.strip()}); "
                    "run this test as root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / ".f-filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    # a tmpfs keeps a few bytes for small writes: fill those too
    for i in range(64):
        try:
            (folder / f".f{i}").write_bytes(b"\0" * 1024)
        except OSError:
            break
    return filler


async def test_full_disk_in_the_rejection_path_keeps_the_file_and_recovers(world: World, tiny_tmpfs: Path) -> None:
    """The whole spool on a full file system: ENOSPC while writing the reason file. The invalid file stays in
    the work folder, one alert, intake goes on (a valid file behind it is filed: its claim and archive renames
    need no space), and the rejection completes by itself once space returns."""
    world.root = tiny_tmpfs
    world.cfg = IntakeConfig(**{**world.cfg.__dict__, **{k: tiny_tmpfs / sub for k, sub in (
        ("spool_dir", "in"), ("work_dir", "work"), ("archive_dir", "archive"), ("rejected_dir", "rejected"),
        ("status_dir", "status"))}})
    world.cfg.ensure()
    world.intake.cfg = world.cfg
    world.drop("bad.xml", fixture(INVALID))
    world.drop("good.xml", ens("ENOSPCOK001"))
    os.utime(world.cfg.spool_dir / "good.xml", (2e9, 2e9))  # claimed after bad.xml (oldest first)
    _fill(tiny_tmpfs)
    await world.intake.poll_once()
    assert _filed(world, "ENOSPCOK001")
    [left] = world.names("work")
    assert left.endswith("bad.xml") and world.names("rejected") == []
    [alert] = world.alerts
    assert alert["alert"] == "intake-blocked" and alert["problem"] == "full" and alert["step"] == "reject"
    await world.intake.poll_once()  # still full, still within the backoff: no second alert
    assert len(world.alerts) == 1 and world.names("work") == [left]
    for p in tiny_tmpfs.iterdir():
        if p.name.startswith(".f"):
            p.unlink()
    for entry in world.intake.waiting.values():
        entry.next_at = 0.0  # the backoff has elapsed
    await world.intake.poll_once()
    assert world.names("work") == [] and not world.intake.waiting
    assert [r["reason"] for r in world.reasons()] == ["invalid"]
    assert len(world.alerts) == 1  # one alert for the episode, not one per retry


async def test_full_journal_leaves_the_file_for_a_retry_never_rejects_it(world: World) -> None:
    """SQLITE_FULL on the journal is not the file's fault: it must not land in the rejected folder."""
    conn = world.journal._conn  # noqa: SLF001 - the writer's own connection: its page budget is the disk
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    world.drop("full.xml", ens("JFULL00001", base="ens-IE3F10-sea.xml"))
    await world.intake.poll_once()
    assert not _filed(world, "JFULL00001")
    assert world.names("rejected") == [] and len(world.names("work")) == 1
    assert [a["problem"] for a in world.alerts] == ["full"] and world.alerts[0]["step"] == "journal"
    await world.intake.poll_once()  # within the backoff: not retried, not alerted again
    assert len(world.alerts) == 1
    conn.execute("PRAGMA max_page_count = 1073741823")
    for entry in world.intake.waiting.values():
        entry.next_at = 0.0
    await world.intake.poll_once()
    assert _filed(world, "JFULL00001") and world.names("work") == [] and len(world.names("archive")) == 1
    assert not world.intake.waiting


async def test_a_postgresql_journal_away_longer_than_the_writers_wait_keeps_the_file(tmp_path: Path, pki: Path,
                                                                                    pg_server: Any,
                                                                                    pg_dsn: Any) -> None:
    """The database is down for longer than the group-commit writer waits (shortened to 0.5 s here; 5 min in the
    daemon): the acceptor gets JournalUnavailable, which is the machine's condition, so the spool file stays in
    the work folder with one intake-blocked alert naming it, and is filed once the database is back."""
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.factory import open_journal, open_reader
    from gateway.pipeline.accept import Acceptor
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    from tests.journal_backends import pg_config
    jcfg = pg_config(str(pg_dsn), pg_dsn.password)
    journal = open_journal(jcfg, daemon=False)
    reader = open_reader(jcfg)
    writer = JournalWriter(journal, unavailable_budget=0.5).start()
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    w = World(tmp_path, Acceptor(Engine.from_config(cfg), writer, reader, Router(load_transport_config(cfg))),
              journal)
    try:
        pg_server.kill()
        w.drop("away.xml", ens("PGAWAY00SPOOL", base="ens-IE3F10-sea.xml"))
        await w.intake.poll_once()
        assert w.names("rejected") == [] and len(w.names("work")) == 1, (w.names("rejected"), w.reasons())
        assert [(a["alert"], a["problem"], a["step"]) for a in w.alerts] == [("intake-blocked", "unavailable",
                                                                                "journal")], w.alerts
        pg_server.start()
        for entry in w.intake.waiting.values():
            entry.next_at = 0.0
        for _ in range(50):                      # the pools reconnect: the first tries may still meet the restart
            await w.intake.poll_once()
            if w.names("work") == []:
                break
            for entry in w.intake.waiting.values():
                entry.next_at = 0.0
            await asyncio.sleep(0.2)
        assert _filed(w, "PGAWAY00SPOOL") and w.names("work") == [] and len(w.names("archive")) == 1
        assert w.names("rejected") == [] and len(w.alerts) == 1
    finally:
        if not pg_server.running():
            pg_server.start()
        await writer.close()
        reader.close()
        journal.close()


def test_storage_problem_classifies_the_real_errors(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.Error) as full:
        for _ in range(100):
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 4000,))
    assert storage_problem(full.value) == "full"
    conn.close()
    ro = sqlite3.connect(f"file:{tmp_path / 'x.db'}?mode=ro", uri=True)
    with pytest.raises(sqlite3.Error) as readonly:
        ro.execute("INSERT INTO t VALUES (1)")
    assert storage_problem(readonly.value) == "read-only"
    assert storage_problem(OSError(28, "No space left on device")) == "full"
    assert storage_problem(ValueError("bad input")) is None
    assert storage_problem(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    err = StorageUnavailable("journal", "/j", "full", "x")
    assert storage_problem(RuntimeError("wrapped")) is None and storage_problem(err) == "full"
    # a PostgreSQL journal that does not answer (after the writer's wait): the machine's condition, not the file's,
    # so the intake keeps the file and retries it (the path above), the API answers 503
    away = JournalUnavailable("database unavailable (OperationalError): connection refused", before_commit=True)
    assert storage_problem(away) == "unavailable"
    try:
        try:
            raise away
        except JournalUnavailable as exc:
            raise RuntimeError("while filing") from exc
    except RuntimeError as wrapped:
        assert storage_problem(wrapped) == "unavailable"
    assert storage_problem(JournalUnavailable("lost during COMMIT", before_commit=False)) == "unavailable"


# ----------------------------------------------------------------------------------------------- API
async def test_api_answers_503_naming_the_journal_when_it_is_full(world: World) -> None:
    from gateway.pipeline.api import make_app
    alerts: list[dict[str, Any]] = []
    app = make_app(world.acceptor, world.acceptor.journal, ApiConfig(True, "127.0.0.1", 0, 1 << 20), lambda: None,
                   "conformance", alert=lambda kind, **d: alerts.append({"alert": kind, **d}),
                   journal_path=world.journal.path)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/filings"  # noqa: SLF001
    conn = world.journal._conn  # noqa: SLF001
    try:
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        async with ClientSession() as s:
            for _ in range(2):
                async with s.post(url, data=ens("API503X001", base="ens-IE3F10-sea.xml")) as r:
                    body = await r.json()
                    assert r.status == 503, body
                    assert r.headers["Retry-After"].isdigit()
                    assert body["error"] == "storage-unavailable" and body["storage"] == "journal"
                    assert body["condition"] == "full" and str(world.journal.path) == body["path"]
            assert [a["alert"] for a in alerts] == ["storage-unavailable"]  # once per episode
            conn.execute("PRAGMA max_page_count = 1073741823")
            async with s.post(url, data=ens("API503X001", base="ens-IE3F10-sea.xml")) as r:
                assert r.status == 202, await r.text()
            # other errors are still ordinary answers, not 503
            async with s.post(url, data=b"<nonsense/>") as r:
                assert r.status == 400
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------------------------- supervisor
async def test_supervisor_restarts_a_failed_task_and_alerts_only_stop_ends_it() -> None:
    alerts: list[dict[str, Any]] = []
    runs = {"n": 0}
    stop = asyncio.Event()

    async def flaky() -> None:
        runs["n"] += 1
        if runs["n"] == 1:
            raise OSError(36, "File name too long")
        if runs["n"] == 2:
            return  # ending by itself is a failure too
        await stop.wait()

    sup = Supervisor(lambda kind, **d: alerts.append({"alert": kind, **d}), initial_backoff=0.01)
    task = sup.supervise("intake", flaky)
    while runs["n"] < 3:
        await asyncio.sleep(0.01)
    assert not task.done()
    assert [a["task"] for a in alerts] == ["intake", "intake"] and "File name too long" in alerts[0]["error"]
    assert sup.status()["intake"]["restarts"] == 2 and sup.status()["intake"]["running"]
    sup.stop()
    stop.set()
    await sup.join(timeout=5)
    assert task.done() and runs["n"] == 3
