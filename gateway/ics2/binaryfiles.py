"""Which binary files does an ICS2 payload declare, and do the files that travel with it match? (ICD 3.1.11, 4.2.5)

A payload names each attachment in a ``binaryFile`` group: ``identification`` (the link: it must equal the
attachment's ``eb:PartInfo/@href`` without ``cid:``, hence its MIME Content-ID), ``MIME`` (its type: only
``application/pdf`` and ``image/jpeg`` are allowed), ``filename`` and ``description`` (informative).

This module knows nothing about AS4 nor about where the files came from: the gateway's intake (spool folder,
HTTP API, any later adapter) and the customs simulator both call ``match`` with the declarations and the files
they hold, and get either the pairs to send or the list of what is wrong, each naming the identification.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from gateway.ics2.catalogue import lookup
from gateway.ics2.xmlutil import children, local, text

# ICD 4.2.5: "The allowed MIME types for attachments are application/pdf, image/jpeg".
ALLOWED_MIME_TYPES = ("application/pdf", "image/jpeg")
# What a client may call "no particular type": the payload's declaration then decides.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# An identification becomes a MIME Content-ID and a cid: URL (RFC 2392): printable ASCII without the characters
# that would need quoting or percent-encoding there ('%' included, so the href and the Content-ID compare equal).
_TAGS = ("{*}binaryFile", "{*}BinaryFile", "{*}binaryfile")
_IDENT_OK = re.compile(r"^[A-Za-z0-9!#$&'*+\-./=?^_`{|}~@]{1,200}$")


@dataclass(frozen=True)
class BinaryFile:
    """One ``binaryFile`` declaration of a payload, in document order (``index`` from 1)."""
    index: int
    identification: str | None
    mime_type: str | None
    filename: str | None
    description: str | None

    @property
    def pointer(self) -> str:
        return f"binaryFile[{self.index}]"


@dataclass(frozen=True)
class Supplied:
    """A file that travels with the payload: the name it was given (Content-ID, form field or file name), the
    type its carrier stated (None when it stated none), its bytes, and where it came from (for messages)."""
    name: str
    content_type: str | None
    data: bytes
    origin: str
    stem_match: bool = False   # a spool file may be named IDENT.pdf: its stem may match the identification


@dataclass(frozen=True)
class Matched:
    """An attachment ready to be packed: Content-ID = identification, the payload's MIME type, the bytes."""
    identification: str
    mime_type: str
    data: bytes
    declaration: BinaryFile
    origin: str


@dataclass(frozen=True)
class Problem:
    """What is wrong, machine-readable (``code``), with the identification or file concerned and a sentence."""
    code: str
    subject: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "subject": self.subject, "text": self.text}


def declared(root: etree._Element) -> list[BinaryFile]:
    """The ``binaryFile`` groups of a parsed payload (any namespace, any depth), in document order."""
    out = []
    # lxml's C-level tag filter ({*} = any namespace) instead of a Python walk over every element (10x faster on
    # an ordinary ENS); the spellings are the ICD's binaryFile and the BinaryFile of its prose
    for i, bf in enumerate(root.iter(*_TAGS), start=1):
        fields: dict[str, str | None] = {}
        for c in children(bf):
            name = local(c).lower()
            if name in ("identification", "mime", "mimetype", "filename", "description") and name not in fields:
                fields[name] = text(c)
        out.append(BinaryFile(i, fields.get("identification"), fields.get("mime") or fields.get("mimetype"),
                              fields.get("filename"), fields.get("description")))
    return out


