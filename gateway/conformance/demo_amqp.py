"""``ics2gw demo --amqp``: the same demo with the ERP's queue path: a private RabbitMQ node, the gateway's
``[amqp]`` intake and events, the samples published to the filings queue, and the events read back.

The node is Debian's ``rabbitmq-server`` started in the demo's working directory (own ports, data and cookie),
never the system service; it is stopped with the demo.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.broker.localnode import RabbitNode, available

QUEUE, EXCHANGE, DLQ, TAP = "ics2gw.filings", "ics2gw.events", "ics2gw.filings.dead", "demo.erp.events"


@dataclass
class AmqpDemo:
    node: RabbitNode
    secret_file: Path
    events: list[dict[str, Any]] = field(default_factory=list)

    def gateway_section(self) -> dict[str, Any]:
        return {"enabled": True, "url": self.node.url, "username": self.node.user,
                "password_file": str(self.secret_file), "queues": [QUEUE], "exchange": EXCHANGE,
                "dead_letter_queue": DLQ, "declare": True, "reconnect_initial_seconds": 0.2,
                "reconnect_max_seconds": 2.0}

    async def _setup(self) -> None:
        import aio_pika
        conn = await aio_pika.connect_robust(self.node.url_with_credentials)
        async with conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            await ch.declare_queue(QUEUE, durable=True)
            tap = await ch.declare_queue(TAP, durable=True)
            await tap.bind(ex, "#")

    def setup(self) -> None:
        asyncio.run(self._setup())

    async def _publish(self, files: list[Path]) -> None:
        import aio_pika
        conn = await aio_pika.connect_robust(self.node.url_with_credentials)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            from gateway.pipeline.submission import declared_files, to_multipart
            for f in files:
                body, ctype = f.read_bytes(), "application/xml"
                try:      # an ENS that declares attachments travels with them, as multipart/related
                    found = declared_files(body, (f.parent, f.parent.parent / "attachments"))
                except Exception:  # noqa: BLE001 - unreadable or incomplete: sent alone, the gateway says why
                    found = []
                if found:
                    ctype, body = to_multipart(body, [(i, t, p.read_bytes()) for i, t, p in found])
                await ch.default_exchange.publish(aio_pika.Message(
                    body, content_type=ctype, message_id=f.name, correlation_id=f"demo-{f.stem}",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE)

    def publish(self, files: list[Path]) -> None:
        asyncio.run(self._publish(files))

    async def _drain(self) -> list[dict[str, Any]]:
        import aio_pika
        got = []
        conn = await aio_pika.connect_robust(self.node.url_with_credentials)
        async with conn:
            ch = await conn.channel()
            tap = await ch.get_queue(TAP)
            while (m := await tap.get(no_ack=True, fail=False)) is not None:
                got.append({"rk": m.routing_key, "message_id": m.message_id, "correlation_id": m.correlation_id,
                            "body": m.body if m.content_type == "application/json" else b""})
        return got

    def drain(self) -> list[dict[str, Any]]:
        self.events += asyncio.run(self._drain())
        return self.events

    def rejections(self) -> dict[str, str]:
        """correlation id -> reason of every ``intake.rejected.*`` event seen so far."""
        out = {}
        for e in self.drain():
            if e["rk"].startswith("intake.rejected.") and e["body"]:
                doc = json.loads(e["body"])
                out[e["correlation_id"] or ""] = f"{doc.get('reason')}: {doc.get('message')}"
        return out

    def summary(self) -> str:
        kinds = Counter(e["rk"].split(".")[0] for e in self.drain())
        ids = Counter(e["message_id"] for e in self.events)
        dup = sum(n - 1 for n in ids.values() if n > 1)
        return (f"{len(self.events)} events published to {EXCHANGE}: " +
                ", ".join(f"{k}.* {n}" for k, n in sorted(kinds.items())) +
                (f" ({dup} repeated, same id)" if dup else ""))


def prepare(workdir: Path, gw_doc: dict[str, Any]) -> AmqpDemo:
    why = available()
    if why is not None:
        raise RuntimeError(why)
    node = RabbitNode(workdir / "rabbitmq")
    node.base.mkdir(parents=True, exist_ok=True)
    secret = workdir / "amqp-password"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(node.password)
    demo = AmqpDemo(node, secret)
    gw_doc["amqp"] = demo.gateway_section()
    return demo


def new_password() -> str:
    return secrets.token_hex(12)
