"""One journal, several gateway processes: SQLite with one instance and PostgreSQL with one, two and three instances
sharing one database, side by side in one run, same workload.

Per configuration: a fresh simulator (``ics2gw simulate``), a fresh journal (SQLite file, or a fresh database on
one private PostgreSQL server started here, gateway/journal/pglocal.py, durable: fsync and synchronous_commit on,
migrated once with ``ics2gw journal migrate``), and K ``ics2gw run`` processes, each with its own API, inbound and
health ports. N ENS of ~10 KB are POSTed round-robin over the instances' APIs (8 client threads); the simulator
pushes its replies (receipts, IE3R01) through a TCP round-robin balancer in this process (TLS passes through, one
choice per connection; the simulator keeps a small keep-alive pool, so its connections spread over the instances),
as a load balancer in front of several instances would. The run ends when every filing is ``registered`` (the
journal is polled directly: SQLite read-only, or SQL on the database, every 0.2 s).

CPU from /proc (utime + stime) before and after: each gateway process, the simulator, the PostgreSQL server (the
postmaster, every child, and the children that exited in between through the postmaster's cutime + cstime; they run
as another user but /proc/PID/stat is readable), and the whole machine (/proc/stat), so that the load of other
users of this shared machine shows as "other".

Correctness, checked after each configuration (outside the timing) and failing the configuration loudly: the
simulator's report (``ics2gw simulate report --json``) has every LRN with exactly one registration; the journal
(``ics2gw journal list --json`` of instance 1) has exactly N filings, all ``registered``; no process died.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import payloads
from bench.e2e import CLI, FILER, REPO, Skip, _abs, _free_port, _get, _set, _wait_http, stop_processes
from bench.timing import cores, proc_cpu_seconds

CONFIGS = (("sqlite_1", "sqlite", 1), ("pg_1", "postgresql", 1), ("pg_2", "postgresql", 2), ("pg_3", "postgresql", 3))
ROLE = "ics2gw"
PASSWORD_ENV = "ICS2GW_BENCH_JOURNAL_PASSWORD"
POLL_S = 0.2


class Failed(Exception):
    """A configuration's run was wrong (not merely slow): the benchmark reports it and exits non-zero."""


