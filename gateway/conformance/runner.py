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
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from gateway.conformance import confgen
from gateway.conformance.context import (  # noqa: F401 - re-exported: the runner's public names
    DEFAULT_SAMPLES, Context, RunnerCannotRun, RunnerRefused, RunReport, Scenario, ScenarioFailed, ScenarioResult,
    ScenarioSkipped, expect_error, in_messages, out_messages,
)
from gateway.conformance.scenarios import select
from gateway.config import GatewayConfig, load_gateway_config
from gateway.ebms.engine import Engine
from gateway.transport.client import As4Client
from gateway.transport.config import Endpoint, load_transport_config

log = logging.getLogger("ics2gw.conformance")


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
                          carrier_party: str = "NL987654321",
                          preflight_timeout: float = 20.0,
                          on_result: Callable[[ScenarioResult], None] | None = None) -> RunReport:
    """Runs the selected scenarios (default: all) against ``endpoint`` of the configuration ``conf``."""
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
                      pull_party=pull_party or f"system1@{cfg.identity.eori}", unregistered_party=unregistered_party,
                      carrier_party=carrier_party)
        ctx.http = http
        ctx.run_conf = run_conf
        gw_task: asyncio.Task[Any] | None = None
        # fail fast, naming the cause, before a single scenario runs (not one connection error per scenario)
        if any(s.daemon for s in chosen) and tcfg.inbound.enabled:
            _check_inbound_free(tcfg, run_conf)
        await _check_reachable(ctx, preflight_timeout)
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


def _check_inbound_free(tcfg: Any, conf: Path) -> None:
    """The in-process gateway listens where customs pushes ([inbound] listen). If that address is taken, a daemon
    (or anything else) would get the answers meant for this run: refuse before anything is sent."""
    import errno
    import socket
    for addr in tcfg.inbound.listen:
        family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr.host, addr.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RunnerCannotRun(f"the inbound address {addr} ([inbound] listen of {conf}) is in use, most likely "
                                    "by a running gateway daemon: customs pushes its answers there, so stop that "
                                    "daemon (or give the runner a configuration with another [inbound] listen) and "
                                    "run again") from None
            if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6:
                continue  # no IPv6 on this host: the gateway skips that address too
            raise RunnerCannotRun(f"the inbound address {addr} ([inbound] listen of {conf}) cannot be bound: "
                                f"{exc.strerror or exc}") from None


async def _check_reachable(ctx: Context, timeout: float) -> None:
    """One AS4 ping (the campaign's first step anyway) within ``timeout``: a TI that refuses the connection, fails
    TLS or answers nothing stops the run here with the cause, instead of failing every scenario one by one."""
    from gateway.transport.client import EbmsErrorOutcome, ReceiptOk, summarize
    ep = ctx.endpoint
    msg = await asyncio.to_thread(ctx.engine.ping, ctx.customs)
    try:
        outcome = await asyncio.wait_for(ctx.client.send(ep, msg), timeout)
    except asyncio.TimeoutError:
        raise RunnerCannotRun(f"the TI endpoint {ep.name} ({ep.url}) did not answer a ping within {timeout:.0f} s: "
                            "check the URL, the network path (proxy, firewall) and that the TI is up") from None
    if isinstance(outcome, (ReceiptOk, EbmsErrorOutcome)):
        return  # it answers as an AS4 MSH (an ebMS error is for the scenarios to judge)
    ev = summarize(outcome)
    raise RunnerCannotRun(f"the TI endpoint {ep.name} ({ep.url}) is not usable: {ev.get('cause') or ev.get('outcome')}"
                        f"{' (HTTP ' + str(ev['http_status']) + ')' if ev.get('http_status') else ''}")


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
    except ScenarioSkipped as exc:
        evidence, status, message = {}, "skipped", str(exc)
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
