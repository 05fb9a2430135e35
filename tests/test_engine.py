"""The AS4 engine end to end without a network: build, seal, pack, unpack, parse, verify, receipts, errors."""

from __future__ import annotations

import gzip
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, Limits, SealConfig, load_gateway_config
from gateway.ebms.constants import MPC_PREFIX, TEST_ACTION
from gateway.ebms.engine import Engine
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import EbmsError, ErrorSignal, OutboundPart, PullRequest, Receipt
from gateway.security.keys import KeyMaterialError, SealingIdentity, load_identity_files, load_sealing_identity
from gateway.security.seal import SealError, seal
from gateway.security.trust import TrustStore
from gateway.security.verify import STRICT

ENS = b'<?xml version="1.0" encoding="UTF-8"?><IE3F32 xmlns="urn:x-test"><LRN>LRN-1</LRN>' + b"<x>y</x>" * 1200 + b"</IE3F32>"
PDF = b"%PDF-1.4\n%test\n"


@pytest.fixture(scope="module")
def trader(pki: Path) -> Engine:
    return Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"),
                  TrustStore.from_files([pki / "customs-root.pem", pki / "trader-root.pem"],
                                        [pki / "trader-int.crl.pem"], [pki / "customs-seal.pem"]),
                  party_id="NL123456789", fqdn="ap.trader.test")


@pytest.fixture(scope="module")
def customs(pki: Path) -> Engine:
    return Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                  TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"], [pki / "trader-int.crl.pem"]),
                  party_id="sti-taxud", fqdn="sti.customs.test", role="Customs", policy=STRICT)


def test_user_message_round_trip_strict(trader: Engine, customs: Engine) -> None:
    sent = trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party(),
                               attachments=[OutboundPart("invoice-1", "application/pdf", PDF)])
    assert sent.content_type.startswith("multipart/related") and 'type="application/soap+xml"' in sent.content_type
    got = customs.open(sent.content_type, sent.body)
    um = got.messaging.user_message
    assert um is not None and um.action == "IE3F32" and um.message_id == sent.message_id
    assert um.message_id.endswith("@ap.trader.test") and um.timestamp.endswith("Z")
    assert um.from_party.party_id == "NL123456789" and um.to_party.party_id == "sti-taxud"
    assert (um.agreement, um.agreement_type) == ("EU-ICS2-TI-V2.0", "ics2-interface-version")
    assert [p.part_info.mime_type for p in got.payloads] == ["application/xml", "application/pdf"]
    assert all(p.part_info.compression == "application/gzip" for p in got.payloads)
    assert got.payloads[0].data(customs.limits) == ENS and got.payloads[1].data(customs.limits) == PDF
    assert got.signature is not None and got.signature.token_chain_length == 3
    assert got.signature.signer_eori == "NL123456789"
    assert len(got.signature.references) == 4  # Messaging, Body, payload, attachment


def test_receipt_round_trip_and_nrr_check(trader: Engine, customs: Engine) -> None:
    sent = trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    receipt = customs.receipt_for(customs.open(sent.content_type, sent.body))
    opened = trader.open(receipt.content_type, receipt.body)
    assert opened.kind == "receipt" and opened.signed
    r = trader.check_receipt(opened, sent)
    assert isinstance(r, Receipt) and r.ref_to_message_id == sent.message_id
    other = trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    with pytest.raises(EbmsFault) as exc:
        trader.check_receipt(opened, other)
    assert exc.value.code == "EBMS:0302"


def test_receipt_with_forged_digests_is_invalid(trader: Engine, customs: Engine) -> None:
    sent = trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    # a receipt for a different message that claims to acknowledge ours: RefToMessageId right, digests wrong
    decoy = trader.user_message(action="IE3F32", payload=ENS + b" ", to_party=Engine.customs_party(),
                                message_id=sent.message_id)
    receipt = customs.receipt_for(customs.open(decoy.content_type, decoy.body))
    with pytest.raises(EbmsFault) as exc:
        trader.check_receipt(trader.open(receipt.content_type, receipt.body), sent)
    assert exc.value.code == "EBMS:0302" and "non-repudiation" in exc.value.message


def test_unsigned_receipt_is_refused(trader: Engine, customs: Engine) -> None:
    sent = trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    receipt = customs.receipt_for(customs.open(sent.content_type, sent.body))
    stripped = re.sub(rb"<wsse:Security .*?</wsse:Security>", b"", receipt.body, flags=re.S)
    with pytest.raises(EbmsFault) as exc:
        trader.open(receipt.content_type, stripped)
    assert exc.value.code == "EBMS:0103"


