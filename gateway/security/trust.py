"""Certificate chain validation against configured trust anchors: RFC 5280 path validation with the ICS2 sealing
policy on top (``pathvalidate``), then CRL revocation checks, with a cache of validated chains.

The seal chain comes complete in the PkiPath token (or as a bare leaf in an X509v3 token, completed here from the
configured intermediates). ``validate`` first settles which configured anchor ends the chain (so "untrusted" is
said only when no anchor is reached), then lets ``pathvalidate`` name the first policy cause and run the real
path validator, then asks the CRLs. Every refusal is a ``ChainError`` whose ``reason`` names the cause in one
word and whose message names the certificate and the rule.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import Store

from gateway.security.keys import load_pem_certificates
from gateway.security.pathvalidate import DEFAULT_POLICY, PathError, SealPolicy, check_seal_policy, rfc5280_path
from gateway.security.pkipath import is_issued_by

EORI_BINDING_MODES = ("refuse", "if-present", "report")

logger = logging.getLogger("ics2gw.security")


class ChainError(ValueError):
    """The chain is not acceptable. ``reason`` is one of: untrusted, broken, expired, not-yet-valid, revoked, and
    the policy causes of ``pathvalidate`` (path-length, not-a-ca, ca-key-usage, ca-extended-key-usage,
    critical-extension, seal-is-ca, seal-key-usage, seal-extended-key-usage, weak-key, weak-algorithm, path)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class ChainResult:
    chain: tuple[x509.Certificate, ...]   # leaf first, ending at the trust anchor
    anchor: x509.Certificate


