"""`ics2gw resend LRN|MESSAGE_ID`: replay the sealed bytes kept in the journal, same eb:MessageId.

OASIS AS4 3.2: a resend is the same message (same MessageId, same digests) so that the receiver's duplicate
detection works. A re-seal under a new MessageId is a new message and exists only behind --reseal, for after a
definitive refusal (for example once a certificate registration problem is fixed).

No double send: a message that a worker is sending right now (``sending``) or that is already waiting to be
sent (``queued``) is never resent, and neither is a message of a filing that has another message for the same
action in flight (a ``--reseal`` already queued, say): the resend is refused with what is in flight. The
journal checks the message's own state again inside the requeue transaction, so a worker that claims it in
between still wins.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resend", help="requeue a failed or held message (same bytes, same MessageId)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="LRN|MRN|MESSAGE_ID|FILER/LRN")
    p.add_argument("--reseal", action="store_true",
                   help="seal the original payload again under a NEW MessageId (only after a definitive refusal)")
    add_conf_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.commands._journal import find_filing, open_writer
    from gateway.journal.errors import JournalError
    try:
        j = open_writer(args.conf)
    except FileNotFoundError as exc:
        print(f"ics2gw resend: {exc}", file=sys.stderr)
        return exitcodes.UNREADABLE
    now = dt.datetime.now(dt.timezone.utc)
    msg = j.get_message(args.ref)
    if msg is None:
        filing = find_filing(j, args.ref)
        if filing is None:
            print(f"ics2gw resend: no message or filing matches {args.ref}", file=sys.stderr)
            return exitcodes.INVALID
        out = [m for m in j.lifecycle(filing.id).get("messages", []) if m.get("direction") == "out"
               and m.get("state") in ("failed", "held")]
        if not out:
            print(f"ics2gw resend: filing {filing.lrn} has no failed or held message (state {filing.state})",
                  file=sys.stderr)
            return exitcodes.INVALID
        msg = j.get_message(out[-1]["message_id"])
    busy = _in_flight(j, msg)
    if busy is not None:
        j.close()
        print(f"ics2gw resend: {busy}", file=sys.stderr)
        return exitcodes.INVALID
    if args.reseal:
        return _reseal(j, msg, args.conf, now)
    try:
        requeued = j.requeue_message(msg.message_id, now=now, reason="operator resend")
        if requeued.filing_id is not None:
            from gateway.journal.states import FilingState as S, can_transition
            f = j.get_filing(requeued.filing_id)
            if requeued.action == f.action and can_transition(f.state, S.QUEUED):
                j.transition(f.id, S.QUEUED, now=now, event="operator-resend",
                             detail={"message_id": msg.message_id})
    except JournalError as exc:
        print(f"ics2gw resend: {exc}", file=sys.stderr)
        return exitcodes.INVALID
    finally:
        j.close()
    print(json.dumps({"message_id": msg.message_id, "state": requeued.state, "same_bytes": True}))
    return exitcodes.OK


def _in_flight(j, msg) -> str | None:  # type: ignore[no-untyped-def]
    """Why resending ``msg`` now would send a filing twice, or None."""
    if msg.state in ("sending", "queued"):
        return (f"message {msg.message_id} is {msg.state} right now; a resend would send it twice: wait for its "
                "outcome (ics2gw status) and resend only if it fails")
    if msg.filing_id is None:
        return None
    for other in j.lifecycle(msg.filing_id).get("messages", []):
        if other.get("direction") == "out" and other.get("message_id") != msg.message_id \
                and other.get("action") == msg.action and other.get("state") in ("sending", "queued"):
            return (f"filing {j.get_filing(msg.filing_id).lrn} has message {other['message_id']} for "
                    f"{msg.action} {other['state']} right now; resending {msg.message_id} would file it twice")
    return None


def _reseal(j, msg, conf, now) -> int:  # type: ignore[no-untyped-def]
    """Seals the original payload again under a new MessageId and queues it; the old message is kept as evidence."""
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.ebms.model import OutboundPart
    from gateway.journal.records import OutboundMessage
    from gateway.journal.states import FilingState as S, can_transition
    if msg.state not in ("failed", "held"):
        print(f"ics2gw resend: --reseal is only for a definitively refused message; {msg.message_id} is {msg.state}",
              file=sys.stderr)
        return exitcodes.INVALID
    engine = Engine.from_config(load_gateway_config(conf))
    full = j.get_message(msg.message_id, with_bytes=True)
    old = engine.open(full.content_type, full.sealed, verify=False)
    um = old.messaging.user_message
    payload = old.payloads[0].data(engine.limits) if old.payloads else None
    # the binary attachments go with it, under the same Content-IDs (= the payload's binaryFile identifications)
    attachments = [OutboundPart(p.part_info.href[4:] if p.part_info.href.lower().startswith("cid:") else p.content_id,
                                p.part_info.mime_type or p.content_type, p.data(engine.limits))
                   for p in old.payloads[1:]]
    new = engine.user_message(action=um.action, payload=payload, to_party=um.to_party, attachments=attachments)
    j.enqueue_message(OutboundMessage(message_id=new.message_id, action=um.action, sealed=new.body,
                                      content_type=new.content_type, filing_id=full.filing_id,
                                      priority=full.priority or "B", endpoint=full.endpoint), now=now)
    if full.filing_id is not None:
        f = j.get_filing(full.filing_id)
        if can_transition(f.state, S.QUEUED):
            j.transition(f.id, S.QUEUED, now=now, event="operator-reseal",
                         detail={"old_message_id": msg.message_id, "new_message_id": new.message_id})
    j.close()
    print(json.dumps({"old_message_id": msg.message_id, "message_id": new.message_id, "same_bytes": False}))
    return exitcodes.OK
