"""TLS contexts on loopback with the test PKI: 2-way TLS passes, and each rejection is clear on the side that detects it."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from gateway.transport.config import KeyMaterial
from gateway.transport.tls import (
    TlsSetupError, build_client_context, build_server_context, describe_tls_error,
)


def _server(pki: Path, **kw) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    return build_server_context(server=KeyMaterial(cert=pki / "trader-tls-server.pem", key=pki / "trader-tls-server.key",
                                                   chain=(pki / "trader-int.pem",)),
                                client_ca=kw.pop("client_ca", [pki / "trader-ca-bundle.pem"]), environment="conformance",
                                **kw)


def _client(pki: Path, name: str | None = "trader-tls-client", **kw) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    material = KeyMaterial(cert=pki / f"{name}.pem", key=pki / f"{name}.key") if name else None
    return build_client_context(ca_files=[pki / "trader-root.pem"], client=material, **kw)


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str = "127.0.0.1",
                     server_hostname: str | None = None) -> str:
    """Returns the TLS version after a round trip; raises the client-side error otherwise."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read(5)
            writer.write(data)
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=client_ctx, server_hostname=server_hostname or host), 5)
        writer.write(b"hello")
        await writer.drain()
        got = await asyncio.wait_for(reader.read(5), 5)
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        if got != b"hello":  # TLS 1.3: a rejected client certificate shows up on the first read
            raise ConnectionResetError("the server closed the connection after the handshake")
        return version
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_two_way_tls_ipv4_and_ipv6(pki: Path, host: str) -> None:
    assert await _handshake(_server(pki), _client(pki), host) in ("TLSv1.2", "TLSv1.3")


async def test_tls12_only_uses_ecdhe_aes_gcm(pki: Path) -> None:
    assert await _handshake(_server(pki), _client(pki, max_version="TLSv1.2")) == "TLSv1.2"


async def _rejected(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture,
                    **kw) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="ics2gw.transport")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as info:
        await _handshake(server_ctx, client_ctx, **kw)
    await asyncio.sleep(0.05)
    server_side = " ".join(r.getMessage() for r in caplog.records if "tls_handshake_rejected" in r.getMessage())
    return describe_tls_error(info.value), server_side


async def test_no_client_certificate(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    client_err, server_log = await _rejected(_server(pki), _client(pki, None), caplog)
    assert "environment=conformance" in server_log and "no certificate" in server_log, server_log
    assert client_err


async def test_untrusted_client_ca(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, server_log = await _rejected(_server(pki), _client(pki, "other-tls-client"), caplog)
    assert "not issued by a trusted CA" in server_log, server_log


async def test_expired_client_certificate(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, server_log = await _rejected(_server(pki), _client(pki, "expired-tls-client"), caplog)
    assert "expired" in server_log, server_log


async def test_tls11_only_client(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_cert_chain(pki / "trader-tls-client.pem", pki / "trader-tls-client.key")
    client_err, server_log = await _rejected(_server(pki), ctx, caplog)
    assert "below the configured minimum" in server_log or "version" in server_log.lower(), server_log
    assert client_err  # the server resets the connection; the client sees a reset or a protocol alert


async def test_wrong_server_host_name(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    client_err, _ = await _rejected(_server(pki), _client(pki), caplog, server_hostname="ti.wrong.test")
    assert "does not match the host name" in client_err, client_err


async def test_server_not_trusted_by_client(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = build_client_context(ca_files=[pki / "customs-root.pem"],
                                  client=KeyMaterial(cert=pki / "trader-tls-client.pem", key=pki / "trader-tls-client.key"))
    client_err, _ = await _rejected(_server(pki), client, caplog)
    assert "server certificate is not issued by a trusted CA" in client_err, client_err


def test_pkcs12_client_material(pki: Path) -> None:
    pw = (pki / "trader-seal.p12.password").read_text().strip()
    ctx = build_client_context(ca_files=[pki / "trader-root.pem"],
                               client=KeyMaterial(pkcs12=pki / "trader-seal.p12", password=pw))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsSetupError, match="wrong password"):
        build_client_context(ca_files=[pki / "trader-root.pem"],
                             client=KeyMaterial(pkcs12=pki / "trader-seal.p12", password="nope"))


def test_mismatched_key_is_a_clear_error(pki: Path) -> None:
    with pytest.raises(TlsSetupError, match="do not load together"):
        build_client_context(ca_files=[pki / "trader-root.pem"],
                             client=KeyMaterial(cert=pki / "trader-tls-client.pem", key=pki / "trader-tls-server.key"))


def test_bad_cipher_list(pki: Path) -> None:
    with pytest.raises(TlsSetupError, match="selects no cipher"):
        _client(pki, ciphers="NOT-A-CIPHER")
