"""Runs the engine over every committed wire-format test vector (tests/vectors/wire) and checks its verdict.

The vectors were sealed by a throwaway PKI whose public half sits in tests/vectors/pki; regenerate them with
tests/vectors/generate.py. Each parser or verifier change runs over all of them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from gateway.config import Limits
from gateway.ebms import mime
from gateway.ebms.engine import Engine
from gateway.ebms.errors import EbmsFault
from gateway.pmode import load_pmodes
from gateway.security.keys import load_identity_files
from gateway.security.trust import TrustStore
from gateway.security.verify import STRICT, TOLERANT

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
REPO = VECTORS.parent.parent


@pytest.fixture(autouse=True)
def _cold_token_cache() -> None:
    """Every test decodes its tokens itself: the verifier's token cache would otherwise hide token decoding
    from a test that runs after another with the same token (mutation testing found mutants surviving so)."""
    from gateway.security import verify
    verify._TOKENS.clear()


@pytest.fixture(scope="module")
def engine(pki: Path) -> Engine:
    vp = VECTORS / "pki"
    trust = TrustStore.from_files([vp / "trader-root.pem", vp / "customs-root.pem"],
                                  [vp / "trader-int.crl.pem", vp / "trader-root.crl.pem"],
                                  intermediates=[vp / "trader-int.pem"])
    identity = load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem")
    return Engine(identity, trust, party_id="sti-taxud", fqdn="sti.test", role="Customs", limits=Limits.defaults())


@pytest.fixture(scope="module")
def pmodes():  # type: ignore[no-untyped-def]
    return load_pmodes(REPO / "pmodes", party_id="NL123456789")


def test_manifest_covers_every_file() -> None:
    files = {p.stem for p in (VECTORS / "wire").glob("*.mime")}
    assert files == set(MANIFEST), "every vector file needs an expectation and vice versa"
    assert sum(1 for e in MANIFEST.values() if e.get("valid")) >= 10
    assert sum(1 for e in MANIFEST.values() if "code" in e) >= 25


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_vector(name: str, engine: Engine, pmodes) -> None:  # type: ignore[no-untyped-def]
    expect = MANIFEST[name]
    content_type, body = mime.read_message_file((VECTORS / "wire" / f"{name}.mime").read_bytes())
    policy = STRICT if expect.get("policy") == "strict" else TOLERANT
    try:
        msg = engine.open(content_type, body, policy=policy)
        for payload in msg.payloads:
            payload.data(engine.limits)
        if expect.get("order"):  # ICD 4.2.6: several XML payloads, PartInfo order kept
            assert [p.content_id for p in msg.payloads] == expect["order"]
        if expect.get("pmode"):
            assert msg.messaging.user_message is not None
            pmodes.match(msg.messaging.user_message)
        if expect.get("values"):  # what is read equals what was signed, whatever c14n normalised on the wire
            um = msg.messaging.user_message
            read = {"message_id": um.message_id, "action": um.action, "from": um.from_party.party_id,
                    "service_type": um.service_type}
            assert {k: read[k] for k in expect["values"]} == expect["values"]
    except EbmsFault as exc:
        assert not expect.get("valid"), f"{name} must be accepted, got {exc.code}: {exc.message}"
        assert exc.code == expect["code"], f"{name}: expected {expect['code']}, got {exc.code}: {exc.message}"
        if expect.get("match"):  # refused for the reason the vector exists for, not by accident
            assert expect["match"] in exc.message, f"{name}: {exc.code} for another reason: {exc.message}"
        return
    assert expect.get("valid"), f"{name} must be refused with {expect.get('code')}, but was accepted"
    assert msg.signature is not None and msg.signature.signer_eori == "NL123456789"


def test_receipt_for_every_valid_vector_verifies(engine: Engine, pki: Path) -> None:
    """Our receipts for messages sealed elsewhere verify, cover the empty Body and echo the digests."""
    trader_side = Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"),
                         TrustStore.from_files([pki / "customs-root.pem"]), party_id="NL123456789", fqdn="t.test")
    for name, expect in MANIFEST.items():
        if not expect.get("valid") or expect.get("policy") == "strict":
            continue
        ct, body = mime.read_message_file((VECTORS / "wire" / f"{name}.mime").read_bytes())
        inbound = engine.open(ct, body)
        receipt = engine.receipt_for(inbound)
        opened = trader_side.open(receipt.content_type, receipt.body)
        uris = [r.get("URI") for r in opened.signature.references]
        assert any(u.startswith("#_body") for u in uris), "a receipt must sign its empty Body (ICD 4.6.2)"
        echoed = {r.uri for r in opened.messaging.signals[0].nrr_references}
        assert echoed == {r.get("URI") for r in inbound.signature.references}


def test_expired_vector_is_expired_not_untrusted(engine: Engine) -> None:
    ct, body = mime.read_message_file((VECTORS / "wire" / "bad-expired-certificate.mime").read_bytes())
    with pytest.raises(EbmsFault, match="expired"):
        engine.open(ct, body, policy=TOLERANT)
