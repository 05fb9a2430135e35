"""Transport on loopback with the test PKI: push round trip, inbound push, pull, ping, classification of answers.

Every test talks real 2-way TLS over 127.0.0.1 or ::1 on ephemeral ports. "Customs" is played by the same
engine with the customs sealing identity (role Customs), served by our own InboundServer or a tiny pull TI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config import GatewayConfig, load_gateway_config
from gateway.ebms.constants import SERVICE_C2T
from gateway.ebms.engine import Engine
from gateway.ebms.errors import EbmsFault
from gateway.pmode import load_pmodes
from gateway.security.keys import load_identity_files
from gateway.security.trust import TrustStore
from gateway.transport.client import (
    As4Client, EbmsErrorOutcome, EmptyChannel, InvalidReceipt, ReceiptOk, TransportFailure, summarize,
)
from gateway.transport.config import (
    Endpoint, InboundConfig, KeyMaterial, ListenAddress, TransportConfig, load_transport_config,
)
from gateway.transport.puller import AckLane, Puller
from gateway.transport.server import InboundServer, MemorySink
from gateway.transport.tls import build_server_context

PAYLOAD = b'<?xml version="1.0" encoding="UTF-8"?><IE3F32 xmlns="urn:test">hello</IE3F32>'
R01 = b'<?xml version="1.0" encoding="UTF-8"?><IE3R01 xmlns="urn:test">ok</IE3R01>'
LOOP = ["127.0.0.1", "::1"]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cfg(pki: Path) -> GatewayConfig:
    from tests.conftest import REPO
    return load_gateway_config(REPO / "conf" / "gateway.toml")


@pytest.fixture(scope="module")
def tcfg(cfg: GatewayConfig) -> TransportConfig:
    return load_transport_config(cfg)


@pytest.fixture(scope="module")
def trader(cfg: GatewayConfig) -> Engine:
    return Engine.from_config(cfg)


@pytest.fixture(scope="module")
def pmodes(cfg: GatewayConfig):  # type: ignore[no-untyped-def]
    return load_pmodes(cfg.pmodes_dir, party_id=cfg.identity.party_id)


@pytest.fixture(scope="module")
def customs(pki: Path) -> Engine:
    return Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                  TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"]),
                  party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")


def endpoint(tcfg: TransportConfig, url: str, **kw) -> Endpoint:  # type: ignore[no-untyped-def]
    return dataclasses.replace(tcfg.endpoint("sti"), url=url, **kw)


def customs_transport(tcfg: TransportConfig, pki: Path) -> TransportConfig:
    """The customs side's view: its client certificate, trusting the trader's server CA."""
    tls = dataclasses.replace(tcfg.tls, client=KeyMaterial(cert=pki / "customs-tls-client.pem",
                                                           key=pki / "customs-tls-client.key"),
                              ca_bundle=(pki / "trader-root.pem",))
    return dataclasses.replace(tcfg, tls=tls)


def c2t(customs: Engine, trader_party: str, *, mpc: str | None = None, action: str = "IE3R01",
        ref: str | None = None):  # type: ignore[no-untyped-def]
    return customs.user_message(action=action, payload=R01, to_party=Engine.trader_party(trader_party),
                                service=SERVICE_C2T, mpc=mpc, ref_to_message_id=ref)


@pytest.fixture
async def fake_ti(tcfg: TransportConfig, customs: Engine, pki: Path) -> AsyncIterator[InboundServer]:
    """Customs' push endpoint: our InboundServer run with the customs engine and the customs TLS server cert."""
    ctx = build_server_context(server=KeyMaterial(cert=pki / "customs-tls-server.pem", key=pki / "customs-tls-server.key"),
                               client_ca=[pki / "trader-ca-bundle.pem"], environment="conformance", name="fake-ti")
    ti_cfg = dataclasses.replace(tcfg, inbound=InboundConfig(True, (), "/ics2/sti", 32 * 1024 * 1024))
    server = InboundServer(customs, MemorySink(), ti_cfg, ssl_context=ctx,
                           listen=[ListenAddress("127.0.0.1", 0), ListenAddress("::1", 0)])
    async with server:
        yield server


