"""``Retry-After`` (RFC 9110 10.2.3) as a number of seconds to wait, for the AS4 client and the HMRC client.

A peer that is overloaded or in maintenance (HTTP 429 / 503) may say when to come back, either as delay-seconds or
as an HTTP-date. The sender waits at least that long before the next attempt (never past the retry budget). The
value comes from the network, so it is bounded: a negative, unreadable or absurd value is ignored (the normal
back-off applies), a date in the past means "now", and anything longer than ``cap`` is cut to ``cap``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re

MAX_RETRY_AFTER_SECONDS = 3600.0
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")   # RFC 9110: 1*DIGIT; a fraction tolerated (some APIs send one)


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None,
                      cap: float = MAX_RETRY_AFTER_SECONDS) -> float | None:
    """Seconds to wait, in [0, cap], or None when there is no usable value."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        return min(float(text), cap)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:          # RFC 9110 HTTP-dates are GMT; a zone-less obsolete form is read as such
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    seconds = (when - now).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)
