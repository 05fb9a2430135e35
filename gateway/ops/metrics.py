"""Prometheus metrics: the counters the pipeline moves, and the gauges read from the journal at scrape time.

Why module-level functions: the instrumentation points live in modules other engineers own (client, sender,
inbound, alerts); each is one call such as ``metrics.message_sent(...)`` that never raises and costs a dict lookup.

Why bounded labels: every label value comes from a closed set — configured endpoint names, actions of the ICD
catalogue (anything else is ``other``), ebMS error codes of Annex 4, lanes A/B/C, filing states. An LRN, an MRN or
a MessageId is never a label: each would create a time series per filing and exhaust Prometheus.

Names follow the Prometheus conventions: ``ics2gw_`` prefix, base units in the name (``_seconds``, ``_bytes``),
``_total`` on counters. Journal-derived values (filings by state, queue per lane) are computed when scraped by
``JournalCollector``, so they are exactly what the journal says, never a counter that drifted.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("ics2gw.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 100)
# business answers take seconds (IE3R01) to hours (risk analysis, IE3N03)
_ANSWER_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400)

MESSAGES_SENT = Counter("ics2gw_messages_sent_total",
                        "Send attempts of outbound AS4 user messages by endpoint, action and outcome",
                        ["endpoint", "action", "outcome", "error_code", "sub_code"], registry=REGISTRY)
SEND_RETRIES = Counter("ics2gw_send_retries_total", "Send attempts that ended in a scheduled retry",
                       ["endpoint"], registry=REGISTRY)
EXCHANGES = Counter("ics2gw_exchanges_total",
                    "HTTP exchanges with a customs endpoint (send, ping, pull, ack) by outcome",
                    ["endpoint", "exchange", "outcome"], registry=REGISTRY)
MESSAGES_RECEIVED = Counter("ics2gw_messages_received_total",
                            "Inbound AS4 messages (push or pull) by action and the answer we gave",
                            ["channel", "action", "outcome"], registry=REGISTRY)
INBOUND_REJECTIONS = Counter("ics2gw_inbound_rejections_total",
                             "Inbound messages refused with an ebMS error, by channel and error code",
                             ["channel", "reason"], registry=REGISTRY)
PULLS = Counter("ics2gw_pull_requests_total", "PullRequests sent, by endpoint and outcome",
                ["endpoint", "outcome"], registry=REGISTRY)
EMPTY_PULLS = Counter("ics2gw_pull_empty_total", "PullRequests answered EBMS:0006 (nothing to pull)",
                      ["endpoint"], registry=REGISTRY)
RECEIPT_LATENCY = Histogram("ics2gw_receipt_latency_seconds",
                            "Time from posting a user message to its verified synchronous receipt",
                            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
ANSWER_LATENCY = Histogram("ics2gw_business_answer_latency_seconds",
                           "Time from a filing's intake to a business answer about it (IE3R01, IE3N99 ...)",
                           ["action"], buckets=_ANSWER_BUCKETS, registry=REGISTRY)
ALERTS = Counter("ics2gw_alerts_total", "Operator alerts raised, by kind", ["kind"], registry=REGISTRY)
LEASES_LOST = Counter("ics2gw_send_leases_lost_total", "Send outcomes refused because another instance took the "
                      "message over after this one's lease expired", registry=REGISTRY)
CERT_EXPIRY = Gauge("ics2gw_certificate_expiry_seconds",
                    "Seconds until a configured certificate expires (negative: expired)",
                    ["role", "subject"], registry=REGISTRY)
CRL_NEXT_UPDATE = Gauge("ics2gw_crl_next_update_seconds",
                        "Seconds until a configured CRL's nextUpdate (negative: stale)", ["issuer"], registry=REGISTRY)
ENDPOINT_UP = Gauge("ics2gw_endpoint_up", "1 if the last exchange with the endpoint reached its AS4 handler",
                    ["endpoint"], registry=REGISTRY)
ENDPOINT_FAILURES = Gauge("ics2gw_endpoint_consecutive_failures",
                          "Exchanges with the endpoint that failed in a row", ["endpoint"], registry=REGISTRY)
HEALTH_STATUS = Gauge("ics2gw_health_status", "1 for the current /health status (ok, degraded, failing)",
                      ["status"], registry=REGISTRY)

_ACTION_RE = re.compile(r"^(?:IE3[A-Z]\d\d|IE\d{3}|CC\d{3}[A-Z]|[A-Za-z-]{1,20})$")
_CODE_RE = re.compile(r"^(?:EBMS:\d{4}|[A-Z]{1,8}:?\d{0,4}|[a-z-]{1,20})$")
_known_actions: frozenset[str] | None = None

# recent alerts with the time they were raised, for the status page (the Alerts object keeps no timestamps)
RECENT_ALERTS: deque[dict[str, Any]] = deque(maxlen=200)


def _actions() -> frozenset[str]:
    global _known_actions
    if _known_actions is None:
        try:
            from gateway.ics2.catalogue import CATALOGUE
            _known_actions = frozenset(CATALOGUE) | {"ping", "user-message", "receipt", "error", "pull-request"}
        except Exception:  # noqa: BLE001 - metrics never break the pipeline
            _known_actions = frozenset()
    return _known_actions


def bounded_action(action: str | None) -> str:
    """An action from the ICD catalogue as it is; anything else (a peer can send any string) is ``other``."""
    if not action:
        return "none"
    return action if action in _actions() else "other"


def bounded_code(code: str | None) -> str:
    if not code:
        return ""
    return code if len(code) <= 20 and _CODE_RE.match(code) else "other"


def _safe(fn: Callable[..., None]) -> Callable[..., None]:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.debug("metrics update failed", exc_info=True)
    wrapper.__doc__ = fn.__doc__
    return wrapper


def outcome_facts(outcome: object) -> tuple[str, str, str]:
    """(outcome, error_code, sub_code) of a transport outcome, as bounded label values."""
    kind = type(outcome).__name__
    name = {"ReceiptOk": "receipt-ok", "EbmsErrorOutcome": "ebms-error", "TransportFailure": "transport-failure",
            "InvalidReceipt": "invalid-receipt", "PulledMessage": "message", "EmptyChannel": "empty",
            "InvalidMessage": "invalid-message", "SignalAccepted": "accepted"}.get(kind, "other")
    code = sub = ""
    if kind == "EbmsErrorOutcome":
        code, sub = getattr(outcome, "code", "") or "", getattr(outcome, "sub_code", "") or ""
    elif kind == "TransportFailure":
        code = str(getattr(outcome, "kind", "") or "")
    elif kind in ("InvalidReceipt", "InvalidMessage"):
        code = str(getattr(getattr(outcome, "fault", None), "code", "") or "")
    return name, bounded_code(code), bounded_code(sub)


# ------------------------------------------------------------------------------------------- instrumentation points
@_safe
def exchange(endpoint: str, exchange_kind: str, outcome: object) -> None:
    """Every HTTP exchange of ``As4Client`` (send, ping, pull, ack): counters and the endpoint's health."""
    from gateway.ops.health import ENDPOINTS
    name, code, _ = outcome_facts(outcome)
    EXCHANGES.labels(endpoint, exchange_kind, name).inc()
    if exchange_kind == "pull":
        PULLS.labels(endpoint, name).inc()
        if name == "empty":
            EMPTY_PULLS.labels(endpoint).inc()
    if name == "receipt-ok" and exchange_kind == "send":
        RECEIPT_LATENCY.labels(endpoint).observe(float(getattr(outcome, "elapsed", 0.0) or 0.0))
    reached = name not in ("transport-failure", "invalid-receipt")
    detail = "" if reached else (str(getattr(outcome, "cause", "") or "") or
                                 str(getattr(getattr(outcome, "fault", None), "message", "") or code))[:300]
    st = ENDPOINTS.record(endpoint, exchange_kind, reached, detail)
    ENDPOINT_UP.labels(endpoint).set(1 if reached else 0)
    ENDPOINT_FAILURES.labels(endpoint).set(st.consecutive_failures)


