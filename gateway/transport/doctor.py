"""Pre-go-live checks (``ics2gw doctor``) and the ping round trip (``ics2gw ping``).

Why one list of checks with a fix each: most onboarding failures with a Trader Interface are local
(a leaf-only chain, a party id whose EORI differs from the certificate's, the wrong CA bundle, a firewall);
each is cheaper to find here than in a conformance session. Every check returns ``Check(name, ok, detail,
fix)``; the command prints them and exits 1 if any failed.
"""

from __future__ import annotations

from typing import Any

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import PARTY_ID_RE, ConfigError, GatewayConfig
from gateway.ebms.constants import MPC_PREFIX
from gateway.ebms.engine import Engine
from gateway.transport.client import As4Client, ReceiptOk, SendOutcome
from gateway.transport.config import Endpoint, TransportConfig
from gateway.transport.tls import client_context, describe_tls_error, server_context


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


async def ping_endpoint(engine: Engine, tcfg: TransportConfig, endpoint: Endpoint) -> tuple[SendOutcome, float]:
    """Sends the ebMS test-service message (ICD 4.5.1) and returns the outcome and the round-trip seconds."""
    message = await asyncio.to_thread(engine.ping, Engine.customs_party(endpoint.party_id))
    async with As4Client(engine, tcfg) as client:
        start = time.perf_counter()
        outcome = await client.send(endpoint, message)
        return outcome, time.perf_counter() - start


async def tls_handshake(tcfg: TransportConfig, endpoint: Endpoint, timeout: float | None = None) -> str:
    """Opens a 2-way TLS connection to the endpoint; returns "TLSv1.3 TLS_AES_256_GCM_SHA384"; raises on failure."""
    parts = urlsplit(endpoint.url)
    host, port = parts.hostname or "", parts.port or 443
    ctx = client_context(tcfg, endpoint)
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=endpoint.server_name or host),
        timeout or endpoint.connect_timeout + tcfg.tls.handshake_timeout)
    obj = writer.get_extra_info("ssl_object")
    text = f"{obj.version()} {obj.cipher()[0]}" if obj else "?"
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ConnectionError):
        pass
    return text


def _days_left(not_after: dt.datetime) -> int:
    return (not_after - dt.datetime.now(dt.timezone.utc)).days


def _expiry_check(name: str, not_after: dt.datetime, what: str) -> Check:
    days = _days_left(not_after)
    if days < 0:
        return Check(name, False, f"{what} expired on {not_after.date()}", f"renew the {what} and update the configuration")
    if days < 30:
        return Check(name, True, f"{what} expires in {days} days ({not_after.date()}): renew it soon",
                     "order the renewal now; customs must register the new sealing certificate in UUM&DS")
    return Check(name, True, f"{what} valid for {days} more days (until {not_after.date()})")


_JOURNAL_FIXES = {
    "reachable": "check [journal] dsn, the password (password_env / password_file), TLS (sslmode, sslrootcert), the "
                 "network and the server's pg_hba.conf; for SQLite, [journal] path (`ics2gw journal init` creates it)",
    "schema": "run `ics2gw journal migrate --conf FILE` (once, from one instance)",
    "permission": "grant the gateway's database role what the message names (README: PostgreSQL journal), or make "
                  "the SQLite journal's file and folder writable by the gateway's user",
}


def journal_doctor_checks(jcfg: Any) -> list[Check]:
    """``gateway.journal.factory.journal_checks`` (connectivity, schema version, permissions) as doctor checks."""
    from gateway.journal.factory import journal_checks
    try:
        found = journal_checks(jcfg)
    except Exception as exc:  # noqa: BLE001 - the factory should not raise; if it does, that is the answer
        found = [("journal reachable", False, f"{jcfg.describe()}: {type(exc).__name__}: {exc}")]
    out = []
    for name, ok, detail in found:
        fix = "" if ok else next((f for key, f in _JOURNAL_FIXES.items() if key in name), "see the detail")
        out.append(Check(name, ok, detail, fix))
    return out


