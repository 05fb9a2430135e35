"""Several gateway daemons (``ics2gw run``) on ONE PostgreSQL journal, for the active-active tests (issue 15).

What the instances share and what they do not, as a multi-host deployment would have it:
- shared: the journal (one PostgreSQL database, ``[journal] backend = "postgresql"``, the password in the
  environment variable named by ``password_env``), the identity and PKI, and the ERP folders: the spool (intake
  claims a file by an atomic rename, so two instances never take the same one), the archive, the rejected folder,
  the inbox and the status folder;
- per instance: the configuration file, the API, inbound and health ports, the log, and the intake's work folder
  (``spool/work-<i>``: a file an instance claimed and had not journaled when it died is taken up again by that
  instance when it restarts; a work folder shared by live instances would have two of them process the same file);
- in front of the instances' inbound servers a small TCP balancer (TLS passes through; the instances present the
  same server certificate), whose address is the one push URL customs knows: a push goes to the next live instance,
  as a TCP load balancer in front of several hosts would send it.

Read-outs: the simulator's registry (``SimEnv.report``), the journal through the backend's reader
(``gateway.journal.factory.open_reader``), the shared inbox and every instance's log.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.journal.states import FINAL_STATES
from tests.pg_support import PgDsn
from tests.pipeline_harness import (PARTY, GatewayEnv, Proc, SimEnv, free_port, http, port_open, push_url, q,
                                    wait_until)
from tests.pipeline_harness import _set as set_key

# where a filing rests in these tests: customs answered (registered, or a final state), or the gateway gave up
# (failed, held: an operator's matter, which the tests then report)
SETTLED = FINAL_STATES | {"registered", "failed", "held"}


def drop_key(text: str, section: str, key: str) -> str:
    """Removes ``key = ...`` from ``[section]`` of a TOML text (the sample's ``[journal] path``: sqlite only)."""
    out: list[str] = []
    cur = None
    for line in text.splitlines():
        s = line.strip()
        header = re.match(r"\[\[?\s*([^\]]+?)\s*\]\]?", s)
        if header:
            cur = header.group(1)
        elif cur == section and re.match(rf"{re.escape(key)}\s*=", s):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ TCP balancer
class TcpBalancer:
    """Round robin over the instances' inbound ports, skipping those that refuse the connection (a dead instance);
    bytes are relayed untouched (TLS end to end between customs and the instance)."""

    def __init__(self, backends: list[int], port: int | None = None) -> None:
        self.backends = backends              # the list is read at each connection: tests may change it
        self.port = port or free_port()
        self.connections: Counter[int] = Counter()
        self.refused = 0
        self._rr = itertools.count()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> TcpBalancer:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.2)
        self._sock = s
        t = threading.Thread(target=self._accept_loop, name="tcp-balancer", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        ports = list(self.backends)
        start = next(self._rr)
        for k in range(len(ports)):
            port = ports[(start + k) % len(ports)]
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            except OSError:
                continue
            upstream.settimeout(None)
            self.connections[port] += 1
            return upstream
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            self.refused += 1
            client.close()            # all instances down: customs sees a refused push and retries later
            return

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        t.start()
        pipe(client, upstream)
        t.join(120)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()


# ------------------------------------------------------------------------------------------------ one instance
def spawn_env(name: str, args: list[str], log: Path, cwd: Path, env: dict[str, str]) -> Proc:
    full = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    with open(log, "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "gateway", *args], stdout=out, stderr=subprocess.STDOUT,
                             cwd=cwd, env=full, start_new_session=True)
    return Proc(name, p, log)


@dataclass
class PgGatewayEnv(GatewayEnv):
    """A GatewayEnv whose journal is the shared PostgreSQL database (the password in ``extra_env``)."""

    index: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, wait: bool = True) -> PgGatewayEnv:  # type: ignore[override]
        self.starts += 1
        self.proc = spawn_env(f"gateway-{self.index}", ["run", "--init-journal", "--conf", str(self.conf)],
                              self.dir / "gateway.log", self.dir, self.extra_env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        wait_until(lambda: not self.proc.alive() or self._ready(), timeout,
                   f"gateway instance {self.index} to be ready", self.proc.tail)
        assert self.proc.alive(), self.proc.tail()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        full = dict(os.environ, **self.extra_env)
        return subprocess.run([sys.executable, "-m", "gateway", *args, "--conf", str(self.conf)], cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout, env=full)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def log_text(self) -> str:
        try:
            return (self.dir / "gateway.log").read_text(errors="replace")
        except OSError:
            return ""


# ------------------------------------------------------------------------------------------------ the cluster
@dataclass
class Cluster:
    dir: Path
    db: PgDsn | None          # None: one instance on a SQLite journal (the same harness as a baseline)
    sim: SimEnv
    shared: Path
    balancer: TcpBalancer
    instances: list[PgGatewayEnv]
    _rr: Iterator[int] = field(default_factory=itertools.count)
    last_read_error: str | None = None

    @classmethod
    def create(cls, dir: Path, db: PgDsn | None, *, n: int = 3, lease_seconds: float = 5.0,
               retry: dict[str, Any] | None = None, pipeline: dict[str, Any] | None = None,
               sim_faults: dict[str, Any] | None = None, pool_size: int = 4, extra_conf: str = "",
               extra_env: dict[str, str] | None = None) -> Cluster:
        """``extra_conf``: TOML appended to every instance's configuration (e.g. an ``[amqp]`` section);
        ``extra_env``: more environment for the daemons (the secrets that configuration names)."""
        dir.mkdir(parents=True, exist_ok=True)
        assert db is not None or n == 1, "a SQLite journal has one daemon (its .lock file refuses a second)"
        inbound_ports = [free_port(dual=True) for _ in range(n)]
        balancer = TcpBalancer(inbound_ports)
        sim = SimEnv.create(dir / "sim", [{"party_id": PARTY, "push_url": push_url(balancer.port)}],
                            faults={"delay_seconds": 0.02, "push_retry_seconds": 0.2, **(sim_faults or {})})
        # customs keeps pushing while instances are down: more attempts than the default 10
        sim.conf.write_text(re.sub(r"max_attempts = \d+", "max_attempts = 60", sim.conf.read_text()))
        shared = dir / "shared"
        instances = []
        for i in range(n):
            gw = PgGatewayEnv.create(dir / f"gw{i}", sim, inbound_port=inbound_ports[i],
                                     retry={"initial_seconds": 0.1, "max_seconds": 0.5, "max_attempts": 100,
                                            **(retry or {})},
                                     pipeline={"lease_seconds": lease_seconds, **(pipeline or {})})
            gw.index = i
            text = gw.conf.read_text()
            if db is None:
                text = set_key(text, "journal", "path", q(str(shared / "journal.sqlite3")))
            else:
                gw.extra_env = db.env()
                text = drop_key(text, "journal", "path")
                for k, v in {**db.journal_table(), "pool_size": pool_size, "connect_timeout_seconds": 5}.items():
                    text = set_key(text, "journal", k, json.dumps(v))
            for key, sub in (("spool_dir", "spool/incoming"), ("archive_dir", "spool/archive"),
                             ("rejected_dir", "spool/rejected"), ("inbox_dir", "inbox"), ("status_dir", "status"),
                             ("work_dir", f"spool/work-{i}")):
                text = set_key(text, "intake", key, q(str(shared / sub)))
            gw.extra_env = {**gw.extra_env, **(extra_env or {})}
            gw.conf.write_text(text + extra_conf)
            instances.append(gw)
        return cls(dir, db, sim, shared, balancer, instances)

    # ---------------------------------------------------------------------------------------- lifecycle
    def start(self) -> Cluster:
        """The simulator, the balancer, then every instance at once (their migrations race on purpose: the
        contract makes ``migrate`` safe when several run together)."""
        self.sim.start()
        self.balancer.start()
        for gw in self.instances:
            gw.start(wait=False)
        for gw in self.instances:
            gw.wait_ready()
        if self.db is not None:
            self.assert_journal_is_postgres()
        return self

    def kill(self, i: int) -> None:
        """SIGKILL to instance ``i`` (no drain, no goodbye: a host failure)."""
        self.instances[i].kill()

    def start_instance(self, i: int) -> None:
        self.instances[i].start()

    def restart(self, i: int, pause: float = 0.0) -> None:
        self.kill(i)
        time.sleep(pause)
        self.start_instance(i)

    def live(self) -> list[PgGatewayEnv]:
        return [gw for gw in self.instances if gw.alive()]

    def close(self) -> None:
        for gw in self.instances:
            if gw.alive():
                gw.proc.kill()   # type: ignore[union-attr]
        self.balancer.stop()
        if self.sim.proc is not None and self.sim.proc.alive():
            self.sim.stop()

    def stop_all(self) -> list[int]:
        """SIGTERM to every live instance; their exit codes (0 = clean drain)."""
        return [gw.stop() for gw in self.instances if gw.alive()]

    # ---------------------------------------------------------------------------------------- intake
    @property
    def spool(self) -> Path:
        return self.shared / "spool" / "incoming"

    @property
    def inbox(self) -> Path:
        return self.shared / "inbox"

    def drop(self, name: str, data: bytes) -> Path:
        """A file into the shared spool, atomically (written beside it, renamed in), as the ERP must."""
        self.spool.mkdir(parents=True, exist_ok=True)
        tmp = self.spool.parent / f".{name}.tmp"
        tmp.write_bytes(data)
        target = self.spool / name
        os.replace(tmp, target)
        return target

    def submit(self, data: bytes, *, prefer: int | None = None, timeout: float = 60.0) -> tuple[int, int]:
        """POSTs to an instance's API (``prefer``, else round robin), moving on to the next one while an instance
        is down or answers 5xx (intake is idempotent). Returns (instance index, attempts)."""
        deadline = time.monotonic() + timeout
        attempts = 0
        n = len(self.instances)
        start = prefer if prefer is not None else next(self._rr)
        while True:
            for k in range(n):
                gw = self.instances[(start + k) % n]
                attempts += 1
                try:
                    status, body = gw.submit(data)
                except OSError:
                    continue
                if status in (200, 201, 202):
                    return gw.index, attempts
                assert status >= 500, (gw.index, status, body)      # only "instance down / busy" is retried
            if time.monotonic() > deadline:
                raise AssertionError(f"no instance accepted the submission within {timeout}s\n{self.logs()}")
            time.sleep(0.1)

    # ---------------------------------------------------------------------------------------- read-outs
    def journal_config(self) -> Any:
        from gateway.journal.config import JournalConfig
        if self.db is None:
            return JournalConfig(path=self.shared / "journal.sqlite3")
        return JournalConfig(path=self.dir / "unused.sqlite3", backend="postgresql", dsn=str(self.db),
                             password=self.db.password, pool_size=2, connect_timeout_seconds=5)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Any]:
        """A read-only journal on the shared database (the backend's own reader, as ``ics2gw journal list``)."""
        from gateway.journal.factory import open_reader
        j = open_reader(self.journal_config())
        try:
            yield j
        finally:
            j.close()

    def assert_journal_is_postgres(self) -> None:
        """The instances really keep their journal in the shared database (not in a SQLite file of their own)."""
        import psycopg
        assert self.db is not None
        with psycopg.connect(self.db.with_password, connect_timeout=5) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]
        assert tables, ("the shared PostgreSQL database has no tables after the instances started: they did not "
                        "use [journal] backend = \"postgresql\"\n" + self.logs())
        leaked = [str(p) for p in self.dir.rglob("*.sqlite3") if p.parent.name != "sim"]
        assert not leaked, f"instances created SQLite journals: {leaked}"

    def filings(self) -> dict[str, dict[str, Any]]:
        """Every filing of the journal by LRN (dicts: lrn, state, mrn, ...); a database that is just restarting
        reads as {}. Raises if one LRN has two filings (one filer here)."""
        try:
            with self.reader() as j:
                rows = j.list_filings(limit=1_000_000)
        except Exception as exc:   # noqa: BLE001 - the database restarting under the reader: ask again later
            self.last_read_error = f"{type(exc).__name__}: {exc}"
            return {}
        counts = Counter(r["lrn"] for r in rows)
        dup = {lrn: c for lrn, c in counts.items() if c > 1}
        assert not dup, f"LRNs with more than one filing: {dup}"
        return {r["lrn"]: r for r in rows}

    def wait_all_final(self, lrns: list[str], timeout: float = 90.0) -> dict[str, dict[str, Any]]:
        """Waits until every LRN has a filing in a settled state (``SETTLED``) in the journal and, for those
        registered, the IE3R01 delivered to the shared inbox; returns the filings by LRN."""
        last: dict[str, Any] = {}

        def done() -> bool:
            rows = self.filings()
            last["rows"] = rows
            if not rows or not all(rows.get(lrn, {}).get("state") in SETTLED for lrn in lrns):
                return False
            delivered = {m["filing"]["lrn"] for m in self.inbox_metadata()
                         if m.get("action") == "IE3R01" and m.get("filing")}
            return all(lrn in delivered for lrn in lrns if rows[lrn]["state"] == "registered")

        def why() -> str:
            rows = last.get("rows") or {}
            pending = {lrn: rows.get(lrn, {}).get("state") for lrn in lrns
                       if rows.get(lrn, {}).get("state") not in SETTLED}
            return (f"not final: {json.dumps(pending)[:3000]}\nlast journal read error: {self.last_read_error}\n"
                    f"{self.logs()}")

        wait_until(done, timeout, f"all {len(lrns)} filings final", why, interval=0.5)
        return last["rows"]

    def inbox_metadata(self) -> list[dict[str, Any]]:
        if not self.inbox.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.inbox.glob("*.json"))]

    def processed_inbound(self) -> Counter[str]:
        """How many times each inbound eb:MessageId was processed, over every instance's whole log."""
        c: Counter[str] = Counter()
        for gw in self.instances:
            c.update(re.findall(r"logger=ics2gw\.inbound environment=\S+ msg=inbound message_id=(\S+)",
                                gw.log_text()))
        return c

    def wait_log(self, pattern: str, timeout: float = 30.0) -> int:
        """Waits until some instance's log matches ``pattern``; returns that instance's index."""
        rx = re.compile(pattern)

        def found() -> int | None:
            return next((gw.index + 1 for gw in self.instances if rx.search(gw.log_text())), None)

        return wait_until(found, timeout, f"a log line matching {pattern!r}", self.logs) - 1

    def logs(self, n: int = 60) -> str:
        parts = [gw.proc.tail(n) if gw.proc else f"--- gateway-{gw.index}: not started" for gw in self.instances]
        if self.sim.proc is not None:
            parts.append(self.sim.proc.tail(30))
        return "\n".join(parts)

    def health(self, i: int) -> tuple[int, Any]:
        return http("GET", f"http://127.0.0.1:{self.instances[i].health_port}/health", timeout=5)


def instance_ports_open(cluster: Cluster) -> dict[int, bool]:
    return {gw.index: port_open(gw.api_port) for gw in cluster.instances}


__all__ = ["SETTLED", "Cluster", "PgGatewayEnv", "TcpBalancer", "drop_key", "instance_ports_open",
           "spawn_env"]


@contextlib.contextmanager
def cluster_run(cluster: Cluster, pg_server: Any = None) -> Iterator[Cluster]:
    """The body of a cluster test: on any failure the instances' and the simulator's logs are printed (pytest shows
    them with the failure); the cluster is always torn down, and a shared test server the body stopped or killed is
    started again for the next test."""
    try:
        yield cluster
    except BaseException:
        print(cluster.logs(120))
        raise
    finally:
        cluster.close()
        if pg_server is not None and not pg_server.running():
            pg_server.start()
