"""Sealing: WS-Security 1.1.1 with an X509PKIPathv1 token, exclusive c14n, rsa-sha256 and sha256.

One ds:Signature covers eb:Messaging, the (empty) SOAP Body and every MIME attachment (SwA
Attachment-Content-Signature-Transform over the transmitted part content). ``seal`` is the only sealing path
of the gateway and refuses what customs would refuse (a leaf-only chain, a missing Body); deliberately broken
messages for negative tests come from ``gateway.conformance.unsafe`` which calls ``seal_with`` directly.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from gateway.ebms.constants import (
    ALG_ATTACHMENT_CONTENT, ALG_EXC_C14N, ALG_RSA_SHA256, ALG_SHA256, ENC_BASE64, NS_DS, NS_EB, NS_EC,
    NS_SOAP12, NS_WSSE, NS_WSU, VT_PKIPATH, VT_X509V3,
)
from gateway.security import pkipath, rsa_backend
from gateway.security.keys import SealingIdentity

_DS = "{%s}" % NS_DS
_WSSE = "{%s}" % NS_WSSE
_WSU_ID = "{%s}Id" % NS_WSU
_S = "{%s}" % NS_SOAP12


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


class SealError(ValueError):
    pass


@dataclass(frozen=True)
class Attachment:
    """A MIME part to be (or that was) signed: its Content-ID (no brackets), Content-Type and content octets."""
    content_id: str
    content_type: str
    content: bytes


def ancestor_prefixes(el: etree._Element) -> list[str]:
    """Prefixes declared on the ancestors of ``el`` minus its own (what WSS4J puts in InclusiveNamespaces)."""
    parent = el.getparent()
    out = {p or "#default" for p in parent.nsmap} if parent is not None else set()
    out.discard(el.prefix or "#default")
    return sorted(out)


def c14n(el: etree._Element, prefixes: Sequence[str] | None = None) -> bytes:
    """Exclusive XML canonicalization (without comments) of ``el`` and its subtree."""
    incl = [p for p in (prefixes or ()) if p != "#default"] or None
    return etree.tostring(el, method="c14n", exclusive=True, with_comments=False, inclusive_ns_prefixes=incl)


def attachment_digest_input(content: bytes, content_type: str) -> bytes:
    """SwA 1.1 section 5.4.2: XML content types are canonicalized, text/* gets CRLF line ends, anything else
    (ICS2 sends application/gzip) is digested as the raw octets after transfer decoding."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("text/xml", "application/xml") or media.endswith("+xml"):
        from gateway.xmlsafe import parse_xml
        root = parse_xml(content, max_bytes=max(len(content), 1), what="XML attachment")
        return etree.tostring(root.getroottree(), method="c14n", exclusive=True, with_comments=False)
    if media.startswith("text/"):
        return content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return content


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _reference(signed_info: etree._Element, uri: str, transform: str, prefixes: Sequence[str] | None,
               digest: str) -> etree._Element:
    ref = etree.SubElement(signed_info, _DS + "Reference", URI=uri)
    transforms = etree.SubElement(ref, _DS + "Transforms")
    t = etree.SubElement(transforms, _DS + "Transform", Algorithm=transform)
    if prefixes:
        etree.SubElement(t, "{%s}InclusiveNamespaces" % NS_EC, nsmap={"ec": NS_EC}, PrefixList=" ".join(prefixes))
    etree.SubElement(ref, _DS + "DigestMethod", Algorithm=ALG_SHA256)
    etree.SubElement(ref, _DS + "DigestValue").text = digest
    return ref


def find_parts(env: etree._Element) -> tuple[etree._Element, etree._Element, etree._Element]:
    header = env.find(_S + "Header")
    body = env.find(_S + "Body")
    if header is None or body is None:
        raise SealError("the envelope has no SOAP Header or no SOAP Body")
    messaging = header.find("{%s}Messaging" % NS_EB)
    if messaging is None:
        raise SealError("the envelope has no eb:Messaging header")
    if messaging.get(_WSU_ID) is None or body.get(_WSU_ID) is None:
        raise SealError("eb:Messaging and the SOAP Body need a wsu:Id to be signed")
    return header, messaging, body


def seal(env: etree._Element, attachments: Sequence[Attachment],
         identity: SealingIdentity) -> tuple[etree._Element, list[etree._Element]]:
    """Seals ``env`` the one way ICS2 accepts; returns the sealed envelope (a new tree: serialize that one) and
    its ds:Reference elements (for NRR receipts)."""
    if len(identity.chain) < 2:
        raise SealError("refusing to seal with a leaf-only chain: ICS2 requires the full chain (ICD 4.6.2)")
    return seal_with(env, attachments, identity.key, identity.chain)


def seal_with(env: etree._Element, attachments: Sequence[Attachment], key: object,
              chain_leaf_first: Sequence[object], *, token_type: str = VT_PKIPATH, token_leaf_first: bool = False,
              sign_body: bool = True, signature_method: str = ALG_RSA_SHA256,
              digest_method: str = ALG_SHA256,
              skip_attachments: Sequence[str] = ()) -> tuple[etree._Element, list[etree._Element]]:
    """The sealing mechanics, with knobs that only the negative-test builder turns."""
    header, messaging, body = find_parts(env)
    security = etree.Element(_WSSE + "Security", nsmap={"wsse": NS_WSSE, "wsu": NS_WSU})
    security.set(_S + "mustUnderstand", "true")
    header.insert(0, security)

    certs = list(chain_leaf_first)
    if token_type == VT_PKIPATH:
        token = pkipath.encode(list(reversed(certs)) if token_leaf_first else certs)
    else:
        from cryptography.hazmat.primitives.serialization import Encoding
        token = certs[0].public_bytes(Encoding.DER)  # type: ignore[attr-defined]
    token_id = f"X509-{uuid.uuid4()}"
    bst = etree.SubElement(security, _WSSE + "BinarySecurityToken", EncodingType=ENC_BASE64, ValueType=token_type)
    bst.set(_WSU_ID, token_id)
    bst.text = base64.b64encode(token).decode("ascii")

    signature = etree.SubElement(security, _DS + "Signature", nsmap={"ds": NS_DS}, Id=f"SIG-{uuid.uuid4()}")
    signed_info = etree.SubElement(signature, _DS + "SignedInfo")
    cm = etree.SubElement(signed_info, _DS + "CanonicalizationMethod", Algorithm=ALG_EXC_C14N)
    si_prefixes = ancestor_prefixes(signed_info)
    if si_prefixes:
        etree.SubElement(cm, "{%s}InclusiveNamespaces" % NS_EC, nsmap={"ec": NS_EC}, PrefixList=" ".join(si_prefixes))
    etree.SubElement(signed_info, _DS + "SignatureMethod", Algorithm=signature_method)

    # Reference skeletons first; digests are filled in on a re-parsed copy of the envelope. lxml's subtree
    # exclusive c14n ignores InclusiveNamespaces prefixes declared on ancestors of a freshly built tree (it
    # honours them on parsed trees), so signer and verifier must canonicalize the same, parsed, tree.
    targets = [messaging] + ([body] if sign_body else [])
    for target in targets:
        _reference(signed_info, "#" + target.get(_WSU_ID), ALG_EXC_C14N, ancestor_prefixes(target), "")
    signed_atts = [a for a in attachments if a.content_id not in skip_attachments]
    digest = _digester(digest_method)
    for att in signed_atts:
        _reference(signed_info, "cid:" + att.content_id, ALG_ATTACHMENT_CONTENT, None,
                   digest(attachment_digest_input(att.content, att.content_type)))
    for r in signed_info.iterchildren(_DS + "Reference"):
        r.find(_DS + "DigestMethod").set("Algorithm", digest_method)
    signature_id = signature.get("Id")
    reparsed = etree.fromstring(etree.tostring(env), parser=_PARSER)
    env.clear()  # the caller's element is replaced by the re-parsed tree
    _, messaging, body = find_parts(reparsed)
    signature = next(e for e in reparsed.iter(_DS + "Signature") if e.get("Id") == signature_id)
    signed_info = signature.find(_DS + "SignedInfo")
    by_id = {messaging.get(_WSU_ID): messaging, body.get(_WSU_ID): body}
    for r in signed_info.iterchildren(_DS + "Reference"):
        uri = r.get("URI") or ""
        if uri.startswith("#"):
            target = by_id[uri[1:]]
            t = r.find(f"{_DS}Transforms/{_DS}Transform")
            inc = t.find("{%s}InclusiveNamespaces" % NS_EC)
            prefixes = (inc.get("PrefixList") or "").split() if inc is not None else None
            r.find(_DS + "DigestValue").text = digest(c14n(target, prefixes))
    signature_value = rsa_backend.sign(key, c14n(signed_info, si_prefixes), signature_method)
    etree.SubElement(signature, _DS + "SignatureValue").text = base64.b64encode(signature_value).decode("ascii")
    key_info = etree.SubElement(signature, _DS + "KeyInfo", Id=f"KI-{uuid.uuid4()}")
    str_el = etree.SubElement(key_info, _WSSE + "SecurityTokenReference")
    str_el.set(_WSU_ID, f"STR-{uuid.uuid4()}")
    etree.SubElement(str_el, _WSSE + "Reference", URI="#" + token_id,
                     ValueType=token_type if token_type in (VT_PKIPATH, VT_X509V3) else VT_PKIPATH)
    return reparsed, list(signed_info.iterchildren(_DS + "Reference"))


def _digester(method: str):  # type: ignore[no-untyped-def]
    if method == ALG_SHA256:
        return sha256_b64
    if method == "http://www.w3.org/2000/09/xmldsig#sha1":
        return lambda data: base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")  # noqa: S324 (tests only)
    raise SealError(f"unsupported digest method {method}")