# ------------------------------------------------------------------------------------------------ push to customs
@pytest.mark.parametrize("index", [0, 1], ids=["ipv4", "ipv6"])
async def test_push_round_trip(fake_ti: InboundServer, tcfg: TransportConfig, trader: Engine, index: int) -> None:
    ep = endpoint(tcfg, fake_ti.url(index))
    async with As4Client(trader, tcfg) as client:
        msg = trader.user_message(action="IE3F32", payload=PAYLOAD, to_party=Engine.customs_party(ep.party_id))
        out = await client.send(ep, msg)
        assert isinstance(out, ReceiptOk), summarize(out)
        assert out.receipt.ref_to_message_id == msg.message_id and out.http_status == 200
        # keep-alive: the next sends reuse the pooled connection; measure the warm round trip
        times = []
        for _ in range(5):
            m = trader.user_message(action="IE3F32", payload=PAYLOAD, to_party=Engine.customs_party(ep.party_id))
            t0 = time.perf_counter()
            assert isinstance(await client.send(ep, m), ReceiptOk)
            times.append(time.perf_counter() - t0)
        print(f"push round trip over {'IPv6' if index else 'IPv4'}: median {sorted(times)[2] * 1000:.1f} ms")
    assert msg.message_id in fake_ti.processor.sink.messages  # type: ignore[attr-defined]


async def test_push_rejected_by_customs_is_a_typed_ebms_error(fake_ti: InboundServer, tcfg: TransportConfig,
                                                              trader: Engine) -> None:
    ep = endpoint(tcfg, fake_ti.url(0))
    fake_ti.processor.sink.fail_with = RuntimeError("disk full")  # type: ignore[attr-defined]
    async with As4Client(trader, tcfg) as client:
        out = await client.send(ep, trader.user_message(action="IE3F32", payload=PAYLOAD,
                                                        to_party=Engine.customs_party("sti-taxud")))
    assert isinstance(out, EbmsErrorOutcome), summarize(out)
    assert out.code == "EBMS:0202" and out.signed and not out.permanent and out.http_status == 500


async def test_push_to_wrong_party_gets_ebms_0010(fake_ti: InboundServer, tcfg: TransportConfig, trader: Engine) -> None:
    ep = endpoint(tcfg, fake_ti.url(0))
    async with As4Client(trader, tcfg) as client:
        out = await client.send(ep, trader.user_message(action="IE3F32", payload=PAYLOAD,
                                                        to_party=Engine.customs_party("nti-fr")))
    assert isinstance(out, EbmsErrorOutcome) and out.code == "EBMS:0010" and out.permanent


async def test_ping_round_trip_not_delivered(fake_ti: InboundServer, tcfg: TransportConfig, trader: Engine) -> None:
    ep = endpoint(tcfg, fake_ti.url(1))
    async with As4Client(trader, tcfg) as client:
        out = await client.send(ep, trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, ReceiptOk)
    assert not fake_ti.processor.sink.messages  # type: ignore[attr-defined]


async def test_ti_rejects_untrusted_client_cert(fake_ti: InboundServer, tcfg: TransportConfig, trader: Engine,
                                                pki: Path) -> None:
    bad = dataclasses.replace(tcfg, tls=dataclasses.replace(tcfg.tls, client=KeyMaterial(
        cert=pki / "other-tls-client.pem", key=pki / "other-tls-client.key")))
    async with As4Client(trader, bad) as client:
        out = await client.send(endpoint(bad, fake_ti.url(0)), trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, TransportFailure) and out.kind in ("tls", "connect"), summarize(out)


async def test_wrong_server_host_name(fake_ti: InboundServer, tcfg: TransportConfig, trader: Engine) -> None:
    ep = endpoint(tcfg, fake_ti.url(0), server_name="ti.wrong.test")
    async with As4Client(trader, tcfg) as client:
        out = await client.send(ep, trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, TransportFailure) and out.kind == "tls" and not out.retryable
    assert "host name" in out.cause, out.cause


async def test_environment_mismatch_never_sends(tcfg: TransportConfig, trader: Engine) -> None:
    ep = endpoint(tcfg, "https://127.0.0.1:9/never", environment="production")
    async with As4Client(trader, tcfg) as client:
        out = await client.send(ep, trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, TransportFailure) and out.kind == "config" and "1.4.4.7" in out.cause


async def test_connection_refused_is_retryable(tcfg: TransportConfig, trader: Engine) -> None:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    async with As4Client(trader, tcfg) as client:
        out = await client.send(endpoint(tcfg, f"https://127.0.0.1:{port}/x"),
                                trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, TransportFailure) and out.retryable and out.kind == "connect"


