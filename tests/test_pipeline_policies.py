"""Backoff and priority policies (pure functions)."""

from __future__ import annotations

import datetime as dt
import random

from gateway.pipeline.priority import PriorityPicker
from gateway.pipeline.retry import RetryPolicy


def test_backoff_grows_is_bounded_and_stops() -> None:
    p = RetryPolicy(initial_seconds=2, max_seconds=60, multiplier=2, max_attempts=5, jitter=0)
    assert [p.delay(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert p.next_attempt(4, now) == now + dt.timedelta(seconds=16)
    assert p.next_attempt(5, now) is None


def test_full_jitter_stays_within_bounds_and_spreads() -> None:
    p = RetryPolicy(initial_seconds=10, max_seconds=100, jitter=1.0)
    rng = random.Random(7)
    delays = [p.delay(3, rng) for _ in range(200)]
    assert all(0 <= d <= 40 for d in delays)
    assert max(delays) - min(delays) > 20  # retries after an outage do not fire in lockstep


def test_priority_serves_a_first_without_starving_b_and_c() -> None:
    picker = PriorityPicker()
    plan = picker.plan({"A": 100, "B": 100, "C": 100}, 20)
    assert plan[0] == "A"
    assert plan.count("A") == 12 and plan.count("B") == 6 and plan.count("C") == 2
    # when only C has work it gets every slot
    assert PriorityPicker().plan({"C": 5}, 3) == ["C", "C", "C"]
    # A appearing later is served at once
    p2 = PriorityPicker()
    p2.plan({"C": 5}, 2)
    assert p2.pick(["A", "C"]) == "A"


# ----------------------------------------------------------------------------------------------- retry time budget
T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)


def _simulate_outage(p: RetryPolicy, outage: dt.timedelta, rng: random.Random) -> tuple[bool, int]:
    """Replays the sender's decisions with a virtual clock: every attempt before ``T0 + outage`` fails.
    (survived, attempts)."""
    now, since, attempts = T0, None, 0
    while True:
        attempts += 1
        if now >= T0 + outage:
            return True, attempts
        since = since or now
        nxt = p.next_attempt(attempts, now, rng, since=since)
        if nxt is None:
            return False, attempts
        assert nxt > now
        now = nxt


def test_default_budget_survives_maintenance_window_plus_hours_of_outage() -> None:
    """ICD 5.6: up to 1 h of announced maintenance a week, plus unannounced outages of several hours. The default
    policy keeps a filing through 1 h + 10 h of failure, and gives up within its 12 h budget, not later."""
    p = RetryPolicy()
    rng = random.Random(11)
    survived, attempts = _simulate_outage(p, dt.timedelta(hours=11), rng)
    assert survived and attempts > 12          # the old count limit (12) would have failed it after ~1 h
    survived, attempts = _simulate_outage(p, dt.timedelta(hours=30), rng)
    assert not survived


def test_budget_is_counted_from_the_first_failure_and_ends_exactly() -> None:
    p = RetryPolicy(initial_seconds=10, max_seconds=600, jitter=0, budget_seconds=3600)
    assert p.next_attempt(1, T0) == T0 + dt.timedelta(seconds=10)
    # near the end the last retry is pulled in to the deadline, never past it
    late = T0 + dt.timedelta(seconds=3500)
    assert p.next_attempt(9, late, since=T0) == T0 + dt.timedelta(seconds=3600)
    assert p.next_attempt(10, T0 + dt.timedelta(seconds=3600), since=T0) is None
    assert "budget of 1.0 h spent" in p.exhausted_reason(10, T0 + dt.timedelta(seconds=3600), T0)
    # the optional count cap still applies when configured
    capped = RetryPolicy(max_attempts=3, jitter=0)
    assert capped.next_attempt(3, T0) is None and "3 attempts" in capped.exhausted_reason(3, T0, T0)


def test_4xx_grace_only_for_an_endpoint_that_worked_and_only_for_a_while() -> None:
    p = RetryPolicy(http_4xx_grace_seconds=600)
    later = T0 + dt.timedelta(seconds=599)
    assert p.grace_for_4xx(403, healthy_before=True, now=later, since=T0)
    assert p.grace_for_4xx(404, healthy_before=True, now=T0, since=None)
    assert not p.grace_for_4xx(403, healthy_before=True, now=T0 + dt.timedelta(seconds=600), since=T0)
    assert not p.grace_for_4xx(403, healthy_before=False, now=later, since=T0)   # never worked: wrong URL/cert
    assert not p.grace_for_4xx(413, healthy_before=True, now=later, since=T0)    # about the message itself
    assert not p.grace_for_4xx(503, healthy_before=True, now=later, since=T0)    # not a 4xx (retried anyway)
    assert not p.grace_for_4xx(None, healthy_before=True, now=later, since=T0)


def test_outage_alerts_while_waiting_then_every_interval() -> None:
    p = RetryPolicy(outage_alert_after_seconds=900, outage_alert_every_seconds=3600)
    m = dt.timedelta(minutes=1)
    assert not p.outage_alert_due(T0, None, T0 + 14 * m)
    assert p.outage_alert_due(T0, None, T0 + 15 * m)
    assert not p.outage_alert_due(T0, T0 + 15 * m, T0 + 74 * m)
    assert p.outage_alert_due(T0, T0 + 15 * m, T0 + 75 * m)
