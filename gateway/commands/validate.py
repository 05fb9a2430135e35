"""``ics2gw validate [--profile P] [--json] FILE...``: local pre-validation of ENS payload files.

Exit 0 when every file is valid, 1 when any is invalid, 2 when a file cannot be read. With ``--json`` one JSON
object per file and line: ``{"file", "message", "valid", "errors": [{"code", "rule", "pointer", "text", ...}]}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import exitcodes
from gateway.commands._common import print_json
from gateway.ics2.validate import PROFILES, validate_payload


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("validate", help="pre-validate ICS2 / ICS phase-1 payload files locally",
                              description=__doc__)
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="validation profile (default: by message family: ICS2 checks, or eu-ics1 for phase 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per file and line")
    p.add_argument("--conf", type=Path, default=None, metavar="FILE", help="accepted for symmetry; unused")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    worst = exitcodes.OK
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            if args.json:
                print_json({"file": str(path), "message": None, "valid": False,
                            "errors": [{"code": "unreadable", "rule": "IO", "pointer": "", "text": str(exc)}]})
            else:
                print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            worst = exitcodes.UNREADABLE
            continue
        report = validate_payload(data, profile=args.profile)
        if args.json:
            print_json({"file": str(path), "message": report.message, "valid": report.valid,
                        "profile": report.profile, "errors": [e.as_dict() for e in report.errors]})
        else:
            verdict = "valid" if report.valid else f"INVALID ({len(report.errors)} error(s))"
            print(f"{path}: {report.message or '?'} [{report.profile or '-'}] {verdict}")
            for e in report.errors:
                val = f" (value: {e.value!r})" if e.value is not None else ""
                print(f"  {e.code} {e.rule} at {e.pointer}: {e.text}{val}")
        if not report.valid and worst == exitcodes.OK:
            worst = exitcodes.INVALID
    return worst
