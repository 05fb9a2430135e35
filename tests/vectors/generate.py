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

import base64
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
from lxml import etree  # noqa: E402

from gateway.conformance import unsafe  # noqa: E402
from gateway.conformance.unsafe import Part, Recipe, build_message, xml_part  # noqa: E402
from gateway.ebms import build, compression, mime  # noqa: E402
from gateway.ebms.constants import (  # noqa: E402
    MIME_GZIP, MIME_XML, NS_DS, NS_EB, NS_EC, NS_SOAP12, NS_WSSE, PARTY_TYPE_AUTH, PARTY_TYPE_EORI, ROLE_CUSTOMS,
    ROLE_TRADER, TEST_ACTION, TEST_SERVICE, VT_X509V3,
)
from gateway.ebms.model import EbmsError, Party, new_message_id, utc_timestamp  # noqa: E402
from gateway.security.seal import Attachment, seal_with  # noqa: E402
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


# ---- "read exactly what was signed": edits that exclusive c14n cannot see -------------------------------------
EB = "{%s}" % NS_EB
DS = "{%s}" % NS_DS


def hide_in(tag: str, node: str = "comment", index: int = 0, cut: int | None = None, tail: str | None = None,
            within: str | None = None):  # type: ignore[no-untyped-def]
    """Splits the text of the ``index``-th ``tag`` element around a comment (or PI, or element): exclusive c14n
    without comments gives the same bytes for a comment, so the signature still verifies after the edit, while
    ``element.text`` would read only the part before it."""
    def edit(env: etree._Element) -> None:
        scope = next(env.iter(within)) if within else env
        el = list(scope.iter(tag))[index]
        text = el.text or ""
        at = len(text) // 2 if cut is None else cut
        el.text = text[:at]
        child = (etree.Comment("") if node == "comment" else etree.ProcessingInstruction("x", "y") if node == "pi"
                 else etree.Element("{urn:x-test:hidden}b", nsmap={"h": "urn:x-test:hidden"}))
        child.tail = text[at:] if tail is None else tail
        el.insert(0, child)
    return edit


def second_messaging_with_signal(env: etree._Element) -> None:
    """A second eb:Messaging that carries only an eb:Error signal, next to the signed UserMessage."""
    header = env.find("{%s}Header" % NS_SOAP12)
    twin = etree.SubElement(header, EB + "Messaging", nsmap={"eb": NS_EB})
    sm = etree.SubElement(twin, EB + "SignalMessage")
    mi = etree.SubElement(sm, EB + "MessageInfo")
    etree.SubElement(mi, EB + "Timestamp").text = "2026-11-24T10:15:30.123Z"
    etree.SubElement(mi, EB + "MessageId").text = "forged-error@unsafe.test"
    etree.SubElement(sm, EB + "Error", errorCode="EBMS:0004", severity="failure", shortDescription="Other")


def set_href(value: str, index: int = 0):  # type: ignore[no-untyped-def]
    def edit(env: etree._Element) -> None:
        list(env.iter(EB + "PartInfo"))[index].set("href", value)
    return edit


def add_part_info(href: str):  # type: ignore[no-untyped-def]
    def edit(env: etree._Element) -> None:
        pi = next(env.iter(EB + "PayloadInfo"))
        etree.SubElement(pi, EB + "PartInfo", href=href)
    return edit


def prefix_list_flood(count: int):  # type: ignore[no-untyped-def]
    """A PrefixList of ``count`` prefixes on the first reference (quadratic canonicalization if not capped)."""
    def edit(env: etree._Element) -> None:
        transform = next(env.iter(DS + "Transform"))
        for inc in transform.findall("{%s}InclusiveNamespaces" % NS_EC):
            transform.remove(inc)
        etree.SubElement(transform, "{%s}InclusiveNamespaces" % NS_EC, nsmap={"ec": NS_EC},
                         PrefixList=" ".join(f"p{i}" for i in range(count)))
    return edit


