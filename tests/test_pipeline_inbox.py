"""Inbox delivery: injective file names, payloads staged to disk chunk by chunk, content faults passed through.

Real gzip, real files, real sealed messages; memory is measured with tracemalloc (allocation counts, not time).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from gateway.config import Limits
from gateway.ebms.engine import InboundPayload
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import PartInfo
from gateway.pipeline.delivery import INSPECT_MAX_BYTES, StagedPart, inbox_name, stage_payload, write_inbox


# ----------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("a,b", [("a/b@sti", "a_b@sti"), ("a b@sti", "a_b@sti"), ("x:1@sti", "x_1@sti"),
                                 ("é@sti", "_@sti"), ("a\\b@sti", "a/b@sti"), ("." * 3 + "x@sti", "...x@sti~")])
def test_message_ids_that_differ_only_in_replaced_characters_get_distinct_inbox_files(tmp_path: Path, a: str,
                                                                                        b: str) -> None:
    assert inbox_name(a) != inbox_name(b)
    write_inbox(tmp_path, a, [(".xml", {}, b"<a/>")], {"message_id": a})
    write_inbox(tmp_path, b, [(".xml", {}, b"<b/>")], {"message_id": b})
    metas = {json.loads(p.read_text())["message_id"]: p for p in tmp_path.glob("*.json")}
    assert set(metas) == {a, b}
    for mid, body in ((a, b"<a/>"), (b, b"<b/>")):
        doc = json.loads(metas[mid].read_text())
        assert (tmp_path / doc["parts"][0]["file"]).read_bytes() == body


def test_inbox_names_verbatim_when_safe_and_always_fit() -> None:
    assert inbox_name("5f6c1a2b-0d9e@sti.customs.test") == "5f6c1a2b-0d9e@sti.customs.test"
    long_a, long_b = "m" * 300 + "1@sti", "m" * 300 + "2@sti"
    assert inbox_name(long_a) != inbox_name(long_b)
    for mid in (long_a, "é" * 200, "/" * 400, ".hidden@sti", ".."):
        name = inbox_name(mid)
        assert len(os.fsencode(name + ".part32.xml")) <= 255 and "/" not in name and not name.startswith(".")
    # "~" never survives verbatim, so a verbatim name cannot equal a digested one
    assert "~" in inbox_name("a~b@sti") and inbox_name("a~b@sti") != "a_b@sti"


# ----------------------------------------------------------------------------------------------- staging
def _payload(data: bytes, *, compressed: bool = True) -> InboundPayload:
    info = PartInfo(href="cid:p1@x", mime_type="application/xml",
                    compression="application/gzip" if compressed else None, charset="UTF-8")
    return InboundPayload("p1@x", info, "application/octet-stream", gzip.compress(data, 6) if compressed else data)


def test_staging_a_large_payload_costs_a_chunk_not_its_size(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    limits = dataclasses.replace(Limits.defaults(), recv_max_compression_ratio=1_000_000)  # zeros: ~1000:1
    p = _payload(b"\0" * size)
    tracemalloc.start()
    try:
        staged = stage_payload(tmp_path, p, limits)
        _, peak_staged = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        whole = p.data(limits)   # the old path: the decompressed payload as one bytes object (and a bytearray)
        _, peak_whole = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert staged.size == size == os.path.getsize(staged.path) and len(whole) == size
    del whole
    assert peak_staged < 8 * 1024 * 1024, peak_staged
    assert peak_whole > size, peak_whole
    assert staged.size > INSPECT_MAX_BYTES
    with pytest.raises(ValueError, match="over the"):
        staged.read_for_inspection()  # never parsed whole: delivered, correlated by RefToMessageId
    out = tmp_path / "inbox"
    out.mkdir()
    write_inbox(out, "big@sti", [(".xml", {}, staged)], {"message_id": "big@sti"})
    assert os.path.getsize(out / "big@sti.part1.xml") == size and not staged.path.exists()


@pytest.mark.parametrize("mutation", ["trailing-bytes", "bomb", "truncated"])
def test_a_payload_that_cannot_be_decompressed_is_ebms_0303_and_leaves_no_file(tmp_path: Path, mutation: str) -> None:
    limits = dataclasses.replace(Limits.defaults(), recv_max_payload_bytes=1024 * 1024)
    good = gzip.compress(b"<a>" + b"x" * 1000 + b"</a>")
    data = {"trailing-bytes": good + b"JUNK", "bomb": gzip.compress(b"\0" * (2 * 1024 * 1024)),
            "truncated": good[:-9]}[mutation]
    p = InboundPayload("p1@x", PartInfo(href="cid:p1@x", mime_type="application/xml",
                                        compression="application/gzip"), "application/octet-stream", data)
    with pytest.raises(EbmsFault) as exc:
        stage_payload(tmp_path, p, limits)
    assert exc.value.code == "EBMS:0303"
    assert os.listdir(tmp_path) == []


def test_uncompressed_payload_is_staged_as_is(tmp_path: Path) -> None:
    staged = stage_payload(tmp_path, _payload(b"<a/>", compressed=False), Limits.defaults())
    assert isinstance(staged, StagedPart) and staged.read_for_inspection() == b"<a/>"
    staged.discard()
    staged.discard()  # idempotent
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------- processor
async def test_a_content_fault_raised_by_the_sink_is_answered_with_its_own_code(pki: Path) -> None:
    """EBMS:0303 from the sink (a payload that cannot be decompressed) must not become EBMS:0202 (resend):
    the TI would resend the same bytes for ever."""
    from gateway.config import load_gateway_config
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from gateway.transport.server import InboundProcessor, MemorySink
    from tests.conftest import REPO
    trader = Engine.from_config(load_gateway_config(REPO / "conf" / "gateway.toml"))
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"]),
                     party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")
    sink = MemorySink()
    proc = InboundProcessor(trader, sink, environment="conformance")
    msg = customs.user_message(action="IE3R01", payload=b"<IE3R01/>", service=SERVICE_C2T,
                               to_party=Engine.trader_party("NL123456789"))
    sink.fail_with = EbmsFault("EBMS:0303", "payload cannot be decompressed: trailing bytes")
    answer = await proc.process(msg.content_type, msg.body)
    assert answer.kind == "error" and answer.error_code == "EBMS:0303"
    sink.fail_with = OSError("disk full")
    answer = await proc.process(msg.content_type, msg.body)
    assert answer.kind == "error" and answer.error_code == "EBMS:0202"


async def test_inbound_storage_faults_alert_once_per_episode(pki: Path) -> None:
    """A full inbox disk answers EBMS:0202 (the TI resends later) and raises one storage alert, not one per
    message; a delivery that works again ends the episode; other sink errors are not storage alerts."""
    import errno
    from gateway.config import load_gateway_config
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.ebms.engine import Engine
    from gateway.pipeline.storage import StorageWatch
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from gateway.transport.server import InboundProcessor, MemorySink
    from tests.conftest import REPO
    trader = Engine.from_config(load_gateway_config(REPO / "conf" / "gateway.toml"))
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"]),
                     party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")
    sink = MemorySink()
    proc = InboundProcessor(trader, sink, environment="conformance")
    alerts: list[dict[str, str]] = []
    proc.sink_watch = StorageWatch(lambda kind, **d: alerts.append({"alert": kind, **d}), "inbox", "/inbox", "push")

    def message() -> object:
        return customs.user_message(action="IE3R01", payload=b"<IE3R01/>", service=SERVICE_C2T,
                                    to_party=Engine.trader_party("NL123456789"))
    sink.fail_with = OSError(errno.ENOSPC, "No space left on device")
    for _ in range(3):
        m = message()
        assert (await proc.process(m.content_type, m.body)).error_code == "EBMS:0202"  # type: ignore[attr-defined]
    assert [(a["alert"], a["condition"]) for a in alerts] == [("storage-unavailable", "full")]
    sink.fail_with = None
    m = message()
    assert (await proc.process(m.content_type, m.body)).kind == "receipt"  # type: ignore[attr-defined]
    assert proc.sink_watch.condition is None  # type: ignore[attr-defined]
    sink.fail_with = RuntimeError("a bug")
    m = message()
    assert (await proc.process(m.content_type, m.body)).error_code == "EBMS:0202"  # type: ignore[attr-defined]
    assert len(alerts) == 1
    sink.fail_with = OSError(errno.EROFS, "Read-only file system")
    m = message()
    await proc.process(m.content_type, m.body)  # type: ignore[attr-defined]
    assert [a["condition"] for a in alerts] == ["full", "read-only"]  # a new episode after the recovery
