"""The AS4 engine: sealed messages out, verified messages in. Sans-I/O: bytes in, bytes out.

``Engine.user_message`` / ``receipt_for`` / ``error_signal`` / ``pull_request`` / ``ping`` build sealed wire
messages; ``Engine.open`` unpacks, parses and verifies any received message and raises ``EbmsFault`` with the
ebMS error code for anything it refuses; ``Engine.check_receipt`` checks a receipt against what we sent.
The CLI, the transport, the daemon and the simulator all use this one class.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lxml import etree

from gateway.config import GatewayConfig, Limits
from gateway.ebms import build, compression, mime
from gateway.ebms.constants import (
    AGREEMENT, AGREEMENT_TYPE, ATTACHMENT_MIME_TYPES, MIME_GZIP, MIME_XML, MPC_PREFIX, PARTY_TYPE_AUTH,
    PARTY_TYPE_EORI, ROLE_CUSTOMS, ROLE_TRADER, SERVICE_T2C, SERVICE_TYPE, TEST_ACTION, TEST_SERVICE,
)
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import (
    EbmsError, ErrorSignal, Messaging, OutboundPart, PartInfo, Party, PullRequest, Receipt, UserMessage,
    new_message_id, utc_timestamp,
)
from gateway.ebms.parse import ParsedEnvelope, parse_envelope
from gateway.security.binding import EoriBindingError, check_eori_binding
from gateway.security.keys import SealingIdentity, load_sealing_identity
from gateway.security.seal import Attachment, seal
from gateway.security.trust import TrustStore
from gateway.security.verify import (
    MAX_NS_DECLARATIONS, TOLERANT, VerifiedSignature, VerifyPolicy, references_digests, verify_envelope,
)
from gateway.xmlsafe import XmlRejected, parse_xml

# ICD 3.1.11 / 4.2.5: the only actions that may carry binary attachments.
ATTACHMENT_ACTIONS = frozenset({"IE3F20", "IE3F23", "IE3F24", "IE3F26", "IE3F28", "IE3F32",
                                "IE3A20", "IE3A23", "IE3A24", "IE3A26", "IE3A28", "IE3A32", "IE3R02", "IE3R03"})


@dataclass(frozen=True)
class OutboundMessage:
    """A sealed message ready for the wire: ``content_type`` and ``body`` are the HTTP header and body."""
    message_id: str
    kind: str
    content_type: str
    body: bytes
    references: tuple[etree._Element, ...] = field(repr=False)
    user_message: UserMessage | None = None
    digests: dict[str, str] | None = field(default=None, repr=False)  # set when rebuilt from journaled bytes

    def wire_file(self) -> bytes:
        """The on-disk form: MIME headers, a blank line, then the body (what `pack --out` writes)."""
        return mime.write_message_file(self.content_type, self.body)

    @property
    def reference_digests(self) -> dict[str, str]:
        return self.digests if self.digests is not None else references_digests(self.references)

    @classmethod
    def from_wire(cls, message_id: str, content_type: str, body: bytes, kind: str = "user-message") -> OutboundMessage:
        """A journaled sealed message, ready to resend byte for byte and to check its receipt against."""
        return cls(message_id=message_id, kind=kind, content_type=content_type, body=body, references=(),
                   digests=digests_of_wire(content_type, body))


@dataclass(frozen=True)
class InboundPayload:
    """A received MIME part named by an eb:PartInfo, as transmitted (compressed if it was)."""
    content_id: str
    part_info: PartInfo
    content_type: str
    transmitted: bytes = field(repr=False)

    @property
    def compressed(self) -> bool:
        declared = (self.part_info.compression or "").lower() in (MIME_GZIP, "application/x-gzip")
        return declared or compression.is_gzip(self.transmitted)

    def check(self, limits: Limits) -> None:
        """Decompresses without keeping the output, to refuse a damaged or oversized payload with EBMS:0303
        *before* a receipt promises delivery (streaming: memory stays at one chunk whatever the size)."""
        if not self.compressed:
            return
        try:
            for _ in compression.iter_gunzip(self.transmitted, max_out=limits.recv_max_payload_bytes,
                                             max_ratio=limits.recv_max_compression_ratio):
                pass
        except compression.DecompressionError as exc:
            raise EbmsFault("EBMS:0303", f"payload {self.content_id} cannot be decompressed: {exc}") from None

    def data(self, limits: Limits) -> bytes:
        """The payload after decompression, within the receive caps (EBMS:0303 otherwise)."""
        if not self.compressed:
            return bytes(self.transmitted)  # eDelivery 1.4.3.1: an uncompressed payload must not be rejected
        try:
            return compression.gunzip_limited(self.transmitted, max_out=limits.recv_max_payload_bytes,
                                              max_ratio=limits.recv_max_compression_ratio)
        except compression.DecompressionError as exc:
            raise EbmsFault("EBMS:0303", f"payload {self.content_id} cannot be decompressed: {exc}") from None


@dataclass(frozen=True)
class InboundMessage:
    messaging: Messaging
    parsed: ParsedEnvelope = field(repr=False)
    soap: bytes = field(repr=False)
    payloads: tuple[InboundPayload, ...]
    signature: VerifiedSignature | None
    signature_error: EbmsFault | None = None  # set only for unsigned/unverifiable error signals we still read

    @property
    def kind(self) -> str:
        return self.messaging.kind

    @property
    def message_id(self) -> str:
        um = self.messaging.user_message
        if um is not None:
            return um.message_id
        return self.messaging.signals[0].message_id

    @property
    def ref_to_message_id(self) -> str | None:
        um = self.messaging.user_message
        if um is not None:
            return um.ref_to_message_id
        return self.messaging.signals[0].ref_to_message_id

    @property
    def signed(self) -> bool:
        return self.signature is not None


def _attachments_of(unpacked: mime.UnpackedMessage) -> dict[str, Attachment]:
    return {p.content_id: Attachment(p.content_id, p.content_type, bytes(p.content))
            for p in unpacked.attachments if p.content_id}


class Engine:
    """Builds sealed messages for one identity and opens received ones against one trust store."""

    def __init__(self, identity: SealingIdentity, trust: TrustStore, *, party_id: str, fqdn: str,
                 limits: Limits | None = None, role: str = ROLE_TRADER, policy: VerifyPolicy = TOLERANT,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.identity, self.trust = identity, trust
        self.party_id, self.fqdn, self.role = party_id, fqdn, role
        self.limits = limits or Limits.defaults()
        self.policy = policy
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: GatewayConfig, *, policy: VerifyPolicy | None = None) -> Engine:
        from dataclasses import replace
        identity = load_sealing_identity(cfg.seal, conf_file=cfg.file)
        trust = TrustStore.from_files(cfg.trust.anchors, cfg.trust.crls, cfg.trust.customs_certs,
                                      cfg.trust.crl_refresh_seconds, cfg.trust.intermediates,
                                      eori_binding=cfg.trust.eori_binding)
        pol = policy or replace(TOLERANT, require_customs_signer=bool(cfg.trust.customs_certs))
        return cls(identity, trust, party_id=cfg.identity.party_id, fqdn=cfg.identity.fqdn, limits=cfg.limits,
                   policy=pol)

    # ------------------------------------------------------------------------------------------------ parties
    @property
    def own_party(self) -> Party:
        if self.role == ROLE_TRADER:
            return Party(self.party_id, PARTY_TYPE_EORI, ROLE_TRADER)
        return Party(self.party_id, PARTY_TYPE_AUTH, ROLE_CUSTOMS)

    @staticmethod
    def customs_party(party_id: str = "sti-taxud") -> Party:
        return Party(party_id, PARTY_TYPE_AUTH, ROLE_CUSTOMS)

    @staticmethod
    def trader_party(party_id: str) -> Party:
        return Party(party_id, PARTY_TYPE_EORI, ROLE_TRADER)

    # ------------------------------------------------------------------------------------------------ outbound
    def _seal_and_pack(self, env: etree._Element, attachments: Sequence[tuple[str, str, bytes]], kind: str,
                       message_id: str, um: UserMessage | None = None) -> OutboundMessage:
        env, refs = seal(env, [Attachment(c, t, d) for c, t, d in attachments], self.identity)
        soap = build.serialize(env)
        if attachments or kind in ("user-message", "ping"):
            content_type, body = mime.pack(soap, list(attachments))
        else:
            # Signals travel as a bare SOAP envelope; every stack we know accepts this for receipts and errors.
            content_type, body = 'application/soap+xml; charset="UTF-8"', soap
        return OutboundMessage(message_id=message_id, kind=kind, content_type=content_type, body=body,
                               references=tuple(refs), user_message=um)

    def user_message(self, *, action: str, payload: bytes | None, to_party: Party, service: str = SERVICE_T2C,
                     service_type: str | None = SERVICE_TYPE, attachments: Sequence[OutboundPart] = (),
                     ref_to_message_id: str | None = None, conversation_id: str = "1",
                     message_id: str | None = None, mpc: str | None = None, payload_content_id: str | None = None,
                     agreement: str | None = AGREEMENT, agreement_type: str | None = AGREEMENT_TYPE,
                     from_party: Party | None = None) -> OutboundMessage:
        """A sealed UserMessage with one XML business payload (gzip) and optional binary attachments."""
        message_id = message_id or new_message_id(self.fqdn)
        parts: list[OutboundPart] = []
        if payload is not None:
            if len(payload) > self.limits.send_max_payload_bytes:
                raise EbmsFault("EBMS:0103", f"the payload is {len(payload)} bytes, over the send limit of "
                                             f"{self.limits.send_max_payload_bytes} (ICD 4.2.6: 100 MB uncompressed)")
            parts.append(OutboundPart(payload_content_id or f"payload-{message_id}", MIME_XML, payload, "utf-8"))
        if attachments and action not in ATTACHMENT_ACTIONS:
            raise EbmsFault("EBMS:0103", f"{action} may not carry binary attachments (ICD 3.1.11: only "
                                         f"{', '.join(sorted(ATTACHMENT_ACTIONS))})")
        for att in attachments:
            if att.mime_type not in ATTACHMENT_MIME_TYPES:
                raise EbmsFault("EBMS:0103", f"attachment {att.content_id}: {att.mime_type} is not allowed "
                                             "(application/pdf or image/jpeg only, ICD 4.2.5)")
            parts.append(att)
        wire: list[tuple[str, str, bytes]] = []
        infos: list[PartInfo] = []
        total = 0
        for p in parts:
            data = compression.gzip_bytes(p.data) if p.compress else p.data
            total += len(data)
            wire.append((p.content_id, MIME_GZIP if p.compress else p.mime_type, data))
            infos.append(PartInfo(href=mime.cid_uri(p.content_id), mime_type=p.mime_type, charset=p.charset,
                                  compression=MIME_GZIP if p.compress else None))
        if total > self.limits.send_max_message_compressed_bytes:
            raise EbmsFault("EBMS:0103", f"the compressed parts total {total} bytes, over the send limit of "
                                         f"{self.limits.send_max_message_compressed_bytes} (ICD 4.2.6: 20 MB)")
        um = UserMessage(message_id=message_id, timestamp=utc_timestamp(self.clock()),
                         from_party=from_party or self.own_party, to_party=to_party, service=service,
                         service_type=service_type, action=action, agreement=agreement, agreement_type=agreement_type,
                         conversation_id=conversation_id, part_infos=tuple(infos),
                         ref_to_message_id=ref_to_message_id, mpc=mpc)
        kind = "ping" if um.is_ping else "user-message"
        return self._seal_and_pack(build.user_message_envelope(um), wire, kind, message_id, um)

    def ping(self, to_party: Party) -> OutboundMessage:
        """The ebMS test service message (ICD 4.5.1): no payload, business agreement and parties."""
        return self.user_message(action=TEST_ACTION, payload=None, to_party=to_party, service=TEST_SERVICE,
                                 service_type=None)

    def receipt_for(self, inbound: InboundMessage) -> OutboundMessage:
        """The signed NRR receipt for a verified user message (covers the empty Body, as ICS2 demands)."""
        if inbound.signature is None:
            raise EbmsFault("EBMS:0103", "an unsigned message gets no non-repudiation receipt",
                            ref_to_message_id=inbound.message_id)
        message_id = new_message_id(self.fqdn)
        env = build.receipt_envelope(message_id, utc_timestamp(self.clock()), inbound.message_id,
                                     inbound.signature.references)
        return self._seal_and_pack(env, [], "receipt", message_id)

    def error_signal(self, errors: Sequence[EbmsError] | EbmsFault, *,
                     ref_to_message_id: str | None = None) -> OutboundMessage:
        if isinstance(errors, EbmsFault):
            ref_to_message_id = ref_to_message_id or errors.ref_to_message_id
            errors = [errors.to_error(ref_to_message_in_error=ref_to_message_id)]
        message_id = new_message_id(self.fqdn)
        env = build.error_envelope(message_id, utc_timestamp(self.clock()), errors, ref_to_message_id)
        return self._seal_and_pack(env, [], "error", message_id)

    def pull_request(self, mpc: str) -> OutboundMessage:
        message_id = new_message_id(self.fqdn)
        env = build.pull_request_envelope(PullRequest(message_id, utc_timestamp(self.clock()), mpc))
        return self._seal_and_pack(env, [], "pull-request", message_id)

    # ------------------------------------------------------------------------------------------------ inbound
    def open(self, content_type: str, body: bytes, *, policy: VerifyPolicy | None = None,
             verify: bool = True, accept_unsigned_errors: bool = False) -> InboundMessage:
        """Unpacks, parses and verifies a received message; raises EbmsFault on any refusal.

        With ``accept_unsigned_errors`` an ebMS Error signal whose seal is missing or does not verify is still
        returned (``signature`` None, ``signature_error`` set): Domibus-style peers send errors unsigned inside
        a SOAP Fault, and the caller must read them, but never treat them as proof of anything."""
        limits = self.limits
        if len(body) > limits.recv_max_message_bytes:
            raise EbmsFault("EBMS:0103", f"the message is {len(body)} bytes, over the limit of "
                                         f"{limits.recv_max_message_bytes}")
        try:
            unpacked = mime.unpack(content_type, body, max_parts=limits.max_mime_parts,
                                   max_part_bytes=limits.recv_max_message_bytes)
        except mime.MimeError as exc:
            raise EbmsFault("EBMS:0009", f"the MIME packaging is not acceptable: {exc}") from None
        soap = bytes(unpacked.soap.content)
        try:
            root = parse_xml(soap, max_bytes=limits.xml_max_envelope_bytes, max_depth=limits.xml_max_depth,
                             what="SOAP envelope", max_ns_declarations=MAX_NS_DECLARATIONS)
        except XmlRejected as exc:
            raise EbmsFault("EBMS:0009", str(exc)) from None
        parsed = parse_envelope(root, max_part_infos=len(unpacked.attachments))
        messaging = parsed.messaging
        ref = messaging.user_message.message_id if messaging.user_message else messaging.signals[0].message_id
        unnamed = [i + 1 for i, p in enumerate(unpacked.attachments) if not p.content_id]
        if unnamed:
            # no eb:PartInfo and no ds:Reference can name it: an unsigned part, refused as such
            raise EbmsFault("EBMS:0103", f"{len(unnamed)} MIME part(s) without a Content-ID: no signature can cover "
                                         "them", ref_to_message_id=ref)
        attachments = _attachments_of(unpacked)
        payloads: list[InboundPayload] = []
        if messaging.user_message is not None:
            for info in messaging.user_message.part_infos:
                att = attachments.get(info.content_id)
                if att is None:
                    raise EbmsFault("EBMS:0011", f"eb:PartInfo {info.href} names no MIME part of the message",
                                    ref_to_message_id=ref)
                # the same bytes object the signature check digests: one copy of each part, not two
                payloads.append(InboundPayload(info.content_id, info, att.content_type, att.content))
            named = {i.content_id for i in messaging.user_message.part_infos}
            extra = [cid for cid in attachments if cid not in named]
            if extra:
                raise EbmsFault("EBMS:0103", f"MIME part(s) {', '.join(extra)} are not declared in eb:PayloadInfo",
                                ref_to_message_id=ref)
        signature: VerifiedSignature | None = None
        signature_error: EbmsFault | None = None
        if verify:
            try:
                signature = verify_envelope(root, parsed.messaging_element, parsed.body, attachments, self.trust,
                                            policy or self.policy, now=self.clock(), ref_to_message_id=ref)
                self._check_eori_binding(messaging, signature, policy or self.policy, ref)
            except EbmsFault as exc:
                only_errors = messaging.user_message is None and all(isinstance(s, ErrorSignal)
                                                                     for s in messaging.signals)
                if not (accept_unsigned_errors and only_errors):
                    raise
                signature_error = exc
            for payload in payloads:  # authenticated first: only a trusted sealer can make us decompress
                try:
                    payload.check(limits)
                except EbmsFault as exc:
                    raise EbmsFault(exc.code, exc.message, ref_to_message_id=ref) from None
        return InboundMessage(messaging=messaging, parsed=parsed, soap=soap, payloads=tuple(payloads),
                              signature=signature, signature_error=signature_error)

    def _check_eori_binding(self, messaging: Messaging, signature: VerifiedSignature, policy: VerifyPolicy,
                            ref: str | None) -> None:
        """A user message from an EORI party, or a PullRequest for an EORI party's MPC, must be sealed by a
        certificate carrying that EORI (``security.binding``; mode from ``[trust] eori_binding``)."""
        um = messaging.user_message
        party_id = None
        if um is not None and um.from_party.party_type == PARTY_TYPE_EORI:
            party_id = um.from_party.party_id
        for sig in messaging.signals:
            if isinstance(sig, PullRequest) and sig.mpc.startswith(MPC_PREFIX):
                party_id = sig.mpc[len(MPC_PREFIX):]
        if party_id is None:
            return
        try:
            check_eori_binding(signature.signer, party_id, self.trust.eori_binding)
        except EoriBindingError as exc:
            code, detail = policy.eori_binding_fault
            raise EbmsFault(code, f"the signing certificate is not acceptable ({exc.cause}): {exc}", detail=detail,
                            ref_to_message_id=ref) from None

    def check_receipt(self, inbound: InboundMessage, sent: OutboundMessage) -> Receipt:
        """The receipt must be signed, refer to ``sent`` and echo exactly the digests we signed (EBMS:0302)."""
        receipts = [s for s in inbound.messaging.signals if isinstance(s, Receipt)]
        if not receipts:
            raise EbmsFault("EBMS:0302", "the response carries no receipt", ref_to_message_id=sent.message_id)
        receipt = receipts[0]
        if inbound.signature is None:
            raise EbmsFault("EBMS:0302", "the receipt is not signed", ref_to_message_id=sent.message_id)
        if receipt.ref_to_message_id != sent.message_id:
            raise EbmsFault("EBMS:0302", f"the receipt refers to {receipt.ref_to_message_id}, not to "
                                         f"{sent.message_id}", ref_to_message_id=sent.message_id)
        echoed = {r.uri: r.digest_value for r in receipt.nrr_references}
        if len(echoed) != len(receipt.nrr_references):  # a dict would keep only the last of two digests
            raise EbmsFault("EBMS:0302", "the receipt's non-repudiation information names a part more than once",
                            ref_to_message_id=sent.message_id)
        if echoed != sent.reference_digests:
            missing = sorted(set(sent.reference_digests) ^ set(echoed)) or sorted(
                u for u in echoed if echoed[u] != sent.reference_digests.get(u))
            raise EbmsFault("EBMS:0302", "the receipt's non-repudiation information does not match what we signed "
                                         f"({', '.join(missing)})", ref_to_message_id=sent.message_id)
        return receipt


def digests_of_wire(content_type: str, body: bytes) -> dict[str, str]:
    """The reference digests of a sealed message as it was sent (to check receipts after a restart)."""
    # our own journaled message: as many parts as the intake let through (an ENS and its attachments)
    unpacked = mime.unpack(content_type, body, max_parts=Limits.defaults().max_mime_parts,
                           max_part_bytes=len(body) + 1)
    root = parse_xml(bytes(unpacked.soap.content), max_bytes=len(body) + 1)
    si = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignedInfo")
    if si is None:
        return {}
    return references_digests(list(si.iterchildren("{http://www.w3.org/2000/09/xmldsig#}Reference")))
