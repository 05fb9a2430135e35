"""Exact boundaries and several parties (issue 16, "Tests that catch the bugs they exist for").

- LRN length: 22 characters are valid, 23 are refused, each on its own committed fixture
  (tests/fixtures/lrn-length/), through the pipeline's intake (Acceptor) and the validator.
- Two filers with the same LRN: an IE3R01 without RefToMessageId reaches the filing of the person filing it
  names, never the other one, and one that names neither is an orphan, not a guess.

Real parts: the engine seals and verifies (customs seal, trader trust), the journal is SQLite with its group
committer, the inbound sink is the daemon's (correlation, inbox files, journal transaction).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ebms.constants import SERVICE_C2T
from gateway.journal.states import FilingState as S
from gateway.pipeline.accept import IntakeRefused
from tests.pipeline_harness import REPO, ens, fixture

LRN_FIXTURES = REPO / "tests" / "fixtures" / "lrn-length"


class World:
    def __init__(self, acceptor: Any, sink: Any, trader: Any, customs: Any, journal: Any, inbox: Path) -> None:
        self.acceptor, self.sink, self.trader, self.customs = acceptor, sink, trader, customs
        self.journal, self.inbox = journal, inbox

    async def push(self, payload: bytes, ref: str | None = None) -> Any:
        from gateway.ebms.engine import Engine
        msg = self.customs.user_message(action="IE3R01", payload=payload, service=SERVICE_C2T,
                                        to_party=Engine.trader_party("NL123456789"), ref_to_message_id=ref)
        opened = self.trader.open(msg.content_type, msg.body)
        return await self.sink.deliver(opened, msg.content_type, msg.body, self.trader.receipt_for(opened), "push")


@pytest.fixture
async def world(tmp_path: Path, pki: Path) -> AsyncIterator[World]:
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.sqlite import SqliteJournal
    from gateway.pipeline.accept import Acceptor
    from gateway.pipeline.alerts import Alerts
    from gateway.pipeline.config import AlertsConfig
    from gateway.pipeline.inbound import InboundProcessor
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal.open(path)
    reader = SqliteJournal.open_reader(path)
    writer = JournalWriter(journal).start()
    trader = Engine.from_config(cfg)
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"]),
                     party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")
    inbox, status = tmp_path / "inbox", tmp_path / "status"
    inbox.mkdir()
    status.mkdir()
    sink = InboundProcessor(reader, writer, inbox_dir=inbox, status_dir=status, limits=trader.limits,
                            alerts=Alerts(AlertsConfig((), None), "conformance"))
    acceptor = Acceptor(trader, writer, reader, Router(load_transport_config(cfg)))
    yield World(acceptor, sink, trader, customs, reader, inbox)
    await writer.close()
    reader.close()
    journal.close()


# ----------------------------------------------------------------------------------------------- LRN length
async def test_lrn_of_22_characters_is_accepted(world: World) -> None:
    data = (LRN_FIXTURES / "ens-IE3F32-lrn-22.xml").read_bytes()
    lrn = re.search(rb"<LRN>([^<]*)</LRN>", data).group(1).decode()  # type: ignore[union-attr]
    assert len(lrn) == 22
    got = await world.acceptor.accept(data, source="spool:ens-IE3F32-lrn-22.xml")
    assert got.filing.lrn == lrn and got.filing.state == S.QUEUED and got.message_id


async def test_lrn_of_23_characters_is_refused(world: World) -> None:
    data = (LRN_FIXTURES / "ens-IE3F32-lrn-23.xml").read_bytes()
    lrn = re.search(rb"<LRN>([^<]*)</LRN>", data).group(1).decode()  # type: ignore[union-attr]
    assert len(lrn) == 23
    with pytest.raises(IntakeRefused) as exc:
        await world.acceptor.accept(data, source="spool:ens-IE3F32-lrn-23.xml")
    assert exc.value.reason == "invalid" and exc.value.status == 422
    assert [f["rule"] for f in exc.value.findings] == ["ICS2-LRN"], exc.value.findings
    assert exc.value.filing is not None and exc.value.filing.state == S.REJECTED_LOCALLY
    assert not world.journal.lifecycle(exc.value.filing.id)["messages"]  # nothing sealed, nothing sent


def test_lrn_boundary_in_the_validator() -> None:
    from gateway.ics2.validate import validate_payload
    ok = validate_payload((LRN_FIXTURES / "ens-IE3F32-lrn-22.xml").read_bytes())
    bad = validate_payload((LRN_FIXTURES / "ens-IE3F32-lrn-23.xml").read_bytes())
    assert ok.valid and not bad.valid
    assert [f.rule for f in bad.errors] == ["ICS2-LRN"]


# ----------------------------------------------------------------------------------------------- two filers
OTHER = "DE987654321012"


def ens_for(filer: str, lrn: str) -> bytes:
    """The express ENS filed by ``filer`` (its declarant, hence the person filing) under ``lrn``."""
    return ens(lrn).replace(b"<identificationNumber>NL123456789</identificationNumber>",
                            f"<identificationNumber>{filer}</identificationNumber>".encode(), 1)


def ie3r01(lrn: str, mrn: str, filer: str) -> bytes:
    data = fixture("resp-IE3R01-registration.xml")
    data = re.sub(rb"<LRN>[^<]*</LRN>", f"<LRN>{lrn}</LRN>".encode(), data)
    data = re.sub(rb"<MRN>[^<]*</MRN>", f"<MRN>{mrn}</MRN>".encode(), data)
    return data.replace(b"<identificationNumber>NL123456789</identificationNumber>",
                        f"<identificationNumber>{filer}</identificationNumber>".encode())


@pytest.mark.parametrize("first", ["NL123456789", OTHER])
async def test_ie3r01_without_ref_reaches_the_filing_of_the_filer_it_names(world: World, first: str) -> None:
    lrn = "SHAREDLRN" + first[:2]
    a = await world.acceptor.accept(ens_for("NL123456789", lrn))
    b = await world.acceptor.accept(ens_for(OTHER, lrn))
    assert {a.filing.filer_eori, b.filing.filer_eori} == {"NL123456789", OTHER} and a.filing.id != b.filing.id
    second = OTHER if first == "NL123456789" else "NL123456789"
    mrns = {first: "24NLZ8P0RJ4KD5KPA1", second: "24DEZ8P0RJ4KD5KPB2"}
    for filer in (first, second):
        out = await world.push(ie3r01(lrn, mrns[filer], filer))
        assert not out.duplicate
        [mine] = [f for f in world.journal.find_filings_by_lrn(lrn) if f.filer_eori == filer]
        assert mine.state == S.REGISTERED and mine.mrn == mrns[filer], (filer, mine)
    for f in world.journal.find_filings_by_lrn(lrn):
        assert f.mrn == mrns[f.filer_eori]  # neither filing got the other's MRN
    # one that names a third filer matches neither: an orphan, never a guess
    await world.push(ie3r01(lrn, "24FRZ8P0RJ4KD5KPC3", "FR111222333"))
    assert len(world.journal.list_orphans()) == 1
    assert {f.filer_eori: f.mrn for f in world.journal.find_filings_by_lrn(lrn)} == mrns
