"""Certificate path validation: RFC 5280 by a real path validator, the ICS2 sealing policy on top.

Two layers, both always run:

1. ``check_seal_policy`` walks the chain the token sent (completed from configured intermediates and ending at the
   anchor) and refuses, with one named cause per refusal, what RFC 5280 or the ICS2 policy forbid: an expired or
   not-yet-valid certificate, a CA that may not sign certificates or whose path length is exceeded, an unknown
   critical extension, a seal whose key usage or extended key usage does not allow sealing, an RSA key under
   2048 bits, a SHA-1 (or weaker) signature. Named causes matter: "untrusted" says nothing to the operator who must
   renew a certificate.
2. ``rfc5280_path`` then asks ``cryptography.x509.verification`` (a complete RFC 5280 / CA-B path builder, in
   Rust) to build and check the path itself: signatures, name chaining, basic constraints, path length, name
   constraints, key usage of CAs, critical extensions, validity. Whatever it refuses that layer 1 did not name is
   reported as cause ``path`` with the validator's own reason. Its end-entity policy is relaxed to "any
   extension" because a seal is not a TLS client (it carries no clientAuth EKU and no SAN); the seal's own rules
   are layer 1's.

Revocation (CRLs) stays in ``trust.CrlCache``: the Rust validator does not read CRLs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError


class PathError(ValueError):
    """One named reason a chain is refused. ``cause`` is a stable token (logs, tests, docs/security.md)."""

    def __init__(self, cause: str, message: str) -> None:
        self.cause = cause
        super().__init__(message)


@dataclass(frozen=True)
class SealPolicy:
    """The ICS2 policy for a sealing chain. Defaults are what the profile demands; see docs/security.md."""
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    max_chain_depth: int = 8          # certificates between the leaf and the anchor, the validator's own bound


DEFAULT_POLICY = SealPolicy()

# Hash algorithms a certificate in the chain may be signed with (SHA-1 and MD5 are collision-broken).
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

# Critical extensions this module (or the path validator) processes; any other critical one refuses the chain
# (RFC 5280 4.2: "A certificate-using system MUST reject the certificate if it encounters a critical extension it
# does not recognize").
# certificatePolicies counts as processed: with RFC 5280 6.1's user-initial-policy-set {anyPolicy}, no explicit
# policy required, and policyConstraints / policyMappings / inhibitAnyPolicy refused (not in this set), policy
# processing cannot refuse a path, so accepting it critical is what a full policy engine would do. Qualified eIDAS
# CAs mark it critical (pyca/cryptography#14850).
_HANDLED_CRITICAL = frozenset({
    x509.BasicConstraints.oid, x509.KeyUsage.oid, x509.ExtendedKeyUsage.oid, x509.SubjectAlternativeName.oid,
    x509.NameConstraints.oid, x509.CertificatePolicies.oid,
})

# Extended key usages that allow sealing a document. A seal without the extension may seal; a seal restricted to
# other purposes (a TLS client or server certificate, code signing, time stamping, OCSP) may not.
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")           # id-kp-documentSigning (RFC 9336)
MS_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")   # widespread on eIDAS seals
ADOBE_AUTHENTIC_DOCUMENTS = ObjectIdentifier("1.2.840.113583.1.1.5")
SEALING_EKUS = frozenset({ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, ExtendedKeyUsageOID.EMAIL_PROTECTION,
                          DOCUMENT_SIGNING, MS_DOCUMENT_SIGNING, ADOBE_AUTHENTIC_DOCUMENTS})
_EKU_NAMES = {ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth (TLS client)",
              ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth (TLS server)",
              ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning", ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
              ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning"}


def subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"(empty subject, serial {cert.serial_number:x})"


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension | None:  # type: ignore[type-arg]
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


# --------------------------------------------------------------------------------------------------- layer 1
def check_seal_policy(chain: Sequence[x509.Certificate], *, at: dt.datetime | None, anchor_index: int,
                      policy: SealPolicy = DEFAULT_POLICY) -> None:
    """Checks ``chain`` (leaf first; ``chain[anchor_index]`` is the trust anchor, normally the last) and raises
    ``PathError`` naming the first cause found. The order puts causes an operator can act on first. ``at`` None
    skips the validity periods (the gateway's own seal at start-up: expiry is doctor's and the alerts' job)."""
    if not chain:
        raise PathError("broken", "no certificate to validate")
    for cert in chain:
        if at is not None:
            check_validity(cert, at)
    for i, cert in enumerate(chain):
        check_critical_extensions(cert)
        check_key_strength(cert, policy)
        if i < anchor_index:   # the anchor's self-signature proves nothing and is never verified (RFC 5280 6.1)
            check_signature_algorithm(cert)
    for i in range(1, anchor_index + 1):
        check_ca(chain[i], below=i - 1)
    check_seal_usage(chain[0], pinned=anchor_index == 0)


def check_validity(cert: x509.Certificate, at: dt.datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise PathError("not-yet-valid", f"{subject(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if at > cert.not_valid_after_utc:
        raise PathError("expired", f"{subject(cert)} expired on {cert.not_valid_after_utc.isoformat()}")


def check_critical_extensions(cert: x509.Certificate) -> None:
    try:
        extensions = list(cert.extensions)
    # a duplicated or malformed extension: cryptography refuses to parse it (DuplicateExtension is not a ValueError)
    except (ValueError, x509.DuplicateExtension) as exc:
        raise PathError("broken", f"{subject(cert)} has unreadable extensions: {exc}") from None
    unknown = [e.oid.dotted_string for e in extensions if e.critical and e.oid not in _HANDLED_CRITICAL]
    if unknown:
        raise PathError("critical-extension", f"{subject(cert)} carries the critical extension(s) "
                                              f"{', '.join(unknown)}, which this gateway does not process "
                                              "(RFC 5280 4.2: such a certificate must be refused)")


def check_key_strength(cert: x509.Certificate, policy: SealPolicy) -> None:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PathError("weak-key", f"{subject(cert)} has a public key that cannot be used: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.min_rsa_bits:
            raise PathError("weak-key", f"{subject(cert)} has a {key.key_size}-bit RSA key; at least "
                                        f"{policy.min_rsa_bits} bits are required")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < policy.min_ec_bits:
            raise PathError("weak-key", f"{subject(cert)} has a {key.curve.key_size}-bit EC key ({key.curve.name}); "
                                        f"at least {policy.min_ec_bits} bits are required")
    elif isinstance(key, dsa.DSAPublicKey):
        raise PathError("weak-key", f"{subject(cert)} has a DSA key, which is not accepted")


def check_signature_algorithm(cert: x509.Certificate) -> None:
    oid = cert.signature_algorithm_oid
    label = getattr(oid, "_name", None) or oid.dotted_string
    try:
        alg = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise PathError("weak-algorithm", f"{subject(cert)} is signed with {label} ({oid.dotted_string}), an "
                                          "algorithm this gateway does not accept") from None
    if isinstance(alg, hashes.SHA1):
        raise PathError("weak-algorithm", f"{subject(cert)} is signed with {label}: SHA-1 signatures are refused "
                                          "(collision attacks; ENISA and eDelivery AS4 deprecate SHA-1)")
    if alg is not None and not isinstance(alg, _STRONG_HASHES):
        raise PathError("weak-algorithm", f"{subject(cert)} is signed with {label} ({alg.name}); only SHA-256, "
                                          "SHA-384 and SHA-512 are accepted")


def check_ca(cert: x509.Certificate, *, below: int) -> None:
    """``cert`` issues a certificate of the chain; ``below`` CA certificates lie between it and the leaf."""
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.value.ca:
        raise PathError("not-a-ca", f"{subject(cert)} issues a certificate of the chain but is not a CA "
                                    "(basicConstraints cA is not set)")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        raise PathError("ca-key-usage", f"{subject(cert)} is a CA without a keyUsage extension (RFC 5280 4.2.1.3: a "
                                        "CA certificate must carry one, with keyCertSign)")
    if not ku.value.key_cert_sign:
        raise PathError("ca-key-usage", f"{subject(cert)} is a CA whose keyUsage does not allow keyCertSign, so it "
                                        "may not issue certificates")
    if bc.value.path_length is not None and below > bc.value.path_length:
        raise PathError("path-length", f"{subject(cert)} allows {bc.value.path_length} CA certificate(s) below it "
                                       f"(pathLenConstraint) but the chain has {below}")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is not None and not set(eku.value) & SEALING_EKUS:
        raise PathError("ca-extended-key-usage", f"{subject(cert)} is a CA restricted to {_eku_list(eku.value)}, "
                                                 "none of which allows sealing")


def check_seal_usage(cert: x509.Certificate, *, pinned: bool = False) -> None:
    """The signer must be allowed to seal: an end-entity certificate (a CA's key signs certificates, not messages;
    only a certificate configured itself as an anchor is exempt), keyUsage digitalSignature or nonRepudiation, and no
    EKU that confines it to another purpose (a TLS client certificate is not a seal)."""
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None and bc.value.ca and not pinned:
        raise PathError("seal-is-ca", f"{subject(cert)} is a CA certificate (basicConstraints cA=TRUE); a CA key "
                                      "may not seal messages")
    ku = _ext(cert, x509.KeyUsage)
    if ku is not None and not (ku.value.digital_signature or ku.value.content_commitment):
        raise PathError("seal-key-usage", f"{subject(cert)} has a keyUsage that allows neither digitalSignature nor "
                                          "nonRepudiation, so it may not seal")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is not None and not set(eku.value) & SEALING_EKUS:
        raise PathError("seal-extended-key-usage", f"{subject(cert)} is restricted to {_eku_list(eku.value)} "
                                                   "(extendedKeyUsage), which does not allow sealing messages")


def _eku_list(eku: x509.ExtendedKeyUsage) -> str:
    return ", ".join(_EKU_NAMES.get(o, o.dotted_string) for o in eku)


# --------------------------------------------------------------------------------------------------- layer 2
# CA/B wants clientAuth on a CA that carries EKU when verifying TLS clients; the seal's EKU rule is layer 1's
_CA_POLICY = (ExtensionPolicy.webpki_defaults_ca()
              .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
              .may_be_present(x509.CertificatePolicies, Criticality.AGNOSTIC, None))
_EE_POLICY = ExtensionPolicy.permit_all().may_be_present(x509.CertificatePolicies, Criticality.AGNOSTIC, None)


def rfc5280_path(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate], store: Store, *, at: dt.datetime,
                 policy: SealPolicy = DEFAULT_POLICY) -> list[x509.Certificate]:
    """Builds and validates the path from ``leaf`` through ``untrusted`` to an anchor of ``store`` with
    ``cryptography``'s RFC 5280 validator; returns it leaf first, or raises ``PathError("path", ...)``."""
    verifier = (PolicyBuilder().store(store).time(at).max_chain_depth(policy.max_chain_depth)
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY).build_client_verifier())
    try:
        return list(verifier.verify(leaf, list(untrusted)).chain)
    except VerificationError as exc:
        raise PathError("path", f"RFC 5280 path validation of {subject(leaf)} failed: {_one_line(str(exc))}") from None
    except (ValueError, TypeError) as exc:   # a certificate the validator cannot even process: fail closed
        raise PathError("path", f"RFC 5280 path validation of {subject(leaf)} could not run: "
                                f"{_one_line(str(exc))}") from None


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    cut = text.find(" (encountered processing")
    return text[:cut] if cut > 0 else text
