"""Attachments between intake and the wire, and between the wire and the inbox.

* ``outbound_parts``: each matched attachment becomes an AS4 payload part whose Content-ID and ``eb:PartInfo``
  href are exactly the payload's ``binaryFile/identification`` and whose MimeType is the declared one (gzip
  compressed, covered by the seal with the SwA transform like every part).
* ``submission_digest``: the digest the filing is keyed by. Without attachments it is the payload's SHA-256 (as
  before); with attachments it also covers each attachment's identification, type and bytes, so the same LRN
  with another invoice is a conflict, not the same filing, and the deterministic MessageId changes with them.
* ``check_wire_caps``: a sealed message the TI would refuse as a decompression bomb (a part that expands more
  than ``[limits] recv_max_compression_ratio`` times, or beyond ``recv_max_payload_bytes``: our receive caps,
  set to the TI's) is refused at intake instead of being sent and failed.
* ``inbox_info``: the metadata an inbox part carries, with the attachment's identification and the payload's
  declared file name and description, so the ERP knows what each delivered file is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from gateway.config import Limits
from gateway.ebms import mime
from gateway.ebms.model import OutboundPart
from gateway.ics2.binaryfiles import BinaryFile, Matched, declared
from gateway.ics2.xmlutil import parse_payload
from gateway.xmlsafe import XmlRejected


def outbound_parts(matched: Sequence[Matched]) -> list[OutboundPart]:
    return [OutboundPart(m.identification, m.mime_type, m.data) for m in matched]


def describe(matched: Sequence[Matched]) -> list[dict[str, Any]]:
    """What the journal event, the API answer and ``ics2gw status`` say of each sealed attachment."""
    return [{"identification": m.identification, "mime_type": m.mime_type, "bytes": len(m.data),
             "sha256": hashlib.sha256(m.data).hexdigest(), "filename": m.declaration.filename, "from": m.origin}
            for m in matched]


def submission_digest(payload: bytes, matched: Sequence[Matched]) -> str:
    payload_digest = hashlib.sha256(payload).hexdigest()
    if not matched:
        return payload_digest
    h = hashlib.sha256(b"ics2gw-submission-v1\n" + payload_digest.encode() + b"\n")
    for m in sorted(matched, key=lambda m: m.identification):
        h.update(f"{m.identification}\n{m.mime_type}\n{hashlib.sha256(m.data).hexdigest()}\n".encode())
    return h.hexdigest()


class WireCapExceeded(ValueError):
    """A part of the sealed message would be refused by the receiver's decompression caps."""


def check_wire_caps(content_type: str, body: bytes, sizes: dict[str, int], limits: Limits) -> None:
    """``sizes`` maps each part's Content-ID to its uncompressed size; raises ``WireCapExceeded``."""
    unpacked = mime.unpack(content_type, body, max_parts=len(sizes) + 2, max_part_bytes=len(body) + 1)
    for part in unpacked.attachments:
        size = sizes.get(part.content_id or "")
        if size is None:
            continue
        what = "the business payload" if part.content_id and part.content_id.startswith("payload-") \
            else f"attachment {part.content_id!r}"
        if size > limits.recv_max_payload_bytes:
            raise WireCapExceeded(f"{what} is {size} bytes uncompressed, over the TI's cap of "
                                  f"{limits.recv_max_payload_bytes}")
        sent = max(1, len(part.content))
        if size > limits.recv_max_compression_ratio * sent:
            raise WireCapExceeded(f"{what} expands {size // sent}:1 from its {sent} compressed bytes, over the "
                                  f"ratio cap of {limits.recv_max_compression_ratio}:1 that the TI applies against "
                                  "decompression bombs ([limits] recv_max_compression_ratio)")


def inbox_info(href: str | None, mime_type: str | None, charset: str | None,
               declarations: Sequence[BinaryFile]) -> dict[str, Any]:
    """Metadata of one delivered part: href, type, charset, and for an attachment its identification plus the
    file name and description the payload declares for it (null when the payload declares none)."""
    info: dict[str, Any] = {"href": href, "mime_type": mime_type, "charset": charset}
    ident = unquote(href[4:]) if href and href.lower().startswith("cid:") else href  # RFC 2392
    decl = next((d for d in declarations if d.identification and d.identification == ident), None)
    if decl is not None:
        info.update(identification=ident, filename=decl.filename, description=decl.description)
    return info


def declarations(payload: bytes) -> list[BinaryFile]:
    """The binaryFile declarations of an already accepted payload ([] if it cannot be read again)."""
    try:
        return declared(parse_payload(payload))
    except XmlRejected:
        return []
