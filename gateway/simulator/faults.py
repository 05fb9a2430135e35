"""Which faults is the simulator injecting right now? Run-time switchable knobs, set from the configuration
(``[faults]``) and changed by tests through ``POST /admin/faults``.

Count knobs (``http_503``, ``drop_connection``, ``drop_response``, ``duplicate_pushes``) take ``true``
(always), ``false`` or ``0`` (never) or a positive integer n (the next n occurrences, then off).

The defaults behave like the STI (a Domibus MSH): errors as unsigned SOAP Faults with HTTP 500, a pulled
message that is never acknowledged fails after ``pull_max_offers`` offers (EBMS:0301 MissingReceipt). The
lenient forms (``errors_unsigned = false``, ``pull_max_offers = 0``) stay available for tests that need them.
"""

from __future__ import annotations

import threading
from typing import Any

RECEIPT_MODES = ("signed", "unsigned", "bad-signature", "wrong-digests", "wrong-ref")
SUB_CODE_PLACES = ("ErrorDetail", "Description", "shortDescription")

# name -> (kind, default). kinds: count, int, float, bool, receipt, places
KNOBS: dict[str, tuple[str, Any]] = {
    "delay_seconds": ("float", 0.0),          # wait before answering an inbound request
    "http_503": ("count", False),             # answer 503 Service Unavailable, nothing processed
    "retry_after": ("int", 0),                # seconds announced in Retry-After with those 503s (0: no header)
    "drop_connection": ("count", False),      # close the connection without an answer, nothing processed
    "drop_response": ("count", False),        # process and register, then close without an answer
    "receipt": ("receipt", "signed"),         # how receipts are made (see RECEIPT_MODES)
    "errors_unsigned": ("bool", True),        # ebMS errors (EBMS:0006 too) unsigned in a SOAP Fault, HTTP 500, as
                                              # Domibus sends them; false: signed Error signals with HTTP 200
    "sub_code_in": ("places", ["ErrorDetail"]),  # where EBMS:0004 errors carry the A00n sub-code
    "duplicate_pushes": ("count", False),     # push each reply twice (same MessageId)
    "out_of_order": ("bool", False),          # deliver queued replies newest first
    "hold_replies": ("bool", False),          # keep replies queued (neither pushed nor offered) until false
    "reply_delay_seconds": ("float", 0.2),    # business latency between the receipt and the replies
    "reoffer_after_seconds": ("float", 300.0),  # a pulled message without receipt is offered again after this
    "pull_max_offers": ("int", 5),            # offers of a pulled message before it fails with EBMS:0301 (0: never)
    "push_retry_seconds": ("float", 2.0),     # first push retry interval (doubles, capped at 60 s)
}


class FaultError(ValueError):
    pass


def check(name: str, value: Any) -> Any:
    """The normalised value of knob ``name``; FaultError names what is wrong."""
    if name not in KNOBS:
        raise FaultError(f"unknown fault knob {name!r} (known: {', '.join(sorted(KNOBS))})")
    kind = KNOBS[name][0]
    if kind == "count":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value >= 0:
            return value
        raise FaultError(f"{name} must be true, false or a count >= 0, not {value!r}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FaultError(f"{name} must be an integer >= 0, not {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise FaultError(f"{name} must be a number >= 0, not {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise FaultError(f"{name} must be true or false, not {value!r}")
        return value
    if kind == "receipt":
        if value not in RECEIPT_MODES:
            raise FaultError(f"{name} must be one of {', '.join(RECEIPT_MODES)}, not {value!r}")
        return value
    if kind == "places":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or any(v not in SUB_CODE_PLACES for v in value):
            raise FaultError(f"{name} must be a non-empty list of {', '.join(SUB_CODE_PLACES)}, not {value!r}")
        return list(value)
    raise AssertionError(kind)


class Faults:
    """The current knob values; thread-safe; ``take`` consumes one occurrence of a count knob."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._defaults = {k: v for k, (_, v) in KNOBS.items()}
        self._defaults.update({k: check(k, v) for k, v in (initial or {}).items()})
        self._values = dict(self._defaults)

    def get(self, name: str) -> Any:
        with self._lock:
            return self._values[name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in KNOBS:
            raise AttributeError(name)
        return self.get(name)

    def take(self, name: str) -> bool:
        """True if the count knob ``name`` fires now (and consumes one occurrence)."""
        with self._lock:
            v = self._values[name]
            if v is True:
                return True
            if v is False or v == 0:
                return False
            self._values[name] = v - 1
            return True

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        checked = {k: check(k, v) for k, v in changes.items()}
        with self._lock:
            self._values.update(checked)
            return dict(self._values)

    def reset(self) -> dict[str, Any]:
        """Back to the configured values."""
        with self._lock:
            self._values = dict(self._defaults)
            return dict(self._values)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)
