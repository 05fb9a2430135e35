"""The ``[hmrc]`` section: the S&S GB route (off unless ``enabled = true``).

```toml
[hmrc]
enabled = true
base_url = "https://test-api.service.hmrc.gov.uk"   # sandbox; production: https://api.service.hmrc.gov.uk
eori = "GB1234231"                  # the enrolled EORI: MesSenMES3 of every IE315/IE313 must start with it
client_id = "..."                   # the application's client id (Developer Hub)
client_secret_env = "HMRC_CLIENT_SECRET"   # or client_secret_file; never the secret itself
redirect_uri = "http://localhost:8765/callback"   # registered with the application; loopback for `hmrc authorize`
token_file = "../var/hmrc-token.json"             # written 0600, atomically; the daemon refreshes it
ca_file = "../certs/out/customs-root.pem"         # optional: a private CA (the stand-in); default: system CAs
poll_seconds = 60                   # outcome and notification polling interval
max_poll_seconds = 900              # back-off ceiling on 429 / 5xx
timeout_seconds = 30
refresh_fraction = 0.5              # refresh the access token after this fraction of its lifetime
endpoint = "hmrc"                   # the name filings of this route carry in the journal
test_headers = { simulateRiskingResponse = "accept" }   # sandbox only: refused in production
```
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import LENIENT_SECRETS, GatewayConfig, Section

KNOWN_KEYS = frozenset({
    "enabled", "base_url", "eori", "client_id", "client_secret_env", "client_secret_file", "redirect_uri",
    "token_file", "ca_file", "poll_seconds", "max_poll_seconds", "timeout_seconds", "refresh_fraction", "endpoint",
    "test_headers",
})
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_ENDPOINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_GB_EORI = re.compile(r"^(GB|XI)[0-9A-Za-z]{1,15}$")
_TEST_HEADERS = frozenset({"simulateRiskingResponse", "riskingResponseError", "simulateRiskingResponseLatencyMillis",
                           "simulateInterventionResponse", "simulateInterventionResponseLatencyMillis"})


@dataclass(frozen=True)
class HmrcConfig:
    enabled: bool
    base_url: str
    eori: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    token_file: Path
    ca_file: Path | None
    poll_seconds: float
    max_poll_seconds: float
    timeout_seconds: float
    refresh_fraction: float
    endpoint: str
    test_headers: dict[str, str]


def read_hmrc_config(cfg: GatewayConfig) -> HmrcConfig | None:
    """None when the route is not enabled (the section is absent or ``enabled = false``)."""
    sec: Section = cfg.root.section("hmrc")
    if not sec.data:
        return None
    sec.check_keys(KNOWN_KEYS)
    if not sec.bool("enabled", False):
        return None
    base_url = sec.str("base_url", "https://test-api.service.hmrc.gov.uk")
    if not base_url.startswith("https://"):
        sec.fail("base_url", "must be an https:// URL (the bearer token must never travel in clear)")
    u = urllib.parse.urlsplit(base_url)
    if not u.hostname or u.username or u.password or u.query or u.fragment or "@" in u.netloc:
        sec.fail("base_url", "must be https://host[:port][/path], without credentials, query or fragment")
    if cfg.environment == "production" and "test-api" in base_url:
        sec.fail("base_url", "is HMRC's sandbox, but environment is production")
    if cfg.environment != "production" and base_url.rstrip("/") == "https://api.service.hmrc.gov.uk":
        sec.fail("base_url", "is HMRC's production API, but environment is not production")
    secret = sec.secret("client_secret")
    if not secret and not LENIENT_SECRETS.get():
        sec.fail("client_secret_env", "the client secret is required: give client_secret_env or client_secret_file")
    headers_sec = sec.section("test_headers")
    test_headers: dict[str, str] = {}
    for key, value in headers_sec.data.items():
        if key not in _TEST_HEADERS:
            headers_sec.fail(key, f"is not one of HMRC's sandbox test headers ({', '.join(sorted(_TEST_HEADERS))})")
        if not isinstance(value, str):
            headers_sec.fail(key, "must be a string")
        test_headers[key] = value
    if test_headers and cfg.environment == "production":
        sec.fail("test_headers", "sandbox test headers are refused in production")
    poll = sec.float("poll_seconds", 60.0, min=0.1)
    redirect_uri = sec.str("redirect_uri", "http://localhost:8765/callback")
    r = urllib.parse.urlsplit(redirect_uri)
    if r.scheme not in ("http", "https") or not r.hostname or r.fragment:
        sec.fail("redirect_uri", "must be an http(s) URL without a fragment, as registered with the application")
    if r.scheme == "http" and r.hostname not in _LOOPBACK:
        # `hmrc authorize` listens there for the authorisation code: a plain-http, non-loopback address would
        # hand the code to the network
        sec.fail("redirect_uri", f"plain http is for a loopback redirect only ({', '.join(sorted(_LOOPBACK))}); "
                                 "otherwise use https and paste the code")
    endpoint = sec.str("endpoint", "hmrc", pattern=_ENDPOINT, hint="letters, digits, '.', '_' or '-'")
    return HmrcConfig(
        enabled=True, base_url=base_url.rstrip("/"),
        eori=sec.str("eori", pattern=_GB_EORI, hint="a GB or XI EORI"),
        client_id=sec.str("client_id", pattern=_CLIENT_ID, hint="the Developer Hub client id"),
        client_secret=secret, redirect_uri=redirect_uri,
        token_file=sec.path("token_file", must_exist=False),
        ca_file=sec.path("ca_file", None),
        poll_seconds=poll, max_poll_seconds=sec.float("max_poll_seconds", max(900.0, poll), min=poll),
        timeout_seconds=sec.float("timeout_seconds", 30.0, min=1.0),
        refresh_fraction=sec.float("refresh_fraction", 0.5, min=0.1, max=0.9),
        endpoint=endpoint,
        test_headers=test_headers,
    )
