"""Active-active on one PostgreSQL journal (issue 15): three gateway daemons share one database, one spool and one
inbox (tests/multi_support.py); customs pushes through a TCP balancer to whichever instance lives.

1. Instances are killed with SIGKILL at random moments (seeded: ICS2GW_CRASH_SEED) and restarted while filings
   arrive through the shared spool and the APIs of different instances. In the end every LRN has exactly one
   registration at the simulator under one eb:MessageId and one final state in the journal, and no inbound message
   was delivered (inbox) or processed twice, although customs had to push again what a killed instance had not
   acknowledged and leases of killed senders expired and were taken over.
2. The database is restarted (cleanly, then after a crash) while filings flow: the instances reconnect by
   themselves (none exits) and nothing is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.journal.pglocal import LocalPostgres
from tests.multi_support import Cluster, cluster_run
from tests.pg_support import PgDsn
from tests.pipeline_harness import ens, wait_until

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("ICS2GW_CRASH_SEED", "20261202"))
INSTANCES = 3


class Feeder(threading.Thread):
    """Feeds filings spread over the disturbance phase, through three intakes in turn: the shared spool, the API of
    a chosen instance (moving on while it is down), and the API round robin."""

    def __init__(self, cluster: Cluster, lrns: list[str], rng: random.Random, pause: float = 0.12) -> None:
        super().__init__(daemon=True)
        self.cluster, self.lrns, self.rng, self.pause = cluster, lrns, rng, pause
        self.channels: Counter[str] = Counter()
        self.api_attempts = 0
        self.fed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i, lrn in enumerate(self.lrns):
                kind = i % 3
                if kind == 0:
                    self.cluster.drop(f"{lrn}.xml", ens(lrn))
                    self.channels["spool"] += 1
                else:
                    prefer = (i // 3) % len(self.cluster.instances) if kind == 1 else None
                    index, attempts = self.cluster.submit(ens(lrn), prefer=prefer)
                    self.api_attempts += attempts
                    self.channels[f"api-{index}"] += 1
                self.fed += 1
                time.sleep(self.rng.uniform(0.0, self.pause))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def assert_exactly_once(cluster: Cluster, lrns: list[str], rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The end state both tests demand; returns a few numbers for the test's summary line."""
    # journal: one filing per LRN (filings() refuses two), every one registered, nothing else in the journal
    states = {lrn: rows[lrn]["state"] for lrn in lrns}
    assert set(states.values()) == {"registered"}, {k: v for k, v in states.items() if v != "registered"}
    with cluster.reader() as j:
        assert j.count_by_state() == {"registered": len(lrns)}
        inbound_rows = j.list_messages(direction="in", limit=1_000_000)
        orphans = j.list_orphans()
    assert not orphans, orphans

    # customs: exactly one registration per LRN, under one eb:MessageId, with the MRN the journal holds
    report = cluster.sim.report()
    bad = {lrn: (report.get(lrn, {}).get("registrations"), report.get(lrn, {}).get("message_ids"))
           for lrn in lrns if report.get(lrn, {}).get("registrations") != 1
           or len(report.get(lrn, {}).get("message_ids", [])) != 1}
    assert not bad, bad
    assert {lrn: rows[lrn]["mrn"] for lrn in lrns} == {lrn: report[lrn]["mrn"] for lrn in lrns}

    # inbound: each eb:MessageId delivered once to the shared inbox, one IE3R01 per LRN, each processed once by
    # one instance, and recorded once in the journal
    meta = cluster.inbox_metadata()
    ids = [m["message_id"] for m in meta]
    twice = [i for i, c in Counter(ids).items() if c > 1]
    assert not twice, f"delivered to the inbox more than once: {twice}"
    r01 = Counter(m["filing"]["lrn"] for m in meta if m["action"] == "IE3R01" and m.get("filing"))
    assert all(r01[lrn] == 1 for lrn in lrns), {lrn: r01[lrn] for lrn in lrns if r01[lrn] != 1}
    processed = cluster.processed_inbound()
    assert processed and max(processed.values()) == 1, processed.most_common(3)
    in_ids = [(m.sender_party, m.message_id) for m in inbound_rows]
    assert len(in_ids) == len(set(in_ids)) == len(ids)

    # the ERP side is clean: nothing left in the spool or in any instance's work folder
    leftovers = [p.name for p in cluster.spool.iterdir()] + [
        p.name for w in cluster.shared.joinpath("spool").glob("work-*") for p in w.iterdir()]
    assert not leftovers, leftovers
    copies = sum(report[lrn]["copies"] - 1 for lrn in lrns)
    pushes = sum(r["attempts"] for r in cluster.sim.outbound())
    return {"customs_copies": copies, "push_attempts": pushes, "inbound": len(ids)}


