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
                                   "exist (a mistyped path is an error) unless --init-journal is given; a "
                                   "PostgreSQL journal must have the current schema (`ics2gw journal migrate`, or "
                                   "--init-journal, which migrates).")
    add_conf_option(p)
    p.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"),
                   help="default: [logging] level, else info")
    p.add_argument("--log-format", default=None, choices=("kv", "json"),
                   help="key=value lines or JSON lines (default: [logging] format, else kv)")
    p.add_argument("--init-journal", action="store_true",
                   help="create the journal and missing state folders if they do not exist yet "
                        "(PostgreSQL: create or upgrade the schema)")
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
    jcfg = settings.journal
    if jcfg.backend == "sqlite":
        if not jcfg.path.exists():
            create_journal(settings)
            logging.getLogger("ics2gw.daemon").info("journal created journal=%s", jcfg.describe())
    else:
        refused = _check_shared_schema(jcfg, init=args.init_journal)
        if refused:
            code, line = refused
            print(f"ics2gw run: {line}", file=sys.stderr)
            return code
    return run_gateway(args.conf)


def _check_shared_schema(jcfg: object, *, init: bool) -> tuple[int, str] | None:
    """A PostgreSQL journal is shared: the daemon never upgrades it behind the other instances' backs. A missing or
    older schema is refused with what to run (exit 3), unless ``--init-journal`` asks for the migration; a database
    that cannot be reached is exit 4; None when fine."""
    from gateway.journal import schema_pg as schema
    from gateway.journal.factory import migrate_journal, schema_version
    name = jcfg.describe()  # type: ignore[attr-defined]
    log = logging.getLogger("ics2gw.daemon")
    try:
        version = schema_version(jcfg)  # type: ignore[arg-type]
        if init and version < schema.LATEST:
            before, after = migrate_journal(jcfg)  # type: ignore[arg-type]
            log.info("journal migrated journal=%s from=%d to=%d", name, before, after)
            return None
    except Exception as exc:  # noqa: BLE001 - unreachable database, refused login: one line, exit 4
        first = (str(exc).strip().splitlines() or [""])[0]
        return exitcodes.RUNTIME, f"journal {name} cannot be reached: {type(exc).__name__}: {first}"
    if version == 0:
        return exitcodes.CONFIG, (f"journal {name} has no schema yet: run `ics2gw journal migrate --conf FILE` once (or start with "
                f"`ics2gw run --init-journal`)")
    if version < schema.LATEST:
        return exitcodes.CONFIG, (f"journal {name} has schema version {version}, this ics2gw needs {schema.LATEST}: run `ics2gw "
                f"journal migrate --conf FILE` (or start with `ics2gw run --init-journal`)")
    return None
