"""systemd readiness (``Type=notify``): the sd_notify datagram protocol, without a dependency.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path,
or ``@name`` for the abstract namespace). Why: systemd must not call the service started (and ``systemctl
start`` must not return) before the listeners are bound and the journal is open; ``STOPPING=1`` marks the drain.
Outside systemd the variable is unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("ics2gw.daemon")


def notify(state: str) -> bool:
    """Sends ``state`` (e.g. ``"READY=1"``) to systemd; False when not run by systemd or the send failed."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    elif addr[0] != "/":
        log.warning("sd_notify: NOTIFY_SOCKET=%s is neither a path nor @abstract; readiness not reported", addr)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("sd_notify failed socket=%s error=%s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