# ------------------------------------------------------------------------------------------------ odd answers
@pytest.fixture
async def odd_ti(pki: Path) -> AsyncIterator[tuple[str, dict]]:
    """A TLS server answering whatever ``behaviour['next']`` says (HTML proxy pages, empty 200, ...)."""
    behaviour: dict = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        kind = behaviour["next"]
        if kind == "html502":
            return web.Response(status=502, text="<html><body>Bad gateway</body></html>", content_type="text/html")
        if kind == "html200":
            return web.Response(status=200, text="<html>proxy login</html>", content_type="text/html")
        if kind == "empty200":
            return web.Response(status=200)
        if kind == "404":
            return web.Response(status=404, text="not found")
        if kind == "soapfault500":
            return web.Response(status=500, content_type="application/soap+xml", text=(
                '<S:Envelope xmlns:S="http://www.w3.org/2003/05/soap-envelope"><S:Body><S:Fault><S:Code><S:Value>'
                'S:Receiver</S:Value></S:Code><S:Reason><S:Text xml:lang="en">Domibus is down</S:Text></S:Reason>'
                '</S:Fault></S:Body></S:Envelope>'))
        if kind == "garbage200":
            return web.Response(status=200, content_type="application/soap+xml", text="<S:Envelope>broken")
        if kind == "slow":
            await asyncio.sleep(3)
            return web.Response(status=200)
        if kind == "wrong-receipt":
            return web.Response(status=200, body=behaviour["receipt"][1], headers={"Content-Type": behaviour["receipt"][0]})
        raise AssertionError(kind)

    app = web.Application()
    app.router.add_post("/ti", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = build_server_context(server=KeyMaterial(cert=pki / "customs-tls-server.pem", key=pki / "customs-tls-server.key"),
                               client_ca=[pki / "trader-ca-bundle.pem"])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}/ti", behaviour
    await runner.cleanup()


@pytest.mark.parametrize("kind,expect_kind,retryable,status", [
    ("html502", "http", True, 502),
    ("html200", "protocol", True, 200),
    ("empty200", "protocol", True, 200),
    ("404", "http", False, 404),
    ("soapfault500", "http", True, 500),
])
async def test_non_as4_answers_are_classified(odd_ti, tcfg: TransportConfig, trader: Engine, kind: str,  # type: ignore[no-untyped-def]
                                              expect_kind: str, retryable: bool, status: int) -> None:
    url, behaviour = odd_ti
    behaviour["next"] = kind
    async with As4Client(trader, tcfg) as client:
        out = await client.send(endpoint(tcfg, url), trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, TransportFailure), summarize(out)
    assert (out.kind, out.retryable, out.http_status) == (expect_kind, retryable, status)
    if kind == "soapfault500":
        assert "Domibus is down" in out.cause


async def test_garbage_200_is_invalid_receipt(odd_ti, tcfg: TransportConfig, trader: Engine) -> None:  # type: ignore[no-untyped-def]
    url, behaviour = odd_ti
    behaviour["next"] = "garbage200"
    async with As4Client(trader, tcfg) as client:
        out = await client.send(endpoint(tcfg, url), trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, InvalidReceipt) and out.fault.code == "EBMS:0009"


async def test_receipt_for_another_message_is_invalid(odd_ti, tcfg: TransportConfig, trader: Engine,  # type: ignore[no-untyped-def]
                                                      customs: Engine) -> None:
    url, behaviour = odd_ti
    other = trader.user_message(action="IE3F32", payload=PAYLOAD, to_party=Engine.customs_party("sti-taxud"))
    receipt = customs.receipt_for(customs.open(other.content_type, other.body))
    behaviour.update(next="wrong-receipt", receipt=(receipt.content_type, receipt.body))
    async with As4Client(trader, tcfg) as client:
        out = await client.send(endpoint(tcfg, url), trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, InvalidReceipt) and out.fault.code == "EBMS:0302"


async def test_total_timeout(odd_ti, tcfg: TransportConfig, trader: Engine) -> None:  # type: ignore[no-untyped-def]
    url, behaviour = odd_ti
    behaviour["next"] = "slow"
    async with As4Client(trader, tcfg) as client:
        out = await client.send(endpoint(tcfg, url, total_timeout=1.0, connect_timeout=1.0),
                                trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, TransportFailure) and out.kind == "timeout" and out.retryable


