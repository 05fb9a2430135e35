"""`ics2gw endpoint list|pause|resume`: the TI endpoints as the sender sees them, and the operator's hand on them.

Why a pause that only an operator lifts: EBMS:0004 with UUM&DS sub-code A001 means customs refuses this sender
for every further message (ICD 5.1.1 p.62); sending on would only pile up refusals. The daemon pauses sending as
its PartyId to that endpoint, durably in the journal (a restart does not lift it), and keeps the queue intact;
once the registration is fixed, `ics2gw endpoint resume NAME` lets everything waiting flow again, in its
priority lanes, with the same MessageIds. The running daemon notices within one claim cycle (it reads the pause
at every claim), so no restart is needed.

`pause` does the same by hand (for example ahead of a certificate renewal).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("endpoint", help="list TI endpoints with their pause and health; pause or resume sending",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    ls = verbs.add_parser("list", help="every configured endpoint: paused?, last success, failing since")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    add_conf_option(ls)
    pause = verbs.add_parser("pause", help="stop sending to NAME as this gateway's PartyId (queue kept)")
    pause.add_argument("name", metavar="NAME")
    pause.add_argument("--reason", default="paused by an operator")
    add_conf_option(pause)
    resume = verbs.add_parser("resume", help="resume sending to NAME after an A001 pause (registration fixed)")
    resume.add_argument("name", metavar="NAME")
    resume.add_argument("--party-id", default=None,
                        help="resume for this PartyId only (default: the configured [identity] party_id)")
    resume.add_argument("--by", default="operator", help="who resumes it (recorded in the journal)")
    add_conf_option(resume)
    for q in (ls, pause, resume):
        q.set_defaults(func=run)
    p.set_defaults(func=lambda a: (p.print_help(), exitcodes.UNREADABLE)[1])


def _context(conf: object) -> tuple[list[str], str]:
    """(configured endpoint names, our PartyId)."""
    from gateway.config import load_gateway_config
    from gateway.transport.config import load_transport_config
    cfg = load_gateway_config(conf)  # type: ignore[arg-type]
    return sorted(load_transport_config(cfg).endpoints), cfg.identity.party_id


def run(args: argparse.Namespace) -> int:
    from gateway.commands._journal import open_reader, open_writer
    names, party = _context(args.conf)
    now = dt.datetime.now(dt.timezone.utc)
    if args.verb in ("pause", "resume") and args.name not in names:
        print(f"ics2gw endpoint {args.verb}: no endpoint named {args.name!r} in {args.conf} "
              f"(configured: {', '.join(names) or 'none'})", file=sys.stderr)
        return exitcodes.INVALID
    try:
        j = open_reader(args.conf) if args.verb == "list" else open_writer(args.conf)
    except FileNotFoundError as exc:
        print(f"ics2gw endpoint: {exc}", file=sys.stderr)
        return exitcodes.UNREADABLE
    try:
        if args.verb == "list":
            states = {(s.endpoint, s.party_id): s for s in j.list_endpoint_states()}
            queued = j.queued_by_endpoint()
            rows = [{**(states[k].to_dict() if k in states else {"endpoint": k[0], "party_id": k[1],
                                                                 "paused": False}),
                     "queued": queued.get(k[0], 0)}
                    for k in sorted({(n, party) for n in names} | set(states))]
            for row in rows:
                if args.json:
                    print_json(row)
                else:
                    flag = "PAUSED since " + str(row.get("paused_at")) if row["paused"] else "sending"
                    print(f"{row['endpoint']:<16} {row['party_id']:<28} queued {row['queued']:<6} {flag}"
                          + (f"  reason: {row.get('pause_reason')}" if row["paused"] else "")
                          + (f"  failing since {row['failing_since']}" if row.get("failing_since") else ""))
            return exitcodes.OK
        if args.verb == "pause":
            state, new = j.pause_endpoint(args.name, party, now=now, reason=args.reason)
            print_json({**state.to_dict(), "changed": new})
            return exitcodes.OK
        resumed = j.resume_endpoint(args.name, args.party_id or party, now=now, by=args.by)
        if not resumed:
            print(f"ics2gw endpoint resume: {args.name} is not paused for {args.party_id or party}",
                  file=sys.stderr)
            return exitcodes.INVALID
        for state in resumed:
            print_json(state.to_dict())
        return exitcodes.OK
    finally:
        j.close()
