"""What we sign, checked from the profile's side: the WS-Security header our seal writes (ICD 4.6.2: one
ds:Signature over eb:Messaging, the SOAP Body and every attachment, exclusive c14n, rsa-sha256, sha256, an
X509PKIPathv1 token root first), verified independently with libxmlsec1 (python-xmlsec) and with digests
recomputed here from the SwA 1.1 rules; the RSA primitive behind it (both engines give the same bytes).

A mutant of the sealer that our own verifier would still accept could make customs refuse every message; these
tests therefore do not use our verifier at all.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

import pytest
import xmlsec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from lxml import etree

from gateway.ebms import build
from gateway.ebms.constants import (
    ALG_ATTACHMENT_CONTENT, ALG_EXC_C14N, ALG_RSA_SHA256, ALG_SHA256, ENC_BASE64, NS_DS, NS_EB, NS_EC, NS_SOAP12,
    NS_WSSE, NS_WSU, VT_PKIPATH, VT_X509V3,
)
from gateway.ebms.model import Party, UserMessage, utc_timestamp
from gateway.security import pkipath, rsa_backend
from gateway.security.keys import SealingIdentity, load_identity_files, load_pem_certificates
from gateway.security.seal import (
    Attachment, SealError, ancestor_prefixes, attachment_digest_input, c14n, find_parts, seal, seal_with,
)

DS, WSSE, WSU_ID, S = "{%s}" % NS_DS, "{%s}" % NS_WSSE, "{%s}Id" % NS_WSU, "{%s}" % NS_SOAP12
ALG_SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
ALG_RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
ALG_RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
ALG_RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
ENS = b'<?xml version="1.0" encoding="UTF-8"?>\n<IE3F32 xmlns="urn:x-test"><!-- c --><LRN>LRN-SEAL-1</LRN></IE3F32>\n'


@pytest.fixture(scope="module")
def identity(pki: Path) -> SealingIdentity:
    return load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem")


def envelope() -> etree._Element:
    um = UserMessage("seal-rules@ap.trader.test", utc_timestamp(), Party("NL123456789", None, "Trader"),
                     Party("sti-taxud", None, "Customs"), "eu_ics2_t2c", None, "IE3F32", None, None, "conv-1", ())
    return build.user_message_envelope(um)


def wire(env: etree._Element) -> etree._Element:
    """What the receiver parses: our serialization, read back."""
    return etree.fromstring(etree.tostring(env))


def xmlsec_verifies(env: etree._Element, cert_pem: Path) -> bool:
    """libxmlsec1 checks the ds:Signature (SignedInfo c14n, SignatureValue, every same-document reference)."""
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_file(str(cert_pem), xmlsec.constants.KeyDataFormatCertPem)
    for el in env.iter():
        if el.get(WSU_ID):
            ctx.register_id(el, "Id", NS_WSU)
    try:
        ctx.verify(env.find(".//" + DS + "Signature"))
    except xmlsec.Error:
        return False
    return True


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def excl_c14n(el: etree._Element, prefixes: list[str]) -> bytes:
    return etree.tostring(el, method="c14n", exclusive=True, with_comments=False,
                          inclusive_ns_prefixes=[p for p in prefixes if p != "#default"] or None)


# ----------------------------------------------------------------------------------------- the sealed header
def test_our_seal_verifies_in_libxmlsec(identity: SealingIdentity, pki: Path) -> None:
    env, refs = seal(envelope(), [], identity)
    received = wire(env)
    assert xmlsec_verifies(received, pki / "trader-seal.pem")
    assert not xmlsec_verifies(received, pki / "customs-seal.pem")      # the check is real: another key fails
    messaging = received.find(f"{S}Header/{{{NS_EB}}}Messaging")
    messaging.set("marker", "x")                                        # a change after sealing is seen
    assert not xmlsec_verifies(received, pki / "trader-seal.pem")
    assert [r.get("URI") for r in refs] == ["#" + env.find(f"{S}Header/{{{NS_EB}}}Messaging").get(WSU_ID),
                                            "#" + env.find(f"{S}Body").get(WSU_ID)]


def test_the_security_header_is_the_ics2_profile(identity: SealingIdentity) -> None:
    env, refs = seal(envelope(), [], identity)
    received = wire(env)
    header = received.find(S + "Header")
    security = header[0]                                                # the first header block
    assert security.tag == WSSE + "Security"
    assert security.get(S + "mustUnderstand") == "true"
    assert [c.tag for c in security] == [WSSE + "BinarySecurityToken", DS + "Signature"]
    bst, signature = security
    assert bst.get("EncodingType") == ENC_BASE64 and bst.get("ValueType") == VT_PKIPATH
    token_id = bst.get(WSU_ID)
    assert token_id.startswith("X509-") and uuid.UUID(token_id[5:]).version == 4
    # the token is the PkiPath of the configured chain, root first
    assert pkipath.decode(base64.b64decode(bst.text)) == list(reversed(identity.chain))
    assert signature.get("Id").startswith("SIG-") and uuid.UUID(signature.get("Id")[4:]).version == 4
    assert [c.tag for c in signature] == [DS + "SignedInfo", DS + "SignatureValue", DS + "KeyInfo"]
    signed_info, value, key_info = signature
    cm, sm, *references = signed_info
    assert cm.tag == DS + "CanonicalizationMethod" and cm.get("Algorithm") == ALG_EXC_C14N
    si_prefixes = ancestor_prefixes(signed_info)
    assert si_prefixes == ["env", "wsse", "wsu"]
    incl = cm.find("{%s}InclusiveNamespaces" % NS_EC)
    assert incl is not None and incl.get("PrefixList") == "env wsse wsu"
    assert sm.tag == DS + "SignatureMethod" and sm.get("Algorithm") == ALG_RSA_SHA256
    # SignatureValue: RSASSA-PKCS1-v1_5 / SHA-256 over the exclusive canonical SignedInfo, with its prefixes
    identity.certificate.public_key().verify(  # type: ignore[call-arg]
        base64.b64decode(value.text), excl_c14n(signed_info, si_prefixes), padding.PKCS1v15(), hashes.SHA256())
    assert len(references) == 2
    targets = (header.find("{%s}Messaging" % NS_EB), received.find(S + "Body"))
    # the Body's only ancestor prefix is its own: no InclusiveNamespaces for it
    for ref, target, prefixes in zip(references, targets, (["env"], [])):
        assert ref.get("URI") == "#" + target.get(WSU_ID)
        (transforms, dm, dv) = ref
        assert [t.get("Algorithm") for t in transforms] == [ALG_EXC_C14N]
        assert ancestor_prefixes(target) == prefixes
        assert [i.get("PrefixList") for i in transforms[0]] == [" ".join(prefixes)] * bool(prefixes)
        assert dm.get("Algorithm") == ALG_SHA256
        assert dv.text == b64_sha256(excl_c14n(target, prefixes))
    assert key_info.get("Id").startswith("KI-") and uuid.UUID(key_info.get("Id")[3:]).version == 4
    (str_el,) = key_info
    assert str_el.tag == WSSE + "SecurityTokenReference"
    assert str_el.get(WSU_ID).startswith("STR-") and uuid.UUID(str_el.get(WSU_ID)[4:]).version == 4
    (reference,) = str_el
    assert reference.tag == WSSE + "Reference"
    assert reference.get("URI") == "#" + token_id and reference.get("ValueType") == VT_PKIPATH
    assert len({token_id[5:], signature.get("Id")[4:], key_info.get("Id")[3:], str_el.get(WSU_ID)[4:]}) == 4
    assert [etree.tostring(r) for r in refs] == [etree.tostring(r) for r in env.iter(DS + "Reference")]


def test_every_attachment_is_signed_by_its_content_id_under_the_swa_rules(identity: SealingIdentity) -> None:
    gz = b"\x1f\x8b\x08\x00" + bytes(range(256))
    atts = [Attachment("ens@ap.trader.test", "application/xml", ENS),
            Attachment("doc@ap.trader.test", "application/gzip", gz),
            Attachment("note@ap.trader.test", "text/plain; charset=utf-8", b"line 1\nline 2\rline 3\r\n")]
    env, refs = seal(envelope(), atts, identity)
    att_refs = refs[2:]
    assert [r.get("URI") for r in att_refs] == ["cid:ens@ap.trader.test", "cid:doc@ap.trader.test",
                                                "cid:note@ap.trader.test"]
    expected = [excl_c14n(etree.fromstring(ENS).getroottree(), []),       # comment dropped, no XML declaration
                gz, b"line 1\r\nline 2\r\nline 3\r\n"]
    assert expected[0] == b'<IE3F32 xmlns="urn:x-test"><LRN>LRN-SEAL-1</LRN></IE3F32>'
    for ref, data in zip(att_refs, expected):
        transforms, dm, dv = ref
        assert [(t.get("Algorithm"), len(t)) for t in transforms] == [(ALG_ATTACHMENT_CONTENT, 0)]
        assert dm.get("Algorithm") == ALG_SHA256
        assert dv.text == b64_sha256(data)


@pytest.mark.parametrize("content_type, content, digested", [
    ("application/xml", b"<a:x xmlns:a='urn:a'  b='1'><!--c--><?pi x?><y/></a:x>",
     b'<a:x xmlns:a="urn:a" b="1"><?pi x?><y></y></a:x>'),
    ("Text/XML; charset=UTF-8", b"<x><!--c--></x>", b"<x></x>"),
    ("application/soap+xml", b"<x  a='1'/>", b'<x a="1"></x>'),
    (" application/xml ;x=1", b"<x/>", b"<x></x>"),
    ("application/xml; charset=utf-8; x=1", b"<x  a='1'/>", b'<x a="1"></x>'),      # the type is before the first ;
    ("application/xml", b"<x xmlns:u='urn:unused'><y/></x>", b"<x><y></y></x>"),   # exclusive: unused ns dropped
    ("text/plain", b"a\nb\r\nc\rd\r\r\n", b"a\r\nb\r\nc\r\nd\r\n\r\n"),
    ("TEXT/csv", b"a;b\n", b"a;b\r\n"),
    ("application/gzip", b"a\nb<x/>", b"a\nb<x/>"),
    ("application/octet-stream", b"\r\n", b"\r\n"),
    ("application/xml-dtd", b"\n", b"\n"),                            # not XML content by the SwA rule
])
def test_attachment_digest_input_follows_swa_5_4_2(content_type: str, content: bytes, digested: bytes) -> None:
    assert attachment_digest_input(content, content_type) == digested


def test_an_xml_attachment_above_the_xml_reading_default_is_still_canonicalized() -> None:
    """The attachment's own size is its bound here (the message limits apply before): a 5 MiB XML part (over the
    4 MiB default of the XML reader) is canonicalized, not refused."""
    body = b"<r>" + b"<i  a='1'/>" * (5 * 1024 * 1024 // 11) + b"</r>"
    assert len(body) > 4 * 1024 * 1024
    digested = attachment_digest_input(body, "application/xml")
    assert digested == body.replace(b"<i  a='1'/>", b'<i a="1"></i>')


def test_strict_digest_input_refuses_what_the_signature_cannot_cover() -> None:
    for content in (b"<x><!--c--></x>", b"<x><?pi y?></x>", b"<!--c--><x/>"):
        with pytest.raises(ValueError) as exc:
            attachment_digest_input(content, "application/xml", strict=True)
        assert str(exc.value) == ("the XML part contains a comment or processing instruction, which its signature "
                                  "does not cover (SwA 5.4.2 canonicalization)")
    assert attachment_digest_input(b"<x>y</x>", "application/xml", strict=True) == b"<x>y</x>"
    for bad, message in ((b"", "XML attachment is not well-formed XML: Document is empty"),
                         (b"<x>", "XML attachment is not well-formed XML: Premature end of data"),
                         (b"<!DOCTYPE x [<!ENTITY e 'v'>]><x>&e;</x>",
                          "XML attachment contains a DTD or entity declaration, which is not allowed")):
        with pytest.raises(ValueError) as exc:
            attachment_digest_input(bad, "application/xml")
        assert type(exc.value) is ValueError and str(exc.value).startswith(message)


def test_signed_info_of_an_envelope_with_other_prefixes_verifies(identity: SealingIdentity, pki: Path) -> None:
    """An envelope built with other prefixes (and an extra header block) still verifies in libxmlsec: the
    InclusiveNamespaces lists follow the ancestors' prefixes."""
    text = etree.tostring(envelope()).replace(b"env:", b"soap:").replace(b"xmlns:env=", b"xmlns:soap=")
    env = etree.fromstring(text)
    extra = etree.SubElement(env.find(S + "Header"), "{urn:x-other}Extra", nsmap={"o": "urn:x-other"})
    extra.text = "x"
    sealed, refs = seal(env, [], identity)
    received = wire(sealed)
    assert xmlsec_verifies(received, pki / "trader-seal.pem")
    cm = received.find(f".//{DS}CanonicalizationMethod")
    assert cm[0].get("PrefixList") == "soap wsse wsu"
    assert [[i.get("PrefixList") for i in r[0][0]] for r in refs] == [["soap"], []]


