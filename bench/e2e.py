"""End to end on loopback with real TLS: ``ics2gw run`` and ``ics2gw simulate`` as separate processes.

Configurations are generated in a temporary directory from conf/gateway.toml and conf/simulator.toml (free
ports on 127.0.0.1, a fresh journal, spool and registry, reply delay 0). N ENS are POSTed to the gateway's
submit API; each filing then goes the full cycle: sealed send, verified receipt, IE3R01 pushed back (push
mode) or pulled (pull mode), verified, receipted, journaled. The harness polls ``ics2gw journal list --json``
until every filing is ``registered``; latencies to receipt and to MRN come from the journal's own event
times (GET /filings/{filer}/{lrn}). CPU seconds and peak RSS are read from /proc for each process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import payloads
from bench.timing import proc_cpu_seconds, proc_hwm_bytes

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "gateway"]
FILER = "NL123456789"


class Skip(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _abs(text: str) -> str:
    return text.replace('"../', f'"{REPO}/')


def _set(text: str, section: str, key: str, value: str) -> str:
    """Sets ``key = value`` inside ``[section]`` (added at the end of the section when missing)."""
    pat = re.compile(rf"(?ms)^(\[{re.escape(section)}\][^\n]*\n)(.*?)(?=^\[|\Z)")
    m = pat.search(text)
    if m is None:
        return text.rstrip() + f"\n\n[{section}]\n{key} = {value}\n"
    body = m.group(2)
    line = re.compile(rf"(?m)^{re.escape(key)}\s*=.*$")
    body = line.sub(lambda _: f"{key} = {value}", body, count=1) if line.search(body) else f"{key} = {value}\n" + body
    return text[:m.start(2)] + body + text[m.end(2):]


def _commands_missing() -> str | None:
    for cmd in (["run", "--help"], ["simulate", "--help"], ["journal", "list", "--help"]):
        p = subprocess.run([*CLI, *cmd], capture_output=True, text=True, cwd=REPO)
        if p.returncode != 0:
            return f"`ics2gw {' '.join(cmd[:-1])}` is not available yet"
    for f in ("conf/gateway.toml", "conf/simulator.toml"):
        if not (REPO / f).exists():
            return f"{f} does not exist yet"
    return None


def _configs(tmp: Path, mode: str) -> tuple[Path, Path, dict[str, int]]:
    ports = {k: _free_port() for k in ("sti", "admin", "inbound", "api", "health")}
    party = FILER if mode == "push" else f"system1@{FILER}"
    inbound_path = "/as4"
    sim = _abs((REPO / "conf" / "simulator.toml").read_text())
    sim = _set(sim, "server", "listen", '["127.0.0.1"]')
    sim = _set(sim, "server", "port", str(ports["sti"]))
    sim = _set(sim, "admin", "port", str(ports["admin"]))
    sim = _set(sim, "registry", "path", json.dumps(str(tmp / f"sim-{mode}.sqlite")))
    sim = _set(sim, "faults", "reply_delay_seconds", "0")
    sim = re.sub(r'push_url = "https://127\.0\.0\.1:\d+/[^"]*"',
                 f'push_url = "https://127.0.0.1:{ports["inbound"]}{inbound_path}"', sim)
    gw = _abs((REPO / "conf" / "gateway.toml").read_text())
    gw = _set(gw, "identity", "party_id", json.dumps(party))
    gw = re.sub(r'url = "https://127\.0\.0\.1:\d+/ics2/sti"', f'url = "https://127.0.0.1:{ports["sti"]}/ics2/sti"', gw)
    gw = _set(gw, "inbound", "enabled", "true" if mode == "push" else "false")
    gw = _set(gw, "inbound", "listen", f'["127.0.0.1:{ports["inbound"]}"]')
    gw = _set(gw, "inbound", "path", json.dumps(inbound_path))
    gw = _set(gw, "pull", "enabled", "true" if mode == "pull" else "false")
    gw = _set(gw, "pull", "min_interval", "0.05")
    gw = _set(gw, "pull", "max_interval", "0.5")
    gw = _set(gw, "health", "listen", json.dumps(f"127.0.0.1:{ports['health']}"))
    gw = _set(gw, "journal", "path", json.dumps(str(tmp / f"journal-{mode}.sqlite3")))
    for k in ("spool_dir", "inbox_dir", "status_dir"):
        gw = _set(gw, "intake", k, json.dumps(str(tmp / mode / k)))
    gw = _set(gw, "api", "listen", json.dumps(f"127.0.0.1:{ports['api']}"))
    gw = _set(gw, "intake", "validation", '"off"')
    (tmp / mode).mkdir(parents=True, exist_ok=True)
    gcf, scf = tmp / f"gateway-{mode}.toml", tmp / f"simulator-{mode}.toml"
    gcf.write_text(gw)
    scf.write_text(sim)
    return gcf, scf, ports


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise Skip(f"{what} exited with {proc.returncode}: {log.read_text()[-600:]}")
        try:
            _get(url, 1.0)
            return
        except OSError:
            time.sleep(0.2)
    raise Skip(f"{what} did not answer {url} within {timeout:.0f} s: {log.read_text()[-600:]}")


def _journal(gcf: Path) -> list[dict[str, Any]]:
    p = subprocess.run([*CLI, "journal", "list", "--json", "--limit", "100000", "--conf", str(gcf)],
                       capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise Skip(f"`ics2gw journal list --json` failed: {p.stderr.strip()[-400:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip().startswith("{")]


def _ts(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _event_times(life: dict[str, Any]) -> tuple[float | None, float | None]:
    """(receipt time, MRN time) from a filing's lifecycle events (journal times, UTC)."""
    receipt = mrn = None
    for e in life.get("events", []):
        t = _ts(e.get("at"))
        if t is None:
            continue
        if receipt is None and e.get("event") in ("message-receipted", "receipted"):
            receipt = t
        if mrn is None and e.get("event") == "registered":
            mrn = t
    return receipt, mrn


