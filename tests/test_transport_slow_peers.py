"""The inbound server under slow and large peers (issue 16), with real TLS clients on loopback.

Attackers here hold a certificate the TLS layer accepts (customs' client certificate): the worst case. They
come from other loopback addresses (127.0.0.2 ...) so that the per-peer limit is exercised without touching
the legitimate client on 127.0.0.1. Deadlines are configured short so the tests are fast; no assertion is
about speed: the legitimate push is given a generous bound that slow peers on the old server exceeded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, load_gateway_config
from gateway.ebms.constants import SERVICE_C2T
from gateway.ebms.engine import Engine
from gateway.pmode import load_pmodes
from gateway.security.keys import load_identity_files
from gateway.security.trust import TrustStore
from gateway.transport.client import As4Client, ReceiptOk, summarize
from gateway.transport.config import KeyMaterial, ListenAddress, TransportConfig, load_transport_config
from gateway.transport.server import InboundServer, MemorySink

R01 = b'<?xml version="1.0" encoding="UTF-8"?><IE3R01 xmlns="urn:test">ok</IE3R01>'


@pytest.fixture(scope="module")
def cfg(pki: Path) -> GatewayConfig:
    from tests.conftest import REPO
    return load_gateway_config(REPO / "conf" / "gateway.toml")


@pytest.fixture(scope="module")
def tcfg(cfg: GatewayConfig) -> TransportConfig:
    return load_transport_config(cfg)


@pytest.fixture(scope="module")
def customs(pki: Path) -> Engine:
    return Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                  TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"]),
                  party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")


def customs_client(tcfg: TransportConfig, pki: Path) -> TransportConfig:
    tls = dataclasses.replace(tcfg.tls, client=KeyMaterial(cert=pki / "customs-tls-client.pem",
                                                           key=pki / "customs-tls-client.key"),
                              ca_bundle=(pki / "trader-root.pem",))
    return dataclasses.replace(tcfg, tls=tls)


def attacker_tls(pki: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(pki / "customs-tls-client.pem", pki / "customs-tls-client.key")
    return ctx


@dataclasses.dataclass
class Slow:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    src: str

    async def closed_by_server(self) -> bool:
        try:
            return await self.reader.read(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True


async def slow_peer(port: int, ctx: ssl.SSLContext, src: str, path: str, *, body: bool) -> Slow:
    """Connects (TLS, client certificate) from ``src`` and starts a request it never finishes: the headers
    (``body=False``) or the body (``body=True``) then trickles one byte every 0.2 s from a background task."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, local_addr=(src, 0))
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/soap+xml\r\n"
            f"Content-Length: 100000\r\n\r\n").encode()
    first, rest = (head, b"x" * 1000) if body else (head[:5], head[5:])
    writer.write(first)

    async def trickle() -> None:
        try:
            for i in range(len(rest)):
                writer.write(rest[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, ssl.SSLError, RuntimeError):
            pass
    asyncio.get_running_loop().create_task(trickle())
    return Slow(reader, writer, src)


def server_for(tcfg: TransportConfig, trader: Engine, pmodes: Any, **inbound: Any) -> InboundServer:
    conf = dataclasses.replace(tcfg, inbound=dataclasses.replace(tcfg.inbound, **inbound))
    return InboundServer(trader, MemorySink(), conf, pmodes=pmodes, listen=[ListenAddress("127.0.0.1", 0)])


@pytest.fixture(scope="module")
def trader(cfg: GatewayConfig) -> Engine:
    return Engine.from_config(cfg)


@pytest.fixture(scope="module")
def pmodes(cfg: GatewayConfig) -> Any:
    return load_pmodes(cfg.pmodes_dir, party_id=cfg.identity.party_id)


async def _close_all(peers: list[Slow]) -> None:
    for p in peers:
        p.writer.transport.abort()


async def test_slow_peers_hold_no_slot_and_a_legitimate_push_gets_through(
        tcfg: TransportConfig, trader: Engine, customs: Engine, pmodes: Any, pki: Path) -> None:
    """40 slow peers (half trickling headers, half trickling a body) are held open — generous deadlines,
    so they are not cut during this test — while only 2 processing slots exist: the legitimate push is
    answered with a receipt. On the old server each slow body held a slot until it was complete."""
    server = server_for(tcfg, trader, pmodes, max_concurrent=2, read_timeout_seconds=120,
                        min_rate_bytes_per_second=0, max_connections_per_peer=8)
    ctx = attacker_tls(pki)
    peers: list[Slow] = []
    async with server:
        port = server.bound[0].port
        try:
            for i in range(40):
                peers.append(await slow_peer(port, ctx, f"127.0.0.{2 + i // 8}", tcfg.inbound.path,
                                             body=bool(i % 2)))
            await _until(lambda: server.stats()["connections"] == 40)
            ccfg = customs_client(tcfg, pki)
            ep = dataclasses.replace(tcfg.endpoint("sti"), url=server.url(0))
            async with As4Client(customs, ccfg) as client:
                msg = customs.user_message(action="IE3R01", payload=R01, service=SERVICE_C2T,
                                           to_party=Engine.trader_party("NL123456789"))
                out = await asyncio.wait_for(client.send(ep, msg), 60)
            assert isinstance(out, ReceiptOk), summarize(out)
            assert list(server.processor.sink.messages) == [msg.message_id]  # type: ignore[attr-defined]
            stats = server.stats()
            assert stats["connections"] >= 40 and stats["slots_free"] == 2, stats  # still held, no slot taken
        finally:
            await _close_all(peers)


async def test_per_peer_and_total_connection_limits(tcfg: TransportConfig, trader: Engine, pmodes: Any,
                                                    pki: Path) -> None:
    server = server_for(tcfg, trader, pmodes, read_timeout_seconds=120, min_rate_bytes_per_second=0,
                        max_connections_per_peer=4, max_connections=10)
    ctx = attacker_tls(pki)
    peers: list[Slow] = []
    async with server:
        port = server.bound[0].port
        try:
            for _ in range(6):
                peers.append(await slow_peer(port, ctx, "127.0.0.2", tcfg.inbound.path, body=False))
            assert [await p.closed_by_server() for p in peers[4:]] == [True, True]
            assert server.stats()["connections"] == 4 and server.cut == {"max-connections-per-peer": 2}
            for i in range(8):
                peers.append(await slow_peer(port, ctx, f"127.0.0.{3 + i}", tcfg.inbound.path, body=False))
            await _until(lambda: server.cut.get("max-connections") == 2)
            assert server.stats()["connections"] == 10
            # the refused peers' connections are gone; the held ones are still open
            for p in peers[:4]:
                assert not p.reader.at_eof()
        finally:
            await _close_all(peers)
        await _until(lambda: server.stats()["connections"] == 0)
        assert server.stats()["peers"] == 0  # the per-peer counts are released with the connections


@pytest.mark.parametrize("kind", ["headers", "body"])
async def test_slow_requests_are_cut_by_rate_and_deadline(tcfg: TransportConfig, trader: Engine, pmodes: Any,
                                                          pki: Path, kind: str) -> None:
    """One byte every 0.2 s is 5 B/s, below a 100 B/s minimum after a 0.5 s grace: cut ("too-slow").
    Without a rate minimum, the total read deadline (1.5 s) still cuts it ("read-timeout"). An idle
    connection that never sends a request is closed too ("idle-timeout")."""
    ctx = attacker_tls(pki)
    for inbound, reason in (({"min_rate_bytes_per_second": 100, "rate_grace_seconds": 0.5,
                              "read_timeout_seconds": 60}, "too-slow"),
                            ({"min_rate_bytes_per_second": 0, "read_timeout_seconds": 1.5}, "read-timeout")):
        server = server_for(tcfg, trader, pmodes, **inbound)
        async with server:
            peer = await slow_peer(server.bound[0].port, ctx, "127.0.0.2", tcfg.inbound.path, body=kind == "body")
            assert await asyncio.wait_for(peer.closed_by_server(), 60)
            assert server.cut == {reason: 1}, server.cut
            assert server.stats()["slots_free"] == server.inbound.max_concurrent
    server = server_for(tcfg, trader, pmodes, read_timeout_seconds=1.0)
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound[0].port, ssl=ctx,
                                                       local_addr=("127.0.0.2", 0))
        assert await asyncio.wait_for(Slow(reader, writer, "127.0.0.2").closed_by_server(), 60)
        assert server.cut == {"idle-timeout": 1}


