"""Deliberately non-conformant AS4 messages, for negative tests and the conformance runner's scenarios.

The production path (``Engine``) has no way to produce a leaf-only chain, an unsigned Body or a wrong
algorithm. This module does, by calling the sealing mechanics (``seal_with``) with their knobs turned and by
editing envelopes and MIME packaging around them. Nothing in the daemon imports it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Any

from lxml import etree

from gateway.ebms import build, compression, mime
from gateway.ebms.constants import (
    AGREEMENT, AGREEMENT_TYPE, ALG_RSA_SHA256, ALG_SHA256, MIME_GZIP, MIME_XML, NS_EB, NS_WSU, PARTY_TYPE_AUTH,
    PARTY_TYPE_EORI, ROLE_CUSTOMS, ROLE_TRADER, SERVICE_T2C, SERVICE_TYPE, VT_PKIPATH,
)
from gateway.ebms.model import PartInfo, Party, UserMessage, new_message_id, utc_timestamp
from gateway.security.seal import Attachment, seal_with

EB = "{%s}" % NS_EB
WSU_ID = "{%s}Id" % NS_WSU
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"


@dataclass
class Part:
    content_id: str
    mime_type: str               # PartInfo MimeType (before compression)
    data: bytes                  # uncompressed content
    compress: bool = True
    content_type: str | None = None   # MIME Content-Type on the wire (default gzip or mime_type)
    declared: bool = True        # listed in eb:PayloadInfo
    signed: bool = True          # covered by a ds:Reference
    properties: tuple[tuple[str, str], ...] = ()  # PartProperties override (spelling variants)
    corrupt_gzip: bool = False   # send bytes that are not a valid gzip stream while declaring gzip

    def wire(self) -> tuple[str, str, bytes]:
        data = compression.gzip_bytes(self.data) if self.compress else self.data
        if self.corrupt_gzip:
            data = data[:10] + bytes(b ^ 0x5A for b in data[10:40]) + data[40:]
        ctype = self.content_type or (MIME_GZIP if self.compress else self.mime_type)
        return self.content_id, ctype, data


@dataclass
class Recipe:
    """Everything that can vary in a test message. Defaults give a conformant IE3F32 from the trader."""
    action: str = "IE3F32"
    from_party: Party = field(default_factory=lambda: Party("NL123456789", PARTY_TYPE_EORI, ROLE_TRADER))
    to_party: Party = field(default_factory=lambda: Party("sti-taxud", PARTY_TYPE_AUTH, ROLE_CUSTOMS))
    service: str = SERVICE_T2C
    service_type: str | None = SERVICE_TYPE
    agreement: str | None = AGREEMENT
    agreement_type: str | None = AGREEMENT_TYPE
    message_id: str | None = None
    ref_to_message_id: str | None = None
    timestamp: str | None = None
    mpc: str | None = None
    parts: list[Part] = field(default_factory=list)
    # sealing knobs
    sign: bool = True
    token_type: str = VT_PKIPATH
    token_leaf_first: bool = False
    leaf_only: bool = False
    sign_body: bool = True
    signature_method: str = ALG_RSA_SHA256
    digest_method: str = ALG_SHA256
    # envelope edits: before sealing (still signed) and after sealing (breaks or wraps the signature)
    before_seal: list[Callable[[etree._Element], None]] = field(default_factory=list)
    after_seal: list[Callable[[etree._Element], None]] = field(default_factory=list)
    # MIME edits on the finished (content_type, body)
    after_pack: list[Callable[[str, bytes], tuple[str, bytes]]] = field(default_factory=list)
    xml_prefix: bytes = b""       # e.g. a UTF-8 BOM before the SOAP envelope


def build_message(recipe: Recipe, key: Any, chain_leaf_first: Sequence[Any]) -> tuple[str, bytes]:
    """Builds (content type, body) following ``recipe``."""
    message_id = recipe.message_id or new_message_id("unsafe.test")
    infos = []
    for p in recipe.parts:
        if not p.declared:
            continue
        props = p.properties or tuple((n, v) for n, v in (("MimeType", p.mime_type),
                                                           ("CharacterSet", "utf-8" if p.mime_type == MIME_XML else None),
                                                           ("CompressionType", MIME_GZIP if p.compress or p.corrupt_gzip
                                                            else None)) if v)
        infos.append(PartInfo(href="cid:" + p.content_id, mime_type=p.mime_type, properties=props))
    um = UserMessage(message_id=message_id, timestamp=recipe.timestamp or utc_timestamp(),
                     from_party=recipe.from_party, to_party=recipe.to_party, service=recipe.service,
                     service_type=recipe.service_type, action=recipe.action, agreement=recipe.agreement,
                     agreement_type=recipe.agreement_type, conversation_id="1", part_infos=tuple(infos),
                     ref_to_message_id=recipe.ref_to_message_id, mpc=recipe.mpc)
    env = build.user_message_envelope(um)
    for edit in recipe.before_seal:
        edit(env)
    wire = [p.wire() for p in recipe.parts]
    if recipe.sign:
        chain = list(chain_leaf_first)[:1] if recipe.leaf_only else list(chain_leaf_first)
        env, _ = seal_with(env, [Attachment(c, t, d) for c, t, d in wire], key, chain, token_type=recipe.token_type,
                  token_leaf_first=recipe.token_leaf_first, sign_body=recipe.sign_body,
                  signature_method=recipe.signature_method, digest_method=recipe.digest_method,
                  skip_attachments=[p.content_id for p in recipe.parts if not p.signed])
    for edit in recipe.after_seal:
        edit(env)
    content_type, body = mime.pack(recipe.xml_prefix + build.serialize(env), wire)
    for edit in recipe.after_pack:
        content_type, body = edit(content_type, body)
    return content_type, body


def xml_part(payload: bytes, content_id: str = "payload@unsafe.test", **kw: Any) -> Part:
    return Part(content_id=content_id, mime_type=MIME_XML, data=payload, **kw)


# ---- envelope edits ---------------------------------------------------------------------------------------

def set_text(local: str, value: str) -> Callable[[etree._Element], None]:
    def edit(env: etree._Element) -> None:
        el = next(env.iter(EB + local))
        el.text = value
    return edit


def remove_first(local: str) -> Callable[[etree._Element], None]:
    def edit(env: etree._Element) -> None:
        el = next(env.iter(EB + local))
        el.getparent().remove(el)
    return edit


def duplicate_user_message(env: etree._Element) -> None:
    um = next(env.iter(EB + "UserMessage"))
    twin = deepcopy(um)
    next(twin.iter(EB + "MessageId")).text = new_message_id("twin.unsafe.test")
    um.addnext(twin)


def second_messaging(env: etree._Element) -> None:
    """A second, unsigned eb:Messaging header with another action."""
    messaging = next(env.iter(EB + "Messaging"))
    twin = deepcopy(messaging)
    twin.set(WSU_ID, "_second-messaging")
    next(twin.iter(EB + "Action")).text = "IE3F99"
    messaging.addnext(twin)


def wrap_messaging(env: etree._Element) -> None:
    """Signature wrapping: the signed eb:Messaging moves into a foreign header, a forged copy takes its place."""
    messaging = next(env.iter(EB + "Messaging"))
    forged = deepcopy(messaging)
    next(forged.iter(EB + "Action")).text = "IE3F99"
    wrapper = etree.Element("{urn:x-test:wrapper}Wrapper", nsmap={"wrap": "urn:x-test:wrapper"})
    messaging.addprevious(wrapper)
    wrapper.append(messaging)
    wrapper.addnext(forged)


def forged_messaging_same_id(env: etree._Element) -> None:
    """Duplicate wsu:Id: a decoy element in another header block carries the signed eb:Messaging's Id."""
    messaging = next(env.iter(EB + "Messaging"))
    decoy = etree.Element("{urn:x-test:wrapper}Decoy", nsmap={"wrap": "urn:x-test:wrapper"})
    decoy.set(WSU_ID, messaging.get(WSU_ID))
    decoy.text = "decoy carrying the signed Id"
    messaging.addnext(decoy)


def body_payload(env: etree._Element) -> None:
    body = env.find("{http://www.w3.org/2003/05/soap-envelope}Body")
    etree.SubElement(body, "{urn:x-test}Injected").text = "payload in the Body"


def flip_payload_byte(content_type: str, body: bytes) -> tuple[str, bytes]:
    """Changes one byte of the last MIME part's content (the payload) after sealing."""
    import re
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    assert m, "not multipart"
    boundary = m.group(1)
    delim = b"--" + boundary.encode()
    last = body.rfind(delim, 0, body.rfind(delim))
    start = body.find(b"\r\n\r\n", last) + 4
    end = body.rfind(b"\r\n" + delim)
    pos = start + (end - start) // 2
    return content_type, body[:pos] + bytes([body[pos] ^ 0x01]) + body[pos + 1:]


def replace_bytes(old: bytes, new: bytes) -> Callable[[str, bytes], tuple[str, bytes]]:
    def edit(content_type: str, body: bytes) -> tuple[str, bytes]:
        if old not in body:
            raise ValueError(f"{old!r} not found in the message")
        return content_type, body.replace(old, new, 1)
    return edit


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


__all__ = ["Recipe", "Part", "build_message", "xml_part", "replace"]
