"""ERP queues against a real RabbitMQ (a private node started by the tests), the customs simulator and the daemon
as real processes: intake of plain and multipart messages, rejection events, duplicates filed once, dead-lettering,
events in order per filing through the journal outbox, SIGKILL of the daemon while consuming and publishing, and
a broker restart mid-run."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_harness import PARTY, GatewayEnv, SimEnv, ens, free_port, push_url, q, wait_until
from gateway.broker.localnode import RabbitNode, available

aio_pika = pytest.importorskip("aio_pika")

_WHY = available()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"AMQP tests need a broker: {_WHY}")


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    node = RabbitNode(tmp_path_factory.mktemp("rabbit"))
    node.start()
    yield node
    node.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Any:
    base = tmp_path_factory.mktemp("amqp-sim")
    inbound = free_port(dual=True)
    s = SimEnv.create(base / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}])
    s.start()
    s.inbound_port = inbound  # type: ignore[attr-defined]
    yield s
    s.stop()


def make_gateway(tmp_path: Path, sim: Any, rabbit: RabbitNode, names: dict[str, str], monkeypatch: Any,
                 url: str | None = None, **extra: Any) -> GatewayEnv:
    monkeypatch.setenv("ICS2GW_TEST_AMQP_PASSWORD", rabbit.password)
    gw = GatewayEnv.create(tmp_path / "gw", sim, inbound_port=sim.inbound_port)
    lines = ["", "[amqp]", "enabled = true", f"url = {q(url or rabbit.url)}", f"username = {q(rabbit.user)}",
             'password_env = "ICS2GW_TEST_AMQP_PASSWORD"', f"queues = [{q(names['queue'])}]",
             f"exchange = {q(names['exchange'])}", f"dead_letter_queue = {q(names['dlq'])}", "declare = true",
             "reconnect_initial_seconds = 0.2", "reconnect_max_seconds = 1.0"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    gw.conf.write_text(gw.conf.read_text() + "\n".join(lines) + "\n")
    return gw


def new_names() -> dict[str, str]:
    u = uuid.uuid4().hex[:8]
    return {"queue": f"filings-{u}", "exchange": f"events-{u}", "dlq": f"dead-{u}", "tap": f"tap-{u}"}


class Erp:
    """The ERP side, on its own connection: publishes filings, and reads every event through a bound queue."""

    def __init__(self, rabbit: RabbitNode, names: dict[str, str]) -> None:
        self.rabbit, self.names = rabbit, names
        self.loop = asyncio.new_event_loop()
        self.conn: Any = None
        self.events: list[dict[str, Any]] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def connect(self) -> Erp:
        async def go() -> None:
            self.conn = await aio_pika.connect_robust(self.rabbit.url_with_credentials)
            ch = await self.conn.channel()
            ex = await ch.declare_exchange(self.names["exchange"], aio_pika.ExchangeType.TOPIC, durable=True)
            tap = await ch.declare_queue(self.names["tap"], durable=True)
            await tap.bind(ex, "#")
            await ch.declare_queue(self.names["queue"], durable=True)      # the ERP's queue exists before use
            await ch.close()
        self.run(go())
        return self

    def publish(self, body: bytes, *, message_id: str, correlation_id: str | None = None,
                content_type: str = "application/xml", headers: dict[str, Any] | None = None) -> None:
        async def go() -> None:
            # a quorum queue refuses publishes (nack) until it has a leader again after a broker restart: an ERP
            # retries, so does this one
            for attempt in range(60):
                ch = await self.conn.channel(publisher_confirms=True)
                try:
                    await ch.default_exchange.publish(aio_pika.Message(
                        body, content_type=content_type, message_id=message_id, correlation_id=correlation_id,
                        headers=headers or {}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=self.names["queue"])
                    return
                except aio_pika.exceptions.DeliveryError:
                    await asyncio.sleep(0.5)
                finally:
                    if not ch.is_closed:
                        await ch.close()
            raise AssertionError(f"the broker kept refusing {message_id}")
        self.run(go())

    def drain(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Takes every message now in the tap (or ``queue``): routing key, ids, headers, body."""
        async def go() -> list[dict[str, Any]]:
            ch = await self.conn.channel()
            qu = await ch.get_queue(queue or self.names["tap"])
            out = []
            while True:
                m = await qu.get(no_ack=True, fail=False)
                if m is None:
                    break
                out.append({"rk": m.routing_key, "message_id": m.message_id, "correlation_id": m.correlation_id,
                            "headers": dict(m.headers or {}), "content_type": m.content_type, "body": m.body})
            await ch.close()
            return out
        got = self.run(go())
        if queue is None:
            self.events += got
        return got

    def queue_depth(self, queue: str) -> int:
        async def go() -> int:
            ch = await self.conn.channel()
            qu = await ch.declare_queue(queue, passive=True)
            n = qu.declaration_result.message_count
            await ch.close()
            return int(n)
        return self.run(go())

    def close(self) -> None:
        if self.conn is not None:
            self.run(self.conn.close())
        self.loop.close()


