"""Spool-directory intake: the ERP drops ``*.xml`` (or a ``NAME.d/`` folder: an ENS with its attachments, see
``gateway.pipeline.submission``) atomically; each entry is claimed by an atomic rename,
journaled durably, then archived. Malformed or conflicting input goes to the rejected folder with a reason file
(``<name>.reason.json``). Files left in the work folder by a crash are processed again at start: intake is
idempotent (same key and payload -> the same filing), so nothing is lost or filed twice.

Nothing found in the spool can stop the intake (docs/security.md "Daemon robustness"). Every failure is
handled for the one file it concerns:

- a symlink is never followed, and anything that is not a regular file (FIFO, device, socket, directory) named
  ``*.xml`` is moved to the rejected folder with reason ``not-a-regular-file`` instead of being read;
- file names of any legal length (up to 255 bytes) are claimed: the claimed name is bounded, a too-long name
  keeps its tail and gains a digest of the whole name; names that are not UTF-8 are filed, shown with
  ``\\xNN`` escapes in logs, reason files and the journal's ``source``;
- a storage failure (disk full, read-only journal, I/O error) is not the file's fault: the file stays in the
  work folder, an alert is raised once, and the file is retried with backoff until the storage recovers;
- any other unexpected error rejects that file with reason ``internal-error``; if even the rejection cannot
  be written, the file stays and is retried.

Several gateway instances may share one spool (a shared folder, several processes on one host or NFS v4 between
hosts). Each unit (file or ``NAME.d`` folder) is locked (``flock``, exclusive, non-blocking) *before* it is
claimed, and stays locked until it is archived or rejected: another instance that finds it locked, in the spool or
in the work folder, leaves it alone; the rename is atomic, so two instances can never both claim it. A unit in the
work folder that nobody holds locked belongs to an instance that died (the kernel, or the NFS server after its
lease, released the lock with the process): any live instance takes it and files it again, which is safe because
intake is idempotent (same key and payload: the same filing).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.pipeline.accept import Acceptor, IntakeRefused
from gateway.pipeline.config import IntakeConfig
from gateway.pipeline.delivery import atomic_write, fsync_dir, write_status
from gateway.pipeline.storage import storage_problem
from gateway.pipeline.submission import SPOOL_FOLDER_SUFFIX, Submission, read_spool_unit

log = logging.getLogger("ics2gw.intake")

NAME_MAX = 255                      # bytes, the limit of every common Linux file system
_REASON_SUFFIX = ".reason.json"
MAX_FILE_BYTES = 110 * 1024 * 1024  # as the API's default max_request_bytes: above the ICD's 100 MB payload
RETRY_INITIAL, RETRY_MAX = 1.0, 30.0


def display_name(name: str) -> str:
    """A printable, UTF-8-encodable form of a file name: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def bounded_name(prefix: str, name: str, *, reserve: int = len(_REASON_SUFFIX)) -> str:
    """``prefix + name``, at most ``NAME_MAX - reserve`` bytes. A name too long keeps its tail (the extension)
    after a digest of the whole name, so two long names that share a tail still get different claims."""
    raw, head = os.fsencode(name), os.fsencode(prefix)
    room = NAME_MAX - reserve - len(head)
    if len(raw) <= room:
        return prefix + name
    digest = hashlib.sha256(raw).hexdigest()[:16].encode()
    tail = raw[-(room - len(digest) - 2):]
    return os.fsdecode(head + b"~" + digest + b"~" + tail)


