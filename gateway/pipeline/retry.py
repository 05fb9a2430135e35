"""When to try again: exponential backoff with full jitter, bounded, and a retry limit.

Every retry resends the byte-identical sealed message under the same eb:MessageId (OASIS AS4 3.2), so that the
receiver's duplicate detection works; this module only decides *when*.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from gateway.config import Section


@dataclass(frozen=True)
class RetryPolicy:
    initial_seconds: float = 5.0
    max_seconds: float = 900.0
    multiplier: float = 2.0
    max_attempts: int = 12          # after this many failed sends the filing is `failed` (an operator can resend)
    jitter: float = 1.0             # 1.0 = full jitter; 0 = none (tests)

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        base = min(self.max_seconds, self.initial_seconds * self.multiplier ** max(0, attempts - 1))
        if self.jitter <= 0:
            return base
        r = (rng or random).random()
        # "full jitter" spreads a burst of retries after an outage instead of synchronising them
        return base * (1 - self.jitter) + base * self.jitter * r

    def next_attempt(self, attempts: int, now: dt.datetime, rng: random.Random | None = None) -> dt.datetime | None:
        """When to try again, or None when the retry limit is reached."""
        if attempts >= self.max_attempts:
            return None
        return now + dt.timedelta(seconds=self.delay(attempts, rng))


def read_retry_policy(sec: Section) -> RetryPolicy:
    sec.check_keys({"initial_seconds", "max_seconds", "multiplier", "max_attempts", "jitter"})
    d = RetryPolicy()
    return RetryPolicy(
        initial_seconds=sec.float("initial_seconds", d.initial_seconds, min=0.01),
        max_seconds=sec.float("max_seconds", d.max_seconds, min=0.01),
        multiplier=sec.float("multiplier", d.multiplier, min=1.0),
        max_attempts=sec.int("max_attempts", d.max_attempts, min=1),
        jitter=sec.float("jitter", d.jitter, min=0.0, max=1.0),
    )