class CrlCache:
    """CRLs loaded from files, reloaded when a file changes, checked at most every ``refresh_seconds``.

    A change is a different (mtime, size, inode) of any file, or a file appearing or disappearing: an atomic
    rename-into-place changes the inode even within one mtime tick. ``clock`` (monotonic seconds) is injectable
    so that tests can step past the refresh interval without sleeping."""

    def __init__(self, paths: Sequence[Path], refresh_seconds: int = 3600, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self.paths = list(paths)
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self.generation = 0          # bumped whenever the CRL set changes: validated-chain caches key on it
        self._stamps: dict[Path, tuple[int, int, int]] = {}
        self._crls: list[x509.CertificateRevocationList] = []
        self._signature_ok: dict[tuple[int, x509.Certificate], tuple[x509.CertificateRevocationList, bool]] = {}
        self.reload(force=True)

    def _stamp(self) -> dict[Path, tuple[int, int, int]]:
        out = {}
        for p in self.paths:
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            out[p] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return out

    def reload(self, force: bool = False) -> None:
        with self._lock:
            if not force and self.clock() - self._loaded_at < self.refresh_seconds:
                return
            stamps = self._stamp()
            if force or stamps != self._stamps:
                crls = []
                for p in self.paths:
                    # fail closed: a configured CRL that vanished or is half-written means revocation is unknown
                    try:
                        data = p.read_bytes()
                        crls.append(x509.load_pem_x509_crl(data) if b"-----BEGIN" in data
                                    else x509.load_der_x509_crl(data))
                    except (OSError, ValueError) as exc:
                        raise ChainError("broken", f"CRL {p} cannot be read: {exc}") from None
                self._crls, self._stamps = crls, stamps
                self._signature_ok = {}
                self.generation += 1
            self._loaded_at = self.clock()
            self._warn_stale()

    def _warn_stale(self) -> None:
        """A CRL past its nextUpdate is still used (refusing every chain would stop all traffic when the fetcher
        lags), but the operator hears of it at every refresh: ``event=crl_stale``."""
        now = self.wall_clock()
        for p, crl in zip(self.paths, self._crls):
            nxt = crl.next_update_utc
            if nxt is not None and nxt < now:
                logger.warning("event=crl_stale file=%s issuer=%r next_update=%s: revocation information is out of "
                               "date; publish a fresh CRL", p, crl.issuer.rfc4514_string(), nxt.isoformat())

    def is_revoked(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        self.reload()
        crls = self._crls      # one consistent set, even if another thread reloads meanwhile
        for n, crl in enumerate(crls):
            if crl.issuer != issuer.subject:
                continue
            if not self._signed_by(crls, n, issuer):
                continue  # a CRL not signed by this issuer says nothing about its certificates
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return True
        return False

    def _signed_by(self, crls: list[x509.CertificateRevocationList], n: int, issuer: x509.Certificate) -> bool:
        """The CRL's signature check, remembered per (CRL, issuer) until the CRL set changes."""
        crl = crls[n]
        hit = self._signature_ok.get((n, issuer))
        if hit is not None and hit[0] is crl:
            return hit[1]
        ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        if len(self._signature_ok) > 1024:
            self._signature_ok.clear()
        self._signature_ok[(n, issuer)] = (crl, ok)
        return ok


class TrustStore:
    """Trust anchors, CRLs, the seal policy and (for customs traffic) the set of accepted customs sealing
    certificates. ``eori_binding`` says how a seal's EORI must match the PartyId it signs for (``binding``)."""

    def __init__(self, anchors: Sequence[x509.Certificate], crls: CrlCache | None = None,
                 customs_certs: Sequence[x509.Certificate] = (),
                 intermediates: Sequence[x509.Certificate] = (), *, policy: SealPolicy = DEFAULT_POLICY,
                 eori_binding: str = "refuse") -> None:
        if eori_binding not in EORI_BINDING_MODES:
            raise ValueError(f"eori_binding must be one of {', '.join(EORI_BINDING_MODES)}, not {eori_binding!r}")
        self.anchors = list(anchors)
        # CA certificates that are not anchors but may complete a chain sent as a bare leaf (X509v3 token, or a
        # one-certificate PkiPath from customs): [trust] intermediates and any CA among the customs certificates
        self.intermediates = list(intermediates) + [c for c in customs_certs if _is_ca(c)]
        self.crls = crls
        self.customs_certs = list(customs_certs)
        self.policy = policy
        self.eori_binding = eori_binding
        # certificates compare and hash by their DER encoding
        self._anchor_set = frozenset(self.anchors)
        self._customs_set = frozenset(self.customs_certs)
        self._store = Store(self.anchors) if self.anchors else None
        self._cache: dict[bytes, tuple[ChainResult, dt.datetime, dt.datetime, int]] = {}

    @classmethod
    def from_files(cls, anchors: Sequence[Path], crls: Sequence[Path] = (), customs_certs: Sequence[Path] = (),
                   crl_refresh_seconds: int = 3600, intermediates: Sequence[Path] = (), *,
                   eori_binding: str = "refuse") -> TrustStore:
        a = [c for p in anchors for c in load_pem_certificates(p)]
        cc = [c for p in customs_certs for c in load_pem_certificates(p)]
        im = [c for p in intermediates for c in load_pem_certificates(p)]
        return cls(a, CrlCache(crls, crl_refresh_seconds) if crls else None, cc, im, eori_binding=eori_binding)

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
            self._cache.pop(key, None)     # another thread may have dropped it already
        result = self.validate(chain_leaf_first, at=at)
        not_before = max(c.not_valid_before_utc for c in result.chain)
        not_after = min(c.not_valid_after_utc for c in result.chain)
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[key] = (result, not_before, not_after, generation)
        return result

    def is_customs_certificate(self, cert: x509.Certificate) -> bool:
        return cert in self._customs_set

    def validate(self, chain_leaf_first: Sequence[x509.Certificate], *, at: dt.datetime | None = None) -> ChainResult:
        """Validates the chain (leaf first) at ``at``: it must reach a configured anchor (which may be in the chain,
        or the issuer of its last certificate, or reached through configured intermediates), satisfy RFC 5280 and
        the ICS2 seal policy, and no certificate may be revoked by a configured CRL."""
        at = at or dt.datetime.now(dt.timezone.utc)
        chain = list(chain_leaf_first)
        if not chain:
            raise ChainError("broken", "no certificate to validate")
        for i in range(len(chain) - 1):
            if not is_issued_by(chain[i], chain[i + 1]):
                raise ChainError("broken", f"certificate {i + 2} of the chain did not issue certificate {i + 1} "
                                           f"({chain[i].subject.rfc4514_string()})")
        chain, anchor = self._to_anchor(chain)
        try:
            check_seal_policy(chain, at=at, anchor_index=len(chain) - 1, policy=self.policy)
            if self._store is None:
                raise ChainError("untrusted", "no trust anchor is configured")
            path = rfc5280_path(chain[0], chain[1:] + self.intermediates, self._store, at=at, policy=self.policy)
            if path != chain:
                # the validator found another path (a cross-certificate, another anchor): the policy holds for it too
                check_seal_policy(path, at=at, anchor_index=len(path) - 1, policy=self.policy)
                chain, anchor = path, path[-1]
        except PathError as exc:
            raise ChainError(exc.cause, str(exc)) from None
        if self.crls is not None:
            for i in range(len(chain) - 1):
                if self.crls.is_revoked(chain[i], chain[i + 1]):
                    raise ChainError("revoked", f"{chain[i].subject.rfc4514_string()} (serial "
                                                f"{chain[i].serial_number:x}) is revoked")
        return ChainResult(chain=tuple(chain), anchor=anchor)

    def _to_anchor(self, chain: list[x509.Certificate]) -> tuple[list[x509.Certificate], x509.Certificate]:
        """The chain cut at its first configured anchor, or extended by the anchor that issued its end, completing
        a short chain from the configured intermediates on the way; ``untrusted`` when no anchor is reached."""
        while True:
            for i, cert in enumerate(chain):
                if cert in self._anchor_set:
                    return chain[:i + 1], cert
            anchor = next((a for a in self.anchors if is_issued_by(chain[-1], a)), None)
            if anchor is not None:
                return chain + [anchor], anchor
            issuer = (next((c for c in self.intermediates if is_issued_by(chain[-1], c)
                            and c not in chain), None)
                      if len(chain) < self.policy.max_chain_depth + 1 else None)
            if issuer is None:
                raise ChainError("untrusted", f"the chain of {chain[0].subject.rfc4514_string()} does not lead to a "
                                              "configured trust anchor")
            chain = chain + [issuer]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        return False
