"""`ics2gw demo`: the customs simulator and the gateway as real processes, the sample ENS set through the spool.

The demo works in its own directory (default ``var/demo/`` of the repository, emptied at start) with its own
configurations derived from ``conf/gateway.toml`` and ``conf/simulator.toml`` (own journal, spool, inbox,
simulator registry, and free loopback ports), so it never disturbs a set-up already running from ``conf/``.
It files every ``ens-*.xml`` of the sample folder (``tests/fixtures/ics2/`` of the repository by default:
valid filings of several transport modes and the locally invalid ones), waits a bounded time for each filing
to be registered (MRN) or rejected (reason), prints one line per filing, stops both processes with SIGTERM
and returns 0 only if every valid filing was registered and every invalid one rejected with a reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gateway.conformance import confgen

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_SAMPLES = REPO / "tests" / "fixtures" / "ics2"
DEFAULT_CONF_DIR = REPO / "conf"
DEFAULT_WORKDIR = REPO / "var" / "demo"

# States that end the wait for a filing of the demo (the sample rules add no risk messages to these LRNs).
REGISTERED = {"registered", "amended", "assessment-complete", "arrived", "info-requested", "screening-requested",
              "do-not-load", "pending-amendment", "invalidation-requested", "invalidated"}
REJECTED = {"rejected", "rejected-locally"}
STUCK = {"failed", "held", "abandoned"}


class DemoError(RuntimeError):
    """The demo could not run (missing PKI, a process that does not start ...); the message says what to do."""


@dataclass
class Sample:
    file: Path
    lrn: str | None
    filer: str | None
    action: str | None
    expect_valid: bool
    reason_if_unreadable: str | None = None
    dropped_at: float = 0.0
    state: str | None = None
    mrn: str | None = None
    error: str | None = None
    rtt_ms: float | None = None
    done_at: float | None = None

    @property
    def ok(self) -> bool:
        if self.expect_valid:
            return self.state in REGISTERED and bool(self.mrn)
        return self.state in REJECTED and bool(self.error)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            return -9


@dataclass
class DemoResult:
    samples: list[Sample]
    exit_codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    simulator_report: list[dict[str, Any]] = field(default_factory=list)
    amqp_summary: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(s.ok for s in self.samples) and all(
            c == 0 for c in self.exit_codes.values())


def _http_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def _spawn(name: str, args: list[str], log: Path, cwd: Path) -> Proc:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "gateway", *args], stdout=out, stderr=subprocess.STDOUT,
                             cwd=cwd, env=env, start_new_session=True)
    return Proc(name, p, log)


def _wait(predicate: Any, timeout: float, proc: Proc, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise DemoError(f"the {proc.name} exited (code {proc.popen.returncode}) before {what}; its log "
                            f"({proc.log}) ends with:\n{proc.tail()}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}; the {proc.name} log ({proc.log}) ends "
                    f"with:\n{proc.tail()}")


def load_samples(folder: Path, pattern: str = "ens-*.xml") -> list[Sample]:
    from gateway.ics2.inspect import PayloadError, inspect_payload
    from gateway.ics2.validate import validate_payload
    files = sorted(folder.glob(pattern))
    if not files:
        raise DemoError(f"no sample filings {pattern} in {folder} (give another folder with --samples)")
    out = []
    for f in files:
        data = f.read_bytes()
        try:
            facts = inspect_payload(data)
        except PayloadError as exc:
            out.append(Sample(f, None, None, None, False, reason_if_unreadable=str(exc)))
            continue
        valid = validate_payload(data, profile="uk-ssgb" if facts.family == "ics1" else None).valid
        out.append(Sample(f, facts.lrn, facts.person_filing_eori, facts.message_id, valid))
    return out


def _iso(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _round_trip_ms(life: dict[str, Any]) -> float | None:
    """From the filing's first send (the outbound message) to the business answer that decided it (inbound)."""
    msgs = life.get("messages", [])
    out = next((m for m in msgs if m.get("direction") == "out"), None)
    answer = next((m for m in msgs if m.get("direction") == "in" and m.get("action") in ("IE3R01", "IE3N99",
                                                                                          "IE3N01", "IE328", "IE316")),
                  None)
    if out is None or answer is None:
        return None
    t0, t1 = _iso(out.get("created_at")), _iso(answer.get("created_at"))
    if t0 is None or t1 is None:
        return None
    return round((t1 - t0).total_seconds() * 1000, 1)


