"""`ics2gw conformance`: run the conformance scenario catalogue against a Trader Interface endpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "conformance", help="run the conformance scenarios (ICS2 EO campaign and negative AS4 cases)",
        description="Run the scenario catalogue against one endpoint: connectivity (both ways), one filing per "
                    "transport mode, multiple filing and attachments, invalid filing, amendment, invalidation, "
                    "consultation, IE3Q02/IE3Q03 answered, lifecycle errors, do-not-load, arrival outcomes, carrier "
                    "notifications, duplicate elimination, pull (also by the daemon's puller), and the negative AS4 "
                    "cases. Business scenarios run through an "
                    "in-process gateway with its own journal, spool and API under the working directory (the "
                    "inbound listen address of the configuration is used: stop a daemon that holds it). Negative "
                    "scenarios (leaf-only, expired, revoked, unauthorised sender, damaged gzip) run against the "
                    "bundled simulator or when the endpoint has negative_tests_enabled = true; otherwise they are "
                    "skipped. Before any scenario, one ping checks that the TI answers and the inbound address is "
                    "free; otherwise the run stops at once naming the cause. Exit 0 when no scenario failed, 1 "
                    "otherwise, 3 for a refused configuration, 4 when the TI is unreachable or the inbound address "
                    "is taken.")
    add_conf_option(p)
    p.add_argument("--endpoint", metavar="NAME", help="endpoint name from [[endpoints]] (default: [routing] default)")
    p.add_argument("--scenarios", nargs="+", metavar="ID", help="scenario ids or groups (comma or space separated; "
                   "default: all). --list shows them")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--allow-production", action="store_true",
                   help="accept a configuration or endpoint with environment = \"production\"")
    p.add_argument("--simulator-admin", metavar="URL",
                   help="admin URL of the bundled simulator serving the endpoint (default: probe "
                        "http://127.0.0.1:8480/admin when the endpoint is on loopback)")
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="JUnit XML output (default: junit.xml in the working directory)")
    p.add_argument("--workdir", type=Path, metavar="DIR",
                   help="working directory (default: var/conformance/<UTC timestamp>)")
    p.add_argument("--samples", type=Path, metavar="DIR", help="folder of the sample payloads "
                   "(default: tests/fixtures/ics2 of the repository)")
    p.add_argument("--certs", type=Path, metavar="DIR", help="folder with expired-/revoked-seal.key and -chain.pem "
                   "for the negative scenarios (default: the folder of the [seal] chain)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="wait for each customs answer (default: 20 against the simulator, 600 otherwise)")
    p.add_argument("--sub-party", action="append", metavar="PARTY_ID",
                   help="sub-domain party ids to test, system@EORI then EORI@MS (default: system1@EORI, EORI@FR)")
    p.add_argument("--pull-party", metavar="PARTY_ID", help="party id in pull mode (default: system1@EORI)")
    p.add_argument("--unregistered-party", default="NL999999999", metavar="PARTY_ID",
                   help="a party id NOT registered in UUM&DS, for the unauthorised-sender case (default: NL999999999)")
    p.add_argument("--carrier-party", default="NL987654321", metavar="PARTY_ID",
                   help="a carrier's PartyId in pull mode that files nothing, for the ENS pending notification "
                        "(IE3N11) case (default: NL987654321, registered in the sample simulator)")
    p.add_argument("--json", action="store_true", help="one JSON object per scenario instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import logging

    from gateway.conformance.junit import write_junit
    from gateway.conformance.runner import RunnerCannotRun, RunnerRefused, print_report, run_conformance
    from gateway.conformance.scenarios import CATALOGUE

    if args.list:
        for s in CATALOGUE:
            flag = "  [negative: simulator or negative_tests_enabled]" if s.negative else ""
            print(f"{s.id:<24} {s.group:<13} {s.title}{flag}")
        return exitcodes.OK
    workdir = args.workdir
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    # the in-process gateway logs to a file, the terminal shows the results
    import datetime as dt
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    workdir = (workdir or Path("var") / "conformance" / stamp).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "gateway.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def progress(r):  # type: ignore[no-untyped-def]
        if not args.json:
            print(f"  {r.id:<24} {r.status.upper():<7} {r.seconds * 1000:7.0f} ms", file=sys.stderr, flush=True)

    try:
        report = asyncio.run(run_conformance(
            args.conf, endpoint=args.endpoint, scenarios=args.scenarios, allow_production=args.allow_production,
            sim_admin=args.simulator_admin, workdir=workdir, samples=args.samples, certs=args.certs,
            timeout=args.timeout, sub_parties=args.sub_party, pull_party=args.pull_party,
            unregistered_party=args.unregistered_party, carrier_party=args.carrier_party,
            on_result=progress))
    except RunnerCannotRun as exc:
        print(f"ics2gw conformance: cannot run: {exc}", file=sys.stderr)
        return exitcodes.RUNTIME
    except RunnerRefused as exc:
        print(f"ics2gw conformance: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    finally:
        root.removeHandler(handler)
        handler.close()
    junit = write_junit(report, args.junit or report.workdir / "junit.xml")
    if args.json:
        for r in report.results:
            print(json.dumps({"scenario": r.id, "group": r.group, "status": r.status,
                              "ms": round(r.seconds * 1000, 1), "message": r.message, "evidence": r.evidence},
                             default=str))
    else:
        print_report(report, sys.stdout)
        print(f"JUnit XML: {junit}")
    return exitcodes.OK if report.ok else exitcodes.INVALID