def test_envelope_parts_the_seal_needs_are_named(identity: SealingIdentity) -> None:
    cases = []
    env = envelope()
    env.remove(env.find(S + "Body"))
    cases.append((env, "the envelope has no SOAP Header or no SOAP Body"))
    env = envelope()
    env.remove(env.find(S + "Header"))
    cases.append((env, "the envelope has no SOAP Header or no SOAP Body"))
    env = envelope()
    header = env.find(S + "Header")
    header.remove(header[0])
    cases.append((env, "the envelope has no eb:Messaging header"))
    env = envelope()
    del env.find(S + "Body").attrib[WSU_ID]
    cases.append((env, "eb:Messaging and the SOAP Body need a wsu:Id to be signed"))
    env = envelope()
    del env.find(f"{S}Header/{{{NS_EB}}}Messaging").attrib[WSU_ID]
    cases.append((env, "eb:Messaging and the SOAP Body need a wsu:Id to be signed"))
    for env, message in cases:
        with pytest.raises(SealError) as exc:
            seal(env, [], identity)
        assert str(exc.value) == message
    header, messaging, body = find_parts(envelope())
    assert (header.tag, messaging.tag, body.tag) == (S + "Header", "{%s}Messaging" % NS_EB, S + "Body")


def test_seal_refuses_a_leaf_only_identity(identity: SealingIdentity) -> None:
    leaf_only = SealingIdentity(key=identity.key, chain=identity.chain[:1])
    with pytest.raises(SealError) as exc:
        seal(envelope(), [], leaf_only)
    assert str(exc.value) == "refusing to seal with a leaf-only chain: ICS2 requires the full chain (ICD 4.6.2)"
    two = SealingIdentity(key=identity.key, chain=identity.chain[:2])
    env, _ = seal(envelope(), [], two)
    bst = env.find(f".//{WSSE}BinarySecurityToken")
    assert pkipath.decode(base64.b64decode(bst.text)) == [identity.chain[1], identity.chain[0]]


