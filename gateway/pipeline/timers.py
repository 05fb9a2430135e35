"""Expectations with timers: a receipted filing with no IE3R01 / IE3N99 / IE3N01 in time, an open IE3Q02 /
IE3Q03 not answered in time, raise an alert (once per filing and expectation). A request reopened because
customs rejected our answer (IE3N99 / IE3N01 on the IE3R02 / IE3R03) has a new ``opened_at``: its timer starts
again and it alerts again.

Once per filing and expectation *across restarts and instances*: with a ``writer``, each alert raised is also
journaled (an ``expectation-alerted`` event on the filing; not published to the ERP), and an expectation that is
not in this process's memory is looked up there before alerting. Without it, a failover of the timers singleton
to another instance, or a restart, alerted every still-open expectation once more."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from gateway.journal.timeutil import parse_iso
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import PipelineConfig

log = logging.getLogger("ics2gw.timers")


class Expectations:
    def __init__(self, journal: Any, cfg: PipelineConfig, alerts: Alerts, clock: Any = None,
                 interval: float = 5.0, writer: Any = None) -> None:
        self.journal, self.cfg, self.alerts, self.writer = journal, cfg, alerts, writer
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.interval = interval
        self._alerted: set[tuple[str, int, str]] = set()   # (expectation, id, since): a reopened request alerts again
        self._stop = asyncio.Event()

    def _journaled(self, filing_id: int | None, key: tuple[str, int, str]) -> bool:
        """Whether another process (a previous holder of the timers, a previous run) already raised this alert."""
        if self.writer is None or filing_id is None:
            return False
        mark = {"expectation": key[0], "id": key[1], "since": key[2]}
        return any(e.event == "expectation-alerted" and e.detail == mark
                   for e in self.journal.events(filing_id=filing_id, limit=100_000))

    def _due(self, filing_id: int | None, key: tuple[str, int, str]) -> bool:
        if key in self._alerted:
            return False
        self._alerted.add(key)
        return not self._journaled(filing_id, key)

    def _mark(self, filing_id: int | None, key: tuple[str, int, str], now: dt.datetime) -> None:
        if self.writer is None or filing_id is None:
            return
        mark = {"expectation": key[0], "id": key[1], "since": key[2]}
        try:   # after the alert: a crash in between alerts twice, never zero times
            self.writer.submit_threadsafe(lambda j: j.append_event("expectation-alerted", now=now,
                                                                   filing_id=filing_id, detail=mark)).result(60)
        except Exception as exc:  # noqa: BLE001 - the alert went out; only its de-duplication mark is missing
            log.warning("expectation alert not journaled key=%s error=%s", key, exc)

    def check(self) -> list[dict[str, Any]]:
        now = self.clock()
        raised: list[tuple[int | None, tuple[str, int, str], dict[str, Any]]] = []
        for f in self.journal.list_filings(state="sent", limit=10000):
            key = ("answer", f["id"], f["updated"])
            if (now - parse_iso(f["updated"])).total_seconds() > self.cfg.answer_timeout_seconds \
                    and self._due(f["id"], key):
                raised.append((f["id"], key, {"kind": "no-answer", "lrn": f["lrn"], "since": f["updated"]}))
        for r in self.journal.list_requests(open_only=True):
            key = (r.kind, r.id, r.opened_at)
            if (now - parse_iso(r.opened_at)).total_seconds() > self.cfg.request_timeout_seconds \
                    and self._due(r.filing_id, key):
                raised.append((r.filing_id, key, {"kind": f"{r.kind}-unanswered", "filing_id": r.filing_id,
                                                  "request_message_id": r.request_message_id,
                                                  "since": r.opened_at}))
        out = []
        for filing_id, key, a in raised:
            self.alerts.raise_alert(a.pop("kind"), **a)
            self._mark(filing_id, key, now)
            out.append(a)
        return out

    async def run(self) -> None:
        while not self._stop.is_set():
            await asyncio.to_thread(self.check)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()
