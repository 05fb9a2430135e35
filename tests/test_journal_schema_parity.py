"""The SQLite and PostgreSQL journals have the same schema: the same tables with the same columns (and the same
NOT NULL columns), the same indexes (name, uniqueness, columns, partial or not), and the same write guards.

Why: ``schema.py`` and ``schema_pg.py`` say the same thing in two dialects, and every migration from version 6 on
is written in both. A column or an index added to one file only would pass every test that runs on the other
backend. This compares what each database reports about itself after ``migrate`` (SQLite's PRAGMAs, PostgreSQL's
catalogues), not the SQL text. The deliberate differences are listed here, each with its reason."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from gateway.journal import schema, schema_pg
from gateway.journal.config import JournalConfig
from gateway.journal.factory import open_journal
from tests.journal_backends import pg_config

# PostgreSQL computes the per-state counts in a view instead of keeping trigger-maintained rows (those rows would
# serialise every instance and deadlock opposite transitions); the view has the same columns
VIEWS_ON_PG = {"filing_state_counts"}


def _sqlite_schema(path: Path) -> dict[str, Any]:
    open_journal(JournalConfig(path=path), daemon=False).close()
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")]
        columns = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
        # a PRIMARY KEY column is NOT NULL in PostgreSQL by definition; SQLite reports notnull=0 for an INTEGER one
        not_null = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})") if r[3] or r[5]} for t in tables}
        indexes = {}
        for t in tables:
            for _, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({t})"):
                if origin != "c":          # only CREATE INDEX ones: primary keys and UNIQUE constraints below
                    continue
                cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
                indexes[name] = (t, bool(unique), cols, bool(partial))
        uniques = {t: sorted(tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
                             for _, name, unique, origin, _ in conn.execute(f"PRAGMA index_list({t})")
                             if origin in ("u", "pk") and unique) for t in tables}
        for t in tables:     # an INTEGER PRIMARY KEY is the rowid: SQLite lists no index for it
            pk = tuple(r[1] for r in sorted(conn.execute(f"PRAGMA table_info({t})"), key=lambda r: r[5]) if r[5])
            if pk and pk not in uniques[t]:
                uniques[t] = sorted([*uniques[t], pk])
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return {"columns": columns, "not_null": not_null, "indexes": indexes, "uniques": uniques,
            "triggers": triggers, "version": version}


def _pg_schema(pg_dsn: Any) -> dict[str, Any]:
    open_journal(pg_config(str(pg_dsn), pg_dsn.password), daemon=False).close()
    with psycopg.connect(pg_dsn.with_password) as conn:
        rel = dict(conn.execute("SELECT table_name, table_type FROM information_schema.tables "
                                "WHERE table_schema = current_schema()").fetchall())
        cols = conn.execute("SELECT table_name, column_name, is_nullable FROM information_schema.columns "
                            "WHERE table_schema = current_schema()").fetchall()
        idx = conn.execute("""
            SELECT i.relname, t.relname, ix.indisunique, ix.indisprimary, ix.indpred IS NOT NULL,
                   ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(n, o)
                         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o),
                   EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)
            FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = current_schema()""").fetchall()
        trig = {r[0] for r in conn.execute("SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                                           "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                           "WHERE n.nspname = current_schema() AND NOT t.tgisinternal")}
    columns: dict[str, set[str]] = {}
    not_null: dict[str, set[str]] = {}
    for t, c, nullable in cols:
        columns.setdefault(t, set()).add(c)
        if nullable == "NO":
            not_null.setdefault(t, set()).add(c)
    indexes = {name: (t, unique, tuple(c), partial) for name, t, unique, primary, partial, c, constraint in idx
               if not primary and not constraint}
    uniques: dict[str, list[tuple[str, ...]]] = {t: [] for t in columns}
    for name, t, unique, primary, partial, c, constraint in idx:
        if (primary or constraint) and unique:
            uniques[t].append(tuple(c))
    return {"rel": rel, "columns": columns, "not_null": not_null, "indexes": indexes,
            "uniques": {t: sorted(v) for t, v in uniques.items()}, "triggers": trig}


def test_both_backends_have_the_same_schema(tmp_path: Path, pg_dsn: Any) -> None:
    lite = _sqlite_schema(tmp_path / "journal.sqlite3")
    pg = _pg_schema(pg_dsn)
    assert lite["version"] == schema.LATEST == schema_pg.LATEST
    pg_tables = {t for t, kind in pg["rel"].items() if kind == "BASE TABLE"} - {"schema_version"}
    assert {t for t, kind in pg["rel"].items() if kind == "VIEW"} == VIEWS_ON_PG
    assert set(lite["columns"]) == pg_tables | VIEWS_ON_PG, "tables differ"
    for table in lite["columns"]:
        assert lite["columns"][table] == pg["columns"][table], f"columns of {table} differ"
    for table in set(lite["columns"]) - VIEWS_ON_PG:
        assert lite["not_null"][table] == pg["not_null"].get(table, set()), f"NOT NULL columns of {table} differ"
        assert lite["uniques"][table] == pg["uniques"][table], f"primary keys / UNIQUE constraints of {table} differ"
    assert lite["indexes"] == pg["indexes"]


def test_both_backends_guard_the_same_things(tmp_path: Path, pg_dsn: Any) -> None:
    """The write guards (append-only events, no deleting unfinished work, ...) exist on both: named alike, one
    SQLite trigger per guarded statement, one PostgreSQL trigger per table and guard (it may cover several
    statements, e.g. UPDATE and DELETE of events)."""
    lite = _sqlite_schema(tmp_path / "journal.sqlite3")
    pg = _pg_schema(pg_dsn)
    counting = {t for t in lite["triggers"] if t.startswith("filing_state_counts")}   # PostgreSQL: a view instead
    assert lite["triggers"] - counting and pg["triggers"]
    missing = sorted(t for t in lite["triggers"] - counting if not any(t == p or t.startswith(p) or p.startswith(t)
                                                                        for p in pg["triggers"]))
    assert missing == [], (missing, sorted(pg["triggers"]))
