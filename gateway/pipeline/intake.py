"""Spool-directory intake: the ERP drops ``*.xml`` atomically; each file is claimed by an atomic rename,
journaled durably, then archived. Malformed or conflicting input goes to the rejected folder with a reason file
(``<name>.reason.json``). Files left in the work folder by a crash are processed again at start: intake is
idempotent (same key and payload -> the same filing), so nothing is lost or filed twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from gateway.pipeline.accept import Acceptor, IntakeRefused
from gateway.pipeline.config import IntakeConfig
from gateway.pipeline.delivery import atomic_write, fsync_dir, write_status

log = logging.getLogger("ics2gw.intake")


class SpoolIntake:
    def __init__(self, cfg: IntakeConfig, acceptor: Acceptor, on_queued: Any = None) -> None:
        self.cfg, self.acceptor = cfg, acceptor
        self.on_queued = on_queued or (lambda: None)
        self._stopping = asyncio.Event()
        self.accepted = 0
        self.rejected = 0

    def stop(self) -> None:
        self._stopping.set()

    def _claim(self, path: Path) -> Path | None:
        target = self.cfg.work_dir / f"{uuid.uuid4().hex[:12]}__{path.name}"
        try:
            os.rename(path, target)  # atomic: two gateways (or a restarted one) never claim the same file
        except FileNotFoundError:
            return None
        return target

    async def run(self) -> None:
        self.cfg.ensure()
        for leftover in sorted(self.cfg.work_dir.glob("*.xml")):
            await self.process(leftover)
        while not self._stopping.is_set():
            files = sorted((p for p in self.cfg.spool_dir.glob("*.xml") if p.is_file()),
                           key=lambda p: (p.stat().st_mtime, p.name))
            for path in files:
                if self._stopping.is_set():
                    break
                claimed = self._claim(path)
                if claimed is not None:
                    await self.process(claimed)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.cfg.poll_seconds)
            except asyncio.TimeoutError:
                pass

    async def process(self, claimed: Path) -> None:
        original = claimed.name.split("__", 1)[-1]
        try:
            data = claimed.read_bytes()
            accepted = await self.acceptor.accept(data, source=f"spool:{original}")
        except IntakeRefused as exc:
            self.rejected += 1
            self._reject(claimed, original, {"reason": exc.reason, "error": str(exc), "findings": exc.findings[:50]})
            if exc.filing is not None:  # journaled as rejected-locally: its status file like every filing's
                await asyncio.to_thread(write_status, self.cfg.status_dir, exc.filing.to_dict())
            return
        except Exception as exc:  # keep the file and say why; never lose it
            log.exception("intake failed file=%s", original)
            self._reject(claimed, original, {"reason": "internal-error", "error": f"{type(exc).__name__}: {exc}"})
            return
        self.accepted += 1
        os.replace(claimed, self.cfg.archive_dir / f"{claimed.name}")
        fsync_dir(self.cfg.archive_dir)
        if accepted.filing is not None:  # None: a consultation (IE3Q05) of an ENS the journal does not know
            await asyncio.to_thread(write_status, self.cfg.status_dir, accepted.filing.to_dict())
        log.info("intake file=%s lrn=%s state=%s created=%s", original, accepted.to_dict()["lrn"],
                 accepted.to_dict()["state"], accepted.created)
        self.on_queued()

    def _reject(self, claimed: Path, original: str, reason: dict[str, Any]) -> None:
        dst = self.cfg.rejected_dir / claimed.name
        os.replace(claimed, dst)
        atomic_write(dst.with_name(dst.name + ".reason.json"),
                     json.dumps({"file": original, **reason}, indent=1, default=str).encode())
        fsync_dir(self.cfg.rejected_dir)
        log.warning("intake rejected file=%s reason=%s", original, reason.get("reason"))