@_safe
def lease_lost() -> None:
    LEASES_LOST.inc()


@_safe
def message_sent(endpoint: str, action: str | None, outcome: object, verdict: str) -> None:
    """One send attempt of a journaled user message, as the sender classified it (receipted/retry/...)."""
    name, code, sub = outcome_facts(outcome)
    MESSAGES_SENT.labels(endpoint, bounded_action(action), name, code, sub).inc()
    if verdict == "retry":
        SEND_RETRIES.labels(endpoint).inc()


@_safe
def message_received(channel: str, action: str | None, answer_kind: str, *, duplicate: bool = False,
                     ping: bool = False, error_code: str | None = None) -> None:
    """One inbound message and the answer we returned (receipt, or an ebMS error = a rejection)."""
    outcome = "ping" if ping else "duplicate" if duplicate else answer_kind
    MESSAGES_RECEIVED.labels(channel, bounded_action(action), outcome).inc()
    if answer_kind == "error":
        INBOUND_REJECTIONS.labels(channel, bounded_code(error_code) or "other").inc()


@_safe
def business_answer(action: str | None, filing_created_at: str | None) -> None:
    """A business answer correlated to a filing: how long after intake it came."""
    if not filing_created_at:
        return
    from gateway.journal.timeutil import parse_iso
    age = time.time() - parse_iso(filing_created_at).timestamp()
    ANSWER_LATENCY.labels(bounded_action(action)).observe(max(0.0, age))


