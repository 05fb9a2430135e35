"""Read-only queries for operators: ``/health``, ``/metrics`` and the status page.

Why a module of its own: these readers never write (the connection is ``mode=ro`` with ``query_only``), their
questions are about the whole journal rather than one filing, and each one must stay an index range scan so that
a Prometheus scrape or a page view costs milliseconds with a million filings (the indexes are migration 2 in
``schema.py``; ``bench/statuspage.py`` measures them). One filing's lifecycle and evidence come from the ordinary
``SqliteJournal`` reader, so there is one meaning of "lifecycle" and "evidence" in the code base.

Paging is keyset paging (``WHERE (updated_at, id) < (?, ?)``), never ``OFFSET``: page 5 000 costs what page 1 costs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.journal.errors import JournalError, NotFound
from gateway.journal.records import EvidenceItem
from gateway.journal.sqlite import SqliteJournal
from gateway.journal.states import FILING_STATES, PRIORITIES
from gateway.journal.timeutil import iso, parse_iso

_FILING_LIST_COLS = "id, filer_eori, lrn, action, state, mrn, priority, endpoint, last_error, created_at, updated_at"
# the highest code point: ``x >= q AND x < q || _TOP`` is a prefix match that uses the index (LIKE would not)
_TOP = "\U0010ffff"


@dataclass(frozen=True)
class FilingsPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None       # pass back as ``cursor`` for the next (older) page; None on the last page
    search: str | None = None     # how a search matched: "message-id", "mrn", "lrn" (None without a search)


@dataclass(frozen=True)
class LaneStats:
    lane: str
    queued: int
    sending: int
    oldest_queued_at: str | None

    def oldest_age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - parse_iso(self.oldest_queued_at)).total_seconds()) if self.oldest_queued_at else 0.0


def encode_cursor(updated_at: str, filing_id: int) -> str:
    return f"{updated_at}~{filing_id}"


def decode_cursor(cursor: str) -> tuple[str, int]:
    """``ValueError`` for anything that is not a cursor this module wrote (the page answers 400)."""
    at, sep, fid = cursor.rpartition("~")
    if not sep or not fid.isdigit() or len(at) > 40:
        raise ValueError(f"not a page cursor: {cursor[:60]!r}")
    parse_iso(at)
    return at, int(fid)


class JournalQueries:
    """Operators' read-only view of one journal file. Thread-safe (one connection behind a lock)."""

    def __init__(self, source: Path | str | Any, *, busy_timeout_ms: int = 5000,
                 counts_ttl_seconds: float = 2.0) -> None:
        """``source``: a SQLite journal's path (a read-only connection of its own is opened) or an open read-only
        journal of either backend (``journal.queries()``), which stays the caller's to close."""
        self._owns_reader = isinstance(source, (str, Path))
        if self._owns_reader:
            self.path: Path | None = Path(source)
            if not self.path.exists():
                raise NotFound(f"{self.path}: no journal here (check [journal] path)")
            reader = SqliteJournal.open_reader(self.path, busy_timeout_ms=busy_timeout_ms)
        else:
            reader = source
            self.path = getattr(source, "path", None)
        if reader.backend == "sqlite":
            # by name, not by version number: migrations of parallel branches are renumbered when they merge
            if not reader._all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'filing_state_counts'"):
                if self._owns_reader:
                    reader.close()
                raise JournalError(f"{self.path}: the journal lacks the operations read paths (the "
                                   "filing_state_counts migration); start the daemon of this version once to "
                                   "migrate it")
        self._reader = reader
        # counting every filing is the one query that reads a whole index; /metrics, /health and the overview
        # share one result for a short while instead of each paying for it
        self._counts_ttl = counts_ttl_seconds
        self._counts: tuple[float, dict[str, int]] | None = None

    def close(self) -> None:
        if self._owns_reader:
            self._reader.close()

    def _all(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        return self._reader._all(sql, params)

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """Several SELECTs that must agree with each other (one read transaction)."""
        r = self._reader
        with r._lock, r._read_snapshot():
            yield _Exec(r)

    # -- counts ------------------------------------------------------------------------------------------------------
    def counts_by_state(self, *, fresh: bool = False) -> dict[str, int]:
        """Filings per state, every known state present (zero included: a Prometheus series must not vanish)."""
        now = time.monotonic()
        if not fresh and self._counts is not None and now - self._counts[0] < self._counts_ttl:
            return dict(self._counts[1])
        counts = {s: 0 for s in FILING_STATES}
        for r in self._all("SELECT state, n FROM filing_state_counts"):  # kept by triggers (schema migration 2)
            counts[r[0]] = r[1]
        self._counts = (now, counts)
        return dict(counts)

    def lanes(self) -> dict[str, LaneStats]:
        """Outbound queue per priority lane: queued, in flight, and when the oldest queued message was queued."""
        out = {p: LaneStats(p, 0, 0, None) for p in PRIORITIES}
        with self._snapshot() as c:
            for p in PRIORITIES:
                q = c.execute("SELECT COUNT(*), MIN(created_at) FROM messages WHERE direction = 'out' "
                              "AND state = 'queued' AND priority = ?", (p,)).fetchone()
                s = c.execute("SELECT COUNT(*) FROM messages WHERE direction = 'out' AND state = 'sending' "
                              "AND priority = ?", (p,)).fetchone()
                out[p] = LaneStats(p, q[0], s[0], q[1])
        return out

    def open_requests(self, *, limit: int = 200) -> list[dict[str, Any]]:
        """Open IE3Q01/IE3Q02/IE3Q03 with their filing, the most urgent first (do-not-load, screening, info),
        oldest first within a kind: one index range per kind, no sort of all open requests."""
        out: list[dict[str, Any]] = []
        for kind in ("IE3Q01", "IE3Q03", "IE3Q02"):
            if len(out) >= limit:
                break
            rows = self._all(
                "SELECT r.id, r.kind, r.request_message_id, r.opened_at, f.id AS filing_id, f.lrn, f.mrn, "
                "f.filer_eori, f.priority, f.state FROM customs_requests r JOIN filings f ON f.id = r.filing_id "
                "WHERE r.state = 'open' AND r.kind = ? ORDER BY r.opened_at LIMIT ?", (kind, int(limit) - len(out)))
            out += [dict(r) for r in rows]
        return out

    def open_request_counts(self) -> dict[str, int]:
        counts = {"IE3Q01": 0, "IE3Q02": 0, "IE3Q03": 0}
        for r in self._all("SELECT kind, COUNT(*) FROM customs_requests WHERE state = 'open' GROUP BY kind"):
            counts[r[0]] = r[1]
        return counts

    def do_not_load(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Filings customs told us not to load (IE3Q01), newest first."""
        rows = self._all(f"SELECT {_FILING_LIST_COLS} FROM filings WHERE state = 'do-not-load' "
                         "ORDER BY updated_at DESC, id DESC LIMIT ?", (int(limit),))
        return [dict(r) for r in rows]

    def orphans(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT o.id, o.reason, o.created_at, m.message_id, m.action, m.sender_party, m.functional_reference "
            "FROM orphans o JOIN messages m ON m.id = o.message_row WHERE o.resolved_at IS NULL "
            "ORDER BY o.created_at DESC LIMIT ?", (int(limit),))
        return [dict(r) for r in rows]

    def orphans_open(self) -> int:
        return int(self._all("SELECT COUNT(*) FROM orphans WHERE resolved_at IS NULL")[0][0])

    def created_per_hour(self, since: datetime, hours: int = 24) -> list[dict[str, Any]]:
        """Filings created per UTC hour from ``since`` (an hour boundary), by their current state (the overview's
        chart). One range of the (created_at, state) index per hour: measured 2.5x faster than one GROUP BY over
        the day, which sorts every row of it (bench/statuspage.py)."""
        out: list[dict[str, Any]] = []
        with self._snapshot() as c:
            for h in range(max(1, min(int(hours), 24 * 31))):
                start = since + timedelta(hours=h)
                label = iso(start)[:13]
                for state, n in c.execute("SELECT state, COUNT(*) FROM filings WHERE created_at >= ? AND "
                                          "created_at < ? GROUP BY state",
                                          (iso(start), iso(start + timedelta(hours=1)))):
                    out.append({"hour": label, "state": state, "n": n})
        return out

    # -- filings list ------------------------------------------------------------------------------------------------
    def filings(self, *, state: str | None = None, search: str | None = None, cursor: str | None = None,
                limit: int = 50) -> FilingsPage:
        """One page of filings, newest change first; ``search`` finds an LRN, an MRN (prefix) or a MessageId."""
        if state is not None and state not in FILING_STATES:
            raise ValueError(f"unknown state {state!r}")
        limit = max(1, min(int(limit), 500))
        search = (search or "").strip() or None
        if search is not None:
            return self._search(search, state, limit)
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if cursor:
            at, fid = decode_cursor(cursor)
            where.append("(updated_at, id) < (?, ?)")
            params += [at, fid]
        sql = f"SELECT {_FILING_LIST_COLS} FROM filings" + (" WHERE " + " AND ".join(where) if where else "") + \
            " ORDER BY updated_at DESC, id DESC LIMIT ?"
        rows = [dict(r) for r in self._all(sql, (*params, limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1]["updated_at"], rows[-1]["id"]) if more and rows else None
        return FilingsPage(rows, nxt)

    def _search(self, text: str, state: str | None, limit: int) -> FilingsPage:
        if len(text) > 200:
            raise ValueError("search text longer than 200 characters")
        and_state = " AND f.state = ?" if state else ""
        extra: tuple[Any, ...] = (state,) if state else ()
        # a MessageId names exactly one message: ours (unique) or inbound ones (per sender)
        # (one query per direction: the MessageId indexes are partial, WHERE direction = 'out' / 'in')
        rows = []
        seen: set[int] = set()
        for direction in ("out", "in"):
            for r in self._all(f"SELECT {_cols('f')} FROM messages m JOIN filings f ON f.id = m.filing_id "
                               f"WHERE m.message_id = ? AND m.direction = '{direction}'{and_state} LIMIT ?",
                               (text, *extra, limit)):
                if r["id"] not in seen:
                    seen.add(r["id"])
                    rows.append(r)
        if rows:
            return FilingsPage([dict(r) for r in rows], None, "message-id")
        for column, how in (("mrn", "mrn"), ("lrn", "lrn")):
            if self._reader.backend == "postgresql":   # U+10FFFF is not "the highest" under every collation
                prefix, args = f"starts_with(f.{column}, ?)", (text,)
            else:
                prefix, args = f"f.{column} >= ? AND f.{column} < ?", (text, text + _TOP)
            rows = self._all(f"SELECT {_cols('f')} FROM filings f WHERE {prefix}"
                             f"{and_state} ORDER BY f.{column}, f.id LIMIT ?", (*args, *extra, limit))
            if rows:
                return FilingsPage([dict(r) for r in rows], None, how)
        return FilingsPage([], None, None)

    # -- one filing ------------------------------------------------------------------------------------------------------
    def lifecycle(self, filing_id: int) -> dict[str, Any]:
        return self._reader.lifecycle(filing_id)

    def evidence(self, filing_id: int) -> list[EvidenceItem]:
        return self._reader.evidence(filing_id)

    def timeline(self, filing_id: int) -> dict[str, Any]:
        """The lifecycle as one time-ordered list: every message, receipt or error received, request and event."""
        life = self.lifecycle(filing_id)
        entries: list[dict[str, Any]] = []
        for m in life["messages"]:
            inbound = m["direction"] == "in"
            entries.append({"at": m["created_at"], "kind": "message", "direction": m["direction"],
                            "action": m["action"] or m["kind"], "message_id": m["message_id"],
                            "what": ("received " if inbound else "queued ") + (m["action"] or m["kind"]),
                            "state": m["state"], "detail": m.get("business_outcome") or m.get("last_error") or ""})
            if m.get("receipt_bytes"):
                what = "receipt returned" if inbound else \
                    ("receipt received" if m.get("receipt_outcome") == "receipt-ok" else "signal received")
                entries.append({"at": m["updated_at"], "kind": "signal", "direction": "out" if inbound else "in",
                                "action": "Receipt" if "receipt" in what else "Error", "message_id": m["message_id"],
                                "what": what, "state": m.get("receipt_outcome") or "", "detail": ""})
        for r in life["requests"]:
            entries.append({"at": r["opened_at"], "kind": "request", "direction": "in", "action": r["kind"],
                            "message_id": r["request_message_id"], "what": f"{r['kind']} {r['state']}",
                            "state": r["state"], "detail": r.get("answer_message_id") or ""})
        for e in life["events"]:
            entries.append({"at": e["at"], "kind": "event", "direction": "", "action": e["event"],
                            "message_id": e.get("message_id") or "", "what": e["event"], "state": "",
                            "detail": ", ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()))[:300]})
        order = {"message": 0, "signal": 1, "request": 2, "event": 3}
        entries.sort(key=lambda x: (x["at"], order[x["kind"]]))
        return {"filing": life["filing"], "entries": entries, "messages": life["messages"],
                "requests": life["requests"]}


class _Exec:
    """``execute(sql, params)`` on the reader's current snapshot, whatever the backend."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._reader._x(sql, params)


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in _FILING_LIST_COLS.split(","))
