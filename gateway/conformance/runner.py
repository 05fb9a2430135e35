"""The conformance runner: runs the scenario catalogue (``scenarios.py``) against one Trader Interface endpoint.

It drives the gateway's own components in-process: its ``Engine`` and ``As4Client`` for connectivity, pull and the
deliberately broken messages of ``gateway.conformance.unsafe``; the gateway daemon itself (``pipeline.daemon.
Gateway``, started in this process with a derived configuration: own journal, spool, inbox and submit API under
the working directory) for the business scenarios, which are filed through its submit API and judged by the
journal states the daemon reaches. Against the bundled simulator the simulator's admin report is checked as
well (exactly-once registration, duplicates absorbed).

Safety rules (an unregistered certificate, EBMS:0004/A001, blocks all further exchange at a real TI):
- a production configuration is refused unless ``allow_production``;
- scenarios marked ``negative`` (leaf-only, expired and revoked seals, unauthorised sender, damaged gzip) run
  against the simulator, or against an endpoint whose ``[[endpoints]]`` entry says
  ``negative_tests_enabled = true``; otherwise they are reported as skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.conformance import confgen
from gateway.config import GatewayConfig, load_gateway_config
from gateway.ebms.constants import PARTY_TYPE_AUTH, PARTY_TYPE_EORI, ROLE_CUSTOMS, ROLE_TRADER
from gateway.ebms.engine import Engine
from gateway.ebms.model import Party
from gateway.transport.client import As4Client, EbmsErrorOutcome
from gateway.transport.config import Endpoint, TransportConfig, load_transport_config

log = logging.getLogger("ics2gw.conformance")

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_SAMPLES = REPO / "tests" / "fixtures" / "ics2"
NS = "urn:wco:datamodel:eu:ics2:2"


class RunnerRefused(RuntimeError):
    """The run must not start (production configuration, unknown endpoint ...); the message says why."""


class ScenarioFailed(AssertionError):
    """A scenario's expectation was not met; ``evidence`` holds what was observed."""

    def __init__(self, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence or {}


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    group: str                                   # connectivity | filing | lifecycle | pull | negative
    run: Callable[[Context], Awaitable[dict[str, Any]]]
    negative: bool = False                       # only against the simulator or negative_tests_enabled
    daemon: bool = False                         # needs the in-process gateway (submit API, journal, inbound)
    reference: str = ""                          # what it is modelled on (CTS case family, ICD section)


@dataclass
class ScenarioResult:
    id: str
    title: str
    group: str
    status: str                                  # passed | failed | skipped | error
    seconds: float
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class RunReport:
    endpoint: str
    url: str
    environment: str
    simulator: bool
    negative_enabled: bool
    started: str
    seconds: float
    results: list[ScenarioResult]
    workdir: Path

    @property
    def counts(self) -> dict[str, int]:
        c = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        for r in self.results:
            c[r.status] += 1
        return c

    @property
    def ok(self) -> bool:
        return all(r.status in ("passed", "skipped") for r in self.results) and any(r.passed for r in self.results)


# ------------------------------------------------------------------------------------------------ context
class Context:
    """What a scenario gets: the engine, the client, the endpoint, the in-process gateway and helpers."""

    def __init__(self, cfg: GatewayConfig, tcfg: TransportConfig, endpoint: Endpoint, engine: Engine,
                 client: As4Client, *, sim_admin: str | None, samples: Path, certs: Path, timeout: float,
                 sub_parties: Sequence[str], pull_party: str, unregistered_party: str) -> None:
        self.cfg, self.tcfg, self.endpoint, self.engine, self.client = cfg, tcfg, endpoint, engine, client
        self.sim_admin, self.samples, self.certs, self.timeout = sim_admin, samples, certs, timeout
        self.sub_parties, self.pull_party, self.unregistered_party = list(sub_parties), pull_party, unregistered_party
        self.gateway: Any = None
        self.api_url: str | None = None
        self.http: aiohttp.ClientSession | None = None
        self._n = 0
        # LRN stem unique per run: base-36 seconds since 2024 (6 chars) + 2 random, so reruns never reuse an LRN
        secs = int(time.time()) - 1_704_067_200
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        stem = ""
        while secs:
            secs, r = divmod(secs, 36)
            stem = digits[r] + stem
        import secrets
        self.run_id = (stem or "0") + "".join(secrets.choice(digits) for _ in range(2))

    # -------------------------------------------------------------------------------- parties and payloads
    @property
    def customs(self) -> Party:
        return Party(self.endpoint.party_id, PARTY_TYPE_AUTH, ROLE_CUSTOMS)

    def trader(self, party_id: str | None = None) -> Party:
        return Party(party_id or self.cfg.identity.party_id, PARTY_TYPE_EORI, ROLE_TRADER)

    def engine_for(self, party_id: str) -> Engine:
        """The same sealing identity and trust, speaking as another PartyId (sub-domain party ids)."""
        e = self.engine
        return Engine(e.identity, e.trust, party_id=party_id, fqdn=e.fqdn, limits=e.limits, policy=e.policy)

    def lrn(self, prefix: str = "CT") -> str:
        self._n += 1
        value = f"{prefix}{self.run_id}{self._n:03d}"
        assert len(value) <= 22, value
        return value

    def sample(self, name: str) -> bytes:
        path = self.samples / name
        if not path.exists():
            raise ScenarioFailed(f"sample {path} is missing (give the folder with --samples)")
        return path.read_bytes()

    def ens(self, name: str, lrn: str) -> bytes:
        data = self.sample(name)
        return re.sub(rb"<LRN>[^<]*</LRN>", f"<LRN>{lrn}</LRN>".encode(), data, count=1)

    @staticmethod
    def with_mrn(data: bytes, mrn: str) -> bytes:
        return re.sub(rb"<MRN>[^<]*</MRN>", f"<MRN>{mrn}</MRN>".encode(), data, count=1)

    def mrn_message(self, action: str, mrn: str, eori: str | None = None) -> bytes:
        """A minimal IE3Q04 / IE3R02 / IE3R03 about a registered filing: MRN, then the declarant."""
        eori = eori or self.cfg.identity.eori
        return (f'<?xml version="1.0" encoding="UTF-8"?><{action} xmlns="{NS}"><MRN>{mrn}</MRN>'
                f'<declarant><identificationNumber>{eori}</identificationNumber></declarant></{action}>').encode()

    # -------------------------------------------------------------------------------- the gateway
    async def submit(self, data: bytes, *, action: str | None = None) -> dict[str, Any]:
        if self.http is None or self.api_url is None:
            raise ScenarioFailed("the in-process gateway is not running")
        url = self.api_url + "/filings" + (f"?action={action}" if action else "")
        async with self.http.post(url, data=data, headers={"Content-Type": "application/xml"}) as r:
            body = await r.json(content_type=None)
            if r.status != 202:
                raise ScenarioFailed(f"the submit API answered {r.status}: {body.get('message') or body}",
                                     {"http_status": r.status, "error": body.get("error")})
            return body

    def lifecycle(self, filer: str, lrn: str) -> dict[str, Any] | None:
        reader = self.gateway.components["reader"]
        filing = reader.get_filing_by_key(filer, lrn)
        return reader.lifecycle(filing.id) if filing is not None else None

    async def wait_state(self, filer: str, lrn: str, states: Sequence[str], *, timeout: float | None = None,
                         fail_states: Sequence[str] = ("failed", "held", "rejected-locally", "abandoned")
                         ) -> dict[str, Any]:
        """Polls the journal until the filing is in one of ``states``; fails early on a hopeless state."""
        deadline = time.monotonic() + (timeout or self.timeout)
        life: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            life = self.lifecycle(filer, lrn)
            if life is not None:
                state = life["filing"]["state"]
                if state in states:
                    return life
                if state in fail_states and state not in states:
                    break
            await asyncio.sleep(0.05)
        state = life["filing"]["state"] if life else None
        raise ScenarioFailed(f"filing {lrn} is {state or 'not journaled'}, expected {' or '.join(states)}",
                             {"lrn": lrn, "state": state, "last_error": life["filing"].get("last_error") if life
                              else None, "events": [e["event"] for e in (life or {}).get("events", [])][-8:]})

    # -------------------------------------------------------------------------------- the simulator
    async def sim(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.sim_admin and self.http is not None
        async with self.http.request(method, self.sim_admin + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise ScenarioFailed(f"simulator admin {method} {path}: HTTP {r.status} {data}")
            return data

    async def sim_report(self, lrn: str) -> dict[str, Any] | None:
        rows = await self.sim("GET", "/report")
        return next((row for row in rows if row.get("lrn") == lrn), None)


# ------------------------------------------------------------------------------------------------ helpers
def in_messages(life: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in life.get("messages", []) if m.get("direction") == "in"]


def out_messages(life: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in life.get("messages", []) if m.get("direction") == "out"]


def expect_error(outcome: Any, codes: Sequence[str], *, sub_code: str | None = None) -> dict[str, Any]:
    """The outcome must be an ebMS error with one of ``codes``; an EBMS:0004 must carry ``sub_code`` (A001, found
    by find_sub_code in ErrorDetail, Description or shortDescription)."""
    from gateway.transport.client import summarize
    ev = summarize(outcome)
    if not isinstance(outcome, EbmsErrorOutcome):
        raise ScenarioFailed(f"expected an ebMS error {'/'.join(codes)}, got {ev.get('outcome')}"
                             f"{': ' + str(ev.get('cause')) if ev.get('cause') else ''}", ev)
    got = [e.error_code for e in outcome.errors]
    if not any(c in codes for c in got):
        raise ScenarioFailed(f"expected {'/'.join(codes)}, got {', '.join(got)}: {outcome.description}", ev)
    if sub_code is not None and "EBMS:0004" in got and outcome.sub_code != sub_code:
        raise ScenarioFailed(f"expected sub-code {sub_code} with {outcome.code}, got {outcome.sub_code}", ev)
    first = outcome.errors[0]
    return {"code": ", ".join(got), "sub_code": outcome.sub_code, "signed": outcome.signed,
            "severity": first.severity, "description": (first.description or first.short_description or "")[:120],
            "http_status": outcome.http_status, "ms": round(outcome.elapsed * 1000, 1)}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def _probe_simulator(url: str, endpoint: Endpoint) -> str | None:
    """The simulator admin base URL if the admin at ``url`` serves this very endpoint, else None."""
    base = url.rstrip("/")
    if not base.endswith("/admin"):
        base += "/admin"
    try:
        async with aiohttp.ClientSession() as s, s.get(base + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
            if r.status != 200:
                return None
            body = await r.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
        return None
    sti = urllib.parse.urlsplit(str(body.get("sti_url", "")))
    ep = urllib.parse.urlsplit(endpoint.url)
    same = (sti.port == ep.port and sti.path.rstrip("/") == ep.path.rstrip("/")
            and {sti.hostname, ep.hostname} <= {"127.0.0.1", "localhost", "::1"})
    return base if same else None


# ------------------------------------------------------------------------------------------------ run
async def run_conformance(conf: Path, *, endpoint: str | None = None, scenarios: Sequence[str] | None = None,
                          allow_production: bool = False, sim_admin: str | None = None, probe_simulator: bool = True,
                          workdir: Path | None = None, samples: Path | None = None, certs: Path | None = None,
                          timeout: float | None = None, sub_parties: Sequence[str] | None = None,
                          pull_party: str | None = None, unregistered_party: str = "NL999999999",
                          on_result: Callable[[ScenarioResult], None] | None = None) -> RunReport:
    """Runs the selected scenarios (default: all) against ``endpoint`` of the configuration ``conf``."""
    from gateway.conformance.scenarios import select
    started = dt.datetime.now(dt.timezone.utc)
    t_start = time.monotonic()
    user_cfg = load_gateway_config(conf)
    user_tcfg = load_transport_config(user_cfg)
    if user_cfg.environment == "production" and not allow_production:
        raise RunnerRefused(f"{conf}: environment = \"production\". The conformance runner sends test filings and "
                            "deliberately broken messages; it refuses a production configuration unless "
                            "--allow-production is given")
    try:
        ep = user_tcfg.endpoint(endpoint)
    except KeyError as exc:
        raise RunnerRefused(str(exc.args[0])) from None
    if ep.environment == "production" and not allow_production:
        raise RunnerRefused(f"endpoint {ep.name} is a production endpoint; refused without --allow-production")
    chosen = select(scenarios)

    detected = None
    if sim_admin:
        detected = await _probe_simulator(sim_admin, ep)
        if detected is None:
            raise RunnerRefused(f"{sim_admin} is not the admin endpoint of a simulator serving {ep.url}")
    elif probe_simulator and urllib.parse.urlsplit(ep.url).hostname in ("127.0.0.1", "localhost", "::1"):
        detected = await _probe_simulator("http://127.0.0.1:8480/admin", ep)
    negative_enabled = detected is not None or ep.negative_tests_enabled

    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    workdir = (workdir or Path("var") / "conformance" / stamp).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    doc = confgen.gateway_doc(conf, workdir, validation="warn", fast=detected is not None)
    # every filing of the run goes to the endpoint under test, whatever the routing says
    doc.setdefault("routing", {})["default"] = ep.name
    doc["routing"].pop("countries", None)
    for e in doc.get("endpoints", []):
        if e.get("name") != ep.name:
            e["countries"] = []
    run_conf = confgen.write(workdir / "gateway.toml", doc,
                             f"# generated by `ics2gw conformance` from {conf} (own journal, spool, inbox, API)")
    cfg = load_gateway_config(run_conf)
    tcfg = load_transport_config(cfg)
    ep = tcfg.endpoint(ep.name)
    engine = Engine.from_config(cfg)
    certs = certs or Path(cfg.seal.chain or cfg.seal.key or ".").resolve().parent
    results: list[ScenarioResult] = []
    async with As4Client(engine, tcfg) as client, aiohttp.ClientSession() as http:
        ctx = Context(cfg, tcfg, ep, engine, client, sim_admin=detected, samples=samples or DEFAULT_SAMPLES,
                      certs=certs, timeout=timeout or (20.0 if detected else 600.0),
                      sub_parties=sub_parties or (f"system1@{cfg.identity.eori}", f"{cfg.identity.eori}@FR"),
                      pull_party=pull_party or f"system1@{cfg.identity.eori}", unregistered_party=unregistered_party)
        ctx.http = http
        gw_task: asyncio.Task[Any] | None = None
        try:
            if any(s.daemon for s in chosen):
                gw_task = await _start_gateway(ctx, cfg)
            for sc in chosen:
                res = await _run_one(ctx, sc, negative_enabled)
                results.append(res)
                if on_result:
                    on_result(res)
        finally:
            if gw_task is not None:
                ctx.gateway.request_stop()
                try:
                    await asyncio.wait_for(gw_task, 30)
                except Exception as exc:  # noqa: BLE001 - report, do not mask the results
                    log.warning("the in-process gateway stopped with %s", exc)
    return RunReport(endpoint=ep.name, url=ep.url, environment=cfg.environment, simulator=detected is not None,
                     negative_enabled=negative_enabled, started=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     seconds=time.monotonic() - t_start, results=results, workdir=workdir)


async def _start_gateway(ctx: Context, cfg: GatewayConfig) -> asyncio.Task[Any]:
    from gateway.pipeline.daemon import Gateway
    gw = Gateway(cfg)
    task = asyncio.create_task(gw.run(), name="conformance-gateway")
    deadline = time.monotonic() + 30
    while gw.api_port is None or "reader" not in gw.components:
        if task.done():
            exc = task.exception()
            raise RunnerRefused(f"the gateway could not start: {exc}" if exc else "the gateway stopped at start")
        if time.monotonic() > deadline:
            raise RunnerRefused("the gateway did not start within 30 s")
        await asyncio.sleep(0.02)
    ctx.gateway = gw
    ctx.api_url = f"http://127.0.0.1:{gw.api_port}"
    return task


async def _run_one(ctx: Context, sc: Scenario, negative_enabled: bool) -> ScenarioResult:
    if sc.negative and not negative_enabled:
        return ScenarioResult(sc.id, sc.title, sc.group, "skipped", 0.0, {},
                              f"negative scenario: not enabled for endpoint {ctx.endpoint.name} "
                              "(negative_tests_enabled = true on its [[endpoints]] entry)")
    if sc.daemon and ctx.gateway is None:
        return ScenarioResult(sc.id, sc.title, sc.group, "error", 0.0, {}, "the in-process gateway is not running")
    t0 = time.monotonic()
    try:
        evidence = await sc.run(ctx)
        status, message = "passed", ""
    except ScenarioFailed as exc:
        evidence, status, message = exc.evidence, "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - one broken scenario must not stop the catalogue
        log.exception("scenario %s raised", sc.id)
        evidence, status, message = {}, "error", f"{type(exc).__name__}: {exc}"
    return ScenarioResult(sc.id, sc.title, sc.group, status, time.monotonic() - t0, evidence, message)


# ------------------------------------------------------------------------------------------------ printing
def format_evidence(ev: dict[str, Any], limit: int = 160) -> str:
    parts = []
    for k, v in ev.items():
        if v is None or v == [] or v == "":
            continue
        s = json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)
        parts.append(f"{k}={s}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def print_report(report: RunReport, out: Any, *, evidence_width: int = 160) -> None:
    out.write(f"conformance: endpoint {report.endpoint} ({report.url}), environment {report.environment}, "
              f"{'the bundled simulator' if report.simulator else 'not the simulator'}, negative scenarios "
              f"{'enabled' if report.negative_enabled else 'disabled'}\n\n")
    rows = [("SCENARIO", "GROUP", "RESULT", "TIME", "EVIDENCE")]
    for r in report.results:
        ev = r.message + ("; " if r.message and r.evidence else "") + format_evidence(r.evidence, evidence_width)
        rows.append((r.id, r.group, r.status.upper(), f"{r.seconds * 1000:.0f} ms", ev))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        out.write(f"{row[0]:<{w[0]}}  {row[1]:<{w[1]}}  {row[2]:<{w[2]}}  {row[3]:>{w[3]}}  {row[4]}\n")
    c = report.counts
    out.write(f"\n{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped "
              f"in {report.seconds:.1f} s; working directory {report.workdir}\n")
