"""The gateway daemon: intake, senders, inbound server and/or puller, API, timers, health — on one event loop.

Start: open the journal through ``gateway.journal.factory`` (SQLite: exclusive daemon lock, and messages a dead
predecessor left in ``sending`` go back to ``queued``; PostgreSQL: a pool shared with the other instances, nothing
recovered at open: a dead instance's claims return to the queue when their leases expire), then start every
component. SIGTERM/SIGINT: stop taking work, let in-flight sends finish for
``[pipeline] drain_seconds``, close servers, flush the journal writer, exit 0. Anything interrupted harder is
recovered at the next start: every state change was committed before it was acknowledged to anyone.

Robustness (docs/security.md "Daemon robustness"): the background tasks (sender, intake, timers, puller) run
under ``Supervisor``, which restarts a failed task and alerts; only ``request_stop`` (a signal, logged with its
reason) ends the daemon. A journal that cannot be opened because its storage is read-only, full or failing
ends the start with one clear log line and exit code 4, not a traceback.

Several instances on one PostgreSQL journal (docs/deployment.md): sending, intake and inbound pushes run on every
instance (claims, unique keys and de-duplication in the database keep them apart); the pull loop of each endpoint,
the timer sweep, the HMRC poller and the AMQP event outbox run on one instance at a time (``run_as_singleton``,
gateway/pipeline/singleton.py; "leader_of" in /health). On SQLite every such lock is ours: one process, as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import GatewayConfig, load_gateway_config
from gateway.ebms.engine import Engine
from gateway.journal.committer import JournalWriter
from gateway.journal.config import read_journal_config
from gateway.instance import instance_id
from gateway.journal.errors import JournalError
from gateway.journal.timeutil import utcnow
from gateway.journal.factory import open_journal, open_reader
from gateway.pipeline.accept import Acceptor
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.api import make_app
from gateway.listen import listening
from gateway.pipeline.config import read_daemon_config
from gateway.pipeline.signals import OpsSignals
from gateway.pipeline.singleton import Leadership, run_as_singleton
from gateway.pipeline.inbound import InboundProcessor
from gateway.pipeline.intake import SpoolIntake
from gateway.pipeline.sender import Sender
from gateway.pipeline.storage import StorageUnavailable, StorageWatch, as_storage_error
from gateway.pipeline.supervisor import Supervisor
from gateway.pipeline.timers import Expectations
from gateway.pmode import load_pmodes
from gateway.transport.client import As4Client
from gateway.transport.config import load_transport_config

log = logging.getLogger("ics2gw.daemon")
SINGLETON_CHECK_SECONDS = 2.0   # how often a singleton's holder checks that its database session still holds the lock


@dataclass
class Gateway:
    cfg: GatewayConfig
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    components: dict[str, Any] = field(default_factory=dict)
    api_port: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)  # set once every listener is bound
    leadership: Leadership = field(default_factory=Leadership)      # the singleton tasks this instance runs

    def request_stop(self, reason: str = "requested") -> None:
        """The only way the daemon ends: a deliberate, logged shutdown."""
        if not self.stop_event.is_set():
            log.warning("gateway shutdown requested reason=%s environment=%s", reason, self.cfg.environment)
        self.stop_event.set()

    async def run(self) -> None:
        cfg = self.cfg
        dcfg = read_daemon_config(cfg)
        jcfg = read_journal_config(cfg.root.section("journal"))
        tcfg = load_transport_config(cfg)
        engine = Engine.from_config(cfg)
        pmodes = load_pmodes(cfg.pmodes_dir, party_id=cfg.identity.party_id)
        instance = instance_id()
        journal, reader = await asyncio.to_thread(_open_storage, jcfg, dcfg, instance)
        writer = JournalWriter(journal, max_batch=jcfg.group_commit_max_batch,
                               max_delay_ms=jcfg.group_commit_max_delay_ms).start()
        alerts = Alerts(dcfg.alerts, cfg.environment)
        router = _router(tcfg)
        from gateway.hmrc.wiring import build_hmrc   # the UK S&S GB route, when [hmrc] enables it
        hmrc = build_hmrc(cfg, writer=writer, journal=reader, alerts=alerts, inbox_dir=dcfg.intake.inbox_dir,
                          status_dir=dcfg.intake.status_dir, validation=dcfg.intake.validation)
        acceptor = Acceptor(engine, writer, reader, router, validation=dcfg.intake.validation,
                            validation_profile=dcfg.intake.validation_profile,
                            hmrc=hmrc.acceptor if hmrc else None)
        client = As4Client(engine, tcfg, pool_size=max(4, dcfg.pipeline.per_endpoint_concurrency))
        sender = Sender(reader, writer, client, tcfg.endpoints, dcfg.pipeline, alerts,
                        status_dir=dcfg.intake.status_dir, default_endpoint=tcfg.routing.default,
                        routes=hmrc.routes if hmrc else None)
        sink = InboundProcessor(reader, writer, inbox_dir=dcfg.intake.inbox_dir, status_dir=dcfg.intake.status_dir,
                                limits=engine.limits, alerts=alerts, pmodes=pmodes)
        intake = SpoolIntake(dcfg.intake, acceptor, on_queued=sender.wake, alert=alerts.raise_alert)
        from gateway.broker.wiring import build_amqp   # ERP queues: AMQP intake and events, when [amqp] enables it
        amqp = build_amqp(cfg, acceptor=acceptor, writer=writer, journal=reader, inbox_dir=dcfg.intake.inbox_dir,
                          on_accepted=sender.wake, alert=alerts.raise_alert)
        if amqp is not None and amqp.outbox is not None:
            # the sink's cursor exists before any intake of this instance opens: with several instances the
            # outbox's singleton may start seconds later, and events committed meanwhile must not be skipped
            at = await asyncio.to_thread(journal.init_outbox_cursor, amqp.outbox.name, now=utcnow())
            log.info("outbox sink=%s cursor at event %d before intake opens", amqp.outbox.name, at)
        timers = Expectations(reader, dcfg.pipeline, alerts, writer=writer)   # alert marks shared by instances
        supervisor = Supervisor(alerts.raise_alert)
        single_stop = asyncio.Event()   # set at shutdown: every singleton releases its lock

        def singleton(name: str, factory: Any, stop: asyncio.Event | None = None) -> Any:
            """``factory`` run by one instance at a time (each call of the result waits for the lock again)."""
            lock = journal.singleton(name)
            # a shared database: a new holder waits until a previous one (session gone, process alive) has seen
            # its loss at its next check (2 s), so the two copies do not overlap
            grace = 0.0 if journal.backend == "sqlite" else SINGLETON_CHECK_SECONDS + 1.0
            return lambda: run_as_singleton(lock, name, factory, stop or single_stop, alerts.raise_alert,
                                            check_seconds=SINGLETON_CHECK_SECONDS, grace_seconds=grace,
                                            leadership=self.leadership)

        if amqp is not None and amqp.outbox is not None:
            amqp.singleton = singleton
        self.components = {"journal": journal, "reader": reader, "writer": writer, "sender": sender,
                           "intake": intake, "sink": sink, "engine": engine, "alerts": alerts,
                           "supervisor": supervisor}
        runners: list[Any] = []
        try:
            if dcfg.api.enabled:
                api = web.AppRunner(make_app(acceptor, reader, dcfg.api, sender.wake, cfg.environment,
                                             status_dir=dcfg.intake.status_dir, alert=alerts.raise_alert,
                                             journal_name=_storage_name(jcfg)),
                                    access_log=None, handle_signals=False)
                await api.setup()
                site = web.TCPSite(api, dcfg.api.host, dcfg.api.port, ssl_context=dcfg.api.auth.ssl_context())
                with listening("api.listen", f"{dcfg.api.host}:{dcfg.api.port}"):
                    await site.start()
                self.api_port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
                runners.append(api)
            if tcfg.inbound.enabled:
                from gateway.transport.server import InboundServer
                if tcfg.inbound.body_dir is None:  # spool bodies next to the spool, not in a /tmp that may be RAM
                    body_dir = dcfg.intake.work_dir.parent / "inbound-bodies"
                    body_dir.mkdir(parents=True, exist_ok=True)
                    tcfg = dataclasses.replace(tcfg, inbound=dataclasses.replace(tcfg.inbound, body_dir=body_dir))
                server = InboundServer(engine, sink, tcfg, pmodes=pmodes)
                server.processor.sink_watch = StorageWatch(alerts.raise_alert, "inbox or journal",
                                                           dcfg.intake.inbox_dir, "inbound push")
                with listening("inbound.listen", ", ".join(map(str, tcfg.inbound.listen))):
                    await server.start()
                runners.append(server)
                self.components["inbound"] = server
            if tcfg.pull.enabled:
                from gateway.transport.puller import Puller
                pull_stop = asyncio.Event()
                puller = Puller(engine, client, tcfg.endpoint(tcfg.pull.endpoint), sink, mpc=cfg.mpc,
                                min_interval=tcfg.pull.min_interval, max_interval=tcfg.pull.max_interval,
                                pmodes=pmodes)
                puller.processor.sink_watch = StorageWatch(alerts.raise_alert, "inbox or journal",
                                                           dcfg.intake.inbox_dir, "pull")

                async def pull(puller: Any = puller, pull_stop: asyncio.Event = pull_stop) -> None:
                    try:   # the holder replays the pending acknowledgements (Puller.run), then pulls
                        await puller.run(pull_stop)
                    except asyncio.CancelledError:
                        await puller.ack_lane.stop()   # lock lost: the new holder replays what is still pending
                        raise

                supervisor.supervise("puller", singleton(f"pull:{puller.endpoint.name}", pull, pull_stop))
                self.components["puller"] = (puller, pull_stop)
            if tcfg.health.listen is not None:  # /health, /metrics and the status page (gateway/ops)
                from gateway.ops.service import OpsService
                ops = OpsService(cfg, tcfg, journal=reader, writer=writer, client=client, engine=engine,
                                 alerts=alerts, paused=lambda: reader.paused_endpoints(cfg.identity.party_id),
                                 instance=instance, leader_of=self.leadership.held,
                                 extra=lambda: {**({"pull": self.components["puller"][0].status()["pull"]}
                                                   if "puller" in self.components else {}),
                                                "tasks": supervisor.status(),
                                                **({"inbound": self.components["inbound"].stats()}
                                                   if "inbound" in self.components else {}),
                                                **({"hmrc": hmrc.status()} if hmrc is not None else {}),
                                                **({"amqp": amqp.status()} if amqp is not None else {})})
                with listening("health.listen", str(tcfg.health.listen)):
                    await ops.start()
                self.components["ops"] = ops
                runners.append(ops)
            supervisor.supervise("sender", sender.run)
            supervisor.supervise("intake", intake.run)
            supervisor.supervise("timers", singleton("timers", timers.run))
            if hmrc is not None:
                self.components["hmrc"] = hmrc
                supervisor.supervise("hmrc-poller", singleton("hmrc-poller", lambda: hmrc.poller.run(hmrc.stop_event),
                                                              hmrc.stop_event))
            if amqp is not None:
                self.components["amqp"] = amqp
                supervisor.supervise("amqp", amqp.run)
            log.info("gateway started environment=%s party_id=%s instance=%s api_port=%s inbound=%s pull=%s "
                     "journal=%s", cfg.environment, cfg.identity.party_id, instance, self.api_port,
                     tcfg.inbound.enabled, tcfg.pull.enabled, jcfg.describe())
            self.started.set()
            await self.stop_event.wait()  # supervised tasks never end the daemon: only request_stop does
        finally:
            log.info("gateway stopping: draining in-flight work environment=%s", cfg.environment)
            supervisor.stop()
            single_stop.set()
            intake.stop()
            timers.stop()
            if "puller" in self.components:
                self.components["puller"][1].set()
            if amqp is not None:
                amqp.stop_event.set()         # stop consuming first; the outbox drains what it can below
            await sender.stop(dcfg.pipeline.drain_seconds)
            if hmrc is not None:
                hmrc.stop_event.set()
            await supervisor.join(timeout=dcfg.pipeline.drain_seconds)
            if hmrc is not None:
                await hmrc.stop(dcfg.pipeline.drain_seconds)
            if amqp is not None:
                await amqp.stop(dcfg.pipeline.drain_seconds)
            for r in reversed(runners):
                await (r.cleanup() if isinstance(r, web.AppRunner) else r.stop())
            await client.close()
            await alerts.drain()
            await writer.close()
            reader.close()
            journal.close()
            log.info("gateway stopped environment=%s instance=%s", cfg.environment, instance)


def _open_storage(jcfg: Any, dcfg: Any, instance: str | None = None) -> tuple[Any, Any]:
    """The journal (writer and reader) and the spool folders; a storage condition becomes StorageUnavailable.
    A PostgreSQL journal is not migrated here: ``ics2gw run`` checked its schema (or migrated on --init-journal)."""
    name = _storage_name(jcfg)
    try:
        journal = open_journal(jcfg, daemon=True, instance=instance, migrate=False)
    except Exception as exc:
        raise as_storage_error(exc, "journal", name) or exc
    try:
        reader = open_reader(jcfg)
    except Exception as exc:
        journal.close()
        raise as_storage_error(exc, "journal", name) or exc
    try:
        dcfg.intake.ensure()
    except Exception as exc:
        reader.close()
        journal.close()
        raise as_storage_error(exc, "spool", dcfg.intake.spool_dir) or exc
    if getattr(journal, "recovered_at_open", 0):
        log.warning("journal recovered in-flight sends of a dead predecessor count=%d journal=%s",
                    journal.recovered_at_open, name)
    return journal, reader


def _storage_name(jcfg: Any) -> str:
    """How a storage error names the journal: its file (SQLite, as before), or the database without a password."""
    return str(jcfg.path) if jcfg.backend == "sqlite" else jcfg.describe()


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
        OpsSignals(gw, Path(conf)).install(loop)   # SIGTERM/SIGINT drain, SIGHUP reload, SIGUSR1 dump, sd_notify
        await gw.run()

    try:
        asyncio.run(main())
    except StorageUnavailable as exc:
        # one clear line, no traceback: the operator has a disk to fix, not a bug to report
        log.critical("gateway cannot start: %s", exc)
        raise CommandFailedStorage(str(exc)) from None
    except JournalError as exc:
        log.critical("gateway cannot start: journal %s", exc)
        raise            # the CLI prints one line naming the journal (and the process holding it) and exits 4
    return 0


class CommandFailedStorage(RuntimeError):
    """The journal's or the spool's storage is unusable at start (read-only, full, I/O error): exit 4."""