# ------------------------------------------------------------------------------------------------ inbound push
@pytest.fixture
async def our_server(tcfg: TransportConfig, trader: Engine, pmodes) -> AsyncIterator[InboundServer]:  # type: ignore[no-untyped-def]
    server = InboundServer(trader, MemorySink(), tcfg, pmodes=pmodes,
                           listen=[ListenAddress("127.0.0.1", 0), ListenAddress("::1", 0)])
    async with server:
        yield server


@pytest.mark.parametrize("index", [0, 1], ids=["ipv4", "ipv6"])
async def test_inbound_push_from_customs(our_server: InboundServer, tcfg: TransportConfig, customs: Engine,
                                         pki: Path, index: int) -> None:
    ccfg = customs_transport(tcfg, pki)
    ep = endpoint(ccfg, our_server.url(index))
    sink: MemorySink = our_server.processor.sink  # type: ignore[assignment]
    async with As4Client(customs, ccfg) as client:
        msg = c2t(customs, "NL123456789")
        out = await client.send(ep, msg)
        assert isinstance(out, ReceiptOk), summarize(out)
        assert list(sink.messages) == [msg.message_id]
        assert sink.messages[msg.message_id].message.payloads[0].data(customs.limits) == R01
        # AS4 retry of the same message: the stored receipt comes back, nothing is delivered twice
        again = await client.send(ep, msg)
        assert isinstance(again, ReceiptOk) and again.body == out.body and len(sink.order) == 1
        # a ping from customs is answered and never delivered
        assert isinstance(await client.send(ep, customs.ping(Engine.trader_party("NL123456789"))), ReceiptOk)
        assert len(sink.order) == 1


async def test_inbound_journal_failure_answers_ebms_0202(our_server: InboundServer, tcfg: TransportConfig,
                                                         customs: Engine, pki: Path) -> None:
    ccfg = customs_transport(tcfg, pki)
    our_server.processor.sink.fail_with = OSError("journal commit failed")  # type: ignore[attr-defined]
    async with As4Client(customs, ccfg) as client:
        out = await client.send(endpoint(ccfg, our_server.url(0)), c2t(customs, "NL123456789"))
    assert isinstance(out, EbmsErrorOutcome) and out.code == "EBMS:0202" and out.signed


async def test_inbound_wrong_action_and_unsigned(our_server: InboundServer, tcfg: TransportConfig, customs: Engine,
                                                 trader: Engine, pki: Path) -> None:
    ccfg = customs_transport(tcfg, pki)
    async with As4Client(customs, ccfg) as client:
        ep = endpoint(ccfg, our_server.url(0))
        # not an ICS2 message id (any IE3xxx is delivered with an alert: tests/test_pmode.py c2t tolerance)
        out = await client.send(ep, c2t(customs, "NL123456789", action="NOT-ICS2"))
        assert isinstance(out, EbmsErrorOutcome) and out.code in ("EBMS:0010", "EBMS:0001"), summarize(out)
        # a message sealed by the trader's own key is not from customs
        forged = trader.user_message(action="IE3R01", payload=R01, service=SERVICE_C2T,
                                     to_party=Engine.trader_party("NL123456789"),
                                     from_party=Engine.customs_party("sti-taxud"))
        out = await client.send(ep, forged)
        assert isinstance(out, EbmsErrorOutcome) and out.code in ("EBMS:0101", "EBMS:0103"), summarize(out)
    assert not our_server.processor.sink.messages  # type: ignore[attr-defined]


async def test_inbound_size_limit_and_methods(tcfg: TransportConfig, trader: Engine, customs: Engine, pki: Path) -> None:
    small = dataclasses.replace(tcfg, inbound=dataclasses.replace(tcfg.inbound, max_request_bytes=2048))
    server = InboundServer(trader, MemorySink(), small, listen=[ListenAddress("127.0.0.1", 0)])
    ccfg = customs_transport(tcfg, pki)
    async with server, As4Client(customs, ccfg) as client:
        out = await client.send(endpoint(ccfg, server.url(0)), c2t(customs, "NL123456789"))
        assert isinstance(out, TransportFailure) and out.http_status == 413 and not out.retryable
        session = client._session_for()
        async with session.get(server.url(0), ssl=client.ssl_context(endpoint(ccfg, server.url(0)))) as resp:
            assert resp.status == 405