def filing_events(erp: Erp, lrn: str) -> list[dict[str, Any]]:
    erp.drain()
    return [e for e in erp.events if e["rk"].startswith("filing.") and e["headers"].get("lrn") == lrn]


def test_intake_events_and_rejections(tmp_path: Path, sim: Any, rabbit: RabbitNode, monkeypatch: Any) -> None:
    names = new_names()
    gw = make_gateway(tmp_path, sim, rabbit, names, monkeypatch)
    gw.start()
    erp = Erp(rabbit, names).connect()
    try:
        lrn = "AMQP" + uuid.uuid4().hex[:10].upper()
        erp.publish(ens(lrn), message_id="erp-msg-1", correlation_id="erp-corr-1")
        gw.wait_state(lrn, "registered", timeout=30)
        wait_until(lambda: [e for e in filing_events(erp, lrn) if e["rk"] == "filing.registered"], 20,
                   "the filing.registered event", gw.logs)
        evs = filing_events(erp, lrn)
        keys = [e["rk"] for e in evs]
        assert keys[0] == "filing.queued" and keys[-1] == "filing.registered", keys
        assert keys.index("filing.sending") < keys.index("filing.sent") < keys.index("filing.registered"), keys
        ids = [int(e["message_id"].rsplit("-", 1)[1]) for e in evs]
        assert ids == sorted(ids)                                          # in commit order
        assert all(e["correlation_id"] == "erp-corr-1" for e in evs)       # echoed on every event
        body = json.loads(evs[-1]["body"])
        assert body["filing"]["lrn"] == lrn and body["to"] == "registered" and body["filing"]["mrn"]
        assert body["intake"] == {"channel": f"amqp:{names['queue']}", "message_id": "erp-msg-1",
                                  "correlation_id": "erp-corr-1"}
        # the IE3R01 itself, as multipart/related: metadata first, then the payload
        wait_until(lambda: [e for e in (erp.drain() or erp.events) if e["rk"] == "inbound.IE3R01"], 20,
                   "the inbound.IE3R01 event")
        inbound = [e for e in erp.events if e["rk"] == "inbound.IE3R01"][0]
        assert inbound["content_type"].startswith("multipart/related")
        assert b"application/json" in inbound["body"] and b"IE3R01" in inbound["body"]
        assert inbound["correlation_id"] == "erp-corr-1"
        # an invalid ENS and an unreadable body: answered with a reason, acknowledged, never requeued
        bad = ens("X" * 23)
        erp.publish(bad, message_id="erp-bad-1", correlation_id="erp-corr-bad")
        erp.publish(b"not xml at all", message_id="erp-bad-2")
        erp.publish(b"{}", message_id="erp-bad-3", content_type="application/json")
        wait_until(lambda: len([e for e in (erp.drain() or erp.events) if e["rk"].startswith("intake.rejected")]) >= 3,
                   20, "three rejection events", gw.logs)
        rej = {e["headers"]["reason"]: e for e in erp.events if e["rk"].startswith("intake.rejected")}
        assert set(rej) >= {"invalid", "unreadable", "content-type"}, list(rej)
        doc = json.loads(rej["invalid"]["body"])
        assert doc["findings"] and doc["intake"]["correlation_id"] == "erp-corr-bad"
        assert rej["invalid"]["correlation_id"] == "erp-corr-bad"
        # the same filing, another payload: conflict
        erp.publish(ens(lrn, tweak="OTHER1"), message_id="erp-conflict")
        wait_until(lambda: [e for e in (erp.drain() or erp.events) if e["rk"] == "intake.rejected.conflict"], 20,
                   "the conflict rejection")
        wait_until(lambda: erp.queue_depth(names["queue"]) == 0, 10, "the intake queue to be empty")
        assert erp.queue_depth(names["dlq"]) == 0
    finally:
        erp.close()
        gw.stop()


