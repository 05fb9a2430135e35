"""Assembles the AMQP intake and event outbox for the daemon from ``[amqp]`` (nothing runs until ``start``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.broker.amqp import AmqpBroker
from gateway.broker.config import AmqpConfig, read_amqp_config
from gateway.broker.outbox import EventOutbox
from gateway.config import GatewayConfig


@dataclass
class AmqpWiring:
    cfg: AmqpConfig
    broker: AmqpBroker
    outbox: EventOutbox | None
    acceptor: Any
    writer: Any
    on_accepted: Any = None
    alert: Any = None              # alerts.raise_alert: intake-blocked while the journal cannot take filings
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    consume_failures: int = 0
    # set by the daemon: (name, factory, stop) -> a coroutine function running factory on one instance at a time
    # (gateway.pipeline.singleton). The intake consumer runs on every instance; only the outbox publishes alone.
    singleton: Any = None

    async def run(self) -> None:
        """Connect, then publish and consume until ``stop_event`` (run by the daemon's supervisor)."""
        await self._main()

    async def _main(self) -> None:
        if not await self.broker.connect(self.stop_event):
            return
        jobs = []
        if self.outbox is not None:
            jobs.append(asyncio.create_task(self._publish(), name="amqp-outbox"))
        if self.cfg.intake:
            jobs.append(asyncio.create_task(self._consume_supervised(), name="amqp-intake"))
        try:
            await asyncio.gather(*jobs)
        finally:
            for j in jobs:
                j.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)

    async def _publish(self) -> None:
        """The outbox publisher; with several instances, one at a time under the lock ``amqp-outbox:<sink>``."""
        outbox = self.outbox
        assert outbox is not None

        async def run() -> None:
            outbox.cursor = None     # read the cursor again: another instance may have advanced it meanwhile
            await outbox.run(self.stop_event)

        if self.singleton is None:
            await run()
            return
        while not self.stop_event.is_set():     # the singleton returns when the publisher ends: wait for it again
            await self.singleton(f"amqp-outbox:{outbox.name}", run, self.stop_event)()

    async def _consume_supervised(self) -> None:
        """The consumer, restarted with back-off when it fails (a queue that does not exist yet, a channel the
        broker closed): intake must not end quietly while the status still says connected."""
        import logging
        log = logging.getLogger("ics2gw.amqp")
        delay = self.cfg.reconnect_initial
        while not self.stop_event.is_set():
            try:
                await self.broker.consume(self.acceptor, self.writer, self.stop_event, on_accepted=self.on_accepted,
                                          alert=self.alert)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.broker.last_error = f"intake: {type(exc).__name__}: {exc}"
                self.consume_failures += 1
                log.error("amqp intake stopped, restarting in %.1fs error=%s", delay, self.broker.last_error)
                try:
                    await asyncio.wait_for(self.stop_event.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(self.cfg.reconnect_max, delay * 2)

    def start(self) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._main(), name="amqp")
        self.tasks.append(task)
        return task

    async def stop(self, timeout: float) -> None:
        self.stop_event.set()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout)
        await self.broker.close()

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"url": self.cfg.url, "connected": self.broker.connected,
                               "last_error": self.broker.last_error, "intake_restarts": self.consume_failures}
        if self.outbox is not None:
            doc["outbox"] = self.outbox.status()
        h = getattr(self.broker, "intake_handler", None)
        if h is not None:
            doc["intake"] = {"accepted": h.accepted, "rejected": h.rejected, "dead_lettered": h.dead_lettered,
                             "retried": h.retried, "blocked_by_storage": h.blocked}
        return doc


def build_amqp(cfg: GatewayConfig, *, acceptor: Any, writer: Any, journal: Any, inbox_dir: Path,
               on_accepted: Any = None, alert: Any = None) -> AmqpWiring | None:
    acfg = read_amqp_config(cfg)
    if acfg is None:
        return None
    broker = AmqpBroker(acfg)
    outbox = EventOutbox(journal, writer, broker.publish, name="amqp", inbox_dir=inbox_dir,
                         connected=lambda: broker.connected) if acfg.events else None
    return AmqpWiring(acfg, broker, outbox, acceptor, writer, on_accepted=on_accepted, alert=alert)
