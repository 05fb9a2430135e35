"""`ics2gw status LRN|MRN|MESSAGE_ID`: the whole lifecycle of one filing (safe while the daemon runs)."""

from __future__ import annotations

import argparse
import json
import sys

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the lifecycle of one filing",
                       description="Every message, receipt, customs request and state change of one filing, read "
                                   "from the journal (a WAL reader: safe while the daemon runs).")
    p.add_argument("ref", metavar="LRN|MRN|MESSAGE_ID|FILER/LRN")
    p.add_argument("--json", action="store_true", help="print the lifecycle as one JSON object")
    add_conf_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.commands._journal import CommandFailed, load_filing
    try:
        j, filing = load_filing(args.conf, args.ref)
    except CommandFailed as exc:
        print(f"ics2gw status: {exc}", file=sys.stderr)
        return exc.code
    life = j.lifecycle(filing.id)
    if args.json:
        print(json.dumps(life, default=str))
        return exitcodes.OK
    f = life["filing"] if "filing" in life else filing.to_dict()
    print(f"filing {f['filer_eori']}/{f['lrn']}  action {f['action']}  state {f['state']}  mrn {f.get('mrn') or '-'}"
          f"  endpoint {f.get('endpoint') or '-'}")
    if f.get("last_error"):
        print(f"  last error: {f['last_error']}")
    print("messages:")
    for m in life.get("messages", []):
        print(f"  {m.get('direction', '?'):3} {m.get('kind', ''):13} {m.get('action') or '-':7} {m.get('state'):10} "
              f"attempts={m.get('attempts')} receipt={m.get('receipt_outcome') or '-'} "
              f"answer={m.get('business_outcome') or '-'}  {m.get('message_id')}")
    for r in life.get("requests", []):
        print(f"request {r.get('kind')} {r.get('state')} opened {r.get('opened_at')}")
    print("events:")
    for e in life.get("events", []):
        print(f"  {e.get('at')}  {e.get('event'):24} {json.dumps(e.get('detail') or {}, default=str)[:140]}")
    return exitcodes.OK