# --------------------------------------------------------------------------- the negative-test builder's knobs
def test_builder_knobs_do_what_they_say(identity: SealingIdentity, pki: Path) -> None:
    chain = list(identity.chain)
    env, refs = seal_with(envelope(), [Attachment("a@x", "application/gzip", b"A"),
                                       Attachment("b@x", "application/gzip", b"B")],
                          identity.key, chain, token_leaf_first=True, sign_body=False, skip_attachments=("a@x",))
    bst = env.find(f".//{WSSE}BinarySecurityToken")
    assert pkipath.decode(base64.b64decode(bst.text)) == chain                        # leaf first, as asked
    assert [r.get("URI")[:4] for r in refs] == ["#_me", "cid:"] and refs[1].get("URI") == "cid:b@x"
    env, refs = seal_with(envelope(), [], identity.key, chain, token_type=VT_X509V3)
    bst = env.find(f".//{WSSE}BinarySecurityToken")
    assert bst.get("ValueType") == VT_X509V3
    assert base64.b64decode(bst.text) == chain[0].public_bytes(serialization.Encoding.DER)
    assert env.find(f".//{WSSE}SecurityTokenReference/{WSSE}Reference").get("ValueType") == VT_X509V3
    assert xmlsec_verifies(wire(env), pki / "trader-seal.pem")
    odd = "urn:x-odd-token"
    env, _ = seal_with(envelope(), [], identity.key, chain, token_type=odd)
    assert env.find(f".//{WSSE}BinarySecurityToken").get("ValueType") == odd
    assert env.find(f".//{WSSE}SecurityTokenReference/{WSSE}Reference").get("ValueType") == VT_PKIPATH
    assert base64.b64decode(env.find(f".//{WSSE}BinarySecurityToken").text) == chain[0].public_bytes(
        serialization.Encoding.DER)


