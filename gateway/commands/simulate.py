"""`ics2gw simulate`: run the customs Trader Interface simulator; `ics2gw simulate report`: what it registered."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json

DEFAULT_SIM_CONF = Path("conf/simulator.toml")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run the customs Trader Interface simulator",
                       description="Run the customs TI stand-in (HTTPS with 2-way TLS, strict verification, "
                                   "business replies by push or pull) until SIGTERM or Ctrl-C.")
    add_conf_option(p, DEFAULT_SIM_CONF)
    p.add_argument("--log-format", default="kv", choices=("kv", "json"), help="key=value lines or JSON lines")
    p.set_defaults(func=run)
    sp = p.add_subparsers(dest="simulate_command", metavar="SUBCOMMAND")
    r = sp.add_parser("report", help="print what the simulator registered, one filing per line",
                      description="One line per registered filing from the simulator's registry: LRN, MRN, "
                                  "action, the distinct MessageIds received, copies and registrations.")
    r.add_argument("--conf", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                   help=f"configuration file (default: {DEFAULT_SIM_CONF})")
    r.add_argument("--json", action="store_true", help="one JSON object per line")
    r.set_defaults(func=report)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.simulator.app import run_simulator
    from gateway.simulator.config import load_simulator_config

    cfg = load_simulator_config(args.conf)
    from gateway.logsetup import setup_logging
    setup_logging("info", args.log_format, environment="simulator")  # the gateway's line format (logsetup)
    asyncio.run(run_simulator(cfg))
    return exitcodes.OK


def report(args: argparse.Namespace) -> int:
    from gateway.simulator.config import load_simulator_config
    from gateway.simulator.registry import Registry

    cfg = load_simulator_config(args.conf)
    if not cfg.registry_path.exists():
        if not args.json:
            print(f"no simulator registry at {cfg.registry_path} (nothing received yet)", file=sys.stderr)
        return exitcodes.OK
    reg = Registry(cfg.registry_path)
    try:
        rows = reg.report()
    finally:
        reg.close()
    if args.json:
        for row in rows:
            print_json(row)
        return exitcodes.OK
    print(f"{'LRN':<24} {'MRN':<18} {'ACTION':<7} {'IDS':>3} {'COPIES':>6} {'REGS':>4} STATUS")
    for row in rows:
        flag = "" if row["registrations"] == 1 else "  <-- registered more than once"
        failed = [r for r in row.get("replies", []) if r.get("state") in ("failed", "rejected")]
        if failed:  # e.g. a pulled reply never acknowledged: EBMS:0301 MissingReceipt, as the TI records it
            flag += "".join(f"  <-- {r['action']} {r['state']}: {r.get('last_error') or ''}".rstrip()
                            for r in failed)
        print(f"{row['lrn']:<24} {row['mrn'] or '-':<18} {row['action']:<7} {len(row['message_ids']):>3} "
              f"{row['copies']:>6} {row['registrations']:>4} {row['status']}{flag}")
    return exitcodes.OK