def run_checks(conf: Path, *, network: bool = True, endpoint: str | None = None,
               do_ping: bool = True) -> tuple[list[Check], str]:
    """All doctor checks, in order; returns (checks, environment)."""
    checks: list[Check] = []
    # the loader `run` uses (gateway.settings): whatever run refuses fails here, naming the file and the key
    from gateway.settings import check_filesystem, load_settings
    try:
        settings = load_settings(conf)
    except ConfigError as exc:
        return [Check("configuration loads", False, str(exc), "correct the key named in the message")], "unknown"
    cfg: GatewayConfig = settings.core
    tcfg = settings.transport
    env = cfg.environment
    checks.append(Check("configuration loads", True, f"{cfg.file} (environment={env}, every section)"))
    problems = check_filesystem(settings)
    for problem in problems:
        checks.append(Check(f"files and folders ([{problem.key}])", False, str(problem),
                            "create or fix what the message names (`ics2gw run --init-journal` creates a new journal "
                            "and missing state folders)"))
    if not problems:
        checks.append(Check("files and folders", True, "state folders writable, journal present, key files private"))
    checks.extend(journal_doctor_checks(settings.journal))
    if env == "production" and not cfg.allow_production:
        checks.append(Check("production allowed", False, "environment is production but allow_production is false",
                            "set allow_production = true once conformance testing has passed"))

    # --- identity and sealing -------------------------------------------------------------------
    pid = cfg.identity.party_id
    m = PARTY_ID_RE.match(pid)
    checks.append(Check("party id form [system@]EORI[@MS]", bool(m), pid,
                        "" if m else "write [identity] party_id as EORI, system@EORI, EORI@MS or system@EORI@MS"))
    expected_mpc = MPC_PREFIX + pid
    mpc_ok = cfg.mpc == expected_mpc
    detail = cfg.mpc
    try:
        from gateway.pmode import load_pmodes
        pmodes = load_pmodes(cfg.pmodes_dir, party_id=pid)
        pull = pmodes.pull()
        if pull is not None and pull.mpc != expected_mpc:
            mpc_ok, detail = False, f"pull P-Mode {pull.id} has MPC {pull.mpc}, expected {expected_mpc}"
        checks.append(Check("P-Modes load", True, f"{len(pmodes)} P-Modes from {cfg.pmodes_dir}"))
    except (ConfigError, ImportError) as exc:
        checks.append(Check("P-Modes load", False, str(exc), "fix the P-Mode file named in the message"))
    checks.append(Check("MPC derived from the party id (ICD 4.3.3)", mpc_ok, detail,
                        "" if mpc_ok else "use mpc = \"urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/${party_id}\""))

    from gateway.security.keys import eori_of, load_sealing_identity
    from gateway.security.trust import ChainError, TrustStore
    engine: Engine | None = None
    try:
        identity = load_sealing_identity(cfg.seal, conf_file=cfg.file)
        checks.append(Check("sealing key matches its certificate", True, identity.certificate.subject.rfc4514_string()))
        checks.append(Check("sealing chain complete (not leaf-only)", True, f"{len(identity.chain)} certificates"))
        try:
            trust = TrustStore.from_files(cfg.trust.anchors, cfg.trust.crls, (), cfg.trust.crl_refresh_seconds,
                                          cfg.trust.intermediates)
            result = trust.validate(identity.chain)
            soonest = min(c.not_valid_after_utc for c in result.chain)
            c = _expiry_check("sealing chain valid", soonest, "sealing chain")
            checks.append(Check(c.name, c.ok, f"anchored at {result.anchor.subject.rfc4514_string()}; {c.detail}", c.fix))
        except ChainError as exc:
            checks.append(Check("sealing chain valid", False, str(exc),
                                "add the issuing root to [trust] anchors, or renew/replace the certificate"))
        cert_eori = eori_of(identity.certificate)
        party_eori = m.group("eori") if m else None
        same = cert_eori is not None and cert_eori == party_eori
        checks.append(Check("EORI of the party id matches the sealing certificate", same,
                            f"party id EORI {party_eori}, certificate EORI {cert_eori}",
                            "" if same else "the sealing certificate registered in UUM&DS must carry the EORI of "
                                            "the party id (otherwise customs answers EBMS:0004 A001)"))
        engine = Engine.from_config(cfg)
    except ConfigError as exc:
        text = str(exc)
        leaf_only = "only the leaf" in text
        refused = "is not acceptable (" in text       # the seal policy (security/pathvalidate.py) refused the chain
        checks.append(Check("sealing key matches its certificate", "does not match" not in text and not leaf_only
                            and "cannot" not in text and not refused, text,
                            "check [seal] key/chain (or pkcs12 and its password)"))
        if refused:
            checks.append(Check("sealing chain passes the seal policy", False, text,
                                "use a sealing certificate (keyUsage digitalSignature/nonRepudiation, no TLS-only "
                                "EKU, RSA >= 2048, SHA-256 signatures): see docs/security.md"))
        if leaf_only:
            checks.append(Check("sealing chain complete (not leaf-only)", False, text,
                                "append the issuing CA certificates to the chain file, leaf first"))

    # --- TLS material ---------------------------------------------------------------------------
    from cryptography import x509
    tls_ok = True
    for ep in tcfg.endpoints.values():
        try:
            client_context(tcfg, ep)
            checks.append(Check(f"TLS client certificate and CA bundle load ({ep.name})", True,
                                f"client {tcfg.tls.client.source}"))
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none aborts the list
            tls_ok = False
            checks.append(Check(f"TLS client certificate and CA bundle load ({ep.name})", False, str(exc),
                                "check [tls] client_cert/client_key (or client_pkcs12) and ca_bundle"))
    if tcfg.tls.client.cert is not None:
        try:
            leaf = x509.load_pem_x509_certificates(tcfg.tls.client.cert.read_bytes())[0]
            checks.append(_expiry_check("TLS client certificate validity", leaf.not_valid_after_utc,
                                        "TLS client certificate"))
        except (ValueError, OSError) as exc:
            checks.append(Check("TLS client certificate validity", False, str(exc), "check [tls] client_cert"))
    if tcfg.inbound.enabled:
        try:
            server_context(tcfg)
            checks.append(Check("inbound TLS server certificate and client CAs load", True,
                                ", ".join(map(str, tcfg.inbound.listen))))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check("inbound TLS server certificate and client CAs load", False, str(exc),
                                "check [tls] server_cert/server_key and client_ca"))
    if not tcfg.endpoints:
        checks.append(Check("endpoints configured", False, "no [[endpoints]]", "add the TI endpoint(s) for " + env))

    # --- network --------------------------------------------------------------------------------
    if network and tls_ok:
        targets = [tcfg.endpoint(endpoint)] if endpoint else list(tcfg.endpoints.values())
        for ep in targets:
            try:
                text = asyncio.run(tls_handshake(tcfg, ep))
                checks.append(Check(f"TLS handshake with {ep.name} ({ep.url})", True, text))
            except Exception as exc:  # noqa: BLE001
                checks.append(Check(f"TLS handshake with {ep.name} ({ep.url})", False, describe_tls_error(exc),
                                    "check the URL, firewall/proxy, that customs trusts our client CA, and "
                                    "that [tls] ca_bundle holds the TI's CA"))
                continue
            if do_ping and engine is not None:
                outcome, rtt = asyncio.run(ping_endpoint(engine, tcfg, ep))
                ok = isinstance(outcome, ReceiptOk)
                from gateway.transport.client import summarize
                s = summarize(outcome)
                checks.append(Check(f"ping {ep.name}", ok, f"{s['outcome']} in {rtt * 1000:.0f} ms"
                                    + ("" if ok else f": {s.get('cause') or s.get('errors') or s.get('code')}"),
                                    "" if ok else "read the error: EBMS:0004 A001 means the sealing certificate is "
                                                  "not registered in UUM&DS for this EORI"))
    return checks, env


def render(checks: Sequence[Check], environment: str) -> str:
    lines = [f"ics2gw doctor (environment={environment})"]
    for c in checks:
        lines.append(f"  [{'PASS' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if c.fix and not c.ok:
            lines.append(f"         fix: {c.fix}")
        elif c.fix:
            lines.append(f"         note: {c.fix}")
    failed = sum(1 for c in checks if not c.ok)
    lines.append(f"{len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)