def test_builder_digest_and_signature_methods(identity: SealingIdentity, pki: Path) -> None:
    env, refs = seal_with(envelope(), [Attachment("a@x", "application/gzip", b"A")], identity.key,
                          list(identity.chain), digest_method=ALG_SHA1, signature_method=ALG_RSA_SHA1)
    assert {r.find(DS + "DigestMethod").get("Algorithm") for r in refs} == {ALG_SHA1}
    assert refs[2].find(DS + "DigestValue").text == base64.b64encode(hashlib.sha1(b"A").digest()).decode()
    assert env.find(f".//{DS}SignatureMethod").get("Algorithm") == ALG_RSA_SHA1
    signed_info = wire(env).find(f".//{DS}SignedInfo")
    identity.certificate.public_key().verify(  # type: ignore[call-arg]
        base64.b64decode(env.find(f".//{DS}SignatureValue").text),
        excl_c14n(signed_info, ancestor_prefixes(signed_info)), padding.PKCS1v15(), hashes.SHA1())
    with pytest.raises(SealError) as exc:
        seal_with(envelope(), [], identity.key, list(identity.chain), digest_method="urn:x-md5")
    assert str(exc.value) == "unsupported digest method urn:x-md5"


def test_token_cache_answers_per_chain_type_and_order_and_is_bounded(identity: SealingIdentity, pki: Path) -> None:
    """Tokens are cached per chain; another order, type or chain is never answered with another's token, and
    the cache holds at most 32 tokens."""
    from gateway.security.seal import _TOKENS, _token_b64
    chain = list(identity.chain)
    customs = load_pem_certificates(pki / "customs-chain.pem")
    root_first = base64.b64encode(pkipath.encode(chain)).decode()
    leaf_der = base64.b64encode(chain[0].public_bytes(serialization.Encoding.DER)).decode()
    for _ in range(2):                                              # the second round is answered from the cache
        assert _token_b64(chain, VT_PKIPATH, False) == root_first
        assert _token_b64(chain, VT_PKIPATH, True) == base64.b64encode(pkipath.encode(chain[::-1])).decode()
        assert _token_b64(chain, VT_X509V3, False) == leaf_der
        assert _token_b64(customs, VT_PKIPATH, False) == base64.b64encode(pkipath.encode(customs)).decode()
    _TOKENS.clear()
    for i in range(32):
        assert _token_b64(chain, f"urn:x-token-{i}", False) == leaf_der
    assert len(_TOKENS) == 32
    assert _token_b64(chain, VT_PKIPATH, False) == root_first      # the 33rd: the cache starts afresh
    assert len(_TOKENS) == 1


