"""The daemon as an operator meets it: a real `ics2gw run` process (real TLS listener, real HTTP, real SQLite).

- readiness and stopping reported to systemd through a real AF_UNIX datagram socket ($NOTIFY_SOCKET);
- SIGUSR1 logs the state; SIGHUP reloads what can change safely, logs what it refuses, survives a broken file;
- a second daemon on the same journal, or on a port in use: one line naming the holder / address and key, exit 4;
- `--log-format json` (here from [logging]): every line one JSON object with its own keys and the environment;
  a secret read from the environment never appears in any line.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import types
from pathlib import Path

import pytest

from gateway import exitcodes
from tests.pipeline_harness import GatewayEnv, _set, http, run_cli, wait_until

FAKE_SIM = types.SimpleNamespace(sti_url="https://127.0.0.1:9/ics2/sti")
SECRET_ENV = "ICS2GW_TEST_SEAL_PASSWORD"


def _recv_until(sock: socket.socket, wanted: str) -> list[str]:
    got: list[str] = []
    while True:
        msg = sock.recv(4096).decode()
        got.append(msg)
        if wanted in msg.splitlines():
            return got


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)   # a guard against hanging forever, not an assertion on speed
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_daemon_operations(tmp_path: Path, pki: Path, notify_socket: socket.socket,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    secret = (pki / "trader-seal.p12.password").read_text().strip()
    assert len(secret) >= 8
    monkeypatch.setenv(SECRET_ENV, secret)
    gw = GatewayEnv.create(tmp_path / "gw", FAKE_SIM)  # type: ignore[arg-type]
    text = gw.conf.read_text()
    text = re.sub(r'^(key|chain) = "[^"]*trader-(seal\.key|chain\.pem)".*\n', "", text, flags=re.M)
    text = _set(text, "seal", "pkcs12", json.dumps(str(pki / "trader-seal.p12")))
    text = _set(text, "seal", "password_env", json.dumps(SECRET_ENV))
    text = _set(text, "logging", "format", '"json"')
    text = _set(text, "logging", "level", '"debug"')
    gw.conf.write_text(text)
    gw.start()
    log = gw.proc.log
    try:
        # readiness: only once the listeners are bound (start() above already saw /health answer)
        assert any("READY=1" in m.splitlines() for m in _recv_until(notify_socket, "READY=1"))

        # SIGUSR1: one line with the state
        gw.proc.popen.send_signal(signal.SIGUSR1)
        dump = wait_until(lambda: _find(log, "state dump"), 30, "the state dump", gw.proc.tail)
        assert dump["pid"] == gw.proc.popen.pid and "filings_error" not in dump and "reloads" in dump

        # SIGHUP: [logging] level applies, [api] is refused (needs a restart), the daemon keeps running
        text = gw.conf.read_text()
        gw.conf.write_text(_set(_set(text, "logging", "level", '"info"'), "api", "max_request_bytes", "2048"))
        gw.proc.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: _find(log, "reloaded", section="logging"), 30, "the logging reload", gw.proc.tail)
        refused = wait_until(lambda: _find(log, "reload refused", section="api"), 30, "the refusal", gw.proc.tail)
        assert "restart" in refused["reason"]
        assert gw.proc.alive() and http("GET", f"http://127.0.0.1:{gw.health_port}/health")[0] == 200
        _recv_until(notify_socket, "READY=1")    # RELOADING=1 ... READY=1 around the reload

        # SIGHUP on a file that no longer loads: refused as a whole, nothing changes, still running
        gw.conf.write_text(text.replace("[pipeline]", "[pipeline]\nworkerz = 1", 1))
        gw.proc.popen.send_signal(signal.SIGHUP)
        bad = wait_until(lambda: _find(log, "reload refused: the configuration does not load, nothing changed"),
                         30, "the refused reload", gw.proc.tail)
        assert "[pipeline.workerz]" in bad["error"]
        assert gw.proc.alive() and http("GET", f"http://127.0.0.1:{gw.health_port}/health")[0] == 200
        gw.conf.write_text(text)

        # a second daemon on the same journal: one line naming the process that holds it
        second = run_cli(["run", "--conf", str(gw.conf)], gw.dir)
        assert second.returncode == exitcodes.RUNTIME, second.stderr
        lines = second.stderr.strip().splitlines()
        assert "Traceback" not in second.stderr and f"pid {gw.proc.popen.pid}" in lines[-1], second.stderr
        assert lines[-1].startswith("ics2gw run: journal: ")

        # a second daemon on another journal but the same submit API port: address and key named
        other = gw.dir / "other.toml"
        other.write_text(_set(text, "journal", "path", json.dumps(str(gw.dir / "other" / "journal.sqlite3"))))
        third = run_cli(["run", "--init-journal", "--conf", str(other)], gw.dir)
        assert third.returncode == exitcodes.RUNTIME, third.stderr
        last = third.stderr.strip().splitlines()[-1]
        assert "Traceback" not in third.stderr
        assert last == (f"ics2gw run: cannot listen on 127.0.0.1:{gw.api_port} ([api.listen]): address already in "
                        "use (another process listens there: `ss -ltnp`)"), third.stderr
    finally:
        code = gw.stop()
    assert code == 0, gw.proc.tail()
    assert any("STOPPING=1" in m.splitlines() for m in _recv_until(notify_socket, "STOPPING=1"))

    # every line: one JSON object, its own keys, the environment; the secret nowhere
    raw = log.read_text()
    assert secret not in raw
    docs = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert docs and all(d.get("environment") == "conformance" for d in docs), raw[-2000:]
    started = next(d for d in docs if d.get("msg") == "gateway started")
    assert started["party_id"] == "NL123456789" and started["journal"].endswith("journal.sqlite3")
    assert any(d.get("event") == "inbound_listening" for d in docs)   # transport lines too
    assert not any(d["level"] == "debug" for d in docs[docs.index(_find(log, "reloaded", section="logging")):])


def _find(log: Path, msg: str, **fields: str) -> dict[str, object] | None:
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("msg") == msg and all(doc.get(k) == v for k, v in fields.items()):
            return doc
    return None


async def test_reload_swaps_trust_anchors_and_keeps_them_on_a_broken_file(tmp_path: Path, pki: Path) -> None:
    """SIGHUP's [trust] reload has a real effect on verification, and a failed reload changes nothing."""
    from gateway.ebms.engine import Engine
    from gateway.pipeline.signals import OpsSignals
    from gateway.security.trust import ChainError
    from gateway.settings import load_settings

    env = GatewayEnv.create(tmp_path / "gw", FAKE_SIM)  # type: ignore[arg-type]
    text = env.conf.read_text()
    settings = load_settings(env.conf)
    engine = Engine.from_config(settings.core)
    gw = types.SimpleNamespace(cfg=settings.core, components={"engine": engine}, api_port=None)
    ops = OpsSignals(gw, env.conf)
    engine.trust.validate(engine.identity.chain)          # our seal chain is anchored at trader-root

    env.conf.write_text(_set(text, "trust", "anchors", json.dumps([str(pki / "customs-root.pem")])))
    await ops.reload()
    with pytest.raises(ChainError):
        engine.trust.validate(engine.identity.chain)      # trader-root is no longer trusted

    kept = engine.trust
    broken = tmp_path / "broken-root.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    env.conf.write_text(_set(text, "trust", "anchors", json.dumps([str(broken)])))
    await ops.reload()
    assert engine.trust is kept                           # the previous store stays

    env.conf.write_text(text)                             # and back: the chain validates again
    await ops.reload()
    engine.trust.validate(engine.identity.chain)