def _is_unit_name(name: str) -> bool:
    """What the spool takes: ``*.xml`` files and ``NAME.d`` folders (anything else there is left alone)."""
    return name.endswith(".xml") or name.endswith(SPOOL_FOLDER_SUFFIX)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character-device"),
                       (stat.S_ISBLK, "block-device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return kind
    return "not-a-regular-file"


@dataclass
class _Retry:
    attempts: int
    next_at: float
    problem: str


class _NotRegular(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(kind)


_BUSY = -1      # _lock_unit: another instance holds the unit
_GONE = -2      # _lock_unit: the unit is no longer there (another instance took it)


def _lock_unit(path: Path, mode: int) -> int | None:
    """An fd holding an exclusive ``flock`` on the spool unit at ``path`` (a regular file or a ``NAME.d`` folder),
    ``_BUSY`` if another process holds it, ``_GONE`` if it vanished; None for anything else (a symlink, a FIFO, a
    device: never opened, rejected unlocked)."""
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return _GONE
    except OSError:
        return None          # a symlink swapped in meanwhile (ELOOP), no permission: processed unlocked, rejected
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return _BUSY
    except OSError:          # a file system without locks: processed unlocked (one instance per spool, as before)
        os.close(fd)
        return None
    return fd


def _same(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class SpoolIntake:
    def __init__(self, cfg: IntakeConfig, acceptor: Acceptor, on_queued: Any = None,
                 alert: Callable[..., None] | None = None) -> None:
        self.cfg, self.acceptor = cfg, acceptor
        self.on_queued = on_queued or (lambda: None)
        self.alert = alert or (lambda kind, **detail: None)
        self._stopping = asyncio.Event()
        self.accepted = 0
        self.rejected = 0
        self.waiting: dict[str, _Retry] = {}   # work-folder (or spool) name -> retry state, for storage failures

    def stop(self) -> None:
        self._stopping.set()

    # ------------------------------------------------------------------------------------------------ the loop
    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll_once()
                self._recovered("intake-pass")
            except Exception as exc:  # noqa: BLE001 - a failing pass (spool folder gone ...) must not end intake
                log.exception("intake pass failed error=%s", exc)
                self._alert_once("intake-pass", "intake-failed", error=f"{type(exc).__name__}: {exc}",
                                 problem=storage_problem(exc) or "error")
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.cfg.poll_seconds)
            except asyncio.TimeoutError:
                pass

    async def poll_once(self) -> None:
        """One pass: the work folder first (crash leftovers, files waiting for storage), then the spool."""
        self.cfg.ensure()
        now = time.monotonic()
        present: set[str] = set()
        for entry in sorted(os.scandir(self.cfg.work_dir), key=lambda e: e.name):
            if self._stopping.is_set():
                return
            if entry.name.startswith(".") or not _is_unit_name(entry.name):
                continue
            present.add(entry.name)
            retry = self.waiting.get(entry.name)
            if retry is not None and retry.next_at > now:
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            fd = _lock_unit(Path(entry.path), mode)
            if fd in (_BUSY, _GONE):          # a live instance is filing it, or has just finished
                continue
            await self._process_locked(Path(entry.path), None, fd)
        for key in [k for k in self.waiting if not k.startswith("spool:") and k != "intake-pass"
                    and k not in present]:
            self.waiting.pop(key, None)       # filed meanwhile by another instance
        candidates = []
        for entry in os.scandir(self.cfg.spool_dir):
            if entry.name.startswith(".") or not _is_unit_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            candidates.append((st.st_mtime, entry.name, st.st_mode))
        for _, name, mode in sorted(candidates):
            if self._stopping.is_set():
                return
            retry = self.waiting.get("spool:" + name)
            if retry is not None and retry.next_at > time.monotonic():
                continue
            path = self.cfg.spool_dir / name
            folder = name.endswith(SPOOL_FOLDER_SUFFIX)
            if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
                self._reject_entry(path, name, _kind(mode))
                continue
            fd = _lock_unit(path, mode)
            if fd in (_BUSY, _GONE):          # another instance is claiming it right now, or has claimed it
                continue
            claimed = self._claim(path)
            if claimed is None or (fd is not None and not _same(fd, claimed)):
                if fd is not None:
                    os.close(fd)
                if claimed is not None:       # a new file under the old name: ours, but lock it first
                    try:
                        again = _lock_unit(claimed, os.lstat(claimed).st_mode)
                    except FileNotFoundError:
                        continue
                    if again not in (_BUSY, _GONE):
                        await self._process_locked(claimed, display_name(name), again)
                continue
            await self._process_locked(claimed, display_name(name), fd)

    async def _process_locked(self, claimed: Path, original: str | None, fd: int | None) -> None:
        """``process`` while holding the unit's lock (``fd``, None: unlocked), released once it is filed."""
        try:
            await self.process(claimed, original=original)
        finally:
            if fd is not None and fd >= 0:
                os.close(fd)

    # ------------------------------------------------------------------------------------------------ steps
    def _claim(self, path: Path) -> Path | None:
        target = self.cfg.work_dir / bounded_name(f"{uuid.uuid4().hex[:12]}__", path.name)
        try:
            os.rename(path, target)  # atomic: two gateways (or a restarted one) never claim the same file
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._failed_here("spool:" + path.name, display_name(path.name), "claim", exc)
            return None
        self._recovered("spool:" + path.name)
        return target

    @staticmethod
    def _original(claimed: Path) -> str:
        return display_name(claimed.name.split("__", 1)[-1])

    def _read_unit(self, claimed: Path) -> Submission:
        """A claimed ``*.xml`` file alone, or a claimed ``NAME.d/`` folder with the ENS and its attachments."""
        if claimed.name.endswith(SPOOL_FOLDER_SUFFIX):
            st = os.lstat(claimed)
            if not stat.S_ISDIR(st.st_mode):
                raise _NotRegular(_kind(st.st_mode))
            return read_spool_unit(claimed)
        return Submission(self._read(claimed))

    def _read(self, claimed: Path) -> bytes:
        """The claimed file's bytes; never follows a symlink, never blocks on a FIFO, refuses a huge file."""
        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _NotRegular("symlink") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _NotRegular(_kind(st.st_mode))
            if st.st_size > MAX_FILE_BYTES:
                raise IntakeRefused("too-large", f"the file is {st.st_size} bytes, over the intake limit of "
                                                 f"{MAX_FILE_BYTES}", status=413)
            chunks = []
            while True:
                block = os.read(fd, 1 << 20)
                if not block:
                    break
                chunks.append(block)
            return b"".join(chunks)
        finally:
            os.close(fd)

    async def process(self, claimed: Path, original: str | None = None) -> None:
        """Journals one claimed file, or rejects it, or leaves it for a retry; never raises for the file.
        ``original``: the spool name when known (a long name is shortened in the claimed name)."""
        original = original or self._original(claimed)
        step = "read"
        try:
            unit = await asyncio.to_thread(self._read_unit, claimed)   # the ENS, and a folder's attachments
            step = "journal"
            accepted = await self.acceptor.accept(unit.payload, source=f"spool:{original}",
                                                  attachments=unit.attachments)
        except IntakeRefused as exc:
            if self._reject(claimed, original, {"reason": exc.reason, "error": str(exc),
                                                "findings": exc.findings[:50]}):
                self.rejected += 1
                if exc.filing is not None:  # journaled as rejected-locally: its status file like every filing's
                    await asyncio.to_thread(write_status, self.cfg.status_dir, exc.filing.to_dict())
            return
        except _NotRegular as exc:
            self._reject(claimed, original, {"reason": "not-a-regular-file", "error": f"the spool entry is a "
                                             f"{exc.kind}; only regular files are filed (symlinks are never followed)"})
            return
        except FileNotFoundError:
            self.waiting.pop(claimed.name, None)
            return
        except Exception as exc:  # noqa: BLE001 - keep the file and say why; never lose it, never stop intake
            if storage_problem(exc) is not None:  # unreadable file, full or read-only journal: retry, alert
                self._failed_here(claimed.name, original, step, exc)
                return
            log.exception("intake failed file=%s", original)
            self._reject(claimed, original, {"reason": "internal-error", "error": f"{type(exc).__name__}: {exc}"})
            return
        try:  # the filing is durable: archiving may fail and be retried (the retry finds the same filing)
            os.replace(claimed, self.cfg.archive_dir / claimed.name)
            fsync_dir(self.cfg.archive_dir)
        except FileNotFoundError:     # another instance filed and archived it meanwhile (it held no lock: unlocked fs)
            self.waiting.pop(claimed.name, None)
            return
        except OSError as exc:
            self._failed_here(claimed.name, original, "archive", exc)
            return
        self._recovered(claimed.name)
        self.accepted += 1
        if accepted.filing is not None:  # None: a consultation (IE3Q05) of an ENS the journal does not know
            await asyncio.to_thread(write_status, self.cfg.status_dir, accepted.filing.to_dict())
        log.info("intake file=%s lrn=%s state=%s created=%s", original, accepted.to_dict()["lrn"],
                 accepted.to_dict()["state"], accepted.created)
        self.on_queued()

    def _reject(self, claimed: Path, original: str, reason: dict[str, Any]) -> bool:
        """Reason file first, then the file: a reason without its file is harmless, a file without its reason is
        not. False (file left in place, retried, alerted) when the rejection itself cannot be written."""
        dst = self.cfg.rejected_dir / claimed.name
        try:
            atomic_write(dst.with_name(dst.name + _REASON_SUFFIX),
                         json.dumps({"file": original, **reason}, indent=1, default=str).encode())
            os.replace(claimed, dst)
            fsync_dir(self.cfg.rejected_dir)
        except OSError as exc:
            self._failed_here(claimed.name, original, "reject", exc)
            return False
        self._recovered(claimed.name)
        log.warning("intake rejected file=%s reason=%s", original, reason.get("reason"))
        return True

    def _reject_entry(self, path: Path, name: str, kind: str) -> None:
        """A spool entry that is not a regular file: moved (never opened) to the rejected folder, with a reason."""
        claimed = self.cfg.work_dir / bounded_name(f"{uuid.uuid4().hex[:12]}__", name)
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._failed_here("spool:" + name, display_name(name), "claim", exc)
            return
        if self._reject(claimed, display_name(name), {
                "reason": "not-a-regular-file",
                "error": f"the spool entry is a {kind}; only regular files are filed (symlinks are never followed)"}):
            self.rejected += 1

    # ------------------------------------------------------------------------------------------------ retries
    def _failed_here(self, key: str, original: str, step: str, exc: BaseException) -> None:
        """Leaves the file where it is; alerts at the first failure of an episode; retries with backoff."""
        problem = storage_problem(exc) or "error"
        prev = self.waiting.get(key)
        attempts = prev.attempts + 1 if prev else 1
        delay = min(RETRY_INITIAL * 2 ** (attempts - 1), RETRY_MAX)
        self.waiting[key] = _Retry(attempts, time.monotonic() + delay, problem)
        log.error("intake %s failed file=%s problem=%s error=%s attempt=%d retry_in=%.0fs", step, original, problem,
                  exc, attempts, delay)
        if prev is None:
            self.alert("intake-blocked", file=original, step=step, problem=problem,
                       error=f"{type(exc).__name__}: {exc}")

    def _alert_once(self, key: str, kind: str, **detail: Any) -> None:
        if key not in self.waiting:
            self.waiting[key] = _Retry(1, 0.0, str(detail.get("problem")))
            self.alert(kind, **detail)

    def _recovered(self, key: str) -> None:
        prev = self.waiting.pop(key, None)
        if prev is not None:
            log.warning("intake recovered file_key=%s after %d failed attempt(s) problem=%s", display_name(key),
                        prev.attempts, prev.problem)
