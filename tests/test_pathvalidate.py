"""Certificate path validation: one test per refusal cause, each through a really sealed message (real RSA
signatures, real PkiPath tokens) checking the named cause and the ebMS error code, plus the validated-chain cache
over time and across CRL changes, with an injected clock (no sleeping).

Every negative chain differs from the good one in one property (tests/certfactory.py), so a refusal can only come
from the cause under test; the good chain is accepted by the same receiver in the same test module.
"""

from __future__ import annotations

import dataclasses

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.certfactory import (
    EORI, NOW, UNKNOWN_CRITICAL, Hierarchy, Node, good, issue, key_usage, name, root_ca, rsa_key,
    sub_ca_under_pathlen0, with_inter,
)
from gateway.conformance.unsafe import Recipe, build_message, xml_part
from gateway.ebms.constants import PARTY_TYPE_EORI, ROLE_TRADER, VT_PKIPATH, VT_X509V3
from gateway.ebms.engine import Engine
from gateway.ebms.model import Party
from gateway.ebms.errors import EbmsFault
from gateway.security.keys import SealingIdentity
from gateway.security.pathvalidate import DOCUMENT_SIGNING, MS_DOCUMENT_SIGNING
from gateway.security.trust import ChainError, CrlCache, TrustStore
from gateway.security.verify import STRICT, TOLERANT, VerifyPolicy

ENS = b'<?xml version="1.0" encoding="UTF-8"?><IE3F32 xmlns="urn:x-test"><LRN>LRN-PATH-1</LRN></IE3F32>'


@pytest.fixture(scope="module")
def root() -> Node:
    return root_ca()


def sender(h: Hierarchy, party_id: str = EORI, chain: list[x509.Certificate] | None = None) -> Engine:
    identity = SealingIdentity(key=h.leaf.key, chain=tuple(chain if chain is not None else h.chain))
    return Engine(identity, TrustStore([h.root.cert]), party_id=party_id, fqdn="ap.path.test",
                  clock=lambda: NOW)


def receiver(root: Node, *, clock: Callable[[], dt.datetime] = lambda: NOW, crls: CrlCache | None = None,
             policy: VerifyPolicy = STRICT, intermediates: tuple[x509.Certificate, ...] = (),
             eori_binding: str = "refuse") -> Engine:
    """The customs side (STRICT, as the simulator and the real TI check traders)."""
    h = good(root=root)
    return Engine(SealingIdentity(key=h.leaf.key, chain=tuple(h.chain)),
                  TrustStore([root.cert], crls, intermediates=intermediates, eori_binding=eori_binding),
                  party_id="sti-taxud", fqdn="sti.path.test", role="Customs", policy=policy, clock=clock)


MESSAGE_ID = "path-test@ap.path.test"


def send(h: Hierarchy, to: Engine, *, party_id: str = EORI, chain: list[x509.Certificate] | None = None,
         token_type: str = VT_PKIPATH) -> None:
    """Seals an IE3F32 (MessageId ``MESSAGE_ID``) with ``h``'s seal (the token carrying ``chain``, default the full
    chain) and opens it."""
    recipe = Recipe(parts=[xml_part(ENS)], from_party=Party(party_id, PARTY_TYPE_EORI, ROLE_TRADER),
                    token_type=token_type, message_id=MESSAGE_ID)
    content_type, body = build_message(recipe, h.leaf.key, chain if chain is not None else h.chain)
    to.open(content_type, body)


def refused(h: Hierarchy, to: Engine, **kw: object) -> EbmsFault:
    with pytest.raises(EbmsFault) as exc:
        send(h, to, **kw)
    return exc.value


def test_good_chain_with_pathlen0_issuing_ca_is_accepted(root: Node) -> None:
    send(good(root=root), receiver(root))


