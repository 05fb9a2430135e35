"""What is trusted and what we load to seal with: the PkiPath token codec (X.690 DER, ICD 4.6.2 order), the
sealing identity (PEM key + chain, PKCS#12, the checks made at start-up), the EORI a certificate names, and the
trust store's own rules (anchors, intermediates, CRL files, the validated-chain cache).

Everything is real: certificates from the generated test PKI (certs/out) or from tests/certfactory.py, real
signatures, real CRL files on disk. Refusals are checked by their exact message (or reason and message).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.certfactory import EORI, NOW, Hierarchy, Node, good, issue, key_usage, name, root_ca, rsa_key
from gateway.config import ConfigError, SealConfig
from gateway.security import pkipath
from gateway.security.keys import (
    KeyMaterialError, check_identity, eori_of, eoris_of, load_identity_files, load_pem_certificates,
    load_sealing_identity,
)
from gateway.security.pkipath import PkiPathError
from gateway.security.trust import ChainError, CrlCache, TrustStore


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def h() -> Hierarchy:
    return good(root=root_ca("Trust Store Root CA", slot=7))


# ------------------------------------------------------------------------------------------------ PkiPath codec
@pytest.mark.parametrize("n, encoded", [
    (0, b"\x00"), (1, b"\x01"), (0x7F, b"\x7f"),                       # short form up to 127 (X.690 8.1.3.4)
    (0x80, b"\x81\x80"), (0xFF, b"\x81\xff"),                          # long form: 0x80 | number of octets
    (0x100, b"\x82\x01\x00"), (0xFFFF, b"\x82\xff\xff"), (0x10000, b"\x83\x01\x00\x00"),
])
def test_der_length_octets_follow_x690(n: int, encoded: bytes) -> None:
    assert pkipath._der_length(n) == encoded


def test_pkipath_is_one_sequence_of_the_certificates_root_first(h: Hierarchy) -> None:
    token = pkipath.encode(h.chain)                      # given leaf first
    content = der(h.root.cert) + der(h.inter.cert) + der(h.leaf.cert)
    assert token == b"\x30\x82" + len(content).to_bytes(2, "big") + content
    assert pkipath.decode(token) == [h.root.cert, h.inter.cert, h.leaf.cert]
    assert pkipath.encode(tuple(h.chain)) == token


@pytest.mark.parametrize("token, message", [
    (b"", "truncated DER element"),
    (b"\x30", "truncated DER element"),
    (b"\x31\x00", "a PkiPath is one DER SEQUENCE"),                    # a SET
    (b"\x30\x00\x00", "a PkiPath is one DER SEQUENCE"),                # trailing bytes after the SEQUENCE
    (b"\x30\x00", "empty PkiPath"),
    (b"\x30\x84\x00\x00\x00\x00", "empty PkiPath"),                    # four length octets: still read
    (b"\x30\x82\x00\x00", "empty PkiPath"),
    (b"\x30\x80", "unsupported DER length"),                           # indefinite length (BER, not DER)
    (b"\x30\x85\x00\x00\x00\x00\x00", "unsupported DER length"),       # five length octets
    (b"\x30\x82\x00", "unsupported DER length"),                       # length octets cut off
    (b"\x30\x01", "DER element longer than the token"),
    (b"\x30\x7f" + b"\x00" * 126, "DER element longer than the token"),
    (b"\x30\x01\x00", "truncated DER element"),                        # one byte where an element must be
    (b"\x30\x03\x02\x01\x05", "PkiPath element is not a certificate"),  # an INTEGER
])
def test_malformed_pkipath_tokens_are_refused_by_name(token: bytes, message: str) -> None:
    with pytest.raises(PkiPathError) as exc:
        pkipath.decode(token)
    assert str(exc.value) == message


def test_a_sequence_that_is_no_certificate_is_refused_with_its_position(h: Hierarchy) -> None:
    good_one = der(h.root.cert)
    not_a_cert = b"\x30\x03\x02\x01\x05"
    for content, position in ((not_a_cert + good_one, 1), (good_one + not_a_cert, 2)):
        token = b"\x30" + pkipath._der_length(len(content)) + content
        with pytest.raises(PkiPathError) as exc:
            pkipath.decode(token)
        assert str(exc.value).startswith(f"PkiPath certificate {position} cannot be read: ")


def test_pkipath_certificate_count_limit_is_exact(h: Hierarchy) -> None:
    ten = pkipath.encode([h.leaf.cert] * 10)
    assert len(pkipath.decode(ten)) == 10
    with pytest.raises(PkiPathError) as exc:
        pkipath.decode(pkipath.encode([h.leaf.cert] * 11))
    assert str(exc.value) == "the PkiPath holds more than 10 certificates"
    assert len(pkipath.decode(pkipath.encode(h.chain), max_certificates=3)) == 3
    with pytest.raises(PkiPathError) as exc:
        pkipath.decode(pkipath.encode(h.chain), max_certificates=2)
    assert str(exc.value) == "the PkiPath holds more than 2 certificates"
    # the count comes first: eleven elements that are not even certificates are refused for their number
    junk = b"\x02\x01\x05" * 11
    with pytest.raises(PkiPathError) as exc:
        pkipath.decode(b"\x30" + pkipath._der_length(len(junk)) + junk)
    assert str(exc.value) == "the PkiPath holds more than 10 certificates"


def test_issued_by_needs_the_issuers_name_and_key(h: Hierarchy) -> None:
    assert pkipath.is_issued_by(h.leaf.cert, h.inter.cert)
    assert pkipath.is_issued_by(h.root.cert, h.root.cert)                  # self-signed
    assert not pkipath.is_issued_by(h.inter.cert, h.leaf.cert)
    assert not pkipath.is_issued_by(h.leaf.cert, h.root.cert)              # another name
    impostor = issue(h.inter.cert.subject, rsa_key(2048, 41), h.root, ca=True, pathlen=0)
    assert not pkipath.is_issued_by(h.leaf.cert, impostor.cert)            # the name, another key


def test_sha1_signed_certificates_still_link_and_only_with_the_right_key(h: Hierarchy) -> None:
    sha1_leaf = issue(name("SHA-1 Seal", eori=EORI), rsa_key(2048, 2), h.inter, ca=False, hash_alg=hashes.SHA1())
    assert isinstance(sha1_leaf.cert.signature_hash_algorithm, hashes.SHA1)
    assert pkipath.is_issued_by(sha1_leaf.cert, h.inter.cert)
    impostor = issue(h.inter.cert.subject, rsa_key(2048, 41), h.root, ca=True, pathlen=0)
    assert not pkipath.is_issued_by(sha1_leaf.cert, impostor.cert)
    assert not pkipath._legacy_rsa_signature_ok(sha1_leaf.cert, impostor.cert)
    assert pkipath._legacy_rsa_signature_ok(sha1_leaf.cert, h.inter.cert)
    assert not pkipath._legacy_rsa_signature_ok(h.leaf.cert, h.inter.cert)   # SHA-256: not the legacy path


def test_sha1_certificate_under_an_ec_issuer_does_not_link() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    subject = name("EC Root")
    ec_root = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(ec_key.public_key())
               .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ec_key, hashes.SHA256()))
    rsa_issuer = Node(ec_root, rsa_key(2048, 42))        # signs with an RSA key under the EC root's name
    leaf = issue(name("Seal"), rsa_key(2048, 2), rsa_issuer, ca=False, hash_alg=hashes.SHA1())
    assert not pkipath.is_issued_by(leaf.cert, ec_root)


def test_pkipath_order_is_root_first(h: Hierarchy) -> None:
    root_first = [h.root.cert, h.inter.cert, h.leaf.cert]
    assert pkipath.order_is_root_first(root_first)
    assert not pkipath.order_is_root_first(list(reversed(root_first)))
    assert not pkipath.order_is_root_first([h.root.cert, h.leaf.cert, h.inter.cert])
    assert pkipath.order_is_root_first([h.leaf.cert])


# --------------------------------------------------------------------------------------------- sealing identity
def test_certificates_load_from_pem_bundles_and_der(pki: Path, tmp_path: Path) -> None:
    chain = load_pem_certificates(pki / "trader-chain.pem")
    assert [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in chain][1:] == [
        "Test Trader Issuing CA", "Test Trader Root CA"]
    der_file = tmp_path / "seal.der"
    der_file.write_bytes(der(chain[0]))
    assert load_pem_certificates(der_file) == [chain[0]]
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate")
    with pytest.raises(KeyMaterialError) as exc:
        load_pem_certificates(junk)
    assert str(exc.value).startswith(f"{junk}: no certificate could be read (")


def test_identity_checks_name_each_problem(pki: Path, h: Hierarchy) -> None:
    key = serialization.load_pem_private_key((pki / "trader-seal.key").read_bytes(), None)
    chain = load_pem_certificates(pki / "trader-chain.pem")
    check_identity(key, chain)  # type: ignore[arg-type]
    cases = [
        (ec.generate_private_key(ec.SECP256R1()), chain, {},
         "the sealing key must be an RSA key (the profile signs with rsa-sha256)"),
        (key, [], {}, "no sealing certificate"),
        (h.leaf.key, chain, {}, "the sealing key does not match the sealing certificate"),
        (key, chain[:1], {}, "the sealing chain holds only the leaf certificate: ICS2 needs the full chain in the "
                             "X509PKIPathv1 token (ICD 4.6.2); add the issuing CA(s) to the chain file"),
        (key, [chain[0], chain[2], chain[1]], {},
         "chain certificate 2 did not issue certificate 1: order the chain file leaf first, then each issuer"),
        (key, [chain[0], chain[1], h.root.cert], {},
         "chain certificate 3 did not issue certificate 2: order the chain file leaf first, then each issuer"),
    ]
    for k, c, kw, message in cases:
        with pytest.raises(KeyMaterialError) as exc:
            check_identity(k, c, **kw)  # type: ignore[arg-type]
        assert str(exc.value) == message
    check_identity(key, chain[:1], allow_leaf_only=True)  # type: ignore[arg-type]


def test_identity_refused_by_the_seal_policy_names_the_cause(pki: Path) -> None:
    key = serialization.load_pem_private_key((pki / "trader-tls-client.key").read_bytes(), None)
    chain = load_pem_certificates(pki / "trader-tls-client.pem") + load_pem_certificates(pki / "trader-ca-bundle.pem")
    with pytest.raises(KeyMaterialError) as exc:
        check_identity(key, chain)  # type: ignore[arg-type]
    assert str(exc.value).startswith("the sealing chain is not acceptable (seal-extended-key-usage): ")


def test_identity_files_load_leaf_only_only_when_allowed(pki: Path) -> None:
    ident = load_identity_files(pki / "trader-seal.key", pki / "trader-seal.pem", allow_leaf_only=True)
    assert ident.chain == tuple(load_pem_certificates(pki / "trader-seal.pem"))
    with pytest.raises(KeyMaterialError, match="holds only the leaf certificate"):
        load_identity_files(pki / "trader-seal.key", pki / "trader-seal.pem")
    full = load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem")
    assert full.certificate == full.chain[0] and len(full.chain) == 3


def _p12(tmp_path: Path, key: object, cert: x509.Certificate | None, cas: list[x509.Certificate],
         password: bytes | None) -> Path:
    enc = (serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    f = tmp_path / "seal.p12"
    f.write_bytes(pkcs12.serialize_key_and_certificates(b"seal", key, cert, cas or None, enc))  # type: ignore[arg-type]
    return f


def test_pkcs12_issuers_are_put_in_chain_order_and_strangers_dropped(pki: Path, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((pki / "trader-seal.key").read_bytes(), None)
    leaf, inter, root = load_pem_certificates(pki / "trader-chain.pem")
    stranger = load_pem_certificates(pki / "customs-root.pem")[0]
    f = _p12(tmp_path, key, leaf, [root, stranger, inter], b"pw")
    ident = load_sealing_identity(SealConfig(None, None, f, "pw"), conf_file="gw.toml")
    assert ident.chain == (leaf, inter, root)
    f = _p12(tmp_path, key, leaf, [inter, root], None)                  # no password at all
    assert load_sealing_identity(SealConfig(None, None, f, None)).chain == (leaf, inter, root)


def test_pkcs12_problems_name_the_configuration_key(pki: Path, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((pki / "trader-seal.key").read_bytes(), None)
    leaf, inter, root = load_pem_certificates(pki / "trader-chain.pem")
    f = _p12(tmp_path, key, leaf, [inter, root], b"pw")
    with pytest.raises(ConfigError) as exc:
        load_sealing_identity(SealConfig(None, None, f, "wrong"), conf_file="gw.toml")
    assert (exc.value.file, exc.value.key) == ("gw.toml", "seal.pkcs12")
    assert exc.value.message.startswith("cannot open the PKCS#12 file (wrong password?): ")
    f = _p12(tmp_path, None, leaf, [inter, root], b"pw")                # certificates only
    with pytest.raises(ConfigError) as exc:
        load_sealing_identity(SealConfig(None, None, f, "pw"), conf_file="gw.toml")
    assert (exc.value.key, exc.value.message) == ("seal.pkcs12", "the PKCS#12 file has no key or no certificate")
    f = _p12(tmp_path, key, leaf, [], b"pw")                            # a leaf-only bundle
    with pytest.raises(ConfigError) as exc:
        load_sealing_identity(SealConfig(None, None, f, "pw"), conf_file="gw.toml")
    assert exc.value.key == "seal" and exc.value.message.startswith("the sealing chain holds only the leaf")
    assert str(exc.value).startswith("gw.toml: [seal] the sealing chain holds only the leaf")


def test_pem_key_problems_name_the_configuration_key(pki: Path, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((pki / "trader-seal.key").read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[union-attr]
                                         serialization.BestAvailableEncryption(b"secret")))
    ident = load_sealing_identity(SealConfig(locked, pki / "trader-chain.pem", None, "secret"))
    assert len(ident.chain) == 3
    for password in ("wrong", None):
        with pytest.raises(ConfigError) as exc:
            load_sealing_identity(SealConfig(locked, pki / "trader-chain.pem", None, password), conf_file="gw.toml")
        assert (exc.value.file, exc.value.key) == ("gw.toml", "seal.key")
        assert exc.value.message.startswith("cannot read the private key: ")
    with pytest.raises(ConfigError) as exc:
        load_sealing_identity(SealConfig(pki / "customs-seal.key", pki / "trader-chain.pem", None, None),
                              conf_file="gw.toml")
    assert (exc.value.key, exc.value.message) == ("seal", "the sealing key does not match the sealing certificate")


# ------------------------------------------------------------------------------------------- EORI of a certificate
def _subject_cert(h: Hierarchy, attrs: list[tuple[x509.ObjectIdentifier, str]]) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "NL")]
                        + [x509.NameAttribute(oid, value) for oid, value in attrs]
                        + [x509.NameAttribute(x509.NameOID.COMMON_NAME, "EORI Test Seal")])
    return issue(subject, rsa_key(2048, 2), h.inter, ca=False).cert


OI, SN = x509.NameOID.ORGANIZATION_IDENTIFIER, x509.NameOID.SERIAL_NUMBER


@pytest.mark.parametrize("attrs, first, every", [
    ([(OI, "EORI:NL123456789")], "NL123456789", ["NL123456789"]),
    ([(OI, "eori:NL123456789")], "NL123456789", ["NL123456789"]),             # the prefix in any case
    ([(OI, "EORINL123456789")], "NL123456789", ["NL123456789"]),
    ([(OI, "EORI-NL123456789")], "NL123456789", ["NL123456789"]),
    ([(OI, "EORI:-NL1")], "-NL1", ["-NL1"]),                                   # after "EORI:" nothing is stripped
    ([(OI, "VATNL-123"), (SN, "NL123456789")], "NL123456789", ["NL123456789"]),  # not an EORI identifier
    ([(SN, "IDCNL-123456")], None, []),
    ([(OI, "EORI:NL123456789"), (SN, "NL123456789")], "NL123456789", ["NL123456789"]),   # one value, twice
    ([(OI, "EORI:NL123456789"), (SN, "DE987654321")], "NL123456789", ["NL123456789", "DE987654321"]),
    ([(OI, "EORI:NL1"), (OI, "EORI:NL1"), (OI, "EORI:DE2")], "NL1", ["NL1", "DE2"]),
    ([(SN, "NL123456789"), (SN, "NL123456789")], "NL123456789", ["NL123456789"]),
    ([(OI, "EORI-XI123456789")], "XI123456789", ["XI123456789"]),            # Northern Ireland: only ":-" go
    ([(OI, "EORIXI123456789")], "XI123456789", ["XI123456789"]),
])
def test_eori_named_by_a_certificate(h: Hierarchy, attrs: list[tuple[x509.ObjectIdentifier, str]],
                                     first: str | None, every: list[str]) -> None:
    cert = _subject_cert(h, attrs)
    assert eori_of(cert) == first
    assert eoris_of(cert) == every


# ----------------------------------------------------------------------------------------------- the trust store
def test_trust_store_configuration_errors_name_the_setting(h: Hierarchy) -> None:
    with pytest.raises(ValueError) as exc:
        TrustStore([h.root.cert], eori_binding="lenient")
    assert str(exc.value) == "eori_binding must be one of refuse, if-present, report, not 'lenient'"
    for mode in ("refuse", "if-present", "report"):
        assert TrustStore([h.root.cert], eori_binding=mode).eori_binding == mode


def test_customs_ca_certificates_complete_chains_and_customs_seals_do_not(pki: Path) -> None:
    root = load_pem_certificates(pki / "customs-root.pem")[0]
    seal = load_pem_certificates(pki / "customs-seal.pem")[0]
    trader_int = load_pem_certificates(pki / "trader-int.pem")[0]
    store = TrustStore([], customs_certs=[seal, root], intermediates=[trader_int])
    assert store.intermediates == [trader_int, root]
    assert store.customs_certs == [seal, root]
    assert store.is_customs_certificate(seal) and store.is_customs_certificate(root)
    assert not store.is_customs_certificate(trader_int)


def test_trust_store_from_files_reads_every_setting(pki: Path, tmp_path: Path) -> None:
    store = TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"],
                                  crls=[pki / "trader-int.crl.pem", pki / "trader-root.crl.pem"],
                                  customs_certs=[pki / "customs-seal.pem"], crl_refresh_seconds=77,
                                  intermediates=[pki / "trader-int.pem"], eori_binding="report")
    assert store.anchors == load_pem_certificates(pki / "trader-root.pem") + load_pem_certificates(
        pki / "customs-root.pem")
    assert store.customs_certs == load_pem_certificates(pki / "customs-seal.pem")
    assert store.intermediates == load_pem_certificates(pki / "trader-int.pem")
    assert store.eori_binding == "report"
    assert store.crls is not None and store.crls.refresh_seconds == 77
    assert store.crls.paths == [pki / "trader-int.crl.pem", pki / "trader-root.crl.pem"]
    with pytest.raises(ChainError) as exc:
        store.validate(load_pem_certificates(pki / "revoked-chain.pem"))
    assert exc.value.reason == "revoked"
    assert TrustStore.from_files([pki / "trader-root.pem"]).crls is None
    # the documented default (docs/security.md): CRL files are re-examined at most every hour
    by_default = TrustStore.from_files([pki / "trader-root.pem"], crls=[pki / "trader-int.crl.pem"])
    assert by_default.crls is not None and by_default.crls.refresh_seconds == 3600
    assert CrlCache([pki / "trader-int.crl.pem"]).refresh_seconds == 3600
    assert by_default.eori_binding == "refuse" and TrustStore([]).eori_binding == "refuse"


def test_chain_links_are_checked_before_anything_else(h: Hierarchy) -> None:
    store = TrustStore([h.root.cert])
    with pytest.raises(ChainError) as exc:
        store.validate([h.leaf.cert, h.root.cert], at=NOW)
    assert exc.value.reason == "broken"
    assert str(exc.value) == ("certificate 2 of the chain did not issue certificate 1 "
                              f"({h.leaf.cert.subject.rfc4514_string()})")
    with pytest.raises(ChainError) as exc:
        store.validate([h.leaf.cert, h.inter.cert, h.leaf.cert], at=NOW)
    assert str(exc.value) == ("certificate 3 of the chain did not issue certificate 2 "
                              f"({h.inter.cert.subject.rfc4514_string()})")
    with pytest.raises(ChainError) as exc:
        store.validate([], at=NOW)
    assert (exc.value.reason, str(exc.value)) == ("broken", "no certificate to validate")


def test_a_chain_reaching_no_anchor_is_untrusted(h: Hierarchy) -> None:
    other = root_ca("Unrelated Root CA", slot=9)
    with pytest.raises(ChainError) as exc:
        TrustStore([other.cert]).validate(h.chain, at=NOW)
    assert exc.value.reason == "untrusted"
    assert str(exc.value) == (f"the chain of {h.leaf.cert.subject.rfc4514_string()} does not lead to a configured "
                              "trust anchor")
    with pytest.raises(ChainError) as exc:
        TrustStore([]).validate(h.chain, at=NOW)
    assert exc.value.reason == "untrusted"


def test_the_chain_is_cut_at_the_anchor_or_extended_to_it(h: Hierarchy) -> None:
    by_inter = TrustStore([h.inter.cert]).validate(h.chain, at=NOW)          # an intermediate pinned as anchor
    assert by_inter.chain == (h.leaf.cert, h.inter.cert) and by_inter.anchor == h.inter.cert
    to_root = TrustStore([h.root.cert]).validate(h.chain[:2], at=NOW)         # the root not sent: added
    assert to_root.chain == tuple(h.chain) and to_root.anchor == h.root.cert
    completed = TrustStore([h.root.cert], intermediates=[h.inter.cert]).validate([h.leaf.cert], at=NOW)
    assert completed.chain == tuple(h.chain) and completed.anchor == h.root.cert
    with pytest.raises(ChainError) as exc:                                     # no intermediate to complete it
        TrustStore([h.root.cert]).validate([h.leaf.cert], at=NOW)
    assert exc.value.reason == "untrusted"


def test_completion_from_intermediates_stops_at_the_policy_depth() -> None:
    """root -> CA 1 -> ... -> CA n -> seal, with only the root trusted and every CA configured as an
    intermediate: completing a bare leaf adds at most ``max_chain_depth`` certificates before the anchor."""
    from gateway.security.pathvalidate import DEFAULT_POLICY
    depth = DEFAULT_POLICY.max_chain_depth
    root = root_ca("Deep Root CA", slot=11)

    def ladder(n: int) -> tuple[list[Node], Node]:
        cas, parent = [], root
        for i in range(n):
            parent = issue(name(f"Deep CA {i}"), rsa_key(2048, 60 + i), parent, ca=True)
            cas.append(parent)
        return cas, issue(name("Deep Seal", eori=EORI), rsa_key(2048, 2), parent, ca=False)

    cas, leaf = ladder(depth + 1)               # one CA more than may stand between the leaf and the anchor
    store = TrustStore([root.cert], intermediates=[c.cert for c in cas])
    with pytest.raises(ChainError) as exc:
        store.validate([leaf.cert], at=NOW)
    assert exc.value.reason == "untrusted"
    cas, leaf = ladder(depth)
    store = TrustStore([root.cert], intermediates=[c.cert for c in cas])
    result = store.validate([leaf.cert], at=NOW)   # depth CAs between leaf and anchor: completed and valid
    assert result.chain == (leaf.cert, *(c.cert for c in reversed(cas)), root.cert)


def test_an_intermediate_already_in_the_chain_is_not_added_again() -> None:
    root = root_ca("Loop Root CA", slot=12)
    a_key, b_key = rsa_key(2048, 70), rsa_key(2048, 71)
    ca_a = issue(name("Loop CA A"), a_key, root, ca=True)
    ca_b = issue(name("Loop CA B"), b_key, ca_a, ca=True)
    ca_a_by_b = issue(name("Loop CA A"), a_key, ca_b, ca=True)              # a cross-certificate: A and B loop
    leaf = issue(name("Loop Seal", eori=EORI), rsa_key(2048, 2), ca_b, ca=False)
    other = root_ca("Loop Other Root", slot=13)
    store = TrustStore([other.cert], intermediates=[ca_b.cert, ca_a_by_b.cert, ca_a.cert])
    with pytest.raises(ChainError) as exc:
        store.validate([leaf.cert], at=NOW)
    assert exc.value.reason == "untrusted"


def _crl(path: Path, issuer: Node, revoked: list[x509.Certificate], *, pem: bool = True,
         next_update: dt.datetime | None = None) -> Path:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(NOW - dt.timedelta(days=1)).next_update(next_update or NOW + dt.timedelta(days=7)))
    for cert in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                                      .revocation_date(NOW - dt.timedelta(hours=1)).build())
    crl = b.sign(issuer.key, hashes.SHA256())
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER))
    os.replace(tmp, path)
    return path


def test_revocation_names_the_certificate_and_its_serial(h: Hierarchy, tmp_path: Path) -> None:
    crl = _crl(tmp_path / "int.crl", h.inter, [h.leaf.cert], pem=False)      # a DER CRL, as CAs publish them
    store = TrustStore([h.root.cert], CrlCache([crl]))
    with pytest.raises(ChainError) as exc:
        store.validate(h.chain, at=NOW)
    assert exc.value.reason == "revoked"
    assert str(exc.value) == (f"{h.leaf.cert.subject.rfc4514_string()} (serial {h.leaf.cert.serial_number:x}) "
                              "is revoked")
    crls = CrlCache([crl])
    assert crls.is_revoked(h.leaf.cert, h.inter.cert)
    assert not crls.is_revoked(h.inter.cert, h.root.cert)                     # the CRL is not the root's
    assert not crls.is_revoked(h.leaf.cert, h.root.cert)


def test_a_crl_of_another_issuer_or_key_revokes_nothing(h: Hierarchy, tmp_path: Path) -> None:
    """The revoked serial is the seal's, but the CRL is the root's (another issuer) or forged (the issuing CA's
    name, another key): neither revokes the seal; the genuine one listed after them does."""
    forger = Node(h.inter.cert, rsa_key(2048, 43))
    root_crl = _crl(tmp_path / "root.crl", h.root, [h.leaf.cert])
    forged = _crl(tmp_path / "forged.crl", forger, [h.leaf.cert])
    genuine = _crl(tmp_path / "int.crl", h.inter, [h.leaf.cert])
    assert not CrlCache([root_crl, forged]).is_revoked(h.leaf.cert, h.inter.cert)
    crls = CrlCache([root_crl, forged, genuine])
    assert crls.is_revoked(h.leaf.cert, h.inter.cert)
    assert crls.is_revoked(h.leaf.cert, h.inter.cert)       # the remembered signature checks give the same answer


def test_crl_files_are_reread_only_after_the_refresh_interval(h: Hierarchy, tmp_path: Path) -> None:
    crl = _crl(tmp_path / "int.crl", h.inter, [])
    mono = [100.0]
    crls = CrlCache([crl], refresh_seconds=10, clock=lambda: mono[0])
    assert crls.generation == 1
    _crl(crl, h.inter, [h.leaf.cert])
    mono[0] = 109.999
    assert not crls.is_revoked(h.leaf.cert, h.inter.cert)                     # not yet looked at again
    assert crls.generation == 1
    mono[0] = 110.0                                                            # exactly the interval: re-read
    assert crls.is_revoked(h.leaf.cert, h.inter.cert)
    assert crls.generation == 2
    mono[0] = 125.0
    crls.reload()                                                              # nothing changed: same generation
    assert crls.generation == 2
    crls.reload(force=True)                                                    # forced: re-read all the same
    assert crls.generation == 3


def test_a_crl_file_appearing_or_vanishing_is_a_change(h: Hierarchy, tmp_path: Path) -> None:
    crl = _crl(tmp_path / "int.crl", h.inter, [])
    later = tmp_path / "later.crl"
    mono = [0.0]
    with pytest.raises(ChainError) as exc:                                     # a configured file must exist ...
        CrlCache([crl, later])
    assert (exc.value.reason, str(exc.value).split(":")[0]) == ("broken", f"CRL {later} cannot be read")
    crls = CrlCache([crl], refresh_seconds=10, clock=lambda: mono[0])
    stamps = crls._stamp()
    assert list(stamps) == [crl]
    crl.unlink()                                                               # ... and vanishing fails closed
    assert crls._stamp() == {}
    mono[0] = 10
    with pytest.raises(ChainError) as exc:
        crls.is_revoked(h.leaf.cert, h.inter.cert)
    assert exc.value.reason == "broken" and str(exc.value).startswith(f"CRL {crl} cannot be read: ")


def test_stale_crl_warning_names_file_issuer_and_next_update(h: Hierarchy, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    next_update = NOW + dt.timedelta(days=7)
    fresh = _crl(tmp_path / "root.crl", h.root, [], next_update=NOW + dt.timedelta(days=30))
    stale = _crl(tmp_path / "int.crl", h.inter, [], next_update=next_update)
    wall = [next_update]
    with caplog.at_level(logging.WARNING, logger="ics2gw.security"):
        CrlCache([fresh, stale], wall_clock=lambda: wall[0])                   # at nextUpdate: not yet stale
        assert caplog.records == []
        wall[0] = next_update + dt.timedelta(seconds=1)
        CrlCache([fresh, stale], wall_clock=lambda: wall[0])
    assert [r.getMessage() for r in caplog.records] == [
        f"event=crl_stale file={stale} issuer={h.inter.cert.subject.rfc4514_string()!r} "
        f"next_update={next_update.isoformat()}: revocation information is out of date; publish a fresh CRL"]


def test_validated_chains_are_cached_per_token_and_crl_generation(h: Hierarchy, tmp_path: Path) -> None:
    crl = _crl(tmp_path / "int.crl", h.inter, [])
    mono = [0.0]
    store = TrustStore([h.root.cert], CrlCache([crl], refresh_seconds=10, clock=lambda: mono[0]))
    first = store.validate_cached(b"token", h.chain, at=NOW)
    assert store.validate_cached(b"token", [h.leaf.cert], at=NOW) is first    # a hit: the chain is not looked at
    not_before = max(c.not_valid_before_utc for c in h.chain)
    not_after = min(c.not_valid_after_utc for c in h.chain)
    assert store._cache[b"token"] == (first, not_before, not_after, 1)
    _crl(crl, h.inter, [])                                                     # a new CRL file (another inode)
    mono[0] = 10
    again = store.validate_cached(b"token", h.chain, at=NOW)                  # generation 2: validated afresh
    assert again is not first and again == first
    assert store._cache[b"token"][3] == 2
    with pytest.raises(ChainError):                                            # a miss with a bad chain
        store.validate_cached(b"other", [h.leaf.cert], at=NOW)


def test_validated_chain_cache_is_bounded(h: Hierarchy) -> None:
    store = TrustStore([h.root.cert])
    result = store.validate(h.chain, at=NOW)
    for i in range(4095):
        store._cache[b"%d" % i] = (result, NOW, NOW, 0)
    store.validate_cached(b"k", h.chain, at=NOW)
    assert len(store._cache) == 4096
    store.validate_cached(b"k2", h.chain, at=NOW)
    assert list(store._cache) == [b"k2"]


def test_is_ca_reads_basic_constraints_only(h: Hierarchy) -> None:
    from gateway.security.trust import _is_ca
    assert _is_ca(h.root.cert) and _is_ca(h.inter.cert)
    assert not _is_ca(h.leaf.cert)
    no_bc = issue(name("No BC"), rsa_key(2048, 44), h.inter, ca=False, basic_constraints=False,
                  ku=key_usage(ds=True))
    assert not _is_ca(no_bc.cert)


def test_crl_signature_checks_are_remembered_per_crl_and_issuer_within_a_bound(h: Hierarchy, tmp_path: Path) -> None:
    forger = Node(h.inter.cert, rsa_key(2048, 43))
    crls = CrlCache([_crl(tmp_path / "root.crl", h.root, []), _crl(tmp_path / "forged.crl", forger, [h.leaf.cert]),
                     _crl(tmp_path / "int.crl", h.inter, [h.leaf.cert])])
    assert crls.is_revoked(h.leaf.cert, h.inter.cert)
    # the root's CRL is not looked at for the issuing CA; the forged one is remembered as not signed by it
    assert crls._signature_ok == {(1, h.inter.cert): (crls._crls[1], False), (2, h.inter.cert): (crls._crls[2], True)}
    for filler, left in ((1024, 1), (1025, 2)):
        crls._signature_ok = {(100 + i, h.root.cert): (crls._crls[0], True) for i in range(filler)}
        assert crls.is_revoked(h.leaf.cert, h.inter.cert)
        # more than 1024 remembered checks: forgotten before the next one is remembered
        assert len(crls._signature_ok) == left and (2, h.inter.cert) in crls._signature_ok


def test_a_stricter_policy_of_the_store_is_the_one_applied(h: Hierarchy) -> None:
    from gateway.security.pathvalidate import SealPolicy
    assert TrustStore([h.root.cert]).validate(h.chain, at=NOW).anchor == h.root.cert     # 2048-bit keys: enough
    strict = TrustStore([h.root.cert], policy=SealPolicy(min_rsa_bits=3072))
    with pytest.raises(ChainError) as exc:
        strict.validate(h.chain, at=NOW)
    assert exc.value.reason == "weak-key" and "2048" in str(exc.value)


def test_nothing_beyond_a_pinned_anchor_is_held_against_the_chain() -> None:
    """A chain sent past the configured anchor (here an issuing CA pinned as the anchor, whose own certificate
    the root signed with SHA-1) is cut at the anchor: what lies beyond it is not validated."""
    root = root_ca("Beyond Root CA", slot=14)
    inter = issue(name("Pinned Issuing CA"), rsa_key(2048, 15), root, ca=True, pathlen=0, hash_alg=hashes.SHA1())
    leaf = issue(name("Pinned Seal", eori=EORI), rsa_key(2048, 2), inter, ca=False)
    with pytest.raises(ChainError) as exc:                        # trusted through the root: SHA-1 is refused
        TrustStore([root.cert]).validate([leaf.cert, inter.cert, root.cert], at=NOW)
    assert exc.value.reason == "weak-algorithm"
    result = TrustStore([inter.cert]).validate([leaf.cert, inter.cert, root.cert], at=NOW)
    assert result.chain == (leaf.cert, inter.cert) and result.anchor == inter.cert


def test_start_up_check_holds_the_chain_to_the_policy_up_to_its_root() -> None:
    """The root closing the configured chain is its anchor (its self-signature may be SHA-1, like the path
    validator allows); every certificate below it is held to the policy (an issuing CA the root signed with SHA-1
    is refused at start-up, where customs would refuse every message)."""
    sha1_root = issue(name("SHA-1 Self-Signed Root"), rsa_key(2048, 16), None, ca=True, hash_alg=hashes.SHA1())
    inter = issue(name("Start-up Issuing CA"), rsa_key(2048, 17), sha1_root, ca=True, pathlen=0)
    leaf = issue(name("Start-up Seal", eori=EORI), rsa_key(2048, 2), inter, ca=False)
    check_identity(leaf.key, [leaf.cert, inter.cert, sha1_root.cert])
    root = root_ca("Start-up Root CA", slot=18)
    weak_inter = issue(name("Start-up Issuing CA"), rsa_key(2048, 17), root, ca=True, pathlen=0,
                       hash_alg=hashes.SHA1())
    leaf = issue(name("Start-up Seal", eori=EORI), rsa_key(2048, 2), weak_inter, ca=False)
    with pytest.raises(KeyMaterialError) as exc:
        check_identity(leaf.key, [leaf.cert, weak_inter.cert, root.cert])
    assert str(exc.value).startswith("the sealing chain is not acceptable (weak-algorithm): ")


def test_the_path_the_validator_found_is_the_result(h: Hierarchy) -> None:
    """Two certificates for the same root (same name and key, e.g. a re-issued root) are both anchors: the chain is
    cut at the one it carries, the RFC 5280 validator takes the first configured one, and the result (chain and
    anchor) is the validator's path, held to the policy like the chain was."""
    reissued = issue(h.root.cert.subject, h.root.key, None, ca=True)
    result = TrustStore([reissued.cert, h.root.cert]).validate(h.chain, at=NOW)
    assert result.chain == (h.leaf.cert, h.inter.cert, reissued.cert)
    assert result.anchor == reissued.cert
    result = TrustStore([h.root.cert, reissued.cert]).validate(h.chain, at=NOW)
    assert result.chain == tuple(h.chain) and result.anchor == h.root.cert


