"""The UK S&S GB half of ``ics2gw demo``: the HMRC stand-in as a process, the ``[hmrc]`` route in the demo's
gateway configuration, the one-time OAuth grant, and the IE315 sample(s) to file beside the ICS2 ones.

Kept apart from ``demo.py`` so the ICS2 demo reads the same with or without the second route; the demo skips
this half (and says so) when the sample folder or the test PKI's TLS server certificate is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.conformance import confgen

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_SAMPLES = REPO / "tests" / "fixtures" / "hmrc"
DEMO_EORI = "GB1234231"           # MesSenMES3 of HMRC's own sample IE315
CLIENT_ID = "ics2gw-demo-client"


@dataclass
class HmrcDemo:
    port: int
    redirect_port: int
    secret_file: Path
    token_file: Path
    ca_file: Path
    cert: Path
    key: Path
    samples_dir: Path

    def gateway_section(self) -> dict[str, Any]:
        return {"enabled": True, "base_url": f"https://127.0.0.1:{self.port}", "eori": DEMO_EORI,
                "client_id": CLIENT_ID, "client_secret_file": str(self.secret_file),
                "redirect_uri": f"http://127.0.0.1:{self.redirect_port}/callback", "token_file": str(self.token_file),
                "ca_file": str(self.ca_file), "poll_seconds": 0.3, "max_poll_seconds": 2.0}

    def standin_args(self) -> list[str]:
        return ["simulate-hmrc", "--port", str(self.port), "--cert", str(self.cert), "--key", str(self.key),
                "--client-id", CLIENT_ID, "--client-secret-file", str(self.secret_file), "--enrol", DEMO_EORI,
                "--outcome-delay", "0.3", "--rate", "50"]

    def authorize(self, gw_conf: Path, cwd: Path) -> None:
        """The operator's one-time grant, done by the CLI itself (the stand-in approves without a sign-in)."""
        r = subprocess.run([sys.executable, "-m", "gateway", "hmrc", "authorize", "--follow", "--conf", str(gw_conf)],
                           capture_output=True, text=True, cwd=cwd, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"`ics2gw hmrc authorize` failed: {r.stdout}{r.stderr}")


def prepare(workdir: Path, gw_doc: dict[str, Any], samples_dir: Path = DEFAULT_SAMPLES) -> HmrcDemo | None:
    """None when the demo cannot include the HMRC route here (no samples or no TLS certificate for the stand-in)."""
    pki = Path(gw_doc.get("seal", {}).get("chain", "")).parent
    cert, key, ca = pki / "customs-tls-server.pem", pki / "customs-tls-server.key", pki / "customs-root.pem"
    if not samples_dir.is_dir() or not all(p.exists() for p in (cert, key, ca)):
        return None
    secret = workdir / "hmrc-client-secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(16).hex())
    demo = HmrcDemo(port=confgen.free_port(), redirect_port=confgen.free_port(), secret_file=secret,
                    token_file=workdir / "hmrc-token.json", ca_file=ca, cert=cert, key=key, samples_dir=samples_dir)
    gw_doc["hmrc"] = demo.gateway_section()
    return demo