def test_three_instances_killed_and_restarted_lose_and_duplicate_nothing(tmp_path: Path, pki: Path,
                                                                         pg_dsn: PgDsn) -> None:
    rng = random.Random(SEED)
    filings, disturbances = 90, 6
    lrns = [f"AA{SEED % 1000:03d}{i:05d}" for i in range(filings)]
    cluster = Cluster.create(tmp_path, pg_dsn, n=INSTANCES, lease_seconds=5)
    t0 = time.monotonic()
    kills = 0
    with cluster_run(cluster):
        cluster.start()
        feeder = Feeder(cluster, lrns, rng)
        feeder.start()
        for k in range(disturbances):
            time.sleep(rng.uniform(0.3, 2.0))
            # mostly one instance at a time; every third disturbance two at once (a lease and a singleton lock
            # held by a dead instance must fail over while a second one is also gone)
            victims = rng.sample(range(INSTANCES), 2 if k % 3 == 2 else 1)
            for i in victims:
                cluster.kill(i)
                kills += 1
            time.sleep(rng.uniform(0.0, 1.0))
            for i in victims:
                cluster.start_instance(i)
        feeder.join(180)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        rows = cluster.wait_all_final(lrns, timeout=120)
        assert len(cluster.live()) == INSTANCES, cluster.logs()
        numbers = assert_exactly_once(cluster, lrns, rows)
        codes = cluster.stop_all()
        assert codes == [0] * INSTANCES, (codes, cluster.logs())
        print(f"\nactive-active crash test: seed={SEED} instances={INSTANCES} filings={filings} kills={kills} "
              f"starts={[gw.starts for gw in cluster.instances]} channels={dict(feeder.channels)} "
              f"api_attempts={feeder.api_attempts} pushes_by_instance={dict(cluster.balancer.connections)} "
              f"{' '.join(f'{k}={v}' for k, v in numbers.items())} elapsed={time.monotonic() - t0:.1f}s")


def test_database_restarted_mid_run_instances_reconnect_and_lose_nothing(tmp_path: Path, pki: Path,
                                                                        pg_server: LocalPostgres,
                                                                        pg_dsn: PgDsn) -> None:
    rng = random.Random(SEED + 1)
    filings = 45
    lrns = [f"DB{SEED % 1000:03d}{i:05d}" for i in range(filings)]
    cluster = Cluster.create(tmp_path, pg_dsn, n=INSTANCES, lease_seconds=5)
    t0 = time.monotonic()
    with cluster_run(cluster, pg_server):
        cluster.start()
        feeder = Feeder(cluster, lrns, rng, pause=0.3)
        feeder.start()
        time.sleep(1.5)
        fed_at = [feeder.fed]
        pg_server.restart()                   # a clean restart (a maintenance, a switchover): sessions are cut
        time.sleep(rng.uniform(1.0, 2.0))
        fed_at.append(feeder.fed)
        pg_server.kill()                      # a crash of the database host ...
        time.sleep(1.0)                       # ... down for a moment, intake answers 503 and senders wait ...
        pg_server.start()                     # ... then crash recovery, same address
        fed_at.append(feeder.fed)
        feeder.join(180)
        # the database went away while filings were arriving, not before or after
        assert 0 < fed_at[0] and fed_at[-1] < filings, fed_at
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        rows = cluster.wait_all_final(lrns, timeout=120)
        # nobody was restarted by the test: every instance reconnected by itself
        assert len(cluster.live()) == INSTANCES and [gw.starts for gw in cluster.instances] == [1] * INSTANCES, \
            cluster.logs()
        numbers = assert_exactly_once(cluster, lrns, rows)
        codes = cluster.stop_all()
        assert codes == [0] * INSTANCES, (codes, cluster.logs())
        print(f"\ndatabase restart test: seed={SEED + 1} instances={INSTANCES} filings={filings} "
              f"fed_at_disruptions={fed_at} channels={dict(feeder.channels)} api_attempts={feeder.api_attempts} "
              f"{' '.join(f'{k}={v}' for k, v in numbers.items())} elapsed={time.monotonic() - t0:.1f}s")


