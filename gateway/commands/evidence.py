"""`ics2gw evidence LRN --out FILE.zip`: the non-repudiation bundle of one filing (sealed messages, verified
receipts, inbound responses and the receipts we returned), with a manifest."""

from __future__ import annotations

import argparse
import json
import sys
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
    from gateway.ops.evidence import build_zip  # messages + .ctype sidecars: `ics2gw inspect` reads them as they are
    items = j.evidence(filing.id)
    args.out.write_bytes(build_zip(filing.to_dict(), items, j.lifecycle(filing.id)))
    print(json.dumps({"out": str(args.out), "files": len(items), "lrn": filing.lrn}))
    return exitcodes.OK