async def test_keep_alive_connection_is_reused_within_the_limits(tcfg: TransportConfig, trader: Engine,
                                                                 customs: Engine, pmodes: Any, pki: Path) -> None:
    """A legitimate client that reuses its connection after idling is not cut as "too slow": the rate is
    measured from the first byte of each request, not from the end of the previous answer."""
    server = server_for(tcfg, trader, pmodes, min_rate_bytes_per_second=1000, rate_grace_seconds=0.2,
                        read_timeout_seconds=30)
    ccfg = customs_client(tcfg, pki)
    async with server, As4Client(customs, ccfg) as client:
        ep = dataclasses.replace(tcfg.endpoint("sti"), url=server.url(0))
        for _ in range(2):
            msg = customs.user_message(action="IE3R01", payload=R01, service=SERVICE_C2T,
                                       to_party=Engine.trader_party("NL123456789"))
            out = await client.send(ep, msg)
            assert isinstance(out, ReceiptOk), summarize(out)
            await asyncio.sleep(0.5)  # idle longer than the grace period
        assert server.cut == {} and server.stats()["connections"] == 1


async def _until(cond: Any, timeout: float = 60) -> None:
    async def loop() -> None:
        while not cond():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(loop(), timeout)




def test_inbound_limit_keys_are_read_and_checked(tmp_path: Path, pki: Path) -> None:
    from gateway.config import ConfigError
    from tests.pipeline_harness import _abs, _set
    from tests.conftest import REPO
    base = _abs((REPO / "conf" / "gateway.toml").read_text(), REPO / "conf")
    conf = tmp_path / "gateway.toml"
    text = base
    for k, v in {"read_timeout_seconds": "7.5", "min_rate_bytes_per_second": "300", "rate_grace_seconds": "2",
                 "max_connections": "50", "max_connections_per_peer": "3", "max_inflight_bytes": "40000000",
                 "body_dir": '"/tmp"'}.items():
        text = _set(text, "inbound", k, v)
    conf.write_text(text)
    ib = load_transport_config(load_gateway_config(conf)).inbound
    assert (ib.read_timeout_seconds, ib.min_rate_bytes_per_second, ib.rate_grace_seconds, ib.max_connections,
            ib.max_connections_per_peer, ib.max_inflight_bytes, str(ib.body_dir)) == (7.5, 300, 2.0, 50, 3, 40000000,
                                                                                     "/tmp")
    conf.write_text(_set(base, "inbound", "max_inflight_bytes", "1048576"))  # below max_request_bytes (32 MiB)
    with pytest.raises(ConfigError, match="max_inflight_bytes"):
        load_transport_config(load_gateway_config(conf))
    conf.write_text(_set(base, "inbound", "max_request_bytes", str(100 * 2**20)))  # the default follows it
    assert load_transport_config(load_gateway_config(conf)).inbound.max_inflight_bytes == 100 * 2**20


async def test_a_pipelined_request_gets_its_own_deadline(tcfg: TransportConfig, trader: Engine, pmodes: Any,
                                                        pki: Path) -> None:
    """Two requests in one write (HTTP pipelining): the second one's body never comes. Its bytes arrived while
    the first was answered, so only the handler can start its clock: it is cut as too slow, not left idle."""
    server = server_for(tcfg, trader, pmodes, min_rate_bytes_per_second=100, rate_grace_seconds=0.5,
                        read_timeout_seconds=60)
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound[0].port, ssl=attacker_tls(pki),
                                                       local_addr=("127.0.0.2", 0))
        path = tcfg.inbound.path
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
                     f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode())
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert first.startswith(b"HTTP/1.1 405")
        length = int(next(line.split(b":")[1] for line in first.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)  # the 405's body
        assert await asyncio.wait_for(Slow(reader, writer, "127.0.0.2").closed_by_server(), 30)
        assert server.cut == {"too-slow": 1}, server.cut