def namespace_flood(count: int):  # type: ignore[no-untyped-def]
    """``count`` unused namespace declarations on eb:UserMessage: exclusive c14n drops them, the seal holds."""
    decls = " ".join(f'xmlns:n{i}="urn:x-test:n{i}"' for i in range(count)).encode()
    return unsafe.replace_bytes(b"<eb:UserMessage", b"<eb:UserMessage " + decls)


def add_unnamed_part(content_type: str, body: bytes) -> tuple[str, bytes]:
    """An extra MIME part without a Content-ID, before the closing delimiter."""
    boundary = mime.parse_header_value(content_type)[1]["boundary"].encode()
    close = b"\r\n--" + boundary + b"--"
    extra = b"\r\n--" + boundary + b"\r\nContent-Type: application/pdf\r\n\r\n" + PDF
    i = body.rindex(close)
    return content_type, body[:i] + extra + body[i:]


def gzip_with_trailer(data: bytes, trailer: bytes = b"TRAILING-BYTES") -> Part:
    """A gzip part followed by bytes that are not a gzip member; the seal covers them."""
    return Part("payload@unsafe.test", MIME_XML, compression.gzip_bytes(data) + trailer, compress=False,
                content_type=MIME_GZIP, properties=(("MimeType", MIME_XML), ("CharacterSet", "utf-8"),
                                                    ("CompressionType", MIME_GZIP)))


def utf16_payload(content_type: str, body: bytes) -> tuple[str, bytes]:
    """Re-encodes the uncompressed XML payload as BOM-less UTF-16 after sealing: its canonical form (the signed
    digest input) does not change."""
    utf16 = ENS.replace(b'encoding="UTF-8"', b'encoding="UTF-16"').decode("utf-8").encode("utf-16-le")
    return unsafe.replace_bytes(ENS, utf16)(content_type, body)


def custom_vectors(keys: dict) -> list[tuple[str, tuple[str, bytes], dict]]:  # type: ignore[type-arg]
    """Vectors that a Recipe cannot express: signals, and seals with repeated references."""
    key, chain = keys["trader"]
    out = []

    def user_message_with_refs(name: str, copies: int) -> tuple[str, bytes]:
        recipe = Recipe(parts=[xml_part(ENS), Part("invoice-1", "application/pdf", PDF)])
        um_env = build.user_message_envelope(_um(recipe))
        wire = [p.wire() for p in recipe.parts]
        atts = [Attachment(c, t, d) for c, t, d in wire]
        env, _ = seal_with(um_env, atts[:1] + [atts[1]] * copies, key, chain)
        return mime.pack(build.serialize(env), wire)

    out.append(("bad-duplicate-attachment-reference", user_message_with_refs("dup", 2),
                {"code": "EBMS:0101", "match": "more than once"}))
    out.append(("bad-reference-flood", user_message_with_refs("flood", 200),
                {"code": "EBMS:0103", "match": "references"}))

    def signal(env: etree._Element, edits: list) -> tuple[str, bytes]:  # type: ignore[type-arg]
        env, _ = seal_with(env, [], key, chain)
        for e in edits:
            e(env)
        return 'application/soap+xml; charset="UTF-8"', build.serialize(env)

    def receipt(edits: list) -> tuple[str, bytes]:  # type: ignore[type-arg]
        um_env = build.user_message_envelope(_um(Recipe(parts=[xml_part(ENS)])))
        _, refs = seal_with(um_env, [Attachment(*xml_part(ENS).wire())], key, chain)
        env = build.receipt_envelope(new_message_id("unsafe.test"), utc_timestamp(), "acked@unsafe.test", refs)
        return signal(env, edits)

    def set_token(value: str):  # type: ignore[no-untyped-def]
        def edit(env: etree._Element) -> None:
            next(env.iter("{%s}BinarySecurityToken" % NS_WSSE)).text = value
        return edit

    from gateway.security import pkipath
    long_path = base64.b64encode(pkipath.encode(list(chain) * 3)).decode()  # 9 certificates
    out.append(("bad-token-too-many-certificates", build_message(Recipe(parts=[xml_part(ENS)], after_seal=[
        set_token(long_path)]), key, chain), {"code": "EBMS:0101", "match": "9 certificates"}))
    out.append(("bad-token-too-large", build_message(Recipe(parts=[xml_part(ENS)], after_seal=[
        set_token("A" * 70000)]), key, chain), {"code": "EBMS:0101", "match": "characters"}))
    out.append(("ok-receipt", receipt([]), {"valid": True}))
    out.append(("bad-comment-in-receipt-digest-value", receipt([hide_in(DS + "DigestValue", within=EB + "Messaging")]),
                {"code": "EBMS:0009", "match": "comment"}))
    out.append(("bad-element-in-receipt-digest-value", receipt([hide_in(DS + "DigestValue", node="element", within=EB + "Messaging")]),
                {"code": "EBMS:0009", "match": "text only"}))
    error = EbmsError("EBMS:0004", "failure", "Content", "Other", "Refused: A001 authorisation", None, "ebMS")
    out.append(("bad-comment-in-error-description",
                signal(build.error_envelope(new_message_id("unsafe.test"), utc_timestamp(), [error]),
                       [hide_in(EB + "Description", cut=len("Refused: A00"))]),
                {"code": "EBMS:0009", "match": "comment"}))
    return out


