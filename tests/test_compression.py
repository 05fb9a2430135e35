"""gzip packing and bounded unpacking: round trips, determinism, damage, bombs and memory bounds."""

from __future__ import annotations

import gzip
import io
import struct
import time
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ebms.compression import (
    BadGzip, DecompressionError, GzipBomb, PayloadTooLarge, gunzip_limited, gzip_bytes, gzip_stream, is_gzip,
    iter_gunzip,
)

BIG = 1 << 40  # "no size limit" for tests that are about something else


def gunzip(data: bytes, **kw: int) -> bytes:
    return gunzip_limited(data, max_out=kw.get("max_out", BIG), max_ratio=kw.get("max_ratio", 10**9))


def zero_bomb(megabytes: int) -> bytes:
    """A valid-looking gzip of ``megabytes`` MiB of zeros (about 1 KiB per MiB), built without deflating it all.

    After a full flush deflate restarts from a clean state, so the compressed form of one MiB of zeros can be
    repeated. The trailer claims the right length; the CRC is never reached by a correct bomb check.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + piece * megabytes + b"\x03\x00"
            + struct.pack("<II", 0, (megabytes << 20) & 0xFFFFFFFF))


class Generated(io.RawIOBase):
    """A read-only stream of ``size`` bytes of XML-like text, produced on demand (never held whole in memory)."""

    _TEMPLATE = b"".join(b"<Item><Id>%d</Id><Weight>%d.5</Weight></Item>\n" % (i, i * 7 % 1000)
                         for i in range(25000))  # about 1 MiB, cycled

    def __init__(self, size: int) -> None:
        self.left = size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        t = self._TEMPLATE
        want = min(len(b), self.left, len(t) - self.pos)
        b[:want] = t[self.pos:self.pos + want]
        self.pos = (self.pos + want) % len(t)
        self.left -= want
        return want


class Sink(io.RawIOBase):
    """Counts and checksums what is written, keeps nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.chunks: list[int] = []

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = memoryview(b).nbytes
        self.count += n
        return n


# ---------------------------------------------------------------------------------------------- packing
def test_round_trip_and_interop_with_gzip_module() -> None:
    data = b"<IE3F32>" + b"x" * 5000 + "é€".encode() + b"</IE3F32>"
    z = gzip_bytes(data)
    assert is_gzip(z)
    assert gzip.decompress(z) == data            # standard tools read what we write
    assert gunzip(z) == data
    assert gunzip(gzip.compress(data)) == data   # and we read what they write
    named = io.BytesIO()
    with gzip.GzipFile(filename="payload.xml", mode="wb", fileobj=named, mtime=123456) as f:
        f.write(data)
    assert gunzip(named.getvalue()) == data      # header with FNAME and MTIME


def test_gzip_bytes_is_deterministic_without_name_or_time() -> None:
    data = b"same input, same bytes, same digest" * 100
    a, b = gzip_bytes(data), gzip_bytes(bytearray(data))
    assert a == b == gzip_bytes(memoryview(data))
    assert a[3] == 0            # FLG: no FNAME, no comment
    assert a[4:8] == b"\0\0\0\0"  # MTIME 0
    assert gzip_bytes(data, 1) != gzip_bytes(data, 9)
    assert gzip_bytes(b"") and gunzip(gzip_bytes(b"")) == b""
    with pytest.raises(ValueError):
        gzip_bytes(data, 10)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20000), level=st.integers(0, 9))
def test_property_round_trip(data: bytes, level: int) -> None:
    z = gzip_bytes(data, level)
    assert gunzip(z) == data
    assert gzip.decompress(z) == data


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700), out_chunk=st.integers(1, 900))
def test_property_stream_equals_bytes_and_chunks_bounded(data: bytes, chunk: int, out_chunk: int) -> None:
    dst = io.BytesIO()
    n_in, n_out = gzip_stream(io.BytesIO(data), dst, chunk=chunk)
    assert dst.getvalue() == gzip_bytes(data)
    assert (n_in, n_out) == (len(data), len(dst.getvalue()))
    pieces = list(iter_gunzip(dst.getvalue(), max_out=BIG, max_ratio=10**9, chunk=out_chunk))
    assert all(0 < len(p) <= out_chunk for p in pieces)
    assert b"".join(pieces) == data


