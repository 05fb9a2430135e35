"""What an intake adapter hands the acceptor: one ENS payload and the binary files that travel with it.

Every intake path turns its input into a ``Submission`` here, so the conventions live in one place:

* **HTTP API** (and any later adapter that receives one body, e.g. a broker message): ``from_body`` takes the
  Content-Type and the body. A plain XML body is the ENS alone. A ``multipart/related`` or
  ``multipart/form-data`` body carries the ENS as its first part (or the part a ``multipart/related`` ``start``
  parameter names) and one part per attachment, named by its ``Content-ID`` (without ``<>``), or for
  form-data by its field ``name``: the name must be exactly the payload's ``binaryFile/identification``. A part's
  Content-Type, if it states one other than ``application/octet-stream``, must equal the declared MIME type.
* **Spool**: ``read_spool_unit`` takes a claimed ``*.xml`` file (the ENS alone) or a folder ``NAME.d/`` that the
  ERP filled elsewhere and renamed into the spool in one step: exactly one ``*.xml`` file in it is the ENS, and
  every other file is an attachment named ``IDENT`` or ``IDENT.ext`` after its ``binaryFile/identification``.
  Only regular files are read (no symbolic links, no sub-folders: either is refused with the reason).

Whether the files match what the payload declares is decided once, by the acceptor
(``gateway.ics2.binaryfiles.match``); this module only unwraps the carrier and refuses a malformed one.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.ebms import mime
from gateway.ics2.binaryfiles import Supplied
from gateway.pipeline.accept import IntakeRefused

SPOOL_FOLDER_SUFFIX = ".d"
# An ENS with its attachments: the business payload and "a number of binary attachment payloads" (ICD 4.2.6);
# the 20 MB compressed message limit bounds their number in practice, this bounds the parsing work.
MAX_SUBMISSION_PARTS = 256
DEFAULT_MAX_ATTACHMENT_BYTES = 100 * 1000 * 1000


@dataclass(frozen=True)
class Submission:
    payload: bytes
    attachments: tuple[Supplied, ...] = field(default=())


def from_body(content_type: str | None, body: bytes) -> Submission:
    """The ENS and its attachments from one request body (see the module docstring for the convention)."""
    media, _ = mime.parse_header_value(content_type or "")
    if not media.startswith("multipart/"):
        return Submission(body)
    return from_multipart(content_type or "", body)


def from_multipart(content_type: str, body: bytes) -> Submission:
    media, _ = mime.parse_header_value(content_type)
    if media not in ("multipart/related", "multipart/form-data"):
        raise IntakeRefused("multipart", f"Content-Type {media} is not accepted: send the ENS alone as XML, or "
                                         "multipart/related or multipart/form-data with the ENS as the first part",
                            status=415)
    try:
        unpacked = mime.unpack(content_type, body, max_parts=MAX_SUBMISSION_PARTS, max_part_bytes=len(body) + 1)
    except mime.MimeError as exc:
        raise IntakeRefused("multipart", f"the multipart body cannot be read: {exc} (the ENS must be the first "
                                         "part, as XML)", status=400) from None
    files = []
    for number, part in enumerate(unpacked.attachments, start=2):
        name = part.content_id
        if not name and media == "multipart/form-data":
            _, params = mime.parse_header_value(part.headers.get("content-disposition", ""))
            name = params.get("name")
        if not name:
            raise IntakeRefused("multipart", f"MIME part {number} has neither a Content-ID nor a form-data name: "
                                             "name each attachment by its binaryFile/identification", status=400)
        files.append(Supplied(name, part.headers.get("content-type"), part.content, f"MIME part {number}"))
    return Submission(unpacked.soap.content, tuple(files))


def is_spool_folder(path: Path) -> bool:
    """A spool entry that is an ENS-with-attachments folder (not followed if it is a symbolic link)."""
    return path.name.endswith(SPOOL_FOLDER_SUFFIX) and stat.S_ISDIR(os.lstat(path).st_mode)


def spool_folders(directory: Path) -> list[Path]:
    out = []
    for p in directory.glob("*" + SPOOL_FOLDER_SUFFIX):
        try:
            if is_spool_folder(p):
                out.append(p)
        except OSError:
            continue  # gone between listing and looking (claimed by another gateway)
    return out


def read_spool_unit(path: Path, *, max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES) -> Submission:
    """A claimed spool entry: an ``*.xml`` file alone, or a ``NAME.d/`` folder with the ENS and its attachments."""
    if not is_spool_folder(path):
        return Submission(path.read_bytes())
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    bad = [e.name for e in entries if not e.is_file(follow_symlinks=False)]
    if bad:
        raise IntakeRefused("spool-folder", f"{path.name.split('__', 1)[-1]}: {', '.join(bad)} is not a regular "
                                            "file (a spool folder holds the ENS and its attachments only; no "
                                            "sub-folders, no symbolic links)")
    if len(entries) > MAX_SUBMISSION_PARTS:
        raise IntakeRefused("spool-folder", f"{path.name.split('__', 1)[-1]} holds {len(entries)} files, more than "
                                            f"the {MAX_SUBMISSION_PARTS} an ENS with its attachments may have")
    xml = [e for e in entries if e.name.lower().endswith(".xml")]
    if len(xml) != 1:
        raise IntakeRefused("spool-folder", f"{path.name.split('__', 1)[-1]} holds {len(xml)} *.xml files: a spool "
                                            "folder holds exactly one ENS (*.xml) and its attachments")
    files, total = [], 0
    for e in entries:
        if e is xml[0]:
            continue
        total += e.stat(follow_symlinks=False).st_size
        if total > max_attachment_bytes:
            raise IntakeRefused("too-large", f"the attachments in {path.name.split('__', 1)[-1]} exceed "
                                             f"{max_attachment_bytes} bytes")
        files.append(Supplied(e.name, None, _read_regular(Path(e.path)), f"file {e.name}", stem_match=True))
    return Submission(_read_regular(Path(xml[0].path)), tuple(files))


def _read_regular(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IntakeRefused("spool-folder", f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def to_multipart(payload: bytes, files: Sequence[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    """The client side of ``from_body``: (Content-Type, body) of a ``multipart/related`` submission with the ENS
    first and each attachment as (identification, MIME type, bytes). Used by ``ics2gw submit --attach`` and the
    conformance runner; an ERP can send the same with any MIME library or ``curl -F``."""
    while True:
        boundary = f"ics2gw-{uuid.uuid4().hex}"
        if all(boundary.encode() not in content for content in (payload, *(f[2] for f in files))):
            break
    b = boundary.encode()
    out = [b"--" + b + b"\r\nContent-ID: <ens>\r\nContent-Type: application/xml\r\n\r\n" + payload]
    for ident, mime_type, data in files:
        if not ident or any(c in ident for c in "<>\r\n"):
            raise ValueError(f"attachment identification {ident!r} cannot be a Content-ID")
        out.append(b"\r\n--" + b + f"\r\nContent-ID: <{ident}>\r\nContent-Type: {mime_type}\r\n"
                   "Content-Transfer-Encoding: binary\r\n\r\n".encode("latin-1") + data)
    body = b"".join(out) + b"\r\n--" + b + b"--\r\n"
    return f'multipart/related; type="application/xml"; boundary="{boundary}"; start="<ens>"', body


def declared_files(payload: bytes, folders: Sequence[Path]) -> list[tuple[str, str, Path]]:
    """(identification, declared MIME type or application/octet-stream, path) of each file the payload declares,
    found by its declared ``filename`` (else its identification) in the first of ``folders`` that holds it: how the
    demo and the conformance runner pair a sample ENS with its sample attachments. Raises ``LookupError`` naming
    the file that is in none of them."""
    from gateway.ics2.binaryfiles import declared
    from gateway.ics2.xmlutil import parse_payload
    out = []
    for d in declared(parse_payload(payload)):
        name = d.filename or d.identification or ""
        path = next((f / name for f in folders if name and Path(name).name == name and (f / name).is_file()), None)
        if path is None or not d.identification:
            raise LookupError(f"attachment {d.identification!r} ({name}) is in none of "
                              f"{', '.join(str(f) for f in folders)}")
        out.append((d.identification, d.mime_type or "application/octet-stream", path))
    return out
