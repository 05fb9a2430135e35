#!/usr/bin/env python3
"""Generates the throwaway test PKI for ics2gw into an output folder (default: certs/out).

Never use these keys for anything real: they are written unencrypted (except the PKCS#12 test bundle,
whose password sits next to it) so that tests and the demo can run unattended.

    python certs/make_pki.py [--out DIR] [--bits 3072] [--eori NL123456789] [--force]

The generator is idempotent: if DIR/.complete exists and matches the parameters it does nothing
(pass --force to regenerate). See certs/README.md for the list of files it writes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
LEAF_DAYS = 730  # raised by the test-vector generator so committed vectors stay valid for years
LOOPBACK_SAN = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]
P12_PASSWORD = "test-only-pkcs12-password"


class Issuer:
    def __init__(self, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.name, self.cert, self.key = name, cert, key


def make_name(*, c: str, o: str, cn: str, ou: str | None = None, eori: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, c), x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    if eori:
        # ETSI EN 319 412-1 style: organizationIdentifier carries "EORI:" + the EORI number.
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"EORI:{eori}"))
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, eori))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


class Pki:
    def __init__(self, out: Path, bits: int) -> None:
        self.out, self.bits = out, bits
        self.written: list[str] = []

    def key(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=self.bits)

    def write_key(self, name: str, key: rsa.RSAPrivateKey) -> None:
        path = self.out / f"{name}.key"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        os.chmod(path, 0o600)
        self.written.append(path.name)

    def write_pem(self, filename: str, *certs: x509.Certificate) -> None:
        (self.out / filename).write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        self.written.append(filename)

    def build(self, name: str, subject: x509.Name, issuer: Issuer | None, *, ca: bool = False,
              pathlen: int | None = None, usage: str = "seal", san: list[x509.GeneralName] | None = None,
              not_before: dt.datetime | None = None, days: int | None = None) -> Issuer:
        key = self.key()
        nb = not_before or (NOW - dt.timedelta(hours=1))
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(issuer.cert.subject if issuer else subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(nb).not_valid_after(nb + dt.timedelta(days=days or LEAF_DAYS))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if issuer:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                                critical=False)
        ku = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                  data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                  encipher_only=False, decipher_only=False)
        if ca:
            ku.update(key_cert_sign=True, crl_sign=True)
        elif usage == "seal":
            ku.update(digital_signature=True, content_commitment=True)
        else:  # tls-client / tls-server
            ku.update(digital_signature=True, key_encipherment=True)
        b = b.add_extension(x509.KeyUsage(**ku), critical=True)
        if usage == "tls-server":
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif usage == "tls-client":
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = b.sign(issuer.key if issuer else key, hashes.SHA256())
        self.write_key(name, key)
        self.write_pem(f"{name}.pem", cert)
        return Issuer(name, cert, key)

    def crl(self, filename: str, issuer: Issuer, revoked: list[x509.Certificate]) -> None:
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
             .last_update(NOW - dt.timedelta(minutes=5)).next_update(NOW + dt.timedelta(days=30)))
        for cert in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(NOW - dt.timedelta(minutes=5))
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build())
        crl = b.sign(issuer.key, hashes.SHA256())
        (self.out / filename).write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        self.written.append(filename)


def generate(out: Path, bits: int, eori: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    p = Pki(out, bits)
    # --- trader side: root -> issuing CA -> seal and TLS certificates
    t_root = p.build("trader-root", make_name(c="NL", o="Test Trader PKI", cn="Test Trader Root CA"), None,
                     ca=True, days=3650)
    t_int = p.build("trader-int", make_name(c="NL", o="Test Trader PKI", cn="Test Trader Issuing CA"), t_root,
                    ca=True, pathlen=0, days=1825)
    seal = p.build("trader-seal", make_name(c="NL", o="Test Trader BV", cn="Test Trader BV Seal", eori=eori), t_int)
    p.write_pem("trader-chain.pem", seal.cert, t_int.cert, t_root.cert)
    p.write_pem("trader-ca-bundle.pem", t_int.cert, t_root.cert)
    p.build("trader-tls-client", make_name(c="NL", o="Test Trader BV", cn="ap.trader.test"), t_int,
            usage="tls-client", san=[x509.DNSName("ap.trader.test")] + LOOPBACK_SAN)
    p.build("trader-tls-server", make_name(c="NL", o="Test Trader BV", cn="localhost"), t_int,
            usage="tls-server", san=LOOPBACK_SAN)
    # negative vectors: expired seal, revoked seal (+ CRL), leaf of an unrelated CA
    expired = p.build("expired-seal", make_name(c="NL", o="Test Trader BV", cn="Test Trader BV Expired Seal",
                                                eori=eori), t_int,
                      not_before=NOW - dt.timedelta(days=40), days=39)
    p.write_pem("expired-chain.pem", expired.cert, t_int.cert, t_root.cert)
    revoked = p.build("revoked-seal", make_name(c="NL", o="Test Trader BV", cn="Test Trader BV Revoked Seal",
                                                eori=eori), t_int)
    p.write_pem("revoked-chain.pem", revoked.cert, t_int.cert, t_root.cert)
    p.crl("trader-int.crl.pem", t_int, [revoked.cert])
    p.crl("trader-root.crl.pem", t_root, [])
    p.build("expired-tls-client", make_name(c="NL", o="Test Trader BV", cn="expired.trader.test"), t_int,
            usage="tls-client", not_before=NOW - dt.timedelta(days=40), days=39)
    # --- customs side: root -> STI seal and TLS certificates
    c_root = p.build("customs-root", make_name(c="BE", o="Test Customs PKI", cn="Test Customs Root CA"), None,
                     ca=True, days=3650)
    c_seal = p.build("customs-seal", make_name(c="BE", o="Test European Commission", ou="TAXUD",
                                               cn="Test STI TAXUD Seal"), c_root)
    p.write_pem("customs-chain.pem", c_seal.cert, c_root.cert)
    p.crl("customs-root.crl.pem", c_root, [])
    p.build("customs-tls-server", make_name(c="BE", o="Test European Commission", cn="localhost"), c_root,
            usage="tls-server", san=LOOPBACK_SAN)
    p.build("customs-tls-client", make_name(c="BE", o="Test European Commission", cn="sti.customs.test"), c_root,
            usage="tls-client", san=[x509.DNSName("sti.customs.test")])
    # --- an unrelated CA with a seal carrying our EORI and a TLS client certificate
    o_root = p.build("other-root", make_name(c="DE", o="Unrelated PKI", cn="Unrelated Root CA"), None,
                     ca=True, days=3650)
    o_seal = p.build("other-seal", make_name(c="DE", o="Impostor GmbH", cn="Impostor Seal", eori=eori), o_root)
    p.write_pem("other-chain.pem", o_seal.cert, o_root.cert)
    p.build("other-tls-client", make_name(c="DE", o="Impostor GmbH", cn="impostor.test"), o_root,
            usage="tls-client")
    # PKCS#12 bundle of the trader seal (key + chain), to test PKCS#12 loading with a password file
    p12 = pkcs12.serialize_key_and_certificates(
        b"trader-seal", seal.key, seal.cert, [t_int.cert, t_root.cert],
        serialization.BestAvailableEncryption(P12_PASSWORD.encode()))
    (out / "trader-seal.p12").write_bytes(p12)
    (out / "trader-seal.p12.password").write_text(P12_PASSWORD + "\n")
    os.chmod(out / "trader-seal.p12", 0o600)
    os.chmod(out / "trader-seal.p12.password", 0o600)
    p.written += ["trader-seal.p12", "trader-seal.p12.password"]
    return p.written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--bits", type=int, default=int(os.environ.get("ICS2GW_PKI_BITS", "3072")))
    ap.add_argument("--eori", default=os.environ.get("ICS2GW_TEST_EORI", "NL123456789"))
    ap.add_argument("--force", action="store_true", help="regenerate even if a complete PKI is present")
    args = ap.parse_args(argv)
    marker = args.out / ".complete"
    params = {"bits": args.bits, "eori": args.eori}
    if marker.exists() and not args.force:
        try:
            if json.loads(marker.read_text()).get("params") == params:
                print(f"test PKI already present in {args.out} (use --force to regenerate)")
                return 0
        except ValueError:
            pass
    written = generate(args.out, args.bits, args.eori)
    marker.write_text(json.dumps({"params": params, "created": NOW.isoformat(), "files": written}, indent=1))
    print(f"test PKI written to {args.out}: {len(written)} files ({args.bits}-bit RSA, EORI {args.eori})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
