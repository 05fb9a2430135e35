"""P-Modes as data: loading the TOML files of ``pmodes/``, and selecting the P-Mode of a message.

Why data: the ICS2 constants (agreement, services, parties, MPC, security choices) change with interface
versions; they live in one directory of files, not in code (DESIGN.md "profiles as data"). A file is
either complete, or ``derive_from`` another P-Mode and overrides some keys (the ping P-Mode of
eDelivery 1.4.4.3 is the business P-Mode with another Service and Action). Unknown keys are refused, and
every error names the file and the key.

Placeholders in party ids and the MPC: ``${party_id}`` is the gateway's own PartyId (``[identity]``);
``${customs}`` is any customs party, ``sti-taxud`` or ``nti-<two lower-case letters>`` (ICD 4.2.2.1).

Actions: a list, or ``"catalogue:t2c"`` / ``"catalogue:c2t"``, resolved when the files are loaded through
``gateway.ics2.catalogue.actions(direction)``. When that module cannot be imported the P-Mode accepts any
ICS2 message id (``^IE3[A-Z][0-9]{2}$``); nothing needs to change here once the catalogue exists.

Matching a received UserMessage (eDelivery 1.4.2.2: From PartyId/type/Role, To PartyId/type/Role, Service
and its type, Action, AgreementRef and its type; the MPC of a pulled message). The error rule:

- ``EBMS:0001 ValueNotRecognized`` when a value is present but *no* loaded P-Mode knows it at all: an
  AgreementRef, a Service, or an Action that appears in none of them. The MSH cannot use such a value
  whatever the other headers say (e.g. ``EU-ICS2-TI-V9.9``, ``IE3F99``, service ``eu_ics2_xyz``).
- ``EBMS:0010 ProcessingModeMismatch`` in every other case: each value is known somewhere, or is absent, but
  no single P-Mode accepts the combination (a t2c action on the c2t service, a wrong Role, a PartyId that
  is not ours, a missing ``@type``, a pulled message on another MPC). The message names the closest
  P-Mode (fewest mismatching fields) and each field it differs in.

A P-Mode marked ``bidirectional`` (the ping) matches with From/To in either orientation. Among several
P-Modes that all match (c2t push and c2t pull have identical headers) a message carrying the MPC of a pull
P-Mode selects that one; otherwise push wins (pull wins for a message that arrived by pulling). A message on
an MPC no P-Mode names is a mismatch (``mpc``).

Tolerance on customs-to-trader messages (issue 11, "must not lose messages"). A c2t P-Mode (customs is the
initiator) also accepts, and reports in ``PMode.tolerated``:

- any ICS2 message id (``IE3`` + letter + two digits) it does not list: a newer catalogue than ours;
- an AgreementRef without ``@type``: the ICD's own Annex 6 samples have none;
- an AgreementRef listed in ``previous_agreements``: the TI runs two interface versions at once during a
  transition (ICD 4.2.3.1 p.47, 5.7).

The pipeline delivers such a message as usual, raises an alert and marks it in the inbox metadata and the
journal. And a message that arrived by *pulling* is never refused for a P-Mode mismatch at all: an ebMS error
puts a pulled message in its final state at the TI (eDelivery 1.5.5.4), so it would be lost, while a Receipt
plus an alert keeps it (it came over our own authenticated pull channel and its seal was verified before
matching). Such a message gets the closest pull P-Mode with every mismatch listed in ``tolerated``. Ping
messages are never tolerated (they are not delivered anyway).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.config import PARTY_ID_RE, ConfigError, Section, load_toml
from gateway.ebms.constants import (
    ALG_RSA_SHA256, ALG_SHA256, BINDING_PULL, BINDING_PUSH, DEFAULT_MPC, MEP_ONE_WAY, MIME_GZIP, TEST_SERVICE,
)
from gateway.ebms.errors import EbmsFault
from gateway.ebms.model import Party, UserMessage

CUSTOMS_PATTERN = r"(?:sti-taxud|nti-[a-z]{2})"
CUSTOMS_RE = re.compile(rf"^{CUSTOMS_PATTERN}$")
ICS2_ACTION_RE = re.compile(r"^IE3[A-Z][0-9]{2}$")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

HASHES = (ALG_SHA256, "http://www.w3.org/2001/04/xmldsig-more#sha384", "http://www.w3.org/2001/04/xmlenc#sha512")
SIGNATURES = (ALG_RSA_SHA256, "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
              "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512")
TOKENS = ("X509PKIPathv1", "X509v3")

_TOP_KEYS = frozenset({"id", "derive_from", "mep", "mep_binding", "agreement", "agreement_type", "service",
                       "service_type", "actions", "mpc", "bidirectional", "initiator", "responder", "security",
                       "payload", "reception_awareness", "previous_agreements"})
_PARTY_KEYS = frozenset({"role", "party_type", "party_id"})
_SECURITY_KEYS = frozenset({"sign", "token", "hash", "algorithm", "encrypt", "send_receipt", "non_repudiation",
                            "reply_pattern"})
_PAYLOAD_KEYS = frozenset({"compression"})
_RA_KEYS = frozenset({"retry", "duplicate_detection"})
_TABLES = {"initiator": _PARTY_KEYS, "responder": _PARTY_KEYS, "security": _SECURITY_KEYS,
           "payload": _PAYLOAD_KEYS, "reception_awareness": _RA_KEYS}

ActionsProvider = Callable[[str], "tuple[str, ...] | None"]


class PModeError(LookupError):
    """No P-Mode fits a message the gateway itself wants to send (a local configuration problem)."""


def catalogue_actions(direction: str) -> tuple[str, ...] | None:
    """The actions of ``direction`` from ``gateway.ics2.catalogue``; None while that module does not exist."""
    try:
        mod = importlib.import_module("gateway.ics2.catalogue")
    except ModuleNotFoundError as exc:
        if exc.name in ("gateway.ics2", "gateway.ics2.catalogue"):
            return None
        raise
    fn = getattr(mod, "actions", None)
    return tuple(fn(direction)) if callable(fn) else None


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class PartyRule:
    """Who may stand on one side: role, PartyId type, and the PartyId template with its compiled pattern."""
    role: str
    party_type: str | None
    party_id: str                      # as written, e.g. "${customs}"
    pattern: re.Pattern[str] = field(compare=False)
    own_party_id: str = ""

    @property
    def is_own(self) -> bool:
        """True when this side is the gateway itself (the template is exactly ``${party_id}``)."""
        return self.party_id == "${party_id}"

    def matches(self, party_id: str | None) -> bool:
        return party_id is not None and self.pattern.fullmatch(party_id) is not None

    def resolve(self, customs: str | None = None) -> str:
        """The concrete PartyId: placeholders replaced by our id and by ``customs``."""
        def sub(m: re.Match[str]) -> str:
            if m.group(1) == "party_id":
                return self.own_party_id
            if customs is None:
                raise PModeError(f"the PartyId {self.party_id} needs a customs party (sti-taxud or nti-xx)")
            return customs
        return _PLACEHOLDER.sub(sub, self.party_id)

    def describe(self) -> str:
        return self.party_id.replace("${customs}", "sti-taxud|nti-xx").replace("${party_id}", self.own_party_id)


@dataclass(frozen=True)
class SecurityParams:
    sign: bool
    token: str
    hash: str
    algorithm: str
    encrypt: bool
    send_receipt: bool
    non_repudiation: bool
    reply_pattern: str


@dataclass(frozen=True)
class ReceptionAwareness:
    retry: bool
    duplicate_detection: bool


@dataclass(frozen=True)
class PMode:
    id: str
    file: Path
    mep: str
    mep_binding: str
    agreement: str
    agreement_type: str | None
    service: str
    service_type: str | None
    actions: tuple[str, ...]              # resolved list; empty when only ``action_pattern`` applies
    actions_source: str                   # "list", "catalogue:t2c", "catalogue:c2t"
    action_pattern: re.Pattern[str] | None = field(compare=False)
    initiator: PartyRule
    responder: PartyRule
    mpc: str | None
    security: SecurityParams
    compression: str | None
    reception_awareness: ReceptionAwareness
    bidirectional: bool = False
    derived_from: str | None = None
    previous_agreements: tuple[str, ...] = ()   # older interface versions still accepted on receipt (ICD 5.7)
    tolerated: tuple[str, ...] = ()             # set by ``PModeSet.match``: deviations accepted for this message

    @property
    def is_c2t(self) -> bool:
        """True when customs is the initiator: a P-Mode for messages we receive (tolerance applies)."""
        return not self.initiator.is_own and not self.is_ping

    @property
    def is_pull(self) -> bool:
        return self.mep_binding == BINDING_PULL

    @property
    def is_ping(self) -> bool:
        return self.service == TEST_SERVICE

    def accepts_action(self, action: str | None) -> bool:
        if action is None:
            return False
        if action in self.actions:
            return True
        return self.action_pattern is not None and self.action_pattern.match(action) is not None

    def parties(self, customs: str | None = None) -> tuple[Party, Party]:
        """(From, To) for a message this gateway sends under this P-Mode as its initiator."""
        i, r = self.initiator, self.responder
        return (Party(i.resolve(customs), i.party_type, i.role), Party(r.resolve(customs), r.party_type, r.role))


# ------------------------------------------------------------------------------------------------ matching
def _intolerable(p: PMode, um: UserMessage, mm: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The mismatches among Action / AgreementRef / @type that the c2t tolerance does not cover."""
    out = []
    names = {n for n, _ in mm}
    if "Action" in names and not ICS2_ACTION_RE.match(um.action or ""):
        out.append(("Action", "not an ICS2 message id"))
    if "AgreementRef" in names and um.agreement not in p.previous_agreements:
        out.append(("AgreementRef", "neither the current nor a previous agreement"))
    if "AgreementRef/@type" in names and um.agreement_type is not None:
        out.append(("AgreementRef/@type", "present but wrong (only a missing @type is tolerated)"))
    return out


