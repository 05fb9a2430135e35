"""The transport sections of the gateway configuration: [tls], [[endpoints]], [routing], [inbound], [pull], [health].

Why one reader: the environment binding (eDelivery 1.4.4.7) must be checked in one place: every endpoint
declares the environment it belongs to, and it must equal the configuration's ``environment``, so a
conformance configuration can never send to a production Trader Interface (and the reverse). The TLS
material may declare it too (``[tls] environment``). Secrets (PKCS#12 / key passwords) come only from
``*_env`` or ``*_file`` keys (``Section.secret``).

Example (conf/gateway.toml holds the bundled-simulator defaults)::

    [tls]
    client_cert = "../certs/out/trader-tls-client.pem"   # leaf first; client_chain adds issuers
    client_key = "../certs/out/trader-tls-client.key"
    client_chain = ["../certs/out/trader-int.pem"]
    ca_bundle = ["../certs/out/customs-root.pem"]          # verifies the Trader Interface's server certificate
    server_cert = "../certs/out/trader-tls-server.pem"     # our inbound server (c2t push)
    server_key = "../certs/out/trader-tls-server.key"
    client_ca = ["../certs/out/customs-root.pem"]          # CAs whose client certificates may push to us
    min_version = "TLSv1.2"
    ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:..."

    [[endpoints]]
    name = "sti"  url = "https://..."  party_id = "sti-taxud"  environment = "conformance"  countries = [...]

    [routing]   default = "sti"   countries = { FR = "nti-fr" }
    [inbound]   enabled = true  listen = ["127.0.0.1:8444", "[::1]:8444"]  path = "/as4"  max_request_bytes = ...
    [pull]      enabled = false  endpoint = "sti"  min_interval = 1.0  max_interval = 60.0
    [health]    listen = "127.0.0.1:8480"
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config import ENVIRONMENTS, GatewayConfig, Section
from gateway.listen import AUTH_KEYS, ListenerAuth, read_listener_auth

# ENISA "Algorithms, key size and protocols report" (2014), which eDelivery AS4 1.15 section 1.4.2.6 cites:
# forward secrecy (ECDHE) with AEAD (AES-GCM) for TLS 1.2. TLS 1.3 suites are all AEAD with forward secrecy.
DEFAULT_CIPHERS = ("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                   "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
CUSTOMS_PARTY_RE = re.compile(r"^(?:sti-taxud|nti-[a-z]{2})$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class KeyMaterial:
    """A certificate + key, from PEM files (``cert`` may hold the chain; ``chain`` adds issuers) or PKCS#12."""
    cert: Path | None = None
    key: Path | None = None
    chain: tuple[Path, ...] = ()
    pkcs12: Path | None = None
    password: str | None = field(default=None, repr=False)  # never printed

    @property
    def configured(self) -> bool:
        return bool(self.pkcs12 or self.cert)

    @property
    def source(self) -> str:
        return str(self.pkcs12 or self.cert or "none")


@dataclass(frozen=True)
class TlsConfig:
    client: KeyMaterial
    ca_bundle: tuple[Path, ...]          # trust anchors for the TI server certificates
    server: KeyMaterial
    client_ca: tuple[Path, ...]          # trust anchors for client certificates pushing to our inbound server
    min_version: str = "TLSv1.2"
    max_version: str | None = None
    ciphers: str = DEFAULT_CIPHERS       # TLS 1.2 and below (OpenSSL cipher string)
    handshake_timeout: float = 10.0


@dataclass(frozen=True)
class Endpoint:
    """One customs Trader Interface MSH (ICD 5.2): where t2c messages go and where we pull from."""
    name: str
    url: str
    party_id: str                        # sti-taxud | nti-xx: eb:To follows the chosen TI
    environment: str
    countries: tuple[str, ...] = ()
    proxy: str | None = None
    proxy_user: str | None = None
    proxy_password: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    total_timeout: float = 100.0
    server_name: str | None = None       # TLS host name to verify when the URL names an address (DMZ set-ups)
    ca_bundle: tuple[Path, ...] = ()     # overrides [tls] ca_bundle for this endpoint
    negative_tests_enabled: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


