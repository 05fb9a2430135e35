"""Is this business payload UTF-8, and free of a document type declaration? (ICD 4.2.5; issue 16)

ICD 4.2.5: "Only utf-8 is allowed. Even if the value is not set, the character set of the payload before
compression must be UTF-8". The gateway labels every business payload ``CharacterSet=utf-8``, so it must never
take in one that is not: a payload in UTF-16 / UTF-32 (with or without a byte order mark), one whose XML
declaration names another encoding (ISO-8859-1, windows-1252, even US-ASCII: the label would not be what the
document says of itself), and one whose bytes are not valid UTF-8 are refused, with a sentence that says how to
fix it. We refuse rather than transcode: the ERP's bytes are what the filing's digest, its MessageId and the
seal cover, and a silent conversion would make the evidence differ from what the ERP produced.

A DOCTYPE is refused on the parsed tree as well as on the bytes: a byte-level search misses one written in an
encoding the search does not expect (the BOM-less UTF-16 bypass of issue 16). Both checks are pure functions.
"""

from __future__ import annotations

import re

from lxml import etree

_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32 (big-endian byte order mark)"),
         (b"\xff\xfe\x00\x00", "UTF-32 (little-endian byte order mark)"),
         (b"\xfe\xff", "UTF-16 (big-endian byte order mark)"),
         (b"\xff\xfe", "UTF-16 (little-endian byte order mark)"))
_UTF8_BOM = b"\xef\xbb\xbf"
# The XML declaration (XML 1.0 2.8 / 4.3.3): only at the very start, after an optional UTF-8 BOM.
_DECL = re.compile(rb"<\?xml[ \t\r\n]+[^>]*?\?>")
_ENCODING = re.compile(rb"""encoding[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)')""")


class PayloadEncodingError(ValueError):
    """The payload is not UTF-8 or carries a DTD; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _fix(what: str) -> str:
    return (f"the payload is {what}; ICD 4.2.5 allows UTF-8 only: convert the file to UTF-8 (and its XML "
            "declaration to encoding=\"UTF-8\", or none) and submit it again")


def check_utf8(data: bytes) -> None:
    """Raises ``PayloadEncodingError`` unless ``data`` is a UTF-8 document that says nothing else of itself."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise PayloadEncodingError("not-utf-8", _fix(f"encoded in {name}"))
    head = data[3:] if data.startswith(_UTF8_BOM) else data
    # Without a BOM, UTF-16/32 shows as NUL bytes around the first '<' (XML 1.0 Appendix F).
    if head[:4] in (b"\x00\x00\x00<", b"<\x00\x00\x00") or head[:2] in (b"\x00<", b"<\x00"):
        raise PayloadEncodingError("not-utf-8", _fix("encoded in UTF-16 or UTF-32 without a byte order mark"))
    m = _DECL.match(head, 0, 512)
    if m:
        enc = _ENCODING.search(m.group(0))
        if enc:
            name = (enc.group(1) if enc.group(1) is not None else enc.group(2)).decode("ascii", "replace")
            if name.strip().lower() != "utf-8":
                raise PayloadEncodingError("not-utf-8", _fix(f"declared as encoding={name!r}"))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadEncodingError("not-utf-8", _fix(f"not valid UTF-8 (byte 0x{data[exc.start]:02X} at offset "
                                                     f"{exc.start})")) from None


def check_declared_encoding(root: etree._Element) -> None:
    """The parser's own reading of the declaration (however it is spaced or padded) must be UTF-8 as well."""
    declared = root.getroottree().docinfo.encoding or "UTF-8"
    if declared.strip().lower() != "utf-8":
        raise PayloadEncodingError("not-utf-8", _fix(f"declared as encoding={declared!r}"))


def check_no_doctype(root: etree._Element) -> None:
    """Raises ``PayloadEncodingError`` if the parsed document has a document type declaration of any kind."""
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None or info.system_url \
            or info.public_id:
        raise PayloadEncodingError("dtd", "the payload carries a document type declaration (DOCTYPE), which an "
                                          "ICS2 payload may not have: remove it")
