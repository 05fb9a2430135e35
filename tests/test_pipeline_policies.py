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