def _norm_mpc(mpc: str | None) -> str | None:
    return None if not mpc or mpc == DEFAULT_MPC else mpc


def _mismatches(p: PMode, um: UserMessage, swapped: bool, known_mpcs: frozenset[str]) -> list[tuple[str, str]]:
    """(field, explanation) for each header of ``um`` that ``p`` does not accept.

    MPC: a P-Mode with an MPC accepts only that one; a P-Mode without (push, ping) accepts the default MPC
    and the MPC of any pull P-Mode of the set (e.g. a ping pulled from our MPC), but no foreign MPC.
    """
    out: list[tuple[str, str]] = []

    def cmp(name: str, got: str | None, want: str | None) -> None:
        if (got or None) != want:
            out.append((name, f"{got!r} instead of {want!r}"))

    cmp("AgreementRef", um.agreement, p.agreement)
    cmp("AgreementRef/@type", um.agreement_type, p.agreement_type)
    cmp("Service", um.service, p.service)
    cmp("Service/@type", um.service_type, p.service_type)
    if not p.accepts_action(um.action):
        out.append(("Action", f"{um.action!r} is not one of its actions ({p.actions_source})"))
    frm, to = (p.responder, p.initiator) if swapped else (p.initiator, p.responder)
    for side, party, rule in (("From", um.from_party, frm), ("To", um.to_party, to)):
        if not rule.matches(party.party_id):
            out.append((f"{side}/PartyId", f"{party.party_id!r} does not match {rule.describe()}"))
        cmp(f"{side}/PartyId/@type", party.party_type, rule.party_type)
        cmp(f"{side}/Role", party.role, rule.role)
    mpc = _norm_mpc(um.mpc)
    if mpc is not None and mpc != p.mpc and (p.mpc is not None or mpc not in known_mpcs):
        out.append(("mpc", f"{mpc!r} instead of {p.mpc or DEFAULT_MPC!r}"))
    return out