def test_error_signal_signed_and_unsigned(trader: Engine, customs: Engine) -> None:
    fault = EbmsFault("EBMS:0004", "sender not authorised", detail="A001", ref_to_message_id="m-1@x")
    sig = customs.error_signal(fault)
    opened = trader.open(sig.content_type, sig.body)
    err = opened.messaging.signals[0]
    assert isinstance(err, ErrorSignal) and err.errors[0].error_code == "EBMS:0004"
    assert err.errors[0].error_detail == "A001" and err.errors[0].ref_to_message_in_error == "m-1@x"
    assert opened.signed
    # the same error without its seal: refused normally, read (flagged unsigned) when the caller allows it
    unsigned = re.sub(rb"<wsse:Security .*?</wsse:Security>", b"", sig.body, flags=re.S)
    assert b"Signature" not in unsigned
    with pytest.raises(EbmsFault):
        trader.open(sig.content_type, unsigned)
    read = trader.open(sig.content_type, unsigned, accept_unsigned_errors=True)
    assert not read.signed and read.signature_error is not None
    assert read.messaging.signals[0].errors[0].error_code == "EBMS:0004"


def test_pull_request_and_ping(trader: Engine, customs: Engine) -> None:
    mpc = MPC_PREFIX + "NL123456789"
    pr = trader.pull_request(mpc)
    opened = customs.open(pr.content_type, pr.body)
    assert isinstance(opened.messaging.signals[0], PullRequest) and opened.messaging.signals[0].mpc == mpc
    ping = trader.ping(Engine.customs_party())
    got = customs.open(ping.content_type, ping.body)
    assert got.kind == "ping" and got.messaging.user_message.action == TEST_ACTION and not got.payloads


def test_customs_signer_is_required_when_configured(trader: Engine, pki: Path) -> None:
    """A message sealed by a trader-side certificate that chains fine is still refused as customs traffic."""
    impostor = Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"), trader.trust,
                      party_id="sti-taxud", fqdn="x", role="Customs")
    msg = impostor.user_message(action="IE3R01", payload=ENS, to_party=Engine.trader_party("NL123456789"),
                                service="eu_ics2_c2t")
    pol = replace(trader.policy, require_customs_signer=True)
    with pytest.raises(EbmsFault, match="not a configured customs sealing certificate"):
        trader.open(msg.content_type, msg.body, policy=pol)


def test_attachment_rules(trader: Engine) -> None:
    with pytest.raises(EbmsFault, match="may not carry binary attachments"):
        trader.user_message(action="IE3F10", payload=ENS, to_party=Engine.customs_party(),
                            attachments=[OutboundPart("a", "application/pdf", PDF)])
    with pytest.raises(EbmsFault, match="not allowed"):
        trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party(),
                            attachments=[OutboundPart("a", "image/png", PDF)])


def test_send_limits(trader: Engine) -> None:
    small = Engine(trader.identity, trader.trust, party_id="NL123456789", fqdn="x",
                   limits=replace(Limits.defaults(), send_max_payload_bytes=1000))
    with pytest.raises(EbmsFault, match="over the send limit"):
        small.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())


def test_receive_limit_whole_message(trader: Engine, customs: Engine) -> None:
    sent = trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    tiny = Engine(customs.identity, customs.trust, party_id="sti-taxud", fqdn="x", role="Customs",
                  limits=replace(Limits.defaults(), recv_max_message_bytes=len(sent.body) - 1))
    with pytest.raises(EbmsFault, match="over the limit"):
        tiny.open(sent.content_type, sent.body)


def test_seal_refuses_leaf_only_chain(trader: Engine) -> None:
    from gateway.ebms import build
    from gateway.ebms.model import Party, UserMessage, utc_timestamp
    leaf_only = SealingIdentity(key=trader.identity.key, chain=trader.identity.chain[:1])
    um = UserMessage("m@x", utc_timestamp(), Party("NL123456789", None, "Trader"), Party("sti-taxud", None, "Customs"),
                     "eu_ics2_t2c", None, "IE3F32", None, None, "1", ())
    with pytest.raises(SealError, match="leaf-only"):
        seal(build.user_message_envelope(um), [], leaf_only)


