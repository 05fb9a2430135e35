"""Certificates and CRLs the gateway depends on, with the time left, and alerts before they run out.

Why at run time and not only in ``doctor``: a gateway runs for months; the seal certificate (customs refuses our
messages with EBMS:0101 once it expires), the TLS client certificate (the handshake fails), a trust anchor or a
customs certificate (we can no longer verify receipts) and a CRL past its nextUpdate all expire while it runs.

Files are read from disk at every check, so a certificate renewed in place is seen without a restart. Thresholds
come from ``[health]`` (``ExpiryThresholds``); an alert is raised when an item enters a level (warning, critical,
expired) and repeated at most once a day while it stays there, through the ordinary alert channels.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

log = logging.getLogger("ics2gw.expiry")

_DAY = 86400.0


@dataclass(frozen=True)
class ExpiryThresholds:
    warning_days: float = 30.0       # certificates: alert and /health degraded below this
    critical_days: float = 7.0       # certificates: the alert says critical
    crl_warning_days: float = 2.0    # CRLs are re-issued often; warn when nextUpdate is this close


@dataclass(frozen=True)
class ExpiryItem:
    kind: str            # certificate | crl
    role: str            # seal, seal-chain, tls-client, trust-anchor, intermediate, customs, crl
    subject: str         # the certificate's subject CN (or the CRL issuer's)
    source: str          # the file it came from
    not_after: str       # ISO 8601 Z (for a CRL: nextUpdate)
    seconds_left: float
    error: str | None = None

    @property
    def days_left(self) -> float:
        return round(self.seconds_left / _DAY, 2)

    def level(self, t: ExpiryThresholds) -> str:
        """ok, warning, critical or expired."""
        if self.error:
            return "critical"
        if self.seconds_left <= 0:
            return "expired"
        warn = t.crl_warning_days if self.kind == "crl" else t.warning_days
        crit = t.crl_warning_days / 2 if self.kind == "crl" else t.critical_days
        if self.seconds_left < crit * _DAY:
            return "critical"
        if self.seconds_left < warn * _DAY:
            return "warning"
        return "ok"

    def to_dict(self, t: ExpiryThresholds | None = None) -> dict[str, Any]:
        d = {"kind": self.kind, "role": self.role, "subject": self.subject, "source": self.source,
             "not_after": self.not_after, "days_left": self.days_left}
        if self.error:
            d["error"] = self.error
        if t is not None:
            d["level"] = self.level(t)
        return d


def _cn(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()[:120]


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_pem_certs(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def _pkcs12_certs(path: Path, password: str | None) -> list[x509.Certificate]:
    from cryptography.hazmat.primitives.serialization import pkcs12
    _, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), password.encode() if password else None)
    return [c for c in [cert, *(extra or [])] if c is not None]


@dataclass(frozen=True)
class Source:
    """Where to find one group of certificates: PEM/DER files, or a PKCS#12 file (with its password)."""
    role: str
    paths: tuple[Path, ...]
    pkcs12_password: str | None = None
    leaf_only: bool = False          # only the first certificate (the leaf) has this role; the rest is "<role>-chain"
    is_pkcs12: bool = False


def sources_from_config(cfg: Any, tcfg: Any) -> list[Source]:
    """The seal identity, the TLS client certificate, trust anchors, intermediates and customs certificates."""
    out: list[Source] = []
    seal = cfg.seal
    if getattr(seal, "pkcs12", None):
        out.append(Source("seal", (seal.pkcs12,), getattr(seal, "password", None), leaf_only=True, is_pkcs12=True))
    elif getattr(seal, "chain", None):
        out.append(Source("seal", (seal.chain,), leaf_only=True))
    client = tcfg.tls.client
    if client.pkcs12:
        out.append(Source("tls-client", (client.pkcs12,), client.password, leaf_only=True, is_pkcs12=True))
    elif client.cert:
        out.append(Source("tls-client", (client.cert,), leaf_only=True))
    out.append(Source("trust-anchor", tuple(cfg.trust.anchors)))
    out.append(Source("intermediate", tuple(getattr(cfg.trust, "intermediates", ()) or ())))
    out.append(Source("customs", tuple(cfg.trust.customs_certs)))
    return out


