"""`make test` ends with every skipped test and its reason (tests/conftest.py), so a green run cannot hide them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_skips_are_listed_with_their_reason(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_runs():\n    pass\n"
        "@pytest.mark.skipif(True, reason='no Java here')\ndef test_interop_a():\n    pass\n"
        "def test_interop_b():\n    pytest.skip('no Java here')\n"
        "def test_other():\n    pytest.skip('../shared is missing')\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    tail = out[out.index("3 SKIPPED: these tests did not run, and why"):]
    assert "2 skipped: no Java here" in tail and "1 skipped: ../shared is missing" in tail
    for name in ("test_interop_a", "test_interop_b", "test_other"):
        assert f"test_sample.py::{name}" in tail
