"""Reading ``conf/simulator.toml``: every error names the file and the key (``gateway.config.Section``).

Relative paths resolve against the directory of the configuration file, so ``../certs/out/...`` and the
registry ``../var/simulator.sqlite`` of ``conf/simulator.toml`` land in the repository whatever the working
directory. See ``docs/simulator.md`` for every key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import EORI_RE, PARTY_ID_RE, Limits, Section, load_toml, read_limits
from gateway.ebms.constants import MPC_PREFIX
from gateway.simulator.faults import KNOBS, FaultError, check

TOP_LEVEL = {"customs", "seal", "trust", "server", "admin", "registry", "push", "pull", "business", "parties",
             "rules", "faults", "limits"}
RISKS = ("IE3Q01", "IE3Q02", "IE3Q03", "IE3N03")
REJECTS = ("IE3N99", "IE3N01")
# a new MessageId with an LRN already registered for the same person filing: IE3N01 as the STI answers (ICD
# Annex 1: "key data element(s) being not unique"), IE3N99, or "register" again (the lenient, defective form)
DUPLICATE_LRN = ("ie3n01", "ie3n99", "register")


@dataclass(frozen=True)
class Party:
    """One registered trader PartyId: its EORI, its UUM&DS sealing certificate(s) and how replies reach it."""
    party_id: str
    eori: str
    seal_certs: tuple[Path, ...]
    delivery: str                 # "push" | "pull"
    push_url: str | None

    @property
    def mpc(self) -> str:
        return MPC_PREFIX + self.party_id


@dataclass(frozen=True)
class Rule:
    """A scripted outcome, chosen for a message whose LRN (or its filing's LRN) matches ``lrn``."""
    name: str
    lrn: re.Pattern[str]
    actions: re.Pattern[str] | None
    risk: tuple[str, ...] = ()           # sent after the IE3R01, in order
    reject: str | None = None            # IE3N99 / IE3N01 instead of registering
    error_code: str = "CL9999"
    error_text: str = "Scripted rejection"
    info_answer: str = "IE3R02"          # IE3Q02 asks for an answer by "IE3R02" or by "amendment"
    arrival_control: bool = False        # IE3N08 after the IE3R04
    complete_after_answer: bool | None = None
    ref_to_message_id: bool = True       # False: replies of this rule carry no eb:RefToMessageId
    functional_reference: str | None = None  # the rejection's functionalReference instead of the LRN (e.g. one
                                             # that matches nothing, so only eb:RefToMessageId correlates)

    def matches(self, lrn: str | None, action: str) -> bool:
        if self.actions is not None and not self.actions.search(action):
            return False
        return lrn is not None and self.lrn.search(lrn) is not None


@dataclass(frozen=True)
class SimulatorConfig:
    file: Path
    party_id: str
    fqdn: str
    mrn_country: str
    seal_key: Path
    seal_chain: Path
    anchors: tuple[Path, ...]
    crls: tuple[Path, ...]
    listen: tuple[str, ...]
    port: int
    path: str
    tls_cert: Path
    tls_key: Path
    client_ca: Path
    admin_enabled: bool
    admin_listen: str
    admin_port: int
    registry_path: Path
    push_client_cert: Path
    push_client_key: Path
    push_server_ca: Path
    push_timeout: float
    push_max_attempts: int
    omit_ref_to_message_id: tuple[str, ...]
    duplicate_lrn: str
    arrival_control: bool
    complete_after_answer: bool
    parties: tuple[Party, ...]
    rules: tuple[Rule, ...]
    faults: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits.defaults)

    def party(self, party_id: str) -> Party | None:
        return next((p for p in self.parties if p.party_id == party_id), None)

    def party_by_mpc(self, mpc: str) -> Party | None:
        return next((p for p in self.parties if p.mpc == mpc), None)


def _regex(sec: Section, key: str, default: Any = None) -> re.Pattern[str] | None:
    value = sec.str(key, default)
    if value is None:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        sec.fail(key, f"is not a valid regular expression: {exc}")


def _party(sec: Section) -> Party:
    sec.check_keys({"party_id", "eori", "seal_certs", "delivery", "push_url"})
    party_id = sec.str("party_id", pattern=PARTY_ID_RE, hint="[system@]EORI[@MS] (ICD table 8)")
    m = PARTY_ID_RE.match(party_id)
    assert m is not None
    eori = sec.str("eori", m.group("eori"), pattern=EORI_RE, hint="an EORI")
    if m.group("eori") != eori:
        sec.fail("eori", f"the EORI in party_id ({m.group('eori')}) differs from eori ({eori})")
    certs = sec.paths("seal_certs")
    if not certs:
        sec.fail("seal_certs", "at least one registered sealing certificate is required")
    delivery = sec.str("delivery", "push", choices=("push", "pull"))
    url = sec.str("push_url", None, pattern=re.compile(r"^https://"), hint="an https:// URL")
    if delivery == "push" and not url:
        sec.fail("push_url", "is required when delivery is \"push\"")
    return Party(party_id=party_id, eori=eori, seal_certs=tuple(certs), delivery=delivery, push_url=url)


