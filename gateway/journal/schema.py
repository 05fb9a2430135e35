"""The SQLite schema as an ordered list of migrations, applied at open inside one write transaction.

Why migrations in code (and ``PRAGMA user_version``): a journal file outlives the binary that created it; each
release appends migrations and never edits old ones, so any older file is brought forward step by step and a
newer file is refused (``SchemaTooNew``) instead of being misread. ``schema_migrations`` keeps when each step ran.

The guard triggers make two promises hold even if a query elsewhere has a bug: the event log is append-only
(events are never updated, and deleted only together with their purged filing), and evidence of a filing that is
not final can never be deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from gateway.journal.errors import SchemaTooNew
from gateway.journal.states import FINAL_STATES

_FINAL_SQL = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        # executescript would COMMIT first; run statement by statement inside the caller's transaction instead.
        for stmt in _split(sql):
            conn.execute(stmt)
    return run


def _split(sql: str) -> list[str]:
    """Splits a script on top-level semicolons (trigger bodies contain ``;`` between BEGIN and END)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


V1 = f"""
CREATE TABLE filings (
    id              INTEGER PRIMARY KEY,
    filer_eori      TEXT NOT NULL,
    lrn             TEXT NOT NULL,
    sender_eori     TEXT NOT NULL,
    action          TEXT NOT NULL,
    payload_sha256  TEXT NOT NULL,
    state           TEXT NOT NULL,
    mrn             TEXT,
    priority        TEXT NOT NULL CHECK (priority IN ('A', 'B', 'C')),
    endpoint        TEXT,
    last_error      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    source          TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (filer_eori, lrn)
);
CREATE INDEX filings_lrn ON filings (lrn);
CREATE INDEX filings_mrn ON filings (mrn) WHERE mrn IS NOT NULL;
CREATE INDEX filings_state_updated ON filings (state, updated_at);
CREATE INDEX filings_updated ON filings (updated_at);

CREATE TABLE messages (
    id                   INTEGER PRIMARY KEY,
    message_id           TEXT NOT NULL,
    ref_to_message_id    TEXT,
    direction            TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind                 TEXT NOT NULL CHECK (kind IN ('user-message', 'receipt', 'error', 'pull-request', 'ping')),
    action               TEXT,
    filing_id            INTEGER REFERENCES filings (id),
    sender_party         TEXT,
    priority             TEXT CHECK (priority IS NULL OR priority IN ('A', 'B', 'C')),
    endpoint             TEXT,
    state                TEXT NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT,
    claimed_by           TEXT,
    claim_expires_at     TEXT,
    content_type         TEXT,
    sealed               BLOB,
    receipt_outcome      TEXT,
    receipt              BLOB,
    receipt_content_type TEXT,
    business_outcome     TEXT,
    functional_reference TEXT,
    last_error           TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
-- our own MessageIds are unique; inbound ones are unique per sender party (see inbound_dedup)
CREATE UNIQUE INDEX messages_out_id ON messages (message_id) WHERE direction = 'out';
CREATE INDEX messages_in_id ON messages (message_id) WHERE direction = 'in';
CREATE INDEX messages_due ON messages (state, priority, next_attempt_at) WHERE direction = 'out';
CREATE INDEX messages_ref ON messages (ref_to_message_id) WHERE ref_to_message_id IS NOT NULL;
CREATE INDEX messages_filing ON messages (filing_id);

CREATE TABLE inbound_dedup (
    sender_party          TEXT NOT NULL,
    message_id            TEXT NOT NULL,
    message_row           INTEGER NOT NULL REFERENCES messages (id),
    receipt               BLOB NOT NULL,
    receipt_content_type  TEXT,
    received_at           TEXT NOT NULL,
    PRIMARY KEY (sender_party, message_id)
);
CREATE INDEX inbound_dedup_row ON inbound_dedup (message_row);

CREATE TABLE orphans (
    id           INTEGER PRIMARY KEY,
    message_row  INTEGER NOT NULL UNIQUE REFERENCES messages (id),
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    resolved_at  TEXT,
    resolution   TEXT
);

CREATE TABLE customs_requests (
    id                  INTEGER PRIMARY KEY,
    filing_id           INTEGER NOT NULL REFERENCES filings (id),
    kind                TEXT NOT NULL CHECK (kind IN ('IE3Q01', 'IE3Q02', 'IE3Q03')),
    request_message_id  TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('open', 'answered', 'closed')),
    answer_message_id   TEXT,
    opened_at           TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX customs_requests_filing ON customs_requests (filing_id, state);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    filing_id   INTEGER,
    message_id  TEXT,
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX events_filing ON events (filing_id, id);
CREATE INDEX events_message ON events (message_id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: events are never updated');
END;
CREATE TRIGGER events_delete_only_purged BEFORE DELETE ON events
WHEN OLD.filing_id IS NOT NULL AND EXISTS (SELECT 1 FROM filings WHERE id = OLD.filing_id)
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: events of a filing go only with the purged filing');
END;
CREATE TRIGGER filings_keep_nonfinal BEFORE DELETE ON filings
WHEN OLD.state NOT IN ({_FINAL_SQL})
BEGIN
    SELECT RAISE(ABORT, 'refusing to delete a filing that is not in a final state');
END;
CREATE TRIGGER messages_keep_nonfinal_evidence BEFORE DELETE ON messages
WHEN OLD.filing_id IS NOT NULL
     AND EXISTS (SELECT 1 FROM filings WHERE id = OLD.filing_id AND state NOT IN ({_FINAL_SQL}))
BEGIN
    SELECT RAISE(ABORT, 'refusing to delete evidence of a filing that is not in a final state');
END;
"""

