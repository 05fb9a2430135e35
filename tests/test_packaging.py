"""The package works outside the repository, and the systemd unit is valid.

- An sdist is built from a copy of the source tree, a wheel from the unpacked sdist, installed into a fresh virtual
  environment, and ``ics2gw init DIR --test-pki && cd DIR && ics2gw demo`` runs from an empty folder: real
  processes, real TLS, real journal. The fresh venv gets the gateway only from the wheel; its third-party
  dependencies (lxml, xmlsec, cryptography, aiohttp) are shared read-only from the test venv through a path
  file, so the test needs no package index.
- ``systemd-analyze verify`` on the shipped unit (with ExecStart pointed at an existing binary): no error and no
  warning about the unit; the hardening the README promises is present.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "packaging" / "systemd" / "ics2gw.service"


def _source_copy(dst: Path) -> None:
    """The files an sdist would hold: tracked and new files, no state, no generated PKI, no venv."""
    skip = shutil.ignore_patterns(".venv", ".git", "var", "out", "build", "dist", "*.egg-info", "__pycache__",
                                  ".pytest_cache", "bench")
    shutil.copytree(REPO, dst, ignore=skip)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv with ics2gw installed from a freshly built wheel."""
    base = tmp_path_factory.mktemp("wheel")
    _source_copy(base / "src")
    # the sdist first (MANIFEST.in must carry everything), then the wheel from the unpacked sdist
    sdist = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                            "print(b.build_sdist(sys.argv[1]))", str(base / "sdist")], cwd=base / "src",
                           capture_output=True, text=True)
    assert sdist.returncode == 0, sdist.stdout + sdist.stderr
    archive = base / "sdist" / sdist.stdout.strip().splitlines()[-1]
    shutil.unpack_archive(archive, base / "unpacked")
    (root,) = (base / "unpacked").iterdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(base / "dist"), str(root)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (base / "dist").glob("ics2gw-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # third-party dependencies only: a path line (the .pth files of that folder, e.g. the editable finder of
    # this checkout, are not processed, so `gateway` can only come from the wheel)
    (Path(purelib) / "ics2gw-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NOTIFY_SOCKET")}
    env["ICS2GW_PKI_BITS"] = "2048"   # faster key generation; the demo's checks do not depend on the size
    return env


@pytest.mark.slow
def test_wheel_init_and_demo_in_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run([str(installed / "python"), "-c", "import gateway; print(gateway.__file__)"],
                           cwd=empty, capture_output=True, text=True, env=_env())
    assert where.returncode == 0 and where.stdout.startswith(str(installed.parent)), where.stdout + where.stderr
    assert not where.stdout.startswith(str(REPO) + "/gateway")

    init = subprocess.run([str(installed / "ics2gw"), "init", "site", "--test-pki"], cwd=empty,
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert init.returncode == 0, init.stdout + init.stderr
    site = empty / "site"
    for rel in ("conf/gateway.toml", "conf/simulator.toml", "pmodes/ics2-t2c-push.toml", "certs/make_pki.py",
                "certs/out/trader-seal.key", "samples/ens-IE3F32-express.xml", "var/journal.sqlite3",
                "var/spool/incoming", "systemd/ics2gw.service"):
        assert (site / rel).exists(), rel

    again = subprocess.run([str(installed / "ics2gw"), "init", "site"], cwd=empty, capture_output=True, text=True,
                           env=_env())
    assert again.returncode == 2 and "not an empty folder" in again.stderr and "Traceback" not in again.stderr

    doctor = subprocess.run([str(installed / "ics2gw"), "doctor", "--offline"], cwd=site, capture_output=True,
                            text=True, env=_env(), timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    demo = subprocess.run([str(installed / "ics2gw"), "demo"], cwd=site, capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo: OK" in demo.stdout and str(site / "samples") in demo.stdout


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("SKIPPED LOUDLY: systemd-analyze is not installed (make test installs the systemd package "
                    "as root); the unit file was not verified")
    exe = shutil.which("ics2gw") or str(Path(sys.executable).parent / "ics2gw")
    assert Path(exe).exists(), exe
    unit = tmp_path / "ics2gw.service"
    text = UNIT.read_text()
    assert "ExecStart=/opt/ics2gw/bin/ics2gw run" in text
    unit.write_text(text.replace("/opt/ics2gw/bin/ics2gw", exe))
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if "ics2gw.service" in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr

    cp = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read_string(text)
    svc = cp["Service"]
    assert svc["Type"] == "notify" and svc["User"] == "ics2gw"
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict" and svc["PrivateTmp"] == "yes"
    assert svc["Restart"] == "on-failure" and svc["KillSignal"] == "SIGTERM"
    assert "/var/lib/ics2gw" in svc["ReadWritePaths"]
    # the stop timeout covers the drain of the sample configuration with room for the shutdown
    import tomllib
    drain = tomllib.loads((REPO / "conf" / "gateway.toml").read_text())["pipeline"]["drain_seconds"]
    assert int(svc["TimeoutStopSec"]) >= drain + 30


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("SKIPPED LOUDLY: systemd-analyze is not installed")
    exe = shutil.which("ics2gw") or str(Path(sys.executable).parent / "ics2gw")
    unit = tmp_path / "ics2gw.service"
    unit.write_text(UNIT.read_text().replace("/opt/ics2gw/bin/ics2gw", exe).replace("NoNewPrivileges",
                                                                                     "NoNewPriviliges"))
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert "NoNewPriviliges" in proc.stdout + proc.stderr
