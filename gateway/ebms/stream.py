"""Packing and inspecting very large messages with memory below the payload size (ICD 4.2.6: up to 100 MB).

``Engine.user_message`` takes the payload as bytes and builds the body in memory: right for the 10 KB ENS of
everyday traffic, wrong for a 100 MB payload, which it would hold uncompressed, compressed and packed at once.
``pack_file`` streams instead: the payload file is gzipped chunk by chunk into a temporary file (never held
uncompressed), the compressed part is mapped read-only (``mmap``) so that its digest is taken by the same
``gateway.security.seal`` code as always without a heap copy, the envelope is sealed exactly as the engine seals
it, and ``mime.write_multipart`` copies the part into the message file chunk by chunk. The wire file is
byte-for-byte what ``Engine.user_message(...).wire_file()`` would give for the same ids and timestamp.

``inspect_stream`` maps the message file, opens (parses and verifies) it with ``Engine.open`` (which holds the
compressed message once, as the ICD sizes allow) and counts the uncompressed size with ``iter_gunzip`` without
materialising it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lxml import etree

from gateway.ebms import build, compression, mime
from gateway.ebms.constants import (
    AGREEMENT, AGREEMENT_TYPE, ATTACHMENT_MIME_TYPES, MIME_GZIP, MIME_XML, SERVICE_T2C, SERVICE_TYPE,
)
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import PartInfo, Party, UserMessage, new_message_id, utc_timestamp
from gateway.security.seal import Attachment, seal
from gateway.security.verify import references_digests


@dataclass(frozen=True)
class FileAttachment:
    """A binary attachment read from a file (PDF or JPEG, ICD 4.2.5); sent gzipped like the payload."""
    content_id: str
    mime_type: str
    path: Path


@dataclass(frozen=True)
class PackedFile:
    """What ``pack_file`` wrote: the same facts as an ``OutboundMessage`` except the body, which is on disk."""
    message_id: str
    content_type: str
    out_path: Path
    body_bytes: int               # the HTTP body (after the wire file's header block)
    payload_bytes: int            # uncompressed payload
    compressed_bytes: int         # all compressed parts together
    payload_sha256: str           # hex, of the uncompressed payload (computed while compressing)
    references: tuple[etree._Element, ...] = field(repr=False)
    user_message: UserMessage | None = None
    kind: str = "user-message"

    @property
    def reference_digests(self) -> dict[str, str]:
        return references_digests(self.references)


class _HashingReader:
    """Wraps a binary file: every block read is also fed to SHA-256 (the payload's own fingerprint)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        block = self.f.read(n)
        self.sha.update(block)
        return block


def _gzip_to_temp(src: Path, tmp_dir: Path, max_in: int, level: int) -> tuple[BinaryIO, int, int, str]:
    """Gzips ``src`` into an anonymous temporary file; returns (file, bytes in, bytes out, sha256 hex of input)."""
    tmp = tempfile.TemporaryFile(dir=tmp_dir)
    try:
        with open(src, "rb") as f:
            reader = _HashingReader(f)
            n_in, n_out = compression.gzip_stream(reader, tmp, max_in=max_in, level=level)  # type: ignore[arg-type]
        tmp.flush()
        tmp.seek(0)
        return tmp, n_in, n_out, reader.sha.hexdigest()
    except BaseException:
        tmp.close()
        raise


def _map(f: BinaryIO, size: int) -> mmap.mmap | bytes:
    if size == 0:
        return b""
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def pack_file(engine: Any, payload_path: Path | str, out_path: Path | str, *, action: str, to_party: Party,
              attachments: Sequence[FileAttachment] = (), ref_to_message_id: str | None = None,
              message_id: str | None = None, conversation_id: str = "1", level: int = 6,
              tmp_dir: Path | str | None = None) -> PackedFile:
    """Seals ``payload_path`` (XML) into the wire file ``out_path`` (MIME headers, blank line, body), streaming.

    Same checks and the same message as ``Engine.user_message``: the send limits of ``engine.limits``
    (EBMS:0103 when over), attachments only on the actions of ICD 3.1.11 and only PDF or JPEG. Peak memory is
    the compressed size of the parts (mapped, file-backed) plus one copy chunk, never the uncompressed payload.
    ``out_path`` is written through a temporary file in the same directory and renamed at the end, so a
    failure never leaves a partial message behind.
    """
    from gateway.ebms.engine import ATTACHMENT_ACTIONS

    payload_path, out_path = Path(payload_path), Path(out_path)
    limits = engine.limits
    message_id = message_id or new_message_id(engine.fqdn)
    size = payload_path.stat().st_size
    if size > limits.send_max_payload_bytes:
        raise EbmsFault("EBMS:0103", f"the payload is {size} bytes, over the send limit of "
                                     f"{limits.send_max_payload_bytes} (ICD 4.2.6: 100 MB uncompressed)")
    if attachments and action not in ATTACHMENT_ACTIONS:
        raise EbmsFault("EBMS:0103", f"{action} may not carry binary attachments (ICD 3.1.11: only "
                                     f"{', '.join(sorted(ATTACHMENT_ACTIONS))})")
    for att in attachments:
        if att.mime_type not in ATTACHMENT_MIME_TYPES:
            raise EbmsFault("EBMS:0103", f"attachment {att.content_id}: {att.mime_type} is not allowed "
                                         "(application/pdf or image/jpeg only, ICD 4.2.5)")
    work = Path(tmp_dir) if tmp_dir is not None else out_path.parent
    files: list[BinaryIO] = []
    maps: list[mmap.mmap | bytes] = []
    try:
        parts: list[tuple[str, str, str | None, Path]] = [
            (f"payload-{message_id}", MIME_XML, "utf-8", payload_path)]
        parts += [(a.content_id, a.mime_type, None, Path(a.path)) for a in attachments]
        infos: list[PartInfo] = []
        seal_atts: list[Attachment] = []
        total = 0
        payload_in, payload_sha = 0, ""
        for i, (cid, mime_type, charset, path) in enumerate(parts):
            f, n_in, n_out, sha = _gzip_to_temp(path, work, limits.send_max_payload_bytes, level)
            files.append(f)
            if i == 0:
                payload_in, payload_sha = n_in, sha
            total += n_out
            if total > limits.send_max_message_compressed_bytes:
                raise EbmsFault("EBMS:0103", f"the compressed parts total {total} bytes or more, over the send "
                                             f"limit of {limits.send_max_message_compressed_bytes} (ICD 4.2.6: 20 MB)")
            m = _map(f, n_out)
            maps.append(m)
            # For application/gzip the digest input is the raw octets: seal hashes the mapping in place.
            seal_atts.append(Attachment(cid, MIME_GZIP, m))  # type: ignore[arg-type]
            infos.append(PartInfo(href=mime.cid_uri(cid), mime_type=mime_type, charset=charset, compression=MIME_GZIP))
        um = UserMessage(message_id=message_id, timestamp=utc_timestamp(engine.clock()),
                         from_party=engine.own_party, to_party=to_party, service=SERVICE_T2C,
                         service_type=SERVICE_TYPE, action=action, agreement=AGREEMENT, agreement_type=AGREEMENT_TYPE,
                         conversation_id=conversation_id, part_infos=tuple(infos),
                         ref_to_message_id=ref_to_message_id, mpc=None)
        env, refs = seal(build.user_message_envelope(um), seal_atts, engine.identity)
        soap = build.serialize(env)
        for f in files:
            f.seek(0)
        streams = [(a.content_id, MIME_GZIP, f) for a, f in zip(seal_atts, files)]
        root_cid = f"root.{os.urandom(16).hex()}@ics2gw"
        partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
        for _attempt in range(3):
            boundary = f"MIMEBoundary_{os.urandom(16).hex()}"
            content_type = mime._content_type(boundary, root_cid)
            try:
                with open(partial, "wb") as out:
                    head = mime.write_message_file(content_type, b"")
                    out.write(head)
                    written_type = mime.write_multipart(out, soap, streams, boundary, root_content_id=root_cid)  # type: ignore[arg-type]
                    body_bytes = out.tell() - len(head)
                    out.flush()
                    os.fsync(out.fileno())
            except ValueError as exc:
                if "boundary occurs" not in str(exc):
                    raise
                for f in files:
                    f.seek(0)
                continue
            assert written_type == content_type
            os.replace(partial, out_path)
            break
        else:  # pragma: no cover - a 128-bit random boundary clashing three times
            raise RuntimeError("could not find a MIME boundary absent from the content")
        return PackedFile(message_id=message_id, content_type=content_type, out_path=out_path,
                          body_bytes=body_bytes, payload_bytes=payload_in, compressed_bytes=total,
                          payload_sha256=payload_sha, references=tuple(refs), user_message=um)
    finally:
        for m in maps:
            if isinstance(m, mmap.mmap):
                m.close()
        for f in files:
            f.close()
        try:
            partial_path = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
            if partial_path.exists():
                partial_path.unlink()
        except OSError:
            pass


@dataclass(frozen=True)
class InspectedFile:
    """What ``inspect_stream`` found: the opened (verified) message and the uncompressed size of each part."""
    message: Any                  # gateway.ebms.engine.InboundMessage
    content_type: str
    body_bytes: int
    uncompressed_bytes: tuple[int | None, ...]  # per payload, None when it was sent uncompressed


def inspect_stream(engine: Any, path: Path | str, *, sidecar: str | None = None, verify: bool = True) -> InspectedFile:
    """Opens the wire file ``path`` with ``engine`` and sizes its payloads without decompressing them into memory.

    The file is mapped, not read: the only heap copy of the message is the one ``Engine.open`` makes of each
    MIME part. Raises ``EbmsFault`` like ``Engine.open`` (EBMS:0303 for a payload that fails to decompress)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    try:
        data: Any = mm if mm is not None else b""
        head = bytes(data[:64 * 1024])
        content_type, rest = mime.read_message_file(head, sidecar=sidecar)
        offset = len(head) - len(rest)
        view = memoryview(data)[offset:] if mm is not None else memoryview(b"")
        try:
            msg = engine.open(content_type, view, verify=verify)
        finally:
            view.release()
        sizes: list[int | None] = []
        for p in msg.payloads:
            if not p.compressed:
                sizes.append(None)
                continue
            try:
                sizes.append(sum(len(c) for c in compression.iter_gunzip(
                    p.transmitted, max_out=engine.limits.recv_max_payload_bytes,
                    max_ratio=engine.limits.recv_max_compression_ratio)))
            except compression.DecompressionError as exc:
                raise EbmsFault("EBMS:0303", f"payload {p.content_id} cannot be decompressed: {exc}",
                                ref_to_message_id=msg.message_id) from None
        return InspectedFile(message=msg, content_type=content_type, body_bytes=size - offset,
                             uncompressed_bytes=tuple(sizes))
    finally:
        if mm is not None:
            mm.close()
