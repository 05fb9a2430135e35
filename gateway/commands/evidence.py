"""`ics2gw evidence LRN --out FILE.zip`: the non-repudiation bundle of one filing (sealed messages, verified
receipts, inbound responses and the receipts we returned), with a manifest."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evidence", help="write the non-repudiation bundle of a filing as a zip",
                       description=__doc__)
    p.add_argument("ref", metavar="LRN|MRN|MESSAGE_ID|FILER/LRN")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.zip")
    add_conf_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.commands._journal import CommandFailed, load_filing
    try:
        j, filing = load_filing(args.conf, args.ref)
    except CommandFailed as exc:
        print(f"ics2gw evidence: {exc}", file=sys.stderr)
        return exc.code
    items = j.evidence(filing.id)
    manifest = {"filing": filing.to_dict(), "files": []}
    with zipfile.ZipFile(args.out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for it in items:
            z.writestr(it.name, it.data)
            manifest["files"].append({"name": it.name, "kind": it.kind, "message_id": it.message_id,
                                      "content_type": it.content_type, "sha256": hashlib.sha256(it.data).hexdigest()})
        z.writestr("lifecycle.json", json.dumps(j.lifecycle(filing.id), default=str, indent=1))
        z.writestr("manifest.json", json.dumps(manifest, default=str, indent=1))
    print(json.dumps({"out": str(args.out), "files": len(items), "lrn": filing.lrn}))
    return exitcodes.OK
