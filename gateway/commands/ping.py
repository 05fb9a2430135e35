"""`ics2gw ping`: send the ebMS test service message (ICD 4.5.1) to a Trader Interface and time the round trip."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ping", help="send an AS4 ping (test service) to a Trader Interface",
                       description="Send the ebMS test-service message to the endpoint and check the signed receipt. "
                                   "Exit 0 on a valid receipt, 1 on an ebMS error or invalid receipt, 4 on a "
                                   "transport failure.")
    p.add_argument("--endpoint", metavar="NAME", help="endpoint name from [[endpoints]] (default: [routing] default)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a line of text")
    add_conf_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.ebms.engine import Engine
    from gateway.transport.client import EbmsErrorOutcome, InvalidReceipt, ReceiptOk, summarize
    from gateway.settings import load_settings
    from gateway.transport.doctor import ping_endpoint

    settings = load_settings(args.conf)   # the one loader: refuses what `run` refuses
    cfg, tcfg = settings.core, settings.transport
    try:
        endpoint = tcfg.endpoint(args.endpoint)
    except KeyError as exc:
        print(f"ics2gw ping: {exc.args[0]}", file=sys.stderr)
        return exitcodes.UNREADABLE
    engine = Engine.from_config(cfg)
    outcome, rtt = asyncio.run(ping_endpoint(engine, tcfg, endpoint))
    report = {"endpoint": endpoint.name, "url": endpoint.url, "environment": tcfg.environment,
              **summarize(outcome), "round_trip_ms": round(rtt * 1000, 1)}
    if args.json:
        print_json(report)
    else:
        extra = report.get("cause") or "; ".join(f"{e['code']} {e['short_description']}: {e['description']}"
                                                 for e in report.get("errors", [])) or report.get("code") or ""
        print(f"ping {endpoint.name} ({endpoint.url}, environment={tcfg.environment}): {report['outcome']} "
              f"in {report['round_trip_ms']} ms{(' - ' + str(extra)) if extra else ''}")
    if isinstance(outcome, ReceiptOk):
        return exitcodes.OK
    if isinstance(outcome, (EbmsErrorOutcome, InvalidReceipt)):
        return exitcodes.INVALID
    return exitcodes.RUNTIME
