"""Committed certificate-path wire vectors (tests/vectors/certpaths, made by its generate.py): each sealed message
is opened from its bytes by ``Engine.open`` at the instant recorded in the manifest (so the vectors never expire),
and must be accepted, or refused with the ebMS code and the named cause the manifest states."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from gateway.ebms import mime
from gateway.ebms.engine import Engine
from gateway.ebms.errors import EbmsFault
from gateway.security.keys import load_identity_files
from gateway.security.trust import CrlCache, TrustStore
from gateway.security.verify import STRICT, TOLERANT

HERE = Path(__file__).resolve().parent / "vectors" / "certpaths"
MANIFEST = json.loads((HERE / "manifest.json").read_text())
AT = dt.datetime.fromisoformat(MANIFEST["at"])


@pytest.fixture(scope="module")
def engine(pki: Path) -> Engine:
    trust = TrustStore.from_files([HERE / "pki" / "root.pem"], intermediates=[HERE / "pki" / "intermediates.pem"])
    trust.crls = CrlCache([HERE / "pki" / "issuing-ca.crl.pem"])
    return Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"), trust,
                  party_id="sti-taxud", fqdn="sti.test", role="Customs", clock=lambda: AT)


def test_manifest_covers_every_vector() -> None:
    assert {p.stem for p in (HERE / "wire").glob("*.mime")} == set(MANIFEST["vectors"])


@pytest.mark.parametrize("name", sorted(MANIFEST["vectors"]))
def test_certpath_vector(name: str, engine: Engine) -> None:
    expect = MANIFEST["vectors"][name]
    content_type, body = mime.read_message_file((HERE / "wire" / f"{name}.mime").read_bytes())
    policy = STRICT if expect["policy"] == "strict" else TOLERANT
    try:
        msg = engine.open(content_type, body, policy=policy)
    except EbmsFault as exc:
        assert not expect.get("valid"), f"{name} must be accepted, got {exc.code}: {exc.message}"
        assert exc.code == expect["code"], f"{name}: expected {expect['code']}, got {exc.code}: {exc.message}"
        assert expect["says"] in exc.message, exc.message
        if exc.code == "EBMS:0004":
            assert exc.detail == "A001"
        return
    assert expect.get("valid"), f"{name} must be refused with {expect['code']} ({expect['says']}), but was accepted"
    assert msg.signature is not None and msg.signature.signer_eori == "NL123456789"
