"""The crash test: many filings through the spool and the API while the gateway is killed with SIGKILL at random
moments (seeded) and restarted; the simulator keeps running.

In the end: every LRN registered exactly once at customs under one eb:MessageId, registered in the journal, and no
inbound message delivered (processed) twice, although customs had to push again what a killed gateway had not
acknowledged.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_harness import PARTY, GatewayEnv, SimEnv, ens, free_port, push_url, wait_until

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("ICS2GW_CRASH_SEED", "20261124"))
FILINGS = 60          # half through the spool, half through the API
KILLS = 5


class Feeder(threading.Thread):
    """Submits filings through the API (retrying while the gateway is down: intake is idempotent) and drops
    files into the spool, spread over the kill phase."""

    def __init__(self, gw: GatewayEnv, lrns: list[str], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.gw, self.lrns, self.rng = gw, lrns, rng
        self.api_retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i, lrn in enumerate(self.lrns):
                if i % 2:
                    self.gw.drop(f"{lrn}.xml", ens(lrn))
                else:
                    while True:
                        try:
                            status, body = self.gw.submit(ens(lrn))
                        except OSError:
                            status, body = 0, None
                        if status == 202:
                            break
                        assert status == 0 or status >= 500, (status, body)   # only "gateway down" is retried
                        self.api_retries += 1
                        time.sleep(0.1)
                time.sleep(self.rng.uniform(0.0, 0.15))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_sigkill_restarts_lose_nothing_and_duplicate_nothing(tmp_path: Path, pki: Path) -> None:
    rng = random.Random(SEED)
    inbound = free_port(dual=True)
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}],
                        faults={"delay_seconds": 0.02, "push_retry_seconds": 0.2},
                        extra="")
    # customs keeps pushing to a gateway that is down for a while: more attempts than the default 10
    sim.conf.write_text(re.sub(r"max_attempts = \d+", "max_attempts = 60", sim.conf.read_text()))
    sim.start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, inbound_port=inbound,
                           retry={"initial_seconds": 0.1, "max_seconds": 0.5, "max_attempts": 100},
                           pipeline={"lease_seconds": 2})
    lrns = [f"CRASH{SEED % 1000:03d}{i:04d}" for i in range(FILINGS)]
    t0 = time.monotonic()
    try:
        gw.start()
        feeder = Feeder(gw, lrns, rng)
        feeder.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.4, 2.0))
            gw.kill()
            time.sleep(rng.uniform(0.0, 0.5))
            gw.start()
        feeder.join(60)
        assert not feeder.is_alive() and feeder.error is None, feeder.error

        def all_registered() -> bool:
            rows = gw.journal()
            return all(rows.get(lrn, {}).get("state") == "registered" for lrn in lrns)

        def why() -> str:
            rows = gw.journal()
            return json.dumps({lrn: rows.get(lrn, {}).get("state") for lrn in lrns
                               if rows.get(lrn, {}).get("state") != "registered"}) + "\n" + gw.logs()

        wait_until(all_registered, 40, "every filing registered", why, interval=0.5)
        assert gw.stop() == 0, gw.logs()
        elapsed = time.monotonic() - t0

        # customs: exactly one registration per LRN, under one MessageId
        report = sim.report()
        assert set(lrns) <= set(report)
        bad = {lrn: (report[lrn]["registrations"], report[lrn]["message_ids"]) for lrn in lrns
               if report[lrn]["registrations"] != 1 or len(report[lrn]["message_ids"]) != 1}
        assert not bad, bad
        copies = sum(report[lrn]["copies"] - 1 for lrn in lrns)

        # journal: every filing registered with the MRN customs allocated
        rows = gw.journal()
        assert {lrn: rows[lrn]["mrn"] for lrn in lrns} == {lrn: report[lrn]["mrn"] for lrn in lrns}

        # inbound: one inbox delivery per distinct eb:MessageId, one IE3R01 per LRN, each processed once
        meta = gw.inbox_metadata()
        ids = [m["message_id"] for m in meta]
        assert len(ids) == len(set(ids))
        r01 = Counter(m["filing"]["lrn"] for m in meta if m["action"] == "IE3R01" and m["filing"])
        assert all(r01[lrn] == 1 for lrn in lrns), {lrn: r01[lrn] for lrn in lrns if r01[lrn] != 1}
        log = gw.proc.log.read_text() if gw.proc else ""
        processed = Counter(re.findall(r"logger=ics2gw\.inbound environment=\S+ msg=inbound message_id=(\S+)", log))
        assert processed and max(processed.values()) == 1, processed.most_common(3)
        from gateway.journal.sqlite import SqliteJournal
        j = SqliteJournal.open_reader(gw.var / "journal.sqlite3")
        try:
            inbound_rows = j.list_messages(direction="in", limit=100000)
            in_ids = [(m.sender_party, m.message_id) for m in inbound_rows]
            assert len(in_ids) == len(set(in_ids)) == len(ids)
            assert not j.list_orphans()
            assert j.count_by_state() == {"registered": FILINGS}
        finally:
            j.close()
        deliveries = sum(r["deliveries"] for r in sim.outbound())
        pushes = sum(r["attempts"] for r in sim.outbound())
        print(f"\ncrash test: seed={SEED} filings={FILINGS} kills={KILLS} starts={gw.starts} "
              f"api_retries={feeder.api_retries} customs_copies={copies} push_attempts={pushes} "
              f"push_deliveries={deliveries} inbound={len(ids)} duplicates=0 elapsed={elapsed:.1f}s")
    except BaseException:
        if gw.proc is not None:
            print(gw.logs())
        raise
    finally:
        if gw.proc is not None and gw.proc.alive():
            gw.proc.kill()
        assert sim.stop() == 0
