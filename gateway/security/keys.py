"""Loading the sealing identity (key + full chain) and reading the EORI a certificate carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from gateway.config import EORI_RE, ConfigError, SealConfig
from gateway.security.pkipath import is_issued_by


class KeyMaterialError(ValueError):
    pass


@dataclass(frozen=True)
class SealingIdentity:
    """The private key and the chain, leaf first, of the sealing certificate."""
    key: rsa.RSAPrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def load_pem_certificates(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise KeyMaterialError(f"{path}: no certificate could be read ({exc})") from None
    return certs


def check_identity(key: rsa.RSAPrivateKey, chain: list[x509.Certificate], *, allow_leaf_only: bool = False) -> None:
    """The key must match the leaf and each certificate must issue the one before it (leaf first)."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyMaterialError("the sealing key must be an RSA key (the profile signs with rsa-sha256)")
    if not chain:
        raise KeyMaterialError("no sealing certificate")
    if chain[0].public_key().public_numbers() != key.public_key().public_numbers():
        raise KeyMaterialError("the sealing key does not match the sealing certificate")
    if len(chain) < 2 and not allow_leaf_only:
        raise KeyMaterialError(
            "the sealing chain holds only the leaf certificate: ICS2 needs the full chain in the "
            "X509PKIPathv1 token (ICD 4.6.2); add the issuing CA(s) to the chain file")
    for i in range(len(chain) - 1):
        if not is_issued_by(chain[i], chain[i + 1]):
            raise KeyMaterialError(f"chain certificate {i + 2} did not issue certificate {i + 1}: order the chain file "
                                   "leaf first, then each issuer")
    # customs would refuse every message sealed with a certificate the seal policy refuses (a TLS client
    # certificate configured as the seal, SHA-1, a short key): say so at start-up, not per message
    from gateway.security.pathvalidate import PathError, check_seal_policy
    try:
        check_seal_policy(chain, at=None, anchor_index=len(chain) - 1)
    except PathError as exc:
        raise KeyMaterialError(f"the sealing chain is not acceptable ({exc.cause}): {exc}") from None


def load_sealing_identity(cfg: SealConfig, *, conf_file: Path | str = "configuration") -> SealingIdentity:
    try:
        if cfg.pkcs12:
            pw = cfg.password.encode() if cfg.password is not None else None
            try:
                key, cert, extra = pkcs12.load_key_and_certificates(cfg.pkcs12.read_bytes(), pw)
            except ValueError as exc:
                raise ConfigError(conf_file, "seal.pkcs12", f"cannot open the PKCS#12 file (wrong password?): {exc}")
            if key is None or cert is None:
                raise ConfigError(conf_file, "seal.pkcs12", "the PKCS#12 file has no key or no certificate")
            chain = [cert] + _order_issuers(cert, list(extra or []))
        else:
            assert cfg.key and cfg.chain
            pw = cfg.password.encode() if cfg.password is not None else None
            try:
                key = serialization.load_pem_private_key(cfg.key.read_bytes(), pw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(conf_file, "seal.key", f"cannot read the private key: {exc}") from None
            chain = load_pem_certificates(cfg.chain)
        check_identity(key, chain)  # type: ignore[arg-type]
    except KeyMaterialError as exc:
        raise ConfigError(conf_file, "seal", str(exc)) from None
    return SealingIdentity(key=key, chain=tuple(chain))  # type: ignore[arg-type]


def load_identity_files(key_path: Path, chain_path: Path, *, allow_leaf_only: bool = False) -> SealingIdentity:
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    chain = load_pem_certificates(chain_path)
    check_identity(key, chain, allow_leaf_only=allow_leaf_only)  # type: ignore[arg-type]
    return SealingIdentity(key=key, chain=tuple(chain))  # type: ignore[arg-type]


def _order_issuers(leaf: x509.Certificate, others: list[x509.Certificate]) -> list[x509.Certificate]:
    out, current = [], leaf
    while others:
        nxt = next((c for c in others if is_issued_by(current, c)), None)
        if nxt is None or nxt is current:
            break
        out.append(nxt)
        others.remove(nxt)
        current = nxt
    return out


def eoris_of(cert: x509.Certificate) -> list[str]:
    """Every EORI the subject names, in order (organizationIdentifier ``EORI:...`` first, then EORI-shaped
    serialNumbers), without repeats. More than one distinct value makes the seal's identity ambiguous."""
    out: list[str] = []
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        value = str(attr.value)
        if value.upper().startswith("EORI"):
            eori = value[5:] if value.upper().startswith("EORI:") else value[4:].lstrip(":-")
            if eori not in out:
                out.append(eori)
    for attr in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        value = str(attr.value)
        if EORI_RE.match(value) and value not in out:
            out.append(value)
    return out


def eori_of(cert: x509.Certificate) -> str | None:
    """The EORI in the subject: organizationIdentifier ``EORI:XX...`` (ETSI style), or else a serialNumber that has
    the shape of an EORI (a serialNumber such as ``IDCNL-123`` or ``VATNL-...`` is not an EORI, and reading it as
    one would bind the seal to a party it never named)."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        value = str(attr.value)
        if value.upper().startswith("EORI:"):
            return value[5:]
        if value.upper().startswith("EORI"):
            return value[4:].lstrip(":-")
    for attr in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        value = str(attr.value)
        if EORI_RE.match(value):
            return value
    return None
