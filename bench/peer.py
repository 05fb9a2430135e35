"""A peer in the same run: Apache Santuario (../shared/interop/santuario) verifying the same sealed message.

The tool is copied to a temporary directory and built there (never in ../shared). ``verify --repeat N`` runs
the verification N times in one JVM and reports the median after the first run (JIT warm-up); ours is
``Engine.open`` of the same file on one core (strict policy, chain and CRLs). ``verify_ratio_vs_santuario``
is ours / theirs in verifications per second per core.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SANTUARIO = REPO.parent / "shared" / "interop" / "santuario"


def run(pki: Path, message: Path, workdir: Path, repeat: int = 3000) -> dict[str, Any]:
    if shutil.which("java") is None or shutil.which("javac") is None:
        return {"skipped": "Java is not installed (apt-get install -y openjdk-17-jdk-headless libxml-security-java "
                           "libmail-java)"}
    if not SANTUARIO.is_dir():
        return {"skipped": f"{SANTUARIO} not found"}
    tool = workdir / "santuario"
    if tool.exists():
        shutil.rmtree(tool)
    shutil.copytree(SANTUARIO, tool, ignore=shutil.ignore_patterns("build"))
    b = subprocess.run([str(tool / "build.sh")], capture_output=True, text=True, timeout=300)
    if b.returncode != 0:
        return {"skipped": f"the Santuario tool did not build: {b.stderr.strip()[-400:]}"}
    p = subprocess.run([str(tool / "run.sh"), "verify", str(message), "--trust", str(pki / "trader-root.pem"),
                        "--repeat", str(repeat)], capture_output=True, text=True, timeout=600)
    try:
        doc = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"skipped": f"Santuario verify gave no JSON (exit {p.returncode}): {p.stderr.strip()[-400:]}"}
    timing = doc.get("timing", {})
    median_ms = timing.get("median_ms_after_first")
    if not doc.get("valid") or not median_ms:
        return {"skipped": f"Santuario did not verify the message: {doc.get('errors')}"}
    return {"valid": True, "runs": timing.get("runs"), "first_ms": timing.get("first_ms"),
            "median_ms": median_ms, "mean_ms": timing.get("mean_ms_after_first"),
            "verify_per_s": 1000.0 / median_ms}
