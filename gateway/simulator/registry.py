"""The simulator's own durable store (SQLite, WAL): what it received, what it registered, what it owes.

Tables: ``filings`` (one row per ENS filing or arrival notification, keyed by sender EORI + kind + LRN, with
its current MRN, status, open request and how many times it was *registered*), ``mrns`` (every MRN ever
allocated), ``received`` (one row per distinct eb:MessageId, with ``copies`` = how many times it arrived),
``outbound`` (every reply: the sealed bytes, push or pull, its state; for pull the MPC and when it was
offered). ``report()`` gives the exactly-once view tests and operators check from the outside.

Outbound states: ``queued`` (due at ``not_before``) -> push: ``delivered`` | ``queued`` again with a later
``not_before`` after a failure | ``failed`` (attempts exhausted) | ``rejected`` (the trader answered an ebMS
error); pull: ``offered`` (re-offered when no receipt came within the re-offer time) -> ``acknowledged`` |
``rejected`` | ``failed`` (EBMS:0301 MissingReceipt after ``pull_max_offers`` offers without a receipt).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.simulator.business import Decision, FilingState
from gateway.simulator.replies import Context

SCHEMA = """
CREATE TABLE IF NOT EXISTS filings (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    eori TEXT NOT NULL,
    party_id TEXT NOT NULL,
    lrn TEXT NOT NULL,
    mrn TEXT,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    open_request TEXT,
    request_mode TEXT,
    registrations INTEGER NOT NULL DEFAULT 0,
    context TEXT NOT NULL DEFAULT '{}',
    documents TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (eori, kind, lrn)
);
CREATE TABLE IF NOT EXISTS mrns (
    mrn TEXT PRIMARY KEY,
    filing_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS received (
    message_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    action TEXT,
    party_id TEXT,
    filing_id INTEGER,
    lrn TEXT,
    mrn TEXT,
    copies INTEGER NOT NULL DEFAULT 1,
    outcome TEXT,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbound (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    party_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    mpc TEXT,
    action TEXT NOT NULL,
    ref_to TEXT,
    answers TEXT,
    filing_id INTEGER,
    lrn TEXT,
    mrn TEXT,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    digests TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    offers INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL,
    offered_at REAL,
    done_at TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbound_due ON outbound (state, mode, not_before);
CREATE INDEX IF NOT EXISTS outbound_mpc ON outbound (mpc, state);
CREATE INDEX IF NOT EXISTS received_filing ON received (filing_id);
"""


def _now() -> str:
    n = dt.datetime.now(dt.timezone.utc)
    return n.strftime("%Y-%m-%dT%H:%M:%S.") + f"{n.microsecond // 1000:03d}Z"


class Registry:
    """One SQLite connection guarded by a lock; ``transaction()`` groups writes atomically."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)
        cols = {r["name"] for r in self._db.execute("PRAGMA table_info(filings)")}
        if "documents" not in cols:  # a registry written before transport documents were kept
            self._db.execute("ALTER TABLE filings ADD COLUMN documents TEXT NOT NULL DEFAULT '[]'")
        self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._db
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("COMMIT")

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------------------------------- received
    def record_received(self, message_id: str, kind: str, action: str | None, party_id: str | None) -> int:
        """Counts one arrival of ``message_id``; returns its copy count (1 = first time)."""
        now = _now()
        with self.transaction() as db:
            row = db.execute("SELECT copies FROM received WHERE message_id = ?", (message_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO received (message_id, kind, action, party_id, copies, first_at, last_at) "
                           "VALUES (?, ?, ?, ?, 1, ?, ?)", (message_id, kind, action, party_id, now, now))
                return 1
            db.execute("UPDATE received SET copies = copies + 1, last_at = ? WHERE message_id = ?",
                       (now, message_id))
            return int(row["copies"]) + 1

    def forget_received(self, message_id: str) -> None:
        """Undo a first arrival whose processing failed (so a retry is processed, not counted as a copy)."""
        with self.transaction() as db:
            db.execute("DELETE FROM received WHERE message_id = ? AND copies = 1", (message_id,))

    def received(self, message_id: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM received WHERE message_id = ?", (message_id,))
        return dict(rows[0]) if rows else None

    # ------------------------------------------------------------------------------------------- filings
    @staticmethod
    def _state(row: sqlite3.Row | None) -> FilingState | None:
        if row is None:
            return None
        c = json.loads(row["context"] or "{}")
        return FilingState(id=row["id"], kind=row["kind"], lrn=row["lrn"], mrn=row["mrn"], action=row["action"],
                           status=row["status"], open_request=row["open_request"], request_mode=row["request_mode"],
                           registrations=row["registrations"], eori=row["eori"], party_id=row["party_id"],
                           context=Context(**c), documents=tuple(json.loads(row["documents"] or "[]")))

    def by_lrn(self, eori: str, kind: str, lrn: str) -> FilingState | None:
        rows = self._q("SELECT * FROM filings WHERE eori = ? AND kind = ? AND lrn = ?", (eori, kind, lrn))
        return self._state(rows[0] if rows else None)

    def by_mrn(self, mrn: str) -> FilingState | None:
        rows = self._q("SELECT f.* FROM filings f JOIN mrns m ON m.filing_id = f.id WHERE m.mrn = ?", (mrn,))
        return self._state(rows[0] if rows else None)

    def by_document(self, number: str) -> list[FilingState]:
        """Filings carrying transport document ``number`` (``level:number``, or a bare number at any level)."""
        rows = self._q("SELECT f.* FROM filings f, json_each(f.documents) d WHERE d.value = ? OR "
                       "substr(d.value, instr(d.value, ':') + 1) = ? ORDER BY f.id", (number, number))
        seen: dict[int, FilingState] = {}
        for r in rows:
            s = self._state(r)
            if s is not None:
                seen.setdefault(s.id, s)
        return list(seen.values())

    def mrn_exists(self, mrn: str) -> bool:
        return bool(self._q("SELECT 1 FROM mrns WHERE mrn = ?", (mrn,)))

    def apply(self, message_id: str, party_id: str, eori: str, decision: Decision) -> int | None:
        """Applies a business decision (registration, state change, received row); returns the filing id."""
        now = _now()
        with self.transaction() as db:
            filing_id = decision.filing_id
            reg = decision.register
            if reg is not None:
                ctx = json.dumps(reg.context.__dict__)
                if filing_id is None:
                    cur = db.execute(
                        "INSERT INTO filings (kind, eori, party_id, lrn, mrn, action, status, open_request, "
                        "request_mode, registrations, context, documents, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'registered', ?, ?, 1, ?, ?, ?, ?)",
                        (reg.kind, eori, party_id, reg.lrn, reg.mrn, reg.action, reg.open_request, reg.request_mode,
                         ctx, json.dumps(list(reg.documents)), now, now))
                    filing_id = cur.lastrowid
                else:
                    db.execute("UPDATE filings SET mrn = COALESCE(?, mrn), action = ?, status = 'registered', "
                               "open_request = ?, request_mode = ?, registrations = registrations + 1, "
                               "context = ?, documents = ?, updated_at = ? WHERE id = ?",
                               (reg.mrn, reg.action, reg.open_request, reg.request_mode, ctx,
                                json.dumps(list(reg.documents)), now, filing_id))
                if reg.mrn and reg.kind == "ens":
                    db.execute("INSERT OR IGNORE INTO mrns (mrn, filing_id, message_id, at) VALUES (?, ?, ?, ?)",
                               (reg.mrn, filing_id, message_id, now))
            if decision.update and filing_id is not None:
                cols = ", ".join(f"{k} = ?" for k in decision.update)
                db.execute(f"UPDATE filings SET {cols}, updated_at = ? WHERE id = ?",
                           (*decision.update.values(), now, filing_id))
            db.execute("UPDATE received SET filing_id = ?, lrn = ?, mrn = ?, outcome = ? WHERE message_id = ?",
                       (filing_id, decision.lrn, decision.mrn, decision.outcome, message_id))
            return filing_id

    def apply_update(self, filing_id: int, **columns: Any) -> None:
        allowed = {"status", "open_request", "request_mode"}
        if not columns or set(columns) - allowed:
            raise ValueError(f"only {', '.join(sorted(allowed))} can be updated")
        with self.transaction() as db:
            cols = ", ".join(f"{k} = ?" for k in columns)
            db.execute(f"UPDATE filings SET {cols}, updated_at = ? WHERE id = ?",
                       (*columns.values(), _now(), filing_id))

    def set_outcome(self, message_id: str, outcome: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE received SET outcome = ? WHERE message_id = ?", (outcome, message_id))

    # ------------------------------------------------------------------------------------------- outbound
    def enqueue(self, *, message_id: str, party_id: str, mode: str, mpc: str | None, action: str,
                ref_to: str | None, answers: str, filing_id: int | None, lrn: str | None, mrn: str | None,
                content_type: str, body: bytes, digests: dict[str, str], not_before: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO outbound (message_id, party_id, mode, mpc, action, ref_to, answers, filing_id, "
                       "lrn, mrn, content_type, body, digests, state, not_before, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                       (message_id, party_id, mode, mpc, action, ref_to, answers, filing_id, lrn, mrn, content_type,
                        body, json.dumps(digests), not_before, _now()))

    def due_pushes(self, now: float, *, newest_first: bool = False, limit: int = 20) -> list[dict[str, Any]]:
        order = "DESC" if newest_first else "ASC"
        rows = self._q("SELECT * FROM outbound WHERE mode = 'push' AND state = 'queued' AND not_before <= ? "
                       f"ORDER BY id {order} LIMIT ?", (now, limit))
        return [dict(r) for r in rows]

    def next_push_time(self) -> float | None:
        rows = self._q("SELECT MIN(not_before) AS t FROM outbound WHERE mode = 'push' AND state = 'queued'")
        return rows[0]["t"] if rows and rows[0]["t"] is not None else None

    def push_result(self, row_id: int, *, state: str, error: str | None = None, retry_at: float | None = None,
                    delivered: bool = False) -> None:
        with self.transaction() as db:
            db.execute("UPDATE outbound SET state = ?, attempts = attempts + 1, last_error = ?, "
                       "not_before = COALESCE(?, not_before), deliveries = deliveries + ?, "
                       "done_at = CASE WHEN ? IN ('delivered', 'failed', 'rejected') THEN ? ELSE done_at END "
                       "WHERE id = ?", (state, error, retry_at, 1 if delivered else 0, state, _now(), row_id))

    def expire_pulled(self, now: float, reoffer_after: float, max_offers: int) -> list[str]:
        """Pulled messages offered ``max_offers`` times without a receipt, whose last re-offer time has passed,
        end as the STI ends them: ``failed`` with EBMS:0301 MissingReceipt (eDelivery 1.5.5.4: reception
        awareness exhausted). ``max_offers`` 0 re-offers for ever (the lenient form). Returns their MessageIds."""
        if max_offers <= 0:
            return []
        with self.transaction() as db:
            rows = db.execute("SELECT id, message_id, offers FROM outbound WHERE mode = 'pull' AND state = 'offered' "
                              "AND offers >= ? AND offered_at <= ?", (max_offers, now - reoffer_after)).fetchall()
            for r in rows:
                db.execute("UPDATE outbound SET state = 'failed', done_at = ?, last_error = ? WHERE id = ?",
                           (_now(), f"EBMS:0301 MissingReceipt: no receipt after {r['offers']} offers", r["id"]))
            return [r["message_id"] for r in rows]

    def offer(self, mpc: str, now: float, reoffer_after: float, *, newest_first: bool = False,
              max_offers: int = 0) -> dict[str, Any] | None:
        """The message to answer a PullRequest on ``mpc`` with (FIFO), marked offered; None if the MPC is empty."""
        order = "DESC" if newest_first else "ASC"
        with self.transaction() as db:
            self.expire_pulled(now, reoffer_after, max_offers)
            row = db.execute(
                "SELECT * FROM outbound WHERE mode = 'pull' AND mpc = ? AND not_before <= ? AND "
                "(state = 'queued' OR (state = 'offered' AND offered_at <= ?)) "
                f"ORDER BY id {order} LIMIT 1", (mpc, now, now - reoffer_after)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE outbound SET state = 'offered', offered_at = ?, offers = offers + 1 WHERE id = ?",
                       (now, row["id"]))
            return dict(row)

    def outbound(self, message_id: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM outbound WHERE message_id = ?", (message_id,))
        return dict(rows[0]) if rows else None

    def settle_pulled(self, message_id: str, state: str, error: str | None = None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE outbound SET state = ?, last_error = ?, done_at = ?, "
                       "deliveries = deliveries + CASE WHEN ? = 'acknowledged' THEN 1 ELSE 0 END "
                       "WHERE message_id = ?", (state, error, _now(), state, message_id))

    def outbound_list(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT id, message_id, party_id, mode, mpc, action, ref_to, answers, lrn, mrn, state, "
                       "attempts, offers, deliveries, last_error, created_at, done_at FROM outbound ORDER BY id")
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------------------------------- report
    def report(self) -> list[dict[str, Any]]:
        """One object per registered filing (and arrival notification), for exactly-once checks."""
        out = []
        for f in self._q("SELECT * FROM filings ORDER BY id"):
            rec = self._q("SELECT message_id, action, copies, outcome FROM received WHERE filing_id = ? "
                          "ORDER BY first_at, message_id", (f["id"],))
            # the messages that registered the filing; a refused duplicate LRN (IE3N01) is only "related"
            own = [r for r in rec if r["action"] and r["action"][:4] in ("IE3F", "IE3N") and
                   (r["action"][:4] == "IE3F" if f["kind"] == "ens" else r["action"] == "IE3N06") and
                   not (r["outcome"] or "").startswith("rejected")]
            related = [r for r in rec if r not in own]
            mrns = [r["mrn"] for r in self._q("SELECT mrn FROM mrns WHERE filing_id = ? ORDER BY at", (f["id"],))]
            replies = self._q("SELECT action, message_id, ref_to, mode, state, deliveries, offers, last_error "
                              "FROM outbound "
                              "WHERE filing_id = ? ORDER BY id", (f["id"],))
            out.append({
                "lrn": f["lrn"], "mrn": f["mrn"], "action": f["action"], "kind": f["kind"],
                "party_id": f["party_id"], "eori": f["eori"], "status": f["status"],
                "open_request": f["open_request"],
                "message_ids": [r["message_id"] for r in own],
                "copies": sum(int(r["copies"]) for r in own),
                "registrations": int(f["registrations"]),
                "mrns": mrns,
                "related": [{"action": r["action"], "message_id": r["message_id"], "copies": int(r["copies"]),
                             "outcome": r["outcome"]} for r in related],
                "replies": [dict(r) for r in replies],
                "created_at": f["created_at"], "updated_at": f["updated_at"],
            })
        return out

    def counts(self) -> dict[str, int]:
        rows = self._q("SELECT state, COUNT(*) AS n FROM outbound GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}


def monotonic_now() -> float:
    """The clock of ``not_before`` / ``offered_at``: wall time, so it survives restarts."""
    return time.time()
