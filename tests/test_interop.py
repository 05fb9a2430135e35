"""Interop both ways with an independent engine: Apache Santuario (the XML-signature engine inside Domibus).

Our messages and receipts must verify there, and messages and receipts sealed there must verify here. The tool
is copied out of ../shared/interop into a temporary folder and built there, so nothing is written into shared/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED

pytestmark = pytest.mark.interop
TOOL_SRC = SHARED / "interop" / "santuario"
TAMPER = SHARED / "interop" / "tamper.py"
ICS = REPO / ".venv" / "bin" / "ics2gw"
ENS = b'<?xml version="1.0" encoding="UTF-8"?>\n<IE3F32 xmlns="urn:x-test"><LRN>INTEROP-1</LRN></IE3F32>\n'


def _java_ready() -> str | None:
    if not TOOL_SRC.exists():
        return "../shared/interop/santuario is missing"
    if not shutil.which("javac"):
        return "javac is not installed (make interop-deps installs it)"
    for jar in ("xmlsec.jar", "javax.mail.jar"):
        if not Path("/usr/share/java", jar).exists():
            return f"/usr/share/java/{jar} is missing (make interop-deps installs it)"
    return None


@pytest.fixture(scope="module")
def santuario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _java_ready()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"interop tests must run in CI: {reason}")
        pytest.skip(reason)
    dst = tmp_path_factory.mktemp("santuario") / "santuario"
    shutil.copytree(TOOL_SRC, dst, ignore=shutil.ignore_patterns("build"))
    subprocess.run([str(dst / "build.sh")], check=True, capture_output=True)
    return dst / "run.sh"


def run_tool(tool: Path, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    return proc.returncode, json.loads(line)


def ics2gw(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    return proc.returncode, (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {})


@pytest.fixture()
def packed(tmp_path: Path, pki: Path) -> Path:
    payload = tmp_path / "ens.xml"
    payload.write_bytes(ENS)
    out = tmp_path / "msg.mime"
    code, report = ics2gw("pack", str(payload), "--action", "IE3F32", "--out", str(out))
    assert code == 0, report
    return out


def test_our_user_message_verifies_in_santuario(santuario: Path, packed: Path, pki: Path) -> None:
    code, report = run_tool(santuario, "verify", str(packed), "--trust", str(pki / "trader-root.pem"))
    assert code == 0 and report["valid"], report["errors"]
    assert report["token_order"] == "root-first" and report["chain_length"] == 3
    assert report["coverage"]["ok"] and report["policy_errors"] == []


def test_santuario_message_verifies_with_inspect(santuario: Path, tmp_path: Path, pki: Path) -> None:
    payload = tmp_path / "ens.xml"
    payload.write_bytes(ENS)
    msg = tmp_path / "santuario.mime"
    code, _ = run_tool(santuario, "sign-user-message", str(payload), "--key", str(pki / "trader-seal.key"),
                       "--chain", str(pki / "trader-chain.pem"), "--from", "NL123456789", "--to", "sti-taxud",
                       "--action", "IE3F32", "--out", str(msg))
    assert code == 0
    code, report = ics2gw("inspect", str(msg), "--strict")
    assert code == 0 and report["valid"], report
    assert report["signature"]["chain_length"] == 3 and report["action"] == "IE3F32"


def test_santuario_variants_accepted_and_tampering_refused(santuario: Path, tmp_path: Path, pki: Path) -> None:
    payload = tmp_path / "ens.xml"
    payload.write_bytes(ENS)
    base = tmp_path / "plain.mime"
    code, _ = run_tool(santuario, "sign-user-message", str(payload), "--key", str(pki / "trader-seal.key"),
                       "--chain", str(pki / "trader-chain.pem"), "--from", "NL123456789", "--to", "sti-taxud",
                       "--action", "IE3F32", "--out", str(base), "--token", "x509v3", "--no-compress")
    assert code == 0
    # X509v3 leaf token: accepted by the tolerant (trader-role) policy, refused by the strict customs policy.
    assert ics2gw("inspect", str(base))[0] == 0
    assert ics2gw("inspect", str(base), "--strict")[0] == 1
    for mode, expected in (("lf-mime", 0), ("base64-payload", 0), ("root-second", 0), ("flip-payload-byte", 1),
                           ("set-action", 1), ("wrap-messaging", 1)):
        out = tmp_path / f"{mode}.mime"
        subprocess.run([sys.executable, str(TAMPER), mode, str(base), str(out)], check=True)
        code, report = ics2gw("inspect", str(out))
        assert code == expected, (mode, report)


def test_receipts_both_ways(santuario: Path, packed: Path, tmp_path: Path, pki: Path) -> None:
    # 1. Santuario (as a Domibus-style TI) acknowledges our message; our inspect checks it against what we sent.
    receipt = tmp_path / "receipt.mime"
    code, _ = run_tool(santuario, "sign-receipt", str(packed), "--key", str(pki / "customs-seal.key"),
                       "--chain", str(pki / "customs-chain.pem"), "--trust", str(pki / "trader-root.pem"),
                       "--out", str(receipt))
    assert code == 0
    code, report = ics2gw("inspect", str(receipt), "--against", str(packed))
    assert code == 0 and report["kind"] == "receipt" and report["against"]["match"], report
    # 2. Our receipt for a Santuario-sealed message verifies in Santuario against that message.
    from gateway.ebms import mime
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    payload = tmp_path / "ens.xml"
    payload.write_bytes(ENS)
    theirs = tmp_path / "theirs.mime"
    assert run_tool(santuario, "sign-user-message", str(payload), "--key", str(pki / "trader-seal.key"),
                    "--chain", str(pki / "trader-chain.pem"), "--from", "NL123456789", "--to", "sti-taxud",
                    "--action", "IE3F32", "--out", str(theirs))[0] == 0
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem"]), party_id="sti-taxud", fqdn="sti.test",
                     role="Customs")
    ct, body = mime.read_message_file(theirs.read_bytes())
    ours = customs.receipt_for(customs.open(ct, body))
    ours_file = tmp_path / "our-receipt.mime"
    ours_file.write_bytes(ours.wire_file())
    code, report = run_tool(santuario, "verify", str(ours_file), "--trust", str(pki / "customs-root.pem"),
                            "--against", str(theirs))
    assert code == 0 and report["valid"], report.get("errors")
    assert report["coverage"]["body"], "our receipt must sign its empty Body"
