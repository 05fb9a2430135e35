"""The submit API and the health listener refuse a non-loopback bind unless they authenticate their clients.

Configuration: a wildcard or routable address without a token or TLS client certificates is refused by `run` and
by `doctor`, naming the key. Then a real daemon on 0.0.0.0 (reached through 127.0.0.1): the API with a bearer
token (401 without it, the right answer with it, `ics2gw submit` sends it) and the health listener with TLS
client certificates (a handshake without a certificate fails, one with a certificate issued under client_ca works).
"""

from __future__ import annotations

import json
import socket
import ssl
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway import cli, exitcodes
from gateway.settings import check_filesystem, create_journal, load_settings
from tests.pipeline_harness import FIXTURES, GatewayEnv, _set, run_cli, spawn

FAKE_SIM = types.SimpleNamespace(sti_url="https://127.0.0.1:9/ics2/sti")
TOKEN = "t0ken-for-the-listener-test-0123456789"


@pytest.fixture
def gw(tmp_path: Path, pki: Path, monkeypatch: pytest.MonkeyPatch) -> GatewayEnv:
    import gateway.pipeline.daemon as daemon

    def refuse(conf: Path) -> int:
        raise AssertionError("run started the daemon")
    monkeypatch.setattr(daemon, "run_gateway", refuse)   # in-process `run` must refuse before starting
    env = GatewayEnv.create(tmp_path / "gw", FAKE_SIM)  # type: ignore[arg-type]
    settings = load_settings(env.conf)
    assert not check_filesystem(settings, init_journal=True)
    create_journal(settings)
    return env


@pytest.mark.parametrize("section,address", [("api", "0.0.0.0"), ("health", "0.0.0.0"), ("api", "[::]"),
                                             ("health", "192.0.2.10")])
def test_non_loopback_without_auth_is_refused(gw: GatewayEnv, capsys: pytest.CaptureFixture[str], section: str,
                                              address: str) -> None:
    port = gw.api_port if section == "api" else gw.health_port
    gw.conf.write_text(_set(gw.conf.read_text(), section, "listen", json.dumps(f"{address}:{port}")))
    assert cli.main(["run", "--conf", str(gw.conf)]) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert f"[{section}.listen]" in err and "not a loopback address" in err and "token_env" in err, err
    assert cli.main(["doctor", "--offline", "--conf", str(gw.conf)]) == exitcodes.INVALID
    assert f"[{section}.listen]" in capsys.readouterr().out


def test_short_token_and_tls_without_client_ca_are_refused(gw: GatewayEnv, tmp_path: Path, pki: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    text = gw.conf.read_text()
    gw.conf.write_text(_set(text, "api", "token_file", json.dumps(str(short))))
    assert cli.main(["run", "--conf", str(gw.conf)]) == exitcodes.CONFIG
    assert "[api.token_file]" in capsys.readouterr().err
    t = _set(text, "health", "tls_cert", json.dumps(str(pki / "trader-tls-server.pem")))
    gw.conf.write_text(_set(t, "health", "tls_key", json.dumps(str(pki / "trader-tls-server.key"))))
    assert cli.main(["run", "--conf", str(gw.conf)]) == exitcodes.CONFIG
    assert "[health.client_ca]" in capsys.readouterr().err
    gw.conf.write_text(_set(text, "api", "token", json.dumps(TOKEN)))
    assert cli.main(["run", "--conf", str(gw.conf)]) == exitcodes.CONFIG
    assert "never written in the configuration" in capsys.readouterr().err


def test_authenticated_listeners_on_a_wildcard_address(tmp_path: Path, pki: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env = GatewayEnv.create(tmp_path / "gw", FAKE_SIM)  # type: ignore[arg-type]
    text = env.conf.read_text()
    text = _set(text, "api", "listen", json.dumps(f"0.0.0.0:{env.api_port}"))
    text = _set(text, "api", "token_env", json.dumps("ICS2GW_TEST_API_TOKEN"))
    text = _set(text, "health", "listen", json.dumps(f"0.0.0.0:{env.health_port}"))
    for k, v in (("tls_cert", "trader-tls-server.pem"), ("tls_key", "trader-tls-server.key")):
        text = _set(text, "health", k, json.dumps(str(pki / v)))
    text = _set(text, "health", "client_ca", json.dumps([str(pki / "trader-ca-bundle.pem")]))
    env.conf.write_text(text)
    monkeypatch.setenv("ICS2GW_TEST_API_TOKEN", TOKEN)
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(60)   # a guard against hanging, not a speed assertion
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
    proc = spawn("gateway", ["run", "--init-journal", "--conf", str(env.conf)], env.dir / "gateway.log", env.dir)
    try:
        while "READY=1" not in sock.recv(4096).decode().splitlines():
            pass
        api = f"http://127.0.0.1:{env.api_port}"
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(f"{api}/health", timeout=30)
        assert no_token.value.code == 401
        wrong = urllib.request.Request(f"{api}/health", headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
        with pytest.raises(urllib.error.HTTPError) as bad_token:
            urllib.request.urlopen(wrong, timeout=30)
        assert bad_token.value.code == 401
        ok = urllib.request.Request(f"{api}/health", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(ok, timeout=30) as r:
            assert r.status == 200
        # `ics2gw submit` reads the same token and is accepted
        sub = run_cli(["submit", "--conf", str(env.conf), str(FIXTURES / "ens-IE3F32-express.xml")], env.dir)
        assert sub.returncode == 0, sub.stdout + sub.stderr
        assert json.loads(sub.stdout.splitlines()[-1]).get("lrn"), sub.stdout

        health = f"https://127.0.0.1:{env.health_port}/health"
        anon = ssl.create_default_context(cafile=str(pki / "trader-ca-bundle.pem"))
        anon.check_hostname = False
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            with urllib.request.urlopen(health, context=anon, timeout=30) as r:
                r.read()
        client = ssl.create_default_context(cafile=str(pki / "trader-ca-bundle.pem"))
        client.check_hostname = False
        client.load_cert_chain(str(pki / "trader-tls-client.pem"), str(pki / "trader-tls-client.key"))
        try:      # authenticated: answered (200 ok, or 429 degraded: no TI answers this gateway's pings)
            with urllib.request.urlopen(health, context=client, timeout=30) as r:
                status, doc = r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            status, doc = exc.code, json.loads(exc.read())
        assert status in (200, 429) and doc["environment"] == "conformance", (status, doc)
    finally:
        code = proc.terminate()
        sock.close()
    assert code == 0, proc.tail()
    assert TOKEN not in (env.dir / "gateway.log").read_text()
