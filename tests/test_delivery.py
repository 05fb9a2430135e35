"""ERP-side files: atomic under concurrent writers (two replies for one filing arrive together)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from gateway.pipeline.delivery import atomic_write, write_inbox, write_status


def test_concurrent_writers_of_one_file_never_fail(tmp_path: Path) -> None:
    errors: list[Exception] = []

    def writer(i: int) -> None:
        try:
            for k in range(100):
                atomic_write(tmp_path / "status.json", json.dumps({"w": i, "k": k}).encode(), durable=False)
        except Exception as exc:  # noqa: BLE001 - the point is that none happens
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads((tmp_path / "status.json").read_text())["k"] == 99  # a whole file, never half of one
    assert list(tmp_path.glob(".*.tmp")) == []


def test_status_write_failure_is_not_raised(tmp_path: Path) -> None:
    write_status(tmp_path / "missing-dir", {"filer_eori": "NL1", "lrn": "L1"})  # logged, not raised


def test_inbox_metadata_written_last_with_parts(tmp_path: Path) -> None:
    meta = write_inbox(tmp_path, "m-1@sti", [(".xml", {"href": "cid:a", "mime_type": "application/xml"}, b"<a/>")],
                       {"message_id": "m-1@sti"})
    doc = json.loads(meta.read_text())
    assert doc["parts"][0]["file"] == "m-1@sti.part1.xml" and (tmp_path / "m-1@sti.part1.xml").read_bytes() == b"<a/>"


def test_a_late_older_status_view_does_not_overwrite_a_newer_one(tmp_path: Path) -> None:
    """Two writers race (a sender's "sent" and the inbound side's "registered", or two instances): the file
    keeps the newest view of the journal."""
    import json as _json
    from gateway.pipeline.delivery import write_status
    newer = {"filer_eori": "NL1", "lrn": "L1", "state": "registered", "updated": "2026-01-01T00:00:01.500Z"}
    older = {"filer_eori": "NL1", "lrn": "L1", "state": "sent", "updated": "2026-01-01T00:00:01.200Z"}
    write_status(tmp_path, newer)
    write_status(tmp_path, older)
    [f] = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    assert _json.loads(f.read_text())["state"] == "registered"
    write_status(tmp_path, {**newer, "state": "amended", "updated": "2026-01-01T00:00:02.000Z"})
    assert _json.loads(f.read_text())["state"] == "amended"