def test_the_same_message_twice_files_once(tmp_path: Path, sim: Any, rabbit: RabbitNode, monkeypatch: Any) -> None:
    names = new_names()
    gw = make_gateway(tmp_path, sim, rabbit, names, monkeypatch)
    gw.start()
    erp = Erp(rabbit, names).connect()
    try:
        lrn = "AMQPDUP" + uuid.uuid4().hex[:8].upper()
        for i in range(3):
            erp.publish(ens(lrn), message_id=f"dup-{i}", correlation_id="dup")
        gw.wait_state(lrn, "registered", timeout=30)
        wait_until(lambda: erp.queue_depth(names["queue"]) == 0, 10, "the queue to be empty")
        assert sim.report()[lrn]["registrations"] == 1
        assert len([r for r in gw.journal().values() if r["lrn"] == lrn]) == 1
        # an ENS with its attachment, as multipart/related (the HTTP API's convention): filed with the PDF part;
        # the same ENS without it is refused with the reason
        from gateway.pipeline.submission import declared_files, to_multipart
        from tests.pipeline_harness import FIXTURES, fixture
        air = fixture("ens-IE3F20-air-attachment.xml")
        files = declared_files(air, (FIXTURES.parent / "attachments",))
        assert files
        ctype, body = to_multipart(air, [(i, t, p.read_bytes()) for i, t, p in files])
        erp.publish(air.replace(b"NLAIR2405140006", lrn.encode() + b"N"), message_id="air-alone")
        erp.publish(body.replace(b"NLAIR2405140006", lrn.encode() + b"A"), message_id="air-with-pdf",
                    content_type=ctype)
        gw.wait_state(lrn + "A", "registered", timeout=30)
        life = gw.lifecycle(lrn + "A")
        assert any(e["event"] == "queued" and e["detail"].get("attachments") for e in life["events"]), life["events"]
        wait_until(lambda: [e for e in (erp.drain() or erp.events) if e["rk"] == "intake.rejected.attachments"], 20,
                   "the refusal of the ENS without its declared attachment")
    finally:
        erp.close()
        gw.stop()


def test_sigkill_while_consuming_and_publishing(tmp_path: Path, sim: Any, rabbit: RabbitNode,
                                               monkeypatch: Any) -> None:
    """20 filings through the queue; the daemon killed twice with SIGKILL mid-stream: every filing journaled and
    registered exactly once, and for each filing every state-change event arrives, in order, no gap."""
    names = new_names()
    gw = make_gateway(tmp_path, sim, rabbit, names, monkeypatch, prefetch=4)
    gw.start()
    erp = Erp(rabbit, names).connect()
    lrns = [f"AMQPK{i:02d}" + uuid.uuid4().hex[:6].upper() for i in range(20)]
    try:
        for i, lrn in enumerate(lrns):
            erp.publish(ens(lrn), message_id=f"kill-{i}", correlation_id=f"corr-{i}")
        wait_until(lambda: sum(1 for r in gw.journal().values() if r["lrn"] in lrns) >= 5, 30, "some intake")
        gw.kill()
        gw.start()
        wait_until(lambda: sum(1 for r in gw.journal().values() if r["lrn"] in lrns and r["state"] == "registered")
                   >= 10, 60, "half registered", gw.logs)
        gw.kill()
        gw.start()
        for lrn in lrns:
            gw.wait_state(lrn, "registered", timeout=60)
        report = sim.report()
        assert all(report[lrn]["registrations"] == 1 for lrn in lrns)
        wait_until(lambda: all([e for e in filing_events(erp, lrn) if e["rk"] == "filing.registered"] for lrn in lrns),
                   60, "every filing.registered event", gw.logs)
        for i, lrn in enumerate(lrns):
            evs = filing_events(erp, lrn)
            by_id: dict[str, dict[str, Any]] = {}
            for e in evs:                                   # at least once: a repeat carries the same id and body
                if e["message_id"] in by_id:
                    assert by_id[e["message_id"]]["body"] == e["body"]
                by_id[e["message_id"]] = e
            ordered = sorted(by_id.values(), key=lambda e: int(e["message_id"].rsplit("-", 1)[1]))
            chain = [json.loads(e["body"]) for e in ordered]
            assert chain[0]["from"] == "received" and chain[-1]["to"] == "registered"
            for a, b in zip(chain, chain[1:]):
                assert a["to"] == b["from"], [(c["from"], c["to"]) for c in chain]      # no gap
            assert all(e["correlation_id"] == f"corr-{i}" for e in ordered)
        assert erp.queue_depth(names["queue"]) == 0 and erp.queue_depth(names["dlq"]) == 0
    finally:
        erp.close()
        if gw.proc is not None and gw.proc.alive():
            gw.stop()


