"""`ics2gw abandon LRN|MESSAGE_ID`: give up a filing that is queued, failed or held (its evidence is kept)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("abandon", help="give up a queued, failed or held filing",
                       description="Cancels the filing's unsent messages and moves it to `abandoned` (final). "
                                   "Its evidence stays in the journal until retention removes it.")
    p.add_argument("ref", metavar="LRN|MRN|MESSAGE_ID|FILER/LRN")
    p.add_argument("--reason", default="abandoned by the operator")
    add_conf_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.commands._journal import CommandFailed, load_filing
    from gateway.journal.errors import JournalError
    from gateway.journal.states import FilingState as S, can_transition
    try:
        j, filing = load_filing(args.conf, args.ref, writer=True)
    except CommandFailed as exc:
        print(f"ics2gw abandon: {exc}", file=sys.stderr)
        return exc.code
    if not can_transition(filing.state, S.ABANDONED):
        print(f"ics2gw abandon: a filing in state {filing.state} cannot be abandoned (only received, queued, failed "
              "or held)", file=sys.stderr)
        return exitcodes.INVALID
    now = dt.datetime.now(dt.timezone.utc)
    try:
        with j.transaction():
            for m in j.lifecycle(filing.id).get("messages", []):
                if m.get("direction") == "out" and m.get("state") in ("queued", "failed", "held"):
                    j.cancel_message(m["message_id"], now=now, reason=args.reason)
            f = j.transition(filing.id, S.ABANDONED, now=now, event="abandoned", detail={"reason": args.reason})
    except JournalError as exc:
        print(f"ics2gw abandon: {exc}", file=sys.stderr)
        return exitcodes.INVALID
    finally:
        j.close()
    print(json.dumps({"lrn": f.lrn, "state": f.state}))
    return exitcodes.OK