# (cause, builder, a phrase the one-line message must contain)
CASES: list[tuple[str, Callable[[Node], Hierarchy], str]] = [
    ("path-length", sub_ca_under_pathlen0,
     "allows 0 CA certificate(s) below it (pathLenConstraint) but the chain has 1"),
    ("ca-key-usage", lambda r: with_inter(r, ku=key_usage(ds=True, crl_sign=True)),
     "is a CA whose keyUsage does not allow keyCertSign, so it may not issue certificates"),
    ("ca-key-usage", lambda r: with_inter(r, no_ku=True),
     "without a keyUsage extension (RFC 5280 4.2.1.3: a CA certificate must carry one, with keyCertSign)"),
    ("not-a-ca", lambda r: with_inter(r, ca=False, pathlen=None, ku=key_usage(cert_sign=True)),
     "issues a certificate of the chain but is not a CA (basicConstraints cA is not set)"),
    ("not-a-ca", lambda r: with_inter(r, basic_constraints=False), "is not a CA"),
    ("critical-extension", lambda r: good(root=r, extra=[(UNKNOWN_CRITICAL, True)]), "1.3.6.1.4.1.55555.1.1"),
    ("critical-extension", lambda r: with_inter(r, extra=[(UNKNOWN_CRITICAL, True)]), "1.3.6.1.4.1.55555.1.1"),
    ("seal-key-usage", lambda r: good(root=r, ku=key_usage(ke=True)),
     "has a keyUsage that allows neither digitalSignature nor nonRepudiation, so it may not seal"),
    ("seal-key-usage", lambda r: good(root=r, ku=key_usage(ke=True, cert_sign=True)), "neither digitalSignature"),
    ("seal-extended-key-usage", lambda r: good(root=r, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
     "is restricted to clientAuth (TLS client) (extendedKeyUsage), which does not allow sealing messages"),
    ("seal-extended-key-usage", lambda r: good(root=r, eku=[ExtendedKeyUsageOID.SERVER_AUTH,
                                                            ExtendedKeyUsageOID.CODE_SIGNING]), "serverAuth"),
    ("ca-extended-key-usage", lambda r: with_inter(r, eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
     "is a CA restricted to serverAuth (TLS server), none of which allows sealing"),
    ("seal-is-ca", lambda r: good(root=r, ca=True, ku=key_usage(ds=True, nr=True, cert_sign=True)),
     "a CA key may not seal messages"),
    ("weak-algorithm", lambda r: good(root=r, hash_alg=hashes.SHA1()),
     ("is signed with sha1WithRSAEncryption: SHA-1 signatures are refused (collision attacks; ENISA and eDelivery "
      "AS4 deprecate SHA-1)")),
    ("weak-algorithm", lambda r: with_inter(r, hash_alg=hashes.SHA1()), "SHA-1 signatures are refused"),
    ("expired", lambda r: good(root=r, not_after=NOW - dt.timedelta(seconds=1)), "expired on"),
    ("expired", lambda r: with_inter(r, not_after=NOW - dt.timedelta(days=1)), "Issuing CA"),
    ("not-yet-valid", lambda r: good(root=r, not_before=NOW + dt.timedelta(minutes=5)), "is not valid before"),
    ("untrusted", lambda r: good(root=root_ca("Other Root CA", slot=1)), "does not lead to a configured trust anchor"),
]


def weak_leaf(root: Node) -> Hierarchy:
    h = good(root=root)
    return Hierarchy(root, h.inter, issue(name("Weak Seal", eori=EORI), rsa_key(1024, 9), h.inter, ca=False))


def weak_inter(root: Node) -> Hierarchy:
    inter = issue(name("Weak Issuing CA"), rsa_key(1024, 8), root, ca=True, pathlen=0)
    return Hierarchy(root, inter, issue(name("Path Test Seal", eori=EORI), rsa_key(2048, 2), inter, ca=False))


CASES += [("weak-key", weak_leaf, "has a 1024-bit RSA key; at least 2048 bits are required"),
          ("weak-key", weak_inter, "Weak Issuing CA")]


@pytest.mark.parametrize("cause,build,phrase", CASES,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_each_refusal_names_its_cause_and_maps_to_ebms_0101(root: Node, cause: str,
                                                            build: Callable[[Node], Hierarchy], phrase: str) -> None:
    h = build(root)
    fault = refused(h, receiver(root))
    assert fault.code == "EBMS:0101", fault.message
    assert f"not acceptable ({cause})" in fault.message
    assert phrase in fault.message
    assert "\n" not in fault.message
    assert fault.ref_to_message_id == MESSAGE_ID     # the error signal names the refused message (RefToMessageInError)
    # the same cause straight from the trust store, for the chain the token carried
    with pytest.raises(ChainError) as exc:
        TrustStore([root.cert]).validate(h.chain, at=NOW)
    assert exc.value.reason == cause


RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"


def test_the_signature_value_is_checked_with_the_declared_algorithm(root: Node) -> None:
    """A policy that admits rsa-sha512 besides rsa-sha256 (ICS2 uses rsa-sha256 only) checks a SignatureValue with
    the hash its SignatureMethod names, not with a default: a seal made with rsa-sha512 verifies, and the same seal
    declared as rsa-sha256 does not."""
    policy = dataclasses.replace(STRICT, signature_methods=(STRICT.signature_methods[0], RSA_SHA512))
    h = good(root=root)

    def sealed(method: str) -> tuple[str, bytes]:
        recipe = Recipe(parts=[xml_part(ENS)], from_party=Party(EORI, PARTY_TYPE_EORI, ROLE_TRADER),
                        message_id=MESSAGE_ID, signature_method=method)
        return build_message(recipe, h.leaf.key, h.chain)

    ctype, body = sealed(RSA_SHA512)
    assert b"rsa-sha512" in body
    receiver(root, policy=policy).open(ctype, body)
    swapped = body.replace(b"xmldsig-more#rsa-sha512", b"xmldsig-more#rsa-sha256")
    with pytest.raises(EbmsFault) as exc:
        receiver(root, policy=policy).open(ctype, swapped)
    assert exc.value.code == "EBMS:0101", exc.value.message
    assert exc.value.ref_to_message_id == MESSAGE_ID


def test_path_validator_refuses_what_the_named_checks_do_not(root: Node) -> None:
    """Layer 2 runs: a chain of 9 CAs, each one acceptable on its own, exceeds the validator's depth bound."""
    parent = root
    cas = []
    for i in range(9):
        parent = issue(name(f"Deep CA {i}"), rsa_key(2048, 10 + i), parent, ca=True)
        cas.append(parent)
    leaf = issue(name("Deep Seal", eori=EORI), rsa_key(2048, 2), parent, ca=False)
    h = Hierarchy(root, cas[0], leaf, extra=tuple(reversed(cas[1:])))
    fault = refused(h, receiver(root), chain=h.chain[:-1])     # 10 certificates: the token cap lets it through
    # the verifier's token cap (8 certificates, gateway/security/verify.py) now refuses such a token even before
    # the validator's depth bound does; either refusal is the right one
    assert fault.code == "EBMS:0101"
    assert ("not acceptable (path)" in fault.message and "RFC 5280 path validation" in fault.message) or \
        "over the limit of" in fault.message, fault.message


def test_validity_period_includes_both_ends(root: Node) -> None:
    """RFC 5280 4.1.2.5: the validity period is notBefore through notAfter, inclusive (seconds resolution)."""
    h = good(root=root, not_before=NOW - dt.timedelta(days=1), not_after=NOW)
    trust = TrustStore([root.cert])
    trust.validate(h.chain, at=NOW)
    trust.validate(h.chain, at=NOW - dt.timedelta(days=1))
    with pytest.raises(ChainError) as exc:
        trust.validate(h.chain, at=NOW + dt.timedelta(seconds=1))
    assert exc.value.reason == "expired"
    with pytest.raises(ChainError) as exc:
        trust.validate(h.chain, at=NOW - dt.timedelta(days=1, seconds=1))
    assert exc.value.reason == "not-yet-valid"


def test_name_constraints_are_the_path_validators_refusal(root: Node) -> None:
    """Layer 2 alone: a CA whose (critical) nameConstraints permit example.com only, a seal naming other.org. The
    named checks pass it; the RFC 5280 validator refuses it, as cause ``path`` with its own reason on one line."""
    from cryptography.x509 import DNSName, NameConstraints, SubjectAlternativeName
    nc = NameConstraints(permitted_subtrees=[DNSName("example.com")], excluded_subtrees=None)
    inter = issue(name("Constrained CA"), rsa_key(2048, 1), root, ca=True, pathlen=0, extra=[(nc, True)])
    leaf = issue(name("Constrained Seal", eori=EORI), rsa_key(2048, 2), inter, ca=False,
                 extra=[(SubjectAlternativeName([DNSName("seal.other.org")]), False)])
    with pytest.raises(ChainError) as exc:
        TrustStore([root.cert]).validate([leaf.cert, inter.cert], at=NOW)
    assert exc.value.reason == "path"
    prefix = f"RFC 5280 path validation of {leaf.cert.subject.rfc4514_string()} failed: "
    assert str(exc.value).startswith(prefix) and "name constraint" in str(exc.value)[len(prefix):]
    assert "\n" not in str(exc.value) and "None" not in str(exc.value)


def test_path_validator_input_it_cannot_process_fails_closed(root: Node) -> None:
    from cryptography.x509.verification import Store
    from gateway.security.pathvalidate import PathError, rfc5280_path
    leaf = good(root=root).leaf.cert
    with pytest.raises(PathError) as exc:
        rfc5280_path(leaf, [b"not a certificate"], Store([root.cert]), at=NOW)  # type: ignore[list-item]
    assert exc.value.cause == "path"
    assert str(exc.value).startswith(f"RFC 5280 path validation of {leaf.subject.rfc4514_string()} could not run: ")
    assert str(exc.value) != f"RFC 5280 path validation of {leaf.subject.rfc4514_string()} could not run: None"
    assert "\n" not in str(exc.value)


def test_validator_reasons_are_cut_to_one_line_before_the_certificate_dump() -> None:
    from gateway.security.pathvalidate import _one_line
    assert _one_line("validation failed:\n  candidates   exhausted (encountered processing <Certificate(...)>)") == \
        "validation failed: candidates exhausted"
    assert _one_line("a (encountered processing x) b (encountered processing y)") == "a"
    assert _one_line(" (encountered processing x)") == "(encountered processing x)"   # nothing before it: kept
    assert _one_line("plain reason") == "plain reason"


def test_signature_algorithm_the_gateway_does_not_know_is_refused_by_name(root: Node) -> None:
    """A signatureAlgorithm OID cryptography cannot map to a hash (edited into the DER: the check reads the
    algorithm, not the signature) is refused as weak-algorithm, naming the OID."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from gateway.security.pathvalidate import PathError, check_signature_algorithm
    from tests.certfactory import _SHA256_RSA
    unknown = bytes.fromhex("06092a864886f70d01017f")     # 1.2.840.113549.1.1.127, same DER length
    der = good(root=root).leaf.cert.public_bytes(Encoding.DER)
    cert = x509.load_der_x509_certificate(der.replace(_SHA256_RSA, unknown))
    with pytest.raises(PathError) as exc:
        check_signature_algorithm(cert)
    assert exc.value.cause == "weak-algorithm"
    assert str(exc.value) == (f"{cert.subject.rfc4514_string()} is signed with Unknown OID (1.2.840.113549.1.1.127), "
                              "an algorithm this gateway does not accept")


def test_only_sha2_hashes_sign_a_chain_and_eddsa_has_none_to_refuse(root: Node) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from gateway.security.pathvalidate import PathError, check_signature_algorithm

    def signed(key, alg) -> x509.Certificate:  # type: ignore[no-untyped-def]
        return (x509.CertificateBuilder().subject_name(name("Hash Seal")).issuer_name(name("Hash CA"))
                .public_key(rsa_key(2048, 2).public_key()).serial_number(7)
                .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
                .sign(key, alg))
    sha224 = signed(rsa_key(2048, 1), hashes.SHA224())
    with pytest.raises(PathError) as exc:
        check_signature_algorithm(sha224)
    assert exc.value.cause == "weak-algorithm"
    assert str(exc.value) == (f"{sha224.subject.rfc4514_string()} is signed with sha224WithRSAEncryption (sha224); "
                              "only SHA-256, SHA-384 and SHA-512 are accepted")
    check_signature_algorithm(signed(ed25519.Ed25519PrivateKey.generate(), None))  # no separate hash: not weak
    check_signature_algorithm(signed(rsa_key(2048, 1), hashes.SHA384()))


def test_a_public_key_of_an_unknown_algorithm_is_refused_as_unusable(root: Node) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding
    from gateway.security.pathvalidate import DEFAULT_POLICY, PathError, check_key_strength
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    der = good(root=root).leaf.cert.public_bytes(Encoding.DER)
    assert der.count(rsa_encryption) == 1
    cert = x509.load_der_x509_certificate(der.replace(rsa_encryption, bytes.fromhex("06092a864886f70d01017f")))
    with pytest.raises(PathError) as exc:
        check_key_strength(cert, DEFAULT_POLICY)
    assert exc.value.cause == "weak-key"
    assert str(exc.value).startswith(f"{cert.subject.rfc4514_string()} has a public key that cannot be used: ")


def test_ec_keys_need_256_bits(root: Node) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from gateway.security.pathvalidate import DEFAULT_POLICY, PathError, check_key_strength

    def cert(curve: ec.EllipticCurve) -> x509.Certificate:
        key = ec.generate_private_key(curve)
        return (x509.CertificateBuilder().subject_name(name("EC Seal")).issuer_name(name("EC Seal"))
                .public_key(key.public_key()).serial_number(9)
                .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
                .sign(key, hashes.SHA256()))
    check_key_strength(cert(ec.SECP256R1()), DEFAULT_POLICY)
    small = cert(ec.SECP224R1())
    with pytest.raises(PathError) as exc:
        check_key_strength(small, DEFAULT_POLICY)
    assert exc.value.cause == "weak-key"
    assert str(exc.value) == (f"{small.subject.rfc4514_string()} has a 224-bit EC key (secp224r1); at least 256 bits "
                              "are required")


def test_critical_extension_refusals_list_every_oid_and_unreadable_extensions_are_broken(root: Node) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding
    from gateway.security.pathvalidate import PathError, check_critical_extensions
    second = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.2"), b"\x05\x00")
    two = good(root=root, extra=[(UNKNOWN_CRITICAL, True), (second, True)]).leaf.cert
    with pytest.raises(PathError) as exc:
        check_critical_extensions(two)
    assert exc.value.cause == "critical-extension"
    assert str(exc.value) == (f"{two.subject.rfc4514_string()} carries the critical extension(s) "
                              "1.3.6.1.4.1.55555.1.1, 1.3.6.1.4.1.55555.1.2, which this gateway does not process "
                              "(RFC 5280 4.2: such a certificate must be refused)")
    # the same extension twice (RFC 5280 4.2: "MUST NOT include more than one instance"), edited into the DER
    der = two.public_bytes(Encoding.DER)
    oid2 = bytes.fromhex("060a2b0601040183b2030102")          # 1.3.6.1.4.1.55555.1.2
    assert der.count(oid2) == 1
    dup = x509.load_der_x509_certificate(der.replace(oid2, bytes.fromhex("060a2b0601040183b2030101")))
    with pytest.raises(PathError) as exc:
        check_critical_extensions(dup)
    assert exc.value.cause == "broken"
    assert str(exc.value).startswith(f"{dup.subject.rfc4514_string()} has unreadable extensions: ")


def test_a_ca_signed_seal_with_a_duplicated_extension_is_refused_as_broken(root: Node) -> None:
    """Found by mutation testing: cryptography raises DuplicateExtension (not a ValueError) for a certificate
    carrying one extension twice, and it escaped the path validation as an unexpected exception instead of the
    EBMS:0101 refusal naming the cause. The issuing CA really signed this seal (the TBS is re-signed)."""
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import Encoding
    ext = [(x509.UnrecognizedExtension(x509.ObjectIdentifier(f"1.3.6.1.4.1.55555.1.{i}"), b"\x05\x00"), False)
           for i in (1, 2)]
    h = good(root=root, extra=ext)
    der, tbs = h.leaf.cert.public_bytes(Encoding.DER), h.leaf.cert.tbs_certificate_bytes
    new_tbs = tbs.replace(bytes.fromhex("060a2b0601040183b2030102"), bytes.fromhex("060a2b0601040183b2030101"))
    sig = h.inter.key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA256())
    head, rest = der.split(tbs, 1)
    dup = x509.load_der_x509_certificate(head + new_tbs + rest.replace(h.leaf.cert.signature, sig, 1))
    dup.verify_directly_issued_by(h.inter.cert)
    with pytest.raises(ChainError) as exc:
        TrustStore([root.cert]).validate([dup, h.inter.cert], at=NOW)
    assert exc.value.reason == "broken" and "has unreadable extensions: " in str(exc.value)
    fault = refused(Hierarchy(root, h.inter, Node(dup, h.leaf.key)), receiver(root))
    assert fault.code == "EBMS:0101" and "not acceptable (broken)" in fault.message, fault.message
    # a customs certificate of that shape in the configuration is simply not a CA (no traceback at start-up)
    assert TrustStore([root.cert], customs_certs=[dup]).intermediates == []


def test_an_empty_chain_is_broken() -> None:
    from gateway.security.pathvalidate import PathError, check_seal_policy
    with pytest.raises(PathError) as exc:
        check_seal_policy([], at=NOW, anchor_index=0)
    assert (exc.value.cause, str(exc.value)) == ("broken", "no certificate to validate")


def test_dsa_keys_are_not_accepted() -> None:
    from cryptography.hazmat.primitives.asymmetric import dsa
    from gateway.security.pathvalidate import DEFAULT_POLICY, PathError, check_key_strength
    key = dsa.generate_private_key(1024)
    cert = (x509.CertificateBuilder().subject_name(name("DSA Seal")).issuer_name(name("DSA Seal"))
            .public_key(key.public_key()).serial_number(11)
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    with pytest.raises(PathError) as exc:
        check_key_strength(cert, DEFAULT_POLICY)
    assert exc.value.cause == "weak-key"
    assert str(exc.value) == f"{cert.subject.rfc4514_string()} has a DSA key, which is not accepted"


def test_seal_usage_refuses_a_ca_unless_it_is_the_pinned_anchor(root: Node) -> None:
    from gateway.security.pathvalidate import PathError, check_seal_usage
    ca = issue(name("Sealing CA", eori=EORI), rsa_key(2048, 30), None, ca=True,
               ku=key_usage(ds=True, cert_sign=True)).cert
    with pytest.raises(PathError) as exc:
        check_seal_usage(ca)                          # not pinned unless said so
    assert exc.value.cause == "seal-is-ca"
    check_seal_usage(ca, pinned=True)


def test_seal_eku_refusal_lists_every_purpose_by_name_or_oid(root: Node) -> None:
    from gateway.security.pathvalidate import PathError, check_seal_usage
    odd = x509.ObjectIdentifier("1.3.6.1.4.1.55555.7")
    leaf = good(root=root, eku=[ExtendedKeyUsageOID.CLIENT_AUTH, odd]).leaf.cert
    with pytest.raises(PathError) as exc:
        check_seal_usage(leaf)
    assert exc.value.cause == "seal-extended-key-usage"
    assert str(exc.value) == (f"{leaf.subject.rfc4514_string()} is restricted to clientAuth (TLS client), "
                              f"{odd.dotted_string} (extendedKeyUsage), which does not allow sealing messages")


@pytest.mark.parametrize("eku", [[ExtendedKeyUsageOID.EMAIL_PROTECTION], [DOCUMENT_SIGNING],
                                 [ExtendedKeyUsageOID.CLIENT_AUTH, MS_DOCUMENT_SIGNING],
                                 [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]])
def test_seal_with_a_signing_eku_is_accepted(root: Node, eku: list[x509.ObjectIdentifier]) -> None:
    send(good(root=root, eku=eku), receiver(root))


def test_seal_with_only_non_repudiation_is_accepted(root: Node) -> None:
    send(good(root=root, ku=key_usage(nr=True)), receiver(root))


def test_sha1_self_signature_of_the_anchor_is_not_held_against_the_chain() -> None:
    """RFC 5280 6.1: the anchor's own signature is never verified; old SHA-1 roots still anchor SHA-256 chains."""
    old_root = issue(name("Old SHA-1 Root"), rsa_key(2048, 120), None, ca=True, hash_alg=hashes.SHA1())
    h = good(root=old_root)
    send(h, receiver(old_root))


def test_revoked_seal_is_refused(root: Node, tmp_path: Path) -> None:
    h = good(root=root)
    crl = tmp_path / "int.crl"
    write_crl(crl, h.inter, [h.leaf.cert])
    fault = refused(h, receiver(root, crls=CrlCache([crl])))
    assert fault.code == "EBMS:0101" and "not acceptable (revoked)" in fault.message


# ------------------------------------------------------------------------------------------ EORI binding
def test_seal_for_another_eori_is_refused_like_customs_does(root: Node) -> None:
    h = good(root=root, eori="DE987654321")
    fault = refused(h, receiver(root), party_id=EORI)
    assert (fault.code, fault.detail) == ("EBMS:0004", "A001")
    assert "(eori-mismatch)" in fault.message and "DE987654321" in fault.message and EORI in fault.message


def test_eori_binding_reads_the_eori_inside_system_and_member_state_party_ids(root: Node) -> None:
    send(good(root=root), receiver(root), party_id=f"sys1@{EORI}@FR")
    fault = refused(good(root=root, eori="NL999"), receiver(root), party_id=f"sys1@{EORI}@FR")
    assert "(eori-mismatch)" in fault.message


def test_eori_binding_under_tolerant_policy_is_a_failed_authentication(root: Node) -> None:
    fault = refused(good(root=root, eori="DE987654321"), receiver(root, policy=TOLERANT))
    assert fault.code == "EBMS:0101" and "(eori-mismatch)" in fault.message


def test_seal_without_eori_refused_by_default_and_left_to_registration_when_configured(root: Node) -> None:
    h = good(root=root, eori="")
    assert "(eori-missing)" in refused(h, receiver(root)).message
    send(h, receiver(root, eori_binding="if-present"))
    other = good(root=root, eori="DE987654321")
    assert "(eori-mismatch)" in refused(other, receiver(root, eori_binding="if-present")).message


def test_eori_binding_report_mode_logs_and_accepts(root: Node, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="ics2gw.security"):
        send(good(root=root, eori="DE987654321"), receiver(root, eori_binding="report"))
    assert "event=eori_binding_mismatch" in caplog.text


@pytest.fixture(scope="module")
def seals() -> dict[str, x509.Certificate]:
    """Self-issued seals for the binding rule alone (the chain is not what these tests are about)."""
    key = rsa_key(2048, 50)
    return {k: issue(n, key, None, ca=False).cert for k, n in {
        "own": name("Own Seal", eori=EORI), "other": name("Other Seal", eori="DE987654321"),
        "none": name("No EORI Seal"), "two": name("Two EORI Seal", eori=EORI, serial="DE987654321")}.items()}


def test_eori_binding_rule_by_rule(seals: dict[str, x509.Certificate]) -> None:
    """ICD 4.6.3 on the binding function itself: the default mode refuses, the causes and messages name the seal
    (its subject), the PartyId and both EORIs, and the hint names the setting an operator may change."""
    from gateway.security.binding import EoriBindingError, check_eori_binding, party_eori
    assert party_eori(f"sys1@{EORI}@FR") == EORI and party_eori("not a party id") is None
    check_eori_binding(seals["own"], f"sys1@{EORI}@FR")
    with pytest.raises(EoriBindingError) as exc:
        check_eori_binding(seals["none"], EORI)          # default mode: refuse
    assert exc.value.cause == "eori-missing"
    assert exc.value.args[0].startswith(f"the seal {seals['none'].subject.rfc4514_string()} carries no EORI")
    assert exc.value.args[0].endswith('(ICD 4.6.3; set [trust] eori_binding = "if-present" to leave the binding to '
                                      'the UUM&DS registration)')
    with pytest.raises(EoriBindingError) as exc:
        check_eori_binding(seals["own"], "lower-case-is-no-eori")
    assert exc.value.cause == "eori-mismatch"
    assert exc.value.args[0].startswith("PartyId 'lower-case-is-no-eori' carries no EORI")
    with pytest.raises(EoriBindingError) as exc:
        check_eori_binding(seals["two"], EORI, "if-present")
    assert exc.value.cause == "eori-ambiguous" and f"({EORI}, DE987654321)" in exc.value.args[0]
    with pytest.raises(EoriBindingError) as exc:
        check_eori_binding(seals["other"], EORI, "if-present")
    assert exc.value.cause == "eori-mismatch" and "carries EORI DE987654321" in exc.value.args[0]
    check_eori_binding(seals["none"], EORI, "if-present")


def test_eori_binding_report_mode_logs_cause_party_and_seal(seals: dict[str, x509.Certificate],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from gateway.security.binding import check_eori_binding
    with caplog.at_level("WARNING", logger="ics2gw.security"):
        check_eori_binding(seals["other"], EORI, "report")
        check_eori_binding(seals["none"], EORI, "report")
    who = seals["other"].subject.rfc4514_string()
    assert [r.getMessage() for r in caplog.records] == [
        f"event=eori_binding_mismatch cause=eori-mismatch party_id={EORI} signer={who!r}"]


def test_pull_request_must_be_sealed_for_the_eori_of_its_mpc(root: Node) -> None:
    s = sender(good(root=root, eori="DE987654321"))
    pr = s.pull_request(f"urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/{EORI}")
    with pytest.raises(EbmsFault) as exc:
        receiver(root).open(pr.content_type, pr.body)
    assert exc.value.code == "EBMS:0004" and "(eori-mismatch)" in exc.value.message
    ok = sender(good(root=root)).pull_request(f"urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/{EORI}")
    receiver(root).open(ok.content_type, ok.body)


# ------------------------------------------------------------------------------------------ one-certificate PkiPath
def test_one_certificate_pkipath_is_completed_under_tolerant_and_refused_under_strict(root: Node) -> None:
    """Issue 11: a customs seal whose PkiPath holds only the leaf is read like an X509v3 leaf by the trader side
    (completed from [trust] intermediates / customs_certs); customs keep refusing it from traders."""
    h = good(root=root)
    leaf_only = [h.leaf.cert]
    tolerant = receiver(root, policy=TOLERANT, intermediates=(h.inter.cert,))
    send(h, tolerant, chain=leaf_only)
    customs_certs_only = Engine(tolerant.identity, TrustStore([root.cert], customs_certs=[h.inter.cert, h.leaf.cert]),
                                party_id="NL1", fqdn="t.test", policy=TOLERANT, clock=lambda: NOW)
    send(h, customs_certs_only, chain=leaf_only)
    fault = refused(h, receiver(root, policy=TOLERANT), chain=leaf_only)       # nothing to complete it with
    assert fault.code == "EBMS:0101" and "(untrusted)" in fault.message
    fault = refused(h, receiver(root, intermediates=(h.inter.cert,)), chain=leaf_only)   # STRICT
    assert fault.code == "EBMS:0101" and "X509PKIPathv1 token holds only the leaf certificate" in fault.message


def test_one_certificate_pkipath_completion_still_applies_the_policy(root: Node) -> None:
    h = sub_ca_under_pathlen0(root)
    tolerant = receiver(root, policy=TOLERANT, intermediates=(h.inter.cert, h.extra[0].cert))
    fault = refused(h, tolerant, chain=[h.leaf.cert])
    assert "(path-length)" in fault.message


# ------------------------------------------------------------------------------------------ the validated-chain cache
class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_cached_chain_is_refused_once_the_leaf_expires_while_running(root: Node) -> None:
    leaf_end = NOW + dt.timedelta(hours=2)
    h = good(root=root, not_after=leaf_end)
    clock = Clock(NOW)
    customs = receiver(root, clock=clock)
    s = sender(h)
    msg = s.user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    customs.open(msg.content_type, msg.body)
    assert len(customs.trust._cache) == 1         # validated once and cached
    clock.now = leaf_end                           # the last valid instant: still accepted
    customs.open(msg.content_type, msg.body)
    clock.now = leaf_end + dt.timedelta(seconds=1)
    with pytest.raises(EbmsFault) as exc:
        customs.open(msg.content_type, msg.body)   # the same token, the same bytes: the cache must not answer
    assert exc.value.code == "EBMS:0101" and "(expired)" in exc.value.message


def test_cache_is_bounded_by_the_earliest_expiry_in_the_chain_not_the_leaf(root: Node) -> None:
    inter_end = NOW + dt.timedelta(hours=1)
    h = with_inter(root, not_after=inter_end)      # the leaf outlives its issuing CA
    trust = TrustStore([root.cert])
    trust.validate_cached(b"k", h.chain, at=NOW)
    trust.validate_cached(b"k", h.chain, at=inter_end)
    with pytest.raises(ChainError) as exc:
        trust.validate_cached(b"k", h.chain, at=inter_end + dt.timedelta(microseconds=1))
    assert exc.value.reason == "expired" and "Issuing CA" in str(exc.value)


def test_cache_does_not_answer_before_the_chain_became_valid(root: Node) -> None:
    start = NOW + dt.timedelta(days=1)
    h = good(root=root, not_before=start)
    trust = TrustStore([root.cert])
    trust.validate_cached(b"k", h.chain, at=start)
    with pytest.raises(ChainError) as exc:
        trust.validate_cached(b"k", h.chain, at=start - dt.timedelta(seconds=1))   # a clock stepped back
    assert exc.value.reason == "not-yet-valid"


def write_crl(path: Path, issuer: Node, revoked: list[x509.Certificate]) -> None:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(NOW - dt.timedelta(days=1)).next_update(NOW + dt.timedelta(days=7)))
    for cert in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                                      .revocation_date(NOW - dt.timedelta(hours=1)).build())
    data = b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)       # how an operator's CRL fetcher should publish it: atomically


def test_cached_chain_does_not_survive_a_crl_that_revokes_it(root: Node, tmp_path: Path) -> None:
    h = good(root=root)
    crl = tmp_path / "int.crl"
    write_crl(crl, h.inter, [])
    mono = [1000.0]
    crls = CrlCache([crl], refresh_seconds=60, clock=lambda: mono[0])
    customs = receiver(root, crls=crls)
    msg = sender(h).user_message(action="IE3F32", payload=ENS, to_party=Engine.customs_party())
    customs.open(msg.content_type, msg.body)
    write_crl(crl, h.inter, [h.leaf.cert])
    mono[0] += 61                                  # the refresh interval has passed: the new CRL is read
    with pytest.raises(EbmsFault) as exc:
        customs.open(msg.content_type, msg.body)
    assert exc.value.code == "EBMS:0101" and "(revoked)" in exc.value.message
    write_crl(crl, h.inter, [])                    # un-revoked (certificateHold lifted): accepted again
    mono[0] += 61
    customs.open(msg.content_type, msg.body)


def test_crl_change_within_the_same_mtime_tick_is_detected(root: Node, tmp_path: Path) -> None:
    h = good(root=root)
    crl = tmp_path / "int.crl"
    write_crl(crl, h.inter, [])
    st = os.stat(crl)
    mono = [0.0]
    crls = CrlCache([crl], refresh_seconds=10, clock=lambda: mono[0])
    trust = TrustStore([root.cert], crls)
    trust.validate_cached(b"k", h.chain, at=NOW)
    write_crl(crl, h.inter, [h.leaf.cert])
    os.utime(crl, ns=(st.st_atime_ns, st.st_mtime_ns))   # same mtime as before: the inode tells the change
    mono[0] = 11
    with pytest.raises(ChainError) as exc:
        trust.validate_cached(b"k", h.chain, at=NOW)
    assert exc.value.reason == "revoked"


def test_failures_are_never_cached(root: Node) -> None:
    h = good(root=root, not_before=NOW + dt.timedelta(hours=1))
    trust = TrustStore([root.cert])
    with pytest.raises(ChainError):
        trust.validate_cached(b"k", h.chain, at=NOW)
    assert not trust._cache
    trust.validate_cached(b"k", h.chain, at=NOW + dt.timedelta(hours=1))


# ------------------------------------------------------------------------------------------ the generated test PKI
def test_generated_test_pki_passes_the_policy(pki: Path) -> None:
    """The PKI every other test and the demo use satisfies the stricter validation (and its pathlen-0 issuing CA
    may issue the seal but no sub-CA)."""
    from gateway.security.keys import load_pem_certificates
    trust = TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"])
    for chain in ("trader-chain.pem", "customs-chain.pem"):
        trust.validate(load_pem_certificates(pki / chain))
    tls = load_pem_certificates(pki / "trader-tls-client.pem") + load_pem_certificates(pki / "trader-ca-bundle.pem")
    with pytest.raises(ChainError) as exc:
        trust.validate(tls)
    assert exc.value.reason == "seal-extended-key-usage"


def test_x509v3_token_of_a_tls_client_certificate_is_not_a_seal(root: Node) -> None:
    h = good(root=root, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    tolerant = receiver(root, policy=TOLERANT, intermediates=(h.inter.cert,))
    send(good(root=root), tolerant, chain=[good(root=root).leaf.cert], token_type=VT_X509V3)
    fault = refused(h, tolerant, chain=[h.leaf.cert], token_type=VT_X509V3)
    assert fault.code == "EBMS:0101" and "(seal-extended-key-usage)" in fault.message


def test_gateway_refuses_to_seal_with_a_tls_client_certificate(pki: Path, tmp_path: Path) -> None:
    """Customs would refuse every message: the configuration is refused at start-up, naming the cause."""
    from gateway.security.keys import KeyMaterialError, load_identity_files
    chain = tmp_path / "tls-as-seal-chain.pem"
    chain.write_bytes((pki / "trader-tls-client.pem").read_bytes() + (pki / "trader-ca-bundle.pem").read_bytes())
    with pytest.raises(KeyMaterialError, match=r"\(seal-extended-key-usage\).*clientAuth"):
        load_identity_files(pki / "trader-tls-client.key", chain)
    load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem")


def test_pkipath_with_too_many_certificates_is_refused_before_any_certificate_is_checked(root: Node) -> None:
    """A token of thousands of certificates must not buy thousands of parses and signature checks."""
    from gateway.security import pkipath
    h = good(root=root)
    token = pkipath.encode(h.chain * 4)     # 12 certificates
    with pytest.raises(pkipath.PkiPathError, match="more than 10 certificates"):
        pkipath.decode(token)
    assert len(pkipath.decode(pkipath.encode(h.chain * 3))) == 9
    fault = refused(h, receiver(root), chain=h.chain * 4)
    assert fault.code == "EBMS:0101" and "more than 10 certificates" in fault.message


def test_doctor_names_a_seal_the_policy_refuses(pki: Path, tmp_path: Path) -> None:
    from gateway.transport.doctor import run_checks
    repo = Path(__file__).resolve().parent.parent
    chain = tmp_path / "tls-as-seal-chain.pem"
    chain.write_bytes((pki / "trader-tls-client.pem").read_bytes() + (pki / "trader-ca-bundle.pem").read_bytes())
    text = (repo / "conf" / "gateway.toml").read_text().replace('"../', f'"{repo}/')
    text = text.replace(f'key = "{repo}/certs/out/trader-seal.key"', f'key = "{pki}/trader-tls-client.key"')
    text = text.replace(f'chain = "{repo}/certs/out/trader-chain.pem"', f'chain = "{chain}"')
    conf = tmp_path / "gateway.toml"
    conf.write_text(text)
    checks, _env = run_checks(conf, network=False, do_ping=False)
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert "sealing chain passes the seal policy" in failed
    assert "(seal-extended-key-usage)" in failed["sealing chain passes the seal policy"]
    assert "sealing key matches its certificate" not in {c.name for c in checks if c.ok}


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_unreadable_crl_fails_closed_with_a_clear_cause(root: Node, tmp_path: Path, damage: str) -> None:
    h = good(root=root)
    crl = tmp_path / "int.crl"
    write_crl(crl, h.inter, [])
    mono = [0.0]
    customs = receiver(root, crls=CrlCache([crl], refresh_seconds=10, clock=lambda: mono[0]))
    send(h, customs)
    if damage == "missing":
        crl.unlink()
    else:
        crl.write_bytes(crl.read_bytes()[:200])
    mono[0] = 11
    fault = refused(h, customs)
    assert fault.code == "EBMS:0101" and "(broken)" in fault.message and "int.crl cannot be read" in fault.message


def test_a_pinned_self_signed_seal_may_be_a_ca_certificate() -> None:
    """A certificate configured itself as an anchor (pinning) is exempt from the end-entity rule: self-signed
    certificates made with ``openssl req -x509`` carry cA=TRUE."""
    node = issue(name("Pinned Seal", eori=EORI), rsa_key(2048, 30), None, ca=True,
                 ku=key_usage(ds=True, nr=True, cert_sign=True))
    h = Hierarchy(node, node, node)
    send(h, receiver(node, policy=TOLERANT), chain=[node.cert])
    other = issue(name("Unpinned CA Seal", eori=EORI), rsa_key(2048, 31), node, ca=True,
                  ku=key_usage(ds=True, nr=True, cert_sign=True))
    fault = refused(Hierarchy(node, node, other), receiver(node, policy=TOLERANT), chain=[other.cert, node.cert])
    assert "(seal-is-ca)" in fault.message


def test_revoked_issuing_ca_is_refused_by_the_roots_crl(root: Node, tmp_path: Path) -> None:
    h = good(root=root)
    crl = tmp_path / "root.crl"
    write_crl(crl, root, [h.inter.cert])
    fault = refused(h, receiver(root, crls=CrlCache([crl])))
    assert "(revoked)" in fault.message and "Issuing CA" in fault.message


def test_a_crl_replaced_by_a_forged_one_is_not_trusted_on_the_old_ones_signature(root: Node, tmp_path: Path) -> None:
    """A CRL's signature is checked again whenever the file changes: a forged CRL (the issuer's name, another key)
    that revokes the seal says nothing and the seal stays accepted."""
    h = good(root=root)
    crl = tmp_path / "int.crl"
    write_crl(crl, h.inter, [])
    mono = [0.0]
    customs = receiver(root, crls=CrlCache([crl], refresh_seconds=10, clock=lambda: mono[0]))
    send(h, customs)
    forger = Node(h.inter.cert, rsa_key(2048, 40))      # same issuer name, a key that is not the issuing CA's
    write_crl(crl, forger, [h.leaf.cert])
    mono[0] = 11
    send(h, customs)


def test_serial_number_that_is_not_an_eori_is_not_read_as_one(root: Node) -> None:
    """ETSI subjects carry serialNumber values such as IDCNL-123456; only an EORI-shaped value is an EORI."""
    from gateway.security.keys import eori_of
    leaf = issue(name("Serial Seal", serial="IDCNL-123456"), rsa_key(2048, 2), good(root=root).inter, ca=False)
    assert eori_of(leaf.cert) is None
    eori_serial = issue(name("Serial Seal", serial=EORI), rsa_key(2048, 2), good(root=root).inter, ca=False)
    assert eori_of(eori_serial.cert) == EORI


def test_validator_path_through_a_pinned_anchor_is_held_to_the_policy_too(root: Node) -> None:
    """The RFC 5280 validator may find another path than the token's (here: straight to a pinned CA that has the
    issuing CA's name and key but is restricted to TLS servers); the seal policy applies to that path as well."""
    h = good(root=root)
    other_root = root_ca("Other Root CA", slot=1)
    pinned = issue(h.inter.cert.subject, h.inter.key, other_root, ca=True, pathlen=0,
                   eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    customs = Engine(receiver(root).identity, TrustStore([root.cert, pinned.cert]), party_id="sti-taxud",
                     fqdn="sti.path.test", role="Customs", policy=STRICT, clock=lambda: NOW)
    fault = refused(h, customs)
    assert "(ca-extended-key-usage)" in fault.message


def test_our_test_issuing_ca_pathlen0_cannot_issue_a_sub_ca(pki: Path) -> None:
    """The issue's own case: certs/out/trader-int.pem (pathlen 0) issues a sub-CA, which issues a seal carrying our
    EORI; sealed as a full PkiPath to the trader root, the message is refused with the path-length cause."""
    from gateway.security.keys import load_pem_certificates
    inter_key = serialization.load_pem_private_key((pki / "trader-int.key").read_bytes(), None)
    inter = Node(load_pem_certificates(pki / "trader-int.pem")[0], inter_key)  # type: ignore[arg-type]
    root = Node(load_pem_certificates(pki / "trader-root.pem")[0], rsa_key(2048, 0))   # the key is never used
    now = dt.datetime.now(dt.timezone.utc)
    valid = {"not_before": now - dt.timedelta(hours=1), "not_after": now + dt.timedelta(days=1)}
    sub = issue(name("Rogue Sub CA"), rsa_key(2048, 3), inter, ca=True, **valid)  # type: ignore[arg-type]
    leaf = issue(name("Rogue Seal", eori=EORI), rsa_key(2048, 2), sub, ca=False, **valid)  # type: ignore[arg-type]
    h = Hierarchy(root, inter, leaf, extra=(sub,))
    customs = Engine(receiver(root_ca()).identity, TrustStore.from_files([pki / "trader-root.pem"]),
                     party_id="sti-taxud", fqdn="sti.path.test", role="Customs", policy=STRICT)
    fault = refused(h, customs)
    assert fault.code == "EBMS:0101" and "(path-length)" in fault.message and "Test Trader Issuing CA" in fault.message


def test_stale_crl_is_used_and_reported_at_every_refresh(root: Node, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    h = good(root=root)
    crl = tmp_path / "int.crl"
    write_crl(crl, h.inter, [h.leaf.cert])           # nextUpdate NOW + 7 days
    mono = [0.0]
    wall = [NOW]
    crls = CrlCache([crl], refresh_seconds=10, clock=lambda: mono[0], wall_clock=lambda: wall[0])
    with caplog.at_level("WARNING", logger="ics2gw.security"):
        crls.reload(force=True)
        assert "crl_stale" not in caplog.text
        wall[0] = NOW + dt.timedelta(days=8)
        mono[0] = 11
        crls.reload()
    assert "event=crl_stale" in caplog.text and "int.crl" in caplog.text
    assert crls.is_revoked(h.leaf.cert, h.inter.cert)  # still used: its revocations stay revoked


def test_customs_seal_in_a_one_certificate_pkipath_is_accepted_by_the_configured_gateway(pki: Path) -> None:
    """Issue 11 with the shipped configuration: the STI seals a c2t message with a PkiPath holding only its seal;
    the gateway (tolerant, customs_certs required) completes it to the customs root and accepts it."""
    from gateway.config import load_gateway_config
    from gateway.ebms.constants import PARTY_TYPE_AUTH, ROLE_CUSTOMS
    from gateway.security.keys import load_pem_certificates
    repo = Path(__file__).resolve().parent.parent
    gateway = Engine.from_config(load_gateway_config(repo / "conf" / "gateway.toml"))
    key = serialization.load_pem_private_key((pki / "customs-seal.key").read_bytes(), None)
    seal_cert = load_pem_certificates(pki / "customs-seal.pem")[0]
    recipe = Recipe(parts=[xml_part(ENS)], from_party=Party("sti-taxud", PARTY_TYPE_AUTH, ROLE_CUSTOMS),
                    to_party=Party("NL123456789", PARTY_TYPE_EORI, ROLE_TRADER), service="eu_ics2_c2t", action="IE3R01")
    content_type, body = build_message(recipe, key, [seal_cert])
    msg = gateway.open(content_type, body)
    assert msg.signature is not None and msg.signature.token_chain_length == 1 and len(msg.signature.chain) == 2
    with pytest.raises(EbmsFault) as exc:                  # customs keep refusing the same from a trader
        gateway.open(content_type, body, policy=STRICT)
    assert "holds only the leaf certificate" in exc.value.message


def test_seal_naming_two_eoris_is_refused_as_ambiguous(root: Node) -> None:
    """organizationIdentifier EORI:NL123456789 but serialNumber DE987654321: which party is it? Neither."""
    h = good(root=root)
    two = issue(name("Two EORI Seal", eori=EORI, serial="DE987654321"), rsa_key(2048, 2), h.inter, ca=False)
    fault = refused(Hierarchy(root, h.inter, two), receiver(root, eori_binding="if-present"))
    assert (fault.code, fault.detail) == ("EBMS:0004", "A001") and "(eori-ambiguous)" in fault.message
    same = issue(name("Same EORI Seal", eori=EORI, serial=EORI), rsa_key(2048, 2), h.inter, ca=False)
    send(Hierarchy(root, h.inter, same), receiver(root))       # the test PKI's own shape: both name one EORI


QCP = x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("0.4.0.194112.1.1"), None)])  # QCP-l
POLICY_CONSTRAINTS = x509.PolicyConstraints(require_explicit_policy=0, inhibit_policy_mapping=None)


def test_critical_certificate_policies_of_qualified_cas_are_accepted(root: Node) -> None:
    """eIDAS CAs mark certificatePolicies critical; with anyPolicy acceptable it cannot refuse a path (RFC 5280 6.1)."""
    send(good(root=root, extra=[(QCP, True)]), receiver(root))
    send(with_inter(root, extra=[(QCP, True)]), receiver(root))


def test_policy_constraints_are_not_processed_and_therefore_refused(root: Node) -> None:
    fault = refused(with_inter(root, extra=[(POLICY_CONSTRAINTS, True)]), receiver(root))
    assert "(critical-extension)" in fault.message and "2.5.29.36" in fault.message