def scan(sources: Iterable[Source], crl_paths: Iterable[Path], *, now: dt.datetime | None = None) -> list[ExpiryItem]:
    """Reads every source and CRL; a file that cannot be read is an item with ``error`` (critical), never a crash."""
    now = now or dt.datetime.now(dt.UTC)
    items: list[ExpiryItem] = []
    seen: set[tuple[str, bytes]] = set()
    for src in sources:
        for path in src.paths:
            try:
                certs = _pkcs12_certs(path, src.pkcs12_password) if src.is_pkcs12 else _read_pem_certs(path)
            except Exception as exc:  # noqa: BLE001 - report, do not crash the daemon
                items.append(ExpiryItem("certificate", src.role, "?", str(path), "", 0.0,
                                        error=f"cannot read: {type(exc).__name__}: {exc}"[:200]))
                continue
            for i, cert in enumerate(certs):
                role = src.role if (i == 0 or not src.leaf_only) else f"{src.role}-chain"
                key = (role, cert.fingerprint(cert.signature_hash_algorithm or _sha256()))
                if key in seen:
                    continue
                seen.add(key)
                na = cert.not_valid_after_utc
                items.append(ExpiryItem("certificate", role, _cn(cert.subject), str(path), _iso(na),
                                        (na - now).total_seconds()))
    for path in crl_paths:
        try:
            data = path.read_bytes()
            crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        except Exception as exc:  # noqa: BLE001
            items.append(ExpiryItem("crl", "crl", "?", str(path), "", 0.0,
                                    error=f"cannot read: {type(exc).__name__}: {exc}"[:200]))
            continue
        nu = crl.next_update_utc
        if nu is None:   # no nextUpdate: nothing to expire
            continue
        items.append(ExpiryItem("crl", "crl", _cn(crl.issuer), str(path), _iso(nu), (nu - now).total_seconds()))
    return items


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes
    return hashes.SHA256()


class ExpiryWatch:
    """Checks expiry periodically: updates the metrics gauges, keeps the last scan for /health and the status
    page, and raises an alert per item and level (at most once a day per item while the level holds)."""

    def __init__(self, sources: list[Source], crl_paths: list[Path], thresholds: ExpiryThresholds,
                 raise_alert: Callable[..., None], *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.sources, self.crl_paths, self.thresholds = sources, crl_paths, thresholds
        self.raise_alert = raise_alert
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.items: list[ExpiryItem] = []
        self._alerted: dict[tuple[str, str, str], tuple[str, dt.datetime]] = {}

    def check(self) -> list[ExpiryItem]:
        """Scans and applies at once (tests, the CLI). The daemon scans in a thread and applies on its loop,
        because the alert channels run on the event loop."""
        return self.apply(self.scan_now())

    def scan_now(self) -> list[ExpiryItem]:
        return scan(self.sources, self.crl_paths, now=self.clock())

    def apply(self, items: list[ExpiryItem]) -> list[ExpiryItem]:
        now = self.clock()
        self.items = items
        from gateway.ops import metrics
        for it in self.items:
            if it.error:
                continue
            if it.kind == "crl":
                metrics.CRL_NEXT_UPDATE.labels(it.subject[:80]).set(it.seconds_left)
            else:
                metrics.CERT_EXPIRY.labels(it.role, it.subject[:80]).set(it.seconds_left)
            self._maybe_alert(it, now)
        for it in self.items:
            if it.error:
                self._maybe_alert(it, now)
        return self.items

    def _maybe_alert(self, it: ExpiryItem, now: dt.datetime) -> None:
        level = it.level(self.thresholds)
        key = (it.role, it.subject, it.source)
        if level == "ok":
            self._alerted.pop(key, None)
            return
        prev = self._alerted.get(key)
        if prev is not None and prev[0] == level and (now - prev[1]).total_seconds() < _DAY:
            return
        self._alerted[key] = (level, now)
        kind = "crl-expiring" if it.kind == "crl" else "certificate-expiring"
        if level == "expired":
            kind = "crl-stale" if it.kind == "crl" else "certificate-expired"
        if it.error:
            kind = f"{'crl' if it.kind == 'crl' else 'certificate'}-unreadable"
        self.raise_alert(kind, level=level, role=it.role, subject=it.subject, file=it.source,
                         not_after=it.not_after, days_left=it.days_left, **({"error": it.error} if it.error else {}))

    def summary(self) -> list[dict[str, Any]]:
        return [it.to_dict(self.thresholds) for it in self.items]