def _rule(sec: Section, index: int) -> Rule:
    sec.check_keys({"name", "lrn", "actions", "risk", "reject", "error_code", "error_text", "info_answer",
                    "arrival_control", "complete_after_answer", "ref_to_message_id", "functional_reference"})
    lrn = _regex(sec, "lrn")
    assert lrn is not None
    risk = sec.list_str("risk", [])
    for r in risk:
        if r not in RISKS:
            sec.fail("risk", f"{r!r} is not a scripted risk outcome (choose from {', '.join(RISKS)})")
    cae = sec.bool("complete_after_answer", None)
    return Rule(name=sec.str("name", f"rule {index + 1}"), lrn=lrn, actions=_regex(sec, "actions"),
                risk=tuple(risk), reject=sec.str("reject", None, choices=REJECTS),
                error_code=sec.str("error_code", "CL9999"), error_text=sec.str("error_text", "Scripted rejection"),
                info_answer=sec.str("info_answer", "IE3R02", choices=("IE3R02", "amendment")),
                arrival_control=sec.bool("arrival_control", False), complete_after_answer=cae,
                ref_to_message_id=sec.bool("ref_to_message_id", True),
                functional_reference=sec.str("functional_reference", None))


def _faults(sec: Section) -> dict[str, Any]:
    sec.check_keys(set(KNOBS))
    out = {}
    for k, v in sec.data.items():
        try:
            out[k] = check(k, v)
        except FaultError as exc:
            sec.fail(k, str(exc))
    return out


def read_simulator_config(root: Section) -> SimulatorConfig:
    root.check_keys(TOP_LEVEL)
    customs = root.section("customs")
    customs.check_keys({"party_id", "fqdn", "mrn_country"})
    seal = root.section("seal", required=True)
    seal.check_keys({"key", "chain"})
    trust = root.section("trust", required=True)
    trust.check_keys({"anchors", "crls"})
    server = root.section("server", required=True)
    server.check_keys({"listen", "port", "path", "cert", "key", "client_ca"})
    admin = root.section("admin")
    admin.check_keys({"enabled", "listen", "port"})
    registry = root.section("registry")
    registry.check_keys({"path"})
    push = root.section("push", required=True)
    push.check_keys({"client_cert", "client_key", "server_ca", "timeout_seconds", "max_attempts"})
    pull = root.section("pull")
    pull.check_keys({"omit_ref_to_message_id"})
    business = root.section("business")
    business.check_keys({"duplicate_lrn", "arrival_control", "complete_after_answer"})

    listen = server.data.get("listen", ["127.0.0.1", "::1"])
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not listen or not all(isinstance(h, str) for h in listen):
        server.fail("listen", "must be an address or a list of addresses")
    admin_listen = admin.str("listen", "127.0.0.1")
    if admin_listen not in ("127.0.0.1", "::1", "localhost"):
        admin.fail("listen", "the admin endpoint is plain HTTP and listens on loopback only (127.0.0.1 or ::1)")
    parties = tuple(_party(s) for s in root.sections("parties"))
    if not parties:
        root.fail("parties", "register at least one trader party ([[parties]])")
    seen: set[str] = set()
    for i, p in enumerate(parties):
        if p.party_id in seen:
            raise root.fail(f"parties[{i}].party_id", f"{p.party_id} is registered twice")
        seen.add(p.party_id)
    path = server.str("path", "/ics2/sti")
    if not path.startswith("/"):
        server.fail("path", "must start with /")
    return SimulatorConfig(
        file=root.file,
        party_id=customs.str("party_id", "sti-taxud", pattern=re.compile(r"^(sti-taxud|nti-[a-z]{2})$"),
                             hint="sti-taxud or nti-<cc> (ICD 4.2.2.1)"),
        fqdn=customs.str("fqdn", "sti.customs.test"),
        mrn_country=customs.str("mrn_country", "NL", pattern=re.compile(r"^[A-Z]{2}$"), hint="2 capital letters"),
        seal_key=seal.path("key"), seal_chain=seal.path("chain"),
        anchors=tuple(trust.paths("anchors")), crls=tuple(trust.paths("crls", [])),
        listen=tuple(listen), port=server.int("port", 8443, min=0, max=65535), path=path,
        tls_cert=server.path("cert"), tls_key=server.path("key"), client_ca=server.path("client_ca"),
        admin_enabled=admin.bool("enabled", True), admin_listen=admin_listen,
        admin_port=admin.int("port", 8480, min=0, max=65535),
        registry_path=registry.path("path", "../var/simulator.sqlite", must_exist=False),
        push_client_cert=push.path("client_cert"), push_client_key=push.path("client_key"),
        push_server_ca=push.path("server_ca"), push_timeout=push.float("timeout_seconds", 30.0, min=0.1),
        push_max_attempts=push.int("max_attempts", 10, min=1),
        omit_ref_to_message_id=tuple(pull.list_str("omit_ref_to_message_id", ["*"])),
        duplicate_lrn=business.str("duplicate_lrn", "ie3n01", choices=DUPLICATE_LRN),
        arrival_control=business.bool("arrival_control", False),
        complete_after_answer=business.bool("complete_after_answer", True),
        parties=parties,
        rules=tuple(_rule(s, i) for i, s in enumerate(root.sections("rules"))),
        faults=_faults(root.section("faults")),
        limits=read_limits(root.section("limits")),
    )


def load_simulator_config(path: Path | str) -> SimulatorConfig:
    return read_simulator_config(load_toml(path))
