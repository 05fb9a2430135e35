"""The ``[amqp]`` section: ERP queues as an intake and an exchange for events (off unless ``enabled = true``).

```toml
[amqp]
enabled = true
url = "amqps://mq.example.internal:5671/erp"   # scheme, host, port, vhost; never credentials
username = "ics2gw"
password_env = "ICS2GW_AMQP_PASSWORD"          # or password_file
ca_file = "/etc/ics2gw/mq-ca.pem"              # amqps: the broker's CA (default: system CAs)
client_cert = "/etc/ics2gw/mq-client.pem"      # amqps: optional client certificate and key
client_key = "/etc/ics2gw/mq-client.key"
intake = true                                  # consume filings from `queues`
queues = ["ics2gw.filings"]
prefetch = 16                                  # unacknowledged messages in flight (backpressure)
max_attempts = 5                               # deliveries of one message before it is dead-lettered
dead_letter_queue = "ics2gw.filings.dead"
events = true                                  # publish filing and inbound events
exchange = "ics2gw.events"                     # a topic exchange; routing keys filing.<state>, inbound.<action>
declare = false                                # declare the queues and exchange (demo, tests); else they must exist
reconnect_initial_seconds = 1.0
reconnect_max_seconds = 30.0
```
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import GatewayConfig, Section

KNOWN_KEYS = frozenset({
    "enabled", "url", "username", "password_env", "password_file", "ca_file", "client_cert", "client_key",
    "intake", "queues", "prefetch", "max_attempts", "dead_letter_queue", "events", "exchange", "declare",
    "reconnect_initial_seconds", "reconnect_max_seconds",
})


@dataclass(frozen=True)
class AmqpConfig:
    url: str                         # without credentials
    username: str | None
    password: str | None = field(repr=False)
    ca_file: Path | None
    client_cert: Path | None
    client_key: Path | None
    intake: bool
    queues: tuple[str, ...]
    prefetch: int
    max_attempts: int
    dead_letter_queue: str
    events: bool
    exchange: str
    declare: bool
    reconnect_initial: float
    reconnect_max: float

    def connection_url(self) -> str:
        """The URL with the credentials put in (never logged: use ``url`` for messages)."""
        if not self.username:
            return self.url
        u = urllib.parse.urlsplit(self.url)
        cred = urllib.parse.quote(self.username, safe="")
        if self.password is not None:
            cred += ":" + urllib.parse.quote(self.password, safe="")
        host = u.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{cred}@{host}" + (f":{u.port}" if u.port else "")
        return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, ""))


def read_amqp_config(cfg: GatewayConfig) -> AmqpConfig | None:
    sec: Section = cfg.root.section("amqp")
    if not sec.data:
        return None
    sec.check_keys(KNOWN_KEYS)
    if not sec.bool("enabled", False):
        return None
    url = sec.str("url", "amqp://127.0.0.1:5672/")
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("amqp", "amqps"):
        sec.fail("url", f"must be an amqp:// or amqps:// URL, not {u.scheme or 'no scheme'}")
    if u.username or u.password:
        sec.fail("url", "must not carry credentials: use username and password_env / password_file")
    if u.scheme == "amqp" and cfg.environment == "production" and u.hostname not in ("127.0.0.1", "::1", "localhost"):
        sec.fail("url", "plain amqp:// to another host in production: use amqps:// (filings and events are "
                        "customs data, the password travels with the connection)")
    if u.scheme == "amqp":
        for key in ("ca_file", "client_cert", "client_key"):
            if key in sec:
                sec.fail(key, "applies to amqps:// only; this url is plain amqp://")
    queues = tuple(sec.list_str("queues", ["ics2gw.filings"]))
    intake = sec.bool("intake", True)
    if intake and not queues:
        sec.fail("queues", "names no queue, but intake = true")
    if sec.str("dead_letter_queue", "ics2gw.filings.dead") in queues:
        sec.fail("dead_letter_queue", "is also an intake queue: a dead letter would be read again, in a loop")
    return AmqpConfig(
        url=url, username=sec.str("username", None), password=sec.secret("password"),
        ca_file=sec.path("ca_file", None), client_cert=sec.path("client_cert", None),
        client_key=sec.path("client_key", None), intake=intake, queues=queues,
        prefetch=sec.int("prefetch", 16, min=1, max=10000), max_attempts=sec.int("max_attempts", 5, min=1, max=100),
        dead_letter_queue=sec.str("dead_letter_queue", "ics2gw.filings.dead"),
        events=sec.bool("events", True), exchange=sec.str("exchange", "ics2gw.events"),
        declare=sec.bool("declare", False),
        reconnect_initial=sec.float("reconnect_initial_seconds", 1.0, min=0.05),
        reconnect_max=sec.float("reconnect_max_seconds", 30.0, min=0.1),
    )
