"""multipart/related packing and tolerant-but-strict unpacking, including the interop tamper variants."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ebms.compression import gzip_bytes
from gateway.ebms.mime import (
    MimeError, MimePart, pack, parse_header_value, read_message_file, unpack, write_message_file, write_multipart,
)

SOAP = (b'<?xml version="1.0" encoding="UTF-8"?><S12:Envelope xmlns:S12="http://www.w3.org/2003/05/soap-envelope">'
        b"<S12:Header/><S12:Body/></S12:Envelope>")
LIMITS = dict(max_parts=32, max_part_bytes=32 * 1024 * 1024)
TAMPER = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "interop", "tamper.py")


def load_tamper():
    spec = importlib.util.spec_from_file_location("tamper", TAMPER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sample() -> tuple[str, bytes, bytes]:
    payload = gzip_bytes(b"<IE3F32>" + b"data" * 300 + b"</IE3F32>")
    ctype, body = pack(SOAP, [("message", "application/gzip", payload)])
    return ctype, body, payload


def handmade(parts: list[bytes], *, boundary: str = "b1", eol: bytes = b"\r\n", preamble: bytes = b"",
             epilogue: bytes = b"", padding: bytes = b"") -> bytes:
    out = preamble
    for i, p in enumerate(parts):
        out += (eol if i or preamble else b"") + b"--" + boundary.encode() + padding + eol + p
    return out + eol + b"--" + boundary.encode() + b"--" + padding + eol + epilogue


def soap_part(cid: str = "root", ctype: bytes = b"application/soap+xml; charset=UTF-8", eol: bytes = b"\r\n") -> bytes:
    return b"Content-Type: " + ctype + eol + b"Content-ID: <" + cid.encode() + b">" + eol + eol + SOAP


def att_part(cid: str, content: bytes, eol: bytes = b"\r\n", extra: bytes = b"") -> bytes:
    return (b"Content-Type: application/gzip" + eol + b"Content-ID: <" + cid.encode() + b">" + eol + extra
            + eol + content)


# ---------------------------------------------------------------------------------------------- pack
def test_pack_layout() -> None:
    ctype, body = pack(SOAP, [("message", "application/gzip", b"\x1f\x8bDATA"),
                              MimePart({}, b"%PDF", "att1", "application/pdf")], boundary="BND")
    media, params = parse_header_value(ctype)
    assert media == "multipart/related"
    assert params["type"] == "application/soap+xml" and params["boundary"] == "BND"
    root = params["start"]
    assert root.startswith("<root.") and root.endswith("@ics2gw>")
    assert body.startswith(b"--BND\r\nContent-Type: application/soap+xml; charset=UTF-8\r\n"
                           b"Content-Transfer-Encoding: binary\r\nContent-ID: " + root.encode() + b"\r\n\r\n" + SOAP)
    assert (b"\r\n--BND\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: binary\r\n"
            b"Content-ID: <message>\r\n\r\n\x1f\x8bDATA\r\n--BND\r\n") in body
    assert body.endswith(b"%PDF\r\n--BND--\r\n")
    u = unpack(ctype, body, **LIMITS)
    assert u.soap.content == SOAP and u.soap.content_id == root[1:-1]
    assert [(a.content_id, a.media_type, a.content) for a in u.attachments] == [
        ("message", "application/gzip", b"\x1f\x8bDATA"), ("att1", "application/pdf", b"%PDF")]


def test_pack_random_boundary_avoids_content(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.ebms import mime
    seq = iter(["MIMEBoundary_clash", "MIMEBoundary_clash", "MIMEBoundary_free"])
    monkeypatch.setattr(mime, "_new_boundary", lambda: next(seq))
    ctype, body = pack(SOAP, [("a", "application/octet-stream", b"xx--MIMEBoundary_clash--yy")])
    assert parse_header_value(ctype)[1]["boundary"] == "MIMEBoundary_free"
    assert unpack(ctype, body, **LIMITS).attachments[0].content == b"xx--MIMEBoundary_clash--yy"


def test_pack_default_boundaries_differ_and_given_clash_is_refused() -> None:
    assert pack(SOAP, [])[0] != pack(SOAP, [])[0]
    with pytest.raises(ValueError, match="occurs"):
        pack(SOAP, [("a", "application/gzip", b"...BND...")], boundary="BND")
    with pytest.raises(ValueError):
        pack(SOAP, [], boundary="x" * 71)


@pytest.mark.parametrize("att", [
    [("a", "application/gzip", b"1"), ("a", "application/gzip", b"2")],
    [("<a>", "application/gzip", b"1")],
    [("a\r\nX-Injected: 1", "application/gzip", b"1")],
    [("a", "application/gzip\r\nX: y", b"1")],
    [("", "application/gzip", b"1")],
])
def test_pack_refuses_bad_ids_and_header_injection(att: list[tuple[str, str, bytes]]) -> None:
    with pytest.raises(ValueError):
        pack(SOAP, att)


cids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-@_", min_size=1, max_size=30)


@settings(max_examples=80, deadline=None)
@given(atts=st.lists(st.tuples(cids, st.sampled_from(["application/gzip", "application/pdf", "image/jpeg"]),
                               st.binary(max_size=3000)), max_size=5, unique_by=lambda t: t[0]),
       soap_tail=st.binary(max_size=200).filter(lambda b: b"--" not in b))
def test_property_pack_unpack_round_trip(atts: list[tuple[str, str, bytes]], soap_tail: bytes) -> None:
    soap = SOAP + b"<!--x-->" + soap_tail.replace(b"\r", b"").replace(b"\n", b"")
    ctype, body = pack(soap, atts)
    u = unpack(ctype, body, **LIMITS)
    assert u.soap.content == soap
    assert [(a.content_id, a.content_type, a.content) for a in u.attachments] == atts
    # the streaming writer produces the same message, whether content is bytes or a stream
    boundary = parse_header_value(ctype)[1]["boundary"]
    root = parse_header_value(ctype)[1]["start"][1:-1]
    dst = io.BytesIO()
    ctype2 = write_multipart(dst, soap, [(c, t, io.BytesIO(d)) for c, t, d in atts], boundary=boundary,
                             root_content_id=root, chunk=7)
    assert (ctype2, dst.getvalue()) == (ctype, body)


@settings(max_examples=60, deadline=None)
@given(content=st.binary(min_size=0, max_size=400), lf=st.booleans())
def test_property_binary_content_edges_survive(content: bytes, lf: bool) -> None:
    """Trailing CR / LF / '--' bytes of binary parts are kept, in CRLF and in LF framing."""
    eol = b"\n" if lf else b"\r\n"
    content = content.replace(b"--b1", b"")
    body = handmade([soap_part(eol=eol), att_part("p", content, eol=eol)], eol=eol)
    u = unpack('multipart/related; boundary=b1; start="<root>"', body, **LIMITS)
    assert u.attachments[0].content == content


def test_write_multipart_streams_and_detects_boundary_in_stream() -> None:
    data = os.urandom(3 * 1024 * 1024)
    dst = io.BytesIO()
    ctype = write_multipart(dst, SOAP, [("big", "application/gzip", io.BytesIO(data)),
                                        ("small", "application/pdf", b"%PDF")], chunk=64 * 1024)
    u = unpack(ctype, dst.getvalue(), **LIMITS)
    assert u.attachments[0].content == data and u.attachments[1].content == b"%PDF"
    # boundary split across two chunks of the stream
    evil = b"a" * 10 + b"XBOUNDARYX" + b"b" * 10
    with pytest.raises(ValueError, match="boundary"):
        write_multipart(io.BytesIO(), SOAP, [("e", "application/gzip", io.BytesIO(evil))], boundary="XBOUNDARYX",
                        chunk=14)


# ---------------------------------------------------------------------------------------------- tolerated variants
def test_tamper_variants_from_interop() -> None:
    """The packaging probes of /work/shared/interop/tamper.py: lf-mime, base64-payload, root-second."""
    if not os.path.exists(TAMPER):
        pytest.skip("tamper.py not available")
    t = load_tamper()
    ctype, body, payload = sample()
    b = t.boundary_of(ctype)
    lf = t.join_parts(t.split_parts(body, b), b, eol=b"\n")
    assert b"\r\n" not in lf.replace(SOAP, b"").replace(payload, b"")
    u = unpack(ctype, lf, **LIMITS)
    assert u.soap.content == SOAP and u.attachments[0].content == payload

    parts = t.split_parts(body, b)
    head, content = parts[1]
    parts[1] = (head.replace(b"Content-Transfer-Encoding: binary", b"Content-Transfer-Encoding: base64"),
                base64.encodebytes(content).replace(b"\n", b"\r\n").rstrip(b"\r\n"))
    u = unpack(ctype, t.join_parts(parts, b), **LIMITS)
    assert u.attachments[0].content == payload

    parts = t.split_parts(body, b)
    second = t.join_parts([parts[1], parts[0]], b)
    u = unpack(ctype, second, **LIMITS)
    assert u.soap.content == SOAP and [a.content_id for a in u.attachments] == ["message"]


def test_unquoted_params_and_name_case_and_start_without_brackets() -> None:
    body = handmade([att_part("pay", b"\x1f\x8bZ"), soap_part("soapcid")])
    for ctype in ['Multipart/Related; TYPE=application/soap+xml; BOUNDARY=b1; Start=soapcid',
                  'multipart/related;boundary="b1";start="<soapcid>";type="application/soap+xml"',
                  'multipart/related ; boundary = "b1" ; start = <soapcid>',
                  'multipart/related; start="<soapcid>"; boundary=b1; start-info="application/soap+xml"']:
        u = unpack(ctype, body, **LIMITS)
        assert u.soap.content_id == "soapcid" and u.attachments[0].content == b"\x1f\x8bZ", ctype


def test_text_xml_root_and_missing_start_means_first_part() -> None:
    body = handmade([soap_part("r", ctype=b"text/xml; charset=utf-8"), att_part("p", b"x")])
    u = unpack("multipart/related; type=text/xml; boundary=b1", body, **LIMITS)
    assert u.soap.media_type == "text/xml" and u.soap.content == SOAP


def test_preamble_epilogue_and_transport_padding() -> None:
    body = handmade([soap_part(), att_part("p", b"payload")], preamble=b"This is a MIME message.\r\n",
                    epilogue=b"epilogue text\r\n--b1\r\nignored", padding=b" \t ")
    u = unpack('multipart/related; boundary="b1"; start="<root>"', body, **LIMITS)
    assert u.soap.content == SOAP and u.attachments[0].content == b"payload"


def test_folded_headers_and_odd_header_spacing() -> None:
    part = (b"Content-Type: application/soap+xml;\r\n\tcharset=UTF-8;\r\n  action=\"x\"\r\n"
            b"content-id:<root>\r\nX-Empty:\r\n\r\n" + SOAP)
    body = handmade([part, att_part("p", b"x", extra=b"Content-Description:\r\n  folded\r\n")])
    u = unpack('multipart/related; boundary=b1; start="<root>"', body, **LIMITS)
    assert u.soap.content_type == 'application/soap+xml; charset=UTF-8; action="x"'
    assert u.soap.headers["x-empty"] == ""
    assert u.attachments[0].headers["content-description"] == "folded"


def test_quoted_printable_and_7bit() -> None:
    qp = binascii.b2a_qp(b"caf\xc3\xa9 = ok\r\n", istext=False)
    body = handmade([soap_part(), att_part("q", qp, extra=b"Content-Transfer-Encoding: quoted-printable\r\n"),
                     att_part("s", b"plain", extra=b"Content-Transfer-Encoding: 7BIT\r\n")])
    u = unpack("multipart/related; boundary=b1", body, **LIMITS)
    assert u.attachments[0].content == b"caf\xc3\xa9 = ok\r\n" and u.attachments[1].content == b"plain"


def test_bom_root_and_part_without_headers_and_boundary_lookalike() -> None:
    body = handmade([soap_part(), b"\r\nno headers at all", att_part("p", b"line\r\n--b1x is not a delimiter")])
    u = unpack("multipart/related; boundary=b1", body, **LIMITS)
    assert u.attachments[0].content == b"no headers at all" and u.attachments[0].content_id is None
    assert u.attachments[1].content == b"line\r\n--b1x is not a delimiter"
    bom = b"\xef\xbb\xbf" + SOAP
    assert unpack("application/soap+xml; charset=UTF-8", bom, **LIMITS).soap.content == bom


@pytest.mark.parametrize("ctype", ["application/soap+xml", 'application/soap+xml; charset="UTF-8"',
                                   "text/xml; charset=utf-8", "TEXT/XML"])
def test_non_multipart_soap(ctype: str) -> None:
    u = unpack(ctype, memoryview(SOAP), **LIMITS)
    assert u.soap.content == SOAP and u.attachments == [] and not u.multipart


def test_twenty_megabyte_body_unpacks_intact() -> None:
    payload = os.urandom(20 * 1024 * 1024)
    ctype, body = pack(SOAP, [("message", "application/gzip", payload)])
    t0 = time.perf_counter()
    u = unpack(ctype, memoryview(body), **LIMITS)
    elapsed = time.perf_counter() - t0
    assert u.attachments[0].content == payload
    del elapsed                      # speed: `make bench` (no timed assertions in tests)


# ---------------------------------------------------------------------------------------------- rejections
def reject(ctype: str, body: bytes, match: str, **kw: int) -> None:
    with pytest.raises(MimeError, match=match):
        unpack(ctype, body, **{**LIMITS, **kw})


def test_missing_boundary() -> None:
    reject("multipart/related; type=application/soap+xml", handmade([soap_part()]), "no boundary")


def test_boundary_not_in_body() -> None:
    reject("multipart/related; boundary=zz", handmade([soap_part()]), "no MIME delimiter")


def test_truncated_bodies() -> None:
    ctype, body, _ = sample()
    for cut in (len(body) - 3, len(body) - 9, len(body) // 2, 40):
        reject(ctype, body[:cut], "closing delimiter|no MIME delimiter|not followed")


def test_start_names_missing_part() -> None:
    reject('multipart/related; boundary=b1; start="<nope>"', handmade([soap_part()]), "<nope>")


def test_duplicate_content_ids() -> None:
    body = handmade([soap_part("root"), att_part("p", b"1"), att_part("p", b"2")])
    reject("multipart/related; boundary=b1", body, "used by parts 2 and 3")


def test_too_many_parts() -> None:
    body = handmade([soap_part()] + [att_part(f"p{i}", b"x") for i in range(5)])
    unpack("multipart/related; boundary=b1", body, max_parts=6, max_part_bytes=1000)
    reject("multipart/related; boundary=b1", body, "more than 5", max_parts=5)


def test_oversize_part_raw_and_after_decoding() -> None:
    body = handmade([soap_part(), att_part("p", b"x" * 1001)])
    reject("multipart/related; boundary=b1", body, "over the limit of 1000", max_part_bytes=1000)
    b64 = base64.b64encode(b"y" * 1001)
    body = handmade([soap_part(), att_part("p", b64, extra=b"Content-Transfer-Encoding: base64\r\n")])
    reject("multipart/related; boundary=b1", body, "after decoding", max_part_bytes=1000)
    reject("application/soap+xml", SOAP, "over the limit", max_part_bytes=10)


@pytest.mark.parametrize("root", [
    b"Content-Type: application/gzip\r\nContent-ID: <root>\r\n\r\n\x1f\x8b\x08",
    b"Content-Type: application/soap+xml\r\nContent-ID: <root>\r\n\r\nnot xml at all",
])
def test_root_not_xml(root: bytes) -> None:
    body = handmade([root, att_part("p", b"x")])
    reject('multipart/related; boundary=b1; start="<root>"', body, "not XML|not an XML")


def test_other_rejections() -> None:
    reject("application/octet-stream", SOAP, "neither multipart")
    reject("", SOAP, "neither multipart")
    reject("text/xml", b"hello", "not an XML document")
    reject("multipart/related; boundary=b1", b"--b1--\r\n", "no parts")
    reject("multipart/related; boundary=b1",
           handmade([soap_part(), att_part("p", b"x", extra=b"Content-Transfer-Encoding: x-uuencode\r\n")]),
           "unknown Content-Transfer-Encoding")
    reject("multipart/related; boundary=b1", handmade([b"Content-Type: text/xml\r\n" + SOAP]), "empty line")
    reject("multipart/related; boundary=b1", handmade([b"Bad header line\r\n\r\n" + SOAP]), "malformed header")
    reject("multipart/related; boundary=b1", handmade([b" folded first\r\n\r\n" + SOAP]), "continuation")


# ---------------------------------------------------------------------------------------------- wire files
def test_message_file_round_trip_and_variants() -> None:
    ctype, body, _ = sample()
    f = write_message_file(ctype, body)
    assert f.startswith(b"MIME-Version: 1.0\r\nContent-Type: multipart/related;")
    assert read_message_file(f) == (ctype, body)
    folded = b"MIME-Version: 1.0\nContent-Type: multipart/related;\n  boundary=\"x\"\n\n" + body
    assert read_message_file(folded) == ('multipart/related; boundary="x"', body)
    assert read_message_file(body, sidecar=f"Content-Type: {ctype}\n") == (ctype, body)
    assert read_message_file(SOAP, sidecar="application/soap+xml") == ("application/soap+xml", SOAP)
    assert read_message_file(f, sidecar="text/xml") == (ctype, body)  # the header block wins
    with pytest.raises(MimeError, match="no Content-Type"):
        read_message_file(body)
    with pytest.raises(MimeError):
        read_message_file(b"X-Other: 1\r\n\r\n" + body)
    with pytest.raises(ValueError):
        write_message_file("multipart/related\r\nX: 1", body)


def test_tamper_reads_our_files(tmp_path) -> None:
    """The interop tool reads what write_message_file writes (same on-disk contract)."""
    if not os.path.exists(TAMPER):
        pytest.skip("tamper.py not available")
    t = load_tamper()
    ctype, body, _ = sample()
    p = tmp_path / "m.mime"
    p.write_bytes(write_message_file(ctype, body))
    assert t.read_message(str(p)) == (ctype, body)


@pytest.mark.parametrize("value, expected", [
    ('multipart/related; boundary="a;b"; type=text/xml',
     ("multipart/related", {"boundary": "a;b", "type": "text/xml"})),
    ('text/xml;charset=UTF-8;', ("text/xml", {"charset": "UTF-8"})),
    (' A/B ; X="q\\"uote" ; y', ("a/b", {"x": 'q"uote', "y": ""})),
    ('a/b; x="unterminated', ("a/b", {"x": "unterminated"})),
    ('a/b; x=1; X=2', ("a/b", {"x": "1"})),
])
def test_parse_header_value(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_header_value(value) == expected


def _one_part(cte: str, content: bytes, max_part_bytes: int) -> bytes:
    """unpack() of a two-part message whose attachment has Content-Transfer-Encoding ``cte``."""
    body = (b"--b\r\nContent-Type: application/soap+xml\r\nContent-ID: <root>\r\n\r\n" + SOAP + b"\r\n"
            b"--b\r\nContent-Type: application/xml\r\nContent-ID: <a>\r\nContent-Transfer-Encoding: " + cte.encode() +
            b"\r\n\r\n" + content + b"\r\n--b--\r\n")
    msg = unpack('multipart/related; boundary="b"; type="application/soap+xml"', body, max_parts=4,
                 max_part_bytes=max(max_part_bytes, len(SOAP)))
    return msg.attachments[0].content


def test_identity_transfer_encodings_pass_bytes_through_and_the_size_limit_is_exact() -> None:
    """RFC 2045 6.2: 7bit, 8bit and binary are identity encodings; the part limit holds at its exact value."""
    n = len(SOAP)
    for cte in ("7bit", "8BIT", " binary ", ""):
        assert _one_part(cte, b"\xff" * n, n) == b"\xff" * n
    with pytest.raises(MimeError, match=f"MIME part 2 is {n + 1} bytes, over the limit of {n}"):
        _one_part("8bit", b"x" * (n + 1), n)


def test_encoded_parts_are_bounded_before_decoding_and_their_errors_named() -> None:
    """An encoded part may be up to 2 x the limit + 1024 bytes before decoding (line breaks, base64 overhead);
    one byte more is refused without decoding it. Undecodable content names the encoding and the part."""
    n = len(SOAP)
    fits = b"QUJD" + b"\n" * (2 * n + 1024 - 4)          # "ABC" wrapped in line breaks, exactly at the bound
    assert _one_part("base64", fits, n) == b"ABC"
    with pytest.raises(MimeError) as exc:
        _one_part("base64", fits + b"\n", n)
    assert str(exc.value) == f"MIME part 2 is over the limit of {n} bytes"
    with pytest.raises(MimeError) as exc:
        _one_part("base64", b"QUJDR", n)
    assert str(exc.value).startswith("MIME part 2: invalid base64 content (")


@pytest.mark.parametrize("nl", [b"\n", b"\r\n"])
def test_a_part_without_headers_starts_at_the_empty_line(nl: bytes) -> None:
    """RFC 2046 5.1.1: a body part may have no header fields (then it is text/plain); the content starts right
    after the empty line, with either line ending."""
    body = (b"--b" + nl + b"Content-Type: application/soap+xml" + nl + nl + SOAP + nl +
            b"--b" + nl + nl + b"hello" + nl + b"--b--" + nl)
    msg = unpack('multipart/related; boundary="b"', body, **LIMITS)
    (att,) = msg.attachments
    assert (att.content, att.headers, att.content_type, att.content_id) == (b"hello", {}, "text/plain", None)


def test_part_errors_name_the_part_by_number() -> None:
    body = (b"--b\r\nContent-Type: application/soap+xml\r\n\r\n" + SOAP + b"\r\n"
            b"--b\r\nno colon here\r\n\r\nx\r\n--b--\r\n")
    with pytest.raises(MimeError) as exc:
        unpack('multipart/related; boundary="b"', body, **LIMITS)
    assert str(exc.value) == "MIME part 2: malformed header line 'no colon here'"


def test_a_header_block_is_bounded_before_the_empty_line_is_searched_for() -> None:
    from gateway.ebms.mime import _MAX_HEADER_BLOCK
    long_headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 60) for i in range(_MAX_HEADER_BLOCK // 60 + 2))
    body = (b"--b\r\nContent-Type: application/soap+xml\r\n\r\n" + SOAP + b"\r\n"
            b"--b\r\n" + long_headers + b"\r\nx\r\n--b--\r\n")
    with pytest.raises(MimeError) as exc:
        unpack('multipart/related; boundary="b"', body, **LIMITS)
    assert str(exc.value) == f"MIME part 2: the header block is longer than {_MAX_HEADER_BLOCK} bytes"


@pytest.mark.parametrize("lead,xml", [(b"", True), (b"\xef\xbb\xbf", True), (b"\r\n \t", True), (b" " * 511, True),
                                      (b" " * 512, False), (b"\x0c", False), (b"X", False)])
def test_the_soap_part_must_start_like_an_xml_document(lead: bytes, xml: bool) -> None:
    """Only XML whitespace (space, tab, CR, LF) and a UTF-8 BOM may come before the first '<', which must lie in
    the first 512 bytes."""
    if xml:
        assert unpack("application/soap+xml", lead + SOAP, **LIMITS).soap.content == lead + SOAP
    else:
        with pytest.raises(MimeError, match="the SOAP message is not an XML document"):
            unpack("application/soap+xml", lead + SOAP, **LIMITS)


def test_a_root_part_declared_as_something_else_than_xml_is_refused() -> None:
    body = (b"--b\r\nContent-Type: application/octet-stream\r\nContent-ID: <root>\r\n\r\n" + SOAP +
            b"\r\n--b--\r\n")
    with pytest.raises(MimeError) as exc:
        unpack('multipart/related; boundary="b"', body, **LIMITS)
    assert str(exc.value) == ("the root part (part 1) has Content-Type 'application/octet-stream', not XML "
                              "(application/soap+xml or text/xml)")
    undeclared = b"--b\r\nContent-ID: <root>\r\n\r\n" + SOAP + b"\r\n--b--\r\n"   # sniffed instead
    assert unpack('multipart/related; boundary="b"', undeclared, **LIMITS).soap.content == SOAP


def test_single_part_soap_limits_headers_and_parameters() -> None:
    n = len(SOAP)
    msg = unpack("application/soap+xml; charset=UTF-8", SOAP, max_parts=1, max_part_bytes=n)   # exactly at the limit
    assert msg.soap.headers == {"content-type": "application/soap+xml; charset=UTF-8"}
    assert msg.content_type_params == {"charset": "UTF-8"} and msg.attachments == []
    with pytest.raises(MimeError, match=f"the SOAP message is {n} bytes, over the limit of {n - 1}"):
        unpack("application/soap+xml", SOAP, max_parts=1, max_part_bytes=n - 1)
    for ctype in ("", None):
        with pytest.raises(MimeError) as exc:
            unpack(ctype, SOAP, **LIMITS)  # type: ignore[arg-type]
        assert str(exc.value) == "Content-Type '(none)' is neither multipart/related nor SOAP XML"


@pytest.mark.parametrize("line", [b"NoColon", b"Bad Name: x", b":novalue", b"X" * 70])
def test_header_lines_must_be_a_token_a_colon_and_a_value(line: bytes) -> None:
    body = (b"--b\r\nContent-Type: application/soap+xml\r\n\r\n" + SOAP + b"\r\n"
            b"--b\r\n" + line + b"\r\n\r\nx\r\n--b--\r\n")
    with pytest.raises(MimeError) as exc:
        unpack('multipart/related; boundary="b"', body, **LIMITS)
    assert str(exc.value) == f"MIME part 2: malformed header line {line.decode()[:60]!r}"


def test_a_colon_in_a_header_value_belongs_to_the_value() -> None:
    body = (b"--b\r\nContent-Type: application/soap+xml\r\n\r\n" + SOAP + b"\r\n"
            b"--b\r\nContent-ID: <urn:part:1@x>\r\nContent-Type: application/xml\r\n\r\nx\r\n--b--\r\n")
    (att,) = unpack('multipart/related; boundary="b"', body, **LIMITS).attachments
    assert (att.content_id, att.headers["content-type"]) == ("urn:part:1@x", "application/xml")


ROOT_PART = b"Content-Type: application/soap+xml\r\n\r\n" + SOAP


def test_delimiters_count_only_at_the_start_of_a_line() -> None:
    """RFC 2046 5.1.1: a delimiter is CRLF + "--" + boundary. "--b" inside a line is content, in the preamble as in
    a part; a delimiter at the very start of the body needs no line break before it, nor the close one after it."""
    tricky = b"X--b\r\nContent-Type: text/plain\r\n\r\nnot the root\r\n"       # preamble that looks like a part
    body = tricky + b"--b\r\n" + ROOT_PART + b"\r\n--b\r\nContent-ID: <a>\r\n\r\nx--b y --b--\r\n--b--"
    msg = unpack('multipart/related; boundary="b"; type="application/soap+xml"', body, **LIMITS)
    assert msg.soap.content == SOAP and [a.content for a in msg.attachments] == [b"x--b y --b--"]
    assert msg.content_type_params == {"boundary": "b", "type": "application/soap+xml"}


def test_a_body_cut_after_a_delimiter_and_padding_is_refused_cleanly() -> None:
    for end in (b"--b", b"--b  ", b"--b \t", b"--b\r", b"--b \r"):
        with pytest.raises(MimeError) as exc:
            unpack('multipart/related; boundary="b"', b"--b\r\n" + ROOT_PART + b"\r\n" + end, **LIMITS)
        assert str(exc.value) == "the multipart body has no closing delimiter (truncated message?)"
    with pytest.raises(MimeError) as exc:
        unpack('multipart/related; boundary="b"', b"--b--\r\n", **LIMITS)
    assert str(exc.value) == "the multipart body has no parts"


def test_lf_framing_strips_only_the_lf_before_a_delimiter() -> None:
    body = (b"--b\nContent-Type: application/soap+xml\n\n" + SOAP + b"\n--b\nContent-ID: <a>\n\nabc\r\n--b--\n")
    (att,) = unpack('multipart/related; boundary="b"', body, **LIMITS).attachments
    assert att.content == b"abc\r"


def test_a_boundary_outside_latin_1_is_a_mime_error() -> None:
    with pytest.raises(MimeError):
        unpack('multipart/related; boundary="b\u20ac"', b"--b\r\n" + ROOT_PART + b"\r\n--b--\r\n", **LIMITS)


def test_crlf_framing_strips_a_bare_lf_before_a_delimiter_as_one_byte() -> None:
    """A CRLF-framed message whose part ends in a bare LF (sloppy peers): that LF is the delimiter's line break,
    the byte before it is content."""
    body = b"--b\r\n" + ROOT_PART + b"\r\n--b\r\nContent-ID: <a>\r\n\r\nabc\n--b--\r\n"
    (att,) = unpack('multipart/related; boundary="b"', body, **LIMITS).attachments
    assert att.content == b"abc"


def test_decoded_size_limit_is_exact_and_a_leading_semicolon_means_no_media_type() -> None:
    n = len(SOAP)
    assert _one_part("base64", base64.b64encode(b"x" * n), n) == b"x" * n
    with pytest.raises(MimeError) as exc:
        _one_part("base64", base64.b64encode(b"x" * (n + 1)), n)
    assert str(exc.value) == f"MIME part 2 is {n + 1} bytes after decoding, over the limit of {n}"
    assert parse_header_value("; a=1") == ("", {"a": "1"})


# ---------------------------------------------------------------------------------------------- 4th pass: packing, exact
def test_pack_writes_exactly_these_bytes() -> None:
    """The whole body and Content-Type of a pack, byte for byte (RFC 2046 framing, SwA start, binary parts)."""
    ctype, body = pack(SOAP, [("a@x", "application/gzip", b"\x1f\x8b"), MimePart({}, b"%PDF", "b@x", "application/pdf")],
                       boundary="Q-1", root_content_id="r@x")
    assert ctype == 'multipart/related; type="application/soap+xml"; boundary="Q-1"; start="<r@x>"'
    assert body == (b"--Q-1\r\nContent-Type: application/soap+xml; charset=UTF-8\r\nContent-Transfer-Encoding: binary"
                    b"\r\nContent-ID: <r@x>\r\n\r\n" + SOAP
                    + b"\r\n--Q-1\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: binary\r\n"
                      b"Content-ID: <a@x>\r\n\r\n\x1f\x8b"
                    + b"\r\n--Q-1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: binary\r\n"
                      b"Content-ID: <b@x>\r\n\r\n%PDF\r\n--Q-1--\r\n")
    dst = io.BytesIO()
    assert write_multipart(dst, SOAP, [("a@x", "application/gzip", io.BytesIO(b"\x1f\x8b")),
                                       ("b@x", "application/pdf", b"%PDF")], boundary="Q-1",
                           root_content_id="r@x") == ctype
    assert dst.getvalue() == body
    # Latin-1 header text is written as Latin-1 (one byte per character), never as UTF-8
    ctype, body = pack(SOAP, [("\xe9@x", "application/x-\xe9", b"1")], boundary="Q", root_content_id="\xe0@x")
    assert b"Content-ID: <\xe0@x>\r\n" in body and b"Content-Type: application/x-\xe9\r\n" in body
    assert b"Content-ID: <\xe9@x>\r\n" in body and ctype.endswith('start="<\xe0@x>"')


def test_default_boundary_and_root_content_id() -> None:
    import re
    for ctype, _ in (pack(SOAP, []), (write_multipart(io.BytesIO(), SOAP, []), b"")):
        _, params = parse_header_value(ctype)
        assert re.fullmatch(r"MIMEBoundary_[0-9a-f]{32}", params["boundary"]), params
        assert re.fullmatch(r"<root\.[0-9a-f]{32}@ics2gw>", params["start"]), params
    assert parse_header_value(write_multipart(io.BytesIO(), SOAP, []))[1]["boundary"] != \
        parse_header_value(write_multipart(io.BytesIO(), SOAP, []))[1]["boundary"]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_a_given_boundary_that_occurs_in_any_content_is_refused(kind: type) -> None:
    for atts in ([("a", "application/gzip", kind(b"..BND.."))], [("a", "application/gzip", kind(b"x")),
                                                                   ("b", "application/pdf", kind(b"xBNDx"))]):
        with pytest.raises(ValueError) as exc:
            pack(SOAP, atts, boundary="BND")  # type: ignore[arg-type]
        assert str(exc.value) == "boundary 'BND' occurs in the content"
        with pytest.raises(ValueError) as exc:
            write_multipart(io.BytesIO(), SOAP, atts, boundary="BND")  # type: ignore[arg-type]
        assert str(exc.value) == "boundary 'BND' occurs in the content"
    with pytest.raises(ValueError) as exc:
        pack(SOAP + b"BND", [], boundary="BND")
    assert str(exc.value) == "boundary 'BND' occurs in the content"
    # a random boundary is drawn again while it occurs in a bytearray / memoryview content
    from gateway.ebms import mime
    seq = iter(["MIMEBoundary_clash", "MIMEBoundary_free"])
    original = mime._new_boundary
    mime._new_boundary = lambda: next(seq)  # type: ignore[assignment]
    try:
        ctype = write_multipart(io.BytesIO(), SOAP, [("a", "application/gzip", kind(b"MIMEBoundary_clash"))])
    finally:
        mime._new_boundary = original  # type: ignore[assignment]
    assert parse_header_value(ctype)[1]["boundary"] == "MIMEBoundary_free"


@pytest.mark.parametrize("boundary,ok", [("x" * 70, True), ("x" * 71, False), ("", False), ("a b", True),
                                         ("a ", False), ("'()+_,-./:=?", True), ("a\"b", False), ("a;b", False)])
def test_a_given_boundary_must_be_an_rfc_2046_boundary(boundary: str, ok: bool) -> None:
    if ok:
        ctype, body = pack(SOAP, [], boundary=boundary)
        assert parse_header_value(ctype)[1]["boundary"] == boundary
        assert unpack(ctype, body, **LIMITS).soap.content == SOAP
        return
    with pytest.raises(ValueError) as exc:
        pack(SOAP, [], boundary=boundary)
    assert str(exc.value) == f"boundary {boundary!r} is not a valid MIME boundary (RFC 2046: 1-70 characters)"


@pytest.mark.parametrize("att,message", [
    ([("a", "application/gzip", b"1"), ("a", "application/gzip", b"2")], "Content-ID 'a' is used twice"),
    ([("r@x", "application/gzip", b"1")], "Content-ID 'r@x' is used twice"),
    ([("<a>", "application/gzip", b"1")], "Content-ID '<a>' must be given without angle brackets"),
    ([("<a", "application/gzip", b"1")], "Content-ID '<a' must be given without angle brackets"),
    ([("a>", "application/gzip", b"1")], "Content-ID 'a>' must be given without angle brackets"),
    ([("", "application/gzip", b"1")], "Content-ID '' must be given without angle brackets"),
    ([("a\r\nX-Injected: 1", "application/gzip", b"1")], "Content-ID 'a\\r\\nX-Injected: 1' contains control characters"),
    ([("a\nb", "application/gzip", b"1")], "Content-ID 'a\\nb' contains control characters"),
    ([("a\0b", "application/gzip", b"1")], "Content-ID 'a\\x00b' contains control characters"),
    ([("a\tb", "application/gzip", b"1")], "Content-ID 'a\\tb' contains control characters"),
    ([("a", "application/gzip\rX: y", b"1")], "Content-Type 'application/gzip\\rX: y' contains control characters"),
    ([("a", "application/gzip\x7f", b"1")], "Content-Type 'application/gzip\\x7f' contains control characters"),
    ([MimePart({}, b"1", None, "application/gzip")], "an attachment needs a Content-ID (eb:PartInfo/@href refers to it)"),
    ([MimePart({}, b"1", "", "application/gzip")], "an attachment needs a Content-ID (eb:PartInfo/@href refers to it)"),
])
def test_pack_refusals_say_what_is_wrong(att: list, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError) as exc:
        pack(SOAP, att, root_content_id="r@x")
    assert str(exc.value) == message
    if not isinstance(att[0], MimePart):
        with pytest.raises(ValueError) as exc:
            write_multipart(io.BytesIO(), SOAP, att, root_content_id="r@x")
        assert str(exc.value) == message


@pytest.mark.parametrize("boundary", ["Z", "ZY", "XBOUNDARYX"])
def test_write_multipart_finds_the_boundary_in_a_stream_at_every_offset_and_chunk_size(boundary: str) -> None:
    """Wherever the boundary falls against the copy chunks (inside one, split across two, at a chunk's start or
    end), the copy refuses it; content without it is copied intact with every chunk size."""
    needle = boundary.encode()
    for chunk in range(1, 2 * len(needle) + 3):
        for at in range(0, 2 * len(needle) + 2):
            evil = b"a" * at + needle + b"b" * 3
            with pytest.raises(ValueError) as exc:
                write_multipart(io.BytesIO(), SOAP, [("e@x", "application/gzip", io.BytesIO(evil))], boundary=boundary,
                                chunk=chunk)
            assert str(exc.value) == "the MIME boundary occurs in attachment 'e@x'; write the message again", (chunk, at)
        clean = (needle[:-1] + b"." + needle[1:]) * 3 + b"q"
        assert needle not in clean
        dst = io.BytesIO()
        ctype = write_multipart(dst, SOAP, [("c@x", "application/gzip", io.BytesIO(clean))], boundary=boundary,
                                chunk=chunk)
        assert unpack(ctype, dst.getvalue(), **LIMITS).attachments[0].content == clean, chunk


def test_the_boundary_is_looked_for_across_the_chunks_of_a_stream_only() -> None:
    """The end of one chunk and the start of the next make the boundary: refused; the same bytes spread over
    chunks with other bytes in between are not the boundary."""
    for chunk in (4, 5, 6, 7):
        data = b"xxBOUND" + b"." * chunk + b"ARYxx"
        dst = io.BytesIO()
        ctype = write_multipart(dst, SOAP, [("c@x", "application/gzip", io.BytesIO(data))], boundary="BOUNDARY",
                                chunk=chunk)
        assert unpack(ctype, dst.getvalue(), **LIMITS).attachments[0].content == data


# ---------------------------------------------------------------------------------------------- 4th pass: wire files
def test_message_file_exact_bytes_and_refusal() -> None:
    assert write_message_file("text/xml", b"<a/>") == b"MIME-Version: 1.0\r\nContent-Type: text/xml\r\n\r\n<a/>"
    assert write_message_file("text/x-\xe9", b"") == b"MIME-Version: 1.0\r\nContent-Type: text/x-\xe9\r\n\r\n"
    for bad in ("text/xml\nX: 1", "text/xml\0", "text/\x01xml"):
        with pytest.raises(ValueError) as exc:
            write_message_file(bad, b"")
        assert str(exc.value) == f"Content-Type {bad!r} contains control characters"


@pytest.mark.parametrize("data,sidecar,expected", [
    (b"Content-Type: text/xml\r\n\r\n<a/>", None, ("text/xml", b"<a/>")),
    (b"content-type: text/xml\n\n<a/>\n\n<b/>", None, ("text/xml", b"<a/>\n\n<b/>")),
    (b"X-1: a\r\nContent-Type: text/xml\r\n\r\n", None, ("text/xml", b"")),
    (b"<a/>", "  Content-Type:  text/xml ; charset=utf-8 \n", ("text/xml ; charset=utf-8", b"<a/>")),
    (b"<a/>", "CONTENT-TYPE: text/xml", ("text/xml", b"<a/>")),
    (b"<a/>", "multipart/related;\r\n\tboundary=b;\n  start=x\n", ("multipart/related; boundary=b; start=x", b"<a/>")),
    (b"Not a header\r\n\r\n<a/>", "text/xml", ("text/xml", b"Not a header\r\n\r\n<a/>")),
    (b"X-Other: 1\r\n\r\n<a/>", "text/xml", ("text/xml", b"X-Other: 1\r\n\r\n<a/>")),
    (b"Content-Type: text/xml\r\nbad line\r\n\r\n<a/>", "application/soap+xml",
     ("application/soap+xml", b"Content-Type: text/xml\r\nbad line\r\n\r\n<a/>")),
    (b"Content-Type: text/xml", "text/plain", ("text/plain", b"Content-Type: text/xml")),
    (b"Content-Type: \r\n\r\n<a/>", "text/plain", ("text/plain", b"Content-Type: \r\n\r\n<a/>")),
])
def test_message_files_as_the_interop_tools_write_them(data: bytes, sidecar: str | None,
                                                       expected: tuple[str, bytes]) -> None:
    assert read_message_file(data, sidecar) == expected


@pytest.mark.parametrize("data,sidecar", [(b"<a/>", None), (b"<a/>", ""), (b"<a/>", "Content-Type:  \n"),
                                          (b"<a/>", " \r\n "), (b"X-Other: 1\r\n\r\n<a/>", None)])
def test_a_message_file_without_content_type_is_refused(data: bytes, sidecar: str | None) -> None:
    with pytest.raises(MimeError) as exc:
        read_message_file(data, sidecar)
    assert str(exc.value) == "the message file has no Content-Type (no header block and no .ctype sidecar)"


def test_the_message_file_header_block_is_bounded() -> None:
    """The empty line ending the header block is looked for in the first 64 KiB only; later, the file is a bare
    body and needs a sidecar."""
    head = b"Content-Type: text/xml\r\nX-Pad: " + b"p" * (64 * 1024) + b"\r\n\r\n"
    assert read_message_file(head + b"<a/>", "text/plain") == ("text/plain", head + b"<a/>")
    near = b"Content-Type: text/xml\r\nX-Pad: " + b"p" * (64 * 1024 - 48) + b"\r\n\r\n"
    assert len(near) <= 64 * 1024
    assert read_message_file(near + b"<a/>", "text/plain") == ("text/xml", b"<a/>")


# ---------------------------------------------------------------------------------------------- 4th pass: header values
@pytest.mark.parametrize("value,expected", [
    ("", ("", {})),
    (" A/B ", ("a/b", {})),
    ("A/B;", ("a/b", {})),
    ("a/b;\t\r\n c=1", ("a/b", {"c": "1"})),
    ("a/b; c = 1 ", ("a/b", {"c": "1"})),
    ('a/b; c\t=\t"v"', ("a/b", {"c": "v"})),
    ('a/b; c="x" junk; d=2', ("a/b", {"c": "x", "d": "2"})),
    ('a/b ; c="x;y"z;w=1', ("a/b", {"c": "x;y", "w": "1"})),
    ('a/b; c="a\\\\b\\"q"', ("a/b", {"c": 'a\\b"q'})),
    ('a/b; c="ab\\', ("a/b", {"c": "ab\\"})),
    ('a/b; c="";d=1', ("a/b", {"c": "", "d": "1"})),
    ("a/b; c=", ("a/b", {"c": ""})),
    ("a/b; ;c=1", ("a/b", {"c": "1"})),
    ("a/b;c=1;;", ("a/b", {"c": "1"})),
    ("a/b;  ;  d  =  e f  ", ("a/b", {"d": "e f"})),
    ("a/b; flag; c=1", ("a/b", {"flag": "", "c": "1"})),
    ("a/b; flag", ("a/b", {"flag": ""})),
    ("a/b; FLAG; flag=1", ("a/b", {"flag": ""})),
    ("a/b; x=1; x", ("a/b", {"x": "1"})),
    ("a/b; =1", ("a/b", {})),
    ('Multipart/Related; Boundary="MIME_b"; START="<Root@x>"; type="application/soap+xml"',
     ("multipart/related", {"boundary": "MIME_b", "start": "<Root@x>", "type": "application/soap+xml"})),
])
def test_header_values_as_peers_spell_them(value: str, expected: tuple[str, dict[str, str]]) -> None:
    """RFC 2045 parameters: names in any case, quoted strings with escapes and ';', spaces and folding
    whitespace around them, empty and valueless parameters; the first of two same-named parameters wins."""
    assert parse_header_value(value) == expected


@pytest.mark.parametrize("start,cid", [("<root@x>", "root@x"), (" < root@x > ", "root@x"), ("root@x", "root@x")])
def test_start_and_content_id_angle_brackets_are_optional(start: str, cid: str) -> None:
    body = handmade([att_part("a", b"x"), soap_part(cid=" root@x ")])
    u = unpack(f'multipart/related; boundary=b1; start="{start}"', body, **LIMITS)
    assert (u.soap.content_id, [a.content_id for a in u.attachments]) == ("root@x", ["a"])
    with pytest.raises(MimeError) as exc:
        unpack('multipart/related; boundary=b1; start="<root@x"', body, **LIMITS)
    assert str(exc.value) == "the start parameter names <<root@x>, which is no part of the message"
    nameless = handmade([soap_part(), b"Content-Type: application/gzip\r\nContent-ID: <  >\r\n\r\nz"])
    assert unpack("multipart/related; boundary=b1", nameless, **LIMITS).attachments[0].content_id is None


# ---------------------------------------------------------------------------------------------- 4th pass: cid: URLs
@pytest.mark.parametrize("uri,cid", [("cid:a@b", "a@b"), ("CiD:a@b", "a@b"), ("cid:a%40b", "a@b"), ("cid:%7e%7E", "~~"),
                                     ("cid:a%2540b", "a%40b"), ("cid:%E2%82%AC@x", "\u20ac@x"), ("cid:a b", "a b")])
def test_cid_urls_name_this_content_id(uri: str, cid: str) -> None:
    from gateway.ebms.mime import cid_from_uri
    assert cid_from_uri(uri) == cid


@pytest.mark.parametrize("uri,message", [
    ("mid:a@b", "not a cid: URL"), ("ci:", "not a cid: URL"), ("", "not a cid: URL"), ("xcid:a", "not a cid: URL"),
    ("cid:", "the cid: URL names no Content-ID"),
    ("cid:%", "a % in a cid: URL must be followed by two hexadecimal digits (RFC 2392)"),
    ("cid:a%4g", "a % in a cid: URL must be followed by two hexadecimal digits (RFC 2392)"),
    ("cid:%41%", "a % in a cid: URL must be followed by two hexadecimal digits (RFC 2392)"),
    ("cid:%FF", "the %-escapes of the cid: URL are not UTF-8"),
    ("cid:%C3", "the %-escapes of the cid: URL are not UTF-8"),
    ("cid:a%0Ab", "the Content-ID named by the cid: URL contains control characters or angle brackets"),
    ("cid:a\tb", "the Content-ID named by the cid: URL contains control characters or angle brackets"),
    ("cid:<a>", "the Content-ID named by the cid: URL contains control characters or angle brackets"),
    ("cid:a%3E", "the Content-ID named by the cid: URL contains control characters or angle brackets"),
])
def test_cid_url_refusals_say_why(uri: str, message: str) -> None:
    from gateway.ebms.mime import cid_from_uri
    with pytest.raises(ValueError) as exc:
        cid_from_uri(uri)
    assert str(exc.value) == message


@pytest.mark.parametrize("cid,uri", [("a@b.c-d_e", "cid:a@b.c-d_e"), ("!$&'()*+,;=:/?~@", "cid:!$&'()*+,;=:/?~@"),
                                     ("a b%\u00e9@x", "cid:a%20b%25%C3%A9@x"), ('a"b#c[d]', "cid:a%22b%23c%5Bd%5D")])
def test_cid_uri_escapes_only_what_a_url_cannot_carry(cid: str, uri: str) -> None:
    from gateway.ebms.mime import cid_from_uri, cid_uri
    assert cid_uri(cid) == uri and cid_from_uri(uri) == cid


# ---------------------------------------------------------------------------------------------- 4th pass: streams
def test_write_multipart_writes_every_part_whatever_kind_of_content() -> None:
    """In-memory contents (bytes, bytearray, memoryview) and streams, mixed in any order: every part is written,
    in order, and the body is the one `pack` makes."""
    atts = [("a@x", "application/pdf", b"%PDF-1"), ("b@x", "application/gzip", b"\x1f\x8b-2"),
            ("c@x", "image/jpeg", b"\xff\xd8-3"), ("d@x", "application/pdf", b"%PDF-4")]
    expected = pack(SOAP, atts, boundary="QQ", root_content_id="r@x")
    mixed = [(atts[0][0], atts[0][1], bytearray(atts[0][2])), (atts[1][0], atts[1][1], io.BytesIO(atts[1][2])),
             (atts[2][0], atts[2][1], memoryview(atts[2][2])), (atts[3][0], atts[3][1], io.BytesIO(atts[3][2]))]
    dst = io.BytesIO()
    assert write_multipart(dst, SOAP, mixed, boundary="QQ", root_content_id="r@x", chunk=3) == expected[0]
    assert dst.getvalue() == expected[1]


@pytest.mark.parametrize("boundary,content", [("X", b"abcd"), ("XX-B", b"-Babc"), ("XXXX", b"abcdef"),
                                              ("XY", b"Yab")])
def test_the_stream_scan_finds_only_what_is_in_the_stream(boundary: str, content: bytes) -> None:
    """No false alarm: the bytes kept from the previous read are stream bytes only (a boundary made of
    letters the stream does not start or end with is not found)."""
    for chunk in (1, 2, 3, 64):
        dst = io.BytesIO()
        ctype = write_multipart(dst, SOAP, [("s@x", "application/gzip", io.BytesIO(content)),
                                            ("t@x", "application/gzip", io.BytesIO(content))], boundary=boundary,
                                chunk=chunk)
        assert [a.content for a in unpack(ctype, dst.getvalue(), **LIMITS).attachments] == [content, content]


def test_write_multipart_reads_a_stream_chunk_by_chunk() -> None:
    """The point of the streaming writer: an attachment stream is never read whole (messages too large to hold
    twice in memory), only `chunk` bytes at a time."""
    class Recording(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.sizes: list[int | None] = []

        def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
            self.sizes.append(size)
            return super().read(size)

    stream = Recording(b"z" * 10_000)
    write_multipart(io.BytesIO(), SOAP, [("s@x", "application/gzip", stream)], boundary="QQ", chunk=4096)
    assert stream.sizes == [4096, 4096, 4096, 4096]


@pytest.mark.parametrize("value,expected", [
    ('a/b; XY=1; x-z="X"; aXb=XYZ', ("a/b", {"xy": "1", "x-z": "X", "axb": "XYZ"})),
    ("a/b;X", ("a/b", {"x": ""})),
    ('a/b; q="X\\X"; r=X', ("a/b", {"q": "XX", "r": "X"})),
])
def test_header_values_with_letters_anywhere(value: str, expected: tuple[str, dict[str, str]]) -> None:
    """Parameter names and values that start with, or contain, any letter are read whole."""
    assert parse_header_value(value) == expected


def test_header_text_with_any_printable_character_is_written() -> None:
    """Only control characters are refused in a Content-ID or Content-Type: every printable one is written as is
    (capitals, quotes, spaces and Latin-1 letters included)."""
    text = "X-Id_1 \"q\" \xe9@EXAMPLE.X"
    ctype, body = pack(SOAP, [(text, "application/X-" + text, b"1")], boundary="QQ", root_content_id="r@x")
    assert f"Content-ID: <{text}>\r\nContent-Type".encode("latin-1") not in body  # the order is Type, CTE, ID
    assert f"Content-Type: application/X-{text}\r\n".encode("latin-1") in body
    assert f"Content-ID: <{text}>\r\n".encode("latin-1") in body
    assert write_message_file("application/X-" + text, b"") == (
        f"MIME-Version: 1.0\r\nContent-Type: application/X-{text}\r\n\r\n".encode("latin-1"))


@pytest.mark.parametrize("uri,cid", [("cid:X@Y", "X@Y"), ("cid:%58X", "XX"), ("cid:a%20X%22'", "a X\"'")])
def test_cid_urls_with_capitals_and_quotes_name_that_content_id(uri: str, cid: str) -> None:
    from gateway.ebms.mime import cid_from_uri, cid_uri
    assert cid_from_uri(uri) == cid and cid_from_uri(cid_uri(cid)) == cid


def test_an_escaped_quote_at_the_very_end_of_a_header_value_is_kept() -> None:
    """`c="x\\"` (cut after an escaped quote): the escape still applies, the value is `x"`."""
    assert parse_header_value('a/b; c="x\\"') == ("a/b", {"c": 'x"'})


def test_a_quoted_value_ending_in_a_semicolon_ends_at_its_closing_quote() -> None:
    """RFC 2045 quoted-string: a ';' inside the quotes is part of the value, also as its last character; the next
    parameter starts after the closing quote (no stray parameter made of the quote)."""
    assert parse_header_value('multipart/related; boundary="x;"; type="application/soap+xml"') == \
        ("multipart/related", {"boundary": "x;", "type": "application/soap+xml"})
    assert parse_header_value('a/b; p=";"; q=1') == ("a/b", {"p": ";", "q": "1"})
