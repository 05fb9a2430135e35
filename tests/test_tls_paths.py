"""The inbound server's client-certificate check refuses, over real 2-way TLS on 127.0.0.1, the same certificate
faults the seal policy refuses (where they make sense for TLS), and logs the cause.

The attacker's client context runs at OpenSSL security level 0 so that it can present what our server must refuse;
the server is built by ``build_server_context``, exactly as the daemon builds it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from gateway.transport.config import KeyMaterial
from gateway.transport.tls import build_server_context
from tests.certfactory import UNKNOWN_CRITICAL, Node, issue, key_usage, name, root_ca, rsa_key
from tests.test_tls import _handshake

LOOPBACK = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])


def _write(d: Path, label: str, node: Node, *chain: x509.Certificate) -> tuple[Path, Path]:
    cert, key = d / f"{label}.pem", d / f"{label}.key"
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (node.cert, *chain)))
    key.write_bytes(node.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key


@pytest.fixture(scope="module")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("tlspki")
    root = root_ca("TLS Path Root CA", slot=3)
    (d / "root.pem").write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    inter = issue(name("TLS Issuing CA"), rsa_key(2048, 1), root, ca=True, pathlen=0)
    server = issue(name("127.0.0.1"), rsa_key(2048, 5), inter, ca=False, ku=key_usage(ds=True, ke=True),
                   eku=[EKU.SERVER_AUTH], extra=[(LOOPBACK, False)])
    cert, key = _write(d, "server", server, inter.cert)
    ctx = build_server_context(server=KeyMaterial(cert=cert, key=key), client_ca=[d / "root.pem"],
                               environment="conformance")
    return {"dir": d, "root": root, "inter": inter, "server": ctx}


def _attacker_client(d: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")      # able to present weak certificates; our server must refuse them
    ctx.load_verify_locations(cafile=str(d / "root.pem"))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _client_cert(tls_pki: dict[str, object], label: str, *, issuer: Node | None = None,
                 chain: tuple[x509.Certificate, ...] | None = None, **kw: object) -> ssl.SSLContext:
    inter = tls_pki["inter"]
    assert isinstance(inter, Node)
    issuer = issuer or inter
    key = kw.pop("key", rsa_key(2048, 6))
    opts = {"ku": key_usage(ds=True), "eku": [EKU.CLIENT_AUTH], **kw}
    node = issue(name(label), key, issuer, ca=False, **opts)  # type: ignore[arg-type]
    d = tls_pki["dir"]
    assert isinstance(d, Path)
    cert, keyfile = _write(d, label, node, *(chain if chain is not None else (inter.cert,)))
    return _attacker_client(d, cert, keyfile)


def _sub_ca(tls_pki: dict[str, object]) -> Node:
    inter = tls_pki["inter"]
    assert isinstance(inter, Node)
    return issue(name("TLS Sub CA"), rsa_key(2048, 3), inter, ca=True)


CASES = [
    ("sha1", lambda p: {"hash_alg": hashes.SHA1()}, "digest algorithm too weak"),
    ("rsa1024", lambda p: {"key": rsa_key(1024, 9)}, "key too weak"),
    ("server-only-eku", lambda p: {"eku": [EKU.SERVER_AUTH]}, "unsuitable certificate purpose"),
    ("critical-extension", lambda p: {"extra": [(UNKNOWN_CRITICAL, True)]}, "unhandled critical extension"),
    ("path-length", lambda p: (lambda sub: {"issuer": sub, "chain": (sub.cert, p["inter"].cert)})(_sub_ca(p)),
     "path length constraint exceeded"),
]


def test_good_client_certificate_is_accepted(tls_pki: dict[str, object]) -> None:
    ctx = _client_cert(tls_pki, "good-client")
    assert asyncio.run(_handshake(tls_pki["server"], ctx)).startswith("TLS")  # type: ignore[arg-type]


@pytest.mark.parametrize("label,opts,reason", CASES, ids=[c[0] for c in CASES])
def test_inbound_tls_refuses_and_names_the_certificate_fault(  # type: ignore[no-untyped-def]
        tls_pki: dict[str, object], label: str, opts, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    ctx = _client_cert(tls_pki, f"bad-{label}", **opts(tls_pki))
    with caplog.at_level(logging.WARNING, logger="ics2gw.transport"):
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            asyncio.run(_handshake(tls_pki["server"], ctx))  # type: ignore[arg-type]
    assert "event=tls_handshake_rejected" in caplog.text and reason in caplog.text
