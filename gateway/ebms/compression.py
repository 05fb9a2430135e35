"""AS4 payload compression (gzip, RFC 1952; eDelivery 1.4.3.1), bounded on the way in and out.

Why this module exists: compressed payloads arrive from the network, and a few kilobytes of gzip can expand
to gigabytes. Every decompression here is capped *while* it runs (``zlib.decompressobj(wbits=31)`` with
``max_length``), both in absolute size and in ratio to the compressed size, and never holds more than one
chunk of output beyond what the caller asked to keep. Compression is deterministic (mtime 0, no file name,
OS byte 255) so that the same payload always gives the same bytes, the same digest and the same signature.

Policy on what follows the first gzip member:
- further complete gzip *members* are accepted and decompressed (RFC 1952 section 2.2 defines a gzip file
  as a series of members; ``gzip -d`` and Python's ``gzip`` accept them); the size and ratio caps apply
  to the sum of all members;
- anything else after the last member (trailing garbage, zero padding) is refused as ``BadGzip``: the
  signature covers those bytes, but nothing would be delivered from them, so they can only hide something.

``is_gzip`` only looks at the magic bytes: a receiver MUST NOT reject an uncompressed payload even when the
P-Mode asks for compression (eDelivery 1.4.3.1), so callers check it before calling ``gunzip_limited``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
_IN_SLICE = 64 * 1024  # compressed bytes fed to zlib at a time: bounds the copy zlib makes of unconsumed input


class PayloadTooLarge(ValueError):
    """The input of a compression is over the caller's limit; ``limit`` is that limit in bytes."""

    def __init__(self, message: str, *, limit: int) -> None:
        self.limit = limit
        super().__init__(message)


class DecompressionError(ValueError):
    """The data cannot be decompressed within the limits; answered with EBMS:0303 DecompressionFailure."""


class GzipBomb(DecompressionError):
    """The output would exceed ``max_out`` or ``max_ratio`` times the compressed size."""


class BadGzip(DecompressionError):
    """The gzip data is damaged: bad header, corrupt deflate data, CRC or length mismatch, truncation, garbage."""


def is_gzip(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` starts with the gzip magic bytes 1f 8b (RFC 1952 section 2.3.1)."""
    return bytes(data[:2]) == GZIP_MAGIC


def _header(level: int) -> bytes:
    # ID1 ID2 CM=8 FLG=0 MTIME=0 XFL OS=255: no name, no time, so the output depends only on the input.
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return GZIP_MAGIC + b"\x08\x00" + b"\x00\x00\x00\x00" + bytes((xfl, 255))


def _check_level(level: int) -> None:
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 9:
        raise ValueError(f"compression level must be 0..9, not {level!r}")


def gzip_bytes(data: bytes | bytearray | memoryview, level: int = 6) -> bytes:
    """Gzips ``data`` deterministically (mtime 0, no file name): identical input gives identical bytes."""
    _check_level(level)
    c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = c.compress(data) + c.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, memoryview(data).nbytes & 0xFFFFFFFF)
    return _header(level) + body + trailer


def gzip_stream(src: BinaryIO, dst: BinaryIO, *, chunk: int = 1 << 20, max_in: int | None = None,
                level: int = 6) -> tuple[int, int]:
    """Gzips ``src`` into ``dst`` one chunk at a time; returns (bytes read, bytes written).

    Exists so that a 100 MB payload (ICD 4.2.6) is packed with memory bounded by ``chunk``. The output is
    byte-identical to ``gzip_bytes`` of the same data. Raises ``PayloadTooLarge`` as soon as more than
    ``max_in`` bytes have been read (``dst`` then holds a partial, unusable result).
    """
    _check_level(level)
    if chunk < 1:
        raise ValueError("chunk must be positive")
    c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = 0
    n_in = 0
    n_out = dst.write(_header(level)) or 0
    while True:
        block = src.read(chunk)
        if not block:
            break
        n_in += len(block)
        if max_in is not None and n_in > max_in:
            raise PayloadTooLarge(f"the payload is over the limit of {max_in} bytes", limit=max_in)
        crc = zlib.crc32(block, crc)
        out = c.compress(block)
        if out:
            n_out += dst.write(out) or 0
    out = c.flush() + struct.pack("<II", crc & 0xFFFFFFFF, n_in & 0xFFFFFFFF)
    n_out += dst.write(out) or 0
    return n_in, n_out


def iter_gunzip(data: bytes | bytearray | memoryview, *, max_out: int, max_ratio: int,
                chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yields the decompressed content of ``data`` in pieces of at most ``chunk`` bytes.

    Why streaming: inspecting or hashing a 100 MB payload must not need 100 MB of memory. The output is
    capped at ``min(max_out, max_ratio * len(data))`` *during* decompression: zlib is never asked for more
    than one byte past the cap, so a bomb costs at most the cap in CPU and one chunk in memory.
    Raises ``GzipBomb`` or ``BadGzip`` (both ``DecompressionError``); a consumer that stops early simply
    stops iterating.
    """
    if chunk < 1 or max_out < 0 or max_ratio < 1:
        raise ValueError("chunk and max_ratio must be positive, max_out not negative")
    view = memoryview(data).cast("B")
    size = len(view)
    if size == 0:
        raise BadGzip("the compressed data is empty")
    if not is_gzip(view):
        raise BadGzip("not gzip data (the magic bytes 1f 8b are missing)")
    limit = min(max_out, max_ratio * size)
    total = 0
    pos = 0
    members = 0
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        while True:
            if d.eof:
                members += 1
                rest = d.unused_data
                # unused_data holds at most one input slice; the remainder of the view follows it.
                if not rest and pos >= size:
                    return
                head = rest[:2] if len(rest) >= 2 else rest + bytes(view[pos:pos + 2 - len(rest)])
                if head != GZIP_MAGIC:
                    raise BadGzip(f"{size - pos + len(rest)} bytes of trailing data after gzip member {members}")
                d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                buf: bytes | memoryview = rest
            else:
                if pos >= size:
                    raise BadGzip("the gzip data is truncated (the stream ends before the end of the member)")
                buf = view[pos:pos + _IN_SLICE]
                pos += len(buf)
            # Feed this slice, draining output one bounded piece at a time.
            while True:
                want = min(chunk, limit - total + 1)
                out = d.decompress(buf, want)
                if out:
                    total += len(out)
                    if total > limit:
                        if total > max_out:
                            raise GzipBomb(f"the decompressed data exceeds the limit of {max_out} bytes")
                        raise GzipBomb(f"the decompressed data exceeds {max_ratio} times its compressed size "
                                       f"of {size} bytes")
                    yield out
                buf = d.unconsumed_tail
                if d.eof:
                    break
                if not buf and len(out) < want:
                    break
    except zlib.error as exc:
        raise BadGzip(f"the gzip data is damaged: {exc}") from None


def gunzip_limited(data: bytes | bytearray | memoryview, *, max_out: int, max_ratio: int) -> bytes:
    """Decompresses ``data`` completely, refusing bombs (``GzipBomb``) and damage (``BadGzip``) as it goes."""
    out = bytearray()
    for piece in iter_gunzip(data, max_out=max_out, max_ratio=max_ratio):
        out += piece
    return bytes(out)
