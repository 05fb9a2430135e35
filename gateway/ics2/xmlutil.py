"""How do we walk a payload tree without caring about namespaces? Local-name helpers and XPath-like pointers."""

from __future__ import annotations

from collections.abc import Iterator

from lxml import etree

from gateway.xmlsafe import parse_xml

PAYLOAD_MAX_BYTES = 128 * 1024 * 1024
PAYLOAD_MAX_DEPTH = 64


def parse_payload(data: bytes) -> etree._Element:
    """Parses a business payload through the hardened parser (raises ``gateway.xmlsafe.XmlRejected``)."""
    return parse_xml(data, max_bytes=PAYLOAD_MAX_BYTES, max_depth=PAYLOAD_MAX_DEPTH, what="payload")


def local(el: etree._Element) -> str:
    """The local name of an element ("" for comments and processing instructions)."""
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def children(el: etree._Element, name: str | None = None) -> list[etree._Element]:
    """Element children of ``el`` (optionally only those with local name ``name``)."""
    out = []
    for c in el:
        if not isinstance(c.tag, str):
            continue
        if name is None or local(c) == name:
            out.append(c)
    return out


def child(el: etree._Element | None, name: str) -> etree._Element | None:
    """The first child with local name ``name``, or None."""
    if el is None:
        return None
    for c in el:
        if isinstance(c.tag, str) and local(c) == name:
            return c
    return None


def text(el: etree._Element | None) -> str | None:
    """The stripped text of ``el``; None when absent or empty."""
    if el is None or el.text is None:
        return None
    t = el.text.strip()
    return t or None


def child_text(el: etree._Element | None, name: str) -> str | None:
    return text(child(el, name))


def iter_local(root: etree._Element, name_lower: str) -> Iterator[etree._Element]:
    """Every descendant (or root) whose local name equals ``name_lower`` case-insensitively, in document order."""
    for el in root.iter():
        if isinstance(el.tag, str) and local(el).lower() == name_lower:
            yield el


def pointer(el: etree._Element) -> str:
    """An indexed XPath of local names, e.g. ``/CC315A[1]/GOOITEGDS[2]/PACGS2[1]`` (HMRC's location style)."""
    parts: list[str] = []
    cur: etree._Element | None = el
    while cur is not None:
        name = local(cur)
        parent = cur.getparent()
        if parent is None:
            parts.append(f"{name}[1]")
        else:
            idx = 1
            for sib in parent:
                if sib is cur:
                    break
                if isinstance(sib.tag, str) and local(sib) == name:
                    idx += 1
            parts.append(f"{name}[{idx}]")
        cur = parent
    return "/" + "/".join(reversed(parts))
