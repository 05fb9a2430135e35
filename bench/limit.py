"""The crypto floor: raw RSA sign/verify with the sealing keys, gzip / SHA-256 / exclusive c14n throughput.

RSA goes through ``gateway.security.rsa_backend`` (what the engine uses), through ``cryptography`` directly
and through python-xmlsec, and ``openssl speed`` gives OpenSSL's own figure for the key size, so the table
shows whether any layer adds overhead. From sign and verify times the best possible filings/s on this machine
if crypto were the only cost: push = cores / (4 sign + 4 verify); pull adds the seals and verifications of
the PullRequests (empty polls included) and of the receipts posted back (``filing_limit``).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import zlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from bench import payloads
from bench.timing import rate

REPO = Path(__file__).resolve().parent.parent


def _openssl_speed(bits: int) -> dict[str, Any]:
    try:
        out = subprocess.run(["openssl", "speed", "-seconds", "2", f"rsa{bits}"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"skipped": f"openssl speed failed: {exc}"}
    m = re.search(rf"rsa\s+{bits}\s+bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
    if not m:
        return {"skipped": "openssl speed output not understood"}
    return {"sign_per_s": float(m.group(1)), "verify_per_s": float(m.group(2))}


def run(pki: Path, quick: bool = False) -> dict[str, Any]:
    from gateway.security import rsa_backend
    from gateway.security.keys import load_identity_files

    secs = 0.6 if quick else 1.5
    ident = load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem")
    key = ident.key
    pub = ident.chain[0].public_key()
    bits = key.key_size
    si = b"<ds:SignedInfo>" + b"x" * 1500 + b"</ds:SignedInfo>"  # a SignedInfo-sized input
    sig = rsa_backend.sign(key, si)
    out: dict[str, Any] = {"key": f"RSA-{bits}", "engine_backend": rsa_backend.BACKEND}
    out["engine_sign_per_s"] = rate(lambda: rsa_backend.sign(key, si), secs)
    out["engine_verify_per_s"] = rate(lambda: rsa_backend.verify(pub, sig, si), secs)
    out["cryptography_sign_per_s"] = rate(lambda: key.sign(si, padding.PKCS1v15(), hashes.SHA256()), secs)
    out["cryptography_verify_per_s"] = rate(lambda: pub.verify(sig, si, padding.PKCS1v15(), hashes.SHA256()), secs)
    try:
        import xmlsec
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        xkey = xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatPem)
        xpub = xmlsec.Key.from_memory(ident.chain[0].public_bytes(serialization.Encoding.PEM),
                                      xmlsec.constants.KeyDataFormatCertPem)

        def xs() -> bytes:
            ctx = xmlsec.SignatureContext()
            ctx.key = xkey
            return ctx.sign_binary(si, xmlsec.constants.TransformRsaSha256)

        def xv() -> None:
            ctx = xmlsec.SignatureContext()
            ctx.key = xpub
            ctx.verify_binary(si, xmlsec.constants.TransformRsaSha256, sig)

        out["xmlsec_sign_per_s"] = rate(xs, secs)
        out["xmlsec_verify_per_s"] = rate(xv, secs)
    except Exception as exc:  # noqa: BLE001 - optional comparison
        out["xmlsec"] = f"skipped: {exc}"
    out["openssl_speed"] = _openssl_speed(bits)
    # bulk primitives on the same payloads
    for name, data in (("10k", payloads.ens(10_000)), ("1m", payloads.ens(1_000_000))):
        mb = len(data) / 1e6
        out[f"gzip6_{name}_mb_per_s"] = rate(lambda d=data: zlib.compress(d, 6), secs) * mb
        out[f"sha256_{name}_mb_per_s"] = rate(lambda d=data: hashlib.sha256(d).digest(), secs) * mb
        root = etree.fromstring(data)
        out[f"exc_c14n_{name}_mb_per_s"] = rate(
            lambda r=root: etree.tostring(r, method="c14n", exclusive=True), secs) * mb
    return out


def filing_limit(cores: int, sign_per_s: float, verify_per_s: float, extra_seals: float = 0.0,
                 extra_verifies: float = 0.0) -> float:
    """Best filings/s if RSA were the only cost: 4 seals + 4 verifications per push cycle (plus extras)."""
    t = (4 + extra_seals) / sign_per_s + (4 + extra_verifies) / verify_per_s
    return cores / t
