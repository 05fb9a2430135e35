"""`ics2gw journal list|orphans|requests|purge|init|migrate`: read, maintain, create or upgrade the journal."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("journal", help="list filings, orphans; purge old final filings; init or migrate the journal",
                       description="Read the journal (safe while the daemon runs) or purge old final filings.")
    jsub = p.add_subparsers(dest="journal_command", metavar="SUBCOMMAND")
    ls = jsub.add_parser("list", help="list filings, newest first")
    ls.add_argument("--state", action="append", help="only filings in this state (repeatable)")
    ls.add_argument("--since", help="only filings updated since this ISO 8601 time")
    ls.add_argument("--limit", type=int, default=1000)
    ls.add_argument("--json", action="store_true", help="one JSON object per filing and line")
    add_conf_option(ls)
    ls.set_defaults(func=run_list)
    orph = jsub.add_parser("orphans", help="inbound messages that matched no filing")
    orph.add_argument("--json", action="store_true")
    add_conf_option(orph)
    orph.set_defaults(func=run_orphans)
    rq = jsub.add_parser("requests", help="customs requests (IE3Q01/Q02/Q03), open ones by default")
    rq.add_argument("--all", action="store_true", help="include answered and closed requests")
    rq.add_argument("--json", action="store_true")
    add_conf_option(rq)
    rq.set_defaults(func=run_requests)
    pg = jsub.add_parser("purge", help="remove final filings older than the retention period",
                         description="Removes final filings (and their evidence) not updated for --days days "
                                     "(default: [journal] retention_days); never a filing that is not final.")
    pg.add_argument("--days", type=int)
    add_conf_option(pg)
    pg.set_defaults(func=run_purge)
    ini = jsub.add_parser("init", help="create the journal and missing state folders of a configuration",
                          description="Creates an empty journal at [journal] path and every missing [intake] "
                                      "folder. An existing journal is left as it is (its schema upgraded if older). "
                                      "`ics2gw run` refuses a journal that does not exist, so that a mistyped path "
                                      "is an error. With backend = \"postgresql\" this is `journal migrate` (plus "
                                      "the folders).")
    add_conf_option(ini)
    ini.set_defaults(func=run_init)
    mig = jsub.add_parser("migrate", help="create or upgrade the journal's schema (SQLite or PostgreSQL)",
                          description="Creates the journal's schema, or upgrades it to the version this ics2gw "
                                      "uses, and prints `journal <name>: schema version A -> B`. Safe while other "
                                      "instances run it at the same moment (one migrates, the others wait and find "
                                      "it done). With PostgreSQL, `ics2gw run` refuses a missing or older schema: "
                                      "run this first (or `ics2gw run --init-journal`). Exit 0 when done, 3 for a "
                                      "configuration error, 4 when the journal cannot be reached or upgraded.")
    add_conf_option(mig)
    mig.set_defaults(func=run_migrate)
    p.set_defaults(func=lambda a: (p.print_help(), exitcodes.UNREADABLE)[1])


def run_init(args: argparse.Namespace) -> int:
    from gateway.commands._journal import journal_config
    from gateway.settings import check_filesystem, create_journal, load_settings
    settings = load_settings(args.conf)
    problems = check_filesystem(settings, init_journal=True)
    for problem in problems:
        print(f"ics2gw journal init: configuration error: {problem}", file=sys.stderr)
    if problems:
        return exitcodes.CONFIG
    jcfg = journal_config(args.conf)
    if jcfg.backend != "sqlite":
        return _migrate(jcfg, "init")
    existed = settings.journal.path.exists()
    create_journal(settings)
    print(f"journal {settings.journal.path} {'already existed' if existed else 'created'}")
    return exitcodes.OK


def run_migrate(args: argparse.Namespace) -> int:
    from gateway.commands._journal import journal_config
    return _migrate(journal_config(args.conf), "migrate")


def _migrate(jcfg: object, verb: str) -> int:
    from gateway.journal.errors import JournalError
    from gateway.journal.factory import migrate_journal
    name = jcfg.describe()  # type: ignore[attr-defined]
    try:
        before, after = migrate_journal(jcfg)  # type: ignore[arg-type]
    except JournalError as exc:
        print(f"ics2gw journal {verb}: journal {name}: {exc}", file=sys.stderr)
        return exitcodes.RUNTIME
    except OSError as exc:            # a SQLite folder that cannot be created or written
        print(f"ics2gw journal {verb}: journal {name}: {exc}", file=sys.stderr)
        return exitcodes.RUNTIME
    except Exception as exc:          # psycopg's OperationalError and friends: one line, exit 4
        if type(exc).__module__.split(".")[0] not in ("psycopg", "psycopg_pool", "sqlite3"):
            raise
        print(f"ics2gw journal {verb}: journal {name}: cannot migrate: {type(exc).__name__}: "
              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", file=sys.stderr)
        return exitcodes.RUNTIME
    print(f"journal {name}: schema version {before} -> {after}")
    return exitcodes.OK


def _parse_since(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def run_list(args: argparse.Namespace) -> int:
    from gateway.commands._journal import open_reader
    try:
        j = open_reader(args.conf)
        since = _parse_since(args.since)
    except (FileNotFoundError, ValueError) as exc:
        print(f"ics2gw journal list: {exc}", file=sys.stderr)
        return exitcodes.UNREADABLE
    rows = j.list_filings(state=args.state, since=since, limit=args.limit)
    for r in rows:
        if args.json:
            print(json.dumps(r, default=str))
        else:
            print(f"{r['updated']}  {r['filer_eori']}/{r['lrn']:24} {r['action']:7} {r['state']:20} {r.get('mrn') or '-'}")
    return exitcodes.OK


def run_orphans(args: argparse.Namespace) -> int:
    from gateway.commands._journal import open_reader
    try:
        j = open_reader(args.conf)
    except FileNotFoundError as exc:
        print(f"ics2gw journal orphans: {exc}", file=sys.stderr)
        return exitcodes.UNREADABLE
    for o in j.list_orphans():
        print(json.dumps(o.to_dict(), default=str) if args.json else
              f"{o.created_at}  {o.message.action or '-':7} {o.message.message_id}  {o.reason}")
    return exitcodes.OK


def run_requests(args: argparse.Namespace) -> int:
    from gateway.commands._journal import open_reader
    try:
        j = open_reader(args.conf)
    except FileNotFoundError as exc:
        print(f"ics2gw journal requests: {exc}", file=sys.stderr)
        return exitcodes.UNREADABLE
    for r in j.list_requests(open_only=not args.all):
        f = j.get_filing(r.filing_id)
        row = {**r.to_dict(), "lrn": f.lrn if f else None, "mrn": f.mrn if f else None}
        print(json.dumps(row, default=str) if args.json else
              f"{r.opened_at}  {r.kind}  {r.state:9} {row['lrn']} {row['mrn'] or '-'}  {r.request_message_id}")
    return exitcodes.OK


def run_purge(args: argparse.Namespace) -> int:
    from gateway.commands._journal import journal_config, journal_exists, open_writer
    jcfg = journal_config(args.conf)
    days = args.days or jcfg.retention_days
    if not journal_exists(jcfg):
        print("ics2gw journal purge: no journal yet", file=sys.stderr)
        return exitcodes.UNREADABLE
    j = open_writer(args.conf)
    now = dt.datetime.now(dt.timezone.utc)
    report = j.purge(now - dt.timedelta(days=days), now=now)
    j.close()
    print(json.dumps(report.__dict__))
    return exitcodes.OK
