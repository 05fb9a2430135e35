"""The OAuth tokens of the HMRC route, kept durably in one small file.

Why a file of its own (not the journal): the token is a secret with its own lifetime, read by the operator's
``ics2gw hmrc authorize`` as well as by the daemon, and never to be copied into evidence bundles or backups of
the journal. Why so careful: HMRC rotates the refresh token at every refresh (the old one stops working), so a
refresh token received and not kept is a gateway that can no longer file. Every write is: a new file created
0600 beside the old one, written, fsynced, renamed over the old one, and the directory fsynced; a crash at any
instant leaves either the old or the new token set, whole.

Nothing here logs a token; ``TokenSet.__repr__`` hides them too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any


class TokenStoreError(Exception):
    """The token file is missing, unreadable or unsafe; the message says what to do."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_at: float           # epoch seconds at which the access token stops working
    scope: str
    obtained_at: float
    generation: int = 1         # +1 at every refresh: tells the operator (and tests) which set is on disk
    refresh_started_at: float | None = None  # set while a refresh is in flight (a crash then is reported)

    def __repr__(self) -> str:  # never print a token, even in a traceback
        return (f"TokenSet(generation={self.generation}, expires_at={self.expires_at:.0f}, scope={self.scope!r}, "
                f"access_token=<{len(self.access_token)} chars>, refresh_token=<{len(self.refresh_token)} chars>)")

    __str__ = __repr__

    def lifetime(self) -> float:
        return max(0.0, self.expires_at - self.obtained_at)

    def seconds_left(self, now: float) -> float:
        return self.expires_at - now

    def valid(self, now: float, *, skew: float = 30.0) -> bool:
        return now + skew < self.expires_at

    def due_for_refresh(self, now: float, *, fraction: float = 0.5, min_left: float = 60.0) -> bool:
        """Refresh early (by default at half of the lifetime): if a rotation is ever lost, the access token still
        in hand keeps the gateway filing for hours while the operator re-authorises. ``min_left`` covers clock
        skew for very short lifetimes."""
        return self.seconds_left(now) <= max(min(min_left, self.lifetime() / 4), self.lifetime() * (1.0 - fraction))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TokenSet:
        try:
            return cls(access_token=str(doc["access_token"]), refresh_token=str(doc["refresh_token"]),
                       expires_at=float(doc["expires_at"]), scope=str(doc.get("scope", "")),
                       obtained_at=float(doc.get("obtained_at", 0.0)), generation=int(doc.get("generation", 1)),
                       refresh_started_at=(float(doc["refresh_started_at"])
                                           if doc.get("refresh_started_at") is not None else None))
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenStoreError(f"token file is malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_grant(cls, doc: dict[str, Any], *, now: float, generation: int) -> TokenSet:
        """From the JSON of HMRC's token endpoint (``access_token``, ``refresh_token``, ``expires_in``, ``scope``)."""
        try:
            expires_in = float(doc["expires_in"])
            access, refresh = str(doc["access_token"]), str(doc["refresh_token"])
        except (KeyError, TypeError, ValueError):
            raise TokenStoreError("the token endpoint's answer lacks access_token, refresh_token or expires_in") \
                from None
        if not access or not refresh or expires_in <= 0:
            raise TokenStoreError("the token endpoint returned an empty token or a non-positive expires_in")
        return cls(access, refresh, now + expires_in, str(doc.get("scope", "")), now, generation)


def crash_point(name: str) -> None:
    """Test hook for the crash tests: ``ICS2GW_HMRC_CRASH_AT=<name>`` kills this process right here with SIGKILL
    (as a power cut would). Unset in production, where it costs one dictionary lookup."""
    if os.environ.get("ICS2GW_HMRC_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TokenStore:
    """One JSON file, mode 0600, replaced atomically and durably."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> TokenSet:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise TokenStoreError(f"{self.path}: no HMRC token yet: run `ics2gw hmrc authorize` once") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64 * 1024:
            raise TokenStoreError(f"{self.path}: not a regular token file of at most 64 KiB; authorise again")
        if st.st_mode & 0o077:
            raise TokenStoreError(f"{self.path}: mode {st.st_mode & 0o777:o} lets others read the HMRC token; "
                                  f"run chmod 600 {self.path}")
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise TokenStoreError(f"{self.path}: unreadable token file ({exc})") from None
        if not isinstance(doc, dict):
            raise TokenStoreError(f"{self.path}: token file is not a JSON object")
        return TokenSet.from_json(doc)

    def save(self, tokens: TokenSet) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps(tokens.to_json(), indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("token-tmp-written")
        os.replace(tmp, self.path)
        crash_point("token-renamed")
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):   # left by a crash mid-write
            # only our own or a dead process's: another live process (the daemon while the operator runs
            # `hmrc authorize`) may be between writing its file and renaming it, with a rotated token inside
            try:
                pid = int(stale.name[len(self.path.name) + 2:].split(".", 1)[0])
            except ValueError:
                continue
            if pid == os.getpid() or not _alive(pid):
                stale.unlink(missing_ok=True)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def fingerprint(self) -> tuple[int, int, int] | None:
        """Identity of the file on disk now (inode, mtime, size): changes when anyone replaces it."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def open_lock(self) -> int:
        """A descriptor of ``<token_file>.lock``, to ``flock``: one refresh or one new grant at a time across
        processes, so two processes never spend the same refresh token (the second would get ``invalid_grant``
        and declare the authorisation broken)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Blocking form of the lock, for the CLI (``hmrc authorize`` waits for a refresh in flight)."""
        fd = self.open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def mark_refresh_started(self, tokens: TokenSet, now: float) -> TokenSet:
        marked = replace(tokens, refresh_started_at=now)
        self.save(marked)
        return marked