@dataclass(frozen=True)
class RoutingConfig:
    default: str                         # endpoint name when neither office nor Member State names one
    countries: dict[str, str]            # country code -> endpoint name (overrides endpoint countries lists)


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class InboundConfig:
    enabled: bool
    listen: tuple[ListenAddress, ...]
    path: str
    max_request_bytes: int
    max_concurrent: int = 32                      # messages processed (verify, journal) at once
    # slow and large peers (docs/security.md "Daemon robustness"): see gateway/transport/server.py
    read_timeout_seconds: float = 60.0            # TLS handshake; then headers + body of each request
    min_rate_bytes_per_second: int = 1024         # after rate_grace_seconds, slower requests are cut
    rate_grace_seconds: float = 5.0
    max_connections: int = 256                    # open connections in total
    max_connections_per_peer: int = 16            # open connections per client IP address
    max_inflight_bytes: int = 64 * 1024 * 1024    # bodies being processed at once (spooled bodies wait)
    body_dir: Path | None = None                  # where request bodies are spooled (default: system temp)


@dataclass(frozen=True)
class PullConfig:
    enabled: bool
    endpoint: str | None
    min_interval: float
    max_interval: float
    receipt_retry_interval: float = 2.0
    receipt_max_attempts: int = 20


@dataclass(frozen=True)
class HealthConfig:
    listen: ListenAddress | None
    auth: ListenerAuth = ListenerAuth()   # required for a non-loopback address (gateway.listen)


HEALTH_KEYS = frozenset({"listen"}) | AUTH_KEYS


@dataclass(frozen=True)
class TransportConfig:
    environment: str
    tls: TlsConfig
    endpoints: dict[str, Endpoint]
    routing: RoutingConfig
    inbound: InboundConfig
    pull: PullConfig
    health: HealthConfig

    def endpoint(self, name: str | None = None) -> Endpoint:
        """The endpoint called ``name`` (or the routing default); KeyError names the known ones."""
        name = name or self.routing.default
        try:
            return self.endpoints[name]
        except KeyError:
            raise KeyError(f"no endpoint named {name!r} (configured: {', '.join(self.endpoints) or 'none'})") from None


# ------------------------------------------------------------------------------------------------ readers
def parse_listen(sec: Section, key: str, value: str) -> ListenAddress:
    """``127.0.0.1:8444``, ``[::1]:8444`` or ``localhost:8444``."""
    m = re.match(r"^\[(?P<v6>[^\]]+)\]:(?P<p1>\d+)$|^(?P<host>[^:\[\]]+):(?P<p2>\d+)$", value)
    if not m:
        sec.fail(key, f"{value!r} is not HOST:PORT (IPv6 in brackets: \"[::1]:8444\")")
    host = m.group("v6") or m.group("host")
    port = int(m.group("p1") or m.group("p2"))
    if port > 65535:
        sec.fail(key, f"port {port} is out of range")
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            sec.fail(key, f"{host!r} is not an IPv6 address")
    return ListenAddress(host, port)


def _key_material(sec: Section, prefix: str) -> KeyMaterial:
    cert = sec.path(f"{prefix}_cert", None)
    key = sec.path(f"{prefix}_key", None)
    p12 = sec.path(f"{prefix}_pkcs12", None)
    chain = tuple(sec.paths(f"{prefix}_chain", []))
    if p12 and (cert or key):
        sec.fail(f"{prefix}_pkcs12", f"give either {prefix}_pkcs12 or {prefix}_cert + {prefix}_key, not both")
    if bool(cert) != bool(key):
        sec.fail(f"{prefix}_key" if cert else f"{prefix}_cert", f"{prefix}_cert and {prefix}_key go together")
    return KeyMaterial(cert=cert, key=key, chain=chain, pkcs12=p12, password=sec.secret(f"{prefix}_password"))


def read_tls(sec: Section, environment: str) -> TlsConfig:
    sec.check_keys({"client_cert", "client_key", "client_chain", "client_pkcs12", "client_password",
                    "server_password", "client_password_env",
                    "client_password_file", "ca_bundle", "server_cert", "server_key", "server_chain",
                    "server_pkcs12", "server_password_env", "server_password_file", "client_ca", "min_version",
                    "max_version", "ciphers", "handshake_timeout", "environment"})
    env = sec.str("environment", None, choices=ENVIRONMENTS)
    if env is not None and env != environment:
        sec.fail("environment", f"the TLS material is declared for {env!r} but the configuration is "
                                f"{environment!r} (eDelivery 1.4.4.7: environments never mix)")
    min_v = sec.str("min_version", "TLSv1.2", choices=TLS_VERSIONS)
    max_v = sec.str("max_version", None, choices=TLS_VERSIONS)
    if max_v is not None and TLS_VERSIONS.index(max_v) < TLS_VERSIONS.index(min_v):
        sec.fail("max_version", f"{max_v} is below min_version {min_v}")
    ciphers = sec.str("ciphers", DEFAULT_CIPHERS)
    if not ciphers.strip():
        sec.fail("ciphers", "must not be empty")
    return TlsConfig(client=_key_material(sec, "client"), ca_bundle=tuple(sec.paths("ca_bundle", [])),
                     server=_key_material(sec, "server"), client_ca=tuple(sec.paths("client_ca", [])),
                     min_version=min_v, max_version=max_v, ciphers=ciphers,
                     handshake_timeout=sec.float("handshake_timeout", 10.0, min=0.1, max=300))


