"""`python -m bench.failover`: how long the PostgreSQL journal's failure paths take, on a private server.

Three figures for docs/deployment.md, each the median of a few rounds:
- **singleton release**: a process holding a singleton lock is SIGKILLed; time until another instance's
  ``try_acquire`` (polled every 20 ms) gets it. The daemon adds its retry interval (2 s) and grace period (3 s).
- **database restart**: ``pg_ctl restart`` (fast shutdown) while a group-commit writer has work; time from the
  restart's start until the first change committed afterwards, and how many submissions failed (expected 0).
- **database crash**: the postmaster SIGKILLed and started again (crash recovery); the same two figures.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.journal.committer import JournalWriter
from gateway.journal.factory import open_journal
from gateway.journal.pglocal import LocalPostgres, available
from gateway.journal.records import NewFiling

_HOLDER = """
import sys, time
from gateway.journal.postgres import PgSingleton
lock = PgSingleton(sys.argv[1], "bench-failover")
assert lock.try_acquire()
print("held", flush=True)
time.sleep(3600)
"""


def _cfg(server: LocalPostgres, db: str) -> Any:
    from dataclasses import replace
    from pathlib import Path as P

    from gateway.config import Section
    from gateway.journal.config import read_journal_config
    cfg = read_journal_config(Section({"backend": "postgresql", "dsn": server.dsn(db, "bench")}, file=P("/b/g.toml"),
                                      prefix="journal"))
    return replace(cfg, password="bench-pw", connect_timeout_seconds=5)


def _filing(i: int) -> NewFiling:
    import hashlib
    return NewFiling(filer_eori="NL123456789", lrn=f"FO{i:06d}", sender_eori="NL123456789", action="IE3F32",
                     payload_sha256=hashlib.sha256(str(i).encode()).hexdigest(), priority="B")


def singleton_release(cfg: Any, rounds: int = 5) -> list[float]:
    from gateway.journal.postgres import PgSingleton
    out = []
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, cfg.conninfo()], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        other = PgSingleton(cfg.conninfo(), "bench-failover")
        assert not other.try_acquire()
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        while not other.try_acquire():
            time.sleep(0.02)
        out.append(time.monotonic() - t0)
        proc.wait()
        other.release()
    return out


def database_outage(server: LocalPostgres, cfg: Any, *, crash: bool, rounds: int = 3) -> dict[str, Any]:
    j = open_journal(cfg)
    writer = JournalWriter(j, unavailable_budget=120).start()
    now = datetime.now(UTC)
    gaps, failed, n = [], 0, 0
    try:
        for _ in range(rounds):
            for _ in range(20):
                writer.submit_threadsafe(lambda jj, i=n: jj.insert_filing(_filing(i), now=now)).result(60)
                n += 1
            t0 = time.monotonic()
            if crash:
                server.kill()
                server.start()
            else:
                server.restart()
            fut = writer.submit_threadsafe(lambda jj, i=n: jj.insert_filing(_filing(i), now=now))
            n += 1
            try:
                fut.result(120)
            except Exception:  # noqa: BLE001 - counted
                failed += 1
            gaps.append(time.monotonic() - t0)
        count = sum(j.count_by_state().values())
    finally:
        writer.close_sync()
        j.close()
    return {"seconds_to_first_commit": gaps, "failed_submissions": failed, "filings": count, "expected": n,
            "writer_retries": writer.stats.retries}


def measure() -> dict[str, Any]:
    """The three figures (see the module doc); ``{"skipped": why}`` where no PostgreSQL can be started."""
    why = available()
    if why:
        return {"skipped": why}
    with LocalPostgres() as server:
        server.create_role("bench", "bench-pw")
        server.create_database("failover", owner="bench")
        cfg = _cfg(server, "failover")
        from gateway.journal.factory import migrate_journal
        migrate_journal(cfg)
        rel = singleton_release(cfg)
        restart = database_outage(server, cfg, crash=False)
        crash = database_outage(server, cfg, crash=True)
    result = {
        "singleton_release_seconds": {"median": statistics.median(rel), "max": max(rel)},
        "database_restart": {**restart, "median": statistics.median(restart["seconds_to_first_commit"])},
        "database_crash": {**crash, "median": statistics.median(crash["seconds_to_first_commit"])},
        "note": "the daemon adds its singleton retry (2 s) and grace (3 s) to the release; load: "
                + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    return result


def main() -> int:
    result = measure()
    print(json.dumps(result, indent=2))
    out = Path(__file__).with_name("failover.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
