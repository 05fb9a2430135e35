"""The evidence bundle of one filing as a zip: what ``ics2gw evidence`` writes and the status page serves.

Each message is stored byte for byte as it crossed the wire (its sha256 in ``manifest.json`` is the digest of
what was signed and sent or received), and next to it ``<name>.ctype`` holds its Content-Type, the sidecar that
``ics2gw inspect`` reads: unzip, then ``ics2gw inspect 001-out-IE3F32-....mime`` verifies the message as it is,
and ``--against`` checks a receipt against the message it acknowledges. Why not prepend a header block: the file
would no longer be the exact bytes whose digest customs signed in its receipt.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from typing import Any

from gateway.journal.records import EvidenceItem


def build_zip(filing: dict[str, Any], items: Sequence[EvidenceItem], lifecycle: dict[str, Any]) -> bytes:
    manifest: dict[str, Any] = {"filing": filing, "files": [],
                                "how_to_check": "ics2gw inspect FILE (Content-Type from FILE.ctype); receipts: "
                                                "ics2gw inspect RECEIPT --against SENT"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for it in items:
            z.writestr(it.name, it.data)
            if it.content_type:
                z.writestr(it.name + ".ctype", f"Content-Type: {it.content_type}\n")
            manifest["files"].append({"name": it.name, "kind": it.kind, "message_id": it.message_id,
                                      "content_type": it.content_type,
                                      "ctype_file": (it.name + ".ctype") if it.content_type else None,
                                      "sha256": hashlib.sha256(it.data).hexdigest()})
        z.writestr("lifecycle.json", json.dumps(lifecycle, default=str, indent=1))
        z.writestr("manifest.json", json.dumps(manifest, default=str, indent=1))
    return buf.getvalue()
