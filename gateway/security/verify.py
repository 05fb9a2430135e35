"""Verification of a sealed AS4 message, failing closed.

What is checked, in order, cheap and decisive first (a peer that any TLS layer accepts must not be able to
make the verifier spend more than the message's own size in work): one wsse:Security header with one
ds:Signature; algorithms on the allow-list; at most 3 + attachments references, each resolving to exactly one
element (a duplicated wsu:Id is an attack, not an ambiguity) that is *the* eb:Messaging or *the* SOAP Body the
caller will read, the token, or an attachment that is really in the message, each named once (``cid:`` URLs
%-decoded as RFC 2392 says, by the same decoder as eb:PartInfo); bounded InclusiveNamespaces PrefixLists;
eb:Messaging, the Body and every attachment covered exactly once; the chain of the token's signer to a
configured anchor, validity and CRLs; the signature value over SignedInfo; and only then every digest.
Values (DigestValue, SignatureValue, the token) are read as the whole text of a text-only element.

Two policies: ``TOLERANT`` (what we accept from customs and other peers: PkiPath or X509v3 tokens) and
``STRICT`` (what customs demands of traders, used by the simulator: X509PKIPathv1 with the full chain).
Every failure is an ``EbmsFault`` with the ebMS code the profile wants.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from lxml import etree

from gateway.ebms.constants import (
    ALG_ATTACHMENT_CONTENT, ALG_EXC_C14N, ALG_RSA_SHA256, ALG_SHA256, NS_DS, NS_EC, NS_SOAP12, NS_WSSE, NS_WSU,
    VT_PKIPATH, VT_X509V3,
)
from gateway.ebms.errors import EbmsFault
from gateway.ebms.mime import cid_from_uri
from gateway.security import pkipath, rsa_backend
from gateway.security.keys import eori_of
from gateway.security.seal import Attachment, attachment_digest_input, c14n
from gateway.security.trust import ChainError, TrustStore
from gateway.xmlsafe import simple_text

_DS = "{%s}" % NS_DS
_WSSE = "{%s}" % NS_WSSE
_WSU_ID = "{%s}Id" % NS_WSU
_S = "{%s}" % NS_SOAP12
_ID_ATTRS = (_WSU_ID, "Id", "ID", "id")


@dataclass(frozen=True)
class VerifyPolicy:
    name: str
    token_types: tuple[str, ...]
    require_full_chain: bool           # the token must hold more than the leaf
    signature_methods: tuple[str, ...] = (ALG_RSA_SHA256,)
    digest_methods: tuple[str, ...] = (ALG_SHA256,)
    require_customs_signer: bool = False
    # the ebMS error (code, detail) for a seal that does not carry the EORI of the PartyId it signs for: customs
    # answer EBMS:0004 / A001 (ICD 4.6.3, 5.1.1), anything else calls it a failed authentication
    eori_binding_fault: tuple[str, str | None] = ("EBMS:0101", None)


TOLERANT = VerifyPolicy("trader-role", (VT_PKIPATH, VT_X509V3), require_full_chain=False)
STRICT = VerifyPolicy("customs-role", (VT_PKIPATH,), require_full_chain=True,
                      eori_binding_fault=("EBMS:0004", "A001"))


@dataclass(frozen=True)
class VerifiedSignature:
    signer: x509.Certificate
    chain: tuple[x509.Certificate, ...]      # leaf first, as validated (ending at the anchor)
    token_type: str
    token_chain_length: int                  # certificates carried in the token
    references: tuple[etree._Element, ...]   # the ds:Reference elements, copied into NRR receipts
    signer_eori: str | None

    @property
    def signer_subject(self) -> str:
        return self.signer.subject.rfc4514_string()


def _fault(code: str, message: str, ref: str | None) -> EbmsFault:
    return EbmsFault(code, message, ref_to_message_id=ref)


# descendant-or-self, not //: libxml2 evaluates "//*[...]" as a union per node and sorts it (5 s for 200 000
# Id-carrying elements, against 0.4 s this way).
_ID_XPATH = etree.XPath("descendant-or-self::*[@wsu:Id or @Id or @ID or @id]", namespaces={"wsu": NS_WSU})
_ID_COUNT = etree.XPath("count(descendant-or-self::*[@wsu:Id or @Id or @ID or @id])", namespaces={"wsu": NS_WSU})
MAX_ID_ELEMENTS = 256          # elements carrying an Id-like attribute (a sealed AS4 message has about 6)


def _ids(root: etree._Element, ref: str | None) -> dict[str, list[etree._Element]]:
    """Every element carrying an Id-like attribute, by value (one XPath in C instead of a Python walk)."""
    table: dict[str, list[etree._Element]] = {}
    count = int(_ID_COUNT(root))  # counted in C first: no Python object per element of a flood
    if count > MAX_ID_ELEMENTS:
        raise _fault("EBMS:0103", f"{count} elements carry an Id attribute, over the limit of {MAX_ID_ELEMENTS}",
                     ref)
    for el in _ID_XPATH(root):
        for attr in _ID_ATTRS:
            value = el.get(attr)
            if value is not None:
                table.setdefault(value, []).append(el)
    return table


def _single(parent: etree._Element, tag: str, what: str, ref: str | None, code: str = "EBMS:0103") -> etree._Element:
    found = parent.findall(tag)
    if len(found) != 1:
        raise _fault(code, f"expected exactly one {what}, found {len(found)}", ref)
    return found[0]


def _b64(text: str | None, what: str, ref: str | None) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise _fault("EBMS:0101", f"{what} is not valid base64", ref) from None


# Work bounds, checked before any digest is computed (see the module docstring and docs/security.md).
MAX_PREFIXES = 16              # InclusiveNamespaces PrefixList entries (WSS4J writes 0-3)
MAX_PREFIX_LIST_CHARS = 512
MAX_NS_DECLARATIONS = 512      # namespace declarations in a SOAP envelope (Engine.open passes it to the parser)
MAX_TOKEN_CHARS = 64 * 1024    # base64 BinarySecurityToken (an ICS2 chain of 3 RSA-3072 certificates: ~5 KB)
MAX_TOKEN_CERTS = 8            # certificates in a PkiPath token (ICS2: leaf, issuing CA, root)
_SHA256_BYTES = 32


@dataclass
class _Planned:
    """A reference whose target is known and whose digest is still to be computed (the last, costly step)."""
    uri: str
    expected: bytes
    element: etree._Element | None = None
    prefixes: list[str] | None = None
    attachment: Attachment | None = None


def _checked_prefix_list(transform_or_cm: etree._Element, what: str, ref: str | None) -> list[str]:
    """The InclusiveNamespaces PrefixList, bounded: a list of thousands of prefixes costs nothing to send and is
    consulted for every namespace of every element canonicalized (and for SignedInfo)."""
    inc = transform_or_cm.find("{%s}InclusiveNamespaces" % NS_EC)
    if inc is None:
        return []
    raw = inc.get("PrefixList") or ""
    prefixes = raw.split()
    if len(raw) > MAX_PREFIX_LIST_CHARS or len(prefixes) > MAX_PREFIXES:
        raise _fault("EBMS:0103", f"{what}: the InclusiveNamespaces PrefixList holds {len(prefixes)} prefixes "
                                  f"({len(raw)} characters), over the limit of {MAX_PREFIXES} "
                                  f"({MAX_PREFIX_LIST_CHARS} characters)", ref)
    return prefixes


def _text_of(el: etree._Element, what: str, ref: str | None) -> str:
    """The whole text of a signature value element (``simple_text``): a child node would make ``.text`` a
    prefix of the value that c14n signed."""
    value = simple_text(el)
    if value is None:
        raise _fault("EBMS:0101", f"{what} must hold text only", ref)
    return value


def verify_envelope(env: etree._Element, messaging: etree._Element, body: etree._Element,
                    attachments: Mapping[str, Attachment], trust: TrustStore, policy: VerifyPolicy = TOLERANT, *,
                    now: dt.datetime | None = None, ref_to_message_id: str | None = None) -> VerifiedSignature:
    """Verifies the seal of a parsed envelope. ``messaging`` and ``body`` are the elements the caller will read;
    ``attachments`` maps Content-ID (no brackets) to the received MIME parts.

    Cheap and decisive first, costly last, so that a peer without a trusted seal cannot make the verifier
    work: (1) structure and algorithms; (2) every reference resolved against the expected targets, each target
    at most once, at most 3 + attachments references, bounded PrefixLists, well-formed digest values; (3) the
    token and its chain to a configured anchor; (4) the SignatureValue over SignedInfo; (5) only then the
    digests of eb:Messaging, the Body, the token and the attachments, each computed once."""
    ref = ref_to_message_id
    header = env.find(_S + "Header")
    if header is None:
        raise _fault("EBMS:0103", "the message has no SOAP Header, so it is not sealed", ref)
    securities = header.findall(_WSSE + "Security")
    if not securities:
        raise _fault("EBMS:0103", "the message is not sealed (no wsse:Security header)", ref)
    if len(securities) > 1:
        raise _fault("EBMS:0103", "more than one wsse:Security header", ref)
    security = securities[0]
    if len(list(env.iter(_DS + "Signature"))) != 1:
        raise _fault("EBMS:0103", "the message must carry exactly one ds:Signature", ref)
    signature = _single(security, _DS + "Signature", "ds:Signature in wsse:Security", ref)
    signed_info = _single(signature, _DS + "SignedInfo", "ds:SignedInfo", ref)

    # --- (1) algorithms
    cm = _single(signed_info, _DS + "CanonicalizationMethod", "ds:CanonicalizationMethod", ref)
    if cm.get("Algorithm") != ALG_EXC_C14N:
        raise _fault("EBMS:0103", f"canonicalization {cm.get('Algorithm')} is not allowed (exclusive c14n only)", ref)
    si_prefixes = _checked_prefix_list(cm, "ds:CanonicalizationMethod", ref)
    sm = _single(signed_info, _DS + "SignatureMethod", "ds:SignatureMethod", ref)
    sig_method = sm.get("Algorithm") or ""
    if sig_method not in policy.signature_methods:
        raise _fault("EBMS:0103", f"signature algorithm {sig_method} is not allowed (rsa-sha256 only)", ref)

    # --- (2) references: resolved, unique, bounded; no digest yet
    references = list(signed_info.iterchildren(_DS + "Reference"))
    if not references:
        raise _fault("EBMS:0103", "the signature has no reference", ref)
    max_refs = 3 + len(attachments)  # eb:Messaging, the Body, the token (some stacks sign it), each attachment
    if len(references) > max_refs:
        raise _fault("EBMS:0103", f"the signature has {len(references)} references; this message has only "
                                  f"{max_refs} signable parts (eb:Messaging, Body, token, {len(attachments)} "
                                  "attachment(s))", ref)
    ids = _ids(env, ref)
    covered: dict[str, int] = {"messaging": 0, "body": 0}
    covered_cids: dict[str, int] = {cid: 0 for cid in attachments}
    seen: set[int] = set()
    plan: list[_Planned] = []
    for r in references:
        uri = r.get("URI")
        dm = _single(r, _DS + "DigestMethod", "ds:DigestMethod", ref)
        if dm.get("Algorithm") not in policy.digest_methods:
            raise _fault("EBMS:0103", f"digest algorithm {dm.get('Algorithm')} is not allowed (sha256 only)", ref)
        transforms = [t for t in r.iterfind(f"{_DS}Transforms/{_DS}Transform")]
        algs = [t.get("Algorithm") for t in transforms]
        expected = _b64(_text_of(_single(r, _DS + "DigestValue", "ds:DigestValue", ref), "a DigestValue", ref),
                        "a DigestValue", ref)
        if len(expected) != _SHA256_BYTES:
            raise _fault("EBMS:0101", f"the DigestValue of {uri} is {len(expected)} bytes, not a SHA-256 digest", ref)
        if uri is None:
            raise _fault("EBMS:0103", "a reference without URI is not allowed", ref)
        if uri.startswith("#"):
            if algs != [ALG_EXC_C14N]:
                raise _fault("EBMS:0103", f"reference {uri}: transforms {algs} not allowed (exclusive c14n only)", ref)
            targets = ids.get(uri[1:], [])
            if len(targets) != 1:
                raise _fault("EBMS:0101", f"reference {uri} resolves to {len(targets)} elements (duplicate or missing "
                                          "Id: possible signature wrapping)", ref)
            target = targets[0]
            if target is messaging:
                covered["messaging"] += 1
            elif target is body:
                covered["body"] += 1
            elif not (target.tag == _WSSE + "BinarySecurityToken" and target.getparent() is security):
                raise _fault("EBMS:0101", f"reference {uri} points at {etree.QName(target).localname}, which is not the "
                                          "eb:Messaging or Body of this message (signature wrapping)", ref)
            if id(target) in seen:
                raise _fault("EBMS:0101", f"reference {uri} names an element that is already referenced", ref)
            seen.add(id(target))
            plan.append(_Planned(uri, expected, element=target,
                                 prefixes=_checked_prefix_list(transforms[0], f"reference {uri}", ref)))
        elif uri[:4].lower() == "cid:":
            if algs != [ALG_ATTACHMENT_CONTENT]:
                raise _fault("EBMS:0103", f"reference {uri}: transforms {algs} not allowed "
                                          "(Attachment-Content-Signature-Transform only)", ref)
            try:
                cid = cid_from_uri(uri)
            except ValueError as exc:
                raise _fault("EBMS:0101", f"reference {uri}: {exc}", ref) from None
            att = attachments.get(cid)
            if att is None:
                raise _fault("EBMS:0101", f"reference {uri} names no MIME part of this message", ref)
            if covered_cids[cid]:
                raise _fault("EBMS:0101", f"attachment {cid} is referenced more than once", ref)
            covered_cids[cid] += 1
            plan.append(_Planned(uri, expected, attachment=att))
        else:
            raise _fault("EBMS:0103", f"reference URI {uri!r} is neither a same-document Id nor a cid:", ref)

    for part, count in covered.items():
        if count != 1:
            what = "eb:Messaging" if part == "messaging" else "the SOAP Body"
            raise _fault("EBMS:0103" if count == 0 else "EBMS:0101",
                         f"{what} is {'not signed' if count == 0 else f'referenced {count} times'}", ref)
    for cid, count in covered_cids.items():
        if count != 1:
            raise _fault("EBMS:0103" if count == 0 else "EBMS:0101",
                         f"attachment {cid} is {'not signed' if count == 0 else f'referenced {count} times'}", ref)

    # --- (3) the key: KeyInfo -> SecurityTokenReference -> BinarySecurityToken in this Security header
    str_ref = signature.find(f"{_DS}KeyInfo/{_WSSE}SecurityTokenReference/{_WSSE}Reference")
    if str_ref is None or not (str_ref.get("URI") or "").startswith("#"):
        raise _fault("EBMS:0101", "the signature does not reference a wsse:BinarySecurityToken", ref)
    token_els = ids.get(str_ref.get("URI")[1:], [])  # type: ignore[index]
    if len(token_els) != 1 or token_els[0].tag != _WSSE + "BinarySecurityToken" or token_els[0].getparent() is not security:
        raise _fault("EBMS:0101", "the token reference does not resolve to one BinarySecurityToken of this header", ref)
    bst = token_els[0]
    token_type = bst.get("ValueType") or ""
    if token_type not in policy.token_types:
        raise _fault("EBMS:0101", f"token type {token_type.rsplit('#', 1)[-1]} is not accepted here "
                                  f"(accepted: {', '.join(t.rsplit('#', 1)[-1] for t in policy.token_types)})", ref)
    token_text = _text_of(bst, "the BinarySecurityToken", ref)
    if len(token_text) > MAX_TOKEN_CHARS:
        raise _fault("EBMS:0101", f"the BinarySecurityToken is {len(token_text)} characters, over the limit of "
                                  f"{MAX_TOKEN_CHARS}", ref)
    token = _b64(token_text, "the BinarySecurityToken", ref)
    token_key = hashlib.sha256(token_type.encode() + b"\0" + token).digest()
    chain = _TOKENS.get(token_key)
    if chain is None:
        chain = _decode_token(token_type, token, ref)
        if len(_TOKENS) >= 4096:
            _TOKENS.clear()
        _TOKENS[token_key] = chain
    if policy.require_full_chain and len(chain) < 2:
        raise _fault("EBMS:0101", f"the {token_type.rsplit('#', 1)[-1]} token holds only the leaf certificate; the "
                                  "full chain is required (ICD 4.6.2, X509PKIPathv1)", ref)
    signer = chain[0]
    try:
        result = trust.validate_cached(token_key, chain, at=now)
    except ChainError as exc:
        raise _fault("EBMS:0101", f"the signing certificate is not acceptable ({exc.reason}): {exc}", ref) from None
    if policy.require_customs_signer and not trust.is_customs_certificate(signer):
        raise _fault("EBMS:0101", f"the message is sealed by {signer.subject.rfc4514_string()}, which is not a "
                                  "configured customs sealing certificate", ref)

    # --- (4) the signature value over SignedInfo (bounded: at most 3 + attachments references)
    sig_value = _b64(_text_of(_single(signature, _DS + "SignatureValue", "ds:SignatureValue", ref),
                              "ds:SignatureValue", ref), "SignatureValue", ref)
    if not rsa_backend.verify(signer.public_key(), sig_value, c14n(signed_info, si_prefixes), sig_method):
        raise _fault("EBMS:0101", "the signature value does not verify with the signer's key", ref)

    # --- (5) the digests, each target once: the only work proportional to the message size
    for step in plan:
        if step.element is not None:
            actual = hashlib.sha256(c14n(step.element, step.prefixes)).digest()
        else:
            att = step.attachment
            assert att is not None
            try:
                actual = hashlib.sha256(attachment_digest_input(att.content, att.content_type, strict=True)).digest()
            except ValueError as exc:
                raise _fault("EBMS:0101", f"attachment {att.content_id} cannot be canonicalized: {exc}", ref) from None
        if not hmac.compare_digest(actual, step.expected):
            raise _fault("EBMS:0101", f"digest of {step.uri} does not match: the content was changed after sealing",
                         ref)
    return VerifiedSignature(signer=signer, chain=result.chain, token_type=token_type, token_chain_length=len(chain),
                             references=tuple(references), signer_eori=eori_of(signer))


# Decoded tokens by SHA-256 (type + bytes): a peer seals with the same chain every time, and decoding plus the
# PkiPath order check costs two certificate signature verifications. Only well-formed tokens are cached.
_TOKENS: dict[bytes, list[x509.Certificate]] = {}


def _decode_token(token_type: str, token: bytes, ref: str | None) -> list[x509.Certificate]:
    try:
        if token_type == VT_PKIPATH:
            token_certs = pkipath.decode(token)
            if len(token_certs) > MAX_TOKEN_CERTS:  # before the order check, which verifies each link
                raise _fault("EBMS:0101", f"the X509PKIPathv1 token holds {len(token_certs)} certificates, over the "
                                          f"limit of {MAX_TOKEN_CERTS}", ref)
            # A one-certificate PkiPath is decoded like an X509v3 leaf: STRICT (customs of traders, ICD 4.6.2)
            # refuses it through require_full_chain; TOLERANT completes it from [trust] intermediates/customs_certs
            if len(token_certs) > 1 and not pkipath.order_is_root_first(token_certs):
                raise _fault("EBMS:0101", "the X509PKIPathv1 token is not in PkiPath order (root first, signer last)",
                             ref)
            return list(reversed(token_certs))
        return [x509.load_der_x509_certificate(token)]
    except (pkipath.PkiPathError, ValueError) as exc:
        if isinstance(exc, EbmsFault):
            raise
        raise _fault("EBMS:0101", f"the security token cannot be read: {exc}", ref) from None


def references_digests(refs: Sequence[etree._Element]) -> dict[str, str]:
    """URI -> compact base64 digest of each ds:Reference (to compare NRR information)."""
    out = {}
    for r in refs:
        dv = r.find(_DS + "DigestValue")
        out[r.get("URI") or ""] = "".join((dv.text or "").split()) if dv is not None else ""
    return out
