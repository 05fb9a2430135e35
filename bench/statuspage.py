"""`python -m bench.statuspage [--n 1000000] [--keep PATH]`: the status page, /health and /metrics read paths on a
journal of N filings (default one million), timed on this machine.

The journal is made with the real schema (``SqliteJournal.open`` runs the migrations, indexes included), then
filled by bulk SQL: filings spread over 30 days in realistic states, one outbound message per filing, an IE3R01 per
registered filing, a few hundred open customs requests and do-not-load filings, and events for the newest 10 000.
Each read is timed as the median of 7 runs after one warm-up (the OS page cache warm, as on a running daemon).
Figures go to docs/benchmarks.md ("Status page with a million filings").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.journal.queries import JournalQueries, encode_cursor
from gateway.journal.sqlite import SqliteJournal

T_END = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
STATES = [("registered", 50), ("assessment-complete", 25), ("arrived", 12), ("rejected", 4), ("queued", 2),
          ("sent", 2), ("failed", 1), ("held", 1), ("info-requested", 1), ("screening-requested", 1),
          ("rejected-locally", 1)]


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def build(path: Path, n: int, seed: int = 7) -> dict[str, Any]:
    SqliteJournal.open(path, daemon=False).close()   # schema + migrations
    rnd = random.Random(seed)
    weights = [w for _, w in STATES]
    names = [s for s, _ in STATES]
    conn = sqlite3.connect(path, isolation_level=None)
    # bench data only (the daemon runs WAL + synchronous=FULL): a bulk load through a rollback journal and a big
    # page cache, then back to WAL so the reads below see the file the daemon would have
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    span = 30 * 86400
    sample: dict[str, Any] = {}
    conn.execute("BEGIN")

    def filings() -> Iterator[tuple[Any, ...]]:
        for i in range(1, n + 1):
            created = T_END - dt.timedelta(seconds=span * (n - i) / n)
            state = rnd.choices(names, weights)[0]
            if i % 5000 == 0:
                state = "do-not-load"
            mrn = f"26NL{i:014d}" if state not in ("queued", "sent", "failed", "held", "rejected-locally",
                                                    "rejected") else None
            updated = created + dt.timedelta(seconds=rnd.randint(1, 600))
            yield (i, "NL123456789", f"NLB{i:010d}", "NL123456789", "IE3F32", f"{i:064x}", state, mrn,
                   "ABC"[i % 3], "sti", None, 1, "bench", _iso(created), _iso(updated))
    conn.executemany("INSERT INTO filings (id, filer_eori, lrn, sender_eori, action, payload_sha256, state, mrn, "
                     "priority, endpoint, last_error, attempts, source, created_at, updated_at) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", filings())

    def messages() -> Iterator[tuple[Any, ...]]:
        rows = conn.execute("SELECT id, state, mrn, priority, created_at, updated_at FROM filings").fetchall()
        for fid, state, mrn, prio, created, updated in rows:
            mstate = {"queued": "queued", "failed": "failed", "held": "held", "rejected-locally": None}.get(
                state, "receipted")
            if mstate is None:
                continue
            yield (f"out-{fid}@ap.trader.test", None, "out", "user-message", "IE3F32", fid, None, prio, "sti",
                   mstate, 1, "multipart/related", b"sealed", created, updated)
            if mrn:
                yield (f"in-{fid}@sti.customs.test", f"out-{fid}@ap.trader.test", "in", "user-message", "IE3R01",
                       fid, "sti-taxud", None, None, "processed", 0, "multipart/related", b"inbound", updated,
                       updated)
    conn.executemany("INSERT INTO messages (message_id, ref_to_message_id, direction, kind, action, filing_id, "
                     "sender_party, priority, endpoint, state, attempts, content_type, sealed, created_at, "
                     "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", messages())
    opened = conn.execute("SELECT id, state, updated_at FROM filings WHERE state IN ('do-not-load', "
                          "'info-requested', 'screening-requested')").fetchall()
    kinds = {"do-not-load": "IE3Q01", "info-requested": "IE3Q02", "screening-requested": "IE3Q03"}
    conn.executemany("INSERT INTO customs_requests (filing_id, kind, request_message_id, state, opened_at, "
                     "updated_at) VALUES (?,?,?,?,?,?)",
                     [(fid, kinds[s], f"q-{fid}@sti.customs.test", "open" if s != "do-not-load" else "closed", u, u)
                      for fid, s, u in opened])
    newest = conn.execute("SELECT id, created_at FROM filings ORDER BY id DESC LIMIT 10000").fetchall()
    conn.executemany("INSERT INTO events (at, filing_id, message_id, event, detail) VALUES (?,?,?,?,?)",
                     [(c, fid, f"out-{fid}@ap.trader.test", ev, "{}") for fid, c in newest
                      for ev in ("filing-received", "queued", "receipted", "registered")])
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")   # no ANALYZE: the daemon's journal has no planner statistics either
    row = conn.execute("SELECT id, lrn, mrn FROM filings WHERE mrn IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
    sample.update(filing_id=row[0], lrn=row[1], mrn=row[2], message_id=f"out-{row[0]}@ap.trader.test")
    mid = conn.execute("SELECT updated_at, id FROM filings ORDER BY updated_at DESC, id DESC LIMIT 1 OFFSET ?",
                       (n // 2,)).fetchone()
    sample["deep_cursor"] = encode_cursor(mid[0], mid[1])
    sample["bytes"] = path.stat().st_size
    conn.close()
    return sample


def timed(fn: Callable[[], Any], runs: int = 7) -> float:
    fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def run(n: int = 1_000_000, keep: Path | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ics2gw-bench-status-"))
    path = keep or tmp / "journal.sqlite3"
    t0 = time.perf_counter()
    if not path.exists():
        sample = build(path, n)
        (path.parent / (path.name + ".sample.json")).write_text(json.dumps(sample))
    else:
        sample = json.loads((path.parent / (path.name + ".sample.json")).read_text())
    built = time.perf_counter() - t0
    q = JournalQueries(path, counts_ttl_seconds=0)
    from gateway.config import Section
    from gateway.ops import metrics
    from gateway.ops.config import read_ops_config
    from gateway.ops.health import HealthSources, build_report
    from gateway.ops.statuspage import StatusContext, _filings, _overview, _timeline
    cfg = read_ops_config(Section({}, file=Path("bench.toml"), prefix="health"))
    src = HealthSources(environment="conformance", endpoints={}, queries=q, journal_path=path)
    ctx = StatusContext("conformance", q, lambda: build_report(src, cfg), list)
    collector = metrics.JournalCollector(q, environment="conformance")
    since = T_END - dt.timedelta(hours=24)
    ms = {
        "counts_by_state": timed(lambda: q.counts_by_state(fresh=True)),
        "queue_lanes": timed(q.lanes),
        "filings_page_1": timed(lambda: q.filings(limit=50)),
        "filings_page_1_state_registered": timed(lambda: q.filings(state="registered", limit=50)),
        "filings_page_deep_500k": timed(lambda: q.filings(cursor=sample["deep_cursor"], limit=50)),
        "search_lrn": timed(lambda: q.filings(search=sample["lrn"])),
        "search_lrn_prefix": timed(lambda: q.filings(search=sample["lrn"][:8])),
        "search_mrn": timed(lambda: q.filings(search=sample["mrn"])),
        "search_message_id": timed(lambda: q.filings(search=sample["message_id"])),
        "open_requests": timed(q.open_requests),
        "do_not_load": timed(q.do_not_load),
        "filings_per_hour_24h": timed(lambda: q.created_per_hour(since)),
        "timeline": timed(lambda: q.timeline(sample["filing_id"])),
        "health_document": timed(lambda: build_report(src, cfg)),
        "metrics_journal_collect": timed(lambda: list(collector.collect())),
        "page_overview": timed(lambda: _overview(ctx)),
        "page_filings": timed(lambda: _filings(ctx, {})),
        "page_filings_search_mrn": timed(lambda: _filings(ctx, {"q": sample["mrn"]})),
        "page_timeline": timed(lambda: _timeline(ctx, sample["filing_id"])),
    }
    q.close()
    return {"filings": n, "journal_bytes": sample["bytes"], "build_seconds": round(built, 1),
            "median_ms": {k: round(v, 2) for k, v in ms.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.statuspage", description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="build the journal here (reused when it exists)")
    args = ap.parse_args(argv)
    res = run(args.n, args.keep)
    print(f"{res['filings']} filings, journal {res['journal_bytes'] / 1e6:.0f} MB, built in "
          f"{res['build_seconds']} s", file=sys.stderr)
    for k, v in res["median_ms"].items():
        print(f"{k:36s} {v:9.2f} ms")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
