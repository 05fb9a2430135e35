"""Sealing: WS-Security 1.1.1 with an X509PKIPathv1 token, exclusive c14n, rsa-sha256 and sha256.

One ds:Signature covers eb:Messaging, the (empty) SOAP Body and every MIME attachment (SwA
Attachment-Content-Signature-Transform over the transmitted part content). ``seal`` is the only sealing path
of the gateway and refuses what customs would refuse (a leaf-only chain, a missing Body); deliberately broken
messages for negative tests come from ``gateway.conformance.unsafe`` which calls ``seal_with`` directly.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from gateway.ebms.constants import (
    ALG_ATTACHMENT_CONTENT, ALG_EXC_C14N, ALG_RSA_SHA256, ALG_SHA256, ENC_BASE64, NS_DS, NS_EB, NS_EC,
    NS_SOAP12, NS_WSSE, NS_WSU, VT_PKIPATH, VT_X509V3,
)
from gateway.ebms.mime import cid_uri
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


def attachment_digest_input(content: bytes, content_type: str, *, strict: bool = False) -> bytes:
    """SwA 1.1 section 5.4.2: XML content types are canonicalized, text/* gets CRLF line ends, anything else
    (ICS2 sends application/gzip) is digested as the raw octets after transfer decoding.

    ``strict`` (the verifier) refuses, with ValueError, an XML part holding a comment or a processing
    instruction: canonicalization without comments drops comments, so one could be added after sealing, and a
    payload reader stops at either (``<MRN>26NL<!---->...</MRN>``); what is delivered must be what was signed."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("text/xml", "application/xml") or media.endswith("+xml"):
        from gateway.xmlsafe import XmlRejected, parse_xml
        try:
            root = parse_xml(content, max_bytes=max(len(content), 1), what="XML attachment")
        except XmlRejected as exc:
            raise ValueError(str(exc)) from None
        if strict and _HIDDEN_NODES(root):
            raise ValueError("the XML part contains a comment or processing instruction, which its signature "
                             "does not cover (SwA 5.4.2 canonicalization)")
        return etree.tostring(root.getroottree(), method="c14n", exclusive=True, with_comments=False)
    if media.startswith("text/"):
        return content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return content


_HIDDEN_NODES = etree.XPath("//comment() | //processing-instruction()")


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _reference(signed_info: etree._Element, uri: str, transform: str, prefixes: Sequence[str] | None,
               digest: str, digest_method: str = ALG_SHA256) -> etree._Element:
    ref = etree.SubElement(signed_info, _DS + "Reference", URI=uri)
    transforms = etree.SubElement(ref, _DS + "Transforms")
    t = etree.SubElement(transforms, _DS + "Transform", Algorithm=transform)
    if prefixes:
        etree.SubElement(t, "{%s}InclusiveNamespaces" % NS_EC, nsmap={"ec": NS_EC}, PrefixList=" ".join(prefixes))
    etree.SubElement(ref, _DS + "DigestMethod", Algorithm=digest_method)
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
    """Seals ``env`` the one way ICS2 accepts; returns the sealed envelope and
    its ds:Reference elements (for NRR receipts). Serialize the returned tree: it is usually ``env`` itself, a
    re-parsed copy when lxml could not canonicalize the built tree exactly (``env`` is then emptied)."""
    if len(identity.chain) < 2:
        raise SealError("refusing to seal with a leaf-only chain: ICS2 requires the full chain (ICD 4.6.2)")
    return seal_with(env, attachments, identity.key, identity.chain)


def seal_with(env: etree._Element, attachments: Sequence[Attachment], key: object,
              chain_leaf_first: Sequence[object], *, token_type: str = VT_PKIPATH, token_leaf_first: bool = False,
              sign_body: bool = True, signature_method: str = ALG_RSA_SHA256,
              digest_method: str = ALG_SHA256,
              skip_attachments: Sequence[str] = ()) -> tuple[etree._Element, list[etree._Element]]:
    """The sealing mechanics, with knobs that only the negative-test builder turns.

    Digests and the SignedInfo are canonicalized on the tree as built, without a serialize/re-parse round trip,
    except where lxml is known to canonicalize a freshly built tree differently from the parsed bytes the
    verifier will see (``_c14n_exact``): then, and only then, the envelope is re-parsed first."""
    header, messaging, body = find_parts(env)
    security = etree.Element(_WSSE + "Security", nsmap=_SECURITY_NSMAP)
    security.set(_S + "mustUnderstand", "true")
    header.insert(0, security)

    token_id, sig_id, ki_id, str_id = _uuid4_strs(4)
    token_id = "X509-" + token_id
    bst = etree.SubElement(security, _WSSE + "BinarySecurityToken", EncodingType=ENC_BASE64, ValueType=token_type)
    bst.set(_WSU_ID, token_id)
    bst.text = _token_b64(chain_leaf_first, token_type, token_leaf_first)

    signature = etree.SubElement(security, _DS + "Signature", nsmap=_DS_NSMAP, Id="SIG-" + sig_id)
    signed_info = etree.SubElement(signature, _DS + "SignedInfo")
    cm = etree.SubElement(signed_info, _DS + "CanonicalizationMethod", Algorithm=ALG_EXC_C14N)
    si_prefixes = ancestor_prefixes(signed_info)
    if si_prefixes:
        etree.SubElement(cm, "{%s}InclusiveNamespaces" % NS_EC, nsmap=_EC_NSMAP, PrefixList=" ".join(si_prefixes))
    etree.SubElement(signed_info, _DS + "SignatureMethod", Algorithm=signature_method)

    targets = [messaging] + ([body] if sign_body else [])
    digest = _digester(digest_method)
    canon: list[bytes] | None = []
    for target in targets:
        prefixes = ancestor_prefixes(target)
        data = _c14n_exact(target, prefixes)
        if data is None:
            canon = None
            break
        canon.append(data)
    if canon is None:
        # lxml would canonicalize this freshly built tree differently from its serialization (see
        # _c14n_exact): canonicalize a re-parsed copy instead; the caller's element is replaced by it.
        signature_id = signature.get("Id")
        reparsed = etree.fromstring(etree.tostring(env), parser=_PARSER)
        env.clear()
        _, messaging, body = find_parts(reparsed)
        targets = [messaging] + ([body] if sign_body else [])
        signature = next(e for e in reparsed.iter(_DS + "Signature") if e.get("Id") == signature_id)
        signed_info = signature.find(_DS + "SignedInfo")
        canon = [c14n(t, ancestor_prefixes(t)) for t in targets]
        env = reparsed
    for target, data in zip(targets, canon):
        _reference(signed_info, "#" + target.get(_WSU_ID), ALG_EXC_C14N, ancestor_prefixes(target), digest(data),
                   digest_method)
    for att in attachments:
        if att.content_id in skip_attachments:
            continue
        _reference(signed_info, cid_uri(att.content_id), ALG_ATTACHMENT_CONTENT, None,
                   digest(attachment_digest_input(att.content, att.content_type)), digest_method)
    si_c14n = _c14n_exact(signed_info, si_prefixes)
    if si_c14n is None:  # never seen; kept so that a future lxml cannot make us sign the wrong bytes
        signature_id = signature.get("Id")
        reparsed = etree.fromstring(etree.tostring(env), parser=_PARSER)
        env.clear()
        env = reparsed
        signature = next(e for e in env.iter(_DS + "Signature") if e.get("Id") == signature_id)
        signed_info = signature.find(_DS + "SignedInfo")
        si_c14n = c14n(signed_info, si_prefixes)
    signature_value = rsa_backend.sign(key, si_c14n, signature_method)
    etree.SubElement(signature, _DS + "SignatureValue").text = base64.b64encode(signature_value).decode("ascii")
    key_info = etree.SubElement(signature, _DS + "KeyInfo", Id="KI-" + ki_id)
    str_el = etree.SubElement(key_info, _WSSE + "SecurityTokenReference")
    str_el.set(_WSU_ID, "STR-" + str_id)
    etree.SubElement(str_el, _WSSE + "Reference", URI="#" + token_id,
                     ValueType=token_type if token_type in (VT_PKIPATH, VT_X509V3) else VT_PKIPATH)
    return env, list(signed_info.iterchildren(_DS + "Reference"))


def _c14n_exact(el: etree._Element, prefixes: Sequence[str]) -> bytes | None:
    """``c14n(el, prefixes)`` when it is certain to equal the canonical form of the parsed serialization.

    lxml (6.1, libxml2 2.14) drops InclusiveNamespaces prefixes that are declared on an ancestor of a freshly
    built element but used nowhere below it in some shapes (an empty last child of the root, for one). An
    InclusiveNamespaces prefix in scope must be rendered on the apex element (Exclusive XML C14N 1.0 section
    3), so the result is checked for every such declaration; ``None`` means "re-parse and canonicalize
    that tree instead"."""
    out = c14n(el, prefixes)
    if prefixes:
        apex = out[:out.find(b">")]
        for p in prefixes:
            if p not in ("#default", "xml") and (b" xmlns:" + p.encode("ascii") + b"=") not in apex:
                return None
    return out


def _uuid4_strs(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as strings, from one call to the OS random source."""
    raw = os.urandom(16 * n)
    out = []
    for i in range(0, 16 * n, 16):
        h = raw[i:i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
    return out


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_SECURITY_NSMAP = {"wsse": NS_WSSE, "wsu": NS_WSU}
_DS_NSMAP = {"ds": NS_DS}
_EC_NSMAP = {"ec": NS_EC}
_TOKENS: dict[tuple[object, ...], tuple[tuple[object, ...], str]] = {}


def _token_b64(chain_leaf_first: Sequence[object], token_type: str, leaf_first: bool) -> str:
    """The base64 BinarySecurityToken value for a chain, cached per chain (the chain objects are immutable)."""
    certs = tuple(chain_leaf_first)
    key = (token_type, leaf_first, *map(id, certs))
    hit = _TOKENS.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], certs)):
        return hit[1]
    if token_type == VT_PKIPATH:
        token = pkipath.encode(list(reversed(certs)) if leaf_first else list(certs))  # type: ignore[arg-type]
    else:
        from cryptography.hazmat.primitives.serialization import Encoding
        token = certs[0].public_bytes(Encoding.DER)  # type: ignore[attr-defined]
    value = base64.b64encode(token).decode("ascii")
    if len(_TOKENS) >= 32:
        _TOKENS.clear()
    _TOKENS[key] = (certs, value)  # holds the certificates, so their ids cannot be reused while cached
    return value


def _digester(method: str):  # type: ignore[no-untyped-def]
    if method == ALG_SHA256:
        return sha256_b64
    if method == "http://www.w3.org/2000/09/xmldsig#sha1":
        return lambda data: base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")  # noqa: S324 (tests only)
    raise SealError(f"unsupported digest method {method}")
