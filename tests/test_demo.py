"""`ics2gw demo` end to end, as `make demo` runs it: both processes start, the sample set is filed through the spool,
every valid filing is registered with an MRN, every invalid one rejected with a reason, both stop cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "ics2"
GB_FIXTURES = REPO / "tests" / "fixtures" / "hmrc"


def test_demo_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--workdir", str(work)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "demo: OK" in out
    assert re.search(r"stopped: gateway exit 0, simulator exit 0, hmrc-standin exit 0", out), out
    samples = sorted(FIXTURES.glob("ens-*.xml")) + sorted(GB_FIXTURES.glob("ens-*.xml"))
    gb = [p.name for p in GB_FIXTURES.glob("ens-*.xml")]
    assert gb, "the demo files one S&S GB sample beside the ICS2 ones"
    rows = {line.split()[-1]: line for line in out.splitlines() if line.rstrip().endswith(".xml")}
    assert set(rows) == {p.name for p in samples}, out
    for name, line in rows.items():
        if "invalid" in name:
            assert " rejected-locally " in line and " yes " in line, line
            assert re.search(r"ICS2-[A-Z]+", line), line          # a readable reason, with its rule
        else:
            assert " registered " in line and " yes " in line, line
            assert re.search(r"\b\d{2}[A-Z]{2}[A-Z0-9]{13}\d\b", line), line   # an MRN
            assert re.search(r"\d+ ms", line), line                           # the round trip
            route = "S&S GB" if name in gb else "ICS2"
            assert f" {route} " in line, line                                   # both routes, side by side
            if name in gb:
                assert re.search(r"\b\d{2}GB[A-Z0-9]{13}\d\b", line), line      # an MRN from S&S GB
    assert "7/7 valid filings registered" in out and "2/2 invalid filings rejected" in out
    assert (work / "gateway.toml").exists() and (work / "simulator.toml").exists()
    del elapsed                      # how long the demo takes is reported in its output, not asserted


def test_demo_refuses_a_production_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.toml").write_text((REPO / "conf" / "gateway.toml").read_text().replace(
        'environment = "conformance"        # "conformance"', 'environment = "production"        # "conformance"', 1))
    (conf / "simulator.toml").write_text((REPO / "conf" / "simulator.toml").read_text())
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--conf-dir", str(conf), "--workdir",
                        str(tmp_path / "w")], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 4 and "production" in r.stderr, r.stdout + r.stderr