def _reason_file(rejected_dir: Path, sample: Sample) -> str | None:
    for p in rejected_dir.glob(f"*{sample.file.stem}*.reason.json"):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        first = (d.get("findings") or [{}])[0]
        text = first.get("text") or d.get("message") or d.get("reason")
        return f"{first.get('rule') or first.get('code') or d.get('reason')}: {text}" if text else None
    return None


def _error_of(life: dict[str, Any]) -> str | None:
    f = life.get("filing", {})
    for e in reversed(life.get("events", [])):
        findings = (e.get("detail") or {}).get("findings")
        if findings:
            first = findings[0]
            more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
            return f"{first.get('rule') or first.get('code')} at {first.get('pointer')}: {first.get('text')}{more}"
        errors = (e.get("detail") or {}).get("errors")
        if errors:
            first = errors[0]
            return f"{first.get('code') or first.get('validationCode')}: {first.get('text') or first.get('description')}"
    return f.get("last_error")


def run_demo(*, conf_dir: Path = DEFAULT_CONF_DIR, samples_dir: Path = DEFAULT_SAMPLES,
             workdir: Path = DEFAULT_WORKDIR, timeout: float = 40.0, keep: bool = False,
             allow_production: bool = False, out: TextIO = sys.stdout, with_hmrc: bool = True,
             amqp: bool = False) -> DemoResult:
    start = time.monotonic()
    gw_base, sim_base = conf_dir / "gateway.toml", conf_dir / "simulator.toml"
    for f in (gw_base, sim_base):
        if not f.exists():
            raise DemoError(f"{f} is missing (the demo derives its configurations from conf/*.toml)")
    env = confgen.load(gw_base).get("environment", "conformance")
    if env == "production" and not allow_production:
        raise DemoError(f"{gw_base}: environment = \"production\"; the demo files sample ENS and refuses a "
                        "production configuration (use --allow-production only if you really mean it)")
    samples = load_samples(samples_dir)
    if workdir.exists() and not keep:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    sim_port, admin_port = confgen.free_port(dual=True), confgen.free_port()
    inbound_port, api_port, health_port = confgen.free_port(dual=True), confgen.free_port(), confgen.free_port()
    sti_url = f"https://127.0.0.1:{sim_port}/ics2/sti"
    push_url = f"https://127.0.0.1:{inbound_port}/ics2/inbound"
    header = f"# generated by `ics2gw demo` from {{}} on {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
    sim_conf = confgen.write(workdir / "simulator.toml",
                             confgen.simulator_doc(sim_base, workdir, port=sim_port, admin_port=admin_port,
                                                   push_url=push_url, reply_delay=0.1), header.format(sim_base))
    gw_doc = confgen.gateway_doc(gw_base, workdir, sti_url=sti_url, inbound_port=inbound_port, api_port=api_port,
                                 health_port=health_port)
    gw_doc.setdefault("pull", {})["enabled"] = False
    gw_doc["inbound"]["enabled"] = True
    from gateway.conformance import demo_hmrc   # the UK S&S GB route beside ICS2: its stand-in, [hmrc], samples
    hmrc = demo_hmrc.prepare(workdir, gw_doc) if with_hmrc else None
    if hmrc is not None:
        samples += load_samples(hmrc.samples_dir)
    queue = None
    if amqp:                                     # the ERP's queue path instead of the spool folder
        from gateway.conformance import demo_amqp
        try:
            queue = demo_amqp.prepare(workdir, gw_doc)
        except RuntimeError as exc:
            raise DemoError(f"--amqp: {exc}") from None
    gw_conf = confgen.write(workdir / "gateway.toml", gw_doc, header.format(gw_base))
    for key in ("key", "chain"):
        p = Path(gw_doc["seal"].get(key, ""))
        if gw_doc["seal"].get(key) and not p.exists():
            raise DemoError(f"{p} is missing: generate the test PKI first (make pki, or make demo)")

    out.write(f"demo: working directory {workdir}\n")
    out.write(f"demo: customs simulator on {sti_url} (admin http://127.0.0.1:{admin_port}/admin), "
              f"gateway API http://127.0.0.1:{api_port}, inbound {push_url}\n")
    out.flush()
    procs: dict[str, Proc] = {}
    result = DemoResult(samples)
    try:
        procs["simulator"] = sim = _spawn("simulator", ["simulate", "--conf", str(sim_conf)],
                                          workdir / "simulator.log", workdir)
        _wait(lambda: _http_json(f"http://127.0.0.1:{admin_port}/admin/health")[0] == 200, 30, sim,
              "the simulator to listen")
        if hmrc is not None:
            procs["hmrc-standin"] = hs = _spawn("hmrc-standin", hmrc.standin_args(), workdir / "hmrc-standin.log",
                                                workdir)
            _wait(lambda: confgen.port_open(hmrc.port), 30, hs, "the HMRC stand-in to listen")
            try:
                hmrc.authorize(gw_conf, workdir)
            except RuntimeError as exc:
                raise DemoError(str(exc)) from None
            out.write(f"demo: HMRC S&S GB stand-in on https://127.0.0.1:{hmrc.port} (OAuth grant done)\n")
        if queue is not None:
            out.write("demo: starting a private RabbitMQ node (its own ports and data under the working directory)\n")
            out.flush()
            try:
                queue.node.start()
                queue.setup()
            except RuntimeError as exc:
                raise DemoError(f"--amqp: {exc}") from None
            out.write(f"demo: RabbitMQ on {queue.node.url}; filings queue {demo_amqp.QUEUE}, events exchange "
                      f"{demo_amqp.EXCHANGE}\n")
        procs["gateway"] = gw = _spawn("gateway", ["run", "--init-journal", "--conf", str(gw_conf)],
                                       workdir / "gateway.log", workdir)
        _wait(lambda: confgen.port_open(inbound_port) and
              _http_json(f"http://127.0.0.1:{api_port}/health")[0] == 200, 30, gw, "the gateway to be ready")
        out.write(f"demo: simulator and gateway up in {time.monotonic() - start:.1f} s; filing {len(samples)} "
                  f"sample ENS from {samples_dir} through the "
                  f"{'AMQP queue ' + demo_amqp.QUEUE if queue else 'spool directory'}\n")
        out.flush()
        if queue is not None:
            queue.publish([s.file for s in samples])
            for s in samples:
                s.dropped_at = time.monotonic()
            _collect_rejections(queue, [s for s in samples if s.lrn is None], timeout)
            _collect([s for s in samples if s.lrn is not None], api_port, Path(gw_doc["intake"]["rejected_dir"]),
                     timeout, gw, default_filer=_own_eori(gw_doc))
        else:
            spool = Path(gw_doc["intake"]["spool_dir"])
            spool.mkdir(parents=True, exist_ok=True)
            for s in samples:
                _drop(s.file, spool)
                s.dropped_at = time.monotonic()
            _collect(samples, api_port, Path(gw_doc["intake"]["rejected_dir"]), timeout, gw,
                     default_filer=_own_eori(gw_doc))
        status, report = _http_json(f"http://127.0.0.1:{admin_port}/admin/report")
        result.simulator_report = report if status == 200 and isinstance(report, list) else []
        if queue is not None:
            deadline = time.monotonic() + 10      # the last events of the filings, confirmed by the broker
            while time.monotonic() < deadline and sum(e["rk"] == "filing.registered" for e in queue.drain()) < \
                    sum(1 for s in samples if s.state in REGISTERED):
                time.sleep(0.2)
            result.amqp_summary = queue.summary()
    finally:
        for name in ("gateway", "simulator", "hmrc-standin"):
            if name in procs:
                result.exit_codes[name] = procs[name].stop()
        if queue is not None:
            queue.node.close()
    result.seconds = time.monotonic() - start
    print_table(result, out)
    if result.amqp_summary:
        out.write(f"demo: {result.amqp_summary}\n")
    return result