def run_mode(mode: str, n: int, size: int, tmp: Path, timeout: float) -> dict[str, Any]:
    gcf, scf, ports = _configs(tmp, mode)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    slog, glog = tmp / f"sim-{mode}.log", tmp / f"gw-{mode}.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim = subprocess.Popen([*CLI, "simulate", "--conf", str(scf)], cwd=REPO, env=env,
                               stdout=open(slog, "wb"), stderr=subprocess.STDOUT)
        procs.append(sim)
        _wait_http(f"http://127.0.0.1:{ports['admin']}/admin/health", sim, "the simulator", slog)
        gw = subprocess.Popen([*CLI, "run", "--init-journal", "--conf", str(gcf),
                               "--log-level", "info"], cwd=REPO, env=env,
                              stdout=open(glog, "wb"), stderr=subprocess.STDOUT)
        procs.append(gw)
        _wait_http(f"http://127.0.0.1:{ports['health']}/health", gw, "the gateway", glog)
        docs = [payloads.ens(size, lrn=f"NLB{mode.upper()}{os.getpid() % 1000:03d}{i:07d}", seed=i) for i in range(n)]
        commits0 = _get(f"http://127.0.0.1:{ports['health']}/health").get("journal_commits", 0)
        cpu0 = {"gateway": proc_cpu_seconds(gw.pid), "simulator": proc_cpu_seconds(sim.pid)}
        submitted: dict[str, float] = {}
        url = f"http://127.0.0.1:{ports['api']}/filings?action=IE3F32"

        def submit(i: int) -> None:
            req = urllib.request.Request(url, data=docs[i], method="POST",
                                         headers={"Content-Type": "application/xml"})
            t = time.time()
            with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback only
                doc = json.loads(r.read())
                if r.status != 202:
                    raise Skip(f"submit refused: {doc}")
            submitted[doc.get("lrn") or doc.get("filing", {}).get("lrn")] = t

        log_from = glog.stat().st_size
        t_start = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, range(n)))
        t_submitted = time.time()
        seen: dict[str, float] = {}
        states: dict[str, int] = {}
        while time.time() - t_start < timeout:
            rows = _journal(gcf)
            now = time.time()
            states = {}
            for r in rows:
                states[r.get("state")] = states.get(r.get("state"), 0) + 1
                if r.get("state") == "registered" and r.get("lrn") not in seen:
                    seen[r["lrn"]] = now
            if len(seen) >= n:
                break
            if gw.poll() is not None or sim.poll() is not None:
                raise Skip(f"a process died during the run: {glog.read_text()[-400:]} {slog.read_text()[-400:]}")
            time.sleep(0.5)
        t_end = max(seen.values()) if seen else time.time()
        cpu = {"gateway": proc_cpu_seconds(gw.pid) - cpu0["gateway"],
               "simulator": proc_cpu_seconds(sim.pid) - cpu0["simulator"]}
        rss = {"gateway": proc_hwm_bytes(gw.pid), "simulator": proc_hwm_bytes(sim.pid)}
        health = _get(f"http://127.0.0.1:{ports['health']}/health")
        commits = health.get("journal_commits", 0) - commits0
        lat_r: list[float] = []
        lat_m: list[float] = []
        mrn_times: list[float] = []
        for lrn, t0 in submitted.items():
            try:
                life = _get(f"http://127.0.0.1:{ports['api']}/filings/{FILER}/{lrn}")
            except OSError:
                continue
            r_t, m_t = _event_times(life)
            if r_t is not None:
                lat_r.append(r_t - t0)
            if m_t is not None:
                lat_m.append(m_t - t0)
                mrn_times.append(m_t)
        done = len(seen)
        if mrn_times and len(mrn_times) == done:
            t_end = max(mrn_times)  # the journal's own time of the last registration (finer than polling)
        wall = t_end - t_start
        with open(glog, "rb") as f:
            f.seek(log_from)
            gw_log = f.read().decode("utf-8", "replace")
        pull_lines = re.findall(r"event=pull .*?outcome=(\S+)", gw_log)
        res = {
            "mode": mode, "filings": n, "payload_bytes": size, "registered": done, "states": states,
            "wall_s": wall, "submit_s": t_submitted - t_start, "filings_per_s": done / wall if wall > 0 else None,
            "latency_receipt_s": {"p50": _pct(lat_r, 50), "p95": _pct(lat_r, 95), "p99": _pct(lat_r, 99)},
            "latency_mrn_s": {"p50": _pct(lat_m, 50), "p95": _pct(lat_m, 95), "p99": _pct(lat_m, 99)},
            "cpu_s_per_filing": {k: v / max(done, 1) for k, v in cpu.items()},
            "peak_rss_bytes": rss, "journal_commits": commits,
            "fsyncs_per_filing": commits / max(done, 1),
        }
        if mode == "pull":
            res["pull_requests"] = len(pull_lines)
            res["pull_requests_empty"] = sum(1 for o in pull_lines if o == "empty")
            res["pull_requests_per_filing"] = len(pull_lines) / max(done, 1)
        if done < n:
            res["incomplete"] = f"{n - done} of {n} filings not registered within {timeout:.0f} s"
        return res
    finally:
        stop_processes(procs)


def stop_processes(procs: list[subprocess.Popen[Any]], timeout: float = 40.0) -> None:
    """SIGTERM to every process still running (newest first), then wait; a process that does not stop is killed."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def run(workdir: Path, *, n: int = 200, n_big: int = 20, quick: bool = False) -> dict[str, Any]:
    reason = _commands_missing()
    if reason:
        return {"skipped": reason}
    tmp = workdir / "e2e"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out: dict[str, Any] = {}
    for key, mode, count, size in (("push", "push", n, 10_000), ("pull", "pull", n, 10_000),
                                   ("push_1mb", "push", n_big, 1_000_000)):
        try:
            out[key] = run_mode(mode, count, size, tmp / key, timeout=120 if quick else 240)
        except Skip as exc:
            out[key] = {"skipped": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the rest of the benchmark must still finish
            out[key] = {"skipped": f"{type(exc).__name__}: {exc}"}
    return out
