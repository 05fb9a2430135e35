"""The identity of this gateway process among the instances sharing one journal.

``hostname-pid`` alone is not unique enough once several instances share a PostgreSQL journal: two containers
often have the same hostname and the same pid (1, or the entrypoint's), and a restarted instance may get its old
pid back while a claim under the old name is still leased. Six random hex digits, drawn once per process, make
every incarnation distinct; the id names the sender's claims (``claimed_by``), the logs, ``/health`` ("instance")
and the ``ics2gw_instance_info`` metric.
"""

from __future__ import annotations

import os
import secrets
import socket

_ID: tuple[int, str] | None = None   # (pid it was made for, id): a forked child gets its own


def instance_id() -> str:
    """``hostname-pid-xxxxxx``, the same for the whole life of this process (a new one after a fork)."""
    global _ID
    pid = os.getpid()
    if _ID is None or _ID[0] != pid:
        host = socket.gethostname().split(".")[0] or "host"
        _ID = (pid, f"{host}-{pid}-{secrets.token_hex(3)}")
    return _ID[1]
