"""Helpers for the pipeline end-to-end and crash tests: per-test configurations with free loopback ports, the
customs simulator and the gateway daemon as real subprocesses, and the read-outs (simulate report, journal list,
status, inbox) that the tests assert on.

Every address is loopback (127.0.0.1, and ::1 where the inbound server and the simulator bind). Logs of each
process go to files under the test's directory; ``Proc.tail()`` is attached to assertion messages on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "ics2"
NS = "urn:wco:datamodel:eu:ics2:2"
PARTY = "NL123456789"
PULL_PARTY = "system1@NL123456789"

VALID_FIXTURES = ("ens-IE3F10-sea.xml", "ens-IE3F20-air-attachment.xml", "ens-IE3F26-air.xml",
                  "ens-IE3F32-express.xml", "ens-IE3F42-postal.xml", "ens-IE3F50-road.xml")
INVALID_FIXTURES = ("ens-IE3F10-invalid-office-sci.xml", "ens-IE3F32-invalid-lrn-eori.xml")
# fixtures whose payload declares binaryFile attachments: the files that must travel with them (spool: NAME.d/)
FIXTURE_ATTACHMENTS = {"ens-IE3F20-air-attachment.xml": {"binaryattachment1.pdf": "commercial-invoice.pdf"}}


# the loopback port helpers are the conformance runner's (one implementation for the runner and the tests)
from gateway.conformance.confgen import free_port, ipv6_loopback, port_open  # noqa: E402,F401


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] | None = None,
               interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" +
                                 (f"\n{on_fail()}" if on_fail else ""))
        time.sleep(interval)


def _abs(text: str, base: Path) -> str:
    """Makes the ``"../..."`` paths of a sample configuration absolute (relative to conf/)."""
    return re.sub(r'"\.\./([^"]*)"', lambda m: '"' + str((base / ".." / m.group(1)).resolve()) + '"', text)


def _set(text: str, section: str, key: str, value: str) -> str:
    """Sets ``key = value`` inside ``[section]`` (replacing the line, or appending to the section)."""
    lines = text.splitlines()
    out: list[str] = []
    cur = None
    done = False
    for i, line in enumerate(lines):
        s = line.strip()
        header = re.match(r"\[\[?\s*([^\]]+?)\s*\]\]?", s)
        if header:
            if cur == section and not done:
                out.append(f"{key} = {value}")
                done = True
            cur = header.group(1)
        elif cur == section and re.match(rf"{re.escape(key)}\s*=", s) and not done:
            out.append(f"{key} = {value}")
            done = True
            continue
        out.append(line)
    if not done:
        if cur == section:
            out.append(f"{key} = {value}")
        else:
            out += ["", f"[{section}]", f"{key} = {value}"]
    return "\n".join(out) + "\n"


def q(s: str) -> str:
    return json.dumps(s)


# ----------------------------------------------------------------------------------------------- processes
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"--- {self.name}: no log"
        return f"--- {self.name} log ({self.log}), last {n} lines:\n" + "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM\n{self.tail()}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def spawn(name: str, args: list[str], log: Path, cwd: Path) -> Proc:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "gateway", *args], stdout=out, stderr=subprocess.STDOUT,
                             cwd=cwd, env=env, start_new_session=True)
    return Proc(name, p, log)


def run_cli(args: list[str], cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def http(method: str, url: str, body: bytes | dict[str, Any] | None = None,
         timeout: float = 30.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": "application/json" if isinstance(body, dict) else "application/xml"}
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


# ----------------------------------------------------------------------------------------------- simulator
@dataclass
class SimEnv:
    dir: Path
    conf: Path
    port: int
    admin_port: int
    proc: Proc | None = None

    @classmethod
    def create(cls, dir: Path, parties: list[dict[str, Any]], *, extra: str = "", faults: dict[str, Any] | None = None,
               omit_ref: list[str] | None = None) -> SimEnv:
        dir.mkdir(parents=True, exist_ok=True)
        port, admin = free_port(dual=True), free_port()
        text = (REPO / "conf" / "simulator.toml").read_text()
        # drop the sample parties; ours follow (they carry the push URLs of the gateways under test)
        head, _, rest = text.partition("[[parties]]")
        rules = rest[rest.index("# Scripted outcomes"):]
        text = _abs(head + rules, REPO / "conf")
        text = _set(text, "server", "port", str(port))
        text = _set(text, "server", "listen", '["127.0.0.1", "::1"]' if ipv6_loopback() else '["127.0.0.1"]')
        text = _set(text, "admin", "port", str(admin))
        text = _set(text, "admin", "listen", q("127.0.0.1"))
        text = _set(text, "registry", "path", q(str(dir / "simulator.sqlite")))
        text = _set(text, "pull", "omit_ref_to_message_id", json.dumps(omit_ref or []))
        for k, v in {"reply_delay_seconds": 0.05, "push_retry_seconds": 0.3, "reoffer_after_seconds": 3,
                     **(faults or {})}.items():
            text = _set(text, "faults", k, json.dumps(v))
        seal_cert = q(str(REPO / "certs" / "out" / "trader-seal.pem"))
        for p in parties:
            text += f"\n[[parties]]\nparty_id = {q(p['party_id'])}\nseal_certs = [{seal_cert}]\n"
            text += f"delivery = {q(p.get('delivery', 'push'))}\n"
            if p.get("push_url"):
                text += f"push_url = {q(p['push_url'])}\n"
        text += extra
        conf = dir / "simulator.toml"
        conf.write_text(text)
        return cls(dir, conf, port, admin)

    @property
    def sti_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/ics2/sti"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/admin"

    def start(self) -> SimEnv:
        self.proc = spawn("simulator", ["simulate", "--conf", str(self.conf)], self.dir / "simulator.log", self.dir)
        wait_until(lambda: not self.proc.alive() or self._healthy(), 30, "the simulator to listen",
                   self.proc.tail)
        assert self.proc.alive(), self.proc.tail()
        return self

    def _healthy(self) -> bool:
        if not port_open(self.admin_port) or not port_open(self.port):
            return False
        try:
            return http("GET", self.admin_url + "/health", timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self) -> int:
        assert self.proc is not None
        return self.proc.terminate()

    def faults(self, **knobs: Any) -> dict[str, Any]:
        status, body = http("POST", self.admin_url + "/faults", knobs)
        assert status == 200, body
        return body

    def reset_faults(self) -> dict[str, Any]:
        return http("DELETE", self.admin_url + "/faults")[1]

    def send(self, action: str, mrn: str) -> dict[str, Any]:
        status, body = http("POST", self.admin_url + "/send", {"action": action, "mrn": mrn})
        assert status == 200, body
        return body

    def report(self) -> dict[str, dict[str, Any]]:
        """``ics2gw simulate report --json`` (the CLI, as an operator would run it), by LRN."""
        r = run_cli(["simulate", "report", "--conf", str(self.conf), "--json"], self.dir)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return {row["lrn"]: row for row in rows}

    def outbound(self) -> list[dict[str, Any]]:
        return http("GET", self.admin_url + "/outbound")[1]


def push_url(port: int) -> str:
    return f"https://127.0.0.1:{port}/ics2/inbound"


# ----------------------------------------------------------------------------------------------- gateway
@dataclass
class GatewayEnv:
    dir: Path
    conf: Path
    party_id: str
    api_port: int
    health_port: int
    inbound_port: int | None
    alerts_file: Path
    proc: Proc | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, dir: Path, sim: SimEnv, *, party_id: str = PARTY, pull: bool = False,
               validation: str = "block", retry: dict[str, Any] | None = None,
               pipeline: dict[str, Any] | None = None, inbound_port: int | None = None) -> GatewayEnv:
        """``inbound_port``: the port already named in the simulator's push_url for this party."""
        dir.mkdir(parents=True, exist_ok=True)
        api, health = free_port(), free_port()
        inbound = None if pull else (inbound_port or free_port(dual=True))
        var = dir / "var"
        text = _abs((REPO / "conf" / "gateway.toml").read_text(), REPO / "conf")
        text = _set(text, "identity", "party_id", q(party_id))
        text = _set(text, "identity", "eori", q(re.sub(r"^[^@]*@|@[^@]*$", "", party_id) if "@" in party_id
                                                else party_id))
        text = re.sub(r'url = "https://127\.0\.0\.1:\d+/ics2/sti"', f"url = {q(sim.sti_url)}", text)
        listen = [f"127.0.0.1:{inbound or 0}"] + ([f"[::1]:{inbound}"] if inbound and ipv6_loopback() else [])
        text = _set(text, "inbound", "enabled", "false" if pull else "true")
        text = _set(text, "inbound", "listen", json.dumps(listen))
        text = _set(text, "pull", "enabled", "true" if pull else "false")
        text = _set(text, "pull", "min_interval", "0.2")
        text = _set(text, "pull", "max_interval", "0.5")
        text = _set(text, "health", "listen", q(f"127.0.0.1:{health}"))
        text = _set(text, "api", "listen", q(f"127.0.0.1:{api}"))
        text = _set(text, "journal", "path", q(str(var / "journal.sqlite3")))
        for key in ("spool_dir", "inbox_dir", "status_dir"):
            sub = {"spool_dir": "spool/incoming", "inbox_dir": "inbox", "status_dir": "status"}[key]
            text = _set(text, "intake", key, q(str(var / sub)))
        for key, sub in (("work_dir", "spool/work"), ("archive_dir", "spool/archive"),
                         ("rejected_dir", "spool/rejected")):
            text = _set(text, "intake", key, q(str(var / sub)))
        text = _set(text, "intake", "validation", q(validation))
        text = _set(text, "intake", "poll_seconds", "0.1")
        for k, v in {"drain_seconds": 10, "idle_poll_seconds": 0.1, "lease_seconds": 5, **(pipeline or {})}.items():
            text = _set(text, "pipeline", k, json.dumps(v))
        for k, v in {"initial_seconds": 0.2, "max_seconds": 1.0, "max_attempts": 40, **(retry or {})}.items():
            text = _set(text, "pipeline.retry", k, json.dumps(v))
        alerts = dir / "alerts.jsonl"
        hook = ["/bin/sh", "-c", f"cat >> {alerts}; echo >> {alerts}"]
        text = _set(text, "alerts", "hook_command", json.dumps(hook))
        conf = dir / "gateway.toml"
        conf.write_text(text)
        return cls(dir, conf, party_id, api, health, inbound, alerts)

    @property
    def var(self) -> Path:
        return self.dir / "var"

    @property
    def spool(self) -> Path:
        return self.var / "spool" / "incoming"

    @property
    def inbox(self) -> Path:
        return self.var / "inbox"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def push_url(self) -> str:
        assert self.inbound_port is not None
        return f"https://127.0.0.1:{self.inbound_port}/ics2/inbound"

    def start(self) -> GatewayEnv:
        self.starts += 1
        self.proc = spawn("gateway", ["run", "--init-journal", "--conf", str(self.conf)], self.dir / "gateway.log",
                          self.dir)
        wait_until(lambda: not self.proc.alive() or self._ready(), 30, "the gateway to be ready", self.proc.tail)
        assert self.proc.alive(), self.proc.tail()
        return self

    def _ready(self) -> bool:
        if not port_open(self.health_port) or not port_open(self.api_port):
            return False
        if self.inbound_port and not port_open(self.inbound_port):
            return False
        try:
            # up and serving: ok (200) or degraded (429, e.g. while a test makes the simulator fail), not failing
            return http("GET", f"http://127.0.0.1:{self.health_port}/health", timeout=2)[0] in (200, 429)
        except OSError:
            return False

    def stop(self) -> int:
        """SIGTERM; the exit code (0 = clean drain)."""
        assert self.proc is not None
        code = self.proc.terminate()
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.exit_codes.append(-9)

    def logs(self) -> str:
        return self.proc.tail(120) if self.proc else "(gateway not started)"

    # ---------------------------------------------------------------------------------------- read-outs
    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run_cli([*args, "--conf", str(self.conf)], self.dir, timeout=timeout)

    def journal(self) -> dict[str, dict[str, Any]]:
        """``ics2gw journal list --json`` by LRN."""
        r = self.cli("journal", "list", "--json", "--limit", "100000")
        assert r.returncode == 0, r.stderr
        return {row["lrn"]: row for row in (json.loads(line) for line in r.stdout.splitlines() if line.strip())}

    def status(self, ref: str) -> dict[str, Any] | None:
        r = self.cli("status", ref, "--json")
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def state(self, lrn: str) -> str | None:
        """The filing state through the submit API (cheap: no process start)."""
        status, body = http("GET", f"{self.api_url}/filings/{PARTY}/{lrn}")
        if status != 200:
            return None
        return body["filing"]["state"]

    def lifecycle(self, lrn: str, filer: str = PARTY) -> dict[str, Any] | None:
        status, body = http("GET", f"{self.api_url}/filings/{filer}/{lrn}")
        return body if status == 200 else None

    def wait_state(self, lrn: str, states: str | tuple[str, ...], timeout: float = 20.0) -> dict[str, Any]:
        want = (states,) if isinstance(states, str) else states

        def check() -> dict[str, Any] | None:
            life = self.lifecycle(lrn)
            return life if life and life["filing"]["state"] in want else None

        def why() -> str:
            return f"lifecycle: {json.dumps(self.lifecycle(lrn), default=str)[:3000]}\n{self.logs()}"

        return wait_until(check, timeout, f"{lrn} in {want}", why)

    def submit(self, data: bytes, **query: str) -> tuple[int, Any]:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return http("POST", f"{self.api_url}/filings" + (f"?{qs}" if qs else ""), data)

    def drop(self, name: str, data: bytes) -> Path:
        """Drops a file into the spool atomically (write elsewhere, rename in), as the ERP must."""
        self.spool.mkdir(parents=True, exist_ok=True)
        tmp = self.spool.parent / f".{name}.tmp"
        tmp.write_bytes(data)
        target = self.spool / name
        os.replace(tmp, target)
        return target

    def drop_folder(self, name: str, files: dict[str, bytes]) -> Path:
        """Drops an ENS with its attachments as the folder ``NAME.d/``: filled elsewhere, renamed in at once."""
        tmp = self.spool.parent / f".{name}.tmp"
        tmp.mkdir(parents=True)
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
        self.spool.mkdir(parents=True, exist_ok=True)
        target = self.spool / name
        os.rename(tmp, target)
        return target

    def drop_fixture(self, name: str) -> Path:
        """A fixture into the spool: alone, or as a folder with the attachments its payload declares."""
        files = FIXTURE_ATTACHMENTS.get(name)
        if files is None:
            return self.drop(name, fixture(name))
        return self.drop_folder(name[:-4] + ".d", {"ens.xml": fixture(name), **{
            k: (FIXTURES.parent / "attachments" / v).read_bytes() for k, v in files.items()}})

    def inbox_metadata(self) -> list[dict[str, Any]]:
        if not self.inbox.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.inbox.glob("*.json"))]

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_file.exists():
            return []
        return [json.loads(line) for line in self.alerts_file.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------- payloads
def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_lrn(name: str) -> str:
    m = re.search(rb"<LRN>([^<]*)</LRN>", fixture(name))
    assert m, name
    return m.group(1).decode()


def ens(lrn: str, base: str = "ens-IE3F32-express.xml", tweak: str | None = None) -> bytes:
    """A valid ENS with ``lrn`` (and, with ``tweak``, a different conveyance reference: another payload)."""
    data = fixture(base).decode()
    data = re.sub(r"<LRN>[^<]*</LRN>", f"<LRN>{lrn}</LRN>", data, count=1)
    if tweak:
        data = data.replace("DHL4711", tweak)
    return data.encode()


def amendment(mrn: str) -> bytes:
    return re.sub(rb"<MRN>[^<]*</MRN>", f"<MRN>{mrn}</MRN>".encode(), fixture("amd-IE3A32-express.xml"), count=1)


def response(action: str, mrn: str, eori: str = PARTY) -> bytes:
    """An IE3R02 / IE3R03 answer to a customs request, shaped like the fixtures (MRN then declarant)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?><{action} xmlns="{NS}"><MRN>{mrn}</MRN>'
            f'<declarant><identificationNumber>{eori}</identificationNumber></declarant></{action}>').encode()
