"""What a scenario works with, shared by the runner (``runner.py``) and the catalogue (``scenarios.py``).

Why a module of its own: the runner runs the catalogue and the catalogue uses the runner's types; with the
types here both import this module and neither imports the other (DESIGN.md: no import circles).
``Context`` gives a scenario the engine, the client, the endpoint, the in-process gateway and helpers;
``Scenario`` / ``ScenarioResult`` / ``RunReport`` describe the catalogue and its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import GatewayConfig
from gateway.ebms.constants import MPC_PREFIX, PARTY_TYPE_AUTH, PARTY_TYPE_EORI, ROLE_CUSTOMS, ROLE_TRADER
from gateway.ebms.engine import Engine
from gateway.ebms.model import Party
from gateway.transport.client import As4Client, EbmsErrorOutcome
from gateway.transport.config import Endpoint, TransportConfig

log = logging.getLogger("ics2gw.conformance")

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_SAMPLES = REPO / "tests" / "fixtures" / "ics2"
NS = "urn:wco:datamodel:eu:ics2:2"


class RunnerRefused(RuntimeError):
    """The run must not start (production configuration, unknown endpoint ...); the message says why."""


class RunnerCannotRun(RunnerRefused):
    """The run cannot start in this environment (TI unreachable, inbound address taken); the message names why."""


class ScenarioFailed(AssertionError):
    """A scenario's expectation was not met; ``evidence`` holds what was observed."""

    def __init__(self, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence or {}


class ScenarioSkipped(Exception):
    """The scenario cannot run here (e.g. it needs the simulator to trigger a customs message); the message says
    why and what the campaign does instead."""


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
                 sub_parties: Sequence[str], pull_party: str, unregistered_party: str,
                 carrier_party: str = "NL987654321") -> None:
        self.cfg, self.tcfg, self.endpoint, self.engine, self.client = cfg, tcfg, endpoint, engine, client
        self.sim_admin, self.samples, self.certs, self.timeout = sim_admin, samples, certs, timeout
        self.sub_parties, self.pull_party, self.unregistered_party = list(sub_parties), pull_party, unregistered_party
        self.carrier_party = carrier_party           # a carrier's PartyId in pull mode that files nothing itself
        self.gateway: Any = None
        self.run_conf: Path | None = None            # the derived gateway configuration of this run
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

    async def sim_outbound(self, message_id: str) -> dict[str, Any] | None:
        rows = await self.sim("GET", "/outbound")
        return next((row for row in rows if row.get("message_id") == message_id), None)

    # -------------------------------------------------------------------------------- pulling
    def pull_party_mpc(self, party_id: str | None = None) -> str:
        return MPC_PREFIX + (party_id or self.pull_party)

    async def pull(self, party_id: str | None = None, *, acknowledge: bool = True) -> Pulled:
        """One PullRequest on the MPC of ``party_id`` (default: the pull-mode party). A pulled message goes through
        the in-process gateway's inbound path (verification, correlation, journal, inbox) exactly as the daemon's
        puller hands it over, so it is durable *before* its receipt leaves; nothing pulled is ever dropped.
        ``acknowledge=False`` keeps the receipt back (to see the TI re-offer the message)."""
        if self.gateway is None:
            raise ScenarioFailed("pulling needs the in-process gateway (its journal keeps what is pulled)")
        from gateway.transport.client import InvalidMessage, PulledMessage
        from gateway.transport.server import InboundProcessor
        party = party_id or self.pull_party
        engine = self.engine_for(party)
        mpc = self.pull_party_mpc(party)
        processor = InboundProcessor(engine, self.gateway.components["sink"], environment=self.client.environment)
        request = await asyncio.to_thread(engine.pull_request, mpc)
        outcome = await self.client.pull(self.endpoint, request, mpc)
        answer = None
        if isinstance(outcome, PulledMessage):
            answer = await processor.process(outcome.content_type, outcome.body, channel="pull",
                                             opened=outcome.inbound, expected_mpc=mpc)
        elif isinstance(outcome, InvalidMessage):
            answer = await processor.process(outcome.content_type, outcome.body, channel="pull", fault=outcome.fault)
        ack = None
        if answer is not None and acknowledge:
            ack = await self.client.post_signal(self.endpoint, answer.content_type, answer.body,
                                                message_id=answer.signal_id or "", ref_to_message_id=answer.message_id)
        return Pulled(outcome, answer, ack, request.message_id)

    async def pull_until(self, predicate: Callable[[Any], bool], party_id: str | None = None, *,
                         timeout: float | None = None) -> tuple[Any, list[Pulled]]:
        """Pulls (and journals, and acknowledges) until a pulled user message satisfies ``predicate``; every
        other message pulled meanwhile is journaled too (an orphan if it matches no filing), never dropped."""
        from gateway.transport.client import EmptyChannel, PulledMessage, SignalAccepted, summarize
        deadline = time.monotonic() + (timeout or self.timeout)
        seen: list[Pulled] = []
        while time.monotonic() < deadline:
            p = await self.pull(party_id)
            seen.append(p)
            if isinstance(p.outcome, EmptyChannel):
                await asyncio.sleep(0.2)
                continue
            if not isinstance(p.outcome, PulledMessage):
                raise ScenarioFailed(f"the pull failed: {summarize(p.outcome)}", summarize(p.outcome))
            if p.answer is None or p.answer.kind != "receipt":
                why = f"{p.answer.error_code} {p.answer.reason}" if p.answer else "no answer"
                raise ScenarioFailed(f"the gateway refused the pulled message {p.outcome.message_id}: {why}")
            if not isinstance(p.ack, SignalAccepted):
                raise ScenarioFailed(f"the TI refused the receipt for {p.outcome.message_id}: {summarize(p.ack)}",
                                     summarize(p.ack))
            if predicate(p.outcome.inbound):
                return p.outcome.inbound, seen
        raise ScenarioFailed(f"nothing expected on {self.pull_party_mpc(party_id)} within "
                             f"{timeout or self.timeout:.0f} s", {"pulls": len(seen)})

    def journaled_inbound(self, message_id: str, sender_party: str | None = None) -> Any:
        """The journal record of a received customs message (None if it was never journaled)."""
        reader = self.gateway.components["reader"]
        return reader.get_message(message_id, direction="in", sender_party=sender_party or self.endpoint.party_id)


@dataclass
class Pulled:
    """One pull: the client's outcome, the gateway's answer (receipt / error) and the TI's answer to that."""
    outcome: Any
    answer: Any
    ack: Any
    request_id: str


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


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


_ms = ms