async def test_inbound_requires_customs_client_cert(our_server: InboundServer, tcfg: TransportConfig,
                                                    trader: Engine) -> None:
    """Our own trader client certificate is not from customs-root: the handshake is refused."""
    tls = dataclasses.replace(tcfg.tls, ca_bundle=(tcfg.tls.client.cert.parent / "trader-root.pem",))  # type: ignore[union-attr]
    async with As4Client(trader, dataclasses.replace(tcfg, tls=tls)) as client:
        out = await client.send(endpoint(tcfg, our_server.url(0)), trader.ping(Engine.customs_party("sti-taxud")))
    assert isinstance(out, TransportFailure) and out.kind in ("tls", "connect"), summarize(out)


# ------------------------------------------------------------------------------------------------ pull
class PullTi:
    """A customs pull endpoint: answers PullRequests from a FIFO and records the receipts/errors posted back."""

    def __init__(self, customs: Engine, mpc: str) -> None:
        self.customs, self.mpc = customs, mpc
        self.queue: list[tuple[str, bytes]] = []
        self.signals: list = []
        self.pulls = 0
        self.fail_acks = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        inbound = await asyncio.to_thread(self.customs.open, request.headers["Content-Type"], body)
        if inbound.kind == "pull-request":
            self.pulls += 1
            assert inbound.messaging.signals[0].mpc == self.mpc
            if not self.queue:
                err = self.customs.error_signal(EbmsFault("EBMS:0006", "nothing queued", severity="warning"),
                                                ref_to_message_id=inbound.message_id)
                return web.Response(status=200, body=err.body, headers={"Content-Type": err.content_type})
            ct, b = self.queue.pop(0)
            return web.Response(status=200, body=b, headers={"Content-Type": ct})
        if self.fail_acks:
            self.fail_acks -= 1
            return web.Response(status=503, text="busy")
        self.signals.append(inbound)
        return web.Response(status=200)


