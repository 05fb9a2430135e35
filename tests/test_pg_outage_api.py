"""The submit API while the PostgreSQL journal is away (one daemon, a private server that the test kills).

What an ERP must see: a submission that was already waiting when the database went away is answered 202 once its
commit went through (never "not filed" for a filing that is then sent); a NEW submission while the writer is
waiting for the database is answered 503 at once, with the storage-unavailable JSON naming the journal, instead of
joining a wait of up to five minutes; the status API answers 503 too, not 500; after the restart the resubmission
is accepted, and every filing is registered exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from gateway.journal.pglocal import LocalPostgres
from tests.multi_support import Cluster, cluster_run
from tests.pg_support import PgDsn
from tests.pipeline_harness import PARTY, ens, http, wait_until


def test_new_submissions_get_503_at_once_while_the_database_is_away(tmp_path: Path, pki: Path,
                                                                      pg_server: LocalPostgres,
                                                                      pg_dsn: PgDsn) -> None:
    cluster = Cluster.create(tmp_path, pg_dsn, n=1)
    lrns = ["PGAWAY0000001", "PGAWAY0000002", "PGAWAY0000003"]
    with cluster_run(cluster, pg_server):
        cluster.start()
        gw = cluster.instances[0]
        status, body = gw.submit(ens(lrns[0]))
        assert status == 202, body
        pg_server.kill()
        waiting: dict[str, Any] = {}
        first = threading.Thread(target=lambda: waiting.update(answer=http(
            "POST", f"{gw.api_url}/filings", ens(lrns[1]), timeout=240)))
        first.start()
        # the first write after the kill (this submission's, or a background one: a lease renewal, a timer) makes
        # the writer wait for the database; this submission then waits for its commit, or, if the writer was
        # already waiting, is answered 503 at once
        wait_until(lambda: "journal unavailable: the database does not answer" in gw.log_text(), 60,
                   "the writer to meet the outage", gw.log_text)
        status, body = gw.submit(ens(lrns[2]))
        assert status == 503, body
        assert body["error"] == "storage-unavailable" and body["storage"] == "journal", body
        assert body["condition"] == "unavailable" and "submit it again later" in body["message"], body
        status, body = http("GET", f"{gw.api_url}/filings/{PARTY}/{lrns[0]}", timeout=120)
        assert status == 503 and body["condition"] == "unavailable", (status, body)
        pg_server.start()
        first.join(240)
        assert not first.is_alive() and waiting["answer"][0] in (202, 503), waiting
        wait_until(lambda: "journal available again after" in gw.log_text(), 60, "the writer's recovery",
                   gw.log_text)
        # a 503 means "not filed": nothing of those submissions is in the journal
        refused = [lrn for lrn, answered in ((lrns[1], waiting["answer"][0]), (lrns[2], 503)) if answered == 503]
        for lrn in refused:
            assert http("GET", f"{gw.api_url}/filings/{PARTY}/{lrn}")[0] == 404, lrn
        for lrn in refused:                           # the ERP's resubmission
            status, body = gw.submit(ens(lrn))
            assert status == 202, body
        rows = cluster.wait_all_final(lrns, timeout=120)
        assert {lrn: rows[lrn]["state"] for lrn in lrns} == dict.fromkeys(lrns, "registered"), rows
        report = cluster.sim.report()
        assert [report[lrn]["registrations"] for lrn in lrns] == [1, 1, 1], report
        assert gw.alive() and gw.starts == 1, gw.log_text()[-4000:]
        assert cluster.stop_all() == [0]
