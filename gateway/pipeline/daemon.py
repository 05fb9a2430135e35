"""The gateway daemon: intake, senders, inbound server and/or puller, API, timers, health — on one event loop.

Start: open the journal (exclusive daemon lock; messages a dead predecessor left in ``sending`` go back to
``queued``), then start every component. SIGTERM/SIGINT: stop taking work, let in-flight sends finish for
``[pipeline] drain_seconds``, close servers, flush the journal writer, exit 0. Anything interrupted harder is
recovered at the next start: every state change was committed before it was acknowledged to anyone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import GatewayConfig, load_gateway_config
from gateway.ebms.engine import Engine
from gateway.journal.committer import JournalWriter
from gateway.journal.config import read_journal_config
from gateway.journal.sqlite import SqliteJournal
from gateway.pipeline.accept import Acceptor
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.api import make_app
from gateway.pipeline.config import read_daemon_config
from gateway.pipeline.inbound import InboundProcessor
from gateway.pipeline.intake import SpoolIntake
from gateway.pipeline.sender import Sender
from gateway.pipeline.timers import Expectations
from gateway.pmode import load_pmodes
from gateway.transport.client import As4Client
from gateway.transport.config import load_transport_config

log = logging.getLogger("ics2gw.daemon")


@dataclass
class Gateway:
    cfg: GatewayConfig
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    components: dict[str, Any] = field(default_factory=dict)
    api_port: int | None = None

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        cfg = self.cfg
        dcfg = read_daemon_config(cfg)
        jcfg = read_journal_config(cfg.root.section("journal"))
        tcfg = load_transport_config(cfg)
        engine = Engine.from_config(cfg)
        pmodes = load_pmodes(cfg.pmodes_dir, party_id=cfg.identity.party_id)
        jcfg.path.parent.mkdir(parents=True, exist_ok=True)
        dcfg.intake.ensure()
        journal = await asyncio.to_thread(SqliteJournal.open, jcfg.path, busy_timeout_ms=jcfg.busy_timeout_ms)
        reader = await asyncio.to_thread(SqliteJournal.open_reader, jcfg.path, busy_timeout_ms=jcfg.busy_timeout_ms)
        writer = JournalWriter(journal, max_batch=jcfg.group_commit_max_batch,
                               max_delay_ms=jcfg.group_commit_max_delay_ms).start()
        alerts = Alerts(dcfg.alerts, cfg.environment)
        router = _router(tcfg)
        acceptor = Acceptor(engine, writer, reader, router, validation=dcfg.intake.validation,
                            validation_profile=dcfg.intake.validation_profile)
        client = As4Client(engine, tcfg, pool_size=max(4, dcfg.pipeline.per_endpoint_concurrency))
        sender = Sender(reader, writer, client, tcfg.endpoints, dcfg.pipeline, alerts,
                        status_dir=dcfg.intake.status_dir, default_endpoint=tcfg.routing.default)
        sink = InboundProcessor(reader, writer, inbox_dir=dcfg.intake.inbox_dir, status_dir=dcfg.intake.status_dir,
                                limits=engine.limits, alerts=alerts)
        intake = SpoolIntake(dcfg.intake, acceptor, on_queued=sender.wake)
        timers = Expectations(reader, dcfg.pipeline, alerts)
        self.components = {"journal": journal, "reader": reader, "writer": writer, "sender": sender,
                           "intake": intake, "sink": sink, "engine": engine, "alerts": alerts}
        tasks: list[asyncio.Task[Any]] = []
        runners: list[Any] = []
        try:
            if dcfg.api.enabled:
                api = web.AppRunner(make_app(acceptor, reader, dcfg.api, sender.wake, cfg.environment,
                                             status_dir=dcfg.intake.status_dir),
                                    access_log=None, handle_signals=False)
                await api.setup()
                site = web.TCPSite(api, dcfg.api.host, dcfg.api.port)
                await site.start()
                self.api_port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
                runners.append(api)
            if tcfg.inbound.enabled:
                from gateway.transport.server import InboundServer
                server = InboundServer(engine, sink, tcfg, pmodes=pmodes)
                await server.start()
                runners.append(server)
            if tcfg.pull.enabled:
                from gateway.transport.puller import Puller
                pull_stop = asyncio.Event()
                puller = Puller(engine, client, tcfg.endpoint(tcfg.pull.endpoint), sink, mpc=cfg.mpc,
                                min_interval=tcfg.pull.min_interval, max_interval=tcfg.pull.max_interval,
                                pmodes=pmodes)
                tasks.append(asyncio.create_task(puller.run(pull_stop), name="puller"))
                self.components["puller"] = (puller, pull_stop)
            if tcfg.health.listen is not None:  # /health, /metrics and the status page (gateway/ops)
                from gateway.ops.service import OpsService
                ops = OpsService(cfg, tcfg, journal_path=jcfg.path, writer=writer, client=client, engine=engine,
                                 alerts=alerts, paused=getattr(sender, "paused_endpoints", None),
                                 extra=lambda: ({"pull": self.components["puller"][0].status()["pull"]}
                                                if "puller" in self.components else {}))
                await ops.start()
                self.components["ops"] = ops
                runners.append(ops)
            tasks += [asyncio.create_task(sender.run(), name="sender"),
                      asyncio.create_task(intake.run(), name="intake"),
                      asyncio.create_task(timers.run(), name="timers")]
            log.info("gateway started environment=%s party_id=%s api_port=%s inbound=%s pull=%s journal=%s",
                     cfg.environment, cfg.identity.party_id, self.api_port, tcfg.inbound.enabled, tcfg.pull.enabled,
                     jcfg.path)
            stopper = asyncio.create_task(self.stop_event.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            log.info("gateway stopping: draining in-flight work environment=%s", cfg.environment)
            intake.stop()
            timers.stop()
            if "puller" in self.components:
                self.components["puller"][1].set()
            await sender.stop(dcfg.pipeline.drain_seconds)
            pull_tasks = [t for t in tasks if t.get_name() == "puller"]
            if pull_tasks:
                await asyncio.wait(pull_tasks, timeout=dcfg.pipeline.drain_seconds)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for r in reversed(runners):
                await (r.cleanup() if isinstance(r, web.AppRunner) else r.stop())
            await client.close()
            await alerts.drain()
            await writer.close()
            reader.close()
            journal.close()
            log.info("gateway stopped environment=%s", cfg.environment)


def _router(tcfg: Any) -> Any:
    from gateway.transport.routing import Router
    return Router(tcfg)


def run_gateway(conf: Path) -> int:
    cfg = load_gateway_config(conf)
    if cfg.environment == "production" and not cfg.allow_production:
        log.warning("running with a production configuration")
    gw = Gateway(cfg)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # sealing, verification and validation run in threads (OpenSSL and libxml2 release the GIL for much of it);
        # the default pool of cores + 4 threads would cap how many filings are in flight per journal commit
        from concurrent.futures import ThreadPoolExecutor
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="ics2gw"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.request_stop)
        await gw.run()

    asyncio.run(main())
    return 0
