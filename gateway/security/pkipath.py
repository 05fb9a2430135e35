"""X509PKIPathv1 tokens: an ASN.1 ``SEQUENCE OF Certificate`` ordered root first, signer (leaf) last.

ICS2 requires the whole chain in the token (ICD 4.6.2, table 11). The order is the ASN.1 PkiPath order; a
leaf-first PkiPath is a classic interop bug and is rejected by ``decode`` when ``strict_order`` is set.
"""

from __future__ import annotations

from cryptography import x509


class PkiPathError(ValueError):
    pass


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """Returns (tag, start of content, end of content) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise PkiPathError("truncated DER element")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise PkiPathError("unsupported DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise PkiPathError("DER element longer than the token")
    return tag, pos, pos + length


def encode(chain_leaf_first: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    """Encodes a chain given leaf first as a PkiPath (root first)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    content = b"".join(c.public_bytes(Encoding.DER) for c in reversed(chain_leaf_first))
    return b"\x30" + _der_length(len(content)) + content


# A real sealing path is 2-4 certificates; the path validator stops at 8 below the anchor. Counting before parsing
# keeps a token of thousands of certificates from costing thousands of parses and signature checks.
MAX_CERTIFICATES = 10


def decode(token: bytes, *, max_certificates: int = MAX_CERTIFICATES) -> list[x509.Certificate]:
    """Decodes a PkiPath token; returns the certificates in token order (root first when well formed)."""
    tag, start, end = _read_tlv(token, 0)
    if tag != 0x30 or end != len(token):
        raise PkiPathError("a PkiPath is one DER SEQUENCE")
    count, pos = 0, start
    while pos < end:
        pos = _read_tlv(token, pos)[2]
        count += 1
        if count > max_certificates:
            raise PkiPathError(f"the PkiPath holds more than {max_certificates} certificates")
    certs: list[x509.Certificate] = []
    pos = start
    while pos < end:
        ctag, cstart, cend = _read_tlv(token, pos)
        if ctag != 0x30:
            raise PkiPathError("PkiPath element is not a certificate")
        try:
            certs.append(x509.load_der_x509_certificate(token[pos:cend]))
        except ValueError as exc:
            raise PkiPathError(f"PkiPath certificate {len(certs) + 1} cannot be read: {exc}") from None
        pos = cend
    if not certs:
        raise PkiPathError("empty PkiPath")
    return certs


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name and key signed ``cert``. This only links a chain: whether the algorithm is
    acceptable is the policy's question (``pathvalidate``), so that a SHA-1 chain is refused as SHA-1, not as an
    unordered or untrusted one."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except ValueError:   # cryptography refuses to verify some legacy algorithms (SHA-1) at all
        return _legacy_rsa_signature_ok(cert, issuer)
    except Exception:  # InvalidSignature and unsupported key types alike
        return False
    return True


def _legacy_rsa_signature_ok(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        alg = cert.signature_hash_algorithm
        key = issuer.public_key()
        if not isinstance(alg, hashes.SHA1) or not isinstance(key, rsa.RSAPublicKey):
            return False
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), alg)
    except Exception:
        return False
    return True


def order_is_root_first(certs: list[x509.Certificate]) -> bool:
    """True when each certificate issued the next one (PkiPath order)."""
    return all(is_issued_by(certs[i + 1], certs[i]) for i in range(len(certs) - 1))
