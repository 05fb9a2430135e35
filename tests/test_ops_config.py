"""One truth about configuration: whatever `run` refuses, `doctor` reports as a failure naming the file and the key.

Each broken configuration below is run through the real CLI entry point twice: `ics2gw run` (which must refuse
it with exit 3 before starting anything) and `ics2gw doctor --offline` (which must exit 1 and name the key).
The baseline is a working directory made like `ics2gw init` makes one; it passes both.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import cli, exitcodes
from gateway.settings import check_filesystem, create_journal, load_settings
from tests.pipeline_harness import GatewayEnv, _set

FAKE_SIM = types.SimpleNamespace(sti_url="https://127.0.0.1:9/ics2/sti")


@pytest.fixture
def workdir(tmp_path: Path, pki: Path) -> GatewayEnv:
    env = GatewayEnv.create(tmp_path / "gw", FAKE_SIM)  # type: ignore[arg-type]
    settings = load_settings(env.conf)
    assert not check_filesystem(settings, init_journal=True)
    create_journal(settings)
    return env


@pytest.fixture(autouse=True)
def _no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` must refuse before the daemon starts; if it ever got that far, fail instead of serving forever."""
    import gateway.pipeline.daemon as daemon

    def refuse(conf: Path) -> int:
        raise AssertionError(f"run started the daemon on {conf}")
    monkeypatch.setattr(daemon, "run_gateway", refuse)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)   # the real entry point: parsing, loader, exit-code mapping
    out, err = capsys.readouterr()
    return code, out, err