def test_gzip_stream_max_in() -> None:
    data = b"a" * 1000
    n_in, _ = gzip_stream(io.BytesIO(data), io.BytesIO(), chunk=100, max_in=1000)  # exactly at the limit: fine
    assert n_in == 1000
    with pytest.raises(PayloadTooLarge) as ei:
        gzip_stream(io.BytesIO(data + b"b"), io.BytesIO(), chunk=100, max_in=1000)
    assert ei.value.limit == 1000 and "1000" in str(ei.value)


def test_gzip_stream_large_file_bounded_memory() -> None:
    size = 100 * 1000 * 1000  # ICD 4.2.6: 100 MB business payload
    src, sink = Generated(size), Sink()
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        n_in, n_out = gzip_stream(io.BufferedReader(src, 1 << 20), sink, chunk=1 << 20, level=1)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n_in == size and n_out == sink.count and 0 < n_out < size // 5
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while gzipping {size} bytes"
    del elapsed                      # speed is measured by `make bench`, never asserted in a test


# ---------------------------------------------------------------------------------------------- is_gzip
@pytest.mark.parametrize("data, expected", [
    (b"\x1f\x8b\x08\x00", True), (b"\x1f\x8b", True), (b"\x1f", False), (b"", False),
    (b"<?xml version='1.0'?>", False), (b"%PDF-1.7", False), (bytearray(b"\x1f\x8bzz"), True),
    (memoryview(b"\x1f\x8b\x08"), True),
])
def test_is_gzip(data: bytes, expected: bool) -> None:
    assert is_gzip(data) is expected


# ---------------------------------------------------------------------------------------------- members and garbage
def test_concatenated_members_are_accepted_and_capped_together() -> None:
    a, b = b"first member " * 50, b"second member " * 50
    z = gzip_bytes(a) + gzip_bytes(b) + gzip_bytes(b"")
    assert gunzip(z) == a + b
    assert gunzip(z) == gzip.decompress(z)
    with pytest.raises(GzipBomb):
        gunzip(z, max_out=len(a) + len(b) - 1)
    assert gunzip(z, max_out=len(a) + len(b)) == a + b


def test_members_across_input_slices() -> None:
    """A member boundary deep inside a large input (beyond the 64 KiB feeding slice) is found."""
    import os
    a, b = os.urandom(200_000), os.urandom(150_000)
    assert gunzip(gzip_bytes(a) + gzip_bytes(b)) == a + b


@pytest.mark.parametrize("tail", [b"garbage", b"\x00", b"\x00" * 512, b"\n", b"\x1f"])
def test_trailing_bytes_after_last_member_are_refused(tail: bytes) -> None:
    with pytest.raises(BadGzip):
        gunzip(gzip_bytes(b"payload" * 10) + tail)


# ---------------------------------------------------------------------------------------------- damage
def test_every_truncation_is_refused() -> None:
    z = gzip_bytes(b"The quick brown fox " * 20)
    for n in range(len(z)):
        with pytest.raises(BadGzip):
            gunzip(z[:n])