@dataclass(frozen=True)
class PModeSet:
    """All P-Modes of one gateway identity, in file-name order."""
    pmodes: tuple[PMode, ...]
    party_id: str
    directory: Path | None = None

    def __iter__(self) -> Iterator[PMode]:
        return iter(self.pmodes)

    def __len__(self) -> int:
        return len(self.pmodes)

    def get(self, pmode_id: str) -> PMode:
        for p in self.pmodes:
            if p.id == pmode_id:
                return p
        raise PModeError(f"no P-Mode with id {pmode_id!r}")

    def match(self, um: UserMessage, *, channel: str | None = None) -> PMode:
        """The P-Mode of a received user message; ``EbmsFault`` EBMS:0001 / EBMS:0010 as the module says.

        ``channel`` ("push" / "pull"): how it arrived; a pulled c2t message is never refused (module docstring).
        A P-Mode returned with a non-empty ``tolerated`` accepted the message only thanks to the tolerance."""
        results: list[tuple[PMode, list[tuple[str, str]]]] = []
        known = frozenset(p.mpc for p in self.pmodes if p.mpc)
        for p in self.pmodes:
            results.append((p, _mismatches(p, um, False, known)))
            if p.bidirectional:
                results.append((p, _mismatches(p, um, True, known)))
        mpc = _norm_mpc(um.mpc)

        def rank(p: PMode) -> int:
            if mpc is not None:
                return 0 if p.mpc == mpc else 1 if p.is_pull else 2
            if channel == "pull":
                return 0 if p.is_pull else 1
            return 0 if p.mep_binding == BINDING_PUSH else 1

        full = [p for p, mm in results if not mm]
        if full:
            return min(full, key=rank)  # min is stable: file order breaks ties
        if not um.is_ping and um.service != TEST_SERVICE:   # a test-service message is never business: no tolerance
            tolerable = [(p, [why for why in mm if why[0] not in ("Action", "AgreementRef", "AgreementRef/@type")]
                          + _intolerable(p, um, mm), mm) for p, mm in results if p.is_c2t]
            ok = [(p, mm) for p, rest, mm in tolerable if not rest]
            if ok:
                p, mm = min(ok, key=lambda r: (rank(r[0]), len(r[1])))
                return replace(p, tolerated=tuple(f"{n}: {why}" for n, why in mm))
            pulled = [(p, mm) for p, mm in results if p.is_c2t and p.is_pull]
            if channel == "pull" and pulled:
                p, mm = min(pulled, key=lambda r: len(r[1]))
                return replace(p, tolerated=tuple(f"{n}: {why}" for n, why in mm))

        mid = um.message_id
        if not self.pmodes:
            raise EbmsFault("EBMS:0010", "no P-Mode is configured", ref_to_message_id=mid)
        for name, value, known in (
            ("AgreementRef", um.agreement, any(p.agreement == um.agreement for p in self.pmodes)),
            ("Service", um.service, any(p.service == um.service for p in self.pmodes)),
            ("Action", um.action, any(p.accepts_action(um.action) for p in self.pmodes)),
        ):
            if value and not known:
                raise EbmsFault("EBMS:0001", f"{name} {value!r} of message {mid} is not known to any P-Mode",
                                detail=name, ref_to_message_id=mid)
        best, mm = min(results, key=lambda r: len(r[1]))
        fields = "; ".join(f"{n}: {why}" for n, why in mm)
        raise EbmsFault("EBMS:0010", f"no P-Mode matches message {mid}; the closest, {best.id} "
                        f"({best.file.name}), differs in {fields}",
                        detail=", ".join(n for n, _ in mm), ref_to_message_id=mid)

    def for_sending(self, action: str, customs_party: str) -> PMode:
        """The push P-Mode under which this gateway sends ``action`` to ``customs_party`` (ping included)."""
        if not CUSTOMS_RE.match(customs_party or ""):
            raise PModeError(f"{customs_party!r} is not a customs party (sti-taxud or nti-<country code>)")
        for p in self.pmodes:
            if (p.initiator.matches(self.party_id) and p.initiator.is_own and p.responder.matches(customs_party)
                    and p.mep_binding == BINDING_PUSH and p.accepts_action(action)):
                return p
        raise PModeError(f"no P-Mode lets {self.party_id} send action {action!r} to {customs_party}")

    def pull(self) -> PMode | None:
        """The pull P-Mode (we pull c2t messages from our MPC), or None when customs pushes to us."""
        return next((p for p in self.pmodes if p.is_pull), None)

    def ping(self) -> PMode:
        """The test-service P-Mode (eDelivery 1.4.2.4); every ICS2 access point must support it."""
        for p in self.pmodes:
            if p.is_ping:
                return p
        raise PModeError("no ping P-Mode (Service " + TEST_SERVICE + ") is configured")


