"""P-Mode loading (validation errors name file and key), catalogue resolution and eDelivery 1.4.2.2 matching."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.ebms.constants import (
    AGREEMENT, AGREEMENT_TYPE, BINDING_PUSH, DEFAULT_MPC, PARTY_TYPE_AUTH, PARTY_TYPE_EORI,
    SERVICE_C2T, SERVICE_T2C, SERVICE_TYPE, TEST_ACTION, TEST_SERVICE,
)
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import Party, UserMessage
from gateway.pmode import PModeError, catalogue_actions, load_pmodes

REPO = Path(__file__).resolve().parent.parent
ME = "system1@NL0987654321"
MPC = f"urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/{ME}"
T2C = ("IE3F32", "IE3F10")
C2T = ("IE3R01", "IE3N99")


def provider(direction: str) -> tuple[str, ...]:
    return T2C if direction == "t2c" else C2T


@pytest.fixture()
def pdir(tmp_path: Path) -> Path:
    d = tmp_path / "pmodes"
    shutil.copytree(REPO / "pmodes", d)
    return d


@pytest.fixture()
def pset(pdir: Path):
    return load_pmodes(pdir, party_id=ME, actions_provider=provider)


def trader(pid: str = ME) -> Party:
    return Party(pid, PARTY_TYPE_EORI, "Trader")


def customs(pid: str = "sti-taxud") -> Party:
    return Party(pid, PARTY_TYPE_AUTH, "Customs")


def c2t(**kw) -> UserMessage:
    base = dict(message_id="m1@ti.example", timestamp="2024-01-01T00:00:00.000Z", from_party=customs(),
                to_party=trader(), service=SERVICE_C2T, service_type=SERVICE_TYPE, action="IE3R01",
                agreement=AGREEMENT, agreement_type=AGREEMENT_TYPE, conversation_id="1", part_infos=())
    base.update(kw)
    return UserMessage(**base)


def t2c(**kw) -> UserMessage:
    return c2t(**{"from_party": trader(), "to_party": customs(), "service": SERVICE_T2C, "action": "IE3F32", **kw})


def ping(swap: bool = False, **kw) -> UserMessage:
    f, t = (customs("nti-be"), trader()) if swap else (trader(), customs("nti-be"))
    return c2t(**{"from_party": f, "to_party": t, "service": TEST_SERVICE, "service_type": None,
                  "action": TEST_ACTION, **kw})


# ---------------------------------------------------------------------------------------------- loading
def test_repository_pmodes_load(pset) -> None:
    assert [p.id for p in pset] == ["ics2-c2t-pull", "ics2-c2t-push", "ics2-t2c-push", "ics2-ping"]
    pull = pset.get("ics2-c2t-pull")
    assert pull.is_pull and pull.mpc == MPC and pull.actions == C2T and pull.actions_source == "catalogue:c2t"
    assert pull.security.reply_pattern == "callback" and not pull.security.encrypt
    t = pset.get("ics2-t2c-push")
    assert t.mep_binding == BINDING_PUSH and t.actions == T2C and t.compression == "application/gzip"
    assert t.initiator.is_own and t.responder.party_type == PARTY_TYPE_AUTH
    assert t.reception_awareness.retry and t.reception_awareness.duplicate_detection
    p = pset.ping()
    assert p.derived_from == "ics2-t2c-push" and p.bidirectional and p.service_type is None
    assert p.actions == (TEST_ACTION,) and p.security == t.security and p.agreement == t.agreement
    assert p.initiator == t.initiator and p.responder == t.responder and p.mep_binding == BINDING_PUSH
    assert not t.bidirectional


def test_catalogue_is_used_when_present_and_pattern_otherwise(pdir: Path, monkeypatch) -> None:
    real = catalogue_actions("c2t")
    if real is not None:  # the catalogue module exists: the default provider uses it
        s = load_pmodes(pdir, party_id=ME)
        assert s.get("ics2-c2t-push").actions == real and "IE3R01" in real
    monkeypatch.setitem(sys.modules, "gateway.ics2.catalogue", None)  # as if the module did not exist
    assert catalogue_actions("t2c") is None
    s = load_pmodes(pdir, party_id=ME)
    p = s.get("ics2-t2c-push")
    assert p.actions == () and p.action_pattern is not None
    assert p.accepts_action("IE3F32") and p.accepts_action("IE3Z99")
    assert not p.accepts_action("IE3F3") and not p.accepts_action("XIE3F32") and not p.accepts_action(None)
    assert s.match(t2c(action="IE3A11")).id == "ics2-t2c-push"


def test_catalogue_errors_are_config_errors(pdir: Path) -> None:
    def broken(direction: str) -> tuple[str, ...]:
        raise RuntimeError("boom")
    with pytest.raises(ConfigError) as ei:
        load_pmodes(pdir, party_id=ME, actions_provider=broken)
    assert ei.value.key == "actions" and "boom" in ei.value.message
    with pytest.raises(ConfigError, match="no c2t actions"):
        load_pmodes(pdir, party_id=ME, actions_provider=lambda d: ())


def edit(pdir: Path, name: str, old: str, new: str) -> None:
    f = pdir / name
    text = f.read_text()
    assert old in text, old
    f.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("name, old, new, key, message", [
    ("ics2-t2c-push.toml", 'service_type = "eu-customs-service-type"',
     'service_type = "eu-customs-service-type"\nservcie = "x"', "servcie", "unknown key"),
    ("ics2-t2c-push.toml", "encrypt = false", "encrypt = false\nencrypt_alg = 1", "security.encrypt_alg",
     "unknown key"),
    ("ics2-t2c-push.toml", "encrypt = false", "encrypt = true", "security.encrypt", "2-way TLS"),
    ("ics2-t2c-push.toml", "sign = true", "sign = false", "security.sign", "sealed"),
    ("ics2-t2c-push.toml", "sign = true", 'sign = "yes"', "security.sign", "true or false"),
    ("ics2-t2c-push.toml", 'reply_pattern = "response"', 'reply_pattern = "async"', "security.reply_pattern",
     "one of"),
    ("ics2-t2c-push.toml", 'token = "X509PKIPathv1"', 'token = "PKCS7"', "security.token", "one of"),
    ("ics2-t2c-push.toml", "200704/oneWay", "200704/twoWay", "mep", "one of"),
    ("ics2-t2c-push.toml", "200704/push", "200704/pushy", "mep_binding", "one of"),
    ("ics2-t2c-push.toml", 'actions = "catalogue:t2c"', 'actions = "catalogue:all"', "actions", "catalogue:t2c"),
    ("ics2-t2c-push.toml", 'actions = "catalogue:t2c"', "actions = []", "actions", "non-empty"),
    ("ics2-t2c-push.toml", 'actions = "catalogue:t2c"', 'actions = ["IE3F32", "IE3F32"]', "actions", "twice"),
    ("ics2-t2c-push.toml", 'party_id = "${customs}"', 'party_id = "${custom}"', "responder.party_id",
     "unknown placeholder"),
    ("ics2-t2c-push.toml", '[responder]\nrole = "Customs"', '[responder]', "responder.role", "required"),
    ("ics2-t2c-push.toml", 'compression = "application/gzip"', 'compression = "deflate"', "payload.compression",
     "one of"),
    ("ics2-t2c-push.toml", 'agreement = "EU-ICS2-TI-V2.0"', "agreement = 2", "agreement", "must be a string"),
    ("ics2-c2t-pull.toml", 'mpc = "urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/${party_id}"', "", "mpc",
     "needs the MPC"),
    ("ics2-c2t-pull.toml", "EORI/${party_id}", "EORI/${customs}", "mpc", "unknown placeholder"),
    ("ics2-c2t-push.toml", 'id = "ics2-c2t-push"', 'id = "ics2-c2t-pull"', "id", "already the id of ics2-c2t-pull"),
    ("ics2-c2t-pull.toml", 'id = "ics2-c2t-pull"', 'id = "bad id!"', "id", "not valid"),
    ("ping.toml", 'derive_from = "ics2-t2c-push"', 'derive_from = "ics2-t2c"', "derive_from", "no P-Mode"),
    ("ping.toml", "bidirectional = true", 'bidirectional = true\nactionz = []', "actionz", "unknown key"),
    ("ping.toml", "bidirectional = true", 'bidirectional = "yes"', "bidirectional", "true or false"),
])
def test_config_errors_name_file_and_key(pdir: Path, name: str, old: str, new: str, key: str, message: str) -> None:
    edit(pdir, name, old, new)
    with pytest.raises(ConfigError) as ei:
        load_pmodes(pdir, party_id=ME, actions_provider=provider)
    err = ei.value
    assert Path(err.file).name == name, str(err)
    assert err.key == key, str(err)
    assert message in err.message, str(err)
    assert name in str(err) and f"[{key}]" in str(err)


def test_derivation_cycle_and_chain(pdir: Path) -> None:
    (pdir / "zz-a.toml").write_text('id = "a"\nderive_from = "b"\n')
    (pdir / "zz-b.toml").write_text('id = "b"\nderive_from = "a"\n')
    with pytest.raises(ConfigError, match="cycle") as ei:
        load_pmodes(pdir, party_id=ME, actions_provider=provider)
    assert ei.value.key == "derive_from"
    (pdir / "zz-a.toml").write_text('id = "a"\nderive_from = "ics2-ping"\nactions = ["urn:x:other"]\n')
    (pdir / "zz-b.toml").unlink()
    s = load_pmodes(pdir, party_id=ME, actions_provider=provider)
    a = s.get("a")
    assert a.service == TEST_SERVICE and a.actions == ("urn:x:other",) and a.derived_from == "ics2-ping"
    assert not a.bidirectional  # bidirectional is not inherited


def test_directory_and_identity_errors(tmp_path: Path, pdir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_pmodes(tmp_path / "nope", party_id=ME)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no P-Mode files"):
        load_pmodes(tmp_path / "empty", party_id=ME)
    with pytest.raises(ConfigError) as ei:
        load_pmodes(pdir, party_id="not a party")
    assert ei.value.key == "identity.party_id"
    (pdir / "broken.toml").write_text("id = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as ei:
        load_pmodes(pdir, party_id=ME)
    assert Path(ei.value.file).name == "broken.toml"


# ---------------------------------------------------------------------------------------------- matching
def test_match_positive(pset) -> None:
    assert pset.match(c2t()).id == "ics2-c2t-push"                       # pushed to us: no @mpc
    assert pset.match(c2t(mpc=DEFAULT_MPC)).id == "ics2-c2t-push"        # default MPC = none
    assert pset.match(c2t(mpc=MPC)).id == "ics2-c2t-pull"                # pulled from our MPC
    assert pset.match(c2t(from_party=customs("nti-be"), action="IE3N99")).id == "ics2-c2t-push"
    assert pset.match(t2c()).id == "ics2-t2c-push"                       # what the simulator receives
    assert pset.match(t2c(action="IE3F10", to_party=customs("nti-fr"))).id == "ics2-t2c-push"
    assert pset.match(ping()).id == "ics2-ping"
    assert pset.match(ping(swap=True)).id == "ics2-ping"                 # bidirectional
    assert pset.match(ping(swap=True, mpc=MPC)).id == "ics2-ping"


def test_match_prefers_push_without_mpc_even_if_pull_listed_first(pset) -> None:
    assert pset.pmodes[0].is_pull
    assert pset.match(c2t()).mep_binding == BINDING_PUSH


def swap_party(um: UserMessage, side: str, **changes) -> UserMessage:
    key = "from_party" if side == "From" else "to_party"
    return dataclasses.replace(um, **{key: dataclasses.replace(getattr(um, key), **changes)})


@pytest.mark.parametrize("make, field", [
    (lambda: c2t(agreement_type="other"), "AgreementRef/@type"),
    (lambda: c2t(agreement=None), "AgreementRef"),
    (lambda: c2t(service_type=None), "Service/@type"),
    (lambda: t2c(action="IE3R01"), "Action"),                            # a c2t action sent to customs
    (lambda: t2c(agreement_type=None), "AgreementRef/@type"),            # no tolerance towards customs
    (lambda: swap_party(c2t(), "From", party_id="customs-xx"), "From/PartyId"),
    (lambda: swap_party(c2t(), "From", party_id="nti-BE"), "From/PartyId"),
    (lambda: swap_party(c2t(), "From", party_type=PARTY_TYPE_EORI), "From/PartyId/@type"),
    (lambda: swap_party(c2t(), "From", role="Carrier"), "From/Role"),
    (lambda: swap_party(c2t(), "To", party_id="NL0987654321"), "To/PartyId"),  # not our full PartyId
    (lambda: swap_party(c2t(), "To", party_type=None), "To/PartyId/@type"),
    (lambda: swap_party(c2t(), "To", role="Customs"), "To/Role"),
    (lambda: c2t(mpc=MPC + "x"), "mpc"),
    (lambda: ping(service_type=SERVICE_TYPE), "Service/@type"),
])
def test_match_negative_names_the_field(pset, make, field: str) -> None:
    um = make()
    with pytest.raises(EbmsFault) as ei:
        pset.match(um)
    f = ei.value
    assert f.code == "EBMS:0010", f.message
    assert f.detail is not None and field in f.detail.split(", "), f.message
    assert field in f.message and f.ref_to_message_id == um.message_id
    assert len(f.detail.split(", ")) <= 2, f.message  # the closest P-Mode, not a pile of everything


def test_match_names_the_closest_pmode(pset) -> None:
    with pytest.raises(EbmsFault) as ei:
        pset.match(swap_party(t2c(), "From", role="Customs"))
    assert "ics2-t2c-push (ics2-t2c-push.toml)" in ei.value.message and ei.value.detail == "From/Role"


@pytest.mark.parametrize("make, field", [
    (lambda: c2t(agreement="EU-ICS2-TI-V9.9"), "AgreementRef"),
    (lambda: c2t(service="eu_ics2_xyz"), "Service"),
    (lambda: c2t(action="NOT-ICS2"), "Action"),
    (lambda: t2c(action="IE3F99"), "Action"),
    (lambda: ping(action="urn:x:unknown"), "Action"),
])
def test_unknown_values_are_value_not_recognized(pset, make, field: str) -> None:
    with pytest.raises(EbmsFault) as ei:
        pset.match(make())
    assert ei.value.code == "EBMS:0001" and ei.value.detail == field and field in ei.value.message


# ---------------------------------------------------------------------------------------------- c2t tolerance
@pytest.mark.parametrize("make, field", [
    (lambda: c2t(action="IE3X77"), "Action"),                            # a newer catalogue than ours
    (lambda: c2t(action="IE3F32"), "Action"),                            # any IE3xxx: delivered and alerted
    (lambda: c2t(agreement_type=None), "AgreementRef/@type"),            # ICD Annex 6 sample: no @type
    (lambda: c2t(agreement="EU-ICS2-TI-V1.0"), "AgreementRef"),          # the previous version (ICD 5.7)
    (lambda: c2t(agreement="EU-ICS2-TI-V1.0", agreement_type=None, action="IE3N55"), "Action"),
])
def test_c2t_tolerance_accepts_and_reports(pset, make, field: str) -> None:
    um = make()
    pm = pset.match(um)
    assert pm.id == "ics2-c2t-push" and pm.tolerated, pm
    assert any(t.startswith(field + ":") for t in pm.tolerated), pm.tolerated
    assert pset.match(um, channel="pull").id == "ics2-c2t-pull"
    assert pset.match(dataclasses.replace(um, mpc=MPC)).id == "ics2-c2t-pull"
    # the exact match stays untolerated, and the P-Mode set itself is not changed by a tolerated match
    assert pset.match(c2t()).tolerated == () and all(not p.tolerated for p in pset)


@pytest.mark.parametrize("make", [
    lambda: c2t(agreement="EU-ICS2-TI-V9.9"),                            # not a known version
    lambda: c2t(agreement_type="other"),                                 # a wrong @type is not a missing one
    lambda: swap_party(c2t(), "To", party_id="NL0987654321"),            # not addressed to us
    lambda: swap_party(c2t(action="IE3X77"), "From", role="Carrier"),    # tolerance covers only its three fields
    lambda: c2t(service_type=None),
])
def test_c2t_tolerance_is_narrow_on_push_but_a_pulled_message_is_always_kept(pset, make) -> None:
    um = make()
    with pytest.raises(EbmsFault):
        pset.match(um)
    with pytest.raises(EbmsFault):
        pset.match(um, channel="push")
    # pulled: an error would put it in its final state at the TI (eDelivery 1.5.5.4): kept, with every deviation
    pm = pset.match(um, channel="pull")
    assert pm.is_pull and pm.tolerated


def test_previous_agreements_config_is_checked(pdir: Path) -> None:
    f = pdir / "ics2-c2t-push.toml"
    f.write_text(f.read_text().replace('previous_agreements = ["EU-ICS2-TI-V1.0"]',
                                       'previous_agreements = ["EU-ICS2-TI-V2.0"]'))
    with pytest.raises(ConfigError, match="current agreement of this P-Mode") as ei:
        load_pmodes(pdir, party_id=ME, actions_provider=provider)
    assert ei.value.key.endswith("previous_agreements")


def test_ping_is_never_tolerated(pset) -> None:
    with pytest.raises(EbmsFault):
        pset.match(ping(action="urn:x:unknown"), channel="pull")


# ---------------------------------------------------------------------------------------------- sending side
def test_for_sending(pset) -> None:
    p = pset.for_sending("IE3F32", "sti-taxud")
    assert p.id == "ics2-t2c-push"
    assert p.parties("nti-be") == (trader(), customs("nti-be"))
    assert pset.for_sending(TEST_ACTION, "nti-de").id == "ics2-ping"
    for action, party in (("IE3R01", "sti-taxud"), ("IE3F99", "sti-taxud"), ("IE3F32", "customs"),
                          ("IE3F32", "nti-BE"), ("IE3F32", "")):
        with pytest.raises(PModeError):
            pset.for_sending(action, party)
    with pytest.raises(PModeError, match="customs party"):
        p.parties()


def test_pull_and_ping_absent(pdir: Path) -> None:
    (pdir / "ics2-c2t-pull.toml").unlink()
    s = load_pmodes(pdir, party_id=ME, actions_provider=provider)
    assert s.pull() is None
    (pdir / "ping.toml").unlink()
    s = load_pmodes(pdir, party_id=ME, actions_provider=provider)
    with pytest.raises(PModeError, match="ping"):
        s.ping()
    with pytest.raises(PModeError):
        s.get("ics2-ping")
    assert len(s) == 2
