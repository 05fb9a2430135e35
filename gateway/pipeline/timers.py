"""Expectations with timers: a receipted filing with no IE3R01 / IE3N99 / IE3N01 in time, an open IE3Q02 /
IE3Q03 not answered in time, raise an alert (once per filing and expectation). A request reopened because
customs rejected our answer (IE3N99 / IE3N01 on the IE3R02 / IE3R03) has a new ``opened_at``: its timer starts
again and it alerts again."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from gateway.journal.timeutil import parse_iso
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import PipelineConfig


class Expectations:
    def __init__(self, journal: Any, cfg: PipelineConfig, alerts: Alerts, clock: Any = None,
                 interval: float = 5.0) -> None:
        self.journal, self.cfg, self.alerts = journal, cfg, alerts
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.interval = interval
        self._alerted: set[tuple[str, int, str]] = set()   # (expectation, id, since): a reopened request alerts again
        self._stop = asyncio.Event()

    def check(self) -> list[dict[str, Any]]:
        now = self.clock()
        raised = []
        for f in self.journal.list_filings(state="sent", limit=10000):
            if (now - parse_iso(f["updated"])).total_seconds() > self.cfg.answer_timeout_seconds \
                    and ("answer", f["id"], f["updated"]) not in self._alerted:
                self._alerted.add(("answer", f["id"], f["updated"]))
                raised.append({"kind": "no-answer", "lrn": f["lrn"], "since": f["updated"]})
        for r in self.journal.list_requests(open_only=True):
            if (now - parse_iso(r.opened_at)).total_seconds() > self.cfg.request_timeout_seconds \
                    and (r.kind, r.id, r.opened_at) not in self._alerted:
                self._alerted.add((r.kind, r.id, r.opened_at))
                raised.append({"kind": f"{r.kind}-unanswered", "filing_id": r.filing_id,
                               "request_message_id": r.request_message_id, "since": r.opened_at})
        for a in raised:
            self.alerts.raise_alert(a.pop("kind"), **a)
        return raised

    async def run(self) -> None:
        while not self._stop.is_set():
            await asyncio.to_thread(self.check)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()
