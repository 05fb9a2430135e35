"""Operations end to end: /metrics, /health, the status page and the evidence bundle of a real daemon.

The customs simulator and the gateway run as real processes on loopback ports (real TLS with the test PKI, real
HTTP, the real journal). The last test stops the simulator process and starts it again, so it runs last.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pipeline_harness import (
    PARTY,
    GatewayEnv,
    SimEnv,
    _set,
    ens,
    free_port,
    push_url,
    run_cli,
    wait_until,
)

pytestmark = pytest.mark.slow
_seq = itertools.count(1)


def new_lrn(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000:03d}{next(_seq):05d}OPS"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pki: Path):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("ops")
    inbound = free_port(dual=True)
    sim = SimEnv.create(base / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}])
    sim.start()
    gw = GatewayEnv.create(base / "gw", sim, inbound_port=inbound)
    text = gw.conf.read_text()
    for key, value in (("ping_interval_seconds", "0.3"), ("degraded_after_failures", "2")):
        text = _set(text, "health", key, value)
    gw.conf.write_text(text)
    try:
        gw.start()
    except BaseException:
        sim.stop()
        raise
    yield sim, gw
    code = gw.stop()
    if sim.proc is not None and sim.proc.alive():
        sim.stop()
    assert code == 0, f"gateway exit code {code} after SIGTERM\n{gw.logs()}"


def base_url(gw: GatewayEnv) -> str:
    return f"http://127.0.0.1:{gw.health_port}"


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def scrape(gw: GatewayEnv) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus_client's own text parser: {(sample name, labels): value}."""
    status, headers, body = get(base_url(gw) + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain"), (status, headers)
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        assert re.fullmatch(r"ics2gw_[a-z0-9_]+|python_[a-z_]+|process_[a-z_]+", fam.name), fam.name
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == want for k, want in labels.items()))


def registered(gw: GatewayEnv, lrn: str) -> dict[str, Any]:
    status, body = gw.submit(ens(lrn))
    assert status == 202, body
    return gw.wait_state(lrn, "registered")


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_parse_and_counters_move_when_filings_flow(world: Any) -> None:
    _, gw = world
    before = scrape(gw)
    lrns = [new_lrn("MET") for _ in range(3)]
    lives = [registered(gw, lrn) for lrn in lrns]
    answers = "ics2gw_business_answer_latency_seconds_count"

    def moved() -> dict[Any, float] | None:
        s = scrape(gw)  # journal gauges are cached for up to 2 s (one count per scrape burst)
        return s if total(s, answers, action="IE3R01") >= 3 + total(before, answers, action="IE3R01") and \
            total(s, "ics2gw_filings", state="registered") >= 3 else None
    after = wait_until(moved, 15, "three business answers and registered filings counted", gw.logs)
    sent = "ics2gw_messages_sent_total"
    assert total(after, sent, endpoint="sti", action="IE3F32", outcome="receipt-ok") - \
        total(before, sent, endpoint="sti", action="IE3F32", outcome="receipt-ok") >= 3
    rec = "ics2gw_messages_received_total"
    assert total(after, rec, channel="push", action="IE3R01", outcome="receipt") - \
        total(before, rec, channel="push", action="IE3R01", outcome="receipt") >= 3
    assert total(after, "ics2gw_receipt_latency_seconds_count", endpoint="sti") >= 3
    assert total(after, "ics2gw_filings", state="registered") >= 3
    assert total(after, "ics2gw_journal_commits_total") > total(before, "ics2gw_journal_commits_total")
    assert total(after, "ics2gw_exchanges_total", endpoint="sti", exchange="ping", outcome="receipt-ok") >= 1
    for lane in "ABC":  # every lane has its series, also when empty
        assert ("ics2gw_queue_messages", (("lane", lane),)) in after
        assert ("ics2gw_queue_oldest_age_seconds", (("lane", lane),)) in after
    for state in ("received", "do-not-load", "abandoned"):  # a series never vanishes because it is zero
        assert ("ics2gw_filings", (("state", state),)) in after
    assert total(after, "ics2gw_certificate_expiry_seconds", role="seal") > 86400
    assert total(after, "ics2gw_crl_next_update_seconds") > 0
    # bounded labels: no LRN, MRN or MessageId ever becomes a label value
    ids = set(lrns) | {life["filing"]["mrn"] for life in lives} | \
        {m["message_id"] for life in lives for m in life["messages"]}
    values = {v for (_, labels) in after for _, v in labels}
    assert not ids & values, ids & values
    assert all(len(v) <= 80 for v in values)


# ------------------------------------------------------------------------------------------------ health
def test_health_document(world: Any) -> None:
    _, gw = world
    status, _, body = get(base_url(gw) + "/health")
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "ok", doc
    assert doc["reasons"] == []
    ep = doc["endpoints"]["sti"]
    assert ep["state"] == "up" and ep["last_ping"] and ep["last_ping_ok"] is True and ep["last_success"]
    assert ep["consecutive_failures"] == 0 and doc["paused_endpoints"] == []
    assert doc["journal"]["writable"] is True and doc["journal"]["writer_alive"] is True
    assert doc["journal"]["backend"] == "sqlite" and doc["journal"]["name"].startswith("sqlite:/")
    assert re.fullmatch(r".+-\d+-[0-9a-f]{6}", doc["instance"]), doc["instance"]   # hostname-pid-random
    assert "timers" in doc["leader_of"]          # SQLite: every singleton task runs here
    status, _, metrics_body = get(base_url(gw) + "/metrics")
    assert f'instance="{doc["instance"]}"' in metrics_body.decode() and "ics2gw_singleton_held" in metrics_body.decode()
    assert set(doc["queue"]) == {"A", "B", "C"}
    assert {"queued", "sending", "oldest_age_seconds"} <= set(doc["queue"]["B"])
    roles = {c["role"] for c in doc["certificates"]}
    assert {"seal", "tls-client", "trust-anchor", "customs"} <= roles, roles
    assert all(c["days_left"] > 0 and c["level"] == "ok" for c in doc["certificates"] + doc["crls"])
    assert len(doc["crls"]) == 3