def test_identity_loading_pkcs12_and_errors(pki: Path, tmp_path: Path) -> None:
    ident = load_sealing_identity(SealConfig(None, None, pki / "trader-seal.p12",
                                             (pki / "trader-seal.p12.password").read_text().strip()))
    assert len(ident.chain) == 3
    with pytest.raises(ConfigError, match="seal.pkcs12"):
        load_sealing_identity(SealConfig(None, None, pki / "trader-seal.p12", "wrong"))
    with pytest.raises(ConfigError, match="leaf"):
        load_sealing_identity(SealConfig(pki / "trader-seal.key", pki / "trader-seal.pem", None, None))
    with pytest.raises(KeyMaterialError, match="does not match"):
        load_identity_files(pki / "customs-seal.key", pki / "trader-chain.pem")


def test_gateway_config_errors_name_file_and_key(tmp_path: Path, gateway_conf: Path) -> None:
    text = gateway_conf.read_text().replace('party_id = "NL123456789"', 'party_id = "toolongsystemid1@NL123456789"')
    bad = gateway_conf.parent / "_test_bad.toml"
    try:
        bad.write_text(text)
        with pytest.raises(ConfigError) as exc:
            load_gateway_config(bad)
        assert "identity.party_id" in str(exc.value) and "_test_bad.toml" in str(exc.value)
        bad.write_text(text.replace("[identity]", "[identity]\ntypo = 1"))
        with pytest.raises(ConfigError, match="identity"):
            load_gateway_config(bad)
    finally:
        bad.unlink()
    cfg = load_gateway_config(gateway_conf)
    assert cfg.mpc == "urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/NL123456789"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=0, max_size=5000), action=st.sampled_from(["IE3F32", "IE3F26", "IE3A32"]))
def test_property_any_payload_round_trips(trader: Engine, customs: Engine, payload: bytes, action: str) -> None:
    sent = trader.user_message(action=action, payload=payload, to_party=Engine.customs_party())
    got = customs.open(sent.content_type, sent.body)
    assert got.payloads[0].data(customs.limits) == payload
    assert got.messaging.user_message.action == action


def test_gzip_payload_is_deterministic_and_real_gzip(trader: Engine, customs: Engine) -> None:
    sent = trader.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    got = customs.open(sent.content_type, sent.body)
    assert gzip.decompress(got.payloads[0].transmitted) == ENS


def test_errors_from_ebms_error_list(customs: Engine, trader: Engine) -> None:
    sig = customs.error_signal([EbmsError("EBMS:0006", "warning", "Communication", "EmptyMessagePartitionChannel",
                                          "nothing to pull")])
    opened = trader.open(sig.content_type, sig.body)
    assert opened.messaging.signals[0].errors[0].severity == "warning"


def test_domibus_style_unsigned_error_in_soap_fault_is_readable(trader: Engine) -> None:
    """eb:Error in the header, a SOAP Fault in the Body, no seal, HTTP 500: read and flagged unsigned."""
    soap = (b'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">'
            b'<env:Header><eb:Messaging xmlns:eb="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/" '
            b'env:mustUnderstand="true"><eb:SignalMessage><eb:MessageInfo><eb:Timestamp>2026-11-24T10:00:00Z'
            b'</eb:Timestamp><eb:MessageId>err-1@sti</eb:MessageId><eb:RefToMessageId>m-1@x</eb:RefToMessageId>'
            b'</eb:MessageInfo><eb:Error errorCode="EBMS:0004" severity="failure" shortDescription="Other" '
            b'refToMessageInError="m-1@x"><eb:ErrorDetail>A001 sender not authorised</eb:ErrorDetail></eb:Error>'
            b'</eb:SignalMessage></eb:Messaging></env:Header><env:Body><env:Fault><env:Code><env:Value>env:Receiver'
            b'</env:Value></env:Code><env:Reason><env:Text xml:lang="en">Other</env:Text></env:Reason></env:Fault>'
            b'</env:Body></env:Envelope>')
    read = trader.open('application/soap+xml; charset="UTF-8"', soap, accept_unsigned_errors=True)
    assert not read.signed and read.messaging.signals[0].errors[0].error_detail.startswith("A001")
    with pytest.raises(EbmsFault):
        trader.open('application/soap+xml', soap)  # without the flag an unsigned error is refused
    # a Fault in the Body of anything but an error signal is still a non-empty Body
    with pytest.raises(EbmsFault) as exc:
        trader.open('application/soap+xml', soap.replace(b"<eb:SignalMessage>", b"<eb:Nope>", 1)
                    .replace(b"</eb:SignalMessage>", b"</eb:Nope>"), accept_unsigned_errors=True)
    assert exc.value.code == "EBMS:0103"