def test_broker_restart_mid_run(tmp_path: Path, sim: Any, rabbit: RabbitNode, monkeypatch: Any) -> None:
    names = new_names()
    gw = make_gateway(tmp_path, sim, rabbit, names, monkeypatch)
    gw.start()
    erp = Erp(rabbit, names).connect()
    try:
        first = "AMQPRA" + uuid.uuid4().hex[:8].upper()
        erp.publish(ens(first), message_id="r-1")
        gw.wait_state(first, "registered", timeout=30)
        erp.close()
        rabbit.kill()
        # filings keep coming through the API while the broker is down; their events wait in the journal
        during = "AMQPRB" + uuid.uuid4().hex[:8].upper()
        status, body = gw.submit(ens(during))
        assert status in (200, 201, 202), body
        gw.wait_state(during, "registered", timeout=30)
        rabbit.start()
        erp = Erp(rabbit, names).connect()
        after = "AMQPRC" + uuid.uuid4().hex[:8].upper()
        erp.publish(ens(after), message_id="r-3")
        gw.wait_state(after, "registered", timeout=60)
        for lrn in (during, after):
            wait_until(lambda: [e for e in filing_events(erp, lrn) if e["rk"] == "filing.registered"], 60,
                       f"{lrn} events after the restart", gw.logs)
        keys = [e["rk"] for e in filing_events(erp, during)]
        assert keys[0] == "filing.queued" and keys[-1] == "filing.registered", keys
        assert gw.proc.alive()
    finally:
        erp.close()
        gw.stop()


# ------------------------------------------------------------------------------------------ dead-lettering
async def _consume_once(rabbit: RabbitNode, names: dict[str, str], acceptor: Any, writer: Any,
                        max_attempts: int, *, hold_seconds: float, dlq: str | None = None,
                        declare: bool = True) -> Any:
    """One consumer session of the real AMQP intake, ended after ``hold_seconds`` by closing the connection
    without a goodbye (as a killed process would)."""
    from gateway.broker.amqp import AmqpBroker
    from gateway.broker.config import AmqpConfig
    cfg = AmqpConfig(url=rabbit.url, username=rabbit.user, password=rabbit.password, ca_file=None, client_cert=None,
                     client_key=None, intake=True, queues=(names["queue"],), prefetch=1, max_attempts=max_attempts,
                     dead_letter_queue=dlq or names["dlq"], events=True, exchange=names["exchange"], declare=declare,
                     reconnect_initial=0.2, reconnect_max=1.0)
    broker = AmqpBroker(cfg)
    stop = asyncio.Event()
    assert await broker.connect(stop)
    task = asyncio.create_task(broker.consume(acceptor, writer, stop))
    await asyncio.sleep(hold_seconds)
    handler = getattr(broker, "intake_handler", None)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await broker.connection.close()
    return handler


