"""The journal commands for both backends: `journal migrate`, `journal init`, `run` refusing a missing or older
PostgreSQL schema with one line, `doctor` printing the journal checks; and /health naming the journal."""

from __future__ import annotations

import importlib.util
import re
import time
import types
from pathlib import Path

import pytest

from gateway import cli, exitcodes
from gateway.journal import schema
from gateway.settings import check_filesystem, create_journal, load_settings
from tests.pipeline_harness import GatewayEnv, _set

FAKE_SIM = types.SimpleNamespace(sti_url="https://127.0.0.1:9/ics2/sti")
needs_pg_backend = pytest.mark.skipif(importlib.util.find_spec("gateway.journal.postgres") is None,
                                      reason="the PostgreSQL backend (gateway/journal/postgres.py) is not on main yet")


@pytest.fixture
def workdir(tmp_path: Path, pki: Path) -> GatewayEnv:
    env = GatewayEnv.create(tmp_path / "gw", FAKE_SIM)  # type: ignore[arg-type]
    settings = load_settings(env.conf)
    assert not check_filesystem(settings, init_journal=True)
    return env


@pytest.fixture(autouse=True)
def _no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.pipeline.daemon as daemon

    def refuse(conf: Path) -> int:
        raise AssertionError("the daemon must not start in these tests")
    monkeypatch.setattr(daemon, "run_gateway", refuse)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _postgres(env: GatewayEnv, dsn: str = "host=127.0.0.1 port=9 dbname=ics2gw user=ics2gw") -> None:
    text = env.conf.read_text()
    text = re.sub(r"(?m)^path\s*=.*journal.*$", "", text)
    text = _set(text, "journal", "backend", '"postgresql"')
    text = _set(text, "journal", "dsn", f'"{dsn}"')
    text = _set(text, "journal", "connect_timeout_seconds", "1")
    env.conf.write_text(text)


