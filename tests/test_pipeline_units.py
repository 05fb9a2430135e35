"""Fast in-process tests of the pipeline's pure rules and of the acceptor on a real journal.

- ``correlate.inbound_effect``: every rule, from the states it can meet;
- ``sender.classify``: every outcome type the transport returns;
- ``Acceptor``: idempotent intake, conflicts, local rejection, follow-ups, on SqliteJournal + JournalWriter.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import EbmsError
from gateway.journal.states import FilingState as S
from gateway.journal.states import can_transition
from gateway.pipeline.correlate import answers_request, follow_up_state, inbound_effect
from gateway.pipeline.sender import classify
from gateway.transport.client import EbmsErrorOutcome, InvalidReceipt, ReceiptOk, TransportFailure
from tests.pipeline_harness import amendment, ens, fixture, response

MRN = "26NLABCDEFGHJKLM01"
LIVE = (S.REGISTERED, S.AMENDED, S.PENDING_AMENDMENT, S.INFO_REQUESTED, S.SCREENING_REQUESTED)


def eff(action: str, state: str, answered: str | None = "IE3F32", **kw: Any) -> Any:
    return inbound_effect(action, current_state=state, answered_action=answered, mrn=kw.pop("mrn", MRN), **kw)


# ----------------------------------------------------------------------------------------------- correlate
@pytest.mark.parametrize("state", [S.SENDING, S.SENT, S.QUEUED, S.FAILED, S.HELD])
def test_ie3r01_registers_from_every_sending_state(state: str) -> None:
    e = eff("IE3R01", state)
    assert (e.new_state, e.message_outcome, e.learn_mrn, e.event) == (S.REGISTERED, "registered", MRN, "registered")
    assert e.alert is None and e.open_request is None


def test_ie3r01_late_or_repeated_never_drags_a_filing_back() -> None:
    for state in (S.REGISTERED, S.AMENDED, S.INFO_REQUESTED, S.DO_NOT_LOAD, S.ASSESSMENT_COMPLETE):
        e = eff("IE3R01", state)
        assert e.new_state is None and e.learn_mrn == MRN, state
        # the registration is still recorded on the message it answers, as an event of its own
        assert (e.message_outcome, e.event, e.via, e.alert) == ("registered", "registered", None, None), state


def test_a_follow_up_answers_only_the_requests_it_is_the_answer_to() -> None:
    assert answers_request("IE3R02", "IE3Q02") and answers_request("IE3A10", "IE3Q02")
    assert answers_request("IE3R03", "IE3Q03") and not answers_request("IE3R03", "IE3Q02")
    assert not answers_request("IE3R02", "IE3Q01")              # do not load: nothing answers it
    assert not answers_request("IE3R02", "IE3Q05")              # not a request customs expects an answer to


@pytest.mark.parametrize("action", ["IE3N99", "IE3N01"])
@pytest.mark.parametrize("answered", ["IE3F32", "IE3F10", "IE3N06", None])
def test_error_on_the_filing_message_rejects_the_filing(action: str, answered: str | None) -> None:
    for state in (S.SENDING, S.SENT, S.QUEUED, S.FAILED, S.HELD):
        e = eff(action, state, answered)
        assert (e.new_state, e.message_outcome, e.alert, e.event) == (S.REJECTED, "rejected", "filing-rejected",
                                                                     "rejected"), state


@pytest.mark.parametrize("action", ["IE3N99", "IE3N01"])
def test_error_on_an_amendment_or_invalidation_keeps_the_filing(action: str) -> None:
    e = eff(action, S.PENDING_AMENDMENT, "IE3A32")
    assert (e.new_state, e.message_outcome, e.alert, e.event) == (S.REGISTERED, "rejected", "follow-up-rejected",
                                                                 "follow-up-rejected")
    assert eff(action, S.PENDING_AMENDMENT, "IE3A32", registered_state=S.AMENDED).new_state == S.AMENDED
    assert eff(action, S.INVALIDATION_REQUESTED, "IE3Q04").new_state == S.REGISTERED
    assert eff(action, S.INVALIDATION_REQUESTED, "IE3Q04", registered_state=S.AMENDED).new_state == S.AMENDED
    # an IE3R02 refused (no open request at customs): the filing stays where it is
    assert eff(action, S.REGISTERED, "IE3R02").new_state is None


def test_ie3n10_ie3r07() -> None:
    e = eff("IE3N10", S.PENDING_AMENDMENT, "IE3A32")
    assert (e.new_state, e.message_outcome, e.learn_mrn, e.event) == (S.AMENDED, "amendment-accepted", MRN,
                                                                     "amended")
    assert eff("IE3N10", S.AMENDED, "IE3A32").new_state is None            # a second amendment accepted
    e = eff("IE3R07", S.INVALIDATION_REQUESTED, "IE3Q04")
    assert (e.new_state, e.message_outcome, e.event) == (S.INVALIDATED, "invalidated", "invalidated")
    assert eff("IE3R07", S.INVALIDATED, "IE3Q04").new_state is None


@pytest.mark.parametrize("action,state,req,alert,event", [
    ("IE3Q01", S.DO_NOT_LOAD, "IE3Q01", "do-not-load", "do-not-load"),
    ("IE3Q02", S.INFO_REQUESTED, "IE3Q02", "information-requested", "information-requested"),
    ("IE3Q03", S.SCREENING_REQUESTED, "IE3Q03", "screening-requested", "screening-requested"),
])
def test_customs_requests(action: str, state: str, req: str, alert: str, event: str) -> None:
    for current in LIVE:
        e = eff(action, current, None)
        assert (e.open_request, e.alert, e.event, e.message_outcome) == (req, alert, event, None)
        assert e.new_state == (None if current == state else state), current
    # out of order (the request outran the IE3R01): registered on the way, nothing lost
    for current in (S.SENT, S.SENDING, S.QUEUED):
        e = eff(action, current, None)
        assert (e.via, e.new_state, e.learn_mrn) == (S.REGISTERED, state, MRN), current
    # a request about a filing that is already final is recorded, the state stays
    assert eff(action, S.INVALIDATED, None).new_state is None


def test_ie3n03_ie3r04_ie3n08_and_notifications() -> None:
    for current in LIVE:
        e = eff("IE3N03", current, None)
        assert (e.new_state, e.event, e.alert) == (S.ASSESSMENT_COMPLETE, "assessment-complete", None)
        assert e.learn_mrn == MRN
        e = eff("IE3R04", current, "IE3N06")        # arrival of a registered ENS: straight to arrived
        assert (e.new_state, e.via, e.message_outcome, e.learn_mrn, e.event) == (S.ARRIVED, None, "registered", MRN,
                                                                                "arrived"), current
    e = eff("IE3R04", S.SENT, "IE3N06")
    assert (e.new_state, e.via, e.message_outcome, e.learn_mrn, e.event) == (S.ARRIVED, S.REGISTERED, "registered",
                                                                            MRN, "arrived")
    e = eff("IE3R04", S.ARRIVED, "IE3N06")       # a repeated arrival: recorded, the state stays
    assert (e.new_state, e.via, e.message_outcome, e.learn_mrn, e.event) == (None, None, "registered", MRN, "arrived")
    for action in ("IE3N02", "IE3N04", "IE3N05", "IE3N07", "IE3N08", "IE3N09", "IE3N11", "IE3R08"):
        e = eff(action, S.REGISTERED, None)
        assert (e.new_state, e.message_outcome, e.open_request, e.alert, e.event) == (
            None, None, None, None, f"notification-{action}")


def test_every_effect_respects_the_state_machine() -> None:
    actions = ("IE3R01", "IE3N99", "IE3N01", "IE3N10", "IE3R07", "IE3Q01", "IE3Q02", "IE3Q03", "IE3N03", "IE3R04",
               "IE3N08", "IE3N02")
    for state in S:
        for action in actions:
            for answered in ("IE3F32", "IE3A32", "IE3Q04", None):
                e = eff(action, state, answered)
                via = e.via or state
                assert e.via is None or can_transition(state, e.via), (action, state, answered)
                assert e.new_state is None or can_transition(via, e.new_state), (action, state, answered)


def test_follow_up_states_and_requests() -> None:
    assert follow_up_state("IE3A32", S.REGISTERED) == S.PENDING_AMENDMENT
    assert follow_up_state("IE3A32", S.INFO_REQUESTED) == S.PENDING_AMENDMENT
    assert follow_up_state("IE3Q04", S.REGISTERED) == S.INVALIDATION_REQUESTED
    assert follow_up_state("IE3R02", S.INFO_REQUESTED) == S.REGISTERED
    assert follow_up_state("IE3R03", S.SCREENING_REQUESTED) == S.REGISTERED
    assert follow_up_state("IE3R03", S.AMENDED) is None
    assert follow_up_state("IE3Q05", S.REGISTERED) is None
    assert answers_request("IE3R02", "IE3Q02") and answers_request("IE3A32", "IE3Q02")
    assert answers_request("IE3R03", "IE3Q03") and not answers_request("IE3R02", "IE3Q03")
    assert not answers_request("IE3R02", "IE3Q01")


# ----------------------------------------------------------------------------------------------- classify
def _error(code: str = "EBMS:0004", *, detail: str | None = None, description: str | None = None,
           short: str | None = "Other", signed: bool = True, permanent: bool = True,
           sub: str | None = None) -> EbmsErrorOutcome:
    err = EbmsError(error_code=code, severity="failure", short_description=short, description=description,
                    error_detail=detail)
    return EbmsErrorOutcome(errors=(err,), signed=signed, permanent=permanent, sub_code=sub,
                            http_status=200 if signed else 500)


def test_classify_receipt() -> None:
    assert classify(ReceiptOk(receipt=None, http_status=200, elapsed=0.1))[0] == "receipted"  # type: ignore[arg-type]


@pytest.mark.parametrize("signed", [True, False])
def test_classify_uum_ds_sub_codes(signed: bool) -> None:
    verdict, text, sub = classify(_error(detail="A001", sub="A001", signed=signed))
    # A001 refuses the sender for every further message (ICD 5.1.1): pause the endpoint, do not fail the filing
    assert (verdict, sub) == ("pause", "A001") and "EBMS:0004/A001" in text and "endpoint resume" in text
    assert ("(unsigned error)" in text) is not signed
    # sub-code only in the description (the client did not extract it): found by classify itself
    assert classify(_error(description="A001: UUM&DS rejected", signed=signed))[::2] == ("pause", "A001")
    assert classify(_error(detail="A002", sub="A002", signed=signed))[::2] == ("permanent", "A002")
    assert classify(_error(detail="A003", sub="A003", permanent=False, signed=signed))[::2] == ("retry", "A003")
    verdict, text, sub = classify(_error(description="contact the helpdesk", permanent=False, signed=signed))
    assert (verdict, sub) == ("hold", None) and "helpdesk" in text


def test_classify_other_ebms_errors() -> None:
    assert classify(_error("EBMS:0101", short="FailedAuthentication"))[0] == "permanent"
    assert classify(_error("EBMS:0103", signed=False))[0] == "permanent"     # permanent, signed or not
    assert classify(_error("EBMS:0301", permanent=False, signed=False))[0] == "retry"


def test_classify_transport_and_invalid_receipt() -> None:
    verdict, text, _ = classify(TransportFailure("connection refused", retryable=True))
    assert verdict == "retry" and "connection refused" in text
    verdict, text, _ = classify(TransportFailure("HTTP 503", retryable=True, http_status=503, kind="http"))
    assert verdict == "retry" and "503" in text
    verdict, text, _ = classify(TransportFailure("HTTP 404 wrong endpoint URL", retryable=False, http_status=404))
    assert verdict == "permanent" and "404" in text and "resend" in text
    verdict, text, _ = classify(InvalidReceipt(fault=EbmsFault("EBMS:0302", "NRR digests differ")))
    assert verdict == "retry" and "NRR digests differ" in text


# ----------------------------------------------------------------------------------------------- acceptor
@pytest.fixture
async def acceptor(tmp_path: Path, pki: Path):  # type: ignore[no-untyped-def]
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.sqlite import SqliteJournal
    from gateway.pipeline.accept import Acceptor
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    cfg = load_gateway_config(Path(__file__).resolve().parent.parent / "conf" / "gateway.toml")
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal.open(path)
    reader = SqliteJournal.open_reader(path)
    writer = JournalWriter(journal).start()
    acc = Acceptor(Engine.from_config(cfg), writer, reader, Router(load_transport_config(cfg)))
    yield acc
    await writer.close()
    reader.close()
    journal.close()


async def test_same_filing_twice_is_one_filing(acceptor: Any) -> None:
    first = await acceptor.accept(ens("UNIT0001"), source="spool:a.xml")
    again = await acceptor.accept(ens("UNIT0001"), source="api:127.0.0.1")
    assert first.created and not again.created
    assert again.filing.id == first.filing.id and again.message_id == first.message_id
    assert first.filing.state == S.QUEUED and first.message_id.endswith("@ap.trader.test")
    life = acceptor.journal.lifecycle(first.filing.id)
    assert [m["message_id"] for m in life["messages"]] == [first.message_id]


async def test_message_id_is_deterministic(acceptor: Any) -> None:
    from gateway.pipeline.accept import deterministic_message_id
    import hashlib
    data = ens("UNIT0002")
    got = await acceptor.accept(data)
    assert got.message_id == deterministic_message_id("ap.trader.test", "filing", "NL123456789", "UNIT0002",
                                                      hashlib.sha256(data).hexdigest())


async def test_same_lrn_other_payload_is_a_conflict(acceptor: Any) -> None:
    from gateway.pipeline.accept import IntakeRefused
    await acceptor.accept(ens("UNIT0003"))
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(ens("UNIT0003", tweak="KLM0815"))
    assert exc.value.reason == "conflict" and exc.value.status == 409 and "UNIT0003" in str(exc.value)
    assert len(acceptor.journal.find_filings_by_lrn("UNIT0003")) == 1


async def test_invalid_filing_is_rejected_locally_every_time(acceptor: Any) -> None:
    from gateway.pipeline.accept import IntakeRefused
    bad = fixture("ens-IE3F32-invalid-lrn-eori.xml")
    for attempt in range(2):
        with pytest.raises(IntakeRefused) as exc:
            await acceptor.accept(bad)
        assert exc.value.reason == "invalid" and exc.value.status == 422 and exc.value.findings, attempt
        assert exc.value.filing is not None and exc.value.filing.state == S.REJECTED_LOCALLY
    [f] = acceptor.journal.find_filings_by_lrn("NLEXP-2405140099-TOO-LONG-REF")
    assert f.state == S.REJECTED_LOCALLY and not acceptor.journal.lifecycle(f.id)["messages"]


async def test_follow_ups(acceptor: Any) -> None:
    from gateway.pipeline.accept import IntakeRefused
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(response("IE3R02", MRN))
    assert exc.value.reason == "unknown-filing" and exc.value.status == 404
    first = await acceptor.accept(ens("UNIT0004"))
    now = dt.datetime.now(dt.timezone.utc)
    await acceptor.writer.submit(lambda j: j.update_filing(first.filing.id, now=now, mrn=MRN))
    amd = await acceptor.accept(amendment(MRN))
    again = await acceptor.accept(amendment(MRN))
    assert amd.follow_up and amd.created and amd.filing.id == first.filing.id
    assert not again.created and again.message_id == amd.message_id
    actions = [m["action"] for m in acceptor.journal.lifecycle(first.filing.id)["messages"]]
    assert actions == ["IE3F32", "IE3A32"]
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(b"<nonsense/>")
    assert exc.value.status == 400
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(ens("UNIT0005"), action="IE3F10")
    assert exc.value.reason == "action-mismatch"


def test_an_unmatched_customs_message_without_a_specific_alert_is_an_orphan() -> None:
    """ICD 3.1.8 copies raise the alert their action calls for; anything else that matches no filing is an
    orphan (category B), with the reason the operator reads."""
    from gateway.pipeline.correlate import UnmatchedAlert, unmatched_alert
    assert unmatched_alert("IE3N04") == UnmatchedAlert("orphan", "B", "matches no filing")
    assert unmatched_alert("IE3Q01").kind == "do-not-load"
