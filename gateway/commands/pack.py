"""`ics2gw pack`: seal an ENS payload into a complete AS4 message file (exactly what goes on the wire)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import OutboundPart

ATTACHMENT_TYPES = {".pdf": "application/pdf", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="seal a payload into an AS4 message file",
                       description="Seal PAYLOAD into a complete AS4 UserMessage (MIME headers, a blank line, then "
                                   "the HTTP body) with the configured sealing certificate.")
    p.add_argument("payload", type=Path, metavar="PAYLOAD.xml")
    p.add_argument("--action", help="ICS2 message id (default: the payload's root element, e.g. IE3F32)")
    p.add_argument("--attach", action="append", default=[], metavar="[ID=]FILE",
                   help="binary attachment (PDF or JPEG); ID is the payload's BinaryFile identification "
                        "(default: the file name, then its stem)")
    p.add_argument("--to", default="sti-taxud", metavar="PARTY", help="receiving TI party id (default sti-taxud)")
    p.add_argument("--ref-to", metavar="MESSAGE_ID", help="eb:RefToMessageId")
    p.add_argument("--out", type=Path, required=True, metavar="MSG.mime")
    add_conf_option(p)
    p.set_defaults(func=run)


def _payload_facts(data: bytes):  # type: ignore[no-untyped-def]
    from gateway.ics2.inspect import PayloadError, inspect_payload
    try:
        return inspect_payload(data)
    except PayloadError:
        return None


def run(args: argparse.Namespace) -> int:
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.xmlsafe import XmlRejected, parse_xml
    from lxml import etree

    try:
        payload = args.payload.read_bytes()
    except OSError as exc:
        print(f"ics2gw pack: cannot read {args.payload}: {exc.strerror}", file=sys.stderr)
        return exitcodes.UNREADABLE
    try:
        root = parse_xml(payload, max_bytes=256 * 1024 * 1024, what=str(args.payload))
    except XmlRejected as exc:
        print(f"ics2gw pack: {exc}", file=sys.stderr)
        return exitcodes.UNREADABLE
    action = args.action or etree.QName(root).localname
    facts = _payload_facts(payload)
    idents = list(facts.binary_identifications) if facts else []
    attachments: list[OutboundPart] = []
    for spec in args.attach:
        ident, _, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(file)
        mime_type = ATTACHMENT_TYPES.get(path.suffix.lower())
        if mime_type is None:
            print(f"ics2gw pack: {path}: only PDF (.pdf) and JPEG (.jpg, .jpeg) attachments are allowed "
                  "(ICD 4.2.5)", file=sys.stderr)
            return exitcodes.INVALID
        if not ident:
            ident = path.name if path.name in idents else path.stem
        if ident not in idents:
            print(f"ics2gw pack: attachment {path} has identification {ident!r}, which the payload does not "
                  f"declare as a BinaryFile identification (declared: {', '.join(idents) or 'none'})", file=sys.stderr)
            return exitcodes.INVALID
        try:
            attachments.append(OutboundPart(ident, mime_type, path.read_bytes()))
        except OSError as exc:
            print(f"ics2gw pack: cannot read {path}: {exc.strerror}", file=sys.stderr)
            return exitcodes.UNREADABLE
    missing = [i for i in idents if i not in {a.content_id for a in attachments}]
    if missing:
        print(f"ics2gw pack: the payload refers to binary attachment(s) {', '.join(missing)}: "
              "give each with --attach ID=FILE", file=sys.stderr)
        return exitcodes.INVALID
    cfg = load_gateway_config(args.conf)
    engine = Engine.from_config(cfg)
    try:
        msg = engine.user_message(action=action, payload=payload, to_party=Engine.customs_party(args.to),
                                  attachments=attachments, ref_to_message_id=args.ref_to)
    except EbmsFault as exc:
        print(f"ics2gw pack: refused ({exc.code}): {exc.message}", file=sys.stderr)
        return exitcodes.INVALID
    args.out.write_bytes(msg.wire_file())
    print_json({"out": str(args.out), "message_id": msg.message_id, "action": action,
                "bytes": len(msg.body), "parts": 1 + len(attachments), "environment": cfg.environment})
    return exitcodes.OK
