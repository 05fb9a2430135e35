"""Builds small certificate hierarchies in memory for the path-validation tests: one good chain, and one variant
per refusal (each differs from the good chain in exactly one property, so a test failing names one cause).

Keys are generated once per process and reused (a certificate's properties, not its key, are under test), which
keeps the whole negative catalogue to a few hundred milliseconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
EORI = "NL123456789"


@lru_cache(maxsize=None)
def rsa_key(bits: int = 2048, slot: int = 0) -> rsa.RSAPrivateKey:
    """A private key per (size, slot): distinct slots give distinct keys for issuer and subject."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def name(cn: str, *, eori: str | None = None, o: str = "Test Path PKI", serial: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)]
    if eori:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"EORI:{eori}"))
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def key_usage(*, ds: bool = False, nr: bool = False, ke: bool = False, cert_sign: bool = False,
              crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=ds, content_commitment=nr, key_encipherment=ke, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


SEAL_KU = key_usage(ds=True, nr=True)
CA_KU = key_usage(cert_sign=True, crl_sign=True)


@dataclass
class Node:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey = field(repr=False)


def issue(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: Node | None, *, ca: bool, pathlen: int | None = None,
          ku: x509.KeyUsage | None = None, eku: Sequence[x509.ObjectIdentifier] | None = None,
          extra: Sequence[tuple[x509.ExtensionType, bool]] = (), hash_alg: hashes.HashAlgorithm | None = None,
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
          basic_constraints: bool = True, no_ku: bool = False) -> Node:
    nb = not_before or NOW - dt.timedelta(days=30)
    na = not_after or NOW + dt.timedelta(days=365)
    issuer_name = issuer.cert.subject if issuer else subject
    signing_key = issuer.key if issuer else key
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                        critical=False))
    if basic_constraints:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen), critical=True)
    if ku is None:
        ku = CA_KU if ca else SEAL_KU
    if not no_ku:
        b = b.add_extension(ku, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    cert = b.sign(signing_key, hashes.SHA256())
    if isinstance(hash_alg, hashes.SHA1):
        cert = resign_sha1(cert, signing_key)
    return Node(cert, key)


_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")   # OID sha256WithRSAEncryption, DER
_SHA1_RSA = bytes.fromhex("06092a864886f70d010105")     # OID sha1WithRSAEncryption, same length


def resign_sha1(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """The same certificate signed with sha1WithRSAEncryption. cryptography no longer signs certificates with SHA-1,
    so the DER is edited: both AlgorithmIdentifiers are swapped (same length) and the TBS is signed again."""
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(_SHA256_RSA) == 1
    new_tbs = tbs.replace(_SHA256_RSA, _SHA1_RSA)
    new_sig = key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1())
    assert len(new_sig) == len(cert.signature)
    head, rest = der.split(tbs, 1)
    rest = rest.replace(_SHA256_RSA, _SHA1_RSA, 1).replace(cert.signature, new_sig, 1)
    return x509.load_der_x509_certificate(head + new_tbs + rest)


@dataclass
class Hierarchy:
    root: Node
    inter: Node
    leaf: Node
    extra: tuple[Node, ...] = ()     # certificates between leaf and inter (sub-CAs), leaf-side first

    @property
    def chain(self) -> list[x509.Certificate]:
        """Leaf first, ending at the root (what a PkiPath token carries, reversed)."""
        return [self.leaf.cert, *(n.cert for n in self.extra), self.inter.cert, self.root.cert]


def root_ca(cn: str = "Path Test Root CA", slot: int = 0) -> Node:
    return issue(name(cn), rsa_key(2048, 100 + slot), None, ca=True)


def good(*, root: Node | None = None, eori: str = EORI, **leaf_kw: object) -> Hierarchy:
    """root -> issuing CA (pathlen 0, like our test PKI) -> seal; ``leaf_kw`` overrides the seal's properties."""
    root = root or root_ca()
    inter = issue(name("Path Test Issuing CA"), rsa_key(2048, 1), root, ca=True, pathlen=0)
    kw = {"ca": False, **leaf_kw}
    leaf = issue(name("Path Test Seal", eori=eori), rsa_key(2048, 2), inter, **kw)  # type: ignore[arg-type]
    return Hierarchy(root, inter, leaf)


UNKNOWN_CRITICAL = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1"), b"\x05\x00")


def with_inter(root: Node, **inter_kw: object) -> Hierarchy:
    """root -> issuing CA with ``inter_kw`` -> good seal."""
    kw = {"ca": True, "pathlen": 0, **inter_kw}
    inter = issue(name("Path Test Issuing CA"), rsa_key(2048, 1), root, **kw)  # type: ignore[arg-type]
    leaf = issue(name("Path Test Seal", eori=EORI), rsa_key(2048, 2), inter, ca=False)
    return Hierarchy(root, inter, leaf)


def sub_ca_under_pathlen0(root: Node) -> Hierarchy:
    """root -> issuing CA (pathlen 0) -> sub-CA -> seal: the sub-CA exceeds the issuing CA's path length."""
    inter = issue(name("Path Test Issuing CA"), rsa_key(2048, 1), root, ca=True, pathlen=0)
    sub = issue(name("Path Test Sub CA"), rsa_key(2048, 3), inter, ca=True)
    leaf = issue(name("Path Test Seal", eori=EORI), rsa_key(2048, 2), sub, ca=False)
    return Hierarchy(root, inter, leaf, extra=(sub,))


__all__ = ["CA_KU", "EORI", "NOW", "SEAL_KU", "UNKNOWN_CRITICAL", "ExtendedKeyUsageOID", "Hierarchy", "Node",
           "good", "issue", "key_usage", "name", "root_ca", "rsa_key", "sub_ca_under_pathlen0", "with_inter"]
