"""Reception awareness through real outages (issue 11), with the real simulator and the real daemon.

- EBMS:0004/A001 pauses sending for the identity and endpoint, durably (SIGKILL and restart keep the pause), the
  queue stays intact, and `ics2gw endpoint resume` lets it flow again with the same MessageIds.
- The retry time budget: a short configured budget ends a filing in `failed` with a reason that names it, after
  outage alerts; a long one keeps it through an outage until customs is back.
- HTTP 4xx from an endpoint that worked before is retried for the grace period.
- Receipts of pulled messages are durable: a gateway killed (SIGKILL) after journaling a pulled message but before
  the TI acknowledged its Receipt replays the Receipt after the restart, without delivering the message twice.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_harness import (
    PARTY, PULL_PARTY, GatewayEnv, SimEnv, ens, free_port, push_url, wait_until,
)

pytestmark = pytest.mark.slow

UNREGISTERED = "NL999999999"
_seq = itertools.count(1)


def new_lrn(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000:03d}{next(_seq):05d}"


def alerts_of(gw: GatewayEnv, kind: str, timeout: float = 15.0, **match: Any) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return [a for a in gw.alerts() if a.get("alert") == kind and all(a.get(k) == v for k, v in match.items())]
    return wait_until(found, timeout, f"alert {kind} {match}", gw.logs)


def out_messages(gw: GatewayEnv, lrn: str) -> list[dict[str, Any]]:
    life = gw.lifecycle(lrn)
    return [m for m in life["messages"] if m["direction"] == "out"] if life else []


def endpoints(gw: GatewayEnv) -> dict[str, dict[str, Any]]:
    r = gw.cli("endpoint", "list", "--json")
    assert r.returncode == 0, r.stderr
    return {row["endpoint"]: row for row in map(json.loads, r.stdout.splitlines())}


# ----------------------------------------------------------------------------------------------- A001 pause
def test_a001_pauses_the_endpoint_durably_until_an_operator_resumes_it(tmp_path: Path, pki: Path) -> None:
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PULL_PARTY, "delivery": "pull"}]).start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, party_id=UNREGISTERED, pull=True)
    try:
        gw.start()
        first, second = new_lrn("PAUSE"), new_lrn("PAUSE")
        st, body = gw.submit(ens(first))
        assert st == 202, body
        first_id = body["message_id"]
        [alert] = alerts_of(gw, "authorisation-refused", lrn=first)
        assert alert["paused"] is True and alert["endpoint"] == "sti" and alert["party_id"] == UNREGISTERED
        assert "A001" in alert["reason"] and "endpoint resume" in alert["reason"]
        life = gw.wait_state(first, "queued")
        assert "EBMS:0004/A001" in life["filing"]["last_error"]
        [msg] = out_messages(gw, first)
        assert msg["state"] == "queued" and msg["attempts"] == 1      # kept in the queue, not failed
        # everything behind it waits too: the next filing is not even tried
        st, body = gw.submit(ens(second))
        assert st == 202, body
        second_id = body["message_id"]
        assert endpoints(gw)["sti"]["paused"] is True
        time.sleep(1.0)   # several claim cycles (idle_poll 0.1 s): nothing may be sent while paused
        assert [m["attempts"] for m in out_messages(gw, second)] == [0]
        assert [m["attempts"] for m in out_messages(gw, first)] == [1]
        # the pause is durable: a SIGKILL and a restart do not lift it
        gw.kill()
        gw.start()
        time.sleep(1.0)
        assert endpoints(gw)["sti"]["paused"] is True
        assert [m["attempts"] for m in out_messages(gw, first) + out_messages(gw, second)] == [1, 0]
        # resuming an endpoint that does not exist, or is not paused, is refused with a reason
        r = gw.cli("endpoint", "resume", "nowhere")
        assert r.returncode == 1 and "no endpoint named 'nowhere'" in r.stderr
        # the registration is fixed at customs; the operator resumes
        sim.stop()
        with sim.conf.open("a") as f:
            seal = (Path(__file__).resolve().parent.parent / "certs" / "out" / "trader-seal.pem")
            f.write(f'\n[[parties]]\nparty_id = "{UNREGISTERED}"\nseal_certs = ["{seal}"]\ndelivery = "pull"\n')
        sim.start()
        r = gw.cli("endpoint", "resume", "sti")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[0])["resumed_by"] == "operator"
        for lrn in (first, second):
            gw.wait_state(lrn, ("registered", "assessment-complete", "info-requested", "screening-requested",
                                "do-not-load"), timeout=30)
        report = sim.report()
        # the same messages went out: same MessageIds, registered once each
        assert report[first]["message_ids"] == [first_id] and report[first]["registrations"] == 1
        assert report[second]["message_ids"] == [second_id] and report[second]["registrations"] == 1
        assert endpoints(gw)["sti"]["paused"] is False
        r = gw.cli("endpoint", "resume", "sti")
        assert r.returncode == 1 and "not paused" in r.stderr
    finally:
        if gw.proc and gw.proc.alive():
            assert gw.stop() == 0, gw.logs()
        sim.stop()
