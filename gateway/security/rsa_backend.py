"""The RSA signature primitive behind sealing and verification, in one place so it can be measured.

Two engines give identical bytes (RSASSA-PKCS1-v1_5 is deterministic): ``cryptography`` and python-xmlsec's
``sign_binary``/``verify_binary`` (libxmlsec1 over OpenSSL). Both end in OpenSSL's RSA; the choice is the
per-call overhead, measured by ``python -m bench`` (see README "Sealing engine"). ``cryptography`` is the
default: it was measured faster per call (no key re-import, no transform context per operation).
Set ICS2GW_RSA_BACKEND=xmlsec to use the other one.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.ebms.constants import ALG_RSA_SHA256

_HASHES = {
    ALG_RSA_SHA256: hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": hashes.SHA1,  # only ever produced by the negative-test builder
}
BACKEND = os.environ.get("ICS2GW_RSA_BACKEND", "cryptography")


class UnsupportedAlgorithm(ValueError):
    pass


def _hash(method: str) -> hashes.HashAlgorithm:
    try:
        return _HASHES[method]()
    except KeyError:
        raise UnsupportedAlgorithm(f"unsupported signature method {method}") from None


def sign(key: Any, data: bytes, method: str = ALG_RSA_SHA256, *, backend: str | None = None) -> bytes:
    if (backend or BACKEND) == "xmlsec":
        return _xmlsec_sign(key, data, method)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnsupportedAlgorithm("only RSA keys can seal (rsa-sha256)")
    return key.sign(data, padding.PKCS1v15(), _hash(method))


def verify(public_key: Any, signature: bytes, data: bytes, method: str = ALG_RSA_SHA256) -> bool:
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), _hash(method))
        return True
    except InvalidSignature:
        return False


# -- python-xmlsec variant (kept for the measurement and as an alternative engine) --------------------------
_xmlsec_keys: dict[int, Any] = {}


def _xmlsec_key(key: rsa.RSAPrivateKey) -> Any:
    import xmlsec
    from cryptography.hazmat.primitives import serialization

    k = _xmlsec_keys.get(id(key))
    if k is None:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        k = xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatPem)
        _xmlsec_keys[id(key)] = k
    return k


def _xmlsec_sign(key: rsa.RSAPrivateKey, data: bytes, method: str) -> bytes:
    import xmlsec

    if method != ALG_RSA_SHA256:
        raise UnsupportedAlgorithm(f"the xmlsec backend signs rsa-sha256 only, not {method}")
    ctx = xmlsec.SignatureContext()
    ctx.key = _xmlsec_key(key)
    return ctx.sign_binary(data, xmlsec.constants.TransformRsaSha256)