# ----------------------------------------------------------------------------------------------- /proc
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def pg_cpu_seconds(postmaster: int) -> float:
    """CPU of the PostgreSQL server: the postmaster (own + its reaped children's), and every live child."""
    total = 0.0
    f = _stat(postmaster)
    if f is not None:
        total += sum(int(x) for x in f[11:15]) / _TICK     # utime stime cutime cstime
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat(int(d))
        if f is not None and int(f[1]) == postmaster:
            total += (int(f[11]) + int(f[12])) / _TICK
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine, all cores (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    busy = sum(vals[:8]) - vals[3] - vals[4]        # user nice system idle iowait irq softirq steal
    return busy / _TICK


# ----------------------------------------------------------------------------------------------- balancer
class RoundRobinProxy:
    """A TCP balancer on 127.0.0.1 (a thread with its own event loop): each new connection goes to the next
    target port, bytes are copied both ways (TLS passes through untouched)."""

    def __init__(self) -> None:
        self.targets: list[int] = []
        self.connections: dict[int, int] = {}
        self._next = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-lb", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = self.targets[next(self._next) % len(self.targets)]
        self.connections[port] = self.connections.get(port, 0) + 1
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                try:
                    w.close()
                except OSError:
                    pass

        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        except Exception:  # noqa: BLE001 - closing connections that hang must not hang the benchmark
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


# ----------------------------------------------------------------------------------------------- configs
def _sim_config(tmp: Path, push_port: int) -> tuple[Path, dict[str, int]]:
    ports = {"sti": _free_port(), "admin": _free_port()}
    sim = _abs((REPO / "conf" / "simulator.toml").read_text())
    sim = _set(sim, "server", "listen", '["127.0.0.1"]')
    sim = _set(sim, "server", "port", str(ports["sti"]))
    sim = _set(sim, "admin", "port", str(ports["admin"]))
    sim = _set(sim, "registry", "path", json.dumps(str(tmp / "sim.sqlite")))
    sim = _set(sim, "faults", "reply_delay_seconds", "0")
    sim = re.sub(r'push_url = "https://127\.0\.0\.1:\d+/[^"]*"',
                 f'push_url = "https://127.0.0.1:{push_port}/as4"', sim)
    scf = tmp / "simulator.toml"
    scf.write_text(sim)
    return scf, ports


def _gw_config(tmp: Path, k: int, sti_port: int, journal: dict[str, str]) -> tuple[Path, dict[str, int]]:
    ports = {"inbound": _free_port(), "api": _free_port(), "health": _free_port()}
    gw = _abs((REPO / "conf" / "gateway.toml").read_text())
    gw = _set(gw, "identity", "party_id", json.dumps(FILER))
    gw = re.sub(r'url = "https://127\.0\.0\.1:\d+/ics2/sti"', f'url = "https://127.0.0.1:{sti_port}/ics2/sti"', gw)
    gw = _set(gw, "inbound", "enabled", "true")
    gw = _set(gw, "inbound", "listen", f'["127.0.0.1:{ports["inbound"]}"]')
    gw = _set(gw, "inbound", "path", '"/as4"')
    gw = _set(gw, "pull", "enabled", "false")
    gw = _set(gw, "health", "listen", json.dumps(f"127.0.0.1:{ports['health']}"))
    if journal["backend"] == "sqlite":
        gw = _set(gw, "journal", "path", json.dumps(journal["path"]))
    else:
        gw = re.sub(r"(?m)^path\s*=.*journal.*$\n?", "", gw)
        for key in ("backend", "dsn", "password_env"):
            gw = _set(gw, "journal", key, json.dumps(journal[key]))
    inst = tmp / f"gw{k}"
    for key in ("spool_dir", "inbox_dir", "status_dir"):
        gw = _set(gw, "intake", key, json.dumps(str(inst / key)))
    gw = _set(gw, "api", "listen", json.dumps(f"127.0.0.1:{ports['api']}"))
    gw = _set(gw, "intake", "validation", '"off"')
    inst.mkdir(parents=True, exist_ok=True)
    gcf = tmp / f"gateway{k}.toml"
    gcf.write_text(gw)
    return gcf, ports


# ----------------------------------------------------------------------------------------------- journal reads
def _state_counts(journal: dict[str, str], pg_conn: Any) -> dict[str, int]:
    """Filings by state, straight from the journal (cheap enough to poll; the CLI is used for the final check)."""
    if journal["backend"] == "sqlite":
        if not Path(journal["path"]).exists():
            return {}
        con = sqlite3.connect(f"file:{journal['path']}?mode=ro", uri=True, timeout=5)
        try:
            return dict(con.execute("SELECT state, count(*) FROM filings GROUP BY state").fetchall())
        finally:
            con.close()
    return dict(pg_conn.execute("SELECT state, count(*) FROM filings GROUP BY state").fetchall())


def _cli_json(args: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    if p.returncode != 0:
        raise Failed(f"`ics2gw {' '.join(args[:2])}` failed ({p.returncode}): {p.stderr.strip()[-600:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip().startswith("{")]


def _log_problems(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    return [ln for ln in text.splitlines()
            if "Traceback" in ln or " level=error" in ln or " ERROR " in ln or "level=critical" in ln][:20]


# ----------------------------------------------------------------------------------------------- one config
def run_config(key: str, backend: str, k: int, n: int, tmp: Path, pg: Any, timeout: float) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pg_conn = None
    if backend == "sqlite":
        journal = {"backend": "sqlite", "path": str(tmp / "journal.sqlite3")}
    else:
        dbname = f"bench_{key}_{secrets.token_hex(3)}"
        dsn = pg.create_database(dbname, owner=ROLE)
        journal = {"backend": "postgresql", "dsn": dsn, "password_env": PASSWORD_ENV}
        env[PASSWORD_ENV] = pg.role_password
    lb = RoundRobinProxy()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        scf, sports = _sim_config(tmp, lb.port)
        gws = [_gw_config(tmp, i + 1, sports["sti"], journal) for i in range(k)]
        lb.targets = [p["inbound"] for _, p in gws]
        if backend == "postgresql":
            p = subprocess.run([*CLI, "journal", "migrate", "--conf", str(gws[0][0])], capture_output=True, text=True,
                               cwd=REPO, env=env, timeout=120)
            if p.returncode != 0:
                raise Failed(f"`ics2gw journal migrate` failed: {p.stdout}{p.stderr}")
            import psycopg
            pg_conn = psycopg.connect(pg.dsn(dbname, ROLE, pg.role_password), autocommit=True)
        slog = tmp / "sim.log"
        sim = subprocess.Popen([*CLI, "simulate", "--conf", str(scf)], cwd=REPO, env=env,
                               stdout=open(slog, "wb"), stderr=subprocess.STDOUT)
        procs.append(sim)
        _wait_http(f"http://127.0.0.1:{sports['admin']}/admin/health", sim, "the simulator", slog)
        gw_procs: list[subprocess.Popen[bytes]] = []
        for i, (gcf, ports) in enumerate(gws):
            glog = tmp / f"gw{i + 1}.log"
            logs.append(glog)
            # --init-journal creates the state folders (and finds the schema current after the migrate above)
            g = subprocess.Popen([*CLI, "run", "--init-journal", "--conf", str(gcf), "--log-level", "info"], cwd=REPO, env=env,
                                 stdout=open(glog, "wb"), stderr=subprocess.STDOUT)
            procs.append(g)
            gw_procs.append(g)
            _wait_http(f"http://127.0.0.1:{ports['health']}/health", g, f"gateway {i + 1}", glog, timeout=60)
        tag = f"{key.upper().replace('_', '')}{os.getpid() % 1000:03d}"
        lrns = [f"NLM{tag}{i:07d}" for i in range(n)]
        docs = [payloads.ens(10_000, lrn=lrns[i], seed=i) for i in range(n)]
        urls = [f"http://127.0.0.1:{p['api']}/filings?action=IE3F32" for _, p in gws]

        def submit(i: int) -> None:
            req = urllib.request.Request(urls[i % k], data=docs[i], method="POST",
                                         headers={"Content-Type": "application/xml"})
            with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 - loopback only
                if r.status != 202:
                    raise Failed(f"submit refused: HTTP {r.status} {r.read()[:300]!r}")

        def commits() -> int:
            return sum(int(_get(f"http://127.0.0.1:{p['health']}/health").get("journal_commits", 0)) for _, p in gws)

        commits0 = commits()
        postmaster = pg.postmaster_pid() if backend == "postgresql" else None
        cpu0 = {"gateway": [proc_cpu_seconds(g.pid) for g in gw_procs], "simulator": proc_cpu_seconds(sim.pid),
                "postgres": pg_cpu_seconds(postmaster) if postmaster else 0.0, "machine": machine_cpu_seconds(),
                "bench": time.process_time()}
        t_start = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, range(n)))
        t_submitted = time.time()
        states: dict[str, int] = {}
        lock_q: dict[str, int] = {}     # the statements seen waiting for a lock, and how often
        waits: dict[str, int] = {}      # PostgreSQL sessions of this database by state / wait, sampled every poll
        samples = 0
        while True:
            states = _state_counts(journal, pg_conn)
            if pg_conn is not None:
                samples += 1
                for st, wt, we, q in pg_conn.execute(
                        "SELECT state, wait_event_type, wait_event, left(query, 90) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall():
                    if st == "idle":
                        continue
                    if wt == "Lock":
                        lock_q[f"{we}: {q}"] = lock_q.get(f"{we}: {q}", 0) + 1
                    label = f"{st or 'no state (background)'}" + (f" / {wt}:{we}" if wt and not (st == "idle in transaction") else "")
                    waits[label] = waits.get(label, 0) + 1
            if states.get("registered", 0) >= n:
                break
            dead = [(i, p.returncode) for i, p in enumerate(procs) if p.poll() is not None]
            if dead:
                raise Failed(f"process(es) died during the run (0 = simulator, i = gateway i): {dead}; states "
                             f"{states}")
            if time.time() - t_start > timeout:
                raise Failed(f"not every filing registered within {timeout:.0f} s: states {states}")
            time.sleep(POLL_S)
        t_end = time.time()
        cpu = {"gateway": [proc_cpu_seconds(g.pid) - c for g, c in zip(gw_procs, cpu0["gateway"])],
               "simulator": proc_cpu_seconds(sim.pid) - cpu0["simulator"],
               "postgres": (pg_cpu_seconds(postmaster) - cpu0["postgres"]) if postmaster else 0.0,
               "machine": machine_cpu_seconds() - cpu0["machine"], "bench": time.process_time() - cpu0["bench"]}
        wall = t_end - t_start
        n_commits = commits() - commits0
        # ---- correctness (outside the timing)
        problems: list[str] = []
        report = {r["lrn"]: r for r in _cli_json(["simulate", "report", "--json", "--conf", str(scf)], env)}
        missing = [lrn for lrn in lrns if lrn not in report]
        wrong = {lrn: report[lrn].get("registrations") for lrn in lrns
                 if lrn in report and report[lrn].get("registrations") != 1}
        extra_lrns = sorted(set(report) - set(lrns))
        multi_mid = {lrn: len(report[lrn].get("message_ids") or []) for lrn in lrns
                     if lrn in report and len(report[lrn].get("message_ids") or []) != 1}
        if missing:
            problems.append(f"{len(missing)} LRNs unknown to the simulator, e.g. {missing[:5]}")
        if wrong:
            problems.append(f"{len(wrong)} LRNs not registered exactly once at the simulator: "
                            f"{dict(list(wrong.items())[:10])}")
        if extra_lrns:
            problems.append(f"the simulator has LRNs nobody submitted: {extra_lrns[:5]}")
        rows = _cli_json(["journal", "list", "--json", "--limit", "100000", "--conf", str(gws[0][0])], env)
        final = {}
        for r in rows:
            final[r.get("state")] = final.get(r.get("state"), 0) + 1
        if len(rows) != n or final.get("registered", 0) != n:
            problems.append(f"journal: {len(rows)} filings, by state {final}; expected {n}, all registered")
        sends: dict[str, int] = {}
        per_instance_sends, per_instance_receives = [], []
        for lg in logs:
            text = lg.read_text(errors="replace")
            ok = re.findall(r"event=send .*?message_id=(\S+) outcome=receipt-ok .*?kind=user-message", text)
            per_instance_sends.append(len(ok))
            per_instance_receives.append(len(re.findall(r"event=receive ", text)))
            for mid in ok:
                sends[mid] = sends.get(mid, 0) + 1
        twice = {mid: c for mid, c in sends.items() if c > 1}
        if twice:
            problems.append(f"{len(twice)} user messages sent and receipted more than once (across instances): "
                            f"{dict(list(twice.items())[:5])}")
        log_problems = {f"gw{i + 1}": _log_problems(lg) for i, lg in enumerate(logs)}
        log_problems["sim"] = _log_problems(slog)
        busy = sum(cpu["gateway"]) + cpu["simulator"] + cpu["postgres"]
        n_cores = cores()
        res = {
            "backend": backend, "instances": k, "filings": n, "registered": states.get("registered", 0),
            "wall_s": wall, "submit_s": t_submitted - t_start, "filings_per_s": n / wall,
            "cpu_s": {"gateway_per_instance": cpu["gateway"], "gateway": sum(cpu["gateway"]),
                      "simulator": cpu["simulator"], "postgres": cpu["postgres"], "bench_harness": cpu["bench"],
                      "machine": cpu["machine"],
                      "other": max(0.0, cpu["machine"] - busy - cpu["bench"])},
            "cpu_s_per_filing": {"gateway": sum(cpu["gateway"]) / n, "simulator": cpu["simulator"] / n,
                                 "postgres": cpu["postgres"] / n},
            # what this configuration would do with the whole machine to itself: CPU-bound at cores / CPU per filing
            "cpu_bound_filings_per_s": n_cores * n / busy if busy else None,
            "simulator_share_of_ours": cpu["simulator"] / busy if busy else None,
            "simulator_share_of_machine": cpu["simulator"] / (wall * n_cores),
            "machine_busy": cpu["machine"] / (wall * n_cores),
            "journal_commits_per_filing": n_commits / n,
            "lock_wait_queries": dict(sorted(lock_q.items(), key=lambda x: -x[1])[:5]),
            "pg_sessions_sampled": {"polls": samples,
                                    "mean_sessions": {w: c / samples for w, c in
                                                      sorted(waits.items(), key=lambda x: -x[1])}} if samples else None,
            "user_messages_sent_per_instance": per_instance_sends,
            "inbound_received_per_instance": per_instance_receives,
            "balancer_connections": [lb.connections.get(p, 0) for p in lb.targets],
            "simulator_message_ids_not_1": len(multi_mid),
            "log_problems": {k2: v for k2, v in log_problems.items() if v},
            "journal_final_states": final,
        }
        if problems:
            res["failed"] = problems
        return res
    finally:
        stop_processes(procs)
        if pg_conn is not None:
            pg_conn.close()
        lb.close()


def run(workdir: Path, *, n: int = 300, timeout: float = 300.0, keep_logs: Path | None = None) -> dict[str, Any]:
    """Every configuration in CONFIGS; ``{"skipped": why}`` without PostgreSQL (the SQLite row alone is the e2e)."""
    from gateway.journal import pglocal
    why = pglocal.available()
    if why:
        return {"skipped": why}
    tmp = workdir / "multi"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out: dict[str, Any] = {"filings": n, "cores": cores(), "configs": {}}
    pg = pglocal.LocalPostgres()       # durable: fsync and synchronous_commit on, as the journal requires
    try:
        try:
            pg.start()
        except pglocal.PostgresStartError as exc:   # installed but not starting: an error, not a skip
            out["failed"] = {"postgres": [f"the private PostgreSQL server did not start: {exc}"]}
            return out
        pg.role_password = secrets.token_urlsafe(12)  # type: ignore[attr-defined]
        pg.create_role(ROLE, pg.role_password)  # type: ignore[attr-defined]
        out["postgres"] = {"bindir": str(pg.bindir), "durable": pg.durable}
        for key, backend, k in CONFIGS:
            try:
                out["configs"][key] = run_config(key, backend, k, n, tmp / key, pg, timeout)
            except (Failed, Skip) as exc:
                out["configs"][key] = {"backend": backend, "instances": k, "failed": [str(exc)]}
            except Exception as exc:  # noqa: BLE001 - the other configurations must still run
                out["configs"][key] = {"backend": backend, "instances": k,
                                       "failed": [f"{type(exc).__name__}: {exc}"]}
            d = out["configs"][key]
            if "failed" in d:
                d["logs_tail"] = {lg.name: lg.read_text(errors="replace")[-3000:]
                                  for lg in sorted((tmp / key).glob("*.log"))}
        if keep_logs is not None:
            shutil.copytree(tmp, keep_logs, dirs_exist_ok=True,
                            ignore=lambda d, names: [x for x in names if re.fullmatch(r"gw\d+|.*\.sqlite.*", x)])
    finally:
        pg.close()
    c = out["configs"]
    base = c.get("pg_1", {}).get("filings_per_s")
    for k in (2, 3):
        v = c.get(f"pg_{k}", {}).get("filings_per_s")
        out[f"scaling_1_to_{k}"] = v / base if base and v else None
    b = c.get("pg_1", {}).get("cpu_bound_filings_per_s")
    for k in (2, 3):
        v = c.get(f"pg_{k}", {}).get("cpu_bound_filings_per_s")
        out[f"cpu_bound_scaling_1_to_{k}"] = v / b if b and v else None
    sq = c.get("sqlite_1", {}).get("filings_per_s")
    out["pg_1_vs_sqlite_1"] = base / sq if base and sq else None
    out["failed"] = {key: d["failed"] for key, d in c.items() if d.get("failed")}
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.multi [--n N]``: this part alone, the table on stdout (``python -m bench`` records it)."""
    import argparse
    import tempfile

    from bench import report
    ap = argparse.ArgumentParser(prog="python -m bench.multi", description=main.__doc__)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy the configurations and logs here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ics2gw-bench-multi-"))
    try:
        res = run(work, n=args.n, keep_logs=args.keep_logs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report.multi_table(res)))
    for key, why in (res.get("failed") or {}).items():
        print(f"FAILED {key}: {why}")
    return 1 if res.get("failed") else 0


if __name__ == "__main__":
    raise SystemExit(main())