def sniff(data: bytes) -> str | None:
    """The allowed type the bytes actually are: a PDF header within the first 1024 bytes (as PDF readers accept
    it), or the JPEG start-of-image marker; None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    return None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def match(action: str, declarations: Sequence[BinaryFile], supplied: Sequence[Supplied]) -> tuple[list[Matched],
                                                                                                   list[Problem]]:
    """Pairs each declaration with exactly one supplied file; returns the pairs and every problem found.

    Refused (each a ``Problem``): files for an action that may carry none (ICD 3.1.11); a declaration without an
    identification, a duplicated one, or one that cannot be a Content-ID; a declared file that is missing; a
    file no ``binaryFile`` names; two files for one identification; a declared or stated MIME type that is not
    PDF or JPEG, stated and declared types that differ, bytes that are not what the type says, an empty file.
    """
    problems: list[Problem] = []
    spec = lookup(action)
    allowed = bool(spec and spec.attachments_allowed)
    if (declarations or supplied) and not allowed:
        problems.append(Problem("attachments-not-allowed", action,
                                f"{action} may not carry binary attachments (ICD 3.1.11: only ENS filings and "
                                "amendments IE3F/IE3A 20, 23, 24, 26, 28, 32 and the answers IE3R02, IE3R03)"))
    by_ident: dict[str, BinaryFile] = {}
    for d in declarations:
        ident = d.identification
        if not ident:
            problems.append(Problem("no-identification", d.pointer,
                                    f"{d.pointer} has no identification, so no attachment can refer to it"))
        elif ident in by_ident:
            problems.append(Problem("duplicate-identification", ident,
                                    f"{d.pointer}: identification {ident!r} is declared twice (ICD 4.2.5: each "
                                    "attachment's href equals exactly one binaryFile/identification)"))
        elif not _IDENT_OK.match(ident):
            problems.append(Problem("bad-identification", ident,
                                    f"{d.pointer}: identification {ident!r} cannot be a MIME Content-ID (use 1-200 "
                                    "printable ASCII characters without spaces, quotes, '%', '<' or '>')"))
        else:
            by_ident[ident] = d
    chosen: dict[str, Supplied] = {}
    for s in supplied:
        ident = s.name if s.name in by_ident else None
        if ident is None and s.stem_match and "." in s.name:
            stem = s.name.rsplit(".", 1)[0]
            ident = stem if stem in by_ident else None
        if ident is None:
            known = ", ".join(sorted(by_ident)) or "none"
            problems.append(Problem("undeclared-attachment", s.name,
                                    f"{s.origin} ({s.name!r}) is named by no binaryFile/identification of the "
                                    f"payload (declared: {known}); nothing may travel that the payload does not "
                                    "refer to"))
            continue
        if ident in chosen:
            problems.append(Problem("duplicate-attachment", ident,
                                    f"{chosen[ident].origin} and {s.origin} are both attachment {ident!r}"))
            continue
        chosen[ident] = s
    matched: list[Matched] = []
    for ident, d in by_ident.items():
        s = chosen.get(ident)
        if s is None:
            problems.append(Problem("missing-attachment", ident,
                                    f"{d.pointer} declares attachment {ident!r}"
                                    + (f" ({d.filename})" if d.filename else "")
                                    + ", but no such file travels with the payload"))
            continue
        problem, mime = _type_of(d, s)
        if problem is not None:
            problems.append(problem)
            continue
        assert mime is not None
        matched.append(Matched(ident, mime, s.data, d, s.origin))
    return matched, problems


def _type_of(d: BinaryFile, s: Supplied) -> tuple[Problem | None, str | None]:
    ident = d.identification or s.name
    allowed = " or ".join(ALLOWED_MIME_TYPES)
    declared_type = media_type(d.mime_type) if d.mime_type else None
    stated = media_type(s.content_type)
    stated = None if stated in GENERIC_TYPES else stated
    if declared_type is not None and declared_type not in ALLOWED_MIME_TYPES:
        return Problem("mime-type-not-allowed", ident,
                       f"{d.pointer} declares MIME type {d.mime_type!r} for {ident!r}; ICD 4.2.5 allows only "
                       f"{allowed}"), None
    if stated is not None and stated not in ALLOWED_MIME_TYPES:
        return Problem("mime-type-not-allowed", ident,
                       f"{s.origin} is sent as {stated!r}; ICD 4.2.5 allows only {allowed}"), None
    if declared_type and stated and declared_type != stated:
        return Problem("mime-type-mismatch", ident,
                       f"{s.origin} is sent as {stated!r}, but {d.pointer} declares {declared_type!r}"), None
    if not s.data:
        return Problem("empty-attachment", ident, f"{s.origin} ({ident!r}) is empty"), None
    actual = sniff(s.data)
    mime = declared_type or stated or actual
    if mime is None:
        return Problem("mime-type-unknown", ident,
                       f"{s.origin} ({ident!r}) is neither a PDF nor a JPEG file, and {d.pointer} declares no "
                       "MIME type"), None
    if actual != mime:
        what = f"a {actual} file" if actual else "neither a PDF nor a JPEG file"
        return Problem("content-mismatch", ident,
                       f"{s.origin} ({ident!r}) is declared {mime} but its content is {what}"), None
    return None, mime
