"""The HMRC S&S GB route end to end: the daemon and the HMRC stand-in as real processes, HTTPS on loopback.

IE315 through the spool and the API -> POST -> CorrelationId journaled -> outcome polled -> IE328 registers the
filing with HMRC's MRN -> DELETE. Then IE313 amendments (IE304 / IE305), an IE316 rejection with its functional
errors, local uk-ssgb refusal, IE351 with its urgent alert, and the daemon killed between journaling an outcome
and acknowledging it: nothing lost, nothing delivered twice."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

from tests.hmrc_support import EORI, FILER, ie313, ie315
from tests.pipeline_harness import GatewayEnv, Proc, free_port, http, q, run_cli, spawn, wait_until

SECRET_ENV = "ICS2GW_TEST_HMRC_SECRET"
SECRET = "standin-secret-for-tests"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Any:
    import os
    d = tmp_path_factory.mktemp("hmrc-standin")
    port = free_port()
    os.environ["HMRC_CLIENT_SECRET"] = SECRET
    proc = spawn("hmrc-standin", ["simulate-hmrc", "--port", str(port), "--cert", str(pki / "customs-tls-server.pem"),
                                  "--key", str(pki / "customs-tls-server.key"), "--outcome-delay", "0.2",
                                  "--rate", "200"], d / "standin.log", d)
    wait_until(lambda: not proc.alive() or "ready port=" in proc.log.read_text(), 20, "the HMRC stand-in",
               proc.tail)
    assert proc.alive(), proc.tail()
    yield types.SimpleNamespace(port=port, proc=proc, admin=f"https://127.0.0.1:{port}/admin")
    proc.terminate()


def admin(standin: Any, pki: Path, path: str, body: dict[str, Any] | None = None) -> Any:
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=str(pki / "customs-root.pem"))
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{standin.admin}/{path}", data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def gw(tmp_path: Path, standin: Any, pki: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    admin(standin, pki, "settings", {"default_decision": "accept", "interventions": False})
    sim = types.SimpleNamespace(sti_url=f"https://127.0.0.1:{free_port()}/ics2/sti")   # no ICS2 filing here
    env = GatewayEnv.create(tmp_path / "gw", sim)
    redirect = free_port()
    env.conf.write_text(env.conf.read_text() + "\n".join([
        "", "[hmrc]", "enabled = true", f"base_url = {q(f'https://127.0.0.1:{standin.port}')}", f"eori = {q(EORI)}",
        'client_id = "ics2gw-test-client"', f"client_secret_env = {q(SECRET_ENV)}",
        f"redirect_uri = {q(f'http://127.0.0.1:{redirect}/callback')}",
        f"token_file = {q(str(env.var / 'hmrc-token.json'))}", f"ca_file = {q(str(pki / 'customs-root.pem'))}",
        "poll_seconds = 0.2", "max_poll_seconds = 1.0", ""]))
    r = env.cli("hmrc", "authorize", "--follow", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "authorised" in r.stdout and SECRET not in r.stdout + r.stderr
    yield env
    if env.proc is not None and env.proc.alive():
        env.stop()


def wait_filing(env: GatewayEnv, lrn: str, states: tuple[str, ...], timeout: float = 30.0) -> dict[str, Any]:
    def check() -> Any:
        life = env.lifecycle(lrn, filer=FILER)
        return life if life and life["filing"]["state"] in states else None
    return wait_until(check, timeout, f"{lrn} in {states}",
                      lambda: json.dumps(env.lifecycle(lrn, filer=FILER), default=str)[:3000] + "\n" + env.logs())


def hmrc_inbox(env: GatewayEnv, action: str) -> list[dict[str, Any]]:
    return [m for m in env.inbox_metadata() if m.get("route") == "hmrc-ssgb" and m.get("action") == action]


def test_ie315_registered_then_amended_accepted_and_rejected(gw: GatewayEnv, standin: Any, pki: Path) -> None:
    gw.start()
    gw.drop("gb-1.xml", ie315("GB-LRN-0001"))
    life = wait_filing(gw, "GB-LRN-0001", ("registered",))
    report = admin(standin, pki, "report")
    mrn = report["registered"][f"{EORI}/GB-LRN-0001"]
    assert life["filing"]["mrn"] == mrn and life["filing"]["endpoint"] == "hmrc"
    events = [e["event"] for e in life["events"]]
    assert events.index("hmrc-accepted") < events.index("hmrc-IE328")          # correlation id journaled first
    sub = [s for s in report["submissions"] if s["lrn"] == "GB-LRN-0001"]
    assert len(sub) == 1
    ie328 = hmrc_inbox(gw, "IE328")
    assert len(ie328) == 1 and ie328[0]["mrn"] == mrn and ie328[0]["correlated_by"] == "CorrelationId"
    assert ie328[0]["correlation_id"] == sub[0]["correlation_id"]
    wait_until(lambda: admin(standin, pki, "report")["outcomes"][sub[0]["correlation_id"]]["acked"], 10,
               "the DELETE of the IE328")
    # the access token expires at HMRC: the next call refreshes once and goes on
    admin(standin, pki, "expire-tokens", {})
    status, body = gw.submit(ie313(mrn))
    assert status in (200, 201, 202), body
    wait_filing(gw, "GB-LRN-0001", ("amended",))
    assert len(hmrc_inbox(gw, "IE304")) == 1
    token = json.loads((gw.var / "hmrc-token.json").read_text())
    assert token["generation"] == 2
    # a rejected amendment leaves the ENS as it stood (amended), with HMRC's functional errors
    admin(standin, pki, "settings", {"default_decision": "reject"})
    status, body = gw.submit(ie313(mrn, amended_at="202612021100"))
    assert status in (200, 201, 202), body
    wait_until(lambda: hmrc_inbox(gw, "IE305"), 20, "the IE305")
    life = wait_filing(gw, "GB-LRN-0001", ("amended",))
    assert hmrc_inbox(gw, "IE305")[0]["errors"]
    wait_until(lambda: any(a["alert"] == "amendment-rejected" for a in gw.alerts()), 20,
               "the amendment-rejected alert (hooks run one at a time, after the commit)")
    assert gw.stop() == 0
    assert SECRET not in (gw.dir / "gateway.log").read_text()
    assert token["access_token"] not in (gw.dir / "gateway.log").read_text()


def test_ie316_rejection_local_refusal_and_ie351(gw: GatewayEnv, standin: Any, pki: Path) -> None:
    gw.start()
    admin(standin, pki, "settings", {"default_decision": "reject"})
    status, body = gw.submit(ie315("GB-LRN-0316"))
    assert status in (200, 201, 202), body
    life = wait_filing(gw, "GB-LRN-0316", ("rejected",))
    last = [e for e in life["events"] if e["event"] == "hmrc-IE316"][0]
    assert last["detail"]["findings"][0]["code"] == "12"
    assert any(a["alert"] == "rejected" and a["lrn"] == "GB-LRN-0316" for a in gw.alerts())
    # what HMRC would refuse never leaves: uk-ssgb findings, no request to HMRC
    before = len(admin(standin, pki, "report")["submissions"])
    bad = ie315("GB-LRN-BAD").replace(b"<TraModAtBorHEA76>4</TraModAtBorHEA76>", b"<TraModAtBorHEA76>X</TraModAtBorHEA76>")
    status, body = gw.submit(bad)
    assert status == 422 and body["findings"], body
    status, body = gw.submit(ie315("GB-LRN-EORI", sender="GB999999999"))
    assert status == 422 and "403" in json.dumps(body), body
    assert len(admin(standin, pki, "report")["submissions"]) == before
    # an advance intervention notification: inbox, urgent alert, no state change
    admin(standin, pki, "settings", {"default_decision": "accept", "interventions": True})
    gw.drop("gb-351.xml", ie315("GB-LRN-0351"))
    wait_filing(gw, "GB-LRN-0351", ("registered",))
    wait_until(lambda: hmrc_inbox(gw, "IE351"), 20, "the IE351")
    wait_until(lambda: [a for a in gw.alerts() if a["alert"] == "risk-notification"], 10, "the IE351 alert")
    alert = [a for a in gw.alerts() if a["alert"] == "risk-notification"][0]
    assert alert["category"] == "A" and alert["lrn"] == "GB-LRN-0351"
    assert gw.lifecycle("GB-LRN-0351", filer=FILER)["filing"]["state"] == "registered"


def test_crash_between_journaling_an_outcome_and_acknowledging_it(gw: GatewayEnv, standin: Any, pki: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS2GW_HMRC_CRASH_AT", "outcome-journaled")
    gw.start()
    gw.drop("gb-crash.xml", ie315("GB-LRN-CRASH"))
    wait_until(lambda: not gw.proc.alive(), 30, "the gateway to die at the crash point", gw.logs)
    assert gw.proc.popen.returncode == -9
    cid = [s for s in admin(standin, pki, "report")["submissions"] if s["lrn"] == "GB-LRN-CRASH"][0]["correlation_id"]
    assert admin(standin, pki, "report")["outcomes"][cid]["acked"] is False     # journaled, not acknowledged
    assert len(hmrc_inbox(gw, "IE328")) == 1
    monkeypatch.delenv("ICS2GW_HMRC_CRASH_AT")
    gw.start()
    wait_until(lambda: admin(standin, pki, "report")["outcomes"][cid]["acked"], 20, "the DELETE after restart",
               gw.logs)
    life = wait_filing(gw, "GB-LRN-CRASH", ("registered",))
    assert [e["event"] for e in life["events"]].count("hmrc-IE328") == 1
    assert len(hmrc_inbox(gw, "IE328")) == 1                                    # delivered once
    assert len([s for s in admin(standin, pki, "report")["submissions"] if s["lrn"] == "GB-LRN-CRASH"]) == 1


def test_without_the_route_an_ie315_is_refused_with_a_hint(tmp_path: Path) -> None:
    sim = types.SimpleNamespace(sti_url=f"https://127.0.0.1:{free_port()}/ics2/sti")
    env = GatewayEnv.create(tmp_path / "gw", sim)
    env.start()
    try:
        status, body = env.submit(ie315("GB-LRN-NOROUTE"))
        assert status == 422 and body.get("error") == "no-route", body
        assert "[hmrc]" in json.dumps(body)
    finally:
        env.stop()


def test_configuration_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = types.SimpleNamespace(sti_url="https://127.0.0.1:1/ics2/sti")
    env = GatewayEnv.create(tmp_path / "gw", sim)
    base = env.conf.read_text()
    cases = {
        'client_secret = "x"': "hmrc.client_secret",
        'base_url = "http://127.0.0.1:1"': "hmrc.base_url",
        'eori = "NL123"': "hmrc.eori",
        'test_headers = { bogus = "x" }': "hmrc.test_headers.bogus",
        'typo_key = 1': "hmrc",
        'base_url = "https://user:pw@127.0.0.1:1"': "hmrc.base_url",
        'redirect_uri = "http://0.0.0.0:8765/callback"': "hmrc.redirect_uri",
        'endpoint = "../x"': "hmrc.endpoint",
        'client_id = ""': "hmrc.client_id",
    }
    for line, key in cases.items():
        lines = ["[hmrc]", "enabled = true", 'client_id = "c"', 'client_secret_env = "PATH"',
                 'base_url = "https://127.0.0.1:1"', 'eori = "GB1234231"']
        k = line.split(" =")[0]
        lines = [x for x in lines if not x.startswith(k + " ")] + [line]
        env.conf.write_text(base + "\n" + "\n".join(lines) + "\n")
        r = run_cli(["hmrc", "status", "--conf", str(env.conf)], env.dir)
        assert r.returncode == 3 and key in r.stderr, (line, r.stderr)
