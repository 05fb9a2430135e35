"""`ics2gw resend` never sends a filing twice (issue 16, "Tests that catch the bugs they exist for").

The command runs in-process against a real journal file that a "worker" (this test, through the journal's own
claim API, as the sender does) holds messages in. Each refusal is checked for its exit code, its message,
and for what it must not have done (no requeue event, no new message, the worker's claim intact).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import exitcodes
from gateway.commands import resend
from gateway.journal.errors import InvalidTransition
from tests.pipeline_harness import GatewayEnv, SimEnv, ens

def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)


class World:
    def __init__(self, conf: Path, journal: Any, acceptor: Any) -> None:
        self.conf, self.journal, self.acceptor = conf, journal, acceptor

    def resend(self, ref: str, capsys: Any, *, reseal: bool = False) -> tuple[int, str]:
        rc = resend.run(argparse.Namespace(ref=ref, reseal=reseal, conf=self.conf))
        return rc, capsys.readouterr().err

    def messages(self, filing_id: int) -> list[dict[str, Any]]:
        return self.journal.lifecycle(filing_id)["messages"]

    def events(self, filing_id: int) -> list[str]:
        return [e["event"] for e in self.journal.lifecycle(filing_id)["events"]]


@pytest.fixture
async def world(tmp_path: Path, pki: Path) -> AsyncIterator[World]:
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.config import read_journal_config
    from gateway.journal.sqlite import SqliteJournal
    from gateway.pipeline.accept import Acceptor
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    gw = GatewayEnv.create(tmp_path / "gw", SimEnv.create(tmp_path / "sim", []))
    cfg = load_gateway_config(gw.conf)
    path = read_journal_config(cfg.root.section("journal")).path
    journal = SqliteJournal.open(path, daemon=False)
    writer = JournalWriter(journal).start()
    acceptor = Acceptor(Engine.from_config(cfg), writer, journal, Router(load_transport_config(cfg)))
    yield World(gw.conf, journal, acceptor)
    await writer.close()
    journal.close()


async def test_resend_of_a_message_being_sent_is_refused(world: World, capsys: Any) -> None:
    accepted = await world.acceptor.accept(ens("RESENDBUSY01"))
    [claimed] = world.journal.claim_due_messages(now=now(), worker="worker-1", limit=5)
    assert claimed.message_id == accepted.message_id and claimed.state == "sending"
    fid = accepted.filing.id
    before = world.events(fid)
    for ref, reseal in ((accepted.message_id, False), (accepted.message_id, True), ("RESENDBUSY01", False)):
        rc, err = world.resend(ref, capsys, reseal=reseal)
        assert rc == exitcodes.INVALID, (ref, reseal, err)
        assert "sending" in err or "no failed or held message" in err, err
    [m] = world.messages(fid)  # no second message (no reseal)
    assert m["state"] == "sending" and m["attempts"] == 1
    assert world.events(fid) == before  # nothing requeued, nothing transitioned
    # and the journal itself refuses, in case a worker claims it between the command's read and its write
    with pytest.raises(InvalidTransition):
        world.journal.requeue_message(accepted.message_id, now=now(), reason="operator resend")


async def test_resend_of_a_queued_message_is_refused(world: World, capsys: Any) -> None:
    accepted = await world.acceptor.accept(ens("RESENDQUEUED"))
    rc, err = world.resend(accepted.message_id, capsys)
    assert rc == exitcodes.INVALID and "queued" in err
    [m] = world.messages(accepted.filing.id)
    assert m["state"] == "queued"


async def test_failed_message_is_not_resent_while_its_reseal_is_in_flight(world: World, capsys: Any) -> None:
    accepted = await world.acceptor.accept(ens("RESENDSIBL01"))
    fid = accepted.filing.id
    world.journal.claim_due_messages(now=now(), worker="worker-1")
    world.journal.fail_message(accepted.message_id, worker="worker-1", now=now(), error="EBMS:0004/A001")
    rc, err = world.resend(accepted.message_id, capsys, reseal=True)
    assert rc == exitcodes.OK, err
    new = [m for m in world.messages(fid) if m["message_id"] != accepted.message_id]
    assert [m["state"] for m in new] == ["queued"]
    for claim in (False, True):
        if claim:
            world.journal.claim_due_messages(now=now(), worker="worker-2")
        for ref in (accepted.message_id, "RESENDSIBL01"):
            rc, err = world.resend(ref, capsys)
            assert rc == exitcodes.INVALID and new[0]["message_id"] in err, (ref, err)
        rc, err = world.resend(accepted.message_id, capsys, reseal=True)
        assert rc == exitcodes.INVALID and "twice" in err
    states = sorted(m["state"] for m in world.messages(fid))
    assert states == ["failed", "sending"]  # the old one stays failed, one message in flight


async def test_resend_of_a_failed_message_with_nothing_in_flight_works(world: World, capsys: Any) -> None:
    accepted = await world.acceptor.accept(ens("RESENDOK0001"))
    world.journal.claim_due_messages(now=now(), worker="worker-1")
    world.journal.fail_message(accepted.message_id, worker="worker-1", now=now(), error="timeout")
    rc, err = world.resend("RESENDOK0001", capsys)
    assert rc == exitcodes.OK, err
    [m] = world.messages(accepted.filing.id)
    assert m["state"] == "queued"
