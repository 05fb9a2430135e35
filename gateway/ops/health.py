"""``/health`` that tells the truth: what the gateway knows about each endpoint, its journal, its queue and its
certificates, judged by documented rules into ``ok``, ``degraded`` or ``failing``.

The rules (README "Health, metrics and status page"; every reason is listed in ``reasons``):

- ``failing`` (HTTP 503) — the gateway cannot do its job whatever customs does: the journal is not writable (the
  writer thread died; SQLite: its folder is not writable, or less than ``[health] min_free_bytes`` is free;
  PostgreSQL: the database does not answer a cheap query within ``JOURNAL_PING_TIMEOUT`` seconds); the seal or
  the TLS client certificate is expired or unreadable; a probe itself broke.
- ``degraded`` (HTTP ``[health] degraded_http_status``, 429 by default, the "warning" status of Consul's HTTP
  checks) — it works but something needs a look: an endpoint failed ``degraded_after_failures`` exchanges in a row
  (send, ping, pull or ack all count; one success resets it); an endpoint is paused; the oldest queued message of
  a lane is older than ``queue_age_degraded_seconds``; a certificate or CRL is within its warning threshold, or a
  trust anchor, intermediate, customs certificate or CRL has expired.
- ``ok`` (HTTP 200) — none of the above. An endpoint nobody talked to yet is ``unknown``, not a failure.

Why an active ping: with no traffic, nothing would notice that the TI went away until the first filing failed.
``Prober`` sends the ebMS test service (eDelivery 1.4.2.4) to each endpoint every ``ping_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("ics2gw.health")


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class EndpointState:
    name: str
    last_success: float | None = None
    last_success_exchange: str | None = None
    last_failure: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    last_ping: float | None = None
    last_ping_ok: bool | None = None
    exchanges: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"last_success": _iso(self.last_success), "last_success_exchange": self.last_success_exchange,
                "last_failure": _iso(self.last_failure), "last_error": self.last_error,
                "consecutive_failures": self.consecutive_failures, "last_ping": _iso(self.last_ping),
                "last_ping_ok": self.last_ping_ok, "exchanges": self.exchanges}


class EndpointTracker:
    """What the transport saw per endpoint; fed by ``metrics.exchange`` from every exchange of ``As4Client``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, EndpointState] = {}

    def record(self, endpoint: str, exchange: str, reached: bool, detail: str = "",
               at: float | None = None) -> EndpointState:
        at = time.time() if at is None else at
        with self._lock:
            st = self._states.setdefault(endpoint, EndpointState(endpoint))
            st.exchanges += 1
            if exchange == "ping":
                st.last_ping, st.last_ping_ok = at, reached
            if reached:
                st.last_success, st.last_success_exchange, st.consecutive_failures = at, exchange, 0
            else:
                st.last_failure, st.last_error = at, detail or "failed"
                st.consecutive_failures += 1
            return EndpointState(**st.__dict__)

    def get(self, endpoint: str) -> EndpointState:
        with self._lock:
            st = self._states.get(endpoint)
            return EndpointState(**st.__dict__) if st else EndpointState(endpoint)

    def reset(self) -> None:
        with self._lock:
            self._states.clear()


ENDPOINTS = EndpointTracker()


@dataclass
class HealthSources:
    """What the daemon hands to the health report: each a cheap callable or object (all optional for tests)."""
    environment: str
    endpoints: dict[str, Any]                         # name -> transport Endpoint (url)
    queries: Any = None                               # JournalQueries
    journal_path: Path | None = None                  # SQLite only: its folder's writability and free space
    journal_backend: str = "sqlite"
    journal_name: str | None = None                   # describe(): a path or postgresql://user@host:port/db
    journal_ping: Callable[[], Any] | None = None     # PostgreSQL: a cheap query on the reader (raises if down)
    instance: str | None = None                       # gateway.instance.instance_id()
    leader_of: Callable[[], list[str]] | None = None  # the singleton tasks this instance runs now
    writer_alive: Callable[[], bool] | None = None
    writer_stats: Callable[[], Any] | None = None
    expiry: Any = None                                # ExpiryWatch
    paused: Callable[[], Any] | None = None           # -> iterable of paused endpoint names (if the sender pauses)
    extra: Callable[[], dict[str, Any]] | None = None  # e.g. the puller's status
    started_at: float = field(default_factory=time.time)