# ------------------------------------------------------------------------------------------------ loading
def _template(sec: Section, key: str, value: str, allowed: tuple[str, ...], own: str) -> re.Pattern[str]:
    parts: list[str] = []
    last = 0
    for m in _PLACEHOLDER.finditer(value):
        name = m.group(1)
        if name not in allowed:
            sec.fail(key, f"unknown placeholder ${{{name}}} (allowed: "
                          f"{', '.join('${' + a + '}' for a in allowed)})")
        parts.append(re.escape(value[last:m.start()]))
        parts.append(re.escape(own) if name == "party_id" else CUSTOMS_PATTERN)
        last = m.end()
    parts.append(re.escape(value[last:]))
    return re.compile("".join(parts))


def _check_tables(sec: Section) -> None:
    sec.check_keys(_TOP_KEYS)
    for name, keys in _TABLES.items():
        if name in sec:
            sec.section(name).check_keys(keys)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _party(sec: Section, own: str) -> PartyRule:
    role = sec.str("role", pattern=re.compile(r"^\S+$"), hint="a role such as Trader or Customs")
    ptype = sec.str("party_type", "") or None
    pid = sec.str("party_id", pattern=re.compile(r"^\S+$"), hint="a PartyId or ${party_id} / ${customs}")
    return PartyRule(role=role, party_type=ptype, party_id=pid,
                     pattern=_template(sec, "party_id", pid, ("party_id", "customs"), own), own_party_id=own)


