"""The ebMS3 message model: plain data, no I/O. Built by ``build``, produced by ``parse``.

Timestamps are kept as the text that was (or will be) on the wire, so that nothing is reformatted between
receiving and checking; ``utc_timestamp()`` makes a new one in the profile's recommended form.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field


def utc_timestamp(now: dt.datetime | None = None) -> str:
    """``2020-04-09T11:17:31.944Z``: UTC with milliseconds and ``Z`` (ICD 4.2.1 recommendation)."""
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def new_message_id(fqdn: str) -> str:
    """``<UUID>@<FQDN>`` (ICD 4.2.1, RFC 2822 msg-id without angle brackets)."""
    return f"{uuid.uuid4()}@{fqdn}"


@dataclass(frozen=True)
class Party:
    party_id: str
    party_type: str | None
    role: str


@dataclass(frozen=True)
class PartInfo:
    """One eb:PartInfo. ``href`` is ``cid:<content-id>``; properties keep every name/value as received."""
    href: str
    mime_type: str | None
    charset: str | None = None
    compression: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def content_id(self) -> str:
        """The Content-ID the href names (RFC 2392 %-decoding, the same decoder as signature references)."""
        from gateway.ebms.mime import cid_from_uri
        try:
            return cid_from_uri(self.href)
        except ValueError:
            return self.href  # not a valid cid: URL: names no part (parse refuses such an href first)


@dataclass(frozen=True)
class UserMessage:
    message_id: str
    timestamp: str
    from_party: Party
    to_party: Party
    service: str
    service_type: str | None
    action: str
    agreement: str | None
    agreement_type: str | None
    conversation_id: str
    part_infos: tuple[PartInfo, ...]
    ref_to_message_id: str | None = None
    mpc: str | None = None

    @property
    def is_ping(self) -> bool:
        from gateway.ebms.constants import TEST_ACTION, TEST_SERVICE
        return self.service == TEST_SERVICE and self.action == TEST_ACTION


@dataclass(frozen=True)
class NrrReference:
    """A ds:Reference copied into a receipt's ebbp:NonRepudiationInformation."""
    uri: str
    digest_method: str
    digest_value: str  # base64, as in the signature
    transforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Receipt:
    message_id: str
    timestamp: str
    ref_to_message_id: str
    nrr_references: tuple[NrrReference, ...]


@dataclass(frozen=True)
class EbmsError:
    error_code: str                  # EBMS:0004
    severity: str                    # failure | warning
    category: str | None = None      # Content | Packaging | Processing | Communication | UnPackaging
    short_description: str | None = None
    description: str | None = None
    error_detail: str | None = None
    origin: str | None = None        # ebMS | reliability | security
    ref_to_message_in_error: str | None = None


@dataclass(frozen=True)
class ErrorSignal:
    message_id: str
    timestamp: str
    errors: tuple[EbmsError, ...]
    ref_to_message_id: str | None = None


@dataclass(frozen=True)
class PullRequest:
    message_id: str
    timestamp: str
    mpc: str


Signal = Receipt | ErrorSignal | PullRequest


@dataclass(frozen=True)
class Messaging:
    """What one eb:Messaging header carries: at most one UserMessage (AS4) and any signals."""
    user_message: UserMessage | None
    signals: tuple[Signal, ...] = field(default_factory=tuple)
    wsu_id: str | None = None

    @property
    def kind(self) -> str:
        if self.user_message is not None:
            return "ping" if self.user_message.is_ping else "user-message"
        if not self.signals:
            return "empty"
        s = self.signals[0]
        return {Receipt: "receipt", ErrorSignal: "error", PullRequest: "pull-request"}[type(s)]


@dataclass(frozen=True)
class OutboundPart:
    """A payload to send: the uncompressed content and how to label it."""
    content_id: str
    mime_type: str
    data: bytes
    charset: str | None = None
    compress: bool = True
