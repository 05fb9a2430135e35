"""`ics2gw pack`: seal an ENS payload into a complete AS4 message file (exactly what goes on the wire)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json
from gateway.ebms.errors import EbmsFault

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


SMALL_PAYLOAD = 20 * 1024 * 1024  # above this the payload is never read into memory whole


def _root_and_identifications(path: Path) -> tuple[str, list[str]]:
    """The root element's local name and the BinaryFile identifications, streaming (constant memory).

    The same refusals as the hardened parser: no DTD, no entities, no network."""
    from lxml import etree
    from gateway.xmlsafe import XmlRejected
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in head.upper():
        raise XmlRejected("dtd", f"{path} contains a DTD or entity declaration, which is not allowed")
    root_name, idents = None, []
    try:
        for event, el in etree.iterparse(str(path), events=("start", "end"), resolve_entities=False,
                                         no_network=True, load_dtd=False, huge_tree=True):
            name = etree.QName(el).localname
            if event == "start":
                root_name = root_name or name
                continue
            if name == "identification" and el.getparent() is not None and \
                    etree.QName(el.getparent()).localname.lower() == "binaryfile" and el.text:
                idents.append(el.text.strip())
            el.clear(keep_tail=False)
            parent = el.getparent()
            while parent is not None and el.getprevious() is not None:  # drop finished siblings: constant memory
                del parent[0]
    except etree.XMLSyntaxError as exc:
        raise XmlRejected("malformed", f"{path} is not well-formed XML: {exc}") from None
    if root_name is None:
        raise XmlRejected("malformed", f"{path} is empty")
    return root_name, idents


def _identifications(path: Path, size: int) -> tuple[str, list[str]]:
    from lxml import etree
    from gateway.xmlsafe import parse_xml
    if size > SMALL_PAYLOAD:
        return _root_and_identifications(path)
    data = path.read_bytes()
    root = parse_xml(data, max_bytes=SMALL_PAYLOAD + 1, what=str(path))
    from gateway.ics2.inspect import PayloadError, inspect_payload
    try:
        idents = list(inspect_payload(data).binary_identifications)
    except PayloadError:
        idents = []
    return etree.QName(root).localname, idents


def _checked(payload: Path, action: str, attachments: list) -> tuple[list, list[str]]:  # type: ignore[type-arg]
    """The daemon's intake check (gateway.ics2.binaryfiles.match) on a payload small enough to hold: each file
    labelled with the MIME type its binaryFile declares, its content what that type says."""
    from gateway.ebms.stream import FileAttachment
    from gateway.ics2.binaryfiles import Supplied, declared, match
    from gateway.ics2.xmlutil import parse_payload
    supplied = [Supplied(a.content_id, a.mime_type, a.path.read_bytes(), f"--attach {a.path}") for a in attachments]
    matched, problems = match(action, declared(parse_payload(payload.read_bytes())), supplied)
    paths = {a.content_id: a.path for a in attachments}
    return [FileAttachment(m.identification, m.mime_type, paths[m.identification]) for m in matched], \
        [p.text for p in problems]


def run(args: argparse.Namespace) -> int:
    from gateway.ebms.engine import Engine
    from gateway.ebms.stream import FileAttachment, pack_file
    from gateway.xmlsafe import XmlRejected

    try:
        size = args.payload.stat().st_size
        root_name, idents = _identifications(args.payload, size)
    except OSError as exc:
        print(f"ics2gw pack: cannot read {args.payload}: {exc.strerror}", file=sys.stderr)
        return exitcodes.UNREADABLE
    except XmlRejected as exc:
        print(f"ics2gw pack: {exc}", file=sys.stderr)
        return exitcodes.UNREADABLE
    action = args.action or root_name
    attachments: list[FileAttachment] = []
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
        if not path.is_file():
            print(f"ics2gw pack: cannot read {path}", file=sys.stderr)
            return exitcodes.UNREADABLE
        attachments.append(FileAttachment(ident, mime_type, path))
    missing = [i for i in idents if i not in {a.content_id for a in attachments}]
    if missing:
        print(f"ics2gw pack: the payload refers to binary attachment(s) {', '.join(missing)}: "
              "give each with --attach ID=FILE", file=sys.stderr)
        return exitcodes.INVALID
    if attachments and size <= SMALL_PAYLOAD:
        attachments, problems = _checked(args.payload, action, attachments)
        if problems:
            for text in problems:
                print(f"ics2gw pack: {text}", file=sys.stderr)
            return exitcodes.INVALID
    from gateway.settings import load_settings
    cfg = load_settings(args.conf).core   # the one loader: refuses what `run` refuses
    engine = Engine.from_config(cfg)
    try:
        packed = pack_file(engine, args.payload, args.out, action=action, to_party=Engine.customs_party(args.to),
                           attachments=attachments, ref_to_message_id=args.ref_to)
    except EbmsFault as exc:
        print(f"ics2gw pack: refused ({exc.code}): {exc.message}", file=sys.stderr)
        return exitcodes.INVALID
    print_json({"out": str(args.out), "message_id": packed.message_id, "action": action,
                "bytes": packed.body_bytes, "payload_bytes": packed.payload_bytes,
                "compressed_bytes": packed.compressed_bytes, "parts": 1 + len(attachments),
                "environment": cfg.environment})
    return exitcodes.OK
