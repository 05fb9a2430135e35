"""SOAP-with-attachments packaging (multipart/related, RFC 2387 / SOAP 1.2 SwA) for AS4 messages.

Why not ``email.parser``: it is slow on 20 MB bodies, decodes and re-encodes binary content, and hides the
framing details a gateway must judge. This module scans with ``bytes.find``/compiled regexes over the body
(or a memoryview of it) and copies each part's content exactly once.

What ``unpack`` tolerates, because real AS4 stacks send it: quoted or unquoted parameters in any case,
CRLF or bare-LF framing, a preamble and an epilogue, transport padding (spaces, tabs) after a delimiter,
folded part headers, ``text/xml`` as well as ``application/soap+xml``, a ``start`` parameter with or without
angle brackets, the SOAP part in any position, and base64 / quoted-printable transfer encodings.
What it refuses (``MimeError``): a multipart type without boundary, a body with no delimiter or no closing
delimiter (truncation), a ``start`` naming no part, duplicate Content-IDs, more than ``max_parts`` parts, a
part over ``max_part_bytes``, a part whose header block never ends, an unknown transfer encoding, and a root
part that is not XML.

Framing rule: the line break *before* a delimiter belongs to the delimiter (RFC 2046 5.1.1). Whether that
line break is CRLF or LF is decided once, from the line that ends the first delimiter, so the last byte of
a binary part (which may well be 0x0D) is never eaten in an LF-framed message.
"""

from __future__ import annotations

import binascii
import re
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import quote, unquote_to_bytes

CRLF = b"\r\n"
SOAP12 = "application/soap+xml"
_XML_TYPES = {"application/soap+xml", "text/xml", "application/xml", "application/xop+xml"}
_MAX_HEADER_BLOCK = 64 * 1024
_COPY_CHUNK = 1 << 20
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HEADER_LINE = re.compile(rb"\r?\n")
_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BOUNDARY_OK = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


class MimeError(ValueError):
    """The MIME packaging cannot be accepted; the message says what is wrong and where."""


@dataclass
class MimePart:
    """One MIME part: lower-case header names, the content after transfer decoding, Content-ID without <>."""
    headers: dict[str, str]
    content: bytes
    content_id: str | None
    content_type: str

    @property
    def media_type(self) -> str:
        """``type/subtype`` in lower case, without parameters (``application/gzip``)."""
        return self.content_type.split(";", 1)[0].strip().lower()


@dataclass
class UnpackedMessage:
    """A received message: the root (SOAP) part, the other parts in transmitted order, the Content-Type params."""
    soap: MimePart
    attachments: list[MimePart]
    content_type_params: dict[str, str] = field(default_factory=dict)

    @property
    def multipart(self) -> bool:
        return bool(self.content_type_params.get("boundary"))


