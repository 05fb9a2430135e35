"""One helper for structured transport log lines: ``event=... environment=... key=value``.

Why a helper: every line must carry the active environment (eDelivery 1.4.4.7: nobody should ever wonder
whether a line came from conformance or production) and values must be quoted the same way everywhere.
Callers pass identifiers only (message ids, endpoint names, codes), never payloads or secrets.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.logsetup import quote

logger = logging.getLogger("ics2gw.transport")


def _fmt(value: Any) -> str:
    return quote(value)


def line(event: str, environment: str, **fields: Any) -> str:
    parts = [f"event={_fmt(event)}", f"environment={_fmt(environment)}"]
    parts += [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def log(level: int, event: str, environment: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        # the fields travel as data too, so the JSON formatter gives each its own key (gateway.logsetup)
        data = {"event": event, "environment": environment, **{k: v for k, v in fields.items() if v is not None}}
        logger.log(level, line(event, environment, **fields), extra={"fields": data})
