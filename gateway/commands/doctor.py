"""`ics2gw doctor`: check a deployment before go-live; a pass/fail list with the fix for each failure."""

from __future__ import annotations

import argparse

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check configuration, keys, TLS and connectivity before go-live",
                       description="Check the configuration, the sealing key and chain, the party id and MPC, the "
                                   "TLS material, a TLS handshake and a ping to each endpoint. Exit 0 if all pass, "
                                   "1 if any fails.")
    p.add_argument("--endpoint", metavar="NAME", help="check only this endpoint")
    p.add_argument("--offline", action="store_true", help="skip the TLS handshakes and pings")
    p.add_argument("--no-ping", action="store_true", help="do the TLS handshakes but no ping")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    add_conf_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.transport.doctor import render, run_checks

    checks, env = run_checks(args.conf, network=not args.offline, endpoint=args.endpoint, do_ping=not args.no_ping)
    if args.json:
        print_json({"environment": env, "ok": all(c.ok for c in checks),
                    "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in checks]})
    else:
        print(render(checks, env))
    return exitcodes.OK if all(c.ok for c in checks) else exitcodes.INVALID
