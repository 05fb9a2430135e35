"""Push delivery of queued replies to the traders' inbound URLs (ICD 4.1.3.2, c2t option A).

Each reply was sealed once when it was queued; every attempt sends the very same bytes (same MessageId,
AS4 reception awareness). TLS presents the customs client certificate and checks the trader's server
certificate against ``push.server_ca``. A delivery counts only with a signed receipt that refers to the
message and echoes its digests (NRR); anything else (connection failure, 5xx, unsigned or wrong receipt) is
retried with doubling intervals until ``push.max_attempts``; a permanent ebMS error ends it as ``rejected``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.ebms.errors import EbmsFault, is_permanent_error
from gateway.ebms.model import ErrorSignal, Receipt
from gateway.simulator.host import SimulatorHost
from gateway.simulator.registry import monotonic_now

log = logging.getLogger("ics2gw.simulator")
PUSH_CONCURRENCY = 16  # replies pushed in parallel to one trader (each still retried on its own)


class Pusher:
    def __init__(self, sim: SimulatorHost, ssl_context: ssl.SSLContext) -> None:
        self.sim = sim
        self.ssl = ssl_context
        self.event = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        self.event.set()

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(
            # keep-alive and a small pool, as a Domibus-based TI pushes (a handshake per push cost 13 % of the CPU)
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=PUSH_CONCURRENCY, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=self.sim.cfg.push_timeout))
        try:
            while True:
                faults = self.sim.faults
                # reception awareness of pulled messages runs on the clock, pulled or not (EBMS:0301)
                for mid in self.sim.registry.expire_pulled(monotonic_now(), faults.reoffer_after_seconds,
                                                           faults.pull_max_offers):
                    log.warning("event=pull_missing_receipt message_id=%s error=EBMS:0301", mid)
                rows = [] if faults.hold_replies else self.sim.registry.due_pushes(
                    monotonic_now(), newest_first=faults.out_of_order)
                if faults.out_of_order:
                    for row in rows:  # the order is the point of this fault: one at a time
                        await self.push(row)
                else:
                    for i in range(0, len(rows), PUSH_CONCURRENCY):
                        await asyncio.gather(*(self.push(r) for r in rows[i:i + PUSH_CONCURRENCY]))
                if rows:
                    continue
                nxt = self.sim.registry.next_push_time()
                wait = 1.0 if nxt is None else max(0.01, min(1.0, nxt - monotonic_now()))
                self.event.clear()
                try:
                    await asyncio.wait_for(self.event.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            await self._session.close()

    async def _post(self, url: str, row: dict[str, Any]) -> tuple[int, str, bytes]:
        assert self._session is not None
        async with self._session.post(url, data=row["body"], headers={"Content-Type": row["content_type"]}) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()

    async def push(self, row: dict[str, Any]) -> None:
        cfg, reg = self.sim.cfg, self.sim.registry
        party = cfg.party(row["party_id"])
        mid = row["message_id"]
        if party is None or not party.push_url:
            reg.push_result(row["id"], state="failed", error="no push URL for the party")
            return
        try:
            status, ctype, body = await self._post(party.push_url, row)
            verdict = self.judge(row, status, ctype, body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
            verdict = ("retry", f"transport: {type(exc).__name__}: {exc}")
        state, why = verdict
        if state == "delivered":
            reg.push_result(row["id"], state="delivered", delivered=True)
            log.info("event=push_delivered message_id=%s action=%s party=%s", mid, row["action"], party.party_id)
            if self.sim.faults.take("duplicate_pushes"):
                try:
                    st, ct, b = await self._post(party.push_url, row)
                    dup_state, dup_why = self.judge(row, st, ct, b)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    dup_state, dup_why = "retry", str(exc)
                if dup_state == "delivered":
                    reg.push_result(row["id"], state="delivered", delivered=True)
                log.info("event=push_duplicate message_id=%s result=%s %s", mid, dup_state, dup_why or "")
            return
        if state == "rejected":
            reg.push_result(row["id"], state="rejected", error=why)
            log.warning("event=push_rejected message_id=%s reason=%r", mid, why)
            return
        attempts = int(row["attempts"]) + 1
        if attempts >= cfg.push_max_attempts:
            reg.push_result(row["id"], state="failed", error=why)
            log.warning("event=push_failed message_id=%s attempts=%d reason=%r", mid, attempts, why)
            return
        interval = min(60.0, self.sim.faults.push_retry_seconds * (2 ** (attempts - 1)))
        reg.push_result(row["id"], state="queued", error=why, retry_at=monotonic_now() + interval)
        log.info("event=push_retry message_id=%s attempt=%d in=%.2fs reason=%r", mid, attempts, interval, why)

    def judge(self, row: dict[str, Any], status: int, ctype: str, body: bytes) -> tuple[str, str | None]:
        """("delivered" | "retry" | "rejected", reason) for one HTTP answer to a push."""
        if not body:
            return "retry", f"HTTP {status} without a receipt"
        try:
            msg = self.sim.engine.open(ctype, body, accept_unsigned_errors=True)
        except EbmsFault as exc:
            return "retry", f"HTTP {status}: unacceptable answer ({exc.code}: {exc.message})"
        receipts = [s for s in msg.messaging.signals if isinstance(s, Receipt)]
        errors = [s for s in msg.messaging.signals if isinstance(s, ErrorSignal)]
        if receipts:
            r = receipts[0]
            if msg.signature is None:
                return "retry", "the receipt is not signed"
            if r.ref_to_message_id != row["message_id"]:
                return "retry", f"the receipt refers to {r.ref_to_message_id}"
            if {n.uri: n.digest_value for n in r.nrr_references} != json.loads(row["digests"]):
                return "retry", "the receipt's NRR digests do not match (EBMS:0302)"
            der = msg.signature.signer.public_bytes(Encoding.DER)
            if der not in self.sim.registered_certs.get(row["party_id"], set()):
                return "retry", "the receipt is sealed by a certificate not registered for the party"
            return "delivered", None
        if errors:
            errs = errors[0].errors
            text = "; ".join(f"{e.error_code} {e.short_description or ''} {e.description or ''}".strip()
                             for e in errs)
            if any(is_permanent_error(e) for e in errs if e.severity.lower() != "warning"):
                return "rejected", text
            return "retry", text
        return "retry", f"HTTP {status}: a {msg.kind} instead of a receipt"
