"""SSL contexts for the 2-way TLS link with the customs Trader Interfaces (ICD 4.6.1, eDelivery 1.4.2.6).

Why here and nowhere else: the TLS policy (minimum version, cipher list, client-certificate requirement,
host-name check) must be identical for the gateway's client, its inbound server, ``doctor`` and the
customs simulator, and it must come from configuration (eDelivery 1.4.2.6: versions and suites MUST be
configurable). Defaults follow the ENISA guidance the profile cites: TLS 1.2 minimum, ECDHE + AES-GCM for
TLS 1.2, and the OpenSSL TLS 1.3 suites (all AEAD with forward secrecy; Python's ``ssl`` cannot restrict
them, so ``max_version = "TLSv1.2"`` is the knob to turn TLS 1.3 off).

Entry points:
- ``client_context(cfg, endpoint=None)`` / ``server_context(cfg)``: from a ``TransportConfig``,
  ``TlsConfig`` or ``GatewayConfig``;
- ``build_client_context(...)`` / ``build_server_context(...)``: from explicit files, for the simulator and
  tests (e.g. ``build_server_context(cert=..., key=..., client_ca=[trader-root.pem, ...])``);
- ``describe_tls_error(exc)``: one clear sentence for a handshake failure, for outcomes and logs.

Key material may be PEM (``cert`` may already hold the chain; ``chain`` appends issuers) or PKCS#12 with a
password from the environment or a file. ``ssl`` only loads from files, so PKCS#12 and split chains are
re-written once into a private temporary file (mode 0600, key encrypted with a one-time random password)
that is deleted straight after loading.

Server side: a handshake that fails (no client certificate, untrusted CA, expired certificate, TLS 1.1)
is logged as ``event=tls_handshake_rejected side=server reason=...``; asyncio alone would only log it in
debug mode, leaving the operator blind.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12 as p12

from gateway.config import GatewayConfig
from gateway.transport.config import DEFAULT_CIPHERS, Endpoint, KeyMaterial, TlsConfig, TransportConfig
from gateway.transport.logfmt import log

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TlsSetupError(Exception):
    """TLS key material or policy could not be loaded; the message names the file and what to do."""


# ------------------------------------------------------------------------------------------------ key material
@contextmanager
def _pem_files(material: KeyMaterial, what: str) -> Iterator[tuple[str, str, str | None]]:
    """(certfile, keyfile, password) ready for ``load_cert_chain``; temporary files removed on exit."""
    if material.pkcs12 is not None:
        pw = material.password.encode() if material.password is not None else None
        try:
            key, cert, extra = p12.load_key_and_certificates(material.pkcs12.read_bytes(), pw)
        except (ValueError, OSError) as exc:
            raise TlsSetupError(f"{what}: cannot open PKCS#12 {material.pkcs12} (wrong password?): {exc}") from None
        if key is None or cert is None:
            raise TlsSetupError(f"{what}: PKCS#12 {material.pkcs12} holds no key or no certificate")
        certs = [cert, *(extra or [])]
        for extra_path in material.chain:
            certs += _read_certs(extra_path, what)
        once = secrets.token_urlsafe(24)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(once.encode()))
        with _private_file(key_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)) as f:
            yield f, f, once
        return
    if material.cert is None or material.key is None:
        raise TlsSetupError(f"{what}: no certificate configured (give *_cert + *_key or *_pkcs12)")
    if not material.chain:
        yield str(material.cert), str(material.key), material.password
        return
    data = material.cert.read_bytes().rstrip() + b"\n"
    for extra_path in material.chain:
        data += extra_path.read_bytes().rstrip() + b"\n"
    with _private_file(data) as f:
        yield f, str(material.key), material.password


def _read_certs(path: Path, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise TlsSetupError(f"{what}: cannot read certificates from {path}: {exc}") from None


@contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    fd, name = tempfile.mkstemp(prefix="ics2gw-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield name
    finally:
        try:
            os.unlink(name)
        except OSError:
            pass


def _load_chain(ctx: ssl.SSLContext, material: KeyMaterial, what: str) -> None:
    with _pem_files(material, what) as (certfile, keyfile, password):
        try:
            ctx.load_cert_chain(certfile, keyfile, password=password)
        except ssl.SSLError as exc:
            raise TlsSetupError(f"{what}: certificate {material.source} and its key do not load together "
                                f"({exc.reason or exc}); check that the key matches the certificate") from None
        except (OSError, ValueError) as exc:
            raise TlsSetupError(f"{what}: cannot load {material.source}: {exc}") from None


def _load_cas(ctx: ssl.SSLContext, cas: Sequence[Path], what: str) -> None:
    if not cas:
        raise TlsSetupError(f"{what}: no CA certificates configured; without them no peer can be verified")
    for path in cas:
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            raise TlsSetupError(f"{what}: cannot load CA file {path}: {exc}") from None


def _policy(ctx: ssl.SSLContext, min_version: str, max_version: str | None, ciphers: str, what: str) -> None:
    ctx.minimum_version = _VERSIONS.get(min_version, ssl.TLSVersion.TLSv1_2)
    if max_version:
        ctx.maximum_version = _VERSIONS[max_version]
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        raise TlsSetupError(f"{what}: the cipher list {ciphers!r} selects no cipher OpenSSL knows") from None
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE


# ------------------------------------------------------------------------------------------------ builders
def build_client_context(*, ca_files: Sequence[Path], client: KeyMaterial | None = None,
                         min_version: str = "TLSv1.2", max_version: str | None = None,
                         ciphers: str = DEFAULT_CIPHERS) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_files`` and its host name, presenting ``client``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    _policy(ctx, min_version, max_version, ciphers, "tls client")
    _load_cas(ctx, ca_files, "tls.ca_bundle")
    if client is not None and client.configured:
        _load_chain(ctx, client, "tls.client")
    return ctx


def build_server_context(*, server: KeyMaterial, client_ca: Sequence[Path], require_client_cert: bool = True,
                         min_version: str = "TLSv1.2", max_version: str | None = None,
                         ciphers: str = DEFAULT_CIPHERS, environment: str = "unknown",
                         name: str = "inbound") -> ssl.SSLContext:
    """A server context demanding a client certificate issued under ``client_ca`` (2-way TLS, ICD 4.6.1)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _policy(ctx, min_version, max_version, ciphers, "tls server")
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(ctx, server, "tls.server")
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_cas(ctx, client_ca, "tls.client_ca")
    ctx.sslobject_class = _logging_sslobject(environment, name)
    return ctx