def test_wsu_ids_are_random_version_4_uuids() -> None:
    from gateway.security.seal import _uuid4_strs
    ids = _uuid4_strs(200)
    assert len(ids) == 200 and len(set(ids)) == 200
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 4 and u.variant == uuid.RFC_4122
    assert {s[19] for s in ids} == set("89ab")                    # every variant nibble occurs in 200 draws
    assert _uuid4_strs(0) == [] and len(_uuid4_strs(1)) == 1


def test_ancestor_prefixes_and_c14n_prefix_lists() -> None:
    root = etree.Element("{urn:r}root", nsmap={None: "urn:d", "a": "urn:a", "r": "urn:r"})
    mid = etree.SubElement(root, "{urn:a}mid", nsmap={"b": "urn:b"})
    leaf = etree.SubElement(mid, "{urn:d}leaf")
    assert ancestor_prefixes(root) == []
    assert ancestor_prefixes(mid) == ["#default", "r"]               # its own prefix "a" is not listed
    assert ancestor_prefixes(leaf) == ["a", "b", "r"]                # "#default" is its own (unprefixed)
    assert c14n(leaf) == b'<leaf xmlns="urn:d"></leaf>'
    assert c14n(leaf, ["#default"]) == b'<leaf xmlns="urn:d"></leaf>'
    assert c14n(leaf, ["#default", "b"]) == b'<leaf xmlns="urn:d" xmlns:b="urn:b"></leaf>'


