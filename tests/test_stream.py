"""Streaming pack/inspect of large payloads: same message as the engine builds, memory below the payload size."""

from __future__ import annotations

import datetime as dt
import random
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.config import Limits
from gateway.ebms import mime
from gateway.ebms.engine import Engine
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import OutboundPart
from gateway.ebms.stream import FileAttachment, inspect_stream, pack_file
from gateway.security.keys import load_identity_files
from gateway.security.trust import TrustStore
from gateway.security.verify import STRICT

FIXED = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # one instant for both paths, inside the PKI validity


def _engines(pki: Path, limits: Limits | None = None) -> tuple[Engine, Engine]:
    trader = Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"),
                    TrustStore.from_files([pki / "customs-root.pem", pki / "trader-root.pem"],
                                          [pki / "trader-int.crl.pem"], [pki / "customs-seal.pem"]),
                    party_id="NL123456789", fqdn="ap.trader.test", limits=limits, clock=lambda: FIXED)
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"],
                                           [pki / "trader-int.crl.pem"]),
                     party_id="sti-taxud", fqdn="sti.customs.test", role="Customs", policy=STRICT, limits=limits)
    return trader, customs


def _write_payload(path: Path, target: int, seed: int = 7) -> int:
    """An ENS-shaped XML file of about ``target`` bytes with low redundancy (random descriptions and masses)."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        n = f.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<IE3F32 xmlns="urn:wco:datamodel:eu:ics2:2">'
                    b"<LRN>NLSTREAM0001</LRN><consignmentHouseLevel>\n")
        i = 0
        while n < target:
            block = []
            for _ in range(500):
                i += 1
                block.append(f"<goodsItem><goodsItemNumber>{i}</goodsItemNumber><commodity><descriptionOfGoods>"
                             f"{rnd.randbytes(24).hex()}</descriptionOfGoods></commodity><weight><grossMass>"
                             f"{rnd.random() * 1000:.3f}</grossMass></weight></goodsItem>\n")
            n += f.write("".join(block).encode())
        n += f.write(b"</consignmentHouseLevel></IE3F32>\n")
    return n


def test_pack_file_equals_engine_message(pki: Path, tmp_path: Path) -> None:
    """For the same MessageId and clock, the streamed wire file carries the same envelope facts and digests."""
    trader, customs = _engines(pki)
    payload = tmp_path / "ens.xml"
    _write_payload(payload, 50_000)
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%stream test\n" * 50)
    packed = pack_file(trader, payload, tmp_path / "msg.mime", action="IE3F32", to_party=Engine.customs_party(),
                       attachments=[FileAttachment("invoice-1", "application/pdf", pdf)], message_id="m-1@ap.trader.test")
    ref = trader.user_message(action="IE3F32", payload=payload.read_bytes(), to_party=Engine.customs_party(),
                              attachments=[OutboundPart("invoice-1", "application/pdf", pdf.read_bytes())],
                              message_id="m-1@ap.trader.test")
    ctype, body = mime.read_message_file((tmp_path / "msg.mime").read_bytes())
    assert ctype == packed.content_type and len(body) == packed.body_bytes
    got = customs.open(ctype, body)
    want = customs.open(ref.content_type, ref.body)
    assert got.messaging.user_message == want.messaging.user_message
    assert [p.transmitted for p in got.payloads] == [p.transmitted for p in want.payloads]
    # the attachment digests are over the same compressed octets; Messaging and Body carry random wsu:Ids
    assert {u: d for u, d in packed.reference_digests.items() if u.startswith("cid:")} == \
        {u: d for u, d in ref.reference_digests.items() if u.startswith("cid:")}
    receipt = customs.receipt_for(got)
    trader.check_receipt(trader.open(receipt.content_type, receipt.body), packed)  # type: ignore[arg-type]
    inspected = inspect_stream(customs, tmp_path / "msg.mime")
    assert inspected.uncompressed_bytes == (payload.stat().st_size, pdf.stat().st_size)
    assert inspected.message.signature is not None


def test_pack_file_refuses_what_the_engine_refuses(pki: Path, tmp_path: Path) -> None:
    trader, _ = _engines(pki, replace(Limits.defaults(), send_max_payload_bytes=1000))
    payload = tmp_path / "big.xml"
    _write_payload(payload, 5000)
    with pytest.raises(EbmsFault) as exc:
        pack_file(trader, payload, tmp_path / "m.mime", action="IE3F32", to_party=Engine.customs_party())
    assert exc.value.code == "EBMS:0103" and not (tmp_path / "m.mime").exists()
    trader, _ = _engines(pki)
    with pytest.raises(EbmsFault):
        pack_file(trader, payload, tmp_path / "m.mime", action="IE3F10", to_party=Engine.customs_party(),
                  attachments=[FileAttachment("x", "application/pdf", payload)])
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.partial"))


def test_pack_and_inspect_20mb_with_heap_below_payload(pki: Path, tmp_path: Path) -> None:
    """~20 MB of low-redundancy XML: the Python heap never holds the uncompressed payload (tracemalloc)."""
    limits = replace(Limits.defaults(), send_max_message_compressed_bytes=64 << 20, recv_max_message_bytes=64 << 20)
    trader, customs = _engines(pki, limits)
    payload = tmp_path / "ens-20mb.xml"
    size = _write_payload(payload, 20_000_000)
    out = tmp_path / "big.mime"
    tracemalloc.start()
    try:
        packed = pack_file(trader, payload, out, action="IE3F32", to_party=Engine.customs_party())
        _, pack_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        inspected = inspect_stream(customs, out)
        _, inspect_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert packed.payload_bytes == size and inspected.uncompressed_bytes == (size,)
    assert inspected.message.signature is not None
    # pack: the compressed part is mapped, not copied onto the heap; a few MB of chunks at most
    assert pack_peak < 0.25 * size, pack_peak
    # inspect: Engine.open copies the compressed part once; never the uncompressed payload
    assert inspect_peak < packed.compressed_bytes * 1.5 + (4 << 20) < size, (inspect_peak, packed.compressed_bytes)