def _logging_sslobject(environment: str, name: str) -> type[ssl.SSLObject]:
    class _LoggingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                log(logging.WARNING, "tls_handshake_rejected", environment, side="server", server=name,
                    reason=describe_tls_error(exc, side="server"))
                raise
    return _LoggingSSLObject


# ------------------------------------------------------------------------------------------------ from config
def _tls_of(cfg: TransportConfig | TlsConfig | GatewayConfig) -> tuple[TlsConfig, str]:
    if isinstance(cfg, TlsConfig):
        return cfg, "unknown"
    if isinstance(cfg, GatewayConfig):
        from gateway.transport.config import load_transport_config
        cfg = load_transport_config(cfg)
    return cfg.tls, cfg.environment


def client_context(cfg: TransportConfig | TlsConfig | GatewayConfig, endpoint: Endpoint | None = None) -> ssl.SSLContext:
    """The context the As4Client uses for ``endpoint`` (its own ca_bundle, else [tls] ca_bundle)."""
    tls, _env = _tls_of(cfg)
    cas = endpoint.ca_bundle if endpoint is not None and endpoint.ca_bundle else tls.ca_bundle
    return build_client_context(ca_files=cas, client=tls.client, min_version=tls.min_version,
                                max_version=tls.max_version, ciphers=tls.ciphers)


def server_context(cfg: TransportConfig | TlsConfig | GatewayConfig) -> ssl.SSLContext:
    """The context of the inbound (c2t push) server: our server certificate, client certificates mandatory."""
    tls, env = _tls_of(cfg)
    return build_server_context(server=tls.server, client_ca=tls.client_ca, min_version=tls.min_version,
                                max_version=tls.max_version, ciphers=tls.ciphers, environment=env)


# ------------------------------------------------------------------------------------------------ diagnostics
def describe_tls_error(exc: BaseException, side: str = "client") -> str:
    """A sentence an operator can act on, from an ssl / aiohttp TLS exception (or its cause).

    ``side`` is who detected the failure: the client judges the server certificate, the server the client's."""
    peer = "server" if side == "client" else "client"
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError) or (
                isinstance(cur, ssl.SSLError) and (cur.reason or "").upper() == "CERTIFICATE_VERIFY_FAILED"):
            vm = getattr(cur, "verify_message", "") or str(cur)
            low = vm.lower()
            if "hostname" in low or "ip address mismatch" in low:
                return f"{peer} certificate does not match the host name ({vm})"
            if "expired" in low:
                return f"the {peer} certificate has expired ({vm})"
            if "local issuer" in low or "self-signed" in low or "self signed" in low:
                return f"the {peer} certificate is not issued by a trusted CA ({vm})"
            return f"{peer} certificate rejected: {vm}"
        if isinstance(cur, ssl.SSLError):
            reason = (cur.reason or "").upper()
            text = {
                "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate (2-way TLS is mandatory)",
                "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate and none was sent",
                "SSLV3_ALERT_BAD_CERTIFICATE": "the peer rejected our certificate",
                "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA of our certificate",
                "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer rejected our certificate as expired",
                "UNSUPPORTED_PROTOCOL": "the peer offered only a TLS version below the configured minimum",
                "TLSV1_ALERT_PROTOCOL_VERSION": "the peer refused our TLS version",
                "NO_SHARED_CIPHER": "no cipher suite in common with the peer",
                "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer aborted the handshake (no common cipher or version?)",
                "WRONG_VERSION_NUMBER": "the peer does not speak TLS on this port (plain HTTP?)",
            }.get(reason)
            if text:
                return f"{text} [{cur.reason}]"
            return f"TLS error: {cur.reason or cur}"
        nxt = (getattr(cur, "os_error", None) or getattr(cur, "certificate_error", None) or cur.__cause__
               or cur.__context__)
        cur = nxt if isinstance(nxt, BaseException) else None
    return f"{type(exc).__name__}: {exc}"


def peer_summary(ssl_object: Any) -> dict[str, str]:
    """Subject and issuer CN of the peer certificate of an established connection (no secrets)."""
    if ssl_object is None:
        return {}
    cert = ssl_object.getpeercert()
    if not cert:
        return {}

    def cn(rdns: Any) -> str:
        for rdn in rdns or ():
            for k, v in rdn:
                if k == "commonName":
                    return str(v)
        return ""
    return {"peer_subject": cn(cert.get("subject")), "peer_issuer": cn(cert.get("issuer")),
            "tls_version": ssl_object.version() or "", "cipher": (ssl_object.cipher() or ("",))[0]}