def test_the_validator_applies_the_store_policy_depth(h: Hierarchy) -> None:
    from gateway.security.pathvalidate import SealPolicy
    with pytest.raises(ChainError) as exc:
        TrustStore([h.root.cert], policy=SealPolicy(max_chain_depth=0)).validate(h.chain, at=NOW)
    assert exc.value.reason == "path"
    assert TrustStore([h.root.cert], policy=SealPolicy(max_chain_depth=1)).validate(h.chain, at=NOW).chain == tuple(
        h.chain)


def test_a_cache_hit_answers_without_looking_at_the_chain_inside_the_validity(h: Hierarchy) -> None:
    store = TrustStore([h.root.cert])
    not_before = max(c.not_valid_before_utc for c in h.chain)
    not_after = min(c.not_valid_after_utc for c in h.chain)
    first = store.validate_cached(b"k", h.chain, at=NOW)
    for at in (not_before, not_after):                     # both ends: answered from the cache
        assert store.validate_cached(b"k", [h.leaf.cert], at=at) is first
    with pytest.raises(ChainError) as exc:                 # a microsecond outside: the (bare) chain is validated
        store.validate_cached(b"k", [h.leaf.cert], at=not_before - dt.timedelta(microseconds=1))
    assert exc.value.reason == "untrusted"