def test_bad_crc_length_data_and_header() -> None:
    z = bytearray(gzip_bytes(b"check me " * 100))
    bad_crc = bytes(z[:-8]) + bytes([z[-8] ^ 1]) + bytes(z[-7:])
    with pytest.raises(BadGzip, match="damaged"):
        gunzip(bad_crc)
    bad_len = bytes(z[:-4]) + bytes([z[-4] ^ 1]) + bytes(z[-3:])
    with pytest.raises(BadGzip):
        gunzip(bad_len)
    bad_method = bytes(z[:2]) + b"\x07" + bytes(z[3:])
    with pytest.raises(BadGzip):
        gunzip(bad_method)
    bad_data = bytes(z[:10]) + b"\xff" * 8 + bytes(z[18:])
    with pytest.raises(BadGzip):
        gunzip(bad_data)
    with pytest.raises(BadGzip):
        gunzip(b"")
    with pytest.raises(BadGzip, match="magic"):
        gunzip(b"<xml/>")
    assert issubclass(BadGzip, DecompressionError) and issubclass(DecompressionError, ValueError)


@settings(max_examples=80, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), pos=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_property_bit_flip_never_passes_silently(data: bytes, pos: int, bit: int) -> None:
    z = bytearray(gzip_bytes(data))
    pos = 10 + pos % (len(z) - 10)  # flip in deflate data or trailer (header flags may legitimately vary)
    z[pos] ^= 1 << bit
    try:
        out = gunzip(bytes(z))
    except DecompressionError:
        return
    assert out == data  # only possible when the flip hit a bit deflate ignores


# ---------------------------------------------------------------------------------------------- bombs
def test_gigabyte_bomb_rejected_quickly_with_bounded_memory() -> None:
    bomb = zero_bomb(1024)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 1_200_000
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(GzipBomb, match="limit of 33554432"):
            gunzip_limited(bomb, max_out=32 * 1024 * 1024, max_ratio=100_000)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del elapsed                      # speed: `make bench`; the bound that matters here is memory
    assert peak < 40 * 1024 * 1024  # the 32 MiB kept plus one chunk, never the gigabyte


def test_bomb_streamed_uses_one_chunk_of_memory() -> None:
    bomb = zero_bomb(1024)
    tracemalloc.start()
    try:
        seen = 0
        with pytest.raises(GzipBomb):
            for piece in iter_gunzip(bomb, max_out=200 * 1024 * 1024, max_ratio=100_000, chunk=1 << 20):
                seen += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 199 * 1024 * 1024 < seen <= 200 * 1024 * 1024
    assert peak < 4 * 1024 * 1024


def test_ratio_cap_stops_early() -> None:
    bomb = zero_bomb(1024)
    t0 = time.perf_counter()
    with pytest.raises(GzipBomb, match="times its compressed size"):
        gunzip_limited(bomb, max_out=BIG, max_ratio=10)  # cap = 10 x ~1 MiB
    assert time.perf_counter() - t0 < 1


def test_caps_are_exact() -> None:
    data = b"0123456789" * 1000
    z = gzip_bytes(data)
    assert gunzip_limited(z, max_out=len(data), max_ratio=10**6) == data
    with pytest.raises(GzipBomb):
        gunzip_limited(z, max_out=len(data) - 1, max_ratio=10**6)
    ratio_needed = -(-len(data) // len(z))
    assert gunzip_limited(z, max_out=BIG, max_ratio=ratio_needed) == data
    with pytest.raises(GzipBomb):
        gunzip_limited(z, max_out=BIG, max_ratio=ratio_needed - 1)
    assert gunzip_limited(gzip_bytes(b""), max_out=0, max_ratio=1) == b""


def test_large_payload_streamed_inspection_bounded_memory() -> None:
    dst = io.BytesIO()
    gzip_stream(io.BufferedReader(Generated(60_000_000), 1 << 20), dst, level=1)
    z = dst.getvalue()
    tracemalloc.start()
    try:
        total = sum(len(p) for p in iter_gunzip(z, max_out=BIG, max_ratio=1000, chunk=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 60_000_000
    assert peak < 4 * 1024 * 1024


def test_iter_gunzip_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        list(iter_gunzip(gzip_bytes(b"x"), max_out=10, max_ratio=0))
    with pytest.raises(ValueError):
        list(iter_gunzip(gzip_bytes(b"x"), max_out=10, max_ratio=10, chunk=0))