def _actions(sec: Section, provider: ActionsProvider) -> tuple[tuple[str, ...], str, re.Pattern[str] | None]:
    value = sec.data.get("actions")
    if isinstance(value, str):
        m = re.fullmatch(r"catalogue:(t2c|c2t)", value)
        if not m:
            sec.fail("actions", f"{value!r}: give a list of actions or \"catalogue:t2c\" / \"catalogue:c2t\"")
        try:
            resolved = provider(m.group(1))
        except Exception as exc:  # the catalogue is another module: report, do not crash obscurely
            sec.fail("actions", f"the message catalogue failed for {m.group(1)}: {exc}")
        if resolved is None:
            return (), value, ICS2_ACTION_RE
        if not resolved:
            sec.fail("actions", f"the message catalogue has no {m.group(1)} actions")
        return tuple(resolved), value, None
    actions = sec.list_str("actions")
    if not actions or any(not a.strip() or a != a.strip() for a in actions):
        sec.fail("actions", "must be a non-empty list of non-empty actions without surrounding spaces")
    if len(set(actions)) != len(actions):
        sec.fail("actions", "lists an action twice")
    return tuple(actions), "list", None


def _read_pmode(sec: Section, own: str, provider: ActionsProvider, derived_from: str | None) -> PMode:
    pid = sec.str("id", pattern=_ID_RE, hint="letters, digits, '.', '_' and '-'")
    mep = sec.str("mep", choices=(MEP_ONE_WAY,))
    binding = sec.str("mep_binding", choices=(BINDING_PUSH, BINDING_PULL))
    agreement = sec.str("agreement", pattern=re.compile(r"^\S+$"), hint="e.g. EU-ICS2-TI-V2.0")
    agreement_type = sec.str("agreement_type", "") or None
    service = sec.str("service", pattern=re.compile(r"^\S+$"), hint="e.g. eu_ics2_t2c")
    service_type = sec.str("service_type", "") or None
    actions, source, pattern = _actions(sec, provider)
    mpc_t = sec.str("mpc", None)
    mpc = None
    if mpc_t is not None:
        _template(sec, "mpc", mpc_t, ("party_id",), own)
        mpc = _PLACEHOLDER.sub(lambda m: own, mpc_t)
    if binding == BINDING_PULL and not mpc:
        sec.fail("mpc", "a pull P-Mode needs the MPC to pull from (ICD 4.3.3)")
    if binding == BINDING_PULL and mpc == DEFAULT_MPC:
        sec.fail("mpc", "the default MPC is never used for pulling (eDelivery 1.5.5.5)")
    initiator = _party(sec.section("initiator", required=True), own)
    responder = _party(sec.section("responder", required=True), own)
    s = sec.section("security", required=True)
    security = SecurityParams(
        sign=s.bool("sign"), token=s.str("token", choices=TOKENS), hash=s.str("hash", choices=HASHES),
        algorithm=s.str("algorithm", choices=SIGNATURES), encrypt=s.bool("encrypt"),
        send_receipt=s.bool("send_receipt"), non_repudiation=s.bool("non_repudiation"),
        reply_pattern=s.str("reply_pattern", choices=("response", "callback")))
    if not security.sign:
        s.fail("sign", "ICS2 messages are always sealed (ICD 4.6, eDelivery 1.4.2.6)")
    if security.encrypt:
        s.fail("encrypt", "ICS2 uses no AS4 encryption, confidentiality comes from 2-way TLS (ICD 4.6 fn 11)")
    payload = sec.section("payload")
    compression = payload.str("compression", "", choices=("", MIME_GZIP)) or None
    ra = sec.section("reception_awareness")
    return PMode(
        id=pid, file=sec.file, mep=mep, mep_binding=binding, agreement=agreement, agreement_type=agreement_type,
        service=service, service_type=service_type, actions=actions, actions_source=source,
        action_pattern=pattern, initiator=initiator, responder=responder, mpc=mpc, security=security,
        compression=compression,
        reception_awareness=ReceptionAwareness(retry=ra.bool("retry", True),
                                               duplicate_detection=ra.bool("duplicate_detection", True)),
        bidirectional=sec.bool("bidirectional", False), derived_from=derived_from,
        previous_agreements=_previous_agreements(sec, agreement))