def test_validation_without_a_time_is_at_the_current_time(pki: Path) -> None:
    store = TrustStore.from_files([pki / "trader-root.pem"])
    chain = load_pem_certificates(pki / "trader-chain.pem")
    assert store.validate_cached(b"now", chain).chain == tuple(chain)
    assert store.validate_cached(b"now", chain[:1]).chain == tuple(chain)     # the cached answer
    with pytest.raises(ChainError) as exc:
        store.validate(load_pem_certificates(pki / "expired-chain.pem"))
    assert exc.value.reason == "expired"
    with pytest.raises(ChainError) as exc:
        store.validate_cached(b"expired", load_pem_certificates(pki / "expired-chain.pem"))
    assert exc.value.reason == "expired"


def test_the_anchor_of_the_validators_path_is_not_held_to_the_policy(h: Hierarchy) -> None:
    """A re-issued root the validator prefers, self-signed with SHA-1: like any anchor, its own signature is not
    held against the path it ends."""
    reissued = issue(h.root.cert.subject, h.root.key, None, ca=True, hash_alg=hashes.SHA1())
    result = TrustStore([reissued.cert, h.root.cert]).validate(h.chain, at=NOW)
    assert result.chain == (h.leaf.cert, h.inter.cert, reissued.cert) and result.anchor == reissued.cert