def test_journal_migrate_creates_then_finds_the_sqlite_schema_current(workdir: GatewayEnv, capsys) -> None:
    jpath = load_settings(workdir.conf).journal.path
    assert not jpath.exists()
    code, out, err = _cli(["journal", "migrate", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.OK, err
    assert out.strip() == f"journal sqlite:{jpath}: schema version 0 -> {schema.LATEST}"
    code, out, _ = _cli(["journal", "migrate", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.OK and out.strip().endswith(f"schema version {schema.LATEST} -> {schema.LATEST}")
    code, out, _ = _cli(["journal", "init", "--conf", str(workdir.conf)], capsys)   # init keeps working
    assert code == exitcodes.OK and "already existed" in out


def test_journal_migrate_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["journal", "migrate", "--help"])
    assert exc.value.code == 0
    assert "schema version A -> B" in capsys.readouterr().out


@needs_pg_backend
def test_journal_migrate_on_an_unreachable_database_is_one_line_and_exit_4(workdir: GatewayEnv, capsys) -> None:
    _postgres(workdir)
    code, out, err = _cli(["journal", "migrate", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.RUNTIME, (out, err)
    assert err.count("\n") == 1 and "postgresql://ics2gw@127.0.0.1:9/ics2gw" in err


@pytest.mark.parametrize("version, words", [(0, "has no schema yet"), (1, "has schema version 1")])
def test_run_refuses_a_missing_or_older_postgresql_schema(workdir: GatewayEnv, capsys, monkeypatch,
                                                          version: int, words: str) -> None:
    _postgres(workdir)
    import gateway.journal.factory as factory
    monkeypatch.setattr(factory, "schema_version", lambda jcfg: version)
    code, out, err = _cli(["run", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.CONFIG
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "ics2gw journal migrate" in lines[0], err
    assert "--init-journal" in lines[0] and "password" not in lines[0]


def test_run_init_journal_migrates_a_postgresql_schema(workdir: GatewayEnv, capsys, monkeypatch) -> None:
    _postgres(workdir)
    import gateway.journal.factory as factory
    migrated: list[str] = []
    monkeypatch.setattr(factory, "schema_version", lambda jcfg: 0)
    monkeypatch.setattr(factory, "migrate_journal", lambda jcfg: migrated.append(jcfg.describe()) or (0, 9))
    import gateway.pipeline.daemon as daemon
    monkeypatch.setattr(daemon, "run_gateway", lambda conf: 0)
    code, _, err = _cli(["run", "--init-journal", "--conf", str(workdir.conf)], capsys)
    assert code == 0, err
    assert migrated == ["postgresql://ics2gw@127.0.0.1:9/ics2gw"]


@needs_pg_backend
def test_run_on_an_unreachable_postgresql_journal_is_one_line_exit_4(workdir: GatewayEnv, capsys) -> None:
    _postgres(workdir)
    code, _, err = _cli(["run", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.RUNTIME
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1 and "cannot be reached" in err


def test_doctor_prints_the_journal_checks(workdir: GatewayEnv, capsys) -> None:
    create_journal(load_settings(workdir.conf))
    code, out, _ = _cli(["doctor", "--offline", "--conf", str(workdir.conf)], capsys)
    assert code == 0, out
    for name in ("journal reachable", "journal schema", "journal permissions"):
        assert name in out
    assert f"version {schema.LATEST}" in out


@needs_pg_backend
def test_doctor_fails_an_unreachable_postgresql_journal_with_a_fix(workdir: GatewayEnv, capsys) -> None:
    _postgres(workdir)
    code, out, _ = _cli(["doctor", "--offline", "--json", "--conf", str(workdir.conf)], capsys)
    import json
    doc = json.loads(out)
    assert code == exitcodes.INVALID
    reach = [c for c in doc["checks"] if c["name"].startswith("journal")]
    assert reach and not reach[0]["ok"] and "dsn" in reach[0]["fix"]


# ------------------------------------------------------------------------------------------------- /health
def test_health_reports_a_postgresql_journal_by_name_and_ping() -> None:
    from gateway.ops import health
    from gateway.ops.config import read_ops_config
    from gateway.config import Section
    cfg = read_ops_config(Section({}, file=Path("x.toml"), prefix="health", base_dir=Path(".")))
    src = health.HealthSources(environment="conformance", endpoints={}, journal_backend="postgresql",
                               journal_name="postgresql://gw@db:5432/ics2gw", journal_ping=lambda: None,
                               instance="h-1-abcdef", leader_of=lambda: ["timers"])
    doc = health.build_report(src, cfg)
    assert doc["status"] == "ok", doc
    assert doc["instance"] == "h-1-abcdef" and doc["leader_of"] == ["timers"]
    j = doc["journal"]
    assert j["backend"] == "postgresql" and j["name"] == "postgresql://gw@db:5432/ics2gw" and j["reachable"]
    assert "folder_writable" not in j            # no folder to check for a database

    def down() -> None:
        raise OSError("connection refused")
    doc = health.build_report(health.HealthSources(**{**src.__dict__, "journal_ping": down}), cfg)
    assert doc["status"] == "failing" and not doc["journal"]["reachable"]
    assert any("does not answer" in r and "connection refused" in r for r in doc["reasons"])


def test_health_ping_is_bounded_by_a_timeout(monkeypatch) -> None:
    from gateway.ops import health
    from gateway.ops.config import read_ops_config
    from gateway.config import Section
    monkeypatch.setattr(health, "JOURNAL_PING_TIMEOUT", 0.2)
    monkeypatch.setattr(health, "_PING_POOL", None)
    cfg = read_ops_config(Section({}, file=Path("x.toml"), prefix="health", base_dir=Path(".")))
    src = health.HealthSources(environment="conformance", endpoints={}, journal_backend="postgresql",
                               journal_name="postgresql://gw@db:5432/ics2gw", journal_ping=lambda: time.sleep(1))
    t0 = time.monotonic()
    doc = health.build_report(src, cfg)
    assert time.monotonic() - t0 < 0.9
    assert doc["status"] == "failing" and "no answer within" in doc["journal"]["error"]


def test_journal_migrate_and_run_refusal_on_a_real_postgresql(workdir: GatewayEnv, capsys, monkeypatch,
                                                              pg_dsn) -> None:
    from gateway.journal import schema_pg
    _postgres(workdir, str(pg_dsn))
    workdir.conf.write_text(_set(workdir.conf.read_text(), "journal", "password_env", '"ICS2GW_JOURNAL_PASSWORD"'))
    monkeypatch.setenv("ICS2GW_JOURNAL_PASSWORD", pg_dsn.password)
    code, _, err = _cli(["run", "--conf", str(workdir.conf)], capsys)          # no schema yet: refused
    assert code == exitcodes.CONFIG and "has no schema yet" in err and pg_dsn.password not in err
    code, out, err = _cli(["journal", "migrate", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.OK, err
    assert re.fullmatch(rf"journal postgresql://ics2gw@127\.0\.0\.1:\d+/{pg_dsn.dbname}: schema version 0 -> "
                        rf"{schema_pg.LATEST}", out.strip()), out
    code, out, _ = _cli(["journal", "migrate", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.OK and out.strip().endswith(f"{schema_pg.LATEST} -> {schema_pg.LATEST}")
    code, out, _ = _cli(["doctor", "--offline", "--json", "--conf", str(workdir.conf)], capsys)
    import json
    checks = {c["name"]: c for c in json.loads(out)["checks"] if c["name"].startswith("journal")}
    assert checks and all(c["ok"] for c in checks.values()), checks
    code, out, err = _cli(["journal", "list", "--conf", str(workdir.conf)], capsys)   # readers use the factory
    assert code == exitcodes.OK and out == "", err