def _um(recipe: Recipe):  # type: ignore[no-untyped-def]
    """The UserMessage ``build_message`` would build for ``recipe`` (for the custom vectors)."""
    from gateway.ebms.model import PartInfo, UserMessage
    infos = tuple(PartInfo(href="cid:" + p.content_id, mime_type=p.mime_type,
                           compression=MIME_GZIP if p.compress else None) for p in recipe.parts)
    return UserMessage(message_id=new_message_id("unsafe.test"), timestamp=utc_timestamp(),
                       from_party=recipe.from_party, to_party=recipe.to_party, service=recipe.service,
                       service_type=recipe.service_type, action=recipe.action, agreement=recipe.agreement,
                       agreement_type=recipe.agreement_type, conversation_id="1", part_infos=infos)


def signed_value_vectors() -> list[tuple[str, Recipe, dict, str]]:
    """Every value read from a signed element, hidden behind a comment added after sealing (the seal still
    verifies), or behind a processing instruction or element added before sealing (the seal covers them)."""
    def payload(**kw):  # type: ignore[no-untyped-def]
        return [xml_part(ENS, **kw)]
    refused = {"code": "EBMS:0009", "match": "comment"}
    where = {"action": "comment inside Messaging", "security-token": "comment inside Security"}
    out: list[tuple[str, Recipe, dict, str]] = []
    for name, tag, kw in (
            ("message-id", EB + "MessageId", {}),
            ("ref-to-message-id", EB + "RefToMessageId", {"ref_to_message_id": "earlier@unsafe.test"}),
            ("timestamp", EB + "Timestamp", {"cut": 19}),
            ("conversation-id", EB + "ConversationId", {}),
            ("from-party-id", EB + "PartyId", {}),
            ("from-role", EB + "Role", {}),
            ("service", EB + "Service", {}),
            ("action", EB + "Action", {}),
            ("agreement-ref", EB + "AgreementRef", {}),
            ("part-property", EB + "Property", {}),
            ("security-token", "{%s}BinarySecurityToken" % NS_WSSE, {}),
            ("digest-value", DS + "DigestValue", {}),
            ("signature-value", DS + "SignatureValue", {})):
        cut = kw.pop("cut", 1 if name == "conversation-id" else None)  # ConversationId is "1": "1<!---->"
        expect = {**refused, "match": where[name]} if name in where else refused
        out.append((f"bad-comment-in-{name}", Recipe(parts=payload(), after_seal=[hide_in(tag, cut=cut)], **kw),
                    expect, "trader"))
    for name, tag, index in (("to-party-id", EB + "PartyId", 1), ("to-role", EB + "Role", 1)):
        out.append((f"bad-comment-in-{name}", Recipe(parts=payload(), after_seal=[hide_in(tag, index=index)]),
                    refused, "trader"))
    # the whole-text readers: an empty comment at the end changes nothing visible, still refused
    out.append(("bad-trailing-comment-in-action", Recipe(parts=payload(), after_seal=[hide_in(EB + "Action", tail="",
                                                                                              cut=6)]),
                refused, "trader"))
    # signed before the edit could matter: child nodes that c14n keeps, so the signature covers them
    out.append(("bad-pi-in-action-signed", Recipe(parts=payload(), before_seal=[hide_in(EB + "Action", node="pi")]),
                {"code": "EBMS:0009", "match": "processing instruction"}, "trader"))
    out.append(("bad-element-in-action-signed", Recipe(parts=payload(), before_seal=[
        hide_in(EB + "Action", node="element")]), {"code": "EBMS:0009", "match": "text only"}, "trader"))
    out.append(("bad-element-in-message-id-signed", Recipe(parts=payload(), before_seal=[
        hide_in(EB + "MessageId", node="element")]), {"code": "EBMS:0009", "match": "text only"}, "trader"))
    out.append(("bad-text-after-comment-in-body-signed", Recipe(parts=payload(), before_seal=[
        hide_in("{%s}Body" % NS_SOAP12, tail="payload hidden in the Body", cut=0)]),
                {"code": "EBMS:0009", "match": "comment inside the SOAP Body"}, "trader"))
    out.append(("bad-whitespace-in-message-id-signed", Recipe(parts=payload(), message_id=" vec-ws@unsafe.test"),
                {"code": "EBMS:0009", "match": "whitespace"}, "trader"))
    # an uncompressed XML payload is digested in canonical form: a comment or another encoding keeps the digest
    out.append(("bad-comment-in-uncompressed-xml-payload", Recipe(parts=payload(compress=False), after_pack=[
        unsafe.replace_bytes(b"<ens:LRN>VEC-LRN-0001</ens:LRN>", b"<ens:LRN>VEC-LRN<!---->-0001</ens:LRN>")]),
                {"code": "EBMS:0101", "match": "comment"}, "trader"))
    out.append(("bad-utf16-reencoded-xml-payload", Recipe(parts=payload(compress=False), after_pack=[utf16_payload]),
                {"code": "EBMS:0101", "match": "UTF-8"}, "trader"))
    # what c14n normalises and the reader reads identically: accepted, and the values are the signed ones
    same = [unsafe.replace_bytes(b"<eb:Action>IE3F32</eb:Action>", b"<eb:Action>IE3F<![CDATA[32]]></eb:Action>"),
            unsafe.replace_bytes(b">NL123456789</eb:PartyId>", b">NL&#49;23456789</eb:PartyId>"),
            unsafe.replace_bytes(b'type="eu-customs-service-type"', b'type="eu&#x2d;customs-service-type"'),
            unsafe.replace_bytes(b"<eb:ConversationId>", b'<eb:ConversationId xmlns:unused="urn:x-test:unused">'),
            unsafe.replace_bytes(b">vec-cdata@unsafe.test<", b"><![CDATA[vec-cdata@unsafe.test]]><")]
    out.append(("ok-cdata-charrefs-redundant-namespaces", Recipe(parts=payload(), message_id="vec-cdata@unsafe.test",
                                                                 after_pack=same),
                {"valid": True, "pmode": True, "values": {"message_id": "vec-cdata@unsafe.test", "action": "IE3F32",
                                                          "from": "NL123456789",
                                                          "service_type": "eu-customs-service-type"}}, "trader"))
    # structure
    out.append(("bad-second-messaging-signal-only", Recipe(parts=payload(), after_seal=[
        second_messaging_with_signal]), {"code": "EBMS:0009", "match": "exactly one eb:Messaging"}, "trader"))
    out.append(("bad-unnamed-extra-mime-part", Recipe(parts=payload(), after_pack=[add_unnamed_part]),
                {"code": "EBMS:0103", "match": "Content-ID"}, "trader"))
    out.append(("bad-uncompressed-attachment-changed-after-signing", Recipe(parts=payload() + [
        Part("invoice-1", "application/pdf", PDF, compress=False)], after_pack=[unsafe.flip_payload_byte]),
                {"code": "EBMS:0101", "match": "digest of cid:invoice-1"}, "trader"))
    out.append(("bad-gzip-trailing-bytes", Recipe(parts=[gzip_with_trailer(ENS)]),
                {"code": "EBMS:0303", "match": "trailing"}, "trader"))
    # cid: URLs, RFC 2392: the same decoder for eb:PartInfo/@href and ds:Reference/@URI
    out.append(("ok-cid-percent-encoded", Recipe(parts=[xml_part(ENS, content_id="payload 1@unsafe.test")],
                                                 before_seal=[set_href("cid:payload%201%40unsafe.test")]),
                {"valid": True, "pmode": True}, "trader"))
    out.append(("bad-cid-malformed-escape", Recipe(parts=payload(), before_seal=[set_href("cid:payload%4")]),
                {"code": "EBMS:0009", "match": "hexadecimal"}, "trader"))
    out.append(("bad-partinfo-same-part-two-spellings", Recipe(parts=payload() + [
        Part("invoice-1", "application/pdf", PDF, declared=False)], before_seal=[
        add_part_info("cid:payload%40unsafe.test")]), {"code": "EBMS:0009", "match": "same MIME part"}, "trader"))
    # bounded work before authentication
    out.append(("bad-prefix-list-flood", Recipe(parts=payload(), after_seal=[prefix_list_flood(2000)]),
                {"code": "EBMS:0103", "match": "PrefixList"}, "trader"))
    out.append(("bad-namespace-flood", Recipe(parts=payload(), after_pack=[namespace_flood(1000)]),
                {"code": "EBMS:0009", "match": "namespace declarations"}, "trader"))
    out.append(("bad-partinfo-flood", Recipe(parts=payload(), before_seal=[
        add_part_info(f"cid:p{i}@unsafe.test") for i in range(50)]), {"code": "EBMS:0011", "match": "lists 51"},
                "trader"))
    out.append(("bad-id-flood", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
        b"<env:Header>", b'<env:Header><f:F xmlns:f="urn:x-test:f">' + b'<f:I Id="i"/>' * 300 + b"</f:F>")]),
                {"code": "EBMS:0103", "match": "Id attribute"}, "trader"))
    out.append(("bad-pi-before-envelope", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
        b"<env:Envelope", b"<?x-test y?><env:Envelope")]), {"code": "EBMS:0009", "match": "processing instruction"},
                "trader"))
    return out


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
         {"code": "EBMS:0101", "match": "token type X509v3", "policy": "strict"}, "trader"),
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
         {"code": "EBMS:0103", "match": "signature algorithm"}, "trader"),
        ("bad-wrong-digest-algorithm", Recipe(parts=payload(), digest_method=unsafe.SHA1), {"code": "EBMS:0103", "match": "digest algorithm"},
         "trader"),
        ("bad-wrong-compression", Recipe(parts=payload(corrupt_gzip=True)), {"code": "EBMS:0303", "match": "gzip data is damaged"}, "trader"),
        ("bad-two-user-messages", Recipe(parts=payload(), before_seal=[unsafe.duplicate_user_message]),
         {"code": "EBMS:0009", "match": "one eb:UserMessage"}, "trader"),
        ("bad-user-message-no-party-id", Recipe(parts=payload(), before_seal=[unsafe.remove_first("PartyId")]),
         {"code": "EBMS:0009", "match": "eb:PartyId"}, "trader"),
        ("bad-no-responder", Recipe(parts=payload(), before_seal=[unsafe.remove_first("To")]),
         {"code": "EBMS:0009", "match": "eb:To"}, "trader"),
        ("bad-wrong-attachment-id", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"Content-ID: <payload@unsafe.test>", b"Content-ID: <other@unsafe.test>")]), {"code": "EBMS:0011", "match": "names no MIME part"},
         "trader"),
        ("bad-partinfo-mime-mismatch", Recipe(parts=payload() + [Part("extra", "application/pdf", PDF,
                                                                      declared=False)]),
         {"code": "EBMS:0103", "match": "not declared in eb:PayloadInfo"}, "trader"),
        ("bad-payload-changed-after-signing", Recipe(parts=payload(), after_pack=[unsafe.flip_payload_byte]),
         {"code": "EBMS:0101", "match": "digest of cid:payload@unsafe.test"}, "trader"),
        ("bad-header-only-signature", Recipe(parts=payload(), sign_body=False), {"code": "EBMS:0103", "match": "SOAP Body is not signed"}, "trader"),
        ("bad-unsigned-extra-attachment", Recipe(parts=payload() + [Part("invoice-1", "application/pdf", PDF,
                                                                         signed=False)]),
         {"code": "EBMS:0103", "match": "invoice-1 is not signed"}, "trader"),
        ("bad-second-messaging", Recipe(parts=payload(), after_seal=[unsafe.second_messaging]),
         {"code": "EBMS:0009", "match": "exactly one eb:Messaging"}, "trader"),
        ("bad-signature-wrapping", Recipe(parts=payload(), after_seal=[unsafe.wrap_messaging]),
         {"code": "EBMS:0009", "match": "exactly one eb:Messaging"}, "trader"),
        ("bad-duplicate-wsu-id", Recipe(parts=payload(), after_seal=[unsafe.forged_messaging_same_id]),
         {"code": "EBMS:0101", "match": "resolves to 2 elements"}, "trader"),
        ("bad-action-changed-after-signing", Recipe(parts=payload(), after_seal=[unsafe.set_text("Action", "IE3F33")]),
         {"code": "EBMS:0101", "match": "digest of #_messaging"}, "trader"),
        ("bad-untrusted-chain", Recipe(parts=payload()), {"code": "EBMS:0101", "match": "signing certificate is not acceptable"}, "other"),
        ("bad-expired-certificate", Recipe(parts=payload()), {"code": "EBMS:0101", "match": "signing certificate is not acceptable"}, "expired"),
        ("bad-revoked-certificate", Recipe(parts=payload()), {"code": "EBMS:0101", "match": "signing certificate is not acceptable"}, "revoked"),
        ("bad-leaf-only-token", Recipe(parts=payload(), leaf_only=True), {"code": "EBMS:0101", "match": "only the leaf certificate", "policy": "strict"},
         "trader"),
        ("bad-leaf-first-pkipath", Recipe(parts=payload(), token_leaf_first=True), {"code": "EBMS:0101", "match": "PkiPath order"}, "trader"),
        ("bad-unsigned", Recipe(parts=payload(), sign=False), {"code": "EBMS:0103", "match": "not sealed"}, "trader"),
        ("bad-payload-in-body", Recipe(parts=payload(), before_seal=[unsafe.body_payload]), {"code": "EBMS:0103", "match": "SOAP Body must be empty"},
         "trader"),
        ("bad-billion-laughs", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"<?xml version='1.0' encoding='UTF-8'?>",
            b"<?xml version='1.0' encoding='UTF-8'?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">"
            b"<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
            b"<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>")]),
         {"code": "EBMS:0009", "match": "DTD or entity"}, "trader"),
        ("bad-external-entity", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"<?xml version='1.0' encoding='UTF-8'?>",
            b"<?xml version='1.0' encoding='UTF-8'?>\n<!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>")]),
         {"code": "EBMS:0009", "match": "DTD or entity"}, "trader"),
        ("bad-gzip-bomb", Recipe(parts=[xml_part(BOMB)]), {"code": "EBMS:0303", "match": "1000 times"}, "trader"),
        ("bad-soap11-envelope", Recipe(parts=payload(), after_pack=[unsafe.replace_bytes(
            b"http://www.w3.org/2003/05/soap-envelope", b"http://schemas.xmlsoap.org/soap/envelope/")]),
         {"code": "EBMS:0009", "match": "SOAP 1.1"}, "trader"),
        ("bad-undefined-action", Recipe(parts=payload(), action="IE3F99"), {"code": "EBMS:0001", "pmode": True},
         "trader"),
        ("bad-pmode-mismatch-service", Recipe(parts=payload(), service="eu_ics2_c2t"),
         {"code": "EBMS:0010", "pmode": True}, "trader"),
        ("bad-unknown-agreement", Recipe(parts=payload(), agreement="EU-ICS2-TI-V9.9"),
         {"code": "EBMS:0001", "pmode": True}, "trader"),
    ]
    return out + signed_value_vectors()


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
        for name, (ctype, body), expect in custom_vectors(keys):
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