# References a route other than AS4 gets back for a filing's message (the HMRC route's CorrelationId): the key by
# which that route's answers are correlated. (route, ref) is unique: a reference names one message, forever.
V_ROUTE_REFS = """
CREATE TABLE route_refs (
    route       TEXT NOT NULL,
    ref         TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    filing_id   INTEGER,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (route, ref)
);
CREATE INDEX route_refs_filing ON route_refs (filing_id);
CREATE INDEX route_refs_message ON route_refs (message_id);
"""

# The transactional outbox of event delivery (AMQP): the event log is written in the same commit as every state
# change, so the outbox is a durable cursor over it per sink; a sink advances its cursor only after the broker
# confirmed everything before it. intake_refs keeps what a broker intake knew of a filing's message (its AMQP
# message_id / correlation_id), echoed on every event of the filing.
V_OUTBOX = """
CREATE TABLE outbox_cursors (
    name           TEXT PRIMARY KEY,
    last_event_id  INTEGER NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE TABLE intake_attempts (
    key         TEXT PRIMARY KEY,
    attempts    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE intake_refs (
    filing_id       INTEGER PRIMARY KEY,
    channel         TEXT NOT NULL,
    message_id      TEXT,
    correlation_id  TEXT,
    created_at      TEXT NOT NULL
);
"""

# Reception awareness through outages (issue 11):
# - messages.retry_since: when the current run of failed attempts began; the retry *time budget* counts from it
#   (a count of attempts says nothing about how long customs was away), reset by a receipt or an operator resend.
# - messages.ack_state: for a pulled message, whether the Receipt we journaled with it has reached the TI
#   (pending -> acknowledged | abandoned); a pending one is replayed after a restart. NULL for pushed messages,
#   whose Receipt travels on the HTTP response itself.
# - endpoint_state: per (endpoint, our PartyId): a durable pause after EBMS:0004/A001 (customs refuses this sender
#   for every further message, ICD 5.1.1) that only an operator lifts, and the health the 4xx grace period and the
#   outage alerts need (last success, failing since, last outage alert).
V_OUTAGES = """
ALTER TABLE messages ADD COLUMN retry_since TEXT;
ALTER TABLE messages ADD COLUMN ack_state TEXT CHECK (ack_state IS NULL OR ack_state IN
    ('pending', 'acknowledged', 'abandoned'));
CREATE INDEX messages_ack_pending ON messages (id) WHERE ack_state = 'pending';
-- an answer pulled without RefToMessageId (ICD 4.1.3.3) finds the request it answers by its reference
CREATE INDEX messages_out_reference ON messages (action, functional_reference)
    WHERE direction = 'out' AND functional_reference IS NOT NULL;

CREATE TABLE endpoint_state (
    endpoint            TEXT NOT NULL,
    party_id            TEXT NOT NULL,
    paused_at           TEXT,
    pause_reason        TEXT,
    pause_message_id    TEXT,
    resumed_at          TEXT,
    resumed_by          TEXT,
    last_ok_at          TEXT,
    failing_since       TEXT,
    outage_alerted_at   TEXT,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (endpoint, party_id)
);
"""

