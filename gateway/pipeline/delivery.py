"""The ERP side of the gateway's output: inbox files for inbound business messages, a status file per filing.

Every file is written to a temporary name, fsynced and renamed into place, so the ERP never reads half a file.
Inbox files are named after the eb:MessageId, so writing one again (a redelivery after a crash between the
write and the journal commit) replaces it with identical content instead of creating a second delivery.
The name is injective (``inbox_name``): a MessageId that is not a safe file name as it stands (``a/b``,
``a_b`` is safe) gets its unsafe characters replaced *and* ``~`` plus a digest of the exact MessageId, and
``~`` never occurs in a name taken verbatim, so two MessageIds never share inbox files.

Payloads are staged to disk as they are decompressed (``stage_payload``: 1 MiB at a time, never the whole
payload in memory), then renamed into place by ``write_inbox``; a message near the 256 MiB decompression cap
costs its compressed size and a chunk, not ten times its size.

Inbox metadata (``<name>.json``) carries: message_id, ref_to_message_id, conversation_id, from, to, service,
action, channel (push|pull), received (ISO 8601 Z), filing ({filer_eori, lrn, mrn, state} or null for an orphan),
lrn, mrn, functional_reference, and parts: [{file, href, mime_type, charset, order}] in PartInfo order. Payloads
are written decompressed; CompressionType is not passed on (eDelivery 1.4.3.1).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._@-]+")
_VERBATIM_MAX = 160
INSPECT_MAX_BYTES = 32 * 1024 * 1024   # a staged payload larger than this is delivered but not parsed for facts


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text)[:180]


def inbox_name(message_id: str) -> str:
    """The base name of a message's inbox files: the MessageId itself when it is a safe file name, otherwise
    its safe form, ``~`` and 16 hex digits of SHA-256 over the exact MessageId (injective: see above)."""
    safe = _SAFE.sub("_", message_id)
    if safe == message_id and len(safe) <= _VERBATIM_MAX and not safe.startswith("."):
        return safe
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{safe.lstrip('.')[:_VERBATIM_MAX]}~{digest}"


@dataclass
class StagedPart:
    """A decompressed payload written to a hidden temporary file in the inbox folder, awaiting its name."""
    path: Path
    size: int

    def read_for_inspection(self) -> bytes:
        """The payload's bytes for parsing, refused (ValueError) above ``INSPECT_MAX_BYTES``."""
        if self.size > INSPECT_MAX_BYTES:
            raise ValueError(f"the payload is {self.size} bytes, over the {INSPECT_MAX_BYTES} bytes parsed for "
                             "correlation (delivered, correlated by RefToMessageId only)")
        return self.path.read_bytes()

    def discard(self) -> None:
        """Removes the temporary file if it was not renamed into the inbox (a failure or a duplicate)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def stage_payload(inbox: Path, payload: Any, limits: Any) -> StagedPart:
    """Writes ``payload`` (an ``InboundPayload``) decompressed to a temporary file, chunk by chunk, within the
    receive caps; EBMS:0303 for a payload that cannot be decompressed (bomb, damage, trailing bytes)."""
    from gateway.ebms import compression
    from gateway.ebms.errors import EbmsFault
    tmp = inbox / f".stage.{uuid.uuid4().hex}.tmp"
    size = 0
    try:
        with open(tmp, "wb") as f:
            if payload.compressed:
                try:
                    for chunk in compression.iter_gunzip(payload.transmitted, max_out=limits.recv_max_payload_bytes,
                                                         max_ratio=limits.recv_max_compression_ratio):
                        size += f.write(chunk)
                except compression.DecompressionError as exc:
                    raise EbmsFault("EBMS:0303", f"payload {payload.content_id} cannot be decompressed: "
                                                 f"{exc}") from None
            else:  # eDelivery 1.4.3.1: an uncompressed payload must not be rejected
                size = f.write(payload.transmitted)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return StagedPart(tmp, size)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    # a unique temporary name: two writers of the same file (two replies for one filing) must not share one;
    # bounded (64 bytes of the name + 30), so a target name near NAME_MAX still has a temporary name that fits
    head = os.fsdecode(os.fsencode(path.name)[:64])
    tmp = path.with_name(f".{head}.{threading.get_ident() % 10**6}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a full disk must not leave a half-written temporary file behind (it would hold the space it failed on)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_inbox(inbox: Path, message_id: str, parts: list[tuple[str, dict[str, Any], bytes | StagedPart]],
                metadata: dict[str, Any]) -> Path:
    """Writes each part then the metadata file last (its presence means the delivery is complete). A part
    given as a ``StagedPart`` (already on disk, fsynced) is renamed into place."""
    base = inbox_name(message_id)
    described = []
    for order, (suffix, info, data) in enumerate(parts, start=1):
        name = f"{base}.part{order}{suffix}"
        if isinstance(data, StagedPart):
            os.replace(data.path, inbox / name)
        else:
            atomic_write(inbox / name, data)
        described.append({"file": name, "order": order, **info})
    meta_path = inbox / f"{base}.json"
    atomic_write(meta_path, json.dumps({**metadata, "parts": described}, indent=1, default=str).encode())
    fsync_dir(inbox)
    return meta_path


def write_status(status_dir: Path, filing: dict[str, Any]) -> None:
    """Best effort after the journal commit: a failure is logged, never turned into a delivery failure."""
    try:
        _write_status(status_dir, filing)
    except OSError as exc:
        import logging
        logging.getLogger("ics2gw.delivery").error("status file not written lrn=%s error=%s", filing.get("lrn"), exc)


def _write_status(status_dir: Path, filing: dict[str, Any]) -> None:
    name = inbox_name(f"{filing.get('filer_eori')}_{filing.get('lrn')}") + ".json"  # injective, as inbox names
    # A status file is a view of the journal, rewritten at every change: atomic (never half a file) but not
    # fsynced, because the journal is the record and an fsync per state change would cost more than it protects.
    # Writers race (several senders and the inbound side, or several instances on one status folder): the folder
    # is locked while the file is compared and replaced, and a view older than the one in place is not written,
    # so a late "sent" never overwrites an earlier-written "registered".
    import fcntl
    fd = os.open(status_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        new_at = str(filing.get("updated") or "")
        try:
            old_at = str(json.loads((status_dir / name).read_bytes()).get("updated") or "")
        except (OSError, ValueError, AttributeError):
            old_at = ""
        if new_at and old_at and old_at > new_at:
            return
        atomic_write(status_dir / name, json.dumps(filing, indent=1, default=str).encode(), durable=False)
    finally:
        os.close(fd)
