"""Structured logs: logfmt values quoted when they need it, JSON with every field its own key, the environment on
every line, and the simulator and the gateway writing the same format (real processes, real filing)."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.logsetup import parse_message, quote, setup_logging
from gateway.transport.logfmt import log as transport_log
from tests.pipeline_harness import (FIXTURES, PARTY, GatewayEnv, SimEnv, free_port, push_url, wait_until)

# an independent logfmt reader: key=bare or key="json-escaped"
_PAIR = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')


def logfmt(line: str) -> dict[str, Any]:
    pos, out = 0, {}
    while pos < len(line):
        m = _PAIR.match(line, pos)
        assert m, f"not logfmt at {pos}: {line!r}"
        out[m.group(1)] = json.loads(m.group(2)) if m.group(2).startswith('"') else m.group(2)
        pos = m.end()
    return out


@pytest.fixture
def captured() -> io.StringIO:
    buf = io.StringIO()
    yield buf
    logging.getLogger().handlers[:] = []


@pytest.mark.parametrize("value", ["/var/lib/my journal.sqlite3", 'say "x=y"', "tab\there", "line\nbreak", "",
                                   "back\\slash", "ünïcödé ok", "a=b"])
def test_kv_values_round_trip(captured: io.StringIO, value: str) -> None:
    setup_logging("info", "kv", environment="conformance", stream=captured)
    logging.getLogger("ics2gw.t").info("opened journal=%s count=%d", value, 3)
    (line,) = captured.getvalue().splitlines()
    doc = logfmt(line)
    assert doc["journal"] == value and doc["count"] == "3" and doc["msg"] == "opened"
    assert doc["environment"] == "conformance" and doc["level"] == "info" and doc["logger"] == "ics2gw.t"


def test_json_gives_every_field_its_own_key(captured: io.StringIO) -> None:
    setup_logging("debug", "json", environment="production", stream=captured)
    lg = logging.getLogger("ics2gw.t")
    lg.info("gateway started environment=%s party_id=%s api_port=%s journal=%s", "production", "NL1", 8481,
            "/a b/j.sqlite3")
    transport_log(logging.WARNING, "send", "production", endpoint="sti", outcome="transport-failure",
                  cause="connection refused by peer")
    lg.warning("alert %s", "alert=stuck filing=NL1/LRN1 detail=no answer after 3600 s")
    lg.info("plain text with %d%% certainty", 100)
    lg.info("reserved msg=%s level=%s", "x", "y")
    try:
        raise ValueError("boom")
    except ValueError:
        lg.exception("failed step=%s", "seal")
    docs = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert all(d["environment"] == "production" for d in docs)
    started, sent, alert, plain, reserved, failed = docs
    assert started == {**started, "msg": "gateway started", "party_id": "NL1", "api_port": 8481,
                       "journal": "/a b/j.sqlite3"}
    assert sent["event"] == "send" and sent["cause"] == "connection refused by peer" and "msg" not in sent
    assert alert["msg"] == "alert" and alert["alert"] == "stuck" and alert["detail"] == "no answer after 3600 s"
    assert plain["msg"] == "plain text with 100% certainty"
    assert reserved["level"] == "info" and reserved["field.msg"] == "x" and reserved["field.level"] == "y"
    assert failed["step"] == "seal" and "ValueError: boom" in failed["exc"]


def test_quote_and_parse_are_inverse() -> None:
    for v in ("plain", "two words", 'q"uote', "=", "", "x\ny"):
        text, fields = parse_message(f"m k={quote(v)}")
        assert text == "m" and fields == {"k": v}


def test_simulator_and_gateway_share_one_format(tmp_path: Path, pki: Path) -> None:
    inbound = free_port(dual=True)
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}]).start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, inbound_port=inbound).start()
    try:
        gw.spool.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / "ens-IE3F32-express.xml", gw.spool.parent / ".x.tmp")
        (gw.spool.parent / ".x.tmp").rename(gw.spool / "ens.xml")
        wait_until(lambda: gw.journal().get("NLEXP2405140003", {}).get("state") == "registered", 60,
                   "the filing to be registered", gw.logs)
    finally:
        assert gw.stop() == 0
        assert sim.stop() == 0
    for path, env in ((sim.dir / "simulator.log", "simulator"), (gw.dir / "gateway.log", "conformance")):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert lines
        for line in lines:
            doc = logfmt(line)
            assert {"ts", "level", "logger"} <= set(doc) and doc["environment"] == env, line