# ------------------------------------------------------------------------------------------ the RSA primitive
@pytest.mark.parametrize("method, hash_alg", [
    (ALG_RSA_SHA256, hashes.SHA256()), (ALG_RSA_SHA384, hashes.SHA384()), (ALG_RSA_SHA512, hashes.SHA512()),
    (ALG_RSA_SHA1, hashes.SHA1()),
])
def test_rsa_signatures_are_pkcs1_v1_5_with_the_named_hash(identity: SealingIdentity, method: str,
                                                           hash_alg: hashes.HashAlgorithm) -> None:
    data = b"<ds:SignedInfo>...</ds:SignedInfo>"
    sig = rsa_backend.sign(identity.key, data, method, backend="cryptography")
    identity.certificate.public_key().verify(sig, data, padding.PKCS1v15(), hash_alg)  # type: ignore[call-arg]
    assert rsa_backend.verify(identity.certificate.public_key(), sig, data, method)
    assert not rsa_backend.verify(identity.certificate.public_key(), sig, data + b" ", method)


def test_rsa_defaults_and_refusals(identity: SealingIdentity, pki: Path) -> None:
    data = b"signed info"
    sig = rsa_backend.sign(identity.key, data)
    identity.certificate.public_key().verify(sig, data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]
    assert rsa_backend.verify(identity.certificate.public_key(), sig, data)
    other = load_pem_certificates(pki / "customs-seal.pem")[0].public_key()
    assert not rsa_backend.verify(other, sig, data)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert not rsa_backend.verify(ec_key.public_key(), sig, data)
    with pytest.raises(rsa_backend.UnsupportedAlgorithm) as exc:
        rsa_backend.sign(ec_key, data, backend="cryptography")
    assert str(exc.value) == "only RSA keys can seal (rsa-sha256)"
    for call in (lambda: rsa_backend.sign(identity.key, data, "urn:x-alg", backend="cryptography"),
                 lambda: rsa_backend.verify(identity.certificate.public_key(), sig, data, "urn:x-alg")):
        with pytest.raises(rsa_backend.UnsupportedAlgorithm) as exc:
            call()
        assert str(exc.value) == "unsupported signature method urn:x-alg"


def test_both_rsa_engines_give_the_same_bytes(identity: SealingIdentity) -> None:
    data = b"<SignedInfo/>" * 10
    ours = rsa_backend.sign(identity.key, data, backend="cryptography")
    assert rsa_backend.sign(identity.key, data, backend="xmlsec") == ours
    assert rsa_backend.sign(identity.key, data, ALG_RSA_SHA256, backend="xmlsec") == ours
    assert rsa_backend._xmlsec_key(identity.key) is rsa_backend._xmlsec_key(identity.key)   # imported once
    with pytest.raises(rsa_backend.UnsupportedAlgorithm) as exc:
        rsa_backend.sign(identity.key, data, ALG_RSA_SHA512, backend="xmlsec")
    assert str(exc.value) == f"the xmlsec backend signs rsa-sha256 only, not {ALG_RSA_SHA512}"


XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _xsi_envelope(prefix: str) -> etree._Element:
    """A freshly built envelope whose root also declares ``prefix`` (for the XML Schema instance namespace, as some
    SOAP stacks do), used nowhere."""
    built = envelope()
    env = etree.Element(S + "Envelope", nsmap={"env": NS_SOAP12, prefix: XSI})
    for child in list(built):
        env.append(child)
    return env


