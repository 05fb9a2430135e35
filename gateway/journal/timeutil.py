"""UTC timestamps as fixed-width ISO 8601 strings with a Z.

Why fixed width (milliseconds always present): the journal compares and sorts timestamps as text, in SQL, on
every backend; ``2024-01-01T00:00:00.000Z`` < ``2024-01-01T00:00:00.500Z`` only holds when both have the same shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

UTC = timezone.utc


def utcnow() -> datetime:
    """The default clock; everything that matters takes ``now`` as a parameter so tests control time."""
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """``datetime`` (timezone-aware) -> ``YYYY-MM-DDTHH:MM:SS.mmmZ``; naive datetimes are refused (ambiguous)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts!r}: the journal needs timezone-aware UTC times")
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """Inverse of ``iso`` (also accepts other ISO 8601 forms with Z or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def plus(ts: datetime, seconds: float) -> datetime:
    return ts + timedelta(seconds=seconds)