def test_baseline_passes_doctor(workdir: GatewayEnv, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(["doctor", "--offline", "--conf", str(workdir.conf)], capsys)
    assert code == 0, out
    assert "[FAIL]" not in out and "files and folders" in out


def _append(section: str, line: str) -> object:
    """Adds ``line`` right under the ``[section]`` header (which may carry a comment)."""
    def edit(text: str) -> str:
        new, n = re.subn(rf"^\[{re.escape(section)}\][^\n]*\n", lambda m: m.group(0) + line + "\n", text, count=1,
                         flags=re.M)
        assert n == 1, section
        return new
    return edit


# (id, edit of the file text, key the error must name)
BROKEN = [
    ("pipeline-type", lambda t: _set(t, "pipeline", "workers", '"eight"'), "pipeline.workers"),
    ("pipeline-typo", _append("pipeline", "worker = 4"), "pipeline.worker"),
    ("pipeline-retry-typo", _append("pipeline.retry", "max_attempt = 3"), "pipeline.retry.max_attempt"),
    ("intake-typo", _append("intake", "spool = \"x\""), "intake.spool"),
    ("intake-choice", lambda t: _set(t, "intake", "validation", '"strict"'), "intake.validation"),
    ("api-typo", _append("api", "port = 8481"), "api.port"),
    ("api-listen", lambda t: _set(t, "api", "listen", '"8481"'), "api.listen"),
    ("logging-typo", _append("logging", 'levl = "debug"'), "logging.levl"),
    ("logging-value", lambda t: _set(t, "logging", "level", '"verbose"'), "logging.level"),
    ("validation-section", lambda t: t + '\n[validation]\nprofile = "eu-ics1"\n', "validation"),
    ("journal-typo", _append("journal", "busy_timeout = 10"), "journal.busy_timeout"),
    ("alerts-typo", _append("alerts", "webhook = \"http://x\""), "alerts.webhook"),
    ("health-typo", _append("health", "port = 1"), "health.port"),
    ("top-level-typo", lambda t: "enviroment = \"conformance\"\n" + t, "enviroment"),
    ("missing-journal", lambda t: _set(t, "journal", "path", '"/nonexistent/dir/journal.sqlite3"'), "journal.path"),
    ("missing-folder", lambda t: _set(t, "intake", "inbox_dir", '"/nonexistent/inbox"'), "intake.inbox_dir"),
    ("folder-is-file", None, "intake.status_dir"),
    ("world-readable-key", None, "tls.client_key"),
]


@pytest.mark.parametrize("name,edit,key", BROKEN, ids=[b[0] for b in BROKEN])
def test_doctor_fails_on_what_run_refuses(workdir: GatewayEnv, tmp_path: Path, pki: Path,
                                          capsys: pytest.CaptureFixture[str], name: str, edit: object,
                                          key: str) -> None:
    conf = workdir.conf
    text = conf.read_text()
    if name == "folder-is-file":
        f = tmp_path / "a-file"
        f.write_text("")
        text = _set(text, "intake", "status_dir", f'"{f}"')
    elif name == "world-readable-key":
        k = tmp_path / "client.key"
        k.write_bytes((pki / "trader-tls-client.key").read_bytes())
        os.chmod(k, 0o644)
        text = _set(text, "tls", "client_key", f'"{k}"')
    else:
        text = edit(text)  # type: ignore[operator]
    conf.write_text(text)

    code, _out, err = _cli(["run", "--conf", str(conf)], capsys)
    assert code == exitcodes.CONFIG, err
    assert f"[{key}]" in err and str(conf) in err, err
    assert "Traceback" not in err
    assert not Path("/nonexistent").exists()

    code, out, _ = _cli(["doctor", "--offline", "--conf", str(conf)], capsys)
    assert code == exitcodes.INVALID, out
    failed = [line for line in out.splitlines() if "[FAIL]" in line]
    assert failed and any(f"[{key}]" in line and str(conf) in line for line in failed), out


def test_run_creates_journal_only_when_told(workdir: GatewayEnv, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped journal path is an error; --init-journal creates it (and its folder), nothing else does."""
    target = workdir.dir / "typo" / "journal.sqlite3"
    workdir.conf.write_text(_set(workdir.conf.read_text(), "journal", "path", f'"{target}"'))
    code, _, err = _cli(["run", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.CONFIG and "[journal.path]" in err and "--init-journal" in err
    assert not target.parent.exists()
    code, out, err = _cli(["journal", "init", "--conf", str(workdir.conf)], capsys)
    assert code == 0 and target.is_file() and "created" in out, err
    code, out, _ = _cli(["doctor", "--offline", "--conf", str(workdir.conf)], capsys)
    assert code == 0, out


def test_unknown_key_message_says_where_it_belongs(workdir: GatewayEnv, capsys: pytest.CaptureFixture[str]) -> None:
    workdir.conf.write_text(workdir.conf.read_text() + '\n[validation]\nmode = "warn"\n')
    code, _, err = _cli(["run", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.CONFIG and "[intake] validation" in err


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """Make `folder` unwritable for this process. Mode bits do not bind root, so as root the folder is made
    immutable (`chattr +i`: the kernel then refuses writes, and access(W_OK), to root too); where the file system
    or the container does not allow that, the test is skipped with the reason (reported at the end of the run)."""
    if os.geteuid() != 0:
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"running as root and `chattr +i` is refused here ({r.stderr.strip()}): "
                    "no way to make a folder unwritable for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_state_folder(workdir: GatewayEnv, capsys: pytest.CaptureFixture[str]) -> None:
    inbox = workdir.var / "inbox"
    with _unwritable(inbox):
        assert not os.access(inbox, os.W_OK)
        code, _, err = _cli(["run", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.CONFIG and "[intake.inbox_dir]" in err and "not writable" in err, err


def test_closed_pipe_is_silent(workdir: GatewayEnv) -> None:
    """`ics2gw ... | head`: the reader is gone before we write; no traceback, exit 0."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "gateway", "doctor", "--offline", "--conf", str(workdir.conf)],
                              stdout=w, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()


def test_internal_error_is_one_line_and_debug_adds_the_traceback(workdir: GatewayEnv,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected failure: one line naming the command and the error, exit 4; --debug adds the traceback."""
    journal = workdir.var / "journal.sqlite3"
    journal.write_bytes(b"this is not an SQLite database" * 100)
    code, out, err = _cli(["journal", "list", "--conf", str(workdir.conf)], capsys)
    assert code == exitcodes.RUNTIME and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ics2gw journal: ")
    code, out, err = _cli(["journal", "list", "--conf", str(workdir.conf), "--debug"], capsys)
    assert code == exitcodes.RUNTIME and "Traceback" in err and re.search(r"^ics2gw journal: ", err, re.M)


def test_reading_commands_use_the_same_loader(workdir: GatewayEnv, pki: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`journal list` refuses what `run` refuses, yet needs no secret: the seal password is not in its environment."""
    text = workdir.conf.read_text()
    text = re.sub(r'^(key|chain) = "[^"]*trader-(seal\.key|chain\.pem)".*\n', "", text, flags=re.M)
    text = _set(text, "seal", "pkcs12", f'"{pki / "trader-seal.p12"}"')
    text = _set(text, "seal", "password_env", '"ICS2GW_TEST_UNSET_PASSWORD"')
    monkeypatch.delenv("ICS2GW_TEST_UNSET_PASSWORD", raising=False)
    workdir.conf.write_text(text)
    code, out, err = _cli(["journal", "list", "--conf", str(workdir.conf)], capsys)
    assert code == 0, err
    code, _, err = _cli(["run", "--conf", str(workdir.conf)], capsys)     # run needs it, and says so
    assert code == exitcodes.CONFIG and "[seal.password_env]" in err and "is not set" in err
    workdir.conf.write_text(_append("pipeline", "worker = 4")(text))  # type: ignore[operator]
    for argv in (["journal", "list"], ["journal", "purge"], ["status", "NOSUCHLRN"], ["submit", "x.xml"]):
        code, _, err = _cli([*argv, "--conf", str(workdir.conf)], capsys)
        assert code == exitcodes.CONFIG and "[pipeline.worker]" in err, (argv, err)