def test_a_built_envelope_lxml_would_canonicalize_wrongly_is_sealed_from_its_parsed_form(
        identity: SealingIdentity, pki: Path) -> None:
    """lxml drops an InclusiveNamespaces prefix declared on the root of a freshly built tree but used nowhere
    below the signed element: the seal then canonicalizes a re-parsed copy, returns that copy, and empties the
    caller's element. What is signed is what the receiver parses. (lxml does so only for a prefix it has not
    canonicalized before in the process, so each envelope gets a prefix of its own.)"""
    p = "xsi" + uuid.uuid4().hex[:8]
    env = _xsi_envelope(p)
    messaging_id = env.find(f"{S}Header/{{{NS_EB}}}Messaging").get(WSU_ID)
    sealed, refs = seal(env, [], identity)
    assert sealed is not env and len(env) == 0                       # the caller's tree was replaced
    received = wire(sealed)
    assert xmlsec_verifies(received, pki / "trader-seal.pem")
    assert [r.get("URI") for r in refs][0] == "#" + messaging_id
    assert [[i.get("PrefixList") for i in r[0][0]] for r in refs] == [[f"env {p}"], [p]]
    body = received.find(S + "Body")
    assert f'xmlns:{p}="{XSI}"'.encode() in excl_c14n(body, [p])
    assert refs[1].find(DS + "DigestValue").text == b64_sha256(excl_c14n(body, [p]))
    assert list(sealed.iter(DS + "Signature")) == [sealed.find(f"{S}Header")[0][1]]
    # the references returned are those of the sealed tree's SignedInfo
    assert refs == list(sealed.find(f".//{DS}SignedInfo").iterchildren(DS + "Reference"))
    # with an attachment, and with the Body left unsigned (builder knob)
    env = _xsi_envelope("xsi" + uuid.uuid4().hex[:8])
    sealed, refs = seal_with(env, [Attachment("a@x", "application/gzip", b"A")], identity.key,
                             list(identity.chain), sign_body=False)
    assert sealed is not env and [r.get("URI")[:4] for r in refs] == ["#_me", "cid:"]
    assert refs[1].find(DS + "DigestValue").text == b64_sha256(b"A")
    signed_info = wire(sealed).find(f".//{DS}SignedInfo")
    identity.certificate.public_key().verify(  # type: ignore[call-arg]
        base64.b64decode(sealed.find(f".//{DS}SignatureValue").text),
        excl_c14n(signed_info, ancestor_prefixes(signed_info)), padding.PKCS1v15(), hashes.SHA256())


def test_a_declaration_lxml_drops_from_the_apex_is_not_mistaken_for_one_further_down(
        identity: SealingIdentity, pki: Path) -> None:
    """lxml drops the unused root prefix from eb:Messaging's canonical form while an element inside it declares the
    same prefix: the exactness guard must look at the apex start tag only, or we would sign bytes the receiver
    does not compute (libxmlsec1 refuses them)."""
    p = "xsi" + uuid.uuid4().hex[:8]
    built = envelope()
    env = etree.Element(S + "Envelope", nsmap={"env": NS_SOAP12})
    header = etree.SubElement(env, S + "Header", nsmap={p: XSI})         # declared on the Header: not the Body's
    for child in list(built.find(S + "Header")):
        header.append(child)
    env.append(built.find(S + "Body"))
    user_message = env.find(f"{S}Header/{{{NS_EB}}}Messaging")[0]
    ext = etree.SubElement(user_message, "{urn:x-ext}Ext", nsmap={p: XSI, "x": "urn:x-ext"})
    ext.set("{%s}nil" % XSI, "true")
    sealed, refs = seal(env, [], identity)
    assert xmlsec_verifies(wire(sealed), pki / "trader-seal.pem")
    messaging = sealed.find(f"{S}Header/{{{NS_EB}}}Messaging")
    assert refs[0].find(DS + "DigestValue").text == b64_sha256(excl_c14n(messaging, ["env", p]))
