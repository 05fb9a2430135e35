"""The ERP side of the gateway's output: inbox files for inbound business messages, a status file per filing.

Every file is written to a temporary name, fsynced and renamed into place, so the ERP never reads half a file.
Inbox files are named after the eb:MessageId, so writing one again (a redelivery after a crash between the
write and the journal commit) replaces it with identical content instead of creating a second delivery.

Inbox metadata (``<name>.json``) carries: message_id, ref_to_message_id, conversation_id, from, to, service,
action, channel (push|pull), received (ISO 8601 Z), filing ({filer_eori, lrn, mrn, state} or null for an orphan),
lrn, mrn, functional_reference, and parts: [{file, href, mime_type, charset, order}] in PartInfo order. Payloads
are written decompressed; CompressionType is not passed on (eDelivery 1.4.3.1).
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._@-]+")


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text)[:180]


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


def write_inbox(inbox: Path, message_id: str, parts: list[tuple[str, dict[str, Any], bytes]],
                metadata: dict[str, Any]) -> Path:
    """Writes each part then the metadata file last (its presence means the delivery is complete)."""
    base = safe_name(message_id)
    described = []
    for order, (suffix, info, data) in enumerate(parts, start=1):
        name = f"{base}.part{order}{suffix}"
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
    name = safe_name(f"{filing.get('filer_eori')}_{filing.get('lrn')}") + ".json"
    # A status file is a view of the journal, rewritten at every change: atomic (never half a file) but not
    # fsynced, because the journal is the record and an fsync per state change would cost more than it protects.
    atomic_write(status_dir / name, json.dumps(filing, indent=1, default=str).encode(), durable=False)
