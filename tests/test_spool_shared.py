"""One spool folder shared by several gateway instances: two SpoolIntake objects on one folder never both take a
file, a file a live instance is filing is left alone, and the claimed files of an instance that died are filed
by a live one (once: intake is idempotent)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.pipeline.config import IntakeConfig
from gateway.pipeline.intake import SpoolIntake
from tests.pipeline_harness import REPO, ens


class Shared:
    def __init__(self, root: Path, acceptor: Any) -> None:
        self.root, self.acceptor = root, acceptor
        self.alerts: list[dict[str, Any]] = []
        self.cfg = IntakeConfig(spool_dir=root / "in", work_dir=root / "work", archive_dir=root / "archive",
                                rejected_dir=root / "rejected", status_dir=root / "status", inbox_dir=root / "inbox",
                                poll_seconds=0.02, validation="block", validation_profile=None)
        self.cfg.ensure()
        self.a = self.intake()
        self.b = self.intake()

    def intake(self) -> SpoolIntake:
        return SpoolIntake(self.cfg, self.acceptor, alert=lambda kind, **d: self.alerts.append({"alert": kind, **d}))

    def drop(self, name: str, data: bytes, folder: str = "in") -> Path:
        tmp = self.root / ".drop.tmp"
        tmp.write_bytes(data)
        target = self.root / folder / name
        os.replace(tmp, target)
        return target

    def names(self, folder: str) -> list[str]:
        return sorted(os.listdir(self.root / folder))


@pytest.fixture
async def shared(tmp_path: Path, pki: Path) -> AsyncIterator[Shared]:
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.config import JournalConfig
    from gateway.journal.factory import open_journal, open_reader
    from gateway.pipeline.accept import Acceptor
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    jcfg = JournalConfig(path=tmp_path / "journal.sqlite3")
    journal = open_journal(jcfg, daemon=False)
    reader = open_reader(jcfg)
    writer = JournalWriter(journal).start()
    acc = Acceptor(Engine.from_config(cfg), writer, reader, Router(load_transport_config(cfg)))
    yield Shared(tmp_path, acc)
    await writer.close()
    reader.close()
    journal.close()


async def test_two_intakes_on_one_spool_file_each_unit_once(shared: Shared) -> None:
    n = 24
    for i in range(n):
        shared.drop(f"ens-{i:03d}.xml", ens(f"SHARED{i:03d}"))
    await asyncio.gather(*(i.poll_once() for i in (shared.a, shared.b, shared.a, shared.b)))
    assert shared.names("in") == [] and shared.names("work") == [] and shared.names("rejected") == []
    assert len(shared.names("archive")) == n
    assert shared.a.accepted + shared.b.accepted == n        # no file taken by both
    assert shared.a.accepted and shared.b.accepted            # both did work
    assert not shared.alerts
    filed = shared.acceptor.journal.list_filings(limit=1000)
    assert sorted(f["lrn"] for f in filed) == [f"SHARED{i:03d}" for i in range(n)]


async def test_a_unit_a_live_instance_holds_is_left_alone(shared: Shared) -> None:
    claimed = shared.drop("0123456789ab__held.xml", ens("HELD1"), folder="work")   # claimed by a live instance
    fd = os.open(claimed, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        await shared.b.poll_once()
        assert shared.names("work") == ["0123456789ab__held.xml"] and shared.b.accepted == 0
    finally:
        os.close(fd)                                    # that instance died: the kernel released its lock
    await shared.b.poll_once()
    assert shared.names("work") == [] and shared.b.accepted == 1 and not shared.alerts


async def test_claimed_files_of_an_instance_killed_with_sigkill_are_filed_by_a_live_one(shared: Shared) -> None:
    claimed = shared.drop("0123456789ab__dead.xml", ens("DEAD1"), folder="work")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(claimed)!r}, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        await shared.a.poll_once()
        assert shared.names("work") == ["0123456789ab__dead.xml"]       # its owner lives: not touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    await shared.a.poll_once()
    assert shared.names("work") == [] and len(shared.names("archive")) == 1 and not shared.alerts
    # the dead instance may already have journaled it before dying: filing it again is the same filing
    shared.drop("0123456789ab__dead.xml", ens("DEAD1"), folder="work")
    await shared.b.poll_once()
    assert [f["lrn"] for f in shared.acceptor.journal.list_filings(limit=10)] == ["DEAD1"]


async def test_a_spool_file_locked_while_being_claimed_is_skipped(shared: Shared) -> None:
    f = shared.drop("racing.xml", ens("RACE1"))
    fd = os.open(f, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)                       # another instance is between its lock and its rename
    try:
        await shared.a.poll_once()
        assert shared.names("in") == ["racing.xml"] and shared.a.accepted == 0
    finally:
        os.close(fd)
    await shared.a.poll_once()
    assert shared.names("in") == [] and shared.a.accepted == 1
