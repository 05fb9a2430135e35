"""Seal and verify per core for a 10 KB ENS; streaming pack and inspect of a 100 MB payload (child processes).

``seal_pack``: ``Engine.user_message`` (gzip, envelope, seal, MIME pack), what the daemon does per filing;
``seal``: ``gateway.security.seal.seal`` alone on a built envelope; ``verify``: ``Engine.open`` of the sealed
message by the customs-side engine (strict policy, chain and CRLs), what the simulator does per filing.
The 100 MB runs happen in fresh child processes (``python -m bench.micro pack|inspect``) so that their peak
RSS (VmHWM) is theirs alone; the limits are raised through a generated configuration file, not the code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import payloads
from bench.timing import rate

REPO = Path(__file__).resolve().parent.parent
BIG_LIMITS = """
[limits]                           # raised for the 100 MB benchmark only (ICD 4.2.6 says 100 MB / 20 MB)
send_max_payload_bytes = 268435456
send_max_message_compressed_bytes = 134217728
recv_max_message_bytes = 134217728
recv_max_payload_bytes = 268435456
recv_max_compression_ratio = 1000
"""


def engines(pki: Path) -> tuple[Any, Any]:
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from gateway.security.verify import STRICT
    trader = Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"),
                    TrustStore.from_files([pki / "customs-root.pem", pki / "trader-root.pem"],
                                          [pki / "trader-int.crl.pem"], [pki / "customs-seal.pem"]),
                    party_id="NL123456789", fqdn="ap.trader.test")
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"],
                                           [pki / "trader-int.crl.pem", pki / "trader-root.crl.pem"]),
                     party_id="sti-taxud", fqdn="sti.customs.test", role="Customs", policy=STRICT)
    return trader, customs


def run_crypto(pki: Path, workdir: Path, quick: bool = False) -> dict[str, Any]:
    from gateway.ebms import build
    from gateway.ebms.engine import Engine
    from gateway.ebms.model import PartInfo, UserMessage, new_message_id, utc_timestamp
    from gateway.security.seal import Attachment, seal

    secs = 0.6 if quick else 1.5
    trader, customs = engines(pki)
    ens = payloads.ens(10_000)
    to = Engine.customs_party()
    msg = trader.user_message(action="IE3F32", payload=ens, to_party=to)
    (workdir / "ens-10k.mime").write_bytes(msg.wire_file())
    gz = __import__("gateway.ebms.compression", fromlist=["x"]).gzip_bytes(ens)

    def seal_only() -> None:
        um = UserMessage(message_id=new_message_id("ap.trader.test"), timestamp=utc_timestamp(),
                         from_party=trader.own_party, to_party=to, service="eu_ics2_t2c", service_type=None,
                         action="IE3F32", agreement=None, agreement_type=None, conversation_id="1",
                         part_infos=(PartInfo("cid:p1", "application/xml", "utf-8", "application/gzip"),),
                         ref_to_message_id=None, mpc=None)
        seal(build.user_message_envelope(um), [Attachment("p1", "application/gzip", gz)], trader.identity)

    out: dict[str, Any] = {"payload_bytes": len(ens), "message_bytes": len(msg.body)}
    out["seal_pack_per_s"] = rate(lambda: trader.user_message(action="IE3F32", payload=ens, to_party=to), secs)
    out["seal_build_per_s"] = rate(seal_only, secs)
    out["verify_per_s"] = rate(lambda: customs.open(msg.content_type, msg.body), secs)
    inbound = customs.open(msg.content_type, msg.body)
    out["receipt_per_s"] = rate(lambda: customs.receipt_for(inbound), secs)
    return out


def _child(cmd: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bench.micro", *cmd], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip()[-800:]}
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    doc["process_wall_s"] = time.perf_counter() - t0
    return doc


def run_big(pki: Path, workdir: Path, size: int = 100_000_000) -> dict[str, Any]:
    conf_text = (REPO / "conf" / "gateway.toml").read_text()
    conf_text = re.sub(r"(?ms)^\[limits\].*?(?=^\[)", BIG_LIMITS.lstrip() + "\n", conf_text)
    conf_text = re.sub(r'"\.\./', f'"{REPO}/', conf_text)
    conf = workdir / "gateway-big.toml"
    conf.write_text(conf_text)
    payload = workdir / "ens-100mb.xml"
    n = payloads.ens_file(payload, size)
    out: dict[str, Any] = {"payload_bytes": n, "conf": "limits raised in a generated copy of conf/gateway.toml"}
    out["baseline"] = _child(["baseline", str(conf)])
    out["pack"] = _child(["pack", str(conf), str(payload), str(workdir / "big.mime")])
    out["inspect"] = _child(["inspect", str(conf), str(workdir / "big.mime")])
    out["pack_command"] = _child(["pack-command", str(conf), str(payload), str(workdir / "big-cmd.mime")])
    out["inspect_command"] = _child(["inspect-command", str(conf), str(workdir / "big-cmd.mime")])
    for k in ("pack", "inspect", "pack_command", "inspect_command"):
        if "peak_rss_bytes" in out[k]:
            out[f"{k}_rss_ratio"] = out[k]["peak_rss_bytes"] / n
    payload.unlink()
    for f in ("big.mime", "big-cmd.mime"):
        (workdir / f).unlink(missing_ok=True)
    return out


def _hwm() -> int:
    from bench.timing import proc_hwm_bytes
    return proc_hwm_bytes(os.getpid())


def _main(argv: list[str]) -> int:
    """Child process entry: one measured operation, one JSON line (wall time and this process's VmHWM)."""
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    mode, conf = argv[0], argv[1]
    from gateway.security.verify import TOLERANT
    cfg = load_gateway_config(conf)
    # `ics2gw inspect` semantics: tolerant policy, any configured anchor (the message is our own)
    engine = Engine.from_config(cfg, policy=TOLERANT if mode == "inspect" else None)
    doc: dict[str, Any] = {"mode": mode}
    t0 = time.perf_counter()
    if mode == "pack":
        from gateway.ebms.stream import pack_file
        r = pack_file(engine, argv[2], argv[3], action="IE3F32", to_party=Engine.customs_party())
        doc.update(message_bytes=r.body_bytes, compressed_bytes=r.compressed_bytes)
    elif mode == "inspect":
        from gateway.ebms.stream import inspect_stream
        r2 = inspect_stream(engine, argv[2])
        doc.update(valid=r2.message.signature is not None, uncompressed_bytes=r2.uncompressed_bytes[0])
    elif mode == "pack-command":  # the real `ics2gw pack` command, in this process
        import contextlib
        import io
        from gateway.cli import main as cli_main
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(["pack", argv[2], "--action", "IE3F32", "--out", argv[3], "--conf", conf])
        doc.update(exit_code=code, message_bytes=Path(argv[3]).stat().st_size)
    elif mode == "inspect-command":  # the real `ics2gw inspect` command, in this process
        import contextlib
        import io
        from gateway.cli import main as cli_main
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(["inspect", argv[2], "--conf", conf])
        doc.update(exit_code=code)
    doc["wall_s"] = time.perf_counter() - t0
    doc["peak_rss_bytes"] = _hwm()
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
