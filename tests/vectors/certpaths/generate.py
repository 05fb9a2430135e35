#!/usr/bin/env python3
"""Regenerates the committed certificate-path wire vectors: one sealed IE3F32 per path-validation cause.

    .venv/bin/python tests/vectors/certpaths/generate.py

Every message is sealed for real (tests/certfactory.py hierarchies, gateway.conformance.unsafe.build_message) and
written as a wire file (MIME headers, blank line, HTTP body). Only public material is kept: the root, the issuing CA
(to complete a leaf-only token) and its CRL go to pki/. manifest.json records the verification instant ("at", the
factory's fixed NOW, so the vectors never expire) and, for each vector, the policy, the ebMS code and the named cause
(or "valid"). tests/test_certpath_vectors.py replays them through Engine.open.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU  # noqa: E402

from gateway.conformance.unsafe import Recipe, build_message, xml_part  # noqa: E402
from gateway.ebms import mime  # noqa: E402
from gateway.ebms.constants import PARTY_TYPE_EORI, ROLE_TRADER, VT_X509V3  # noqa: E402
from gateway.ebms.model import Party  # noqa: E402
from tests.certfactory import (  # noqa: E402
    EORI, NOW, UNKNOWN_CRITICAL, Hierarchy, good, issue, key_usage, name, root_ca, rsa_key,
    sub_ca_under_pathlen0, with_inter,
)

ENS = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ens:IE3F32 xmlns:ens="urn:x-ics2:vectors">'
       b'<ens:LRN>VEC-PATH-0001</ens:LRN></ens:IE3F32>\n')


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def main() -> int:
    root = root_ca("Vector Path Root CA", slot=7)
    base = good(root=root)             # its issuing CA completes leaf-only tokens and signs the CRL
    revoked_seal = issue(name("Revoked Seal", eori=EORI), rsa_key(2048, 2), base.inter, ca=False)
    revoked = Hierarchy(root, base.inter, revoked_seal)
    weak_leaf = Hierarchy(root, base.inter, issue(name("Weak Seal", eori=EORI), rsa_key(1024, 9), base.inter, ca=False))
    weak_ca = issue(name("Weak Issuing CA"), rsa_key(1024, 8), root, ca=True, pathlen=0)
    weak_ca_h = Hierarchy(root, weak_ca, issue(name("Vector Seal", eori=EORI), rsa_key(2048, 2), weak_ca, ca=False))

    # name: (hierarchy, token chain or None for the full chain, token type, policy, expectation)
    cases: dict[str, tuple[Hierarchy, list[x509.Certificate] | None, str | None, str, dict[str, str]]] = {
        "ok-good-chain": (base, None, None, "strict", {"valid": "true"}),
        "ok-leaf-only-pkipath-tolerant": (base, [base.leaf.cert], None, "tolerant", {"valid": "true"}),
        "bad-leaf-only-pkipath-strict": (base, [base.leaf.cert], None, "strict",
                                         {"says": "holds only the leaf certificate"}),
        "bad-path-length": (sub_ca_under_pathlen0(root), None, None, "strict", {"cause": "path-length"}),
        "bad-ca-without-keycertsign": (with_inter(root, ku=key_usage(ds=True, crl_sign=True)), None, None, "strict",
                                       {"cause": "ca-key-usage"}),
        "bad-ca-without-keyusage": (with_inter(root, no_ku=True), None, None, "strict", {"cause": "ca-key-usage"}),
        "bad-issuer-not-a-ca": (with_inter(root, ca=False, pathlen=None, ku=key_usage(cert_sign=True)), None, None,
                                "strict", {"cause": "not-a-ca"}),
        "bad-unknown-critical-extension-seal": (good(root=root, extra=[(UNKNOWN_CRITICAL, True)]), None, None,
                                                "strict", {"cause": "critical-extension"}),
        "bad-unknown-critical-extension-ca": (with_inter(root, extra=[(UNKNOWN_CRITICAL, True)]), None, None,
                                              "strict", {"cause": "critical-extension"}),
        "bad-ca-certificate-as-seal": (good(root=root, ca=True, ku=key_usage(ds=True, nr=True, cert_sign=True)), None,
                                       None, "strict", {"cause": "seal-is-ca"}),
        "bad-seal-key-usage": (good(root=root, ku=key_usage(ke=True)), None, None, "strict",
                               {"cause": "seal-key-usage"}),
        "bad-tls-client-certificate-as-seal": (good(root=root, eku=[EKU.CLIENT_AUTH]), None, None, "strict",
                                               {"cause": "seal-extended-key-usage"}),
        "bad-tls-client-certificate-as-seal-x509v3": (good(root=root, eku=[EKU.CLIENT_AUTH]), "leaf", VT_X509V3,
                                                      "tolerant", {"cause": "seal-extended-key-usage"}),
        "bad-ca-restricted-to-tls-server": (with_inter(root, eku=[EKU.SERVER_AUTH]), None, None, "strict",
                                            {"cause": "ca-extended-key-usage"}),
        "bad-sha1-seal": (good(root=root, hash_alg=hashes.SHA1()), None, None, "strict", {"cause": "weak-algorithm"}),
        "bad-sha1-issuing-ca": (with_inter(root, hash_alg=hashes.SHA1()), None, None, "strict",
                                {"cause": "weak-algorithm"}),
        "bad-rsa1024-seal": (weak_leaf, None, None, "strict", {"cause": "weak-key"}),
        "bad-rsa1024-issuing-ca": (weak_ca_h, None, None, "strict", {"cause": "weak-key"}),
        "bad-expired-seal": (good(root=root, not_after=NOW - dt.timedelta(seconds=1)), None, None, "strict",
                             {"cause": "expired"}),
        "bad-expired-issuing-ca": (with_inter(root, not_after=NOW - dt.timedelta(days=1)), None, None, "strict",
                                   {"cause": "expired"}),
        "bad-not-yet-valid-seal": (good(root=root, not_before=NOW + dt.timedelta(hours=1)), None, None, "strict",
                                   {"cause": "not-yet-valid"}),
        "bad-untrusted-root": (good(root=root_ca("Unrelated Root CA", slot=8)), None, None, "strict",
                               {"cause": "untrusted"}),
        "bad-revoked-seal": (revoked, None, None, "strict", {"cause": "revoked"}),
        "bad-eori-mismatch": (good(root=root, eori="DE987654321"), None, None, "strict",
                              {"code": "EBMS:0004", "cause": "eori-mismatch"}),
        "bad-eori-missing": (good(root=root, eori=""), None, None, "strict",
                             {"code": "EBMS:0004", "cause": "eori-missing"}),
        "bad-pkipath-too-long": (base, base.chain * 4, None, "tolerant", {"says": "more than 10 certificates"}),
    }

    wire = HERE / "wire"
    pki = HERE / "pki"
    for d in (wire, pki):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    (pki / "root.pem").write_bytes(pem(root.cert))
    (pki / "intermediates.pem").write_bytes(pem(base.inter.cert))
    crl = (x509.CertificateRevocationListBuilder().issuer_name(base.inter.cert.subject)
           .last_update(NOW - dt.timedelta(days=1)).next_update(NOW + dt.timedelta(days=30))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(revoked.leaf.cert.serial_number)
                                    .revocation_date(NOW - dt.timedelta(hours=1)).build())
           .sign(base.inter.key, hashes.SHA256()))
    (pki / "issuing-ca.crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    manifest: dict[str, object] = {"at": NOW.isoformat(), "vectors": {}}
    for vname, (h, chain, token_type, policy, expect) in cases.items():
        token_chain = [h.leaf.cert] if chain == "leaf" else (chain if chain is not None else h.chain)
        recipe = Recipe(parts=[xml_part(ENS)], from_party=Party(EORI, PARTY_TYPE_EORI, ROLE_TRADER),
                        message_id=f"{vname}@vectors.test", timestamp=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        **({"token_type": token_type} if token_type else {}))
        ctype, body = build_message(recipe, h.leaf.key, token_chain)
        (wire / f"{vname}.mime").write_bytes(mime.write_message_file(ctype, body))
        entry: dict[str, object] = {"policy": policy, **expect}
        if "valid" in entry:
            entry = {"policy": policy, "valid": True}
        else:
            entry.setdefault("code", "EBMS:0101")
            if "cause" in entry:     # the verifier's one-line message names the cause in parentheses
                entry["says"] = f"not acceptable ({entry.pop('cause')})"
        manifest["vectors"][vname] = entry  # type: ignore[index]
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{len(cases)} certificate-path vectors written to {wire}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