async def test_transient_failures_and_crash_loops_end_in_the_dead_letter_queue(tmp_path: Path,
                                                                              rabbit: RabbitNode) -> None:
    """A message whose intake keeps failing (not for the journal's storage: see the next test) is requeued at most
    ``max_attempts`` times, then dead-lettered with
    its reason; a message during which the gateway dies every time is counted durably across restarts (the
    journal) and dead-lettered too, instead of a crash loop. Real broker, real journal; the fault is injected in
    the acceptor."""
    from gateway.journal.committer import JournalWriter
    from gateway.journal.sqlite import SqliteJournal
    names = new_names()
    erp = Erp(rabbit, names)
    await asyncio.to_thread(erp.connect)
    journal = SqliteJournal.open(tmp_path / "j.sqlite3")
    writer = JournalWriter(journal).start()

    class Broken:                                     # every intake fails, and not for the storage's sake (a bug):
        async def accept(self, data: bytes, **kw: Any) -> Any:   # a full journal is requeued without end instead
            raise RuntimeError("the acceptor is broken")          # (test_a_full_journal_requeues_...)

    class Dies:                                       # the gateway is killed while taking the message in
        async def accept(self, data: bytes, **kw: Any) -> Any:
            await asyncio.sleep(3600)

    try:
        await asyncio.to_thread(erp.publish, b"<IE3F32/>", message_id="poison-1", correlation_id="p1")
        h = await _consume_once(rabbit, names, Broken(), writer, 3, hold_seconds=4.0)
        assert h.dead_lettered == 1 and h.retried == 2
        dead = await asyncio.to_thread(erp.drain, names["dlq"])
        assert len(dead) == 1 and dead[0]["message_id"] == "poison-1"
        assert "RuntimeError: the acceptor is broken" in dead[0]["headers"]["x-ics2gw-reason"]
        assert dead[0]["headers"]["x-ics2gw-attempts"] == 3
        await asyncio.to_thread(erp.publish, b"<IE3F32/>", message_id="poison-2")
        for _ in range(3):                            # three "crashes" in a row while the message is in hand
            await _consume_once(rabbit, names, Dies(), writer, 3, hold_seconds=1.0)
        h = await _consume_once(rabbit, names, Dies(), writer, 3, hold_seconds=1.5)
        assert h.dead_lettered == 1
        dead = await asyncio.to_thread(erp.drain, names["dlq"])
        assert [d["message_id"] for d in dead] == ["poison-2"]
        assert "stopped each time" in dead[0]["headers"]["x-ics2gw-reason"]
        assert await asyncio.to_thread(erp.queue_depth, names["queue"]) == 0
        # a dead-letter queue that does not exist: the broker cannot route the dead letter, so the message is
        # kept in the intake queue (never acknowledged into nowhere)
        await asyncio.to_thread(erp.publish, b"<IE3F32/>", message_id="poison-3")
        h = await _consume_once(rabbit, names, Broken(), writer, 2, hold_seconds=3.0,
                                dlq="no-such-queue-" + names["dlq"], declare=False)
        assert h.dead_lettered == 0
        assert await asyncio.to_thread(erp.queue_depth, names["queue"]) == 1
    finally:
        await writer.close()
        journal.close()
        await asyncio.to_thread(erp.close)


