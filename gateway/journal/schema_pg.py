"""The journal's schema on PostgreSQL: the same tables, columns and guarantees as ``schema.py`` (SQLite).

Why one creation step at version 5: the PostgreSQL backend starts at the schema SQLite reached through migrations
1-5, so a PostgreSQL journal is created at 5 directly; from version 6 on, every migration exists in both files with
the same number and meaning (``schema_version`` compares them; tests/test_journal_schema_parity.py compares what
both databases report about their tables, columns, keys, indexes and guards after migrating). Differences, each for
a reason:
- ``BIGINT GENERATED ALWAYS AS IDENTITY`` for SQLite's ``INTEGER PRIMARY KEY``; ``BYTEA`` for ``BLOB``. Times stay
  ISO 8601 text (fixed width, ``Z``), so ordering and the core's SQL are identical on both backends.
- the guard triggers (append-only event log, non-final filings undeletable) are PL/pgSQL functions with the same
  messages; they also refuse ``TRUNCATE`` of the event log.
- ``filing_state_counts`` is a view, not a table kept by triggers: on PostgreSQL several instances commit at once,
  and 19 rows updated by every state change would serialise them (and deadlock opposite transitions). A count by
  state over ``filings_state_updated`` is an index-only scan.
"""

from __future__ import annotations

from gateway.journal.states import FINAL_STATES

_FINAL_SQL = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
LATEST = 5

CREATE_V5 = f"""
CREATE TABLE filings (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
CREATE INDEX filings_created ON filings (created_at, state);

CREATE TABLE messages (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id           TEXT NOT NULL,
    ref_to_message_id    TEXT,
    direction            TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind                 TEXT NOT NULL CHECK (kind IN ('user-message', 'receipt', 'error', 'pull-request', 'ping')),
    action               TEXT,
    filing_id            BIGINT REFERENCES filings (id),
    sender_party         TEXT,
    priority             TEXT CHECK (priority IS NULL OR priority IN ('A', 'B', 'C')),
    endpoint             TEXT,
    state                TEXT NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT,
    claimed_by           TEXT,
    claim_expires_at     TEXT,
    content_type         TEXT,
    sealed               BYTEA,
    receipt_outcome      TEXT,
    receipt              BYTEA,
    receipt_content_type TEXT,
    business_outcome     TEXT,
    functional_reference TEXT,
    last_error           TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    retry_since          TEXT,
    ack_state            TEXT CHECK (ack_state IS NULL OR ack_state IN ('pending', 'acknowledged', 'abandoned'))
);
CREATE UNIQUE INDEX messages_out_id ON messages (message_id) WHERE direction = 'out';
CREATE INDEX messages_in_id ON messages (message_id) WHERE direction = 'in';
CREATE INDEX messages_due ON messages (state, priority, next_attempt_at) WHERE direction = 'out';
CREATE INDEX messages_ref ON messages (ref_to_message_id) WHERE ref_to_message_id IS NOT NULL;
CREATE INDEX messages_filing ON messages (filing_id);
CREATE INDEX messages_ack_pending ON messages (id) WHERE ack_state = 'pending';
CREATE INDEX messages_out_reference ON messages (action, functional_reference)
    WHERE direction = 'out' AND functional_reference IS NOT NULL;
CREATE INDEX messages_out_age ON messages (state, priority, created_at) WHERE direction = 'out';

CREATE TABLE inbound_dedup (
    sender_party          TEXT NOT NULL,
    message_id            TEXT NOT NULL,
    message_row           BIGINT NOT NULL REFERENCES messages (id),
    receipt               BYTEA NOT NULL,
    receipt_content_type  TEXT,
    received_at           TEXT NOT NULL,
    PRIMARY KEY (sender_party, message_id)
);
CREATE INDEX inbound_dedup_row ON inbound_dedup (message_row);

CREATE TABLE orphans (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_row  BIGINT NOT NULL UNIQUE REFERENCES messages (id),
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    resolved_at  TEXT,
    resolution   TEXT
);
CREATE INDEX orphans_unresolved ON orphans (created_at) WHERE resolved_at IS NULL;

CREATE TABLE customs_requests (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    filing_id           BIGINT NOT NULL REFERENCES filings (id),
    kind                TEXT NOT NULL CHECK (kind IN ('IE3Q01', 'IE3Q02', 'IE3Q03')),
    request_message_id  TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('open', 'answered', 'closed')),
    answer_message_id   TEXT,
    opened_at           TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX customs_requests_filing ON customs_requests (filing_id, state);
CREATE INDEX customs_requests_open ON customs_requests (state, kind, opened_at);

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TEXT NOT NULL,
    filing_id   BIGINT,
    message_id  TEXT,
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX events_filing ON events (filing_id, id);
CREATE INDEX events_message ON events (message_id);

-- one refusal for every "never": the message is the trigger's argument
CREATE FUNCTION ics2gw_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW
    EXECUTE FUNCTION ics2gw_refuse('the event log is append-only: events are never updated');
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT
    EXECUTE FUNCTION ics2gw_refuse('the event log is append-only: it is never truncated');
CREATE FUNCTION ics2gw_events_delete_only_purged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.filing_id IS NOT NULL AND EXISTS (SELECT 1 FROM filings WHERE id = OLD.filing_id) THEN
        RAISE EXCEPTION 'the event log is append-only: events of a filing go only with the purged filing';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER events_delete_only_purged BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ics2gw_events_delete_only_purged();
CREATE FUNCTION ics2gw_filings_keep_nonfinal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state NOT IN ({_FINAL_SQL}) THEN
        RAISE EXCEPTION 'refusing to delete a filing that is not in a final state';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER filings_keep_nonfinal BEFORE DELETE ON filings
    FOR EACH ROW EXECUTE FUNCTION ics2gw_filings_keep_nonfinal();
CREATE FUNCTION ics2gw_messages_keep_nonfinal_evidence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.filing_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM filings WHERE id = OLD.filing_id AND state NOT IN ({_FINAL_SQL})) THEN
        RAISE EXCEPTION 'refusing to delete evidence of a filing that is not in a final state';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER messages_keep_nonfinal_evidence BEFORE DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION ics2gw_messages_keep_nonfinal_evidence();
CREATE TRIGGER filings_no_truncate BEFORE TRUNCATE ON filings FOR EACH STATEMENT
    EXECUTE FUNCTION ics2gw_refuse('refusing to truncate filings: retention purges final filings only');

CREATE TABLE route_refs (
    route       TEXT NOT NULL,
    ref         TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    filing_id   BIGINT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (route, ref)
);
CREATE INDEX route_refs_filing ON route_refs (filing_id);
CREATE INDEX route_refs_message ON route_refs (message_id);

CREATE TABLE outbox_cursors (
    name           TEXT PRIMARY KEY,
    last_event_id  BIGINT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE TABLE intake_attempts (
    key         TEXT PRIMARY KEY,
    attempts    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE intake_refs (
    filing_id       BIGINT PRIMARY KEY,
    channel         TEXT NOT NULL,
    message_id      TEXT,
    correlation_id  TEXT,
    created_at      TEXT NOT NULL
);
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
CREATE VIEW filing_state_counts AS SELECT state, COUNT(*)::BIGINT AS n FROM filings GROUP BY state;
"""

# (version, description, SQL); the first step creates everything SQLite's migrations 1-5 built
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (5, "the journal schema of version 5 (SQLite migrations 1-5): filings, messages, inbound duplicate "
        "elimination, orphans, customs requests, append-only event log, route references, outbox cursors, "
        "intake references, endpoint state, operations indexes", CREATE_V5),
)
