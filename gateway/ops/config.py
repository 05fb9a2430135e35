"""``[health]`` keys of the operations package (``listen`` itself is read with the transport sections).

Why in ``[health]``: one listener serves /health, /metrics and the status page, so what they judge by lives with
it. ``KEYS`` is imported by ``gateway/transport/config.py`` so that section refuses any other key.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Section
from gateway.ops.expiry import ExpiryThresholds

KEYS = frozenset({"ping_interval_seconds", "degraded_after_failures", "queue_age_degraded_seconds",
                  "expiry_warning_days", "expiry_critical_days", "crl_warning_days", "expiry_check_seconds",
                  "min_free_bytes", "degraded_http_status", "status_page"})


@dataclass(frozen=True)
class OpsConfig:
    ping_interval_seconds: float      # test-service ping per endpoint; 0 = only real traffic tells (no pings)
    degraded_after_failures: int      # consecutive failed exchanges with an endpoint before "degraded"
    queue_age_degraded_seconds: float  # oldest queued message older than this: "degraded"
    expiry: ExpiryThresholds
    expiry_check_seconds: float
    min_free_bytes: int               # free space left on the journal's file system below this: "failing"
    degraded_http_status: int         # what /health answers when degraded (200 for a balancer that should keep us)
    status_page: bool


def read_ops_config(sec: Section) -> OpsConfig:
    warn = sec.float("expiry_warning_days", 30.0, min=0.0, max=3650.0)
    crit = sec.float("expiry_critical_days", 7.0, min=0.0, max=3650.0)
    if crit > warn:
        sec.fail("expiry_critical_days", f"{crit} is above expiry_warning_days {warn}")
    status = sec.int("degraded_http_status", 429, min=200, max=599)
    if status in range(300, 400):
        sec.fail("degraded_http_status", "a redirect status would be followed by monitors; use 2xx, 4xx or 5xx")
    return OpsConfig(
        ping_interval_seconds=sec.float("ping_interval_seconds", 300.0, min=0.0, max=86400.0),
        degraded_after_failures=sec.int("degraded_after_failures", 3, min=1, max=1000),
        queue_age_degraded_seconds=sec.float("queue_age_degraded_seconds", 900.0, min=1.0),
        expiry=ExpiryThresholds(warning_days=warn, critical_days=crit,
                                crl_warning_days=sec.float("crl_warning_days", 2.0, min=0.0, max=365.0)),
        expiry_check_seconds=sec.float("expiry_check_seconds", 3600.0, min=1.0, max=86400.0),
        min_free_bytes=sec.int("min_free_bytes", 64 * 1024 * 1024, min=0),
        degraded_http_status=status,
        status_page=sec.bool("status_page", True),
    )
