"""Hardened XML parsing: the only way any part of the gateway turns bytes into an lxml tree.

No DTD (a DOCTYPE is refused outright, so no entity can be declared, let alone expanded), no external
entities, no network, no XInclude, a size cap before parsing and a depth cap after. lxml >= 6.1.0 is
required (CVE-2026-41066); the parser options are nevertheless set explicitly rather than trusted to
defaults. A UTF-8 byte order mark is accepted (eDelivery 1.4.2.2).
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


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH,
              what: str = "XML document") -> etree._Element:
    """Parses ``data`` safely and returns the root element.

    Raises ``XmlRejected`` with reason ``too-large``, ``dtd``, ``malformed`` or ``too-deep``.
    """
    if len(data) > max_bytes:
        raise XmlRejected("too-large", f"{what} is {len(data)} bytes, over the limit of {max_bytes}")
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
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
    # libxml2 itself refuses nesting deeper than 256 levels unless huge_tree is set; walk only when it cannot help
    if huge or max_depth < 256:
        check_depth(root, max_depth)
    return root