def build_report(src: HealthSources, cfg: Any, *, now: float | None = None) -> dict[str, Any]:
    """The /health document; ``cfg`` is an ``OpsConfig``. Never raises: a broken probe is a ``failing`` reason."""
    now = time.time() if now is None else now
    failing: list[str] = []
    degraded: list[str] = []
    doc: dict[str, Any] = {"environment": src.environment, "checked_at": _iso(now),
                           "uptime_seconds": round(now - src.started_at, 1)}
    if src.instance is not None:
        doc["instance"] = src.instance
    if src.leader_of is not None:
        doc["leader_of"] = list(src.leader_of())

    def probe(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a broken probe makes the service failing, not dead
            log.warning("health probe failed probe=%s error=%s", name, exc)
            failing.append(f"{name}: probe failed ({type(exc).__name__}: {str(exc)[:120]})")
            return None

    paused = set(probe("paused", lambda: list(src.paused()) if src.paused else []) or [])
    endpoints: dict[str, Any] = {}
    for name, ep in src.endpoints.items():
        st = ENDPOINTS.get(name)
        d = {"url": getattr(ep, "url", None), "paused": name in paused,
             "state": "unknown" if st.exchanges == 0 else ("down" if st.consecutive_failures else "up"),
             **st.to_dict()}
        endpoints[name] = d
        if st.consecutive_failures >= cfg.degraded_after_failures:
            degraded.append(f"endpoint {name}: {st.consecutive_failures} failed exchanges in a row "
                            f"(last: {st.last_error})")
        if name in paused:
            degraded.append(f"endpoint {name} is paused")
    doc["endpoints"] = endpoints
    doc["paused_endpoints"] = sorted(paused)

    doc["journal"] = probe("journal", lambda: _journal(src, cfg, failing))
    if doc["journal"] and "commits" in doc["journal"]:  # the keys /health had before (bench/e2e.py reads them)
        doc["journal_commits"], doc["journal_changes"] = doc["journal"]["commits"], doc["journal"]["changes"]
    if src.queries is not None:
        lanes = probe("queue", src.queries.lanes)
        if lanes is not None:
            now_dt = dt.datetime.fromtimestamp(now, dt.UTC)
            queue = {}
            for lane, st in sorted(lanes.items()):
                age = round(st.oldest_age_seconds(now_dt), 1)
                queue[lane] = {"queued": st.queued, "sending": st.sending, "oldest_queued_at": st.oldest_queued_at,
                               "oldest_age_seconds": age}
                if st.queued and age > cfg.queue_age_degraded_seconds:
                    degraded.append(f"lane {lane}: oldest queued message waits {age:.0f}s "
                                    f"(> {cfg.queue_age_degraded_seconds:.0f}s)")
            doc["queue"] = queue
        doc["filings"] = probe("filings", src.queries.counts_by_state)
    if src.expiry is not None:
        items = src.expiry.items
        doc["certificates"] = [it.to_dict(cfg.expiry) for it in items if it.kind == "certificate"]
        doc["crls"] = [it.to_dict(cfg.expiry) for it in items if it.kind == "crl"]
        for it in items:
            level = it.level(cfg.expiry)
            if level == "ok":
                continue
            what = f"{it.kind} {it.role} {it.subject!r} ({it.source})"
            own = it.role in ("seal", "tls-client")
            if own and (level == "expired" or it.error):
                failing.append(f"{what}: {it.error or 'expired ' + it.not_after}")
            elif level == "expired":
                degraded.append(f"{what}: expired {it.not_after}")
            elif it.error:
                degraded.append(f"{what}: {it.error}")
            else:
                degraded.append(f"{what}: {level}, {it.days_left} days left (until {it.not_after})")
    if src.extra is not None:
        extra = probe("components", src.extra)
        if extra:
            doc.update(extra)
    status = "failing" if failing else "degraded" if degraded else "ok"
    doc["status"] = status
    doc["reasons"] = failing + degraded
    from gateway.ops import metrics
    for s in ("ok", "degraded", "failing"):
        metrics.HEALTH_STATUS.labels(s).set(1 if s == status else 0)
    return {"status": status, **{k: v for k, v in doc.items() if k != "status"}}


JOURNAL_PING_TIMEOUT = 2.0   # seconds: a database slower than this to answer one tiny query is failing
_PING_POOL: Any = None


def _ping(fn: Callable[[], Any], timeout: float) -> tuple[bool, str, float]:
    """(answered, detail, seconds) for ``fn`` run in a thread of its own, waited for at most ``timeout``.
    One thread: while a ping hangs (a database host gone without a TCP reset), the next ones time out at once
    instead of piling up threads."""
    global _PING_POOL
    from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
    if _PING_POOL is None:
        _PING_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ics2gw-journal-ping")
    started = time.monotonic()
    fut = _PING_POOL.submit(fn)
    try:
        fut.result(timeout=timeout)
    except FutureTimeout:
        return False, f"no answer within {timeout:.0f}s", time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - the answer is the error
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return False, f"{type(exc).__name__}: {first}", time.monotonic() - started
    return True, "ok", time.monotonic() - started


def _journal(src: HealthSources, cfg: Any, failing: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(src.journal_path) if src.journal_path else None,
                           "backend": src.journal_backend}
    if src.journal_name is not None:
        out["name"] = src.journal_name
    alive = src.writer_alive() if src.writer_alive else True
    out["writer_alive"] = alive
    if not alive:
        failing.append("journal: the writer thread is not running")
    if src.journal_ping is not None:        # PostgreSQL: can we reach the database at all?
        ok, detail, took = _ping(src.journal_ping, JOURNAL_PING_TIMEOUT)
        out.update(reachable=ok, ping_ms=round(took * 1000, 1))
        if not ok:
            out["error"] = detail
            failing.append(f"journal: database {src.journal_name or ''} does not answer ({detail})")
    if src.journal_backend == "sqlite" and src.journal_path is not None:
        folder = src.journal_path.parent
        writable = os.access(folder, os.W_OK) and (not src.journal_path.exists() or
                                                   os.access(src.journal_path, os.W_OK))
        free = shutil.disk_usage(folder).free
        out.update(folder_writable=writable, free_bytes=free)
        if not writable:
            failing.append(f"journal: {folder} or {src.journal_path.name} is not writable")
        if free < cfg.min_free_bytes:
            failing.append(f"journal: only {free} bytes free on {folder} (< min_free_bytes {cfg.min_free_bytes})")
    if src.writer_stats is not None:
        st = src.writer_stats()
        out.update(commits=st.commits, changes=st.changes, failed=st.failed)
    out["writable"] = not any(r.startswith("journal:") for r in failing)
    return out


def http_status(doc: dict[str, Any], cfg: Any) -> int:
    return {"ok": 200, "degraded": cfg.degraded_http_status}.get(doc.get("status", ""), 503)


class Prober:
    """Pings every endpoint every ``interval`` seconds (the outcome reaches ``ENDPOINTS`` through the client)."""

    def __init__(self, send_ping: Callable[[Any], Any], endpoints: dict[str, Any], interval: float) -> None:
        self.send_ping, self.endpoints, self.interval = send_ping, endpoints, interval

    async def run(self, stop: asyncio.Event) -> None:
        if self.interval <= 0:
            return
        while not stop.is_set():
            for ep in list(self.endpoints.values()):
                try:
                    await self.send_ping(ep)
                except Exception as exc:  # noqa: BLE001 - a ping that cannot even be built is a failed exchange
                    from gateway.ops.health import ENDPOINTS as tracker
                    tracker.record(ep.name, "ping", False, f"ping could not be sent: {type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except TimeoutError:
                pass


class ExpiryLoop:
    """Runs ``ExpiryWatch.check`` at start and every ``interval`` seconds (in a thread: it reads files)."""

    def __init__(self, watch: Any, interval: float) -> None:
        self.watch, self.interval = watch, interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.watch.apply(await asyncio.to_thread(self.watch.scan_now))
            except Exception as exc:  # noqa: BLE001
                log.error("expiry check failed error=%s", exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except TimeoutError:
                pass
