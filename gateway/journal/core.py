"""``JournalCore``: the journal's meaning, once, for every backend.

The state machine, the rules (what may change, what must be logged, what is idempotent) and the meaning of each
query live here. A backend (``SqliteJournal``, ``PostgresJournal``) supplies only what differs between databases:

- ``_x(sql, params)``: run one statement on the current transaction's connection (or, outside a transaction, on a
  connection of its own) and return a cursor-like object (``fetchone``, ``fetchall``, iteration, ``rowcount``).
  SQL here uses ``?`` placeholders and the dialect both databases share: ``INSERT .. ON CONFLICT DO NOTHING``,
  ``RETURNING id``, ``COALESCE``, ``CAST(? AS TEXT)`` where PostgreSQL cannot infer a parameter's type;
- ``transaction()`` (nested use is a savepoint) and ``_read_snapshot()`` (several reads that must agree);
- ``_SKIP_LOCKED`` (claims: "" on SQLite, whose writer lock already serialises claimers, and
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), ``_GREATEST`` (the two-argument maximum), ``_IntegrityError`` and
  ``_is_unique_violation``, and ``_lock_key`` (serialises writers of one logical key: a no-op on SQLite, an
  advisory transaction lock on PostgreSQL, where two instances may receive the same inbound message at once);
- opening, closing, ``singleton`` locks, ``queries()`` and the integrity check.

Why a base class rather than a SQL-builder: the methods are short transactions whose SQL is nearly identical on both
databases; keeping one copy of each method is what "the two backends differ only in dialect, locking and
connections" means in practice, and a reviewer reads one state machine, not two.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from gateway.journal.errors import (
    DuplicateFilingConflict, InvalidTransition, JournalError, LeaseLost, NotFound,
)
from gateway.journal.records import (
    CustomsRequest, EndpointState, Event, EvidenceItem, Filing, InboundMessage, InboundResult, Message, NewFiling,
    Orphan, OutboundMessage, PendingAck, PurgeReport,
)
from gateway.journal.states import (
    DIRECTIONS, FINAL_MESSAGE_STATES, FINAL_STATES, MESSAGE_KINDS, PRIORITIES, REQUEST_KINDS, REQUEST_STATES,
    FilingState, MessageState, can_transition, can_transition_message,
)
from gateway.journal.timeutil import iso, plus

_FILING_COLS = ("id", "filer_eori", "lrn", "sender_eori", "action", "payload_sha256", "state", "mrn", "priority",
                "endpoint", "last_error", "attempts", "source", "created_at", "updated_at")
_MSG_COLS = ("id", "message_id", "ref_to_message_id", "direction", "kind", "action", "filing_id", "sender_party",
             "priority", "endpoint", "state", "attempts", "next_attempt_at", "claimed_by", "claim_expires_at",
             "receipt_outcome", "business_outcome", "functional_reference", "last_error", "content_type",
             "created_at", "updated_at", "receipt_content_type", "retry_since", "ack_state")
_MSG_SELECT = ", ".join(f"m.{c}" for c in _MSG_COLS)
_MSG_SELECT_BYTES = _MSG_SELECT + ", m.sealed, m.receipt"
_FINAL_FILING_SQL = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
_FINAL_MSG_SQL = ", ".join(f"'{s}'" for s in sorted(FINAL_MESSAGE_STATES | {MessageState.ORPHAN}))
_CHUNK = 500
_OK_REFRESH_SECONDS = 2.0      # how stale endpoint_state.last_ok_at may be while an endpoint stays healthy


def _filing(row: Any | None) -> Filing | None:
    return None if row is None else Filing(**{c: row[c] for c in _FILING_COLS})


def _message(row: Any | None) -> Message | None:
    if row is None:
        return None
    keys = row.keys()
    extra = {k: row[k] for k in ("sealed", "receipt") if k in keys}
    return Message(**{c: row[c] for c in _MSG_COLS}, **extra)


def _dumps(detail: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(detail or {}), sort_keys=True, default=str, separators=(",", ":"))


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


class JournalCore(ABC):
    """Every ``Journal`` method, written once; subclasses provide the connection and the dialect (see module doc)."""

    backend = "?"
    readonly = False
    _SKIP_LOCKED = ""
    _FOR_UPDATE = ""               # row locks for read-check-write (PostgreSQL); SQLite's writer lock covers it
    _GREATEST = "MAX"
    _IntegrityError: type[BaseException] = Exception
    _lock: Any                     # guards a shared connection (SQLite); a no-op context on PostgreSQL
    commits = 0
    rollbacks = 0
    recovered_at_open = 0

    # -- what a backend provides ---------------------------------------------------------------------------------
    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        ...

    @abstractmethod
    def _read_snapshot(self) -> AbstractContextManager[None]:
        ...

    @abstractmethod
    def _x(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        ...

    @abstractmethod
    def _is_unique_violation(self, exc: BaseException) -> bool:
        ...

    def _lock_key(self, key: str) -> None:
        """Serialises transactions about one logical key (an inbound MessageId, a filing key) until commit."""

    # -- shared helpers ---------------------------------------------------------------------------------------------
    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        with self._lock:
            return self._x(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._lock:
            return list(self._x(sql, params).fetchall())

    def _event(self, event: str, now_iso: str, filing_id: int | None = None, message_id: str | None = None,
               detail: Mapping[str, Any] | None = None) -> None:
        self._x("INSERT INTO events (at, filing_id, message_id, event, detail) VALUES (?, ?, ?, ?, ?)",
                           (now_iso, filing_id, message_id, event, _dumps(detail)))

    # ------------------------------------------------------------------------------------------------------------
    # filings
    # ------------------------------------------------------------------------------------------------------------
    def insert_filing(self, new: NewFiling, *, now: datetime) -> tuple[Filing, bool]:
        """Journals a new filing in ``received``; idempotent on (filer, LRN, digest). See ``Journal``."""
        if new.priority not in PRIORITIES:
            raise ValueError(f"filing {new.lrn}: priority must be one of {PRIORITIES}, not {new.priority!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", new.payload_sha256):
            raise ValueError(f"filing {new.lrn}: payload_sha256 must be 64 lowercase hex digits")
        ts = iso(now)
        with self.transaction():
            # insert first and let UNIQUE (filer_eori, lrn) decide: two instances taking in the same ENS at the same
            # moment cannot both create it (a check-then-insert could); the loser reads the winner's row, which
            # PostgreSQL's ON CONFLICT has waited to see committed
            cur = self._x(
                "INSERT INTO filings (filer_eori, lrn, sender_eori, action, payload_sha256, state, priority, endpoint,"
                " source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (filer_eori, lrn) DO NOTHING RETURNING id",
                (new.filer_eori, new.lrn, new.sender_eori, new.action, new.payload_sha256, FilingState.RECEIVED,
                 new.priority, new.endpoint, new.source, ts, ts))
            created = cur.fetchone()
            if created is None:
                existing = _filing(self._x("SELECT * FROM filings WHERE filer_eori = ? AND lrn = ?",
                                           (new.filer_eori, new.lrn)).fetchone())
                assert existing is not None
                if existing.payload_sha256 == new.payload_sha256:
                    return existing, False
                raise DuplicateFilingConflict(new.filer_eori, new.lrn, existing.payload_sha256,
                                              new.payload_sha256, existing.state)
            fid = int(created[0])
            self._event("filing-received", ts, fid, None,
                        {"lrn": new.lrn, "filer": new.filer_eori, "action": new.action, "sha256": new.payload_sha256,
                         "priority": new.priority, "source": new.source})
            filing = _filing(self._x("SELECT * FROM filings WHERE id = ?", (fid,)).fetchone())
        assert filing is not None
        return filing, True

    def transition(self, filing_id: int, new_state: str, *, now: datetime, event: str | None = None,
                   detail: Mapping[str, Any] | None = None, mrn: str | None = None, error: str | None = None,
                   count_attempt: bool = False) -> Filing:
        """Moves a filing along the state machine; the check and the write are one transaction."""
        ts = iso(now)
        with self.transaction():
            row = self._x(f"SELECT * FROM filings WHERE id = ?{self._FOR_UPDATE}", (filing_id,)).fetchone()
            if row is None:
                raise NotFound(f"filing id {filing_id} does not exist")
            old = row["state"]
            if not can_transition(old, new_state):
                raise InvalidTransition(old, new_state, filing=f"{row['filer_eori']}/{row['lrn']}")
            self._x(
                "UPDATE filings SET state = ?, mrn = COALESCE(?, mrn), last_error = COALESCE(?, last_error), "
                "attempts = attempts + ?, updated_at = ? WHERE id = ?",
                (str(new_state), mrn, error, 1 if count_attempt else 0, ts, filing_id))
            d = {"from": old, "to": str(new_state), **(dict(detail) if detail else {})}
            if mrn:
                d["mrn"] = mrn
            if error:
                d["error"] = error
            self._event(event or f"state:{new_state}", ts, filing_id, None, d)
            filing = _filing(self._x("SELECT * FROM filings WHERE id = ?", (filing_id,)).fetchone())
        assert filing is not None
        return filing

    def update_filing(self, filing_id: int, *, now: datetime, mrn: str | None = None, endpoint: str | None = None,
                      error: str | None = None, event: str = "updated",
                      detail: Mapping[str, Any] | None = None) -> Filing:
        """Records an MRN, TI endpoint or error without changing the state."""
        ts = iso(now)
        with self.transaction():
            cur = self._x(
                "UPDATE filings SET mrn = COALESCE(?, mrn), endpoint = COALESCE(?, endpoint), "
                "last_error = COALESCE(?, last_error), updated_at = ? WHERE id = ?",
                (mrn, endpoint, error, ts, filing_id))
            if cur.rowcount == 0:
                raise NotFound(f"filing id {filing_id} does not exist")
            d = {k: v for k, v in (("mrn", mrn), ("endpoint", endpoint), ("error", error)) if v is not None}
            self._event(event, ts, filing_id, None, {**d, **(dict(detail) if detail else {})})
            filing = _filing(self._x("SELECT * FROM filings WHERE id = ?", (filing_id,)).fetchone())
        assert filing is not None
        return filing

    def get_filing(self, filing_id: int) -> Filing | None:
        return _filing(self._one("SELECT * FROM filings WHERE id = ?", (filing_id,)))

    def get_filing_by_key(self, filer_eori: str, lrn: str) -> Filing | None:
        return _filing(self._one("SELECT * FROM filings WHERE filer_eori = ? AND lrn = ?", (filer_eori, lrn)))

    def find_filings_by_lrn(self, lrn: str) -> list[Filing]:
        """An LRN is unique per filer only; correlation by LRN alone may find several (caller decides)."""
        return [f for f in map(_filing, self._all("SELECT * FROM filings WHERE lrn = ? ORDER BY id", (lrn,)))
                if f is not None]

    def get_filing_by_mrn(self, mrn: str) -> Filing | None:
        return _filing(self._one("SELECT * FROM filings WHERE mrn = ? ORDER BY id DESC LIMIT 1", (mrn,)))

    def get_filing_by_message_id(self, message_id: str) -> Filing | None:
        """The filing an (outbound, else inbound) eb:MessageId belongs to: correlation by RefToMessageId."""
        return _filing(self._one(
            "SELECT f.* FROM messages m JOIN filings f ON f.id = m.filing_id WHERE m.message_id = ? "
            "ORDER BY m.direction = 'out' DESC, m.id LIMIT 1", (message_id,)))

    def list_filings(self, *, state: str | Sequence[str] | None = None, since: datetime | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        where, params = [], []  # type: list[str], list[Any]
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params += states
        if since is not None:
            where.append("updated_at >= ?")
            params.append(iso(since))
        sql = "SELECT * FROM filings" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        params.append(int(limit))
        return [f.to_dict() for f in map(_filing, self._all(sql, params)) if f is not None]

    def count_by_state(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._all("SELECT state, COUNT(*) FROM filings GROUP BY state")}

    def lifecycle(self, filing_id: int) -> dict[str, Any]:
        """Everything ``ics2gw status`` shows about one filing, read in one snapshot."""
        with self._lock, self._read_snapshot():
            filing = self.get_filing(filing_id)
            if filing is None:
                raise NotFound(f"filing id {filing_id} does not exist")
            messages = []
            for r in self._all(f"SELECT {_MSG_SELECT}, LENGTH(m.sealed) AS slen, LENGTH(m.receipt) AS rlen "
                               "FROM messages m WHERE m.filing_id = ? ORDER BY m.id", (filing_id,)):
                m = _message(r)
                assert m is not None
                messages.append({**m.to_dict(), "sealed_bytes": r["slen"], "receipt_bytes": r["rlen"]})
            return {
                "filing": filing.to_dict(),
                "messages": messages,
                "requests": [r.to_dict() for r in self.list_requests(filing_id=filing_id, open_only=False)],
                "events": [e.to_dict() for e in self.events(filing_id=filing_id, limit=1_000_000)],
            }

    def evidence(self, filing_id: int) -> list[EvidenceItem]:
        """The non-repudiation evidence of one filing, in the order it happened, as files for a zip."""
        items: list[EvidenceItem] = []
        rows = self._all(f"SELECT {_MSG_SELECT_BYTES} FROM messages m WHERE m.filing_id = ? ORDER BY m.id",
                         (filing_id,))
        for n, row in enumerate(rows, 1):
            m = _message(row)
            assert m is not None
            safe = re.sub(r"[^A-Za-z0-9._@-]", "_", m.message_id)[:120]
            base = f"{n:03d}-{m.direction}-{m.action or m.kind}-{safe}"
            if m.sealed is not None:
                items.append(EvidenceItem(name=base + _ext(m.content_type),
                                          kind="sealed-message" if m.direction == "out" else "inbound-message",
                                          message_id=m.message_id, content_type=m.content_type, data=m.sealed))
            if m.receipt is not None:
                items.append(EvidenceItem(name=base + "-receipt" + _ext(m.receipt_content_type),
                                          kind="receipt" if m.direction == "out" else "returned-receipt",
                                          message_id=m.message_id, content_type=m.receipt_content_type,
                                          data=m.receipt))
        return items

    # ------------------------------------------------------------------------------------------------------------
    # outbound messages
    # ------------------------------------------------------------------------------------------------------------
    def enqueue_message(self, msg: OutboundMessage, *, now: datetime, not_before: datetime | None = None) -> Message:
        """Journals a sealed message for sending; the bytes stored here are the bytes every attempt sends."""
        if msg.kind not in MESSAGE_KINDS:
            raise ValueError(f"message {msg.message_id}: kind must be one of {MESSAGE_KINDS}")
        if msg.priority not in PRIORITIES:
            raise ValueError(f"message {msg.message_id}: priority must be one of {PRIORITIES}")
        ts = iso(now)
        with self.transaction():
            try:
                self._x(
                    "INSERT INTO messages (message_id, ref_to_message_id, direction, kind, action, filing_id, priority,"
                    " endpoint, state, next_attempt_at, content_type, sealed, functional_reference, created_at, "
                    "updated_at) VALUES (?, ?, 'out', ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (msg.message_id, msg.ref_to_message_id, msg.kind, msg.action, msg.filing_id, msg.priority,
                     msg.endpoint, iso(not_before or now), msg.content_type, msg.sealed, msg.functional_reference,
                     ts, ts))
            except self._IntegrityError as exc:
                if self._is_unique_violation(exc):
                    raise JournalError(f"outbound MessageId {msg.message_id} is already journaled; every message "
                                       "sealed gets a fresh MessageId") from None
                raise JournalError(f"message {msg.message_id}: filing id {msg.filing_id} does not exist") from None
            self._event("message-queued", ts, msg.filing_id, msg.message_id,
                        {"action": msg.action, "kind": msg.kind, "priority": msg.priority, "bytes": len(msg.sealed),
                         "endpoint": msg.endpoint})
            m = self._get_msg(msg.message_id, "out", None, False)
        assert m is not None
        return m

    def claim_due_messages(self, *, now: datetime, worker: str, limit: int = 1, lease_seconds: float = 300.0,
                           priorities: Sequence[str] | None = None, exclude_endpoints: Sequence[str] = (),
                           default_endpoint: str | None = None) -> list[Message]:
        """Leases due messages under the write lock (BEGIN IMMEDIATE), so claims never overlap.

        Lane order: priority A before B before C, then the longest-waiting first. A message in ``sending`` whose
        lease expired is taken over (its worker is presumed dead); the old worker's late report is refused with
        ``LeaseLost``. PostgreSQL would do the same with ``FOR UPDATE SKIP LOCKED``.
        """
        ts = iso(now)
        lanes = list(priorities) if priorities else list(PRIORITIES)
        # messages of a paused endpoint stay queued, untouched, until the operator resumes it (A001)
        skip = ""
        if exclude_endpoints:
            skip = f" AND COALESCE(endpoint, ?) NOT IN ({', '.join('?' * len(exclude_endpoints))})"
        with self.transaction():
            rows = self._x(
                f"SELECT id, message_id, state, filing_id, claimed_by FROM messages WHERE direction = 'out' AND "
                f"priority IN ({', '.join('?' * len(lanes))}) AND ((state = 'queued' AND next_attempt_at <= ?) OR "
                f"(state = 'sending' AND claim_expires_at <= ?)){skip} "
                f"ORDER BY priority, COALESCE(next_attempt_at, created_at), id LIMIT ?{self._SKIP_LOCKED}",
                (*lanes, ts, ts, *(((default_endpoint or ""), *exclude_endpoints) if skip else ()),
                 int(limit))).fetchall()
            until = iso(plus(now, lease_seconds))
            for r in rows:
                self._x(
                    "UPDATE messages SET state = 'sending', claimed_by = ?, claim_expires_at = ?, "
                    "attempts = attempts + 1, updated_at = ? WHERE id = ?", (worker, until, ts, r["id"]))
                detail = {"worker": worker, "lease_until": until}
                if r["state"] == "sending":
                    detail["taken_over_from"] = r["claimed_by"]
                self._event("message-claimed", ts, r["filing_id"], r["message_id"], detail)
            claimed = [self._get_msg(r["message_id"], "out", None, True) for r in rows]
        return [m for m in claimed if m is not None]

    def renew_claims(self, worker: str, message_ids: Sequence[str], *, now: datetime,
                     lease_seconds: float) -> list[str]:
        """Extends the leases ``worker`` still holds on ``message_ids``; returns those still held (a send that
        outlives its lease would otherwise be taken over and sent twice). No event: a lease extension is not a
        state change, and a renewal every few seconds would drown the event log."""
        if not message_ids:
            return []
        until = iso(plus(now, lease_seconds))
        held: list[str] = []
        with self.transaction():
            for chunk in (list(message_ids)[i:i + _CHUNK] for i in range(0, len(message_ids), _CHUNK)):
                marks = ", ".join("?" * len(chunk))
                held += [r[0] for r in self._x(
                    f"UPDATE messages SET claim_expires_at = ? WHERE direction = 'out' AND state = 'sending' AND "
                    f"claimed_by = ? AND message_id IN ({marks}) RETURNING message_id", (until, worker, *chunk))]
        return held

    def _out_for_update(self, message_id: str, worker: str | None, new_state: str) -> Any:
        row = self._x(f"SELECT * FROM messages WHERE direction = 'out' AND message_id = ?{self._FOR_UPDATE}",
                      (message_id,)).fetchone()
        if row is None:
            raise NotFound(f"outbound message {message_id} does not exist")
        # a worker reporting on a message it no longer holds (its lease expired; another instance took the message
        # over, and may already have finished it): its outcome is stale whatever the state now is
        if worker is not None and (row["state"] != "sending" or row["claimed_by"] != worker):
            raise LeaseLost(f"message {message_id}: worker {worker} reported an outcome but the message is now "
                            f"claimed by {row['claimed_by']} (lease expired); this outcome is ignored")
        if not can_transition_message(row["state"], new_state):
            raise InvalidTransition(row["state"], new_state, filing=f"message {message_id}")
        return row

    def record_receipt(self, message_id: str, *, worker: str | None, now: datetime, outcome: str,
                       receipt: bytes | None, content_type: str | None = None) -> Message:
        ts = iso(now)
        with self.transaction():
            row = self._out_for_update(message_id, worker, MessageState.RECEIPTED)
            self._x(
                "UPDATE messages SET state = 'receipted', receipt_outcome = ?, receipt = COALESCE(?, receipt), "
                "receipt_content_type = COALESCE(?, receipt_content_type), claimed_by = NULL, "
                "claim_expires_at = NULL, next_attempt_at = NULL, retry_since = NULL, updated_at = ? WHERE id = ?",
                (outcome, receipt, content_type, ts, row["id"]))
            self._event("message-receipted", ts, row["filing_id"], message_id,
                        {"outcome": outcome, "from": row["state"], "receipt_bytes": len(receipt or b"")})
            m = self._get_msg(message_id, "out", None, False)
        assert m is not None
        return m

    def schedule_retry(self, message_id: str, *, worker: str | None, now: datetime, next_attempt_at: datetime,
                       error: str, receipt: bytes | None = None, content_type: str | None = None,
                       event: str = "message-retry-scheduled", failed: bool = True) -> Message:
        """A transient failure: back to ``queued`` until ``next_attempt_at``, same bytes, same MessageId.

        ``retry_since`` (the start of the retry time budget) is set by the first failure of a run and kept by the
        next ones; ``failed=False`` (a pause: the message was refused for the sender, not for itself) leaves it."""
        ts = iso(now)
        with self.transaction():
            row = self._out_for_update(message_id, worker, MessageState.QUEUED)
            self._x(
                "UPDATE messages SET state = 'queued', next_attempt_at = ?, last_error = ?, claimed_by = NULL, "
                "claim_expires_at = NULL, receipt = COALESCE(?, receipt), "
                "receipt_content_type = COALESCE(?, receipt_content_type), "
                "retry_since = CASE WHEN ? = 1 THEN COALESCE(retry_since, ?) ELSE retry_since END, "
                "updated_at = ? WHERE id = ?",
                (iso(next_attempt_at), error, receipt, content_type, 1 if failed else 0, ts, ts, row["id"]))
            self._event(event, ts, row["filing_id"], message_id,
                        {"error": error, "next_attempt_at": iso(next_attempt_at), "attempts": row["attempts"]})
            m = self._get_msg(message_id, "out", None, False)
        assert m is not None
        return m

    def fail_message(self, message_id: str, *, worker: str | None, now: datetime, error: str, hold: bool = False,
                     receipt: bytes | None = None, content_type: str | None = None) -> Message:
        ts = iso(now)
        new_state = MessageState.HELD if hold else MessageState.FAILED
        with self.transaction():
            row = self._out_for_update(message_id, worker, new_state)
            self._x(
                "UPDATE messages SET state = ?, last_error = ?, claimed_by = NULL, claim_expires_at = NULL, "
                "next_attempt_at = NULL, receipt = COALESCE(?, receipt), "
                "receipt_content_type = COALESCE(?, receipt_content_type), receipt_outcome = COALESCE(?, "
                "receipt_outcome), updated_at = ? WHERE id = ?",
                (str(new_state), error, receipt, content_type, error if receipt is not None else None, ts, row["id"]))
            self._event(f"message-{new_state}", ts, row["filing_id"], message_id,
                        {"error": error, "attempts": row["attempts"]})
            m = self._get_msg(message_id, "out", None, False)
        assert m is not None
        return m

    def requeue_message(self, message_id: str, *, now: datetime, reason: str) -> Message:
        ts = iso(now)
        with self.transaction():
            row = self._out_for_update(message_id, None, MessageState.QUEUED)
            if row["state"] not in (MessageState.FAILED, MessageState.HELD):
                raise InvalidTransition(row["state"], "queued", filing=f"message {message_id} (operator resend)")
            # an operator resend starts a new retry budget
            self._x("UPDATE messages SET state = 'queued', next_attempt_at = ?, retry_since = NULL, "
                               "updated_at = ? WHERE id = ?", (ts, ts, row["id"]))
            self._event("message-requeued", ts, row["filing_id"], message_id, {"reason": reason})
            m = self._get_msg(message_id, "out", None, False)
        assert m is not None
        return m

    def cancel_message(self, message_id: str, *, now: datetime, reason: str) -> Message:
        """Operator abandon: a queued, failed or held message will never be sent (its bytes stay as evidence)."""
        ts = iso(now)
        with self.transaction():
            row = self._out_for_update(message_id, None, MessageState.CANCELLED)
            self._x("UPDATE messages SET state = 'cancelled', next_attempt_at = NULL, updated_at = ? "
                               "WHERE id = ?", (ts, row["id"]))
            self._event("message-cancelled", ts, row["filing_id"], message_id, {"reason": reason,
                                                                                "from": row["state"]})
            m = self._get_msg(message_id, "out", None, False)
        assert m is not None
        return m

    def set_business_outcome(self, message_id: str, outcome: str, *, now: datetime) -> Message:
        """Records which business answer (IE3R01, IE3N99 ...) answered this outbound message."""
        ts = iso(now)
        with self.transaction():
            row = self._x("SELECT id, filing_id FROM messages WHERE direction = 'out' AND message_id = ?",
                                     (message_id,)).fetchone()
            if row is None:
                raise NotFound(f"outbound message {message_id} does not exist")
            self._x("UPDATE messages SET business_outcome = ?, updated_at = ? WHERE id = ?",
                               (outcome, ts, row["id"]))
            self._event("message-answered", ts, row["filing_id"], message_id, {"outcome": outcome})
            m = self._get_msg(message_id, "out", None, False)
        assert m is not None
        return m

    def find_unanswered_request(self, action: str, reference: str) -> Message | None:
        """Our oldest ``action`` message (e.g. IE3Q05) about ``reference`` (MRN / LRN) with no business answer yet:
        what an answer without RefToMessageId (pulled from the STI, ICD 4.1.3.3) answers."""
        return _message(self._one(f"SELECT {_MSG_SELECT} FROM messages m WHERE m.direction = 'out' AND m.action = ? "
                                  "AND m.functional_reference = ? AND m.business_outcome IS NULL "
                                  "AND m.state != 'cancelled' ORDER BY m.id LIMIT 1", (action, reference)))

    def get_message(self, message_id: str, *, direction: str = "out", sender_party: str | None = None,
                    with_bytes: bool = False) -> Message | None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}")
        with self._lock:
            return self._get_msg(message_id, direction, sender_party, with_bytes)

    def _get_msg(self, message_id: str, direction: str, sender_party: str | None, with_bytes: bool) -> Message | None:
        cols = _MSG_SELECT_BYTES if with_bytes else _MSG_SELECT
        sql = f"SELECT {cols} FROM messages m WHERE m.message_id = ? AND m.direction = ?"
        params: list[Any] = [message_id, direction]
        if sender_party is not None:
            sql += " AND m.sender_party = ?"
            params.append(sender_party)
        return _message(self._x(sql + " ORDER BY m.id DESC LIMIT 1", params).fetchone())

    def list_messages(self, *, state: str | None = None, direction: str = "out", limit: int = 100) -> list[Message]:
        """For ``ics2gw queue``: messages of one direction, optionally in one state, oldest first."""
        sql = f"SELECT {_MSG_SELECT} FROM messages m WHERE m.direction = ?"
        params: list[Any] = [direction]
        if state is not None:
            sql += " AND m.state = ?"
            params.append(state)
        return [m for m in map(_message, self._all(sql + " ORDER BY m.id LIMIT ?", (*params, int(limit))))
                if m is not None]

    def recover_in_flight(self, *, now: datetime) -> int:
        """After a crash: ``sending`` -> ``queued`` (due now), and filings left in ``sending`` -> ``queued``.

        The sealed bytes are untouched, so the resend is byte-identical with the same MessageId and customs'
        duplicate elimination answers it with the original Receipt if the first attempt did arrive.
        """
        ts = iso(now)
        with self.transaction():
            rows = self._x("SELECT id, message_id, filing_id, claimed_by FROM messages "
                                      "WHERE direction = 'out' AND state = 'sending'").fetchall()
            for r in rows:
                self._x("UPDATE messages SET state = 'queued', next_attempt_at = ?, claimed_by = NULL, "
                                   "claim_expires_at = NULL, updated_at = ? WHERE id = ?", (ts, ts, r["id"]))
                self._event("message-recovered", ts, r["filing_id"], r["message_id"],
                            {"was_claimed_by": r["claimed_by"]})
            filings = self._x(
                "SELECT id FROM filings f WHERE state = 'sending' AND NOT EXISTS (SELECT 1 FROM messages m WHERE "
                "m.filing_id = f.id AND m.direction = 'out' AND m.state = 'sending')").fetchall()
            for f in filings:
                self._x("UPDATE filings SET state = 'queued', updated_at = ? WHERE id = ?", (ts, f["id"]))
                self._event("state:queued", ts, f["id"], None, {"from": "sending", "to": "queued",
                                                                 "reason": "recovered after restart"})
        return len(rows)

    # ------------------------------------------------------------------------------------------------------------
    # inbound
    # ------------------------------------------------------------------------------------------------------------
    def record_inbound(self, msg: InboundMessage, *, now: datetime, receipt: bytes,
                       receipt_content_type: str | None = None, ack_pending: bool = False) -> InboundResult:
        """Duplicate elimination and storage in one transaction: commit, then answer with the returned Receipt.

        ``ack_pending`` (a pulled message): the Receipt still has to be POSTed to the TI; it stays ``pending`` until
        ``set_ack_state`` records the TI's acknowledgement, and ``pending_acks`` replays it after a restart."""
        ts = iso(now)
        with self.transaction():
            # two instances receiving the same message at once: the second waits here, then finds the first
            self._lock_key(f"inbound\x00{msg.sender_party}\x00{msg.message_id}")
            dup = self._dedup(msg.sender_party, msg.message_id)
            if dup is not None:
                self._event("inbound-duplicate", ts, dup.message.filing_id, msg.message_id,
                            {"sender": msg.sender_party})
                return InboundResult(message=dup.message, receipt=dup.receipt,
                                     receipt_content_type=dup.receipt_content_type, duplicate=True)
            cur = self._x(
                "INSERT INTO messages (message_id, ref_to_message_id, direction, kind, action, sender_party, state, "
                "content_type, sealed, receipt, receipt_content_type, receipt_outcome, functional_reference, "
                "ack_state, created_at, updated_at) VALUES (?, ?, 'in', ?, ?, ?, 'received', ?, ?, ?, ?, "
                "'receipt-returned', ?, ?, ?, ?) RETURNING id",
                (msg.message_id, msg.ref_to_message_id, msg.kind, msg.action, msg.sender_party, msg.content_type,
                 msg.raw, receipt, receipt_content_type, msg.functional_reference,
                 "pending" if ack_pending else None, ts, ts))
            self._x("INSERT INTO inbound_dedup (sender_party, message_id, message_row, receipt, "
                               "receipt_content_type, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                               (msg.sender_party, msg.message_id, cur.fetchone()[0], receipt, receipt_content_type, ts))
            self._event("inbound-received", ts, None, msg.message_id,
                        {"sender": msg.sender_party, "action": msg.action, "ref_to": msg.ref_to_message_id,
                         "reference": msg.functional_reference, "bytes": len(msg.raw)})
            m = self._get_msg(msg.message_id, "in", msg.sender_party, False)
        assert m is not None
        return InboundResult(message=m, receipt=receipt, receipt_content_type=receipt_content_type, duplicate=False)

    def _dedup(self, sender_party: str, message_id: str) -> InboundResult | None:
        row = self._x(f"SELECT d.receipt AS dreceipt, d.receipt_content_type AS dct, {_MSG_SELECT} "
                                 "FROM inbound_dedup d JOIN messages m ON m.id = d.message_row "
                                 "WHERE d.sender_party = ? AND d.message_id = ?", (sender_party, message_id)).fetchone()
        if row is None:
            return None
        m = _message(row)
        assert m is not None
        return InboundResult(message=m, receipt=row["dreceipt"], receipt_content_type=row["dct"], duplicate=True)

    def record_route_ref(self, route: str, ref: str, *, message_id: str, filing_id: int | None,
                         now: datetime) -> bool:
        """Keeps the reference another route returned for one of our messages; False if it was already kept
        for the same message, ``JournalError`` if it names another message."""
        with self.transaction():
            row = self._x("SELECT message_id FROM route_refs WHERE route = ? AND ref = ?",
                                     (route, ref)).fetchone()
            if row is not None:
                if row[0] != message_id:
                    raise JournalError(f"{route} reference {ref} already names message {row[0]}, "
                                                  f"not {message_id}")
                return False
            self._x("INSERT INTO route_refs (route, ref, message_id, filing_id, created_at) "
                               "VALUES (?, ?, ?, ?, ?)", (route, ref, message_id, filing_id, iso(now)))
            return True

    def find_route_ref(self, route: str, ref: str) -> tuple[str, int | None] | None:
        with self._lock:
            row = self._x("SELECT message_id, filing_id FROM route_refs WHERE route = ? AND ref = ?",
                                     (route, ref)).fetchone()
        return (row[0], row[1]) if row is not None else None

    def set_ack_state(self, sender_party: str | None, message_id: str, state: str, *, now: datetime,
                      detail: Mapping[str, Any] | None = None) -> bool:
        """Records what became of the Receipt of a pulled message (acknowledged / abandoned / pending again);
        ``sender_party`` None: whoever sent it (pulled messages come from the one TI pulled). False when no pulled
        message has that MessageId in another state (an error signal we sent, a purged message, no change)."""
        if state not in ("pending", "acknowledged", "abandoned"):
            raise ValueError(f"ack state must be pending, acknowledged or abandoned, not {state!r}")
        ts = iso(now)
        with self.transaction():
            cur = self._x("UPDATE messages SET ack_state = ?, updated_at = ? WHERE direction = 'in' AND "
                                     "message_id = ? AND (CAST(? AS TEXT) IS NULL OR sender_party = ?) AND ack_state IS NOT NULL "
                                     "AND ack_state != ?", (state, ts, message_id, sender_party, sender_party, state))
            if cur.rowcount:
                self._event(f"ack-{state}", ts, None, message_id, {"sender": sender_party, **(detail or {})})
            return bool(cur.rowcount)

    def pending_acks(self, *, limit: int = 10000) -> list[PendingAck]:
        """Receipts of pulled messages the TI has not acknowledged yet, oldest first (replayed after a restart)."""
        rows = self._all("SELECT sender_party, message_id, receipt, receipt_content_type FROM messages "
                         "WHERE ack_state = 'pending' ORDER BY id LIMIT ?", (int(limit),))
        return [PendingAck(r["sender_party"], r["message_id"], r["receipt"], r["receipt_content_type"])
                for r in rows]

    def lookup_inbound(self, sender_party: str, message_id: str) -> InboundResult | None:
        with self._lock:
            return self._dedup(sender_party, message_id)

    def _inbound_to_process(self, message_id: str, sender_party: str) -> Any:
        """The inbound message's row, inside the caller's transaction, if it may become ``processed``."""
        row = self._x("SELECT * FROM messages WHERE direction = 'in' AND message_id = ? AND "
                      f"sender_party = ?{self._FOR_UPDATE}", (message_id, sender_party)).fetchone()
        if row is None:
            raise NotFound(f"inbound message {message_id} from {sender_party} does not exist")
        if not can_transition_message(row["state"], MessageState.PROCESSED):
            raise InvalidTransition(row["state"], "processed", filing=f"inbound message {message_id}")
        return row

    def attach_inbound(self, message_id: str, sender_party: str, filing_id: int, *, now: datetime,
                       outcome: str | None = None) -> Message:
        """Correlated: the inbound message belongs to ``filing_id``; ``outcome`` (IE3R01 ...) is also recorded on
        the outbound message it references, if any."""
        ts = iso(now)
        with self.transaction():
            row = self._inbound_to_process(message_id, sender_party)
            try:
                self._x("UPDATE messages SET filing_id = ?, state = 'processed', business_outcome = "
                                   "COALESCE(?, business_outcome), updated_at = ? WHERE id = ?",
                                   (filing_id, outcome, ts, row["id"]))
            except self._IntegrityError:
                raise NotFound(f"filing id {filing_id} does not exist") from None
            if row["state"] == MessageState.ORPHAN:
                self._x("UPDATE orphans SET resolved_at = ?, resolution = COALESCE(resolution, ?) "
                                   "WHERE message_row = ?", (ts, f"attached to filing {filing_id}", row["id"]))
            if outcome and row["ref_to_message_id"]:
                self._x("UPDATE messages SET business_outcome = ?, updated_at = ? WHERE direction = 'out' "
                                   "AND message_id = ?", (outcome, ts, row["ref_to_message_id"]))
            self._event("inbound-correlated", ts, filing_id, message_id,
                        {"outcome": outcome, "ref_to": row["ref_to_message_id"], "action": row["action"]})
            m = self._get_msg(message_id, "in", sender_party, False)
        assert m is not None
        return m

    def settle_inbound_without_filing(self, message_id: str, sender_party: str, *, now: datetime, outcome: str,
                                      answers: str | None = None) -> Message:
        """Processed, but by no filing: the answer (IE3R08, IE3N99) to a consultation IE3Q05 we sent for an ENS the
        journal does not know. ``outcome`` is also recorded on ``answers``, our outbound message it answers."""
        ts = iso(now)
        with self.transaction():
            row = self._inbound_to_process(message_id, sender_party)
            self._x("UPDATE messages SET state = 'processed', business_outcome = ?, updated_at = ? "
                               "WHERE id = ?", (outcome, ts, row["id"]))
            if answers:
                self._x("UPDATE messages SET business_outcome = ?, updated_at = ? WHERE direction = 'out' "
                                   "AND message_id = ?", (outcome, ts, answers))
            self._event("inbound-answered-request", ts, None, message_id,
                        {"outcome": outcome, "answers": answers, "action": row["action"]})
            m = self._get_msg(message_id, "in", sender_party, False)
        assert m is not None
        return m

    def record_orphan(self, message_id: str, sender_party: str, *, now: datetime, reason: str) -> Orphan:
        """An inbound message that matches no filing: kept (with its bytes) and listable for the operator."""
        ts = iso(now)
        with self.transaction():
            row = self._x("SELECT id, state FROM messages WHERE direction = 'in' AND message_id = ? AND "
                          f"sender_party = ?{self._FOR_UPDATE}", (message_id, sender_party)).fetchone()
            if row is None:
                raise NotFound(f"inbound message {message_id} from {sender_party} does not exist")
            if not can_transition_message(row["state"], MessageState.ORPHAN):
                raise InvalidTransition(row["state"], "orphan", filing=f"inbound message {message_id}")
            self._x("UPDATE messages SET state = 'orphan', updated_at = ? WHERE id = ?", (ts, row["id"]))
            cur = self._x("INSERT INTO orphans (message_row, reason, created_at) VALUES (?, ?, ?) RETURNING id",
                                     (row["id"], reason, ts))
            self._event("inbound-orphan", ts, None, message_id, {"sender": sender_party, "reason": reason})
            orphan = self._orphan(int(cur.fetchone()[0]))
        return orphan

    def _orphan(self, orphan_id: int) -> Orphan:
        row = self._x(f"SELECT o.id AS oid, o.reason, o.created_at AS ocreated, o.resolved_at, "
                                 f"o.resolution, {_MSG_SELECT} FROM orphans o JOIN messages m ON m.id = o.message_row "
                                 f"WHERE o.id = ?", (orphan_id,)).fetchone()
        if row is None:
            raise NotFound(f"orphan {orphan_id} does not exist")
        m = _message(row)
        assert m is not None
        return Orphan(id=row["oid"], message=m, reason=row["reason"], created_at=row["ocreated"],
                      resolved_at=row["resolved_at"], resolution=row["resolution"])

    def list_orphans(self, *, include_resolved: bool = False, limit: int = 100) -> list[Orphan]:
        with self._lock:
            ids = self._x("SELECT id FROM orphans" + ("" if include_resolved else
                                     " WHERE resolved_at IS NULL") + " ORDER BY id LIMIT ?", (int(limit),)).fetchall()
            return [self._orphan(r[0]) for r in ids]

    def resolve_orphan(self, orphan_id: int, *, now: datetime, resolution: str,
                       filing_id: int | None = None) -> Orphan:
        ts = iso(now)
        with self.transaction():
            orphan = self._orphan(orphan_id)
            self._x("UPDATE orphans SET resolved_at = ?, resolution = ? WHERE id = ?",
                               (ts, resolution, orphan_id))
            if filing_id is not None:
                assert orphan.message.sender_party is not None
                self.attach_inbound(orphan.message.message_id, orphan.message.sender_party, filing_id, now=now)
            self._event("orphan-resolved", ts, filing_id, orphan.message.message_id, {"resolution": resolution})
            return self._orphan(orphan_id)

    # ------------------------------------------------------------------------------------------------------------
    # customs requests
    # ------------------------------------------------------------------------------------------------------------
    def open_request(self, filing_id: int, kind: str, request_message_id: str, *, now: datetime) -> CustomsRequest:
        """Customs asked something (IE3Q01/Q02/Q03); it stays open until answered or closed."""
        if kind not in REQUEST_KINDS:
            raise ValueError(f"request kind must be one of {REQUEST_KINDS}, not {kind!r}")
        ts = iso(now)
        with self.transaction():
            try:
                cur = self._x(
                    "INSERT INTO customs_requests (filing_id, kind, request_message_id, state, opened_at, updated_at)"
                    " VALUES (?, ?, ?, 'open', ?, ?) RETURNING id", (filing_id, kind, request_message_id, ts, ts))
            except self._IntegrityError:
                raise NotFound(f"filing id {filing_id} does not exist") from None
            self._event("request-opened", ts, filing_id, request_message_id, {"kind": kind})
            return self._request(int(cur.fetchone()[0]))

    def close_request(self, request_id: int, *, now: datetime, state: str = "answered",
                      answer_message_id: str | None = None) -> CustomsRequest:
        if state not in REQUEST_STATES or state == "open":
            raise ValueError(f"a request is closed as 'answered' or 'closed', not {state!r}")
        ts = iso(now)
        with self.transaction():
            req = self._request(request_id)
            if req.state != "open":
                raise InvalidTransition(req.state, state, filing=f"request {request_id} ({req.kind})")
            self._x("UPDATE customs_requests SET state = ?, answer_message_id = ?, updated_at = ? "
                               "WHERE id = ?", (state, answer_message_id, ts, request_id))
            self._event(f"request-{state}", ts, req.filing_id, answer_message_id or req.request_message_id,
                        {"kind": req.kind, "request": req.request_message_id})
            return self._request(request_id)

    def reopen_request(self, request_id: int, *, now: datetime, reason: str) -> CustomsRequest:
        """Customs rejected our answer (IE3N99 / IE3N01 on the IE3R02 / IE3R03): the request is open again and its
        timer restarts from now."""
        ts = iso(now)
        with self.transaction():
            req = self._request(request_id)
            if req.state == "open":
                return req
            self._x("UPDATE customs_requests SET state = 'open', answer_message_id = NULL, "
                               "opened_at = ?, updated_at = ? WHERE id = ?", (ts, ts, request_id))
            self._event("request-reopened", ts, req.filing_id, req.answer_message_id or req.request_message_id,
                        {"kind": req.kind, "request": req.request_message_id, "rejected_answer": req.answer_message_id,
                         "reason": reason})
            return self._request(request_id)

    def _request(self, request_id: int) -> CustomsRequest:
        row = self._x("SELECT * FROM customs_requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise NotFound(f"customs request {request_id} does not exist")
        return CustomsRequest(**{k: row[k] for k in row.keys()})

    def list_requests(self, *, filing_id: int | None = None, open_only: bool = True) -> list[CustomsRequest]:
        where, params = [], []  # type: list[str], list[Any]
        if filing_id is not None:
            where.append("filing_id = ?")
            params.append(filing_id)
        if open_only:
            where.append("state = 'open'")
        sql = "SELECT * FROM customs_requests" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [CustomsRequest(**{k: r[k] for k in r.keys()}) for r in self._all(sql, params)]

    # ------------------------------------------------------------------------------------------------------------
    # endpoints: the durable pause (EBMS:0004/A001) and the health of each link
    # ------------------------------------------------------------------------------------------------------------
    def _endpoint_row(self, endpoint: str, party_id: str, ts: str) -> None:
        self._x("INSERT INTO endpoint_state (endpoint, party_id, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                           (endpoint, party_id, ts))

    def endpoint_state(self, endpoint: str, party_id: str) -> EndpointState | None:
        row = self._one("SELECT * FROM endpoint_state WHERE endpoint = ? AND party_id = ?", (endpoint, party_id))
        return None if row is None else EndpointState(**{k: row[k] for k in row.keys()})

    def list_endpoint_states(self) -> list[EndpointState]:
        return [EndpointState(**{k: r[k] for k in r.keys()})
                for r in self._all("SELECT * FROM endpoint_state ORDER BY endpoint, party_id")]

    def queued_by_endpoint(self) -> dict[str | None, int]:
        """Outbound messages waiting (queued) per endpoint: what a paused endpoint holds back."""
        return {r[0]: r[1] for r in self._all("SELECT endpoint, COUNT(*) FROM messages WHERE direction = 'out' AND "
                                              "state = 'queued' GROUP BY endpoint")}

    def paused_endpoints(self, party_id: str) -> list[str]:
        """Endpoints on which ``party_id`` must not send (claims skip their messages)."""
        return [r[0] for r in self._all("SELECT endpoint FROM endpoint_state WHERE party_id = ? AND paused_at IS NOT "
                                        "NULL ORDER BY endpoint", (party_id,))]

    def pause_endpoint(self, endpoint: str, party_id: str, *, now: datetime, reason: str,
                       message_id: str | None = None) -> tuple[EndpointState, bool]:
        """Stops sending as ``party_id`` to ``endpoint`` until ``resume_endpoint``; (state, newly paused)."""
        ts = iso(now)
        with self.transaction():
            self._endpoint_row(endpoint, party_id, ts)
            cur = self._x("UPDATE endpoint_state SET paused_at = ?, pause_reason = ?, pause_message_id = ?,"
                                     " resumed_at = NULL, resumed_by = NULL, updated_at = ? WHERE endpoint = ? AND "
                                     "party_id = ? AND paused_at IS NULL",
                                     (ts, reason, message_id, ts, endpoint, party_id))
            new = bool(cur.rowcount)
            if new:
                self._event("endpoint-paused", ts, None, message_id,
                            {"endpoint": endpoint, "party_id": party_id, "reason": reason})
            state = self.endpoint_state(endpoint, party_id)
        assert state is not None
        return state, new

    def resume_endpoint(self, endpoint: str, party_id: str | None = None, *, now: datetime,
                        by: str = "operator") -> list[EndpointState]:
        """Lifts the pause of ``endpoint`` (for one PartyId, or all) and makes its queued messages due now."""
        ts = iso(now)
        with self.transaction():
            where, params = "endpoint = ? AND paused_at IS NOT NULL", [endpoint]
            if party_id is not None:
                where += " AND party_id = ?"
                params.append(party_id)
            rows = self._x(f"SELECT party_id FROM endpoint_state WHERE {where}", params).fetchall()
            self._x(f"UPDATE endpoint_state SET paused_at = NULL, resumed_at = ?, resumed_by = ?, "
                               f"failing_since = NULL, outage_alerted_at = NULL, updated_at = ? WHERE {where}",
                               (ts, by, ts, *params))
            for r in rows:
                self._event("endpoint-resumed", ts, None, None,
                            {"endpoint": endpoint, "party_id": r["party_id"], "by": by})
            if rows:
                # what waited behind the pause was left due: it goes out at the next claim, in its lanes. The time
                # it waited is not held against its retry budget (a message without an endpoint went to the
                # default one, which may be this one).
                self._x("UPDATE messages SET retry_since = NULL WHERE direction = 'out' AND "
                                   "state = 'queued' AND (endpoint = ? OR endpoint IS NULL)", (endpoint,))
            return [s for s in (self.endpoint_state(endpoint, r["party_id"]) for r in rows) if s is not None]

    def note_endpoint_ok(self, endpoint: str, party_id: str, *, now: datetime) -> EndpointState:
        """An exchange with ``endpoint`` succeeded; returns the state *before* (to tell a recovery)."""
        ts = iso(now)
        current = self.endpoint_state(endpoint, party_id)
        if (current is not None and current.failing_since is None and current.outage_alerted_at is None
                and current.last_ok_at is not None and current.last_ok_at >= iso(plus(now, -_OK_REFRESH_SECONDS))):
            # healthy and noted a moment ago: no write. Every successful send would otherwise update this one row,
            # and with several instances on PostgreSQL they queued on its row lock until each batch committed
            return current
        with self.transaction():
            self._endpoint_row(endpoint, party_id, ts)
            before = self.endpoint_state(endpoint, party_id)
            self._x("UPDATE endpoint_state SET last_ok_at = ?, failing_since = NULL, outage_alerted_at = "
                               "NULL, updated_at = ? WHERE endpoint = ? AND party_id = ?",
                               (ts, ts, endpoint, party_id))
            if before is not None and before.failing_since is not None:
                self._event("endpoint-recovered", ts, None, None,
                            {"endpoint": endpoint, "party_id": party_id, "failing_since": before.failing_since})
        assert before is not None
        return before

    def note_endpoint_failure(self, endpoint: str, party_id: str, *, now: datetime) -> EndpointState:
        """A transient failure on ``endpoint``; returns the state after (``failing_since`` set by the first)."""
        ts = iso(now)
        with self.transaction():
            self._endpoint_row(endpoint, party_id, ts)
            self._x("UPDATE endpoint_state SET failing_since = COALESCE(failing_since, ?), updated_at = ? "
                               "WHERE endpoint = ? AND party_id = ?", (ts, ts, endpoint, party_id))
            state = self.endpoint_state(endpoint, party_id)
        assert state is not None
        return state

    def mark_outage_alerted(self, endpoint: str, party_id: str, *, now: datetime) -> None:
        ts = iso(now)
        with self.transaction():
            self._x("UPDATE endpoint_state SET outage_alerted_at = ?, updated_at = ? WHERE endpoint = ? "
                               "AND party_id = ?", (ts, ts, endpoint, party_id))

    # ------------------------------------------------------------------------------------------------------------
    # events and retention
    # ------------------------------------------------------------------------------------------------------------
    def append_event(self, event: str, *, now: datetime, filing_id: int | None = None,
                     message_id: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        with self.transaction():
            self._event(event, iso(now), filing_id, message_id, detail)

    def events(self, *, filing_id: int | None = None, message_id: str | None = None,
               limit: int = 1000) -> list[Event]:
        where, params = [], []  # type: list[str], list[Any]
        if filing_id is not None:
            where.append("filing_id = ?")
            params.append(filing_id)
        if message_id is not None:
            where.append("message_id = ?")
            params.append(message_id)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ?"
        return [Event(id=r["id"], at=r["at"], filing_id=r["filing_id"], message_id=r["message_id"],
                      event=r["event"], detail=json.loads(r["detail"])) for r in self._all(sql, (*params, int(limit)))]

    # -- the event outbox (a durable cursor per sink over the append-only event log) ---------------------------
    def events_after(self, after_id: int, *, limit: int = 500) -> list[Event]:
        """Events with an id greater than ``after_id``, oldest first (the commit order)."""
        return [Event(id=r["id"], at=r["at"], filing_id=r["filing_id"], message_id=r["message_id"],
                      event=r["event"], detail=json.loads(r["detail"]))
                for r in self._all("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (int(after_id), int(limit)))]

    def last_event_id(self) -> int:
        rows = self._all("SELECT COALESCE(MAX(id), 0) FROM events")
        return int(rows[0][0])

    def outbox_cursor(self, name: str) -> int | None:
        """The last event id the sink ``name`` has delivered (None: the sink has never run)."""
        rows = self._all("SELECT last_event_id FROM outbox_cursors WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def advance_outbox_cursor(self, name: str, event_id: int, *, now: datetime) -> None:
        """Moves the cursor forward (never back): everything up to ``event_id`` is delivered."""
        with self.transaction():
            self._x(
                "INSERT INTO outbox_cursors (name, last_event_id, updated_at) VALUES (?, ?, ?) "
                f"ON CONFLICT (name) DO UPDATE SET last_event_id = {self._GREATEST}(outbox_cursors.last_event_id, "
                "excluded.last_event_id), updated_at = excluded.updated_at", (name, int(event_id), iso(now)))

    def init_outbox_cursor(self, name: str, *, now: datetime) -> int:
        """Creates the sink's cursor at the newest event if it has none (first start: no history replayed); the
        first instance to do so wins, so no instance moves an existing cursor past events not yet delivered.
        Not inside a transaction: PostgreSQL's event horizon waits for open transactions that wrote events."""
        last = self.last_event_id()
        with self.transaction():
            self._x("INSERT INTO outbox_cursors (name, last_event_id, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING", (name, int(last), iso(now)))
            row = self._x("SELECT last_event_id FROM outbox_cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def record_intake_ref(self, filing_id: int, *, channel: str, message_id: str | None,
                          correlation_id: str | None, now: datetime) -> None:
        """What the intake channel called the message that created the filing; the first one is kept."""
        with self.transaction():
            self._x("INSERT INTO intake_refs (filing_id, channel, message_id, correlation_id, "
                               "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (filing_id, channel, message_id, correlation_id, iso(now)))

    def bump_intake_attempt(self, key: str, *, now: datetime) -> int:
        """Counts one more delivery of a broker message that came back without an answer (the gateway stopped
        while taking it in); returns the count. Bounds a message that kills the process each time it is read."""
        with self.transaction():
            self._x("INSERT INTO intake_attempts (key, attempts, updated_at) VALUES (?, 1, ?) "
                               "ON CONFLICT (key) DO UPDATE SET attempts = intake_attempts.attempts + 1, "
                    "updated_at = excluded.updated_at",
                               (key, iso(now)))
            row = self._x("SELECT attempts FROM intake_attempts WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def intake_ref(self, filing_id: int) -> dict[str, Any] | None:
        rows = self._all("SELECT channel, message_id, correlation_id FROM intake_refs WHERE filing_id = ?",
                         (filing_id,))
        return {"channel": rows[0][0], "message_id": rows[0][1], "correlation_id": rows[0][2]} if rows else None

    def purge(self, older_than: datetime, *, now: datetime) -> PurgeReport:
        """Retention: deletes final filings not updated since ``older_than`` with all their evidence, and
        filing-less messages (pings, orphans) older than that. Non-final filings are never touched (the guard
        triggers of the schema refuse it even if this query were wrong)."""
        cutoff = iso(older_than)
        with self.transaction():
            # first a marker that is never purged (no filing, no message): event ids never go back below it, so
            # an outbox cursor never skips an id SQLite would otherwise hand out again after the newest rows went
            self._event("journal-purge", iso(now), None, None, {"older_than": cutoff})
            # a filing whose events an outbox sink has not delivered yet stays (broker down for days)
            fids = [r[0] for r in self._x(
                f"SELECT id FROM filings f WHERE state IN ({_FINAL_FILING_SQL}) AND updated_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM events e WHERE e.filing_id = f.id AND e.id > "
                "(SELECT COALESCE(MIN(last_event_id), 9223372036854775807) FROM outbox_cursors))", (cutoff,))]
            msg_rows: list[int] = []
            for chunk in _chunks(fids):
                marks = ", ".join("?" * len(chunk))
                msg_rows += [r[0] for r in self._x(
                    f"SELECT id FROM messages WHERE filing_id IN ({marks})", chunk)]
            # messages without a filing (pings, pull requests, orphans) that are done and old
            loose = [r[0] for r in self._x(
                f"SELECT id FROM messages WHERE filing_id IS NULL AND state IN ({_FINAL_MSG_SQL}) AND updated_at < ?",
                (cutoff,))]
            all_rows = msg_rows + loose
            orphans = dedup = messages = events = 0
            loose_ids: list[str] = []  # MessageIds whose filing-less events (inbound-received ...) also go
            for chunk in _chunks(all_rows):
                marks = ", ".join("?" * len(chunk))
                loose_ids += [r[0] for r in self._x(
                    f"SELECT message_id FROM messages WHERE id IN ({marks})", chunk)]
            for chunk in _chunks(all_rows):
                marks = ", ".join("?" * len(chunk))
                orphans += self._x(f"DELETE FROM orphans WHERE message_row IN ({marks})", chunk).rowcount
                dedup += self._x(f"DELETE FROM inbound_dedup WHERE message_row IN ({marks})",
                                            chunk).rowcount
            for chunk in _chunks(fids):
                marks = ", ".join("?" * len(chunk))
                self._x(f"DELETE FROM customs_requests WHERE filing_id IN ({marks})", chunk)
                self._x(f"DELETE FROM intake_refs WHERE filing_id IN ({marks})", chunk)
                self._x(f"DELETE FROM route_refs WHERE filing_id IN ({marks})", chunk)
            for chunk in _chunks(all_rows):
                marks = ", ".join("?" * len(chunk))
                messages += self._x(f"DELETE FROM messages WHERE id IN ({marks})", chunk).rowcount
            for chunk in _chunks(fids):
                marks = ", ".join("?" * len(chunk))
                self._x(f"DELETE FROM filings WHERE id IN ({marks})", chunk)
                events += self._x(f"DELETE FROM events WHERE filing_id IN ({marks})", chunk).rowcount
            for i in range(0, len(loose_ids), _CHUNK):
                chunk_ids = loose_ids[i:i + _CHUNK]
                marks = ", ".join("?" * len(chunk_ids))
                events += self._x(f"DELETE FROM events WHERE filing_id IS NULL AND message_id IN ({marks})"
                                             f" AND at < ?", (*chunk_ids, cutoff)).rowcount
            events += self._x("DELETE FROM events WHERE filing_id IS NULL AND message_id IS NULL AND "
                                         "at < ?", (cutoff,)).rowcount
            report = PurgeReport(filings=len(fids), messages=messages, events=events, orphans=orphans,
                                 dedup_entries=dedup)
            self._event("purged", iso(now), None, None, {"older_than": cutoff, **report.__dict__})
        return report


def _ext(content_type: str | None) -> str:
    ct = (content_type or "").lower()
    if ct.startswith("multipart/"):
        return ".mime"
    if "xml" in ct:
        return ".xml"
    return ".bin"
