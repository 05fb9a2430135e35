"""AMQP intake and event publishing next to the HTTP API, in the same run, on the same gateway.

A private RabbitMQ node (Debian's rabbitmq-server, own ports and data), the simulator and the gateway (push mode,
``[amqp]`` enabled, validation off as in the e2e bench) as processes. Phase ``api``: N ENS POSTed to the submit
API (8 threads). Phase ``amqp``: N other ENS published to the filings queue (publisher confirms). For each phase:
filings/s until every filing is ``registered`` (the journal's own times), and the gateway's CPU seconds per
filing. Events: every filing's state changes and inbound IE3R01 are published to the exchange; a tap queue bound
to ``#`` counts them, and the publishing rate is events / (last event's arrival - phase start).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import payloads
from bench.e2e import CLI, REPO, Skip, _configs, _get, _journal, _wait_http, stop_processes
from bench.timing import proc_cpu_seconds

QUEUE, EXCHANGE, TAP = "bench.filings", "bench.events", "bench.tap"


async def _setup(url: str) -> None:
    import aio_pika
    conn = await aio_pika.connect_robust(url)
    async with conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        await ch.declare_queue(QUEUE, durable=True)
        tap = await ch.declare_queue(TAP, durable=True)
        await tap.bind(ex, "#")


async def _publish(url: str, docs: list[bytes]) -> None:
    import aio_pika
    conn = await aio_pika.connect_robust(url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await asyncio.gather(*(ch.default_exchange.publish(aio_pika.Message(
            d, content_type="application/xml", message_id=f"bench-{i}", headers={"action": "IE3F32"},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE) for i, d in enumerate(docs)))


async def _tap_count(url: str) -> int:
    import aio_pika
    conn = await aio_pika.connect_robust(url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(TAP, durable=True, passive=True)
        return int(q.declaration_result.message_count)


def _registered(gcf: Path, lrns: set[str], timeout: float, t0: float, gw: subprocess.Popen[bytes]) -> float:
    while time.time() - t0 < timeout:
        rows = [r for r in _journal(gcf) if r.get("lrn") in lrns]
        if sum(1 for r in rows if r.get("state") == "registered") >= len(lrns):
            return time.time()
        if gw.poll() is not None:
            raise Skip("the gateway died during the AMQP bench")
        time.sleep(0.3)
    raise Skip(f"not every filing registered within {timeout:.0f} s")


def run(workdir: Path, *, n: int = 300, timeout: float = 300.0) -> dict[str, Any]:
    from gateway.broker.localnode import RabbitNode, available
    why = available()
    if why is not None:
        return {"skipped": why}
    tmp = workdir / "amqp"
    tmp.mkdir(parents=True, exist_ok=True)
    node = RabbitNode(tmp / "rabbitmq")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        node.start()
        asyncio.run(_setup(node.url_with_credentials))
        gcf, scf, ports = _configs(tmp, "push")
        secret = tmp / "amqp-password"
        secret.write_text(node.password)
        os.chmod(secret, 0o600)
        gcf.write_text(gcf.read_text() + "\n".join([
            "", "[amqp]", "enabled = true", f"url = {json.dumps(node.url)}", f"username = {json.dumps(node.user)}",
            f"password_file = {json.dumps(str(secret))}", f"queues = [{json.dumps(QUEUE)}]",
            f"exchange = {json.dumps(EXCHANGE)}", "prefetch = 64", ""]))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        sim = subprocess.Popen([*CLI, "simulate", "--conf", str(scf)], cwd=REPO, env=env,
                               stdout=open(tmp / "sim.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(sim)
        _wait_http(f"http://127.0.0.1:{ports['admin']}/admin/health", sim, "the simulator", tmp / "sim.log")
        gw = subprocess.Popen([*CLI, "run", "--init-journal", "--conf", str(gcf)], cwd=REPO, env=env,
                              stdout=open(tmp / "gw.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(gw)
        _wait_http(f"http://127.0.0.1:{ports['health']}/health", gw, "the gateway", tmp / "gw.log")
        res: dict[str, Any] = {"filings": n}
        for phase in ("api", "amqp"):
            docs = [payloads.ens(10_000, lrn=f"NLQ{phase.upper()}{os.getpid() % 1000:03d}{i:06d}", seed=i)
                    for i in range(n)]
            lrns = {f"NLQ{phase.upper()}{os.getpid() % 1000:03d}{i:06d}" for i in range(n)}
            events0 = asyncio.run(_tap_count(node.url_with_credentials))
            cpu0 = proc_cpu_seconds(gw.pid)
            t0 = time.time()
            if phase == "api":
                url = f"http://127.0.0.1:{ports['api']}/filings?action=IE3F32"

                def submit(d: bytes) -> None:
                    req = urllib.request.Request(url, data=d, method="POST",
                                                 headers={"Content-Type": "application/xml"})
                    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback
                        r.read()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(submit, docs))
            else:
                asyncio.run(_publish(node.url_with_credentials, docs))
            t_in = time.time()
            t_done = _registered(gcf, lrns, timeout, t0, gw)
            cpu = proc_cpu_seconds(gw.pid) - cpu0
            expected = events0 + n * 5          # queued, sending, sent, registered + the inbound IE3R01, at least
            t_ev = time.time()
            while time.time() - t0 < timeout:
                count = asyncio.run(_tap_count(node.url_with_credentials))
                if count >= expected:
                    t_ev = time.time()
                    break
                time.sleep(0.2)
            events = asyncio.run(_tap_count(node.url_with_credentials)) - events0
            res[phase] = {"intake_s": t_in - t0, "filings_per_s": n / (t_done - t0),
                          "gateway_cpu_s_per_filing": cpu / n, "events": events,
                          "events_per_s": events / (t_ev - t0) if t_ev > t0 else None}
        res["health"] = _get(f"http://127.0.0.1:{ports['health']}/health").get("amqp")
        return res
    except Skip as exc:
        return {"skipped": str(exc)}
    finally:
        stop_processes(procs)
        node.close()
