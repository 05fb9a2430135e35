"""gateway/ops and gateway/journal/queries.py on a real SQLite journal, real certificates and real HTTP.

Read-only queries (paging, search, lanes, the index each query uses), the /health rules, expiry alerts through the
real alert hook, bounded metric labels, the [health] configuration keys, and escaping on the status page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.config import ConfigError, Section
from gateway.journal import InboundMessage, InvalidTransition, NewFiling, OutboundMessage, SqliteJournal
from gateway.journal.queries import JournalQueries, decode_cursor
from gateway.ops import metrics
from gateway.ops.config import read_ops_config
from gateway.ops.expiry import ExpiryThresholds, ExpiryWatch, Source
from gateway.ops.health import ENDPOINTS, HealthSources, build_report, http_status
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import AlertsConfig

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
from tests.journal_backends import backend, jcfg, open_any  # noqa: E402,F401 - fixtures

OPS = read_ops_config(Section({}, file=Path("gateway.toml"), prefix="health"))


def new_filing(lrn: str, filer: str = "NL123456789", priority: str = "B") -> NewFiling:
    return NewFiling(filer_eori=filer, lrn=lrn, sender_eori=filer, action="IE3F32",
                     payload_sha256=hashlib.sha256(lrn.encode()).hexdigest(), priority=priority)


def _fill(j: Any) -> None:
    """120 filings (updated one second apart), messages, an MRN, a request and an orphan, in one commit."""
    with j.transaction():
        for i in range(120):
            now = T0 + dt.timedelta(seconds=i)
            f, _ = j.insert_filing(new_filing(f"LRN{i:04d}", priority="ABC"[i % 3]), now=now)
            j.transition(f.id, "queued", now=now)
            j.enqueue_message(OutboundMessage(message_id=f"m{i}@ap.trader.test", action="IE3F32", sealed=b"x",
                                              content_type="multipart/related", filing_id=f.id,
                                              priority="ABC"[i % 3]), now=now)
        first = j.get_filing_by_key("NL123456789", "LRN0000")
        j.update_filing(first.id, now=T0 + dt.timedelta(seconds=200), mrn="26NL0000000000001A")
        j.record_inbound(InboundMessage(sender_party="sti-taxud", message_id="orphan-1@customs", raw=b"<x/>",
                                        content_type="application/xml", action="IE3R01",
                                        functional_reference='<img src=x onerror="alert(1)">'),
                         now=T0, receipt=b"r")
        j.record_orphan("orphan-1@customs", "sti-taxud", now=T0, reason="<script>alert('orphan')</script>")


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    """A SQLite journal filled by ``_fill``."""
    path = tmp_path / "journal.sqlite3"
    with SqliteJournal.open(path, now=T0) as j:   # one commit: one fsync
        _fill(j)
    return path


@pytest.fixture
def q(open_any: Any, jcfg: Any) -> Any:
    """The operations queries over a filled journal, on each backend."""
    from gateway.journal.factory import open_reader
    _fill(open_any(now=T0))
    reader = open_reader(jcfg)
    yield reader.queries()
    reader.close()


def test_keyset_paging_covers_every_filing_once_newest_first(q: Any) -> None:
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = q.filings(cursor=cursor, limit=50)
        seen += [r["id"] for r in page.rows]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 120
    updated = [r["updated_at"] for r in q.filings(limit=500).rows]
    assert updated == sorted(updated, reverse=True)
    assert q.filings(limit=500).rows[0]["lrn"] == "LRN0000"  # the MRN update made filing 1 the newest change


def test_state_filter_search_and_bad_input(q: Any) -> None:
    assert {r["state"] for r in q.filings(state="queued", limit=500).rows} == {"queued"}
    assert q.filings(state="registered").rows == []
    page = q.filings(search="26NL0000000000001A")
    assert page.search == "mrn" and [r["lrn"] for r in page.rows] == ["LRN0000"]
    page = q.filings(search="m7@ap.trader.test")
    assert page.search == "message-id" and [r["lrn"] for r in page.rows] == ["LRN0007"]
    page = q.filings(search="LRN001")   # an LRN prefix, through the index
    assert page.search == "lrn" and [r["lrn"] for r in page.rows] == [f"LRN001{i}" for i in range(10)]
    assert q.filings(search="LRN0010", state="registered").rows == []
    assert q.filings(search="%").rows == [] and q.filings(search="' OR 1=1 --").rows == []
    for bad in ("x", "2026-11-01T12:00:00.000Z~", "nope~12", "2026~1 OR 1=1"):
        with pytest.raises(ValueError):
            decode_cursor(bad)
    with pytest.raises(ValueError):
        q.filings(state="'; DROP TABLE filings; --")
    with pytest.raises(ValueError):
        q.filings(search="x" * 201)


def test_lanes_requests_orphans_and_counts(q: Any) -> None:
    lanes = q.lanes()
    assert {k: v.queued for k, v in lanes.items()} == {"A": 40, "B": 40, "C": 40}
    assert lanes["A"].oldest_queued_at == "2026-11-01T12:00:00.000Z"
    assert lanes["B"].oldest_age_seconds(T0 + dt.timedelta(seconds=61)) == 60.0
    counts = q.counts_by_state()
    assert counts["queued"] == 120 and counts["do-not-load"] == 0 and len(counts) == 19
    [orphan] = q.orphans()
    assert orphan["message_id"] == "orphan-1@customs" and q.orphans_open() == 1
    assert q.open_requests() == [] and q.do_not_load() == []
    per_hour = q.created_per_hour(T0 - dt.timedelta(hours=1), hours=3)
    assert per_hour == [{"hour": "2026-11-01T12", "state": "queued", "n": 120}]


def test_the_status_reader_cannot_write(jpath: Path) -> None:
    q = JournalQueries(jpath)
    with pytest.raises(sqlite3.OperationalError):
        q._all("DELETE FROM filings")
    with pytest.raises(sqlite3.OperationalError):
        q._all("CREATE TABLE x (a)")
    q.close()


@pytest.mark.parametrize("sql", [
    "SELECT id FROM filings ORDER BY updated_at DESC, id DESC LIMIT 51",
    ("SELECT id FROM filings WHERE state = 'queued' AND (updated_at, id) < ('2026', 5) "
     "ORDER BY updated_at DESC, id DESC LIMIT 51"),
    "SELECT id FROM filings WHERE lrn >= 'L' AND lrn < 'M' ORDER BY lrn, id LIMIT 51",
    "SELECT COUNT(*), MIN(created_at) FROM messages WHERE direction = 'out' AND state = 'queued' AND priority = 'A'",
    ("SELECT state, COUNT(*) FROM filings WHERE created_at >= '2026-01-01T00' AND created_at < '2026-01-01T01' "
     "GROUP BY state"),
    "SELECT id FROM customs_requests WHERE state = 'open' AND kind = 'IE3Q01' ORDER BY opened_at LIMIT 200",
    "SELECT kind, COUNT(*) FROM customs_requests WHERE state = 'open' GROUP BY kind",
    ("SELECT f.id FROM messages m JOIN filings f ON f.id = m.filing_id WHERE m.message_id = 'x' "
     "AND m.direction = 'in' LIMIT 50"),
    "SELECT id FROM orphans WHERE resolved_at IS NULL ORDER BY created_at DESC LIMIT 20",
])
def test_every_status_query_is_an_index_search(jpath: Path, sql: str) -> None:
    """No status query scans a table: with a million filings a scan would take seconds per page."""
    conn = sqlite3.connect(jpath)
    plan = " | ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
    conn.close()
    assert "USING" in plan and not any(p.strip().startswith("SCAN") and "USING" not in p
                                       for p in plan.split("|")), plan


def test_state_counts_kept_by_triggers_stay_exact(tmp_path: Path) -> None:
    """Migration 2 backfills the counts of an existing journal; inserts, transitions and purges keep them exact."""
    from gateway.journal import schema
    path = tmp_path / "old.sqlite3"   # a journal written by a version-1 gateway, with filings in it
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    schema.MIGRATIONS[0].apply(conn)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany("INSERT INTO filings (filer_eori, lrn, sender_eori, action, payload_sha256, state, priority, "
                     "created_at, updated_at) VALUES ('NL1', ?, 'NL1', 'IE3F32', 'x', ?, 'B', ?, ?)",
                     [(f"OLD{i}", "registered" if i % 2 else "rejected", "2026-01-01T00:00:00.000Z",
                       "2026-01-01T00:00:00.000Z") for i in range(10)])
    conn.execute("COMMIT")
    conn.close()

    def exact(j: SqliteJournal) -> None:
        q = JournalQueries(path, counts_ttl_seconds=0)
        truth = {s: 0 for s in q.counts_by_state()}
        truth.update(j.count_by_state())
        assert q.counts_by_state() == truth
        q.close()

    with SqliteJournal.open(path, now=T0) as j:
        exact(j)
        for i in range(6):
            f, _ = j.insert_filing(new_filing(f"NEW{i}"), now=T0)
            j.transition(f.id, "queued", now=T0)
            if i % 2:
                j.transition(f.id, "abandoned", now=T0)
        exact(j)
        with pytest.raises(InvalidTransition):   # a refused transition must not count
            j.transition(11, "queued", now=T0)
        exact(j)
        report = j.purge(T0 + dt.timedelta(days=3650), now=T0 + dt.timedelta(days=3650))
        assert report.filings >= 8
        exact(j)


# ------------------------------------------------------------------------------------------------ /health rules
def test_health_rules_degraded_after_failures_and_reset_by_one_success(jpath: Path) -> None:
    ENDPOINTS.reset()
    q = JournalQueries(jpath)
    src = HealthSources(environment="conformance", endpoints={"sti": object()}, queries=q, journal_path=jpath)
    cfg = read_ops_config(Section({"queue_age_degraded_seconds": 1e9}, file=Path("g.toml"), prefix="health"))
    doc = build_report(src, cfg)
    assert doc["status"] == "ok" and doc["endpoints"]["sti"]["state"] == "unknown", doc["reasons"]
    for _ in range(cfg.degraded_after_failures - 1):
        ENDPOINTS.record("sti", "send", False, "cannot connect")
    assert build_report(src, cfg)["status"] == "ok"
    ENDPOINTS.record("sti", "ping", False, "cannot connect")
    doc = build_report(src, cfg)
    assert doc["status"] == "degraded" and http_status(doc, cfg) == 429
    assert "cannot connect" in doc["reasons"][0] and doc["endpoints"]["sti"]["last_ping_ok"] is False
    ENDPOINTS.record("sti", "pull", True)
    assert build_report(src, cfg)["status"] == "ok"
    # paused endpoints and an old queue degrade; a dead writer or a full disk fail
    assert build_report(HealthSources(**{**src.__dict__, "paused": lambda: ["sti"]}), cfg)["status"] == "degraded"
    assert build_report(src, OPS)["status"] == "degraded"   # the queued messages are from 2026-11-01 (> 900 s)
    dead = HealthSources(**{**src.__dict__, "writer_alive": lambda: False})
    doc = build_report(dead, cfg)
    assert doc["status"] == "failing" and http_status(doc, cfg) == 503 and doc["journal"]["writable"] is False
    full = read_ops_config(Section({"min_free_bytes": 2**62, "queue_age_degraded_seconds": 1e9},
                                   file=Path("g.toml"), prefix="health"))
    assert build_report(src, full)["status"] == "failing"
    broken = HealthSources(**{**src.__dict__, "paused": lambda: 1 / 0})
    doc = build_report(broken, cfg)
    assert doc["status"] == "failing" and "ZeroDivisionError" in doc["reasons"][0]
    ENDPOINTS.reset()
    q.close()


# ------------------------------------------------------------------------------------------------ expiry
def _cert(path: Path, cn: str, not_after: dt.datetime, now: dt.datetime) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now - dt.timedelta(days=1))
           .next_update(now + dt.timedelta(hours=6)).sign(key, hashes.SHA256()))
    path.with_suffix(".crl").write_bytes(crl.public_bytes(Encoding.PEM))


async def test_expiry_alerts_go_through_the_alert_hook_once_per_level(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    _cert(tmp_path / "seal.pem", "seal-soon", now + dt.timedelta(days=3), now)
    _cert(tmp_path / "anchor.pem", "anchor-warn", now + dt.timedelta(days=20), now)
    _cert(tmp_path / "customs.pem", "customs-old", now - dt.timedelta(days=1), now)
    _cert(tmp_path / "tls.pem", "tls-fine", now + dt.timedelta(days=300), now)
    (tmp_path / "broken.crl").write_bytes(b"not a CRL")
    out = tmp_path / "alerts"
    out.mkdir()
    # one file per alert: hook processes run concurrently
    alerts = Alerts(AlertsConfig(hook_command=("/bin/sh", "-c", f'cat > "{out}/$$-$(date +%s%N).json"'),
                                 webhook_url=None), "conformance")

    def delivered() -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in out.iterdir()]
    clock = [now]
    watch = ExpiryWatch([Source("seal", (tmp_path / "seal.pem",), leaf_only=True),
                         Source("tls-client", (tmp_path / "tls.pem",), leaf_only=True),
                         Source("trust-anchor", (tmp_path / "anchor.pem",)),
                         Source("customs", (tmp_path / "customs.pem",))],
                        [tmp_path / "seal.crl", tmp_path / "broken.crl"], ExpiryThresholds(), alerts.raise_alert,
                        clock=lambda: clock[0])
    watch.check()
    watch.check()            # the same levels again: no second alert the same day
    await alerts.drain()
    got = delivered()
    by = {(a["alert"], a.get("subject")): a for a in got}
    assert len(got) == 5, got
    assert by[("certificate-expiring", "seal-soon")]["level"] == "critical"
    assert by[("certificate-expiring", "anchor-warn")]["level"] == "warning"
    assert by[("certificate-expired", "customs-old")]["level"] == "expired"
    assert by[("crl-expiring", "seal-soon")]["level"] == "critical"   # 6 h left < 1 day (half of 2 days)
    assert by[("crl-unreadable", "?")]["error"].startswith("cannot read")
    assert all(a["environment"] == "conformance" for a in got)
    clock[0] = now + dt.timedelta(days=1, minutes=1)   # a day later the still-open items remind once more
    watch.apply(watch.scan_now())
    await alerts.drain()
    assert len(delivered()) == 10
    samples = metrics.render().decode()
    assert 'ics2gw_certificate_expiry_seconds{role="seal",subject="seal-soon"}' in samples
    # /health: a seal certificate in its critical window degrades; an expired one fails
    src = HealthSources(environment="conformance", endpoints={}, expiry=watch)
    doc = build_report(src, OPS)
    assert doc["status"] == "degraded" and any("seal-soon" in r for r in doc["reasons"])
    _cert(tmp_path / "seal.pem", "seal-soon", now - dt.timedelta(hours=1), now)
    watch.check()
    assert build_report(src, OPS)["status"] == "failing"
    await alerts.drain()   # the hook processes of these last alerts finish before the loop closes
    assert any(a["alert"] == "certificate-expired" and a["subject"] == "seal-soon" for a in delivered())


# ------------------------------------------------------------------------------------------------ metrics, config
def test_metric_labels_are_bounded() -> None:
    assert metrics.bounded_action("IE3R01") == "IE3R01"
    for hostile in ("LRN0001", "<script>", "x" * 500, "IE3Z99", "a b", "abc@def"):
        assert metrics.bounded_action(hostile) == "other", hostile
    assert metrics.bounded_code("EBMS:0004") == "EBMS:0004"
    assert metrics.bounded_code("EBMS:0004'} evil{") == "other"
    before = metrics.MESSAGES_RECEIVED.labels("push", "other", "error")._value.get()
    metrics.message_received("push", "urn:evil:" + "x" * 100, "error", error_code="<bad>")
    assert metrics.MESSAGES_RECEIVED.labels("push", "other", "error")._value.get() == before + 1
    assert 'reason="other"' in metrics.render().decode()


@pytest.mark.parametrize("data,key", [
    ({"ping_interval_second": 1}, "ping_interval_second"),
    ({"degraded_http_status": 302}, "degraded_http_status"),
    ({"expiry_critical_days": 40, "expiry_warning_days": 30}, "expiry_critical_days"),
    ({"degraded_after_failures": 0}, "degraded_after_failures"),
])
def test_health_config_refuses_mistakes(gateway_conf: Path, tmp_path: Path, data: dict[str, Any], key: str) -> None:
    from gateway.config import load_gateway_config
    from gateway.transport.config import load_transport_config
    text = gateway_conf.read_text()
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())
    text = text.replace('[health]\n', '[health]\n' + extra, 1)
    conf = gateway_conf.parent / f".test-health-{key}-{id(data)}.toml"   # beside conf/: the relative paths hold
    conf.write_text(text)
    try:
        with pytest.raises(ConfigError) as err:
            cfg = load_gateway_config(conf)
            load_transport_config(cfg)
            read_ops_config(cfg.root.section("health"))
        assert key in str(err.value)
    finally:
        conf.unlink()


# ------------------------------------------------------------------------------------------------ status page
async def test_status_page_escapes_everything_from_outside(jpath: Path) -> None:
    from gateway.ops.statuspage import StatusContext, add_routes
    with SqliteJournal.open(jpath, now=T0) as j:
        j.update_filing(2, now=T0, error='<script>alert("err")</script>')
    q = JournalQueries(jpath)
    ctx = StatusContext("conformance", q, lambda: {"status": "ok", "reasons": ["<b>reason</b>"], "endpoints": {}},
                        lambda: [{"at": "now", "alert": "orphan", "reference": "<svg onload=alert(1)>"}])
    app = web.Application()
    add_routes(app, ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]

    def fetch(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.read().decode()
    try:
        pages = [await asyncio.to_thread(fetch, p) for p in
                 ("/status", "/status/filings?state=queued", "/status/filings/2")]
    finally:
        await runner.cleanup()
        q.close()
    for page in pages:
        assert "<script" not in page and "<svg onload" not in page and "<img src=x" not in page
        assert " onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;alert(&#x27;orphan&#x27;)&lt;/script&gt;" in pages[0]
    assert "&lt;b&gt;reason&lt;/b&gt;" in pages[0]
    assert "&lt;script&gt;alert(&quot;err&quot;)" in pages[2]
