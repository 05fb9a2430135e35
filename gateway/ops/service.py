"""The health/status listener: ``/health``, ``/metrics`` and the status page on one loopback plain-HTTP port,
plus the two background loops that feed them (endpoint pings, certificate/CRL expiry checks).

The daemon starts one ``OpsService`` when ``[health] listen`` is set and stops it with the other listeners. All
journal reads go through the journal's ``queries()`` (``JournalQueries``: a read-only connection, SQLite or
PostgreSQL); nothing here writes the journal.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.ops import metrics
from gateway.ops.config import OpsConfig, read_ops_config
from gateway.ops.expiry import ExpiryWatch, sources_from_config
from gateway.ops.health import ExpiryLoop, HealthSources, Prober, build_report, http_status

log = logging.getLogger("ics2gw.ops")


class OpsService:
    def __init__(self, cfg: Any, tcfg: Any, *, journal: Any = None, journal_path: Any = None, writer: Any = None,
                 client: Any = None, engine: Any = None, alerts: Any = None, paused: Callable[[], Any] | None = None,
                 extra: Callable[[], dict[str, Any]] | None = None, ops: OpsConfig | None = None,
                 instance: str | None = None, leader_of: Callable[[], list[str]] | None = None) -> None:
        """``journal``: the daemon's read-only journal (its ``queries()``, ``describe()``, ``backend``); a bare
        ``journal_path`` (SQLite) still works for callers that have no journal object."""
        self.cfg, self.tcfg = cfg, tcfg
        self.ops = ops or read_ops_config(cfg.root.section("health"))
        self.journal = journal
        self.backend = getattr(journal, "backend", "sqlite")
        if journal_path is None and self.backend == "sqlite":
            journal_path = getattr(journal, "path", None)
        self.journal_path, self.writer, self.client, self.engine = journal_path, writer, client, engine
        self.instance, self.leader_of = instance, leader_of
        self.alerts, self.paused, self.extra = alerts, paused, extra
        self.queries: Any = None
        self.expiry = ExpiryWatch(sources_from_config(cfg, tcfg), list(cfg.trust.crls), self.ops.expiry,
                                  self._alert)
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    def _alert(self, kind: str, **detail: Any) -> None:
        if self.alerts is not None:
            self.alerts.raise_alert(kind, **detail)

    def _writer_alive(self) -> bool:
        thread = getattr(self.writer, "_thread", None)  # JournalWriter keeps its commit thread here
        return thread is None or thread.is_alive()

    def sources(self) -> HealthSources:
        name = self.journal.describe() if self.journal is not None else \
            (f"sqlite:{self.journal_path}" if self.journal_path else None)
        return HealthSources(environment=self.cfg.environment, endpoints=self.tcfg.endpoints, queries=self.queries,
                             journal_path=self.journal_path if self.backend == "sqlite" else None,
                             journal_backend=self.backend, journal_name=name,
                             journal_ping=self._journal_ping if self.backend != "sqlite" else None,
                             instance=self.instance, leader_of=self.leader_of, writer_alive=self._writer_alive,
                             writer_stats=(lambda: self.writer.stats) if self.writer is not None else None,
                             expiry=self.expiry, paused=self.paused, extra=self.extra)

    def _journal_ping(self) -> None:
        """A cheap query on the reader (raises when the database does not answer; the caller bounds the wait)."""
        self.journal.last_event_id()

    def report(self) -> dict[str, Any]:
        return build_report(self._sources, self.ops)

    async def _health(self, request: web.Request) -> web.Response:
        doc = await asyncio.to_thread(self.report)
        return web.Response(status=http_status(doc, self.ops), text=json.dumps(doc, default=str) + "\n",
                            content_type="application/json", headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.render)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"})

    async def _ping(self, endpoint: Any) -> None:
        from gateway.ebms.engine import Engine
        message = await asyncio.to_thread(self.engine.ping, Engine.customs_party(endpoint.party_id))
        await self.client.send(endpoint, message)   # the outcome reaches the tracker through metrics.exchange

    async def start(self) -> int:
        if self.journal is not None:
            self.queries = await asyncio.to_thread(self.journal.queries)
        else:
            from gateway.journal.queries import JournalQueries
            self.queries = await asyncio.to_thread(JournalQueries, self.journal_path)
        self._sources = self.sources()
        metrics.register_journal(metrics.JournalCollector(
            self.queries, (lambda: self.writer.stats) if self.writer is not None else None,
            environment=self.cfg.environment, version=__version__, instance=self.instance or "",
            backend=self.backend, leader_of=self.leader_of))
        self.expiry.apply(await asyncio.to_thread(self.expiry.scan_now))   # /health knows the certificates at once
        auth = getattr(self.tcfg.health, "auth", None)      # gateway.listen: bearer token and/or client certs
        app = web.Application(middlewares=[auth.middleware()] if auth is not None and auth.token else [])
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        if self.ops.status_page:
            from gateway.ops.statuspage import StatusContext, add_routes
            add_routes(app, StatusContext(self.cfg.environment, self.queries, self.report,
                                          lambda: list(metrics.RECENT_ALERTS)))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        addr = self.tcfg.health.listen
        site = web.TCPSite(self._runner, addr.host, addr.port,
                           ssl_context=auth.ssl_context() if auth is not None else None)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks.append(asyncio.create_task(
            ExpiryLoop(self.expiry, self.ops.expiry_check_seconds).run(self._stop), name="ops-expiry"))
        if self.client is not None and self.engine is not None and self.ops.ping_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(
                Prober(self._ping, self.tcfg.endpoints, self.ops.ping_interval_seconds).run(self._stop),
                name="ops-prober"))
        log.info("health/status listener on http://%s:%s (/health, /metrics%s) environment=%s", addr.host,
                 self.port, ", /status" if self.ops.status_page else "", self.cfg.environment)
        return self.port

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        metrics.unregister_journal()
        if self.queries is not None:
            await asyncio.to_thread(self.queries.close)