# ------------------------------------------------------------------------------------------------ evidence
def test_evidence_bundle_messages_pass_inspect_as_they_are(world: Any, tmp_path: Path) -> None:
    _, gw = world
    lrn = new_lrn("EVD")
    life = registered(gw, lrn)
    wait_until(lambda: any(m["action"] == "IE3R01" for m in gw.lifecycle(lrn)["messages"]), 10, "IE3R01")
    status, headers, data = get(f"{base_url(gw)}/status/filings/{life['filing']['id']}/evidence.zip")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    r = gw.cli("evidence", lrn, "--out", str(tmp_path / "cli.zip"))
    assert r.returncode == 0, r.stderr
    for n, blob in (("page", data), ("cli", (tmp_path / "cli.zip").read_bytes())):
        out = tmp_path / n
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            z.extractall(out)
            manifest = json.loads(z.read("manifest.json"))
        files = manifest["files"]
        kinds = [f["kind"] for f in files]
        assert "sealed-message" in kinds and "receipt" in kinds and "inbound-message" in kinds, kinds
        sent = next(f for f in files if f["kind"] == "sealed-message")
        for f in files:
            assert (out / f["ctype_file"]).read_text().startswith("Content-Type: ")
            args = ["inspect", str(out / f["name"]), "--conf", str(gw.conf)]
            if f["kind"] == "receipt":
                args += ["--against", str(out / sent["name"])]
            res = run_cli(args, gw.dir)
            verdict = json.loads(res.stdout)
            # our own returned receipts are sealed by us: valid as well (trader root is an anchor)
            assert res.returncode == 0 and verdict["valid"], (f, res.stdout, res.stderr)
            assert verdict["content_type"] == f["content_type"]
            if f["kind"] == "receipt":
                assert verdict["against"]["match"] is True


# ------------------------------------------------------------------------------------------------ status page
def test_status_page_html(world: Any) -> None:
    _, gw = world
    lrn = new_lrn("DNL")
    assert gw.submit(ens(lrn))[0] == 202
    life = gw.wait_state(lrn, "do-not-load")
    mrn = life["filing"]["mrn"]
    status, headers, body = get(base_url(gw) + "/status")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
    assert "<script" not in page and "http://" not in page.split("<main>")[0].replace(
        f"http://127.0.0.1:{gw.health_port}", "")  # no CDN, nothing loaded from elsewhere
    main = page.split("<main>", 1)[1]
    assert main.index('id="do-not-load"') < main.index('id="requests"') < main.index('id="endpoints"')
    assert lrn in main.split('id="requests"')[0]
    # search by MRN finds it; the filter and the escaped echo of the query
    status, _, body = get(f"{base_url(gw)}/status/filings?q={mrn}")
    assert status == 200 and f">{lrn}<" in body.decode() and "by MRN" in body.decode()
    status, _, body = get(f"{base_url(gw)}/status/filings?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert status == 200 and "<script>" not in body.decode() and "&lt;script&gt;" in body.decode()
    status, _, body = get(f"{base_url(gw)}/status/filings?state=do-not-load")
    assert status == 200 and f">{lrn}<" in body.decode()
    assert get(f"{base_url(gw)}/status/filings?state=bogus")[0] == 400
    assert get(f"{base_url(gw)}/status/filings?cursor=x'%20OR%201=1")[0] == 400
    status, _, body = get(f"{base_url(gw)}/status/filings/{life['filing']['id']}")
    text = body.decode()
    assert status == 200 and "IE3R01" in text and "IE3Q01" in text and "evidence.zip" in text
    assert get(f"{base_url(gw)}/status/filings/999999999")[0] == 404
    assert get(f"{base_url(gw)}/status/filings/1/evidence/99999")[0] == 404


def test_health_degraded_when_ti_down_and_back_when_it_returns(world: Any) -> None:
    """The real simulator process is stopped, then started again on the same ports."""
    sim, gw = world

    def health() -> tuple[int, dict[str, Any]]:
        status, _, body = get(base_url(gw) + "/health")
        return status, json.loads(body)

    wait_until(lambda: health()[1]["status"] == "ok", 10, "health ok", gw.logs)
    assert sim.stop() == 0
    def health_is(want: str) -> tuple[int, dict[str, Any]] | None:
        h = health()
        return h if h[1]["status"] == want else None

    status, doc = wait_until(lambda: health_is("degraded"), 20, "health degraded with the TI down", gw.logs)
    assert status == 429
    ep = doc["endpoints"]["sti"]
    assert ep["state"] == "down" and ep["consecutive_failures"] >= 2 and ep["last_ping_ok"] is False
    assert any("endpoint sti" in r for r in doc["reasons"]), doc["reasons"]
    samples = scrape(gw)
    assert total(samples, "ics2gw_endpoint_up", endpoint="sti") == 0
    assert total(samples, "ics2gw_health_status", status="degraded") == 1
    sim.start()
    status, doc = wait_until(lambda: health_is("ok"), 20, "health ok again once the TI is back", gw.logs)
    assert status == 200 and doc["endpoints"]["sti"]["consecutive_failures"] == 0
    # and filings flow again
    registered(gw, new_lrn("BACK"))