def test_demo_through_the_queue(tmp_path: Path) -> None:
    """`ics2gw demo --amqp`: the samples go through a private RabbitMQ node and the events come back."""
    import re
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--amqp", "--workdir", str(tmp_path / "demo")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "through the AMQP queue ics2gw.filings" in r.stdout and "demo: OK" in r.stdout
    m = re.search(r"demo: (\d+) events published to ics2gw.events: filing\.\* (\d+), inbound\.\* (\d+)", r.stdout)
    assert m and int(m.group(2)) > 0 and int(m.group(3)) > 0, r.stdout[-2000:]
    ps = subprocess.run(["ps", "axww", "-o", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "demo" / "rabbitmq") not in ps          # the private node is gone with the demo


# ------------------------------------------------------------------------------------------------ amqps
@pytest.fixture(scope="module")
def rabbit_tls(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Any:
    """A node with a TLS listener (the test PKI's server certificate for localhost) that requires a client
    certificate issued under the trader PKI (mutual TLS, as a broker in a carrier's DMZ would be set up)."""
    node = RabbitNode(tmp_path_factory.mktemp("rabbit-tls"),
                      tls=(pki / "trader-ca-bundle.pem", pki / "trader-tls-server.pem", pki / "trader-tls-server.key"))
    node.start()
    yield node
    node.close()


def _tls_connections(rabbit: RabbitNode) -> list[list[str]]:
    r = rabbit.ctl("list_connections", "ssl", "ssl_protocol", "peer_cert_subject", "--no-table-headers", "-q")
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]


def test_amqps_with_a_client_certificate_files_and_publishes(tmp_path: Path, sim: Any, rabbit_tls: RabbitNode,
                                                            pki: Path, monkeypatch: Any) -> None:
    """amqps:// end to end: the broker's certificate checked against ca_file and its name (localhost), our client
    certificate presented; a filing from the queue is registered and its events published, over TLS only."""
    names = new_names()
    gw = make_gateway(tmp_path, sim, rabbit_tls, names, monkeypatch, url=rabbit_tls.tls_url,
                      ca_file=str(pki / "trader-ca-bundle.pem"), client_cert=str(pki / "trader-tls-client.pem"),
                      client_key=str(pki / "trader-tls-client.key"))
    gw.start()
    erp = Erp(rabbit_tls, names).connect()            # the ERP on the plain listener
    try:
        lrn = "AMQPS" + uuid.uuid4().hex[:9].upper()
        erp.publish(ens(lrn), message_id="tls-1", correlation_id="tls-corr")
        gw.wait_state(lrn, "registered", timeout=30)
        wait_until(lambda: [e for e in filing_events(erp, lrn) if e["rk"] == "filing.registered"], 20,
                   "the filing.registered event", gw.logs)
        tls = [c for c in _tls_connections(rabbit_tls) if c[0] == "true"]
        assert tls, _tls_connections(rabbit_tls)                  # the gateway's connection is the TLS one
        assert all(c[1] in ("tlsv1.2", "tlsv1.3") and "CN=ap.trader.test" in c[2] for c in tls), tls
        log = (gw.dir / "gateway.log").read_text()
        assert 'msg="amqp connected" url=amqps://localhost' in log and "amqp connect failed" not in log, log[-3000:]
    finally:
        erp.close()
        gw.stop()


@pytest.mark.parametrize("case", ["wrong-ca", "no-client-certificate"])
def test_amqps_refusals_are_logged_retried_and_consume_nothing(tmp_path: Path, sim: Any, rabbit_tls: RabbitNode,
                                                               pki: Path, monkeypatch: Any, case: str) -> None:
    """A broker certificate from another CA, or no client certificate for a broker that requires one: the
    daemon keeps running, logs why it cannot connect (retrying), reports it in /health, and takes nothing from
    the queue."""
    names = new_names()
    tls = {"ca_file": str(pki / ("other-root.pem" if case == "wrong-ca" else "trader-ca-bundle.pem"))}
    if case == "wrong-ca":
        tls |= {"client_cert": str(pki / "trader-tls-client.pem"), "client_key": str(pki / "trader-tls-client.key")}
    gw = make_gateway(tmp_path, sim, rabbit_tls, names, monkeypatch, url=rabbit_tls.tls_url, **tls)
    erp = Erp(rabbit_tls, names).connect()
    try:
        erp.publish(ens("AMQPSNO" + uuid.uuid4().hex[:7].upper()), message_id="tls-refused")
        gw.start()
        def failures() -> list[str]:
            return [line for line in (gw.dir / "gateway.log").read_text().splitlines()
                    if 'msg="amqp connect failed" url=amqps://localhost' in line]

        wait_until(lambda: len(failures()) >= 2, 30, "two failed connection attempts", gw.logs)
        if case == "wrong-ca":
            assert all("CERTIFICATE_VERIFY_FAILED" in line for line in failures()), failures()
        else:
            # the broker's alert names the cause (TLS 1.3: certificate required); when the broker closes the socket
            # before the client has read the alert, the client sees the connection end during the TLS exchange
            def errors() -> list[str]:
                return sorted({line.split(" error=", 1)[1] for line in failures()})

            wait_until(lambda: any("CERTIFICATE_REQUIRED" in e or "HANDSHAKE_FAILURE" in e for e in errors()), 30,
                       "an attempt that names the missing client certificate", gw.logs)
            assert all("SSL" in e or "Connection reset" in e for e in errors()), errors()
        assert rabbit_tls.password not in (gw.dir / "gateway.log").read_text()
        assert gw.proc is not None and gw.proc.alive(), gw.logs()
        assert erp.queue_depth(names["queue"]) == 1                 # nothing consumed
    finally:
        erp.close()
        gw.stop()



# ------------------------------------------------------------------------------------------------ storage
async def test_a_full_journal_requeues_without_dead_lettering_and_alerts_once(tmp_path: Path, rabbit: RabbitNode,
                                                                             pki: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal cannot take filings (SQLite's page budget is its disk: full): the machine's condition, not the
    messages'. They go back to the queue with back-off however often that happens (max_attempts is 2 here), none
    is dead-lettered, one intake-blocked alert names the condition, and all are filed once the space is back.
    In-process (the real consumer, acceptor, SQLite journal and broker) so the journal can be filled exactly."""
    from gateway.broker.amqp import AmqpBroker, IntakeHandler
    from gateway.broker.config import AmqpConfig
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.sqlite import SqliteJournal
    from gateway.pipeline.accept import Acceptor
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    from tests.pipeline_harness import REPO

    monkeypatch.setattr(IntakeHandler, "storage_backoff_initial", 0.05)   # the test's time, not the behaviour
    monkeypatch.setattr(IntakeHandler, "storage_backoff_max", 0.4)
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    path = tmp_path / "journal.sqlite3"
    journal, reader = SqliteJournal.open(path), SqliteJournal.open_reader(path)
    writer = JournalWriter(journal).start()
    acceptor = Acceptor(Engine.from_config(cfg), writer, reader, Router(load_transport_config(cfg)))
    names = new_names()
    broker = AmqpBroker(AmqpConfig(
        url=rabbit.url, username=rabbit.user, password=rabbit.password, ca_file=None, client_cert=None,
        client_key=None, intake=True, queues=(names["queue"],), prefetch=4, max_attempts=2,
        dead_letter_queue=names["dlq"], events=False, exchange=names["exchange"], declare=True,
        reconnect_initial=0.2, reconnect_max=1.0))
    stop = asyncio.Event()
    alerts: list[tuple[str, dict[str, Any]]] = []
    erp = await aio_pika.connect(rabbit.url_with_credentials)
    consumer = None
    try:
        assert await broker.connect(stop)
        conn = journal._conn  # noqa: SLF001 - the writer's own connection: its page budget is the disk
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        ch = await erp.channel(publisher_confirms=True)
        lrns = [f"AMQPFULL{i}{uuid.uuid4().hex[:6].upper()}" for i in range(3)]
        for i, lrn in enumerate(lrns):
            await ch.default_exchange.publish(aio_pika.Message(ens(lrn), content_type="application/xml",
                                                               message_id=f"full-{i}"), routing_key=names["queue"])
        consumer = asyncio.create_task(broker.consume(acceptor, writer, stop,
                                                      alert=lambda kind, **d: alerts.append((kind, d))))

        async def until(cond: Any, what: str, timeout: float = 60.0) -> None:
            for _ in range(int(timeout / 0.1)):
                if cond():
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"{what} not reached; alerts={alerts}")

        await until(lambda: getattr(broker, "intake_handler", None) is not None
                    and broker.intake_handler.blocked >= 3 * 3,
                    "every message refused by the full journal three times (more than max_attempts)")
        handler = broker.intake_handler
        assert handler.dead_lettered == 0 and handler.accepted == 0
        assert [(k, d["problem"], d["step"], d["queue"]) for k, d in alerts] == \
            [("intake-blocked", "full", "journal", names["queue"])]                      # once per episode
        assert "full" in alerts[0][1]["error"], alerts                                  # the cause, not its echo
        conn.execute("PRAGMA max_page_count = 1073741823")
        await until(lambda: handler.accepted == 3, "the three filings taken in after the space came back")
        assert {f["lrn"] for f in reader.list_filings(limit=100)} == set(lrns)
        assert handler.dead_lettered == 0 and len(alerts) == 1
        dlq = await ch.declare_queue(names["dlq"], passive=True)
        assert dlq.declaration_result.message_count == 0
    finally:
        stop.set()
        if consumer is not None:
            await asyncio.wait([consumer], timeout=15)
        await erp.close()
        await broker.close()
        await writer.close()
        reader.close()
        journal.close()