@_safe
def alert_raised(alert: dict[str, Any]) -> None:
    kind = str(alert.get("alert", "other"))
    ALERTS.labels(kind if re.fullmatch(r"[a-z0-9-]{1,40}", kind) else "other").inc()
    RECENT_ALERTS.appendleft({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **alert})


# ------------------------------------------------------------------------------------------- scrape-time collectors
class JournalCollector:
    """Reads the journal when Prometheus scrapes: filings by state, queue per lane, open requests and orphans,
    and the journal writer's commit counters. Registered by the daemon; ``queries`` is a ``JournalQueries``."""

    def __init__(self, queries: Any, writer_stats: Callable[[], Any] | None = None,
                 environment: str = "", version: str = "", instance: str = "", backend: str = "sqlite",
                 leader_of: Callable[[], list[str]] | None = None) -> None:
        self.queries, self.writer_stats = queries, writer_stats
        self.environment, self.version = environment, version
        self.instance, self.backend, self.leader_of = instance, backend, leader_of

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: no duplicate-name check against the static metrics

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("ics2gw_info", "Gateway build, environment, instance id and journal backend",
                                 labels=["environment", "version", "instance", "journal_backend"])
        info.add_metric([self.environment, self.version, self.instance, self.backend], 1)
        yield info
        if self.leader_of is not None:
            held = GaugeMetricFamily("ics2gw_singleton_held", "Singleton tasks this instance runs now (1 each; "
                                     "sum over instances: 1 per task)", labels=["task"])
            for name in self.leader_of():
                held.add_metric([name], 1)
            yield held
        filings = GaugeMetricFamily("ics2gw_filings", "Filings in the journal by state", labels=["state"])
        for state, n in sorted(self.queries.counts_by_state().items()):
            filings.add_metric([state], n)
        yield filings
        now = time.time()
        depth = GaugeMetricFamily("ics2gw_queue_messages", "Outbound messages queued per priority lane",
                                  labels=["lane"])
        inflight = GaugeMetricFamily("ics2gw_queue_in_flight_messages", "Outbound messages being sent per lane",
                                     labels=["lane"])
        age = GaugeMetricFamily("ics2gw_queue_oldest_age_seconds",
                                "Age of the oldest queued outbound message per lane (0 when empty)", labels=["lane"])
        from datetime import datetime
        now_dt = datetime.fromtimestamp(now, UTC)
        for lane, st in sorted(self.queries.lanes().items()):
            depth.add_metric([lane], st.queued)
            inflight.add_metric([lane], st.sending)
            age.add_metric([lane], st.oldest_age_seconds(now_dt))
        yield depth
        yield inflight
        yield age
        requests = GaugeMetricFamily("ics2gw_customs_requests_open", "Open customs requests by kind",
                                     labels=["kind"])
        for kind, n in sorted(self.queries.open_request_counts().items()):
            requests.add_metric([kind], n)
        yield requests
        yield GaugeMetricFamily("ics2gw_orphans_open", "Inbound messages that matched no filing, unresolved",
                                value=self.queries.orphans_open())
        if self.writer_stats is not None:
            st = self.writer_stats()
            yield CounterMetricFamily("ics2gw_journal_commits", "Journal commits (one WAL fsync each)",
                                      value=st.commits)
            yield CounterMetricFamily("ics2gw_journal_changes", "Journal changes committed (group commit: "
                                      "changes / commits is the mean batch size)", value=st.changes)
            yield CounterMetricFamily("ics2gw_journal_batches", "Group-commit batches run", value=st.batches)
            yield CounterMetricFamily("ics2gw_journal_failed_changes", "Journal changes that failed",
                                      value=st.failed)
            yield GaugeMetricFamily("ics2gw_journal_batch_size_max", "Largest group-commit batch since start",
                                    value=st.max_batch_seen)


_journal_collector: JournalCollector | None = None


def register_journal(collector: JournalCollector) -> None:
    """Installs the daemon's journal collector (replacing an earlier one: tests start several gateways)."""
    global _journal_collector
    if _journal_collector is not None:
        try:
            REGISTRY.unregister(_journal_collector)
        except KeyError:
            pass
    REGISTRY.register(collector)
    _journal_collector = collector


def unregister_journal() -> None:
    global _journal_collector
    if _journal_collector is not None:
        try:
            REGISTRY.unregister(_journal_collector)
        except KeyError:
            pass
        _journal_collector = None


def render() -> bytes:
    """The text exposition format of everything above."""
    return generate_latest(REGISTRY)