@pytest.fixture
async def pull_ti(customs: Engine, cfg: GatewayConfig, pki: Path) -> AsyncIterator[tuple[str, PullTi]]:
    ti = PullTi(customs, cfg.mpc)
    app = web.Application()
    app.router.add_post("/ics2/sti", ti.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = build_server_context(server=KeyMaterial(cert=pki / "customs-tls-server.pem", key=pki / "customs-tls-server.key"),
                               client_ca=[pki / "trader-ca-bundle.pem"])
    site = web.TCPSite(runner, "::1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://[::1]:{port}/ics2/sti", ti
    await runner.cleanup()


def _puller(trader: Engine, client: As4Client, ep: Endpoint, sink: MemorySink, cfg: GatewayConfig, pmodes) -> Puller:  # type: ignore[no-untyped-def]
    return Puller(trader, client, ep, sink, mpc=cfg.mpc, pmodes=pmodes, min_interval=0.01, max_interval=0.08,
                  ack_lane=AckLane(client, ep, retry_interval=0.01))


async def test_pull_empty_one_many(pull_ti, tcfg: TransportConfig, trader: Engine, customs: Engine,  # type: ignore[no-untyped-def]
                                   cfg: GatewayConfig, pmodes) -> None:
    url, ti = pull_ti
    ep = endpoint(tcfg, url)
    sink = MemorySink()
    async with As4Client(trader, tcfg) as client:
        puller = _puller(trader, client, ep, sink, cfg, pmodes)
        assert [r.kind for r in await puller.drain()] == ["empty"]
        one = c2t(customs, "NL123456789", mpc=cfg.mpc)
        ti.queue.append((one.content_type, one.body))
        assert [r.kind for r in await puller.drain()] == ["message", "empty"]
        many = [c2t(customs, "NL123456789", mpc=cfg.mpc) for _ in range(6)]
        ti.queue += [(m.content_type, m.body) for m in many]
        ti.queue.append((one.content_type, one.body))  # a duplicate: acknowledged with the stored receipt
        ping = customs.user_message(action="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/test",
                                    payload=None, service="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/service",
                                    service_type=None, to_party=Engine.trader_party("NL123456789"), mpc=cfg.mpc)
        ti.queue.append((ping.content_type, ping.body))
        results = await puller.drain()
        assert [r.kind for r in results] == ["message"] * 8 + ["empty"]
        await puller.ack_lane.join()
    assert sink.order == [one.message_id] + [m.message_id for m in many]  # FIFO, duplicate and ping not delivered
    receipts = [s for s in ti.signals if s.kind == "receipt"]
    assert len(receipts) == 9
    refs = [s.messaging.signals[0].ref_to_message_id for s in receipts]
    assert refs[:7] == [one.message_id] + [m.message_id for m in many] and refs[8] == ping.message_id


async def test_pull_rejects_wrong_mpc_and_bad_seal_with_signed_errors(pull_ti, tcfg: TransportConfig, trader: Engine,  # type: ignore[no-untyped-def]
                                                                      customs: Engine, cfg: GatewayConfig, pmodes,
                                                                      pki: Path) -> None:
    url, ti = pull_ti
    sink = MemorySink()
    wrong = c2t(customs, "NL123456789", mpc=cfg.mpc + "x")
    impostor = Engine(load_identity_files(pki / "other-seal.key", pki / "other-chain.pem"),
                      customs.trust, party_id="sti-taxud", fqdn="evil.test", role="Customs")
    forged = c2t(impostor, "NL123456789", mpc=cfg.mpc)
    ti.queue += [(wrong.content_type, wrong.body), (forged.content_type, forged.body)]
    ti.fail_acks = 1  # the first acknowledgement meets a busy TI: retried
    async with As4Client(trader, tcfg) as client:
        puller = _puller(trader, client, endpoint(tcfg, url), sink, cfg, pmodes)
        assert [r.kind for r in await puller.drain()] == ["rejected", "rejected", "empty"]
        await puller.ack_lane.join()
    assert not sink.messages
    errors = [s for s in ti.signals if s.kind == "error"]
    assert len(errors) == 2 and all(e.signed for e in errors)
    codes = {e.messaging.signals[0].errors[0].error_code: e.messaging.signals[0].ref_to_message_id for e in errors}
    assert codes.get("EBMS:0010") == wrong.message_id
    assert any(c in codes for c in ("EBMS:0101", "EBMS:0103"))


async def test_pull_sink_failure_is_not_acknowledged_so_the_ti_offers_it_again(pull_ti, tcfg: TransportConfig,  # type: ignore[no-untyped-def]
                                                                                trader: Engine, customs: Engine,
                                                                                cfg: GatewayConfig, pmodes) -> None:
    """eDelivery 1.5.5.4: an eb:Error puts a pulled message in its final state at the TI. When our side cannot
    store it (EBMS:0202 on push), nothing is returned: the TI offers it again, and then it is receipted."""
    url, ti = pull_ti
    sink = MemorySink()
    sink.fail_with = OSError("journal commit failed")
    msg = c2t(customs, "NL123456789", mpc=cfg.mpc)
    ti.queue.append((msg.content_type, msg.body))
    async with As4Client(trader, tcfg) as client:
        puller = _puller(trader, client, endpoint(tcfg, url), sink, cfg, pmodes)
        first = await puller.pull_once()
        await puller.ack_lane.join()
        assert first.kind == "failure" and "EBMS:0202" in (first.detail or "") and first.message_id == msg.message_id
        assert ti.signals == [] and not sink.messages
        sink.fail_with = None
        ti.queue.append((msg.content_type, msg.body))          # the TI's re-offer after its retry interval
        again = await puller.pull_once()
        await puller.ack_lane.join()
    assert again.kind == "message" and list(sink.messages) == [msg.message_id]
    (ack,) = ti.signals
    assert ack.kind == "receipt" and ack.messaging.signals[0].ref_to_message_id == msg.message_id


async def test_pull_loop_adapts_interval(pull_ti, tcfg: TransportConfig, trader: Engine, customs: Engine,  # type: ignore[no-untyped-def]
                                         cfg: GatewayConfig, pmodes) -> None:
    url, ti = pull_ti
    sink = MemorySink()
    async with As4Client(trader, tcfg) as client:
        puller = _puller(trader, client, endpoint(tcfg, url), sink, cfg, pmodes)
        stop = asyncio.Event()
        task = asyncio.create_task(puller.run(stop))
        # idle: the interval grows to the maximum (waited for, not timed: a loaded machine is slower, not wrong)
        await asyncio.wait_for(_until(lambda: puller.interval == pytest.approx(0.08)), 30)
        assert ti.pulls >= 3
        msgs = [c2t(customs, "NL123456789", mpc=cfg.mpc) for _ in range(3)]
        ti.queue += [(m.content_type, m.body) for m in msgs]
        await asyncio.wait_for(_until(lambda: len(sink.order) == 3), 5)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert puller.counts["message"] == 3


async def _until(cond) -> None:  # type: ignore[no-untyped-def]
    while not cond():
        await asyncio.sleep(0.01)
