"""When to try again: exponential backoff with full jitter, bounded, within a *time budget*.

Every retry resends the byte-identical sealed message under the same eb:MessageId (OASIS AS4 3.2), so that the
receiver's duplicate detection works; this module only decides *when*, and when to give up.

Why a time budget and not a count: what a filing must survive is measured in hours, not attempts. The TI has an
announced maintenance window of up to 1 h a week (ICD 5.6) and, outside it, a target availability of 99.25 %
(STI), i.e. unannounced outages of several hours happen. With backoff capped at ``max_seconds`` a count says
nothing about how long the gateway kept trying, so the decisive limit is ``budget_seconds`` counted from the
first failure of the current run (``messages.retry_since``); the default of 12 h covers a full maintenance
window plus an unannounced outage of about 11 h, and after it the filing is ``failed`` with an alert (the
carrier then falls back on the ICS2 business-continuity procedure, or resends once customs is back). Alerts
are raised while the filing waits (``outage_alert_after_seconds``, then every ``outage_alert_every_seconds``),
so nobody learns of an outage only when the budget is spent. ``max_attempts`` remains as an optional extra cap
(0 = none, the default).

HTTP 4xx from an endpoint that answered properly before is what a reverse proxy's maintenance page looks like
(403/404 with an HTML body): it is retried for ``http_4xx_grace_seconds`` before it counts as the definitive
refusal it would be from an endpoint that never worked (wrong URL, certificate not registered).

A peer that answers 429 / 503 with ``Retry-After`` (RFC 9110 10.2.3; the STI's proxy, HMRC's rate limit) said when
it will take the message: that wait is a floor for the back-off (bounded to 1 h, ``gateway.transport.retryafter``),
and the time budget still decides when to give up.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from gateway.config import Section

# 4xx answers that describe the message, not the endpoint: never "maintenance", never retried
_MESSAGE_4XX = frozenset({413, 414, 415, 431})


@dataclass(frozen=True)
class RetryPolicy:
    initial_seconds: float = 5.0
    max_seconds: float = 900.0
    multiplier: float = 2.0
    budget_seconds: float = 12 * 3600.0   # from the first failure of a run; then `failed` + alert
    max_attempts: int = 0                 # optional extra cap on attempts (0 = only the time budget)
    jitter: float = 1.0                   # 1.0 = full jitter; 0 = none (tests)
    http_4xx_grace_seconds: float = 2 * 3600.0   # 4xx from a previously healthy endpoint is retried this long
    outage_alert_after_seconds: float = 900.0     # first "endpoint-outage" alert after this long failing
    outage_alert_every_seconds: float = 3600.0    # then again every this long while it lasts

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        base = min(self.max_seconds, self.initial_seconds * self.multiplier ** max(0, min(attempts - 1, 64)))
        if self.jitter <= 0:
            return base
        r = (rng or random).random()
        # "full jitter" spreads a burst of retries after an outage instead of synchronising them
        return base * (1 - self.jitter) + base * self.jitter * r

    def next_attempt(self, attempts: int, now: dt.datetime, rng: random.Random | None = None, *,
                     since: dt.datetime | None = None, retry_after: float | None = None) -> dt.datetime | None:
        """When to try again, or None when the attempt cap or the time budget (counted from ``since``, the first
        failure of this run; ``now`` when this is it) is spent. ``retry_after`` (seconds, from the peer's
        ``Retry-After``) is a floor: the peer said it will not take the message earlier. The last retry is pulled
        in to fall inside the budget rather than dropped, so the message gets one attempt right at its end."""
        if self.max_attempts and attempts >= self.max_attempts:
            return None
        start = since or now
        deadline = start + dt.timedelta(seconds=self.budget_seconds)
        if now >= deadline:
            return None
        wait = self.delay(attempts, rng)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(now + dt.timedelta(seconds=wait), deadline)

    def exhausted_reason(self, attempts: int, now: dt.datetime, since: dt.datetime | None) -> str:
        """Why ``next_attempt`` said no, for the filing's last_error and the alert."""
        if self.max_attempts and attempts >= self.max_attempts:
            return f"retry limit of {self.max_attempts} attempts reached"
        waited = (now - (since or now)).total_seconds()
        return f"retry budget of {_human(self.budget_seconds)} spent ({attempts} attempts over {_human(waited)})"

    def grace_for_4xx(self, status: int | None, *, healthy_before: bool, now: dt.datetime,
                      since: dt.datetime | None) -> bool:
        """True when an HTTP 4xx should be retried: the endpoint worked before and the grace period is running."""
        if status is None or not 400 <= status < 500 or status in _MESSAGE_4XX or not healthy_before:
            return False
        return (now - (since or now)).total_seconds() < self.http_4xx_grace_seconds

    def outage_alert_due(self, failing_since: dt.datetime, last_alert: dt.datetime | None, now: dt.datetime) -> bool:
        """True when an endpoint failing since ``failing_since`` deserves an (other) outage alert now."""
        if (now - failing_since).total_seconds() < self.outage_alert_after_seconds:
            return False
        return last_alert is None or (now - last_alert).total_seconds() >= self.outage_alert_every_seconds


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def read_retry_policy(sec: Section) -> RetryPolicy:
    sec.check_keys({"initial_seconds", "max_seconds", "multiplier", "max_attempts", "jitter", "budget_seconds",
                    "http_4xx_grace_seconds", "outage_alert_after_seconds", "outage_alert_every_seconds"})
    d = RetryPolicy()
    return RetryPolicy(
        initial_seconds=sec.float("initial_seconds", d.initial_seconds, min=0.01),
        max_seconds=sec.float("max_seconds", d.max_seconds, min=0.01),
        multiplier=sec.float("multiplier", d.multiplier, min=1.0),
        budget_seconds=sec.float("budget_seconds", d.budget_seconds, min=0.1),
        max_attempts=sec.int("max_attempts", d.max_attempts, min=0),
        jitter=sec.float("jitter", d.jitter, min=0.0, max=1.0),
        http_4xx_grace_seconds=sec.float("http_4xx_grace_seconds", d.http_4xx_grace_seconds, min=0.0),
        outage_alert_after_seconds=sec.float("outage_alert_after_seconds", d.outage_alert_after_seconds, min=0.0),
        outage_alert_every_seconds=sec.float("outage_alert_every_seconds", d.outage_alert_every_seconds, min=1.0),
    )
