"""The pipeline's configuration sections: [intake], [api], [pipeline], [alerts] (the journal reads [journal])."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig, Section
from gateway.listen import AUTH_KEYS, ListenerAuth, read_listener_auth
from gateway.pipeline.retry import RetryPolicy, read_retry_policy


@dataclass(frozen=True)
class IntakeConfig:
    spool_dir: Path          # the ERP drops *.xml here (write elsewhere, then rename in: atomic)
    work_dir: Path           # claimed files (atomic rename) while they are being journaled
    archive_dir: Path        # journaled files
    rejected_dir: Path       # malformed or conflicting input, each with a .reason.json
    status_dir: Path         # one JSON status file per filing, kept current
    inbox_dir: Path          # inbound business messages: payload files + JSON metadata
    poll_seconds: float
    validation: str          # block | warn | off
    validation_profile: str | None

    def ensure(self) -> None:
        for d in (self.spool_dir, self.work_dir, self.archive_dir, self.rejected_dir, self.status_dir,
                  self.inbox_dir):
            d.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool
    host: str
    port: int
    max_request_bytes: int
    auth: ListenerAuth = ListenerAuth()   # required for a non-loopback host (gateway.listen)


@dataclass(frozen=True)
class PipelineConfig:
    workers: int
    per_endpoint_concurrency: int
    retry: RetryPolicy
    lease_seconds: float
    idle_poll_seconds: float
    answer_timeout_seconds: float      # a receipted filing with no IE3R01/IE3N99/IE3N01 by then raises an alert
    request_timeout_seconds: float     # an open IE3Q02/IE3Q03 not answered by then raises an alert
    drain_seconds: float               # SIGTERM: how long in-flight sends may take to finish


@dataclass(frozen=True)
class AlertsConfig:
    hook_command: tuple[str, ...]      # run with the alert as JSON on stdin
    webhook_url: str | None            # POSTed the alert as JSON


@dataclass(frozen=True)
class DaemonConfig:
    intake: IntakeConfig
    api: ApiConfig
    pipeline: PipelineConfig
    alerts: AlertsConfig


def read_intake(sec: Section) -> IntakeConfig:
    sec.check_keys({"spool_dir", "work_dir", "archive_dir", "rejected_dir", "status_dir", "inbox_dir",
                    "poll_seconds", "validation", "validation_profile"})
    def p(key: str, default: str) -> Path:
        return sec.path(key, default, must_exist=False)
    return IntakeConfig(
        spool_dir=p("spool_dir", "../var/spool/incoming"), work_dir=p("work_dir", "../var/spool/work"),
        archive_dir=p("archive_dir", "../var/spool/archive"), rejected_dir=p("rejected_dir", "../var/spool/rejected"),
        status_dir=p("status_dir", "../var/status"), inbox_dir=p("inbox_dir", "../var/inbox"),
        poll_seconds=sec.float("poll_seconds", 0.5, min=0.05),
        validation=sec.str("validation", "block", choices=("block", "warn", "off")),
        validation_profile=sec.str("validation_profile", None, choices=("eu-ics1", "uk-ssgb")),
    )


def read_api(sec: Section) -> ApiConfig:
    sec.check_keys({"enabled", "listen", "max_request_bytes"} | AUTH_KEYS)
    listen = sec.str("listen", "127.0.0.1:8481")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        sec.fail("listen", f"{listen!r} is not HOST:PORT")
    return ApiConfig(enabled=sec.bool("enabled", True), host=host, port=int(port),
                     max_request_bytes=sec.int("max_request_bytes", 110 * 1024 * 1024, min=1024),
                     auth=read_listener_auth(sec, "listen", host))


def read_pipeline(sec: Section) -> PipelineConfig:
    sec.check_keys({"workers", "per_endpoint_concurrency", "retry", "lease_seconds", "idle_poll_seconds",
                    "answer_timeout_seconds", "request_timeout_seconds", "drain_seconds"})
    return PipelineConfig(
        workers=sec.int("workers", 8, min=1, max=256),
        per_endpoint_concurrency=sec.int("per_endpoint_concurrency", 8, min=1, max=256),
        retry=read_retry_policy(sec.section("retry")),
        # 60 s: renewed every 20 s while a send lasts, so only a dead or frozen holder loses it; with several
        # instances this is how long a dead instance's in-flight sends wait before another one takes them
        lease_seconds=sec.float("lease_seconds", 60.0, min=1.0),
        idle_poll_seconds=sec.float("idle_poll_seconds", 0.5, min=0.01),
        answer_timeout_seconds=sec.float("answer_timeout_seconds", 3600.0, min=1.0),
        request_timeout_seconds=sec.float("request_timeout_seconds", 4 * 3600.0, min=1.0),
        drain_seconds=sec.float("drain_seconds", 30.0, min=0.0),
    )


def read_alerts(sec: Section) -> AlertsConfig:
    sec.check_keys({"hook_command", "webhook_url"})
    return AlertsConfig(hook_command=tuple(sec.list_str("hook_command", [])),
                        webhook_url=sec.str("webhook_url", None))


def read_daemon_config(cfg: GatewayConfig) -> DaemonConfig:
    root = cfg.root
    return DaemonConfig(intake=read_intake(root.section("intake")), api=read_api(root.section("api")),
                        pipeline=read_pipeline(root.section("pipeline")), alerts=read_alerts(root.section("alerts")))