_ENDPOINT_KEYS = {"name", "url", "party_id", "environment", "countries", "proxy", "proxy_user", "proxy_password",
                  "proxy_password_env", "proxy_password_file", "connect_timeout", "total_timeout", "server_name",
                  "ca_bundle", "negative_tests_enabled"}


def read_endpoint(sec: Section, environment: str) -> Endpoint:
    sec.check_keys(_ENDPOINT_KEYS)
    name = sec.str("name", pattern=_NAME_RE, hint="letters, digits, '.', '_' and '-'")
    url = sec.str("url")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        sec.fail("url", f"{url!r} must be an https:// URL (TLS is mandatory, ICD 4.6.1)")
    party_id = sec.str("party_id", pattern=CUSTOMS_PARTY_RE, hint="sti-taxud or nti-<ISO country code, lower case>")
    env = sec.str("environment", choices=ENVIRONMENTS)
    if env != environment:
        sec.fail("environment", f"endpoint {name!r} belongs to {env!r} but this configuration is {environment!r}; "
                                "a message meant for one environment must never reach the other (eDelivery 1.4.4.7)")
    countries = tuple(c for c in sec.list_str("countries", []))
    for c in countries:
        if not COUNTRY_RE.match(c):
            sec.fail("countries", f"{c!r} is not an ISO 3166 alpha-2 code in upper case")
    proxy = sec.str("proxy", None)
    if proxy is not None:
        p = urlsplit(proxy)
        if p.scheme not in ("http", "https") or not p.hostname:
            sec.fail("proxy", f"{proxy!r} must be an http:// or https:// proxy URL")
        if p.password:
            sec.fail("proxy", "no password in the proxy URL: use proxy_user with proxy_password_env or _file")
    connect = sec.float("connect_timeout", 5.0, min=0.1, max=600)
    total = sec.float("total_timeout", 100.0, min=1, max=3600)
    if total < connect:
        sec.fail("total_timeout", f"{total} is shorter than connect_timeout {connect}")
    return Endpoint(name=name, url=url, party_id=party_id, environment=env, countries=countries, proxy=proxy,
                    proxy_user=sec.str("proxy_user", None), proxy_password=sec.secret("proxy_password"),
                    connect_timeout=connect, total_timeout=total, server_name=sec.str("server_name", None),
                    ca_bundle=tuple(sec.paths("ca_bundle", [])),
                    negative_tests_enabled=sec.bool("negative_tests_enabled", False))