# ------------------------------------------------------------------------------------------------ header values
def parse_header_value(value: str) -> tuple[str, dict[str, str]]:
    """Splits ``type/sub; a=1; B="x;y"`` into (``type/sub`` lower-cased, {"a": "1", "b": "x;y"}).

    Parameter names are lower-cased; quoted strings may contain ``;`` and backslash escapes.
    """
    s = value.strip()
    i, n = 0, len(s)
    while i < n and s[i] != ";":
        i += 1
    main = s[:i].strip().lower()
    params: dict[str, str] = {}
    while i < n:
        i += 1  # skip ';'
        while i < n and s[i] in " \t\r\n":
            i += 1
        j = i
        while j < n and s[j] not in "=;":
            j += 1
        name = s[i:j].strip().lower()
        if j >= n or s[j] == ";":
            i = j
            if name:
                params.setdefault(name, "")
            continue
        j += 1  # skip '='
        while j < n and s[j] in " \t":
            j += 1
        if j < n and s[j] == '"':
            j += 1
            buf = []
            while j < n and s[j] != '"':
                if s[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(s[j])
                j += 1
            val = "".join(buf)
            j += 1  # closing quote (tolerated if missing)
            while j < n and s[j] != ";":
                j += 1
        else:
            k = j
            while k < n and s[k] != ";":
                k += 1
            val = s[j:k].strip()
            j = k
        if name and name not in params:
            params[name] = val
        i = j
    return main, params


def _strip_angle(value: str) -> str:
    v = value.strip()
    if v.startswith("<") and v.endswith(">"):
        v = v[1:-1].strip()
    return v


def _check_header_text(what: str, value: str) -> None:
    if any(c in value for c in "\r\n\0") or not value.isprintable():
        raise ValueError(f"{what} {value!r} contains control characters")


# ------------------------------------------------------------------------------------------------ packing
def _normalise_attachments(attachments: list[MimePart] | list[tuple[str, str, bytes]]
                           ) -> list[tuple[str, str, bytes]]:
    out = []
    for a in attachments:
        if isinstance(a, MimePart):
            if not a.content_id:
                raise ValueError("an attachment needs a Content-ID (eb:PartInfo/@href refers to it)")
            out.append((a.content_id, a.content_type, a.content))
        else:
            cid, ctype, content = a
            out.append((cid, ctype, content))
    return out


def _check_ids(root_cid: str, items: list[tuple[str, str, object]]) -> None:
    seen = {root_cid}
    for cid, ctype, _ in items:
        _check_header_text("Content-ID", cid)
        _check_header_text("Content-Type", ctype)
        if not cid or cid.startswith("<") or cid.endswith(">"):
            raise ValueError(f"Content-ID {cid!r} must be given without angle brackets")
        if cid in seen:
            raise ValueError(f"Content-ID {cid!r} is used twice")
        seen.add(cid)


def _content_type(boundary: str, root_cid: str) -> str:
    return f'multipart/related; type="{SOAP12}"; boundary="{boundary}"; start="<{root_cid}>"'


def _part_head(content_type: str, cid: str, first: bool, boundary: bytes) -> bytes:
    lead = b"" if first else CRLF
    return (lead + b"--" + boundary + CRLF
            + b"Content-Type: " + content_type.encode("latin-1") + CRLF
            + b"Content-Transfer-Encoding: binary" + CRLF
            + b"Content-ID: <" + cid.encode("latin-1") + b">" + CRLF + CRLF)


def _new_boundary() -> str:
    return f"MIMEBoundary_{uuid.uuid4().hex}"


def _pick_boundary(boundary: str | None, contents: list[bytes | bytearray | memoryview]) -> str:
    def clashes(b: str) -> bool:
        needle = b.encode("latin-1")
        return any(needle in bytes(c) if not isinstance(c, bytes) else needle in c for c in contents)

    if boundary is not None:
        if not _BOUNDARY_OK.match(boundary):
            raise ValueError(f"boundary {boundary!r} is not a valid MIME boundary (RFC 2046: 1-70 characters)")
        if clashes(boundary):
            raise ValueError(f"boundary {boundary!r} occurs in the content")
        return boundary
    while True:
        b = _new_boundary()
        if not clashes(b):
            return b


def pack(soap_xml: bytes, attachments: list[MimePart] | list[tuple[str, str, bytes]], *,
         boundary: str | None = None, root_content_id: str | None = None) -> tuple[str, bytes]:
    """Packs a SOAP envelope and its attachments as multipart/related; returns (Content-Type, body).

    The SOAP part comes first and is named by ``start``; every part is sent ``binary`` with CRLF framing.
    A random boundary is regenerated until it occurs in no content; a given one that occurs is refused.
    """
    items = _normalise_attachments(attachments)
    root_cid = root_content_id or f"root.{uuid.uuid4().hex}@ics2gw"
    _check_ids(root_cid, items)
    b = _pick_boundary(boundary, [soap_xml, *(c for _, _, c in items)])
    bb = b.encode("latin-1")
    chunks = [_part_head(f"{SOAP12}; charset=UTF-8", root_cid, True, bb), soap_xml]
    for cid, ctype, content in items:
        chunks += [_part_head(ctype, cid, False, bb), content]
    chunks.append(CRLF + b"--" + bb + b"--" + CRLF)
    return _content_type(b, root_cid), b"".join(chunks)


def write_multipart(dst: BinaryIO, soap_xml: bytes, attachments: list[tuple[str, str, BinaryIO | bytes]],
                    boundary: str | None = None, *, root_content_id: str | None = None,
                    chunk: int = _COPY_CHUNK) -> str:
    """Writes the same body as ``pack`` to ``dst``, copying attachment streams chunk by chunk; returns the Content-Type.

    For messages too large to hold twice in memory. Streams cannot be scanned for the boundary before they are
    written, so they are scanned while copied (a random 128-bit boundary practically never clashes); a clash
    raises ValueError and leaves ``dst`` incomplete, to be discarded and rewritten.
    """
    root_cid = root_content_id or f"root.{uuid.uuid4().hex}@ics2gw"
    _check_ids(root_cid, attachments)  # type: ignore[arg-type]
    in_memory = [soap_xml] + [c for _, _, c in attachments if isinstance(c, (bytes, bytearray, memoryview))]
    b = _pick_boundary(boundary, in_memory)
    bb = b.encode("latin-1")
    needle = bb
    dst.write(_part_head(f"{SOAP12}; charset=UTF-8", root_cid, True, bb))
    dst.write(soap_xml)
    for cid, ctype, content in attachments:
        dst.write(_part_head(ctype, cid, False, bb))
        if isinstance(content, (bytes, bytearray, memoryview)):
            dst.write(content)
            continue
        tail = b""
        while True:
            block = content.read(chunk)
            if not block:
                break
            if needle in tail + block[:len(needle)] or needle in block:
                raise ValueError(f"the MIME boundary occurs in attachment {cid!r}; write the message again")
            tail = (tail + block)[-(len(needle) - 1):] if len(needle) > 1 else b""
            dst.write(block)
    dst.write(CRLF + b"--" + bb + b"--" + CRLF)
    return _content_type(b, root_cid)


# ------------------------------------------------------------------------------------------------ unpacking
def _parse_headers(block: bytes, where: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    text = block.decode("latin-1")
    lines: list[str] = []
    for line in re.split(r"\r?\n", text):
        if not line:
            continue
        if line[0] in " \t":
            if not lines:
                raise MimeError(f"{where}: the header block starts with a continuation line")
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    for line in lines:
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or not _TOKEN_CHARS.match(name):
            raise MimeError(f"{where}: malformed header line {line[:60]!r}")
        headers.setdefault(name, value.strip())
    return headers


def _decode(cte: str, raw: memoryview, where: str, max_part_bytes: int) -> bytes:
    enc = cte.strip().lower() or "binary"
    if enc in ("binary", "8bit", "7bit"):
        if len(raw) > max_part_bytes:
            raise MimeError(f"{where} is {len(raw)} bytes, over the limit of {max_part_bytes}")
        return bytes(raw)
    if len(raw) > 2 * max_part_bytes + 1024:
        raise MimeError(f"{where} is over the limit of {max_part_bytes} bytes")
    try:
        if enc == "base64":
            out = binascii.a2b_base64(bytes(raw))
        elif enc == "quoted-printable":
            out = binascii.a2b_qp(bytes(raw))
        else:
            raise MimeError(f"{where}: unknown Content-Transfer-Encoding {cte!r}")
    except binascii.Error as exc:
        raise MimeError(f"{where}: invalid {enc} content ({exc})") from None
    if len(out) > max_part_bytes:
        raise MimeError(f"{where} is {len(out)} bytes after decoding, over the limit of {max_part_bytes}")
    return out


def _looks_like_xml(content: bytes) -> bool:
    head = content[:512]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head.lstrip(b" \t\r\n").startswith(b"<")


def _check_root(part: MimePart, where: str) -> None:
    mt = part.media_type
    declared = "content-type" in part.headers
    if declared and mt not in _XML_TYPES:
        raise MimeError(f"{where} has Content-Type {mt!r}, not XML (application/soap+xml or text/xml)")
    if not _looks_like_xml(part.content):
        raise MimeError(f"{where} is not an XML document")


def unpack(content_type: str, body: bytes | bytearray | memoryview, *, max_parts: int,
           max_part_bytes: int) -> UnpackedMessage:
    """Splits a received HTTP body into the SOAP root part and the attachments.

    A non-multipart ``application/soap+xml`` or ``text/xml`` body is the SOAP part alone (signals such as
    receipts travel that way). See the module docstring for what is tolerated and what raises ``MimeError``.
    """
    media, params = parse_header_value(content_type or "")
    view = memoryview(body).cast("B")
    if not media.startswith("multipart/"):
        if media not in _XML_TYPES:
            raise MimeError(f"Content-Type {media or '(none)'!r} is neither multipart/related nor SOAP XML")
        if len(view) > max_part_bytes:
            raise MimeError(f"the SOAP message is {len(view)} bytes, over the limit of {max_part_bytes}")
        part = MimePart(headers={"content-type": content_type.strip()}, content=bytes(view), content_id=None,
                        content_type=content_type.strip())
        _check_root(part, "the SOAP message")
        return UnpackedMessage(soap=part, attachments=[], content_type_params=params)

    boundary = params.get("boundary")
    if not boundary:
        raise MimeError(f"Content-Type {media} has no boundary parameter")
    bb = boundary.encode("latin-1", "replace")
    # A delimiter: "--boundary" at the start of a line, followed by "--" (close) or padding and a line end.
    delim = re.compile(b"--" + re.escape(bb))  # a pure literal: sre searches it fast, even in 20 MB
    parts: list[MimePart] = []
    pos = 0
    crlf_mode: bool | None = None
    start_of_part: int | None = None
    closed = False
    n = len(view)
    while True:
        m = delim.search(view, pos)
        if m is None:
            break
        if m.start() > 0 and view[m.start() - 1] != 0x0A:
            pos = m.start() + 1  # not at the start of a line: part of the content
            continue
        end = m.end()
        is_close = view[end:end + 2] == b"--"
        if not is_close:
            # transport padding, then the line end; otherwise "--boundary" was only a prefix of some text
            k = end
            while k < n and view[k] in (0x20, 0x09):
                k += 1
            if k < n and view[k] == 0x0A:
                line_end, crlf = k + 1, False
            elif k + 1 < n and view[k] == 0x0D and view[k + 1] == 0x0A:
                line_end, crlf = k + 2, True
            else:
                pos = m.start() + 1
                continue
        if start_of_part is not None:
            stop = m.start()
            # the line break before the delimiter belongs to it
            if crlf_mode and stop >= 2 and view[stop - 2] == 0x0D and view[stop - 1] == 0x0A:
                stop -= 2
            elif stop >= 1 and view[stop - 1] == 0x0A:
                stop -= 1
            if len(parts) >= max_parts:
                raise MimeError(f"the message has more than {max_parts} MIME parts")
            parts.append(_read_part(view, start_of_part, stop, len(parts) + 1, max_part_bytes))
        if is_close:
            closed = True
            break
        if crlf_mode is None:
            crlf_mode = crlf
        start_of_part = line_end
        pos = line_end

    if start_of_part is None and not closed:
        raise MimeError(f"the body contains no MIME delimiter for boundary {boundary!r}")
    if not closed:
        raise MimeError("the multipart body has no closing delimiter (truncated message?)")
    if not parts:
        raise MimeError("the multipart body has no parts")

    seen: dict[str, int] = {}
    for i, p in enumerate(parts):
        if p.content_id is not None:
            if p.content_id in seen:
                raise MimeError(f"Content-ID <{p.content_id}> is used by parts {seen[p.content_id] + 1} and {i + 1}")
            seen[p.content_id] = i

    start = params.get("start")
    if start:
        sid = _strip_angle(start)
        if sid not in seen:
            raise MimeError(f"the start parameter names <{sid}>, which is no part of the message")
        root_index = seen[sid]
    else:
        root_index = 0
    root = parts[root_index]
    _check_root(root, f"the root part (part {root_index + 1})")
    return UnpackedMessage(soap=root, attachments=[p for i, p in enumerate(parts) if i != root_index],
                           content_type_params=params)


def _read_part(view: memoryview, start: int, stop: int, number: int, max_part_bytes: int) -> MimePart:
    where = f"MIME part {number}"
    if view[start:start + 1] == b"\n":
        head_end, content_start = start, start + 1
    elif view[start:start + 2] == b"\r\n":
        head_end, content_start = start, start + 2
    else:
        window = min(stop, start + _MAX_HEADER_BLOCK)
        m = _BLANK_LINE.search(view, start, window)
        if m is None:
            if window < stop:
                raise MimeError(f"{where}: the header block is longer than {_MAX_HEADER_BLOCK} bytes")
            raise MimeError(f"{where}: the headers are not followed by an empty line")
        head_end, content_start = m.start(), m.end()
    headers = _parse_headers(bytes(view[start:head_end]), where)
    content = _decode(headers.get("content-transfer-encoding", ""), view[content_start:stop], where,
                      max_part_bytes)
    cid_raw = headers.get("content-id")
    cid = _strip_angle(cid_raw) if cid_raw else None
    if cid is not None:
        where = f"{where} <{cid}>"
    return MimePart(headers=headers, content=content, content_id=cid or None,
                    content_type=headers.get("content-type", "text/plain"))


# ------------------------------------------------------------------------------------------------ wire files
_HEADER_START = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:")


def read_message_file(data: bytes, sidecar: str | None = None) -> tuple[str, bytes]:
    """Reads the interop "wire file": (Content-Type, HTTP body).

    Either a header block (MIME-Version, Content-Type, possibly folded) then an empty line then the body,
    or a bare body whose Content-Type comes from the ``FILE.ctype`` sidecar text (``Content-Type: ...`` or
    just the value). The header block wins when both exist.
    """
    if _HEADER_START.match(data):
        m = _BLANK_LINE.search(data, 0, _MAX_HEADER_BLOCK)
        if m:
            try:
                headers = _parse_headers(data[:m.start()], "the message file header")
            except MimeError:
                headers = {}
            ctype = headers.get("content-type")
            if ctype:
                return ctype, data[m.end():]
    if sidecar is not None:
        v = sidecar.strip()
        if v.lower().startswith("content-type:"):
            v = v[len("content-type:"):].strip()
        v = re.sub(r"\r?\n[ \t]+", " ", v).strip()
        if v:
            return v, data
    raise MimeError("the message file has no Content-Type (no header block and no .ctype sidecar)")


def write_message_file(content_type: str, body: bytes) -> bytes:
    """The wire-file form of a message: ``MIME-Version: 1.0``, ``Content-Type``, an empty line, the body."""
    _check_header_text("Content-Type", content_type)
    return b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body


# ------------------------------------------------------------------------------------------------ cid: URLs
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


def cid_from_uri(uri: str) -> str:
    """The Content-ID (without angle brackets) that a ``cid:`` URL names, RFC 2392: the part after ``cid:``
    (scheme case-insensitive) with ``%hh`` escapes decoded as UTF-8.

    The one decoder for eb:PartInfo/@href and for ds:Reference/@URI, so that both name the same part for the
    same URL (``cid:a%40b`` and ``cid:a@b`` are the same part, and counted as one). Raises ValueError for
    another scheme, an empty id, a ``%`` that is not followed by two hex digits, escapes that are not UTF-8,
    and control characters or angle brackets in the result (no Content-ID header can carry them)."""
    if uri[:4].lower() != "cid:":
        raise ValueError("not a cid: URL")
    raw = uri[4:]
    if "%" in raw:
        if raw.count("%") != len(_PCT.findall(raw)):
            raise ValueError("a % in a cid: URL must be followed by two hexadecimal digits (RFC 2392)")
        try:
            decoded = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the %-escapes of the cid: URL are not UTF-8") from None
    else:
        decoded = raw
    if not decoded:
        raise ValueError("the cid: URL names no Content-ID")
    if any(c in "<>" or not c.isprintable() for c in decoded):
        raise ValueError("the Content-ID named by the cid: URL contains control characters or angle brackets")
    return decoded


def cid_uri(content_id: str) -> str:
    """The ``cid:`` URL of a Content-ID (RFC 2392): ``%`` and characters a URL cannot carry are %-escaped, so
    that ``cid_from_uri(cid_uri(x)) == x``; the usual ids (letters, digits, ``@ . - _``) are unchanged."""
    return "cid:" + quote(content_id, safe="@!$&'()*+,;=:/?~")