def test_pkcs12_without_a_certificate_is_refused_and_a_loaded_identity_carries_its_key(pki: Path,
                                                                                       tmp_path: Path) -> None:
    """A PKCS#12 holding the key but no certificate is refused like one holding certificates only (naming the
    configuration file and key); a good bundle gives the identity with the very key in it (it signs)."""
    key = serialization.load_pem_private_key((pki / "trader-seal.key").read_bytes(), None)
    leaf, inter, root = load_pem_certificates(pki / "trader-chain.pem")
    f = _p12(tmp_path, key, None, [inter, root], b"pw")                 # the key, its issuers, no leaf
    with pytest.raises(ConfigError) as exc:
        load_sealing_identity(SealConfig(None, None, f, "pw"), conf_file="gw.toml")
    assert (exc.value.file, exc.value.key, exc.value.message) == \
        ("gw.toml", "seal.pkcs12", "the PKCS#12 file has no key or no certificate")
    f = _p12(tmp_path, key, leaf, [inter, root], b"pw")
    ident = load_sealing_identity(SealConfig(None, None, f, "pw"), conf_file="gw.toml")
    assert ident.key is not None
    assert ident.key.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    f = _p12(tmp_path, None, leaf, [inter, root], b"pw")                # certificates only: the file is named too
    with pytest.raises(ConfigError) as exc:
        load_sealing_identity(SealConfig(None, None, f, "pw"), conf_file="gw.toml")
    assert exc.value.file == "gw.toml" and str(exc.value).startswith("gw.toml: [seal.pkcs12] ")