# Read paths of /health, /metrics and the status page (gateway/journal/queries.py): every query they run is an
# index range scan, so a scrape or a page view stays fast with a million filings in the journal. Counting filings
# by state would still read a whole index (about 0.7 s per million filings), so triggers keep the counts in a
# 19-row table: one extra tiny update inside the transaction that changes a state, exact by construction.
V2_OPS_INDEXES = """
CREATE INDEX filings_created ON filings (created_at, state);
CREATE INDEX messages_out_age ON messages (state, priority, created_at) WHERE direction = 'out';
CREATE INDEX customs_requests_open ON customs_requests (state, kind, opened_at);
CREATE INDEX orphans_unresolved ON orphans (created_at) WHERE resolved_at IS NULL;
CREATE TABLE filing_state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO filing_state_counts (state, n) SELECT state, COUNT(*) FROM filings GROUP BY state;
CREATE TRIGGER filing_state_counts_insert AFTER INSERT ON filings
BEGIN
    INSERT INTO filing_state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER filing_state_counts_update AFTER UPDATE OF state ON filings WHEN OLD.state IS NOT NEW.state
BEGIN
    UPDATE filing_state_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO filing_state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER filing_state_counts_delete AFTER DELETE ON filings
BEGIN
    UPDATE filing_state_counts SET n = n - 1 WHERE state = OLD.state;
END;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "filings, messages, inbound duplicate elimination, orphans, customs requests, event log",
              _script(V1)),
    Migration(2, "route references (HMRC correlation ids)", _script(V_ROUTE_REFS)),
    Migration(3, "event outbox cursors, broker intake references and redelivery counts", _script(V_OUTBOX)),
    Migration(4, "retry time budget, durable acknowledgements of pulled messages, endpoint pause and health",
              _script(V_OUTAGES)),
    Migration(5, "operations read paths: indexes (queue age per lane, filings over time, open requests, "
                 "unresolved orphans) and filing counts per state kept by triggers", _script(V2_OPS_INDEXES)),
)
LATEST = MIGRATIONS[-1].version


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, now_iso: str, path: str = "") -> list[int]:
    """Brings the schema to ``LATEST`` in one transaction; returns the versions applied (empty if up to date).

    ``conn`` must be in autocommit mode (isolation_level=None). BEGIN IMMEDIATE takes the write lock first, so
    two processes opening a fresh file at once do not both try to create the tables.
    """
    if current_version(conn) == LATEST:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)
        if version > LATEST:
            raise SchemaTooNew(f"{path or 'journal'}: schema version {version} is newer than this ics2gw knows "
                               f"({LATEST}); upgrade ics2gw or open the journal with the version that wrote it")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "description TEXT NOT NULL, applied_at TEXT NOT NULL)")
        applied = []
        for m in MIGRATIONS:
            if m.version <= version:
                continue
            m.apply(conn)
            conn.execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                         (m.version, m.description, now_iso))
            conn.execute(f"PRAGMA user_version = {int(m.version)}")
            applied.append(m.version)
        conn.execute("COMMIT")
        return applied
    except BaseException:
        conn.execute("ROLLBACK")
        raise