def _collect_rejections(queue: Any, samples: list[Sample], timeout: float) -> None:
    """Unreadable samples are answered by an intake.rejected event (the queue has no reason file)."""
    deadline = time.monotonic() + timeout
    while samples and time.monotonic() < deadline:
        seen = queue.rejections()
        for s in list(samples):
            reason = seen.get(f"demo-{s.file.stem}")
            if reason:
                s.state, s.error, s.done_at = "rejected-locally", reason, time.monotonic()
                samples.remove(s)
        time.sleep(0.2)


def _drop(sample: Path, spool: Path) -> None:
    """Into the spool atomically, as the ERP must: the file alone, or with the attachments its payload declares
    (found by their declared file name next to it or in the sibling attachments/ folder) as one NAME.d/ folder."""
    from gateway.pipeline.submission import declared_files
    try:
        files = declared_files(sample.read_bytes(), (sample.parent, sample.parent.parent / "attachments"))
    except Exception:   # noqa: BLE001 - unreadable or incomplete: filed alone, and the intake says why
        files = []
    if not files:
        tmp = spool.parent / f".{sample.name}.tmp"
        shutil.copyfile(sample, tmp)
        os.replace(tmp, spool / sample.name)
        return
    tmp = spool.parent / f".{sample.stem}.d.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copyfile(sample, tmp / sample.name)
    for ident, _, path in files:
        shutil.copyfile(path, tmp / (ident + path.suffix))
    os.rename(tmp, spool / f"{sample.stem}.d")