def _previous_agreements(sec: Section, agreement: str) -> tuple[str, ...]:
    values = sec.list_str("previous_agreements", []) if "previous_agreements" in sec.data else []
    if any(not re.fullmatch(r"\S+", v) for v in values):
        sec.fail("previous_agreements", "each entry must be an agreement such as EU-ICS2-TI-V1.0, without spaces")
    if agreement in values:
        sec.fail("previous_agreements", f"{agreement} is the current agreement of this P-Mode, not a previous one")
    return tuple(values)


def load_pmodes(directory: Path | str, *, party_id: str,
                actions_provider: ActionsProvider | None = None) -> PModeSet:
    """Loads every ``*.toml`` of ``directory`` (sorted by name) for the gateway identity ``party_id``.

    ``actions_provider`` resolves ``catalogue:<direction>``; by default ``catalogue_actions``. Raises
    ``ConfigError(file, key, message)`` for any problem: unknown keys, bad values, duplicate ids, a
    ``derive_from`` naming no P-Mode or forming a cycle.
    """
    directory = Path(directory)
    provider = actions_provider or catalogue_actions
    if not PARTY_ID_RE.match(party_id or ""):
        raise ConfigError(directory, "identity.party_id", f"{party_id!r} is not an ICS2 PartyId ([system@]EORI[@MS])")
    if not directory.is_dir():
        raise ConfigError(directory, "", "the P-Mode directory does not exist")
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ConfigError(directory, "", "no P-Mode files (*.toml) in the directory")

    raw: dict[str, Section] = {}
    for f in files:
        sec = load_toml(f)
        _check_tables(sec)
        pid = sec.str("id", pattern=_ID_RE, hint="letters, digits, '.', '_' and '-'")
        if pid in raw:
            sec.fail("id", f"{pid!r} is already the id of {raw[pid].file.name}")
        raw[pid] = sec

    merged: dict[str, dict[str, Any]] = {}

    def resolve(pid: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if pid in merged:
            return merged[pid]
        sec = raw[pid]
        base_id = sec.str("derive_from", None)
        if base_id is None:
            data = dict(sec.data)
        else:
            if base_id not in raw:
                sec.fail("derive_from", f"no P-Mode has the id {base_id!r} (known: {', '.join(sorted(raw))})")
            if base_id in chain or base_id == pid:
                sec.fail("derive_from", f"derivation cycle: {' -> '.join((*chain, pid, base_id))}")
            base = dict(resolve(base_id, (*chain, pid)))
            base.pop("bidirectional", None)
            data = _merge(base, {k: v for k, v in sec.data.items() if k != "derive_from"})
        merged[pid] = data
        return data

    pmodes = []
    for pid, sec in raw.items():
        data = resolve(pid, ())
        base_id = sec.data.get("derive_from")
        view = Section(data, file=sec.file, base_dir=sec.base_dir)
        pmodes.append(_read_pmode(view, party_id, provider, base_id))
    return PModeSet(pmodes=tuple(pmodes), party_id=party_id, directory=directory)
