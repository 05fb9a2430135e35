"""Inbound rules of issue 11 without a network: a rejected follow-up restores the filing's previous state,
unmatched customs messages raise the alert of their action, and a pulled message is kept (Receipt, not an ebMS
error) when only its P-Mode headers deviate, by the transport's real receive path with real seals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.journal.states import FilingState as S
from gateway.pipeline.correlate import inbound_effect, state_before_follow_up, unmatched_alert


@pytest.mark.parametrize("current, restore, registered, expected", [
    (S.REGISTERED, S.INFO_REQUESTED, S.REGISTERED, S.INFO_REQUESTED),          # rejected IE3R02: question stands
    (S.REGISTERED, S.SCREENING_REQUESTED, S.REGISTERED, S.SCREENING_REQUESTED),  # rejected IE3R03
    (S.AMENDED, S.INFO_REQUESTED, S.AMENDED, S.INFO_REQUESTED),
    (S.PENDING_AMENDMENT, S.AMENDED, S.REGISTERED, S.AMENDED),                  # amended stays amended
    (S.PENDING_AMENDMENT, S.INFO_REQUESTED, S.REGISTERED, S.INFO_REQUESTED),    # amendment answering an IE3Q02
    (S.INVALIDATION_REQUESTED, S.AMENDED, S.REGISTERED, S.AMENDED),
    (S.INVALIDATION_REQUESTED, S.ASSESSMENT_COMPLETE, S.REGISTERED, S.ASSESSMENT_COMPLETE),
    (S.PENDING_AMENDMENT, None, S.REGISTERED, S.REGISTERED),                    # unknown: the registered family
    (S.INFO_REQUESTED, S.INFO_REQUESTED, S.REGISTERED, None),                   # the answer never moved it: stays
    (S.REGISTERED, S.REJECTED, S.REGISTERED, None),                             # never backwards to a final state
    (S.PENDING_AMENDMENT, S.REJECTED, S.REGISTERED, S.REGISTERED),              # unreachable: the registered family
])
def test_rejected_follow_up_restores_the_previous_state(current: str, restore: str | None, registered: str,
                                                        expected: str | None) -> None:
    for code in ("IE3N99", "IE3N01"):
        for answered in ("IE3R02", "IE3R03", "IE3A32", "IE3Q04"):
            eff = inbound_effect(code, current_state=current, answered_action=answered, mrn=None,
                                 registered_state=registered, restore_state=restore)
            assert eff.new_state == expected and eff.event == "follow-up-rejected", (code, answered, eff)
            assert eff.message_outcome == "rejected" and eff.alert == "follow-up-rejected"


def test_a_rejected_filing_is_still_rejected() -> None:
    eff = inbound_effect("IE3N99", current_state=S.SENT, answered_action="IE3F32", mrn=None,
                         restore_state=S.REGISTERED)
    assert eff.new_state == S.REJECTED and eff.event == "rejected"


def test_state_before_follow_up_reads_the_receipt_transition() -> None:
    events = [
        {"event": "registered", "detail": {"from": "sent", "to": "registered"}},
        {"event": "follow-up-IE3R02", "detail": {"from": "info-requested", "to": "registered", "message_id": "a"}},
        {"event": "follow-up-IE3A32", "detail": {"from": "registered", "to": "pending-amendment",
                                                 "message_id": "b"}},
        {"event": "follow-up-queued", "detail": {"action": "IE3R02"}, "message_id": "c"},
    ]
    assert state_before_follow_up(events, "a") == "info-requested"
    assert state_before_follow_up(events, "b") == "registered"
    assert state_before_follow_up(events, "c") is None          # receipted without a state change (or not yet)
    assert state_before_follow_up(events, "zzz") is None


@pytest.mark.parametrize("action, kind, category", [
    ("IE3Q01", "do-not-load", "A"), ("IE3Q02", "information-requested", "A"), ("IE3Q03", "screening-requested", "A"),
    ("IE3R01", "registration-copy", "A"), ("IE3N11", "ens-pending", "A"), ("IE3N09", "aeo-control", "B"),
    ("IE3N05", "orphan", "B"), ("IE3X77", "orphan", "B"),
])
def test_unmatched_alerts_by_action(action: str, kind: str, category: str) -> None:
    ua = unmatched_alert(action)
    assert (ua.kind, ua.category) == (kind, category) and ua.why


# ----------------------------------------------------------------------------------------------- pull: keep it
@pytest.fixture(scope="module")
def engines(pki: Path):  # type: ignore[no-untyped-def]
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.pmode import load_pmodes
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from tests.conftest import REPO
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"]),
                     party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")
    return Engine.from_config(cfg), customs, load_pmodes(cfg.pmodes_dir, party_id=cfg.identity.party_id), cfg


@pytest.mark.parametrize("headers", [
    {"service_type": None},                         # a mismatch no tolerance covers on push
    {"agreement": "EU-ICS2-TI-V9.9"},               # an unknown agreement (EBMS:0001 on push)
    {"action": "IE3X77", "agreement_type": None},   # tolerated on push too
])
def test_a_pulled_message_is_receipted_and_delivered_never_refused_for_its_headers(engines, headers) -> None:
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.ebms.engine import Engine
    from gateway.transport.server import InboundProcessor, MemorySink
    trader, customs, pmodes, cfg = engines
    kw = {"action": "IE3R01", **headers}
    msg = customs.user_message(payload=b'<?xml version="1.0" encoding="UTF-8"?><IE3R01 xmlns="urn:x">x</IE3R01>',
                               to_party=Engine.trader_party(cfg.identity.party_id), service=SERVICE_C2T, mpc=cfg.mpc,
                               **kw)
    sink = MemorySink()
    proc = InboundProcessor(trader, sink, environment=cfg.environment, pmodes=pmodes)
    pulled = asyncio.run(proc.process(msg.content_type, msg.body, channel="pull", expected_mpc=cfg.mpc))
    assert pulled.kind == "receipt" and pulled.delivered, pulled
    assert list(sink.messages) == [msg.message_id]
    assert pmodes.match(sink.messages[msg.message_id].message.messaging.user_message, channel="pull").tolerated
    if "service_type" in headers or "agreement" in headers:   # pushed, the same message is refused
        pushed = asyncio.run(InboundProcessor(trader, MemorySink(), environment=cfg.environment, pmodes=pmodes)
                             .process(msg.content_type, msg.body, channel="push"))
        assert pushed.kind == "error" and pushed.error_code in ("EBMS:0010", "EBMS:0001"), pushed
