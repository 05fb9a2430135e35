"""Hardened XML parsing: the only way any part of the gateway turns bytes into an lxml tree.

No DTD (a DOCTYPE is refused outright, so no entity can be declared, let alone expanded), no external
entities, no network, no XInclude, a size cap before parsing and a depth cap after. lxml >= 6.1.0 is
required (CVE-2026-41066); the parser options are nevertheless set explicitly rather than trusted to
defaults. A UTF-8 byte order mark is accepted (eDelivery 1.4.2.2).

UTF-8 only (ICD 4.2.5 for payloads; AS4 envelopes are UTF-8 too): a byte-level DOCTYPE scan means nothing for
a document in another encoding (in BOM-less UTF-16, ``<!DOCTYPE`` is interleaved with NUL bytes), so other
encodings are refused before parsing (BOM, NUL bytes in the first four octets, any other ``encoding=``), and
the parsed tree is checked for a DTD as well, whatever the bytes looked like.

``max_ns_declarations`` bounds the namespace declarations of a document, counted on the bytes (every
declaration is the literal ``xmlns`` in UTF-8): tens of thousands of them cost nothing to send, survive
exclusive canonicalization untouched in a signed message, and make every canonicalization slow.

``simple_text`` is how a value is read from an element whose content is text only: the whole text (CDATA
included), and ``None`` when the element has any child node. ``element.text`` stops at the first child node,
so ``<Action>IE3F<!---->32</Action>`` would read ``IE3F`` while its canonical (signed) form says ``IE3F32``.
"""

from __future__ import annotations

import re
import threading

from lxml import etree

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_DEPTH = 256
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
UTF8_BOM = b"\xef\xbb\xbf"
_XML_DECL = re.compile(rb"^<\?xml[ \t\r\n][^>]*?encoding[ \t\r\n]*=[ \t\r\n]*[\"']([A-Za-z0-9._-]*)[\"']")
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_XMLNS = b"xmlns"


class XmlRejected(ValueError):
    """The bytes are not acceptable XML; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _parser(huge: bool) -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, dtd_validation=False, load_dtd=False,
        remove_blank_text=False, remove_comments=False, remove_pis=False, collect_ids=False,
        huge_tree=huge, strip_cdata=False,
    )


# lxml parsers must not be shared between threads: one per thread.
_local = threading.local()


def _get_parser(huge: bool) -> etree.XMLParser:
    key = "huge" if huge else "normal"
    p = getattr(_local, key, None)
    if p is None:
        p = _parser(huge)
        setattr(_local, key, p)
    return p


def check_depth(root: etree._Element, max_depth: int) -> None:
    """Raises XmlRejected when any element is nested deeper than ``max_depth``."""
    # iterwalk keeps an explicit stack; no recursion, so a deep tree cannot blow the Python stack.
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth > max_depth:
                raise XmlRejected("too-deep", f"XML nesting deeper than {max_depth} levels")
        else:
            depth -= 1


def simple_text(el: etree._Element) -> str | None:
    """The whole text of a text-only element (``""`` when empty); ``None`` when it has any child node.

    lxml merges CDATA sections into ``text``; an element, comment, processing instruction or entity
    reference child makes ``text`` a prefix of the element's value, so the value is refused instead."""
    if len(el):
        return None
    return el.text or ""


def check_utf8(data: bytes | memoryview, what: str = "XML document") -> None:
    """Raises XmlRejected("encoding") unless ``data`` is (declared or defaulted) UTF-8, after an optional BOM."""
    head = bytes(data[:4])
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise XmlRejected("encoding", f"{what} is not UTF-8 (UTF-16 or UTF-32 bytes); only UTF-8 is accepted")
    if head.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    m = _XML_DECL.match(bytes(data[:256]))
    if m is not None and m.group(1).decode("ascii").lower() not in _UTF8_NAMES:
        raise XmlRejected("encoding", f"{what} declares encoding {m.group(1).decode('ascii')!r}; only UTF-8 is "
                                      "accepted")


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH,
              what: str = "XML document", max_ns_declarations: int | None = None) -> etree._Element:
    """Parses ``data`` safely and returns the root element.

    Raises ``XmlRejected`` with reason ``too-large``, ``encoding``, ``dtd``, ``too-many-namespaces``,
    ``malformed`` or ``too-deep``.
    """
    if len(data) > max_bytes:
        raise XmlRejected("too-large", f"{what} is {len(data)} bytes, over the limit of {max_bytes}")
    check_utf8(data, what)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    if max_ns_declarations is not None:
        declared = data.count(_XMLNS)
        if declared > max_ns_declarations:
            raise XmlRejected("too-many-namespaces", f"{what} holds {declared} namespace declarations (\"xmlns\"), "
                                                     f"over the limit of {max_ns_declarations}")
    # A DOCTYPE has no business in SOAP (SOAP 1.2 forbids it) nor in ICS2 payloads: refuse it before
    # libxml2 sees it, so entity tricks (billion laughs, XXE) never reach the parser.
    if _DOCTYPE.search(data) or _ENTITY.search(data):
        raise XmlRejected("dtd", f"{what} contains a DTD or entity declaration, which is not allowed")
    try:
        huge = len(data) > 10 * 1024 * 1024
        root = etree.fromstring(data, parser=_get_parser(huge))
    except etree.XMLSyntaxError as exc:
        if "Excessive depth" in str(exc):
            raise XmlRejected("too-deep", f"{what} is nested deeper than 256 levels") from None
        raise XmlRejected("malformed", f"{what} is not well-formed XML: {exc}") from None
    if root is None:
        raise XmlRejected("malformed", f"{what} is empty")
    docinfo = root.getroottree().docinfo
    # Whatever the bytes looked like: a DTD in the parsed tree is refused (the byte scan is only the fast path).
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlRejected("dtd", f"{what} contains a DTD, which is not allowed")
    if (docinfo.encoding or "UTF-8").lower() not in _UTF8_NAMES:
        raise XmlRejected("encoding", f"{what} is encoded as {docinfo.encoding}; only UTF-8 is accepted")
    # libxml2 itself refuses nesting deeper than 256 levels unless huge_tree is set; walk only when it cannot help
    if huge or max_depth < 256:
        check_depth(root, max_depth)
    return root
