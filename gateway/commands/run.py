"""`ics2gw run`: the gateway daemon (intake, senders, inbound server and/or puller, submit API)."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gateway daemon",
                       description="Run the gateway: spool intake, submit API, sender workers, inbound server "
                                   "and/or puller. SIGTERM drains in-flight work and exits 0; SIGHUP reloads trust "
                                   "anchors, CRLs, the log level and alert settings; SIGUSR1 logs the current "
                                   "state. On start, work left in flight by a crash is recovered. The journal must "
                                   "exist (a mistyped path is an error) unless --init-journal is given.")
    add_conf_option(p)
    p.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"),
                   help="default: [logging] level, else info")
    p.add_argument("--log-format", default=None, choices=("kv", "json"),
                   help="key=value lines or JSON lines (default: [logging] format, else kv)")
    p.add_argument("--init-journal", action="store_true",
                   help="create the journal and missing state folders if they do not exist yet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    # until the daemon's handlers are installed (gateway/pipeline/signals.py), a reload or dump request must not
    # kill it (the default action of SIGHUP and SIGUSR1 is to terminate)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    from gateway.logsetup import setup_logging
    from gateway.pipeline.daemon import run_gateway
    from gateway.settings import check_filesystem, create_journal, load_settings

    settings = load_settings(args.conf)
    problems = check_filesystem(settings, init_journal=args.init_journal)
    if problems:
        for p in problems:
            print(f"ics2gw run: configuration error: {p}", file=sys.stderr)
        return exitcodes.CONFIG
    setup_logging(args.log_level or settings.logging.level, args.log_format or settings.logging.format,
                  environment=settings.environment)
    if not settings.journal.path.exists():
        create_journal(settings)
        logging.getLogger("ics2gw.daemon").info("journal created path=%s", settings.journal.path)
    return run_gateway(args.conf)