def load_transport_config(cfg: GatewayConfig | Section, environment: str | None = None) -> TransportConfig:
    """Reads the transport sections of ``cfg`` (a loaded GatewayConfig, or the root Section of a file)."""
    root: Section = cfg.root if isinstance(cfg, GatewayConfig) else cfg
    env = environment or (cfg.environment if isinstance(cfg, GatewayConfig) else root.str("environment",
                                                                                          choices=ENVIRONMENTS))
    tls = read_tls(root.section("tls"), env)

    endpoints: dict[str, Endpoint] = {}
    for s in root.sections("endpoints"):
        ep = read_endpoint(s, env)
        if ep.name in endpoints:
            s.fail("name", f"endpoint name {ep.name!r} is used twice")
        endpoints[ep.name] = ep

    rs = root.section("routing")
    rs.check_keys({"default", "countries"})
    default = rs.str("default", next(iter(endpoints), ""))
    if endpoints and default not in endpoints:
        rs.fail("default", f"no endpoint named {default!r} (configured: {', '.join(endpoints)})")
    countries: dict[str, str] = {}
    for ep in endpoints.values():
        for c in ep.countries:
            if c in countries:
                root.fail("endpoints", f"country {c} is listed by endpoints {countries[c]!r} and {ep.name!r}")
            countries[c] = ep.name
    cs = rs.section("countries")
    for c, target in cs.data.items():
        if not COUNTRY_RE.match(c):
            cs.fail(c, "keys are ISO 3166 alpha-2 codes in upper case")
        if not isinstance(target, str) or target not in endpoints:
            cs.fail(c, f"{target!r} is not the name of a configured endpoint")
        countries[c] = target

    ins = root.section("inbound")
    ins.check_keys({"enabled", "listen", "path", "max_request_bytes", "max_concurrent", "read_timeout_seconds",
                    "min_rate_bytes_per_second", "rate_grace_seconds", "max_connections", "max_connections_per_peer",
                    "max_inflight_bytes", "body_dir"})
    listen = tuple(parse_listen(ins, "listen", v) for v in ins.list_str("listen", ["127.0.0.1:8444", "[::1]:8444"]))
    path = ins.str("path", "/as4")
    if not path.startswith("/"):
        ins.fail("path", "must start with '/'")
    limits_max = root.section("limits").int("recv_max_message_bytes", 32 * 1024 * 1024)
    max_request = ins.int("max_request_bytes", limits_max, min=1024)
    inbound = InboundConfig(enabled=ins.bool("enabled", "inbound" in root), listen=listen, path=path,
                            max_request_bytes=max_request,
                            max_concurrent=ins.int("max_concurrent", 32, min=1, max=4096),
                            read_timeout_seconds=ins.float("read_timeout_seconds", 60.0, min=0.1),
                            min_rate_bytes_per_second=ins.int("min_rate_bytes_per_second", 1024, min=0),
                            rate_grace_seconds=ins.float("rate_grace_seconds", 5.0, min=0.0),
                            max_connections=ins.int("max_connections", 256, min=1, max=65536),
                            max_connections_per_peer=ins.int("max_connections_per_peer", 16, min=1, max=65536),
                            max_inflight_bytes=ins.int("max_inflight_bytes", max(64 * 1024 * 1024, max_request),
                                                       min=1024),
                            body_dir=ins.path("body_dir", None, must_exist=False))
    if inbound.max_inflight_bytes < inbound.max_request_bytes:
        ins.fail("max_inflight_bytes", f"{inbound.max_inflight_bytes} is below max_request_bytes "
                                       f"({inbound.max_request_bytes}): a maximal message could never be processed")
    if inbound.enabled and not (tls.server.configured and tls.client_ca):
        ins.fail("enabled", "the inbound server needs [tls] server_cert + server_key (or server_pkcs12) and "
                            "client_ca (the CAs whose client certificates may push to us)")

    ps = root.section("pull")
    ps.check_keys({"enabled", "endpoint", "min_interval", "max_interval", "receipt_retry_interval",
                   "receipt_max_attempts"})
    pull_ep = ps.str("endpoint", default or None)
    if ps.bool("enabled", False) and pull_ep not in endpoints:
        ps.fail("endpoint", f"no endpoint named {pull_ep!r} to pull from")
    min_i = ps.float("min_interval", 1.0, min=0.01, max=3600)
    max_i = ps.float("max_interval", 60.0, min=0.01, max=86400)
    if max_i < min_i:
        ps.fail("max_interval", f"{max_i} is below min_interval {min_i}")
    pull = PullConfig(enabled=ps.bool("enabled", False), endpoint=pull_ep, min_interval=min_i, max_interval=max_i,
                      receipt_retry_interval=ps.float("receipt_retry_interval", 2.0, min=0.01, max=3600),
                      receipt_max_attempts=ps.int("receipt_max_attempts", 20, min=1, max=10000))

    hs = root.section("health")
    from gateway.ops.config import KEYS as OPS_HEALTH_KEYS  # /health rules, expiry thresholds (gateway/ops)
    hs.check_keys({*HEALTH_KEYS, *OPS_HEALTH_KEYS})
    hv = hs.str("listen", "127.0.0.1:8480")
    health_addr = parse_listen(hs, "listen", hv) if hv else None
    health_auth = read_listener_auth(hs, "listen", health_addr.host if health_addr else "127.0.0.1")

    return TransportConfig(environment=env, tls=tls, endpoints=endpoints,
                           routing=RoutingConfig(default=default, countries=countries),
                           inbound=inbound, pull=pull, health=HealthConfig(listen=health_addr, auth=health_auth))


def describe(tc: TransportConfig) -> dict[str, Any]:
    """A printable summary without secrets (for doctor and logs)."""
    return {
        "environment": tc.environment,
        "endpoints": {n: {"url": e.url, "party_id": e.party_id, "countries": list(e.countries),
                          "proxy": e.proxy} for n, e in tc.endpoints.items()},
        "inbound": [str(a) for a in tc.inbound.listen] if tc.inbound.enabled else [],
        "pull": tc.pull.endpoint if tc.pull.enabled else None,
        "tls": {"min_version": tc.tls.min_version, "max_version": tc.tls.max_version,
                "client": tc.tls.client.source, "server": tc.tls.server.source},
    }
