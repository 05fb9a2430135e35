"""`ics2gw run`: the gateway daemon (intake, senders, inbound server and/or puller, submit API)."""

from __future__ import annotations

import argparse

from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gateway daemon",
                       description="Run the gateway: spool intake, submit API, sender workers, inbound server "
                                   "and/or puller. SIGTERM drains in-flight work and exits 0; on start, work left "
                                   "in flight by a crash is recovered.")
    add_conf_option(p)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="kv", choices=("kv", "json"), help="key=value lines or JSON lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.logsetup import setup_logging
    from gateway.pipeline.daemon import run_gateway
    setup_logging(args.log_level, args.log_format)
    return run_gateway(args.conf)
