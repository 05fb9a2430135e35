"""`ics2gw inspect`: parse and verify any AS4 message file and print one JSON object."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="parse and verify an AS4 message file",
                       description="Parse and verify an AS4 message (ours or another implementation's) and print "
                                   "one JSON object. Exit 0 valid, 1 invalid, 2 unreadable.")
    p.add_argument("message", type=Path, metavar="MSG.mime")
    p.add_argument("--trust", action="append", type=Path, default=[], metavar="CA.pem",
                   help="trust anchor(s) replacing the configured ones for this call")
    p.add_argument("--against", type=Path, metavar="SENT.mime",
                   help="check a receipt against the message it acknowledges")
    p.add_argument("--strict", action="store_true",
                   help="apply the customs-role policy (X509PKIPathv1 with the full chain only)")
    add_conf_option(p)
    p.set_defaults(func=run)


def inspect_file(path: Path, *, conf: Path, trust: list[Path], against: Path | None, strict: bool) -> tuple[int, dict[str, Any]]:
    from gateway.config import load_gateway_config
    from gateway.ebms import mime
    from gateway.ebms.engine import Engine, OutboundMessage
    from gateway.ebms.errors import EbmsFault
    from gateway.ebms.model import ErrorSignal, PullRequest, Receipt
    from gateway.security.trust import TrustStore
    from gateway.security.verify import STRICT, TOLERANT

    try:
        content_type, body = _map_message(path)
    except (OSError, ValueError) as exc:
        return exitcodes.UNREADABLE, {"file": str(path), "valid": False,
                                      "failures": [{"code": None, "message": f"cannot read: {exc}"}]}
    cfg = load_gateway_config(conf)
    engine = Engine.from_config(cfg, policy=STRICT if strict else TOLERANT)
    if trust:
        from gateway.security.keys import load_pem_certificates
        engine.trust = TrustStore([c for p in trust for c in load_pem_certificates(p)], engine.trust.crls,
                                  engine.trust.customs_certs, engine.trust.intermediates,
                                  eori_binding=engine.trust.eori_binding)
    out: dict[str, Any] = {"file": str(path), "content_type": content_type, "bytes": len(body)}
    failures: list[dict[str, Any]] = []
    try:
        structural = engine.open(content_type, body, verify=False)
    except EbmsFault as exc:
        failures.append({"code": exc.code, "message": exc.message})
        out.update(valid=False, failures=failures)
        return exitcodes.INVALID, out
    m = structural.messaging
    out["kind"] = m.kind
    out["message_id"] = structural.message_id
    out["ref_to_message_id"] = structural.ref_to_message_id
    um = m.user_message
    if um is not None:
        out.update(timestamp=um.timestamp, mpc=um.mpc,
                   **{"from": {"party_id": um.from_party.party_id, "type": um.from_party.party_type,
                               "role": um.from_party.role},
                      "to": {"party_id": um.to_party.party_id, "type": um.to_party.party_type,
                             "role": um.to_party.role}},
                   service={"value": um.service, "type": um.service_type}, action=um.action,
                   agreement={"value": um.agreement, "type": um.agreement_type}, conversation_id=um.conversation_id)
        parts = _describe_parts(structural.payloads, cfg.limits, failures)
        out["parts"] = parts
    for s in m.signals:
        if isinstance(s, Receipt):
            out["receipt"] = {"ref_to_message_id": s.ref_to_message_id,
                              "references": [{"uri": r.uri, "digest": r.digest_value} for r in s.nrr_references]}
        elif isinstance(s, ErrorSignal):
            out["errors"] = [{"code": e.error_code, "severity": e.severity, "short_description": e.short_description,
                              "description": e.description, "detail": e.error_detail,
                              "ref_to_message_in_error": e.ref_to_message_in_error} for e in s.errors]
        elif isinstance(s, PullRequest):
            out["mpc"] = s.mpc
    del structural  # its copies of the parts; the verified open makes its own (peak memory for large messages)
    try:
        verified = engine.open(content_type, body)
        sig = verified.signature
        assert sig is not None
        out["signature"] = {"valid": True, "signer": sig.signer_subject, "signer_eori": sig.signer_eori,
                            "chain_length": sig.token_chain_length, "token_type": sig.token_type.rsplit("#", 1)[-1],
                            "signer_is_customs": engine.trust.is_customs_certificate(sig.signer),
                            "references": [r.get("URI") for r in sig.references]}
        if against is not None:
            sent_ct, sent_body = mime.read_message_file(against.read_bytes(), sidecar=_sidecar(against))
            sent_open = engine.open(sent_ct, sent_body, verify=False)
            sent = OutboundMessage.from_wire(sent_open.message_id, sent_ct, sent_body)
            engine.check_receipt(verified, sent)
            out["against"] = {"message_id": sent.message_id, "match": True}
    except EbmsFault as exc:
        out.setdefault("signature", {"valid": False})
        failures.append({"code": exc.code, "message": exc.message})
        if against is not None:
            out["against"] = {"match": False}
    out["valid"] = not failures
    out["failures"] = failures
    return (exitcodes.OK if not failures else exitcodes.INVALID), out


def _describe_parts(payloads: Any, limits: Any, failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each payload's PartInfo facts and uncompressed size, counted streaming (never decompressed whole)."""
    from gateway.ebms import compression
    parts = []
    for p in payloads:
        entry: dict[str, Any] = {"href": p.part_info.href, "mime_type": p.part_info.mime_type,
                                 "charset": p.part_info.charset, "compression": p.part_info.compression,
                                 "content_type": p.content_type, "transmitted_bytes": len(p.transmitted)}
        if p.compressed:
            try:
                entry["uncompressed_bytes"] = sum(len(c) for c in compression.iter_gunzip(
                    p.transmitted, max_out=limits.recv_max_payload_bytes, max_ratio=limits.recv_max_compression_ratio))
            except compression.DecompressionError as exc:
                failures.append({"code": "EBMS:0303", "message": f"payload {p.content_id}: {exc}"})
        parts.append(entry)
    return parts


def _map_message(path: Path) -> tuple[str, Any]:
    """(Content-Type, body) of a wire file, the body a view of the mapped file: never read into memory whole."""
    import mmap
    from gateway.ebms import mime
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise ValueError("the file is empty")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    head = bytes(mm[:64 * 1024])
    content_type, rest = mime.read_message_file(head, sidecar=_sidecar(path))
    return content_type, memoryview(mm)[len(head) - len(rest):]


def _sidecar(path: Path) -> str | None:
    side = path.with_name(path.name + ".ctype")
    return side.read_text(encoding="latin-1") if side.exists() else None


def run(args: argparse.Namespace) -> int:
    code, out = inspect_file(args.message, conf=args.conf, trust=args.trust, against=args.against, strict=args.strict)
    print_json(out)
    if code == exitcodes.UNREADABLE:
        print(f"ics2gw inspect: {out['failures'][0]['message']}", file=sys.stderr)
    return code