def test_three_instances_broker_intake_and_events_published_once(tmp_path: Path, pki: Path, pg_dsn: PgDsn,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The AMQP side of the crash test: filings also arrive through a broker queue that all three instances consume,
    the journal's event outbox (one instance at a time) publishes every state change, and instances are killed.
    In the end: every filing once at customs, and every event published under one message id only (a repeat after
    a kill is the same message: same id, same bytes), each filing's chain of events without a gap."""
    from gateway.broker.localnode import RabbitNode
    from gateway.broker.localnode import available as broker_available
    why = broker_available()
    if why:
        pytest.skip(f"the AMQP part of the active-active crash test needs a broker: {why}")
    from tests.test_amqp import Erp, new_names

    rng = random.Random(SEED + 2)
    filings, disturbances = 45, 4
    lrns = [f"MQ{SEED % 1000:03d}{i:05d}" for i in range(filings)]
    node = RabbitNode(tmp_path / "rabbit")
    node.start()
    names = new_names()
    amqp = "\n".join(["", "[amqp]", "enabled = true", f"url = {json.dumps(node.url)}",
                      f"username = {json.dumps(node.user)}", 'password_env = "ICS2GW_TEST_AMQP_PASSWORD"',
                      f"queues = [{json.dumps(names['queue'])}]", f"exchange = {json.dumps(names['exchange'])}",
                      f"dead_letter_queue = {json.dumps(names['dlq'])}", "declare = true", "prefetch = 4",
                      "reconnect_initial_seconds = 0.2", "reconnect_max_seconds = 1.0", ""])
    cluster = Cluster.create(tmp_path / "cluster", pg_dsn, n=INSTANCES, lease_seconds=5, extra_conf=amqp,
                             extra_env={"ICS2GW_TEST_AMQP_PASSWORD": node.password})
    erp: Any = None
    t0 = time.monotonic()
    kills = 0
    try:
        erp = Erp(node, names).connect()
        cluster.start()
        # fed at once: each instance creates the outbox's cursor before its intake opens, so the events of filings
        # accepted while the outbox singleton still waits for its grace period are published too (a first start
        # used to skip them)
        broker_lrns = lrns[::3]
        for i, lrn in enumerate(broker_lrns):          # the queue is filled at once; three consumers share it
            erp.publish(ens(lrn), message_id=f"mq-{i}", correlation_id=f"corr-{lrn}")
        feeder = Feeder(cluster, [lrn for lrn in lrns if lrn not in broker_lrns], rng, pause=0.2)
        feeder.start()
        for k in range(disturbances):
            time.sleep(rng.uniform(0.5, 2.0))
            victims = rng.sample(range(INSTANCES), 2 if k % 2 else 1)
            for i in victims:
                cluster.kill(i)
                kills += 1
            time.sleep(rng.uniform(0.0, 1.0))
            for i in victims:
                cluster.start_instance(i)
        feeder.join(180)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        rows = cluster.wait_all_final(lrns, timeout=120)
        numbers = assert_exactly_once(cluster, lrns, rows)

        def registered_events() -> bool:
            erp.drain()
            have = {e["headers"].get("lrn") for e in erp.events if e["rk"] == "filing.registered"}
            return all(lrn in have for lrn in lrns)

        wait_until(registered_events, 60, "a filing.registered event for every filing", cluster.logs)
        repeats = 0
        for lrn in lrns:
            evs = [e for e in erp.events if e["rk"].startswith("filing.") and e["headers"].get("lrn") == lrn]
            by_id: dict[str, dict[str, Any]] = {}
            for e in evs:                              # at least once: a repeat carries the same id and body
                if e["message_id"] in by_id:
                    assert by_id[e["message_id"]]["body"] == e["body"], (lrn, e["message_id"])
                    repeats += 1
                by_id[e["message_id"]] = e
            chain = [json.loads(e["body"]) for e in
                     sorted(by_id.values(), key=lambda e: int(e["message_id"].rsplit("-", 1)[1]))]
            steps = [(c["from"], c["to"]) for c in chain]
            assert chain[0]["from"] == "received" and chain[-1]["to"] == "registered", steps
            # each step starts where the previous one ended: no gap, and no state change published twice under two
            # ids (the copy would start from a state the filing had already left)
            for a, b in zip(chain, chain[1:]):
                assert a["to"] == b["from"], steps
            if lrn in broker_lrns:
                assert all(e["correlation_id"] == f"corr-{lrn}" for e in by_id.values()), lrn
        assert erp.queue_depth(names["queue"]) == 0 and erp.queue_depth(names["dlq"]) == 0
        codes = cluster.stop_all()
        assert codes == [0] * INSTANCES, (codes, cluster.logs())
        print(f"\nactive-active broker test: seed={SEED + 2} instances={INSTANCES} filings={filings} kills={kills} "
              f"broker={len(broker_lrns)} channels={dict(feeder.channels)} events={len(erp.events)} "
              f"event_repeats={repeats} {' '.join(f'{k}={v}' for k, v in numbers.items())} "
              f"elapsed={time.monotonic() - t0:.1f}s")
    except BaseException:
        print(cluster.logs(120))
        raise
    finally:
        if erp is not None:
            erp.close()
        cluster.close()
        node.close()
