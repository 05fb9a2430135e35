"""The transactional outbox: every journal event worth telling the ERP, published in commit order, at least once.

The journal writes its event log in the same commit as every state change, so nothing needs to be written twice:
the outbox is a cursor per sink (``outbox_cursors``) over that log. The drain loop reads the events after the
cursor, publishes each one that maps to a routing key (``formats.routing_key``) and waits for the broker's
confirm, then advances the cursor in the journal; a failed publish is retried, in order, until the broker takes
it. A crash between a confirm and the cursor's advance publishes the same events again with the same
``message_id`` (``ics2gw-event-<id>``): delivery is at least once, and consumers drop repeats by that id.

The cursor starts at the end of the log the first time a sink runs (history is not replayed into a new broker).
Broker-neutral: ``publish`` is any coroutine that returns once the broker has confirmed the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.broker import formats
from gateway.pipeline.delivery import inbox_name

log = logging.getLogger("ics2gw.outbox")

Publish = Callable[[formats.EventMessage], Awaitable[None]]


class EventOutbox:
    def __init__(self, journal: Any, writer: Any, publish: Publish, *, name: str, inbox_dir: Path,
                 batch: int = 200, idle_seconds: float = 0.2, retry_initial: float = 0.5, retry_max: float = 30.0,
                 clock: Any = None, connected: Callable[[], bool] = lambda: True) -> None:
        self.connected = connected
        self.journal, self.writer, self.publish = journal, writer, publish
        self.name, self.inbox_dir = name, Path(inbox_dir)
        self.batch, self.idle = batch, idle_seconds
        self.retry_initial, self.retry_max = retry_initial, retry_max
        import datetime as dt
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.published = 0
        self.failures = 0
        self.skipped = 0
        self._stuck: tuple[int, int] = (0, 0)     # (event id, consecutive failures on it)
        self.max_tries = 5
        self.last_error: str | None = None
        self.cursor: int | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {"sink": self.name, "cursor": self.cursor, "published": self.published, "failures": self.failures,
                "skipped": self.skipped, "last_error": self.last_error}

    async def _start_cursor(self) -> int:
        cur = await asyncio.to_thread(self.journal.outbox_cursor, self.name)
        if cur is not None:
            return cur
        last = await asyncio.to_thread(self.journal.last_event_id)
        now = self.clock()
        await self.writer.submit(lambda j: j.advance_outbox_cursor(self.name, last, now=now))
        log.info("outbox sink=%s starts at event %d (no history replayed)", self.name, last)
        return last

    # ----------------------------------------------------------------------------------------------- building
    def _inbox_files(self, message_id: str) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]] | None:
        """The inbox metadata and parts the inbound sink wrote (durably, before its commit) for ``message_id``."""
        for meta_path in [self.inbox_dir / f"{inbox_name(message_id)}.json"]:
            try:
                meta = json.loads(meta_path.read_bytes())
            except (OSError, ValueError):
                return None
            if meta.get("message_id") != message_id:
                continue
            parts = []
            for p in meta.get("parts", []):
                try:
                    data = (self.inbox_dir / Path(p["file"]).name).read_bytes()
                except (OSError, KeyError):
                    return meta, []
                parts.append(((p.get("href") or p["file"]).removeprefix("cid:"), p.get("mime_type") or
                              "application/octet-stream", data))
            return meta, parts
        return None

    def _build(self, ev: Any, *, without_parts: bool = False) -> formats.EventMessage | None:
        j = self.journal
        if formats.routing_key(ev) is None:
            return None
        if ev.event == "inbound-received":
            sender = (ev.detail or {}).get("sender")
            msg = j.get_message(ev.message_id, direction="in", sender_party=sender)
            filing = j.get_filing(msg.filing_id) if msg is not None and msg.filing_id is not None else None
            intake = j.intake_ref(filing.id) if filing is not None else None
            found = None if without_parts else self._inbox_files(ev.message_id)
            if found is not None:
                meta, parts = found
                meta = dict(meta, parts_available=bool(parts) or not meta.get("parts"))
            else:       # the ERP already took the inbox files: the journal's view, without the payloads
                meta = {"message_id": ev.message_id, "action": (ev.detail or {}).get("action"),
                        "ref_to_message_id": (ev.detail or {}).get("ref_to"), "from": sender,
                        "functional_reference": (ev.detail or {}).get("reference"),
                        "filing": ({"filer_eori": filing.filer_eori, "lrn": filing.lrn, "mrn": filing.mrn,
                                    "state": filing.state} if filing else None), "parts_available": False,
                        **({"parts_omitted": "the event with its parts could not be published"}
                           if without_parts else {})}
                parts = []
            return formats.inbound_event(ev, meta, parts, intake)
        filing = j.get_filing(ev.filing_id)
        intake = j.intake_ref(ev.filing_id) if filing is not None else None
        return formats.filing_event(ev, filing.to_dict() if filing is not None else None, intake)

    # -------------------------------------------------------------------------------------------------- drain
    async def drain_once(self) -> int:
        """Publishes the next batch; returns how many events it went past (0: nothing new)."""
        assert self.cursor is not None
        events = await asyncio.to_thread(self.journal.events_after, self.cursor, limit=self.batch)
        if not events:
            return 0
        last = self.cursor
        for ev in events:
            try:
                stuck = self._stuck[0] == ev.id and self._stuck[1] >= self.max_tries
                msg = await asyncio.to_thread(self._build, ev, without_parts=stuck)
                if msg is not None:
                    await self.publish(msg)        # returns after the broker's confirm; raises otherwise
                    self.published += 1
            except Exception as exc:
                tries = self._stuck[1] + 1 if self._stuck[0] == ev.id else 1
                self._stuck = (ev.id, tries)
                if tries <= self.max_tries + 1 or not self.connected():   # the broker down is no reason to skip
                    if last != self.cursor:       # what went out before this event is not published again
                        await self._advance(last)
                    raise
                # one event that cannot be built or published at all (even without its parts) must not hold
                # back every later event: it is skipped, loudly
                self.skipped += 1
                log.error("outbox sink=%s skipped event %d after %d tries error=%s: %s", self.name, ev.id, tries,
                          type(exc).__name__, exc)
            last = ev.id
        await self._advance(last)
        return len(events)

    async def _advance(self, last: int) -> None:
        now = self.clock()
        await self.writer.submit(lambda j: j.advance_outbox_cursor(self.name, last, now=now))
        self.cursor = last

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.retry_initial
        while not stop.is_set():
            try:
                if self.cursor is None:
                    self.cursor = await self._start_cursor()
                n = await self.drain_once()
                self.last_error = None
                delay = self.retry_initial
                if n:
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle)
                except asyncio.TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down, channel closed, journal busy: retry the same events in order
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("outbox sink=%s publish failed, retrying in %.1fs error=%s", self.name, delay,
                            self.last_error)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(self.retry_max, delay * 2)
