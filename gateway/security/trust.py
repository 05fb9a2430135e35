"""Certificate chain validation against configured trust anchors, with CRL revocation checks.

Why not a TLS-style path builder: the seal chain comes complete in the PkiPath token, and the ICS2 questions
are narrow (does it chain to an anchor we configured, is every certificate in its validity period, is any of
them revoked by a CRL we were given). Doing exactly that keeps every failure explainable in one sentence.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.security.keys import load_pem_certificates
from gateway.security.pkipath import is_issued_by


class ChainError(ValueError):
    """The chain is not acceptable; ``reason`` is one of untrusted, expired, not-yet-valid, revoked, broken."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class ChainResult:
    chain: tuple[x509.Certificate, ...]   # leaf first, ending at the trust anchor
    anchor: x509.Certificate


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


class CrlCache:
    """CRLs loaded from files, reloaded when a file changes, checked at most every ``refresh_seconds``."""

    def __init__(self, paths: Sequence[Path], refresh_seconds: int = 3600) -> None:
        self.paths = list(paths)
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self.generation = 0          # bumped whenever the CRL set changes: validated-chain caches key on it
        self._mtimes: dict[Path, float] = {}
        self._crls: list[x509.CertificateRevocationList] = []
        self.reload(force=True)

    def reload(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._loaded_at < self.refresh_seconds:
                return
            mtimes = {p: p.stat().st_mtime for p in self.paths if p.exists()}
            if force or mtimes != self._mtimes:
                crls = []
                for p in self.paths:
                    data = p.read_bytes()
                    try:
                        crls.append(x509.load_pem_x509_crl(data) if b"-----BEGIN" in data
                                    else x509.load_der_x509_crl(data))
                    except ValueError as exc:
                        raise ChainError("broken", f"CRL {p} cannot be read: {exc}") from None
                self._crls, self._mtimes = crls, mtimes
                self.generation += 1
            self._loaded_at = time.monotonic()

    def is_revoked(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        self.reload()
        for crl in self._crls:
            if crl.issuer != issuer.subject:
                continue
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                continue  # a CRL not signed by this issuer says nothing about its certificates
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return True
        return False


class TrustStore:
    """Trust anchors, CRLs and (for customs traffic) the set of accepted customs sealing certificates."""

    def __init__(self, anchors: Sequence[x509.Certificate], crls: CrlCache | None = None,
                 customs_certs: Sequence[x509.Certificate] = (),
                 intermediates: Sequence[x509.Certificate] = ()) -> None:
        self.anchors = list(anchors)
        # CA certificates that are not anchors but may complete a chain sent as a bare leaf (X509v3 token)
        self.intermediates = list(intermediates)
        self.crls = crls
        self.customs_certs = list(customs_certs)
        self._anchor_der = {_fingerprint(a) for a in self.anchors}
        self._customs_der = {_fingerprint(c) for c in self.customs_certs}
        self._cache: dict[bytes, tuple[ChainResult, dt.datetime, dt.datetime, int]] = {}

    @classmethod
    def from_files(cls, anchors: Sequence[Path], crls: Sequence[Path] = (), customs_certs: Sequence[Path] = (),
                   crl_refresh_seconds: int = 3600, intermediates: Sequence[Path] = ()) -> TrustStore:
        a = [c for p in anchors for c in load_pem_certificates(p)]
        cc = [c for p in customs_certs for c in load_pem_certificates(p)]
        im = [c for p in intermediates for c in load_pem_certificates(p)]
        return cls(a, CrlCache(crls, crl_refresh_seconds) if crls else None, cc, im)

    def validate_cached(self, key: bytes, chain_leaf_first: Sequence[x509.Certificate], *,
                        at: dt.datetime | None = None) -> ChainResult:
        """``validate`` with a cache keyed by ``key`` (the SHA-256 of the token that carried the chain).

        A hit is used only while ``at`` lies inside every certificate's validity period and the CRL set is the one
        the chain was checked against; anything else validates afresh. Failures are never cached."""
        at = at or dt.datetime.now(dt.timezone.utc)
        if self.crls is not None:
            self.crls.reload()
        generation = self.crls.generation if self.crls is not None else 0
        hit = self._cache.get(key)
        if hit is not None:
            result, not_before, not_after, gen = hit
            if gen == generation and not_before <= at <= not_after:
                return result
        result = self.validate(chain_leaf_first, at=at)
        not_before = max(c.not_valid_before_utc for c in result.chain)
        not_after = min(c.not_valid_after_utc for c in result.chain)
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[key] = (result, not_before, not_after, generation)
        return result

    def is_customs_certificate(self, cert: x509.Certificate) -> bool:
        return _fingerprint(cert) in self._customs_der

    def validate(self, chain_leaf_first: Sequence[x509.Certificate], *, at: dt.datetime | None = None) -> ChainResult:
        """Checks that the chain links up to a configured anchor, all certificates are valid at ``at``, and none
        is revoked. The anchor may be the last certificate of the chain or the issuer of the last one."""
        at = at or dt.datetime.now(dt.timezone.utc)
        chain = list(chain_leaf_first)
        if not chain:
            raise ChainError("broken", "no certificate to validate")
        for i in range(len(chain) - 1):
            if not is_issued_by(chain[i], chain[i + 1]):
                raise ChainError("broken", f"certificate {i + 2} of the chain did not issue certificate {i + 1} "
                                           f"({chain[i].subject.rfc4514_string()})")
            if not _is_ca(chain[i + 1]):
                raise ChainError("broken", f"{chain[i + 1].subject.rfc4514_string()} is not a CA certificate")
        # complete a short chain (an X509v3 token holds the leaf only) from the configured intermediates
        while (_fingerprint(chain[-1]) not in self._anchor_der
               and not any(is_issued_by(chain[-1], a) for a in self.anchors) and len(chain) < 8):
            issuer = next((c for c in self.intermediates if c is not chain[-1] and is_issued_by(chain[-1], c)), None)
            if issuer is None:
                break
            chain.append(issuer)
        last = chain[-1]
        if _fingerprint(last) in self._anchor_der:
            anchor = last
        else:
            anchor = next((a for a in self.anchors if is_issued_by(last, a)), None)
            if anchor is None:
                raise ChainError("untrusted", f"the chain of {chain[0].subject.rfc4514_string()} does not lead to a "
                                              "configured trust anchor")
            chain.append(anchor)
        for cert in chain:
            if at < cert.not_valid_before_utc:
                raise ChainError("not-yet-valid", f"{cert.subject.rfc4514_string()} is not valid before "
                                                  f"{cert.not_valid_before_utc.isoformat()}")
            if at > cert.not_valid_after_utc:
                raise ChainError("expired", f"{cert.subject.rfc4514_string()} expired on "
                                            f"{cert.not_valid_after_utc.isoformat()}")
        if self.crls is not None:
            for i in range(len(chain) - 1):
                if self.crls.is_revoked(chain[i], chain[i + 1]):
                    raise ChainError("revoked", f"{chain[i].subject.rfc4514_string()} (serial "
                                                f"{chain[i].serial_number:x}) is revoked")
        return ChainResult(chain=tuple(chain), anchor=anchor)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
