#!/usr/bin/env python3
"""Regenerates the committed AS4 test vectors: wire-format messages, good and bad, with their expected verdict.

    .venv/bin/python tests/vectors/generate.py

A throwaway PKI is generated in a temporary folder; only public material (CA certificates, CRLs) is copied into
tests/vectors/pki/, and the keys are deleted with the folder. Each vector is a message file (MIME headers, a
blank line, the HTTP body) in tests/vectors/wire/, and manifest.json states what the engine must say:
``{"valid": true}`` or ``{"code": "EBMS:0101"}``, under which policy, and whether the P-Mode check applies.
The variants other stacks legitimately send (LF framing, base64 transfer encoding, SOAP part second) are made
with ../shared/interop/tamper.py, an independent tool, from a good vector.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import serialization  # noqa: E402

from gateway.conformance import unsafe  # noqa: E402
from gateway.conformance.unsafe import Part, Recipe, build_message, xml_part  # noqa: E402
from gateway.ebms import mime  # noqa: E402
from gateway.ebms.constants import (  # noqa: E402
    PARTY_TYPE_AUTH, PARTY_TYPE_EORI, ROLE_CUSTOMS, ROLE_TRADER, TEST_ACTION, TEST_SERVICE, VT_X509V3,
)
from gateway.ebms.model import Party  # noqa: E402
from gateway.security.keys import load_pem_certificates  # noqa: E402

ENS = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
       b'<ens:IE3F32 xmlns:ens="urn:x-ics2:vectors"><ens:LRN>VEC-LRN-0001</ens:LRN>'
       b'<ens:Declarant><ens:IdentificationNumber>NL123456789</ens:IdentificationNumber></ens:Declarant>'
       b'<ens:BinaryFile><ens:identification>invoice-1</ens:identification></ens:BinaryFile>'
       b'<ens:Goods>' + b'<ens:Item><ens:Description>Spare parts for agricultural machines</ens:Description>'
       b'<ens:GrossMass>12.5</ens:GrossMass></ens:Item>' * 40 + b'</ens:Goods></ens:IE3F32>\n')
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
NON_CANONICAL_XML = b'<?xml version="1.0"?>\n<doc  b="2" a="1" ><item/>\n<item   x = "y"></item></doc>'
BOMB = bytes(64 * 1024 * 1024)   # 64 MiB of zeros: ~64 KiB gzipped, a compression ratio over 1000


def load_key(path: Path):  # type: ignore[no-untyped-def]
    return serialization.load_pem_private_key(path.read_bytes(), None)


def recipes(pki: Path) -> list[tuple[str, Recipe, dict, str]]:
    """(name, recipe, expectation, key set) for every generated vector."""
    def payload(**kw):  # type: ignore[no-untyped-def]
        return [xml_part(ENS, **kw)]
    pdf = Part("invoice-1", "application/pdf", PDF)
    out: list[tuple[str, Recipe, dict, str]] = [
        ("ok-ie3f32", Recipe(parts=payload()), {"valid": True, "pmode": True}, "trader"),
        ("ok-ie3f32-pdf-attachment", Recipe(parts=payload() + [pdf]), {"valid": True, "pmode": True}, "trader"),
        ("ok-timestamp-without-z", Recipe(parts=payload(), timestamp="2026-11-24T10:15:30.123"), {"valid": True},
         "trader"),
        ("ok-utf8-bom", Recipe(parts=payload(), xml_prefix=b"\xef\xbb\xbf"), {"valid": True}, "trader"),
        ("ok-uncompressed-payload", Recipe(parts=payload(compress=False)), {"valid": True}, "trader"),
        ("ok-partproperties-spelling", Recipe(parts=payload(properties=(("mimeType", "application/xml"),
                                                                         ("charset", "UTF-8"),
                                                                         ("compressionType", "application/gzip")))),
         {"valid": True}, "trader"),
        ("ok-xml-attachment-canonical-digest",
         Recipe(parts=payload() + [Part("note", "application/xml", NON_CANONICAL_XML, compress=False)]),
         {"valid": True}, "trader"),
        ("ok-x509v3-token-tolerant", Recipe(parts=payload(), token_type=VT_X509V3), {"valid": True}, "trader"),
        ("bad-x509v3-token-strict", Recipe(parts=payload(), token_type=VT_X509V3),
         {"code": "EBMS:0101", "policy": "strict"}, "trader"),
        ("ok-ie3r08-several-xml-payloads",
         Recipe(action="IE3R08", service="eu_ics2_c2t",
                from_party=Party("sti-taxud", PARTY_TYPE_AUTH, ROLE_CUSTOMS),
                to_party=Party("NL123456789", PARTY_TYPE_EORI, ROLE_TRADER),
                parts=[xml_part(ENS.replace(b"IE3F32", b"IE3R08"), content_id="consultation@sti"),
                       xml_part(b"<n1>first notification</n1>", content_id="notification-1@sti"),
                       xml_part(b"<n2>second notification</n2>", content_id="notification-2@sti")]),
         {"valid": True, "pmode": True, "order": ["consultation@sti", "notification-1@sti", "notification-2@sti"]},
         "trader"),
        ("ok-ping", Recipe(parts=[], service=TEST_SERVICE, service_type=None, action=TEST_ACTION),
         {"valid": True, "pmode": True}, "trader"),
        ("bad-wrong-signing-algorithm", Recipe(parts=payload(), signature_method=unsafe.RSA_SHA1),
         {"code": "EBMS:0103"}, "trader"),
        ("bad-wrong-digest-algorithm", Recipe(parts=payload(), digest_method=unsafe.SHA1), {"code": "EBMS:0103"},
         "trader"),
        ("bad-wrong-compression", Recipe(parts=payload(corrupt_gzip=True)), {"code": "EBMS:0303"}, "trader"),
        ("bad-two-user-messages", Recipe(parts=payload(), before_seal=[unsafe.duplicate_user_message]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-user-message-no-party-id", Recipe(parts=payload(), before_seal=[unsafe.remove_first("PartyId")]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-no-responder", Recipe(parts=payload(), before_seal=[unsafe.remove_first("To")]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-wrong-attachment-id", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"Content-ID: <payload@unsafe.test>", b"Content-ID: <other@unsafe.test>")]), {"code": "EBMS:0011"},
         "trader"),
        ("bad-partinfo-mime-mismatch", Recipe(parts=payload() + [Part("extra", "application/pdf", PDF,
                                                                      declared=False)]),
         {"code": "EBMS:0103"}, "trader"),
        ("bad-payload-changed-after-signing", Recipe(parts=payload(), after_pack=[unsafe.flip_payload_byte]),
         {"code": "EBMS:0101"}, "trader"),
        ("bad-header-only-signature", Recipe(parts=payload(), sign_body=False), {"code": "EBMS:0103"}, "trader"),
        ("bad-unsigned-extra-attachment", Recipe(parts=payload() + [Part("invoice-1", "application/pdf", PDF,
                                                                         signed=False)]),
         {"code": "EBMS:0103"}, "trader"),
        ("bad-second-messaging", Recipe(parts=payload(), after_seal=[unsafe.second_messaging]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-signature-wrapping", Recipe(parts=payload(), after_seal=[unsafe.wrap_messaging]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-duplicate-wsu-id", Recipe(parts=payload(), after_seal=[unsafe.forged_messaging_same_id]),
         {"code": "EBMS:0101"}, "trader"),
        ("bad-action-changed-after-signing", Recipe(parts=payload(), after_seal=[unsafe.set_text("Action", "IE3F33")]),
         {"code": "EBMS:0101"}, "trader"),
        ("bad-untrusted-chain", Recipe(parts=payload()), {"code": "EBMS:0101"}, "other"),
        ("bad-expired-certificate", Recipe(parts=payload()), {"code": "EBMS:0101"}, "expired"),
        ("bad-revoked-certificate", Recipe(parts=payload()), {"code": "EBMS:0101"}, "revoked"),
        ("bad-leaf-only-token", Recipe(parts=payload(), leaf_only=True), {"code": "EBMS:0101", "policy": "strict"},
         "trader"),
        ("bad-leaf-first-pkipath", Recipe(parts=payload(), token_leaf_first=True), {"code": "EBMS:0101"}, "trader"),
        ("bad-unsigned", Recipe(parts=payload(), sign=False), {"code": "EBMS:0103"}, "trader"),
        ("bad-payload-in-body", Recipe(parts=payload(), before_seal=[unsafe.body_payload]), {"code": "EBMS:0103"},
         "trader"),
        ("bad-billion-laughs", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"<?xml version='1.0' encoding='UTF-8'?>",
            b"<?xml version='1.0' encoding='UTF-8'?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">"
            b"<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
            b"<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>")]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-external-entity", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"<?xml version='1.0' encoding='UTF-8'?>",
            b"<?xml version='1.0' encoding='UTF-8'?>\n<!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>")]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-gzip-bomb", Recipe(parts=[xml_part(BOMB)]), {"code": "EBMS:0303"}, "trader"),
        ("bad-soap11-envelope", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"http://www.w3.org/2003/05/soap-envelope", b"http://schemas.xmlsoap.org/soap/envelope/")]),
         {"code": "EBMS:0009"}, "trader"),
        ("bad-undefined-action", Recipe(parts=payload(), action="IE3F99"), {"code": "EBMS:0001", "pmode": True},
         "trader"),
        ("bad-pmode-mismatch-service", Recipe(parts=payload(), service="eu_ics2_c2t"),
         {"code": "EBMS:0010", "pmode": True}, "trader"),
        ("bad-unknown-agreement", Recipe(parts=payload(), agreement="EU-ICS2-TI-V9.9"),
         {"code": "EBMS:0001", "pmode": True}, "trader"),
    ]
    return out


def tamper(src: Path, mode: str, dst: Path) -> bool:
    tool = REPO.parent / "shared" / "interop" / "tamper.py"
    if not tool.exists():
        return False
    subprocess.run([sys.executable, str(tool), mode, str(src), str(dst)], check=True)
    side = dst.with_name(dst.name + ".ctype")
    side.unlink(missing_ok=True)
    return True


def main() -> int:
    spec = importlib.util.spec_from_file_location("make_pki", REPO / "certs" / "make_pki.py")
    make_pki = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    assert spec and spec.loader
    spec.loader.exec_module(make_pki)
    make_pki.LEAF_DAYS = 20 * 365
    wire = HERE / "wire"
    shutil.rmtree(wire, ignore_errors=True)
    wire.mkdir(parents=True)
    (HERE / "pki").mkdir(exist_ok=True)
    manifest: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp)
        make_pki.generate(pki, 2048, "NL123456789")
        for name in ("trader-root.pem", "trader-int.pem", "customs-root.pem", "trader-int.crl.pem", "trader-root.crl.pem"):
            shutil.copy(pki / name, HERE / "pki" / name)
        keys = {k: (load_key(pki / f"{k}-seal.key"), load_pem_certificates(pki / f"{k}-chain.pem"))
                for k in ("trader", "other", "expired", "revoked")}
        for name, recipe, expect, keyset in recipes(pki):
            key, chain = keys[keyset]
            ctype, body = build_message(recipe, key, chain)
            (wire / f"{name}.mime").write_bytes(mime.write_message_file(ctype, body))
            manifest[name] = expect
        src = wire / "ok-ie3f32-pdf-attachment.mime"
        for mode, name in (("lf-mime", "ok-lf-mime-framing"), ("base64-payload", "ok-base64-transfer-encoding"),
                           ("root-second", "ok-soap-part-second")):
            if tamper(src, mode, wire / f"{name}.mime"):
                manifest[name] = {"valid": True}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{len(manifest)} vectors written to {wire}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