def _own_eori(doc: dict[str, Any]) -> str:
    from gateway.pipeline.accept import own_eori
    ident = doc.get("identity", {})
    return ident.get("eori") or own_eori(ident.get("party_id", ""))


def _collect(samples: list[Sample], api_port: int, rejected_dir: Path, timeout: float, gw: Proc, *,
             default_filer: str) -> None:
    deadline = time.monotonic() + timeout
    pending = [s for s in samples]
    for s in samples:
        if s.lrn is None:   # unreadable: the intake refuses it without journaling; its reason file says why
            s.state = "rejected-locally"
    while pending and time.monotonic() < deadline:
        for s in list(pending):
            if s.lrn is None:
                s.error = _reason_file(rejected_dir, s)
                if s.error:
                    s.done_at = time.monotonic()
                    pending.remove(s)
                continue
            filer = s.filer or default_filer
            status, life = _http_json(f"http://127.0.0.1:{api_port}/filings/{filer}/{s.lrn}")
            if status != 200 or not isinstance(life, dict):
                if status == 404:   # refused before journaling (e.g. no LRN): the spool's reason file says why
                    reason = _reason_file(rejected_dir, s)
                    if reason:
                        s.state, s.error, s.done_at = "rejected-locally", reason, time.monotonic()
                        pending.remove(s)
                continue
            f = life["filing"]
            s.state, s.mrn = f["state"], f.get("mrn")
            if s.state in REGISTERED and s.mrn or s.state in REJECTED or s.state in STUCK:
                s.error = None if s.state in REGISTERED else (_error_of(life) or
                                                              _reason_file(rejected_dir, s) or f.get("last_error"))
                s.rtt_ms = _round_trip_ms(life)
                s.done_at = time.monotonic()
                pending.remove(s)
        if pending:
            if not gw.alive():
                break
            time.sleep(0.05)
    for s in pending:
        s.error = s.error or f"no outcome within {timeout:.0f} s (state {s.state or 'unknown'})"


def print_table(result: DemoResult, out: TextIO) -> None:
    rows = [("LRN", "ROUTE", "ACTION", "STATE", "RTT", "OK", "MRN / ERROR", "FILE")]
    for s in result.samples:
        detail = s.mrn if s.state in REGISTERED and s.mrn else (s.error or "-")
        if len(detail) > 110:
            detail = detail[:107] + "..."
        rtt = f"{s.rtt_ms:.0f} ms" if s.rtt_ms is not None else "-"
        route = "S&S GB" if (s.action or "").startswith("IE31") else "ICS2"
        rows.append((s.lrn or "-", route, s.action or "-", s.state or "-", rtt, "yes" if s.ok else "NO", detail,
                     s.file.name))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out.write("\n")
    for r in rows:
        out.write("  ".join(c.rjust(w) if i == 4 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                  + "\n")
    valid = [s for s in result.samples if s.expect_valid]
    invalid = [s for s in result.samples if not s.expect_valid]
    regs = {row.get("lrn"): row.get("registrations") for row in result.simulator_report}
    once = sum(1 for s in valid if regs.get(s.lrn) == 1)
    out.write(f"\n{sum(s.ok for s in valid)}/{len(valid)} valid filings registered with an MRN "
              f"(simulator: {once} registered exactly once); {sum(s.ok for s in invalid)}/{len(invalid)} invalid "
              f"filings rejected with a reason; stopped: " +
              ", ".join(f"{k} exit {v}" for k, v in result.exit_codes.items()) +
              f"; {result.seconds:.1f} s in all\n")
    out.write("demo: OK\n" if result.ok else "demo: FAILED (see the logs in the working directory)\n")
    out.flush()
