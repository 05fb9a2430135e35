"""Peak memory of the inbound server for one large customs push (issue 16, "The inbound server under slow and
large peers"): ``python -m bench.inbound_rss [--mib 250] [--tree DIR]``.

The parent builds a c2t message (customs seal) whose payload is ``--mib`` MiB of XML, compressible about
100:1 (inside the default 1000:1 ratio cap and the 32 MiB message cap), then starts a child process running
``InboundServer`` with the daemon's own inbound sink (SQLite journal, inbox files) and pushes the message to
it over 2-way TLS on loopback. The child reports VmRSS before the push and VmHWM (peak) after the receipt
was sent, so the difference is what one push cost. ``--tree`` runs the child against another source tree
(for example ``git archive`` of an older commit unpacked in /tmp) to compare before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PKI = REPO / "certs" / "out"


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def dense_payload(mib: int) -> bytes:
    """XML of ``mib`` MiB of random hex (gzip ratio about 2:1): a body near the 32 MiB message cap."""
    rnd = random.Random(16)
    head = '<?xml version="1.0" encoding="UTF-8"?><IE3Q02 xmlns="urn:wco:datamodel:eu:ics2:2"><d>'
    return (head + rnd.randbytes(mib * 512 * 1024).hex() + "</d></IE3Q02>").encode()


def payload(mib: int) -> bytes:
    """XML of ``mib`` MiB: 1 KiB records, each with 8 random hex digits (gzip ratio about 100:1)."""
    rnd = random.Random(16)
    filler = "x" * 960
    n = mib * 1024
    head = '<?xml version="1.0" encoding="UTF-8"?><IE3Q02 xmlns="urn:wco:datamodel:eu:ics2:2">'
    body = "".join(f'<r n="{i:08d}" v="{rnd.getrandbits(32):08x}">{filler}</r>\n'[:1023] + "\n" for i in range(n))
    return (head + body + "</IE3Q02>").encode()


# ------------------------------------------------------------------------------------------------ child
async def serve(workdir: Path, port_file: Path, done_file: Path) -> None:
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.journal.committer import JournalWriter
    from gateway.journal.sqlite import SqliteJournal
    from gateway.pipeline.alerts import Alerts
    from gateway.pipeline.config import AlertsConfig
    from gateway.pipeline.inbound import InboundProcessor
    from gateway.transport.config import ListenAddress, load_transport_config
    from gateway.transport.server import InboundServer
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    tcfg = load_transport_config(cfg)
    trader = Engine.from_config(cfg)
    journal = SqliteJournal.open(workdir / "journal.sqlite3")
    reader = SqliteJournal.open_reader(workdir / "journal.sqlite3")
    writer = JournalWriter(journal).start()
    (workdir / "inbox").mkdir()
    (workdir / "status").mkdir()
    sink = InboundProcessor(reader, writer, inbox_dir=workdir / "inbox", status_dir=workdir / "status",
                            limits=trader.limits, alerts=Alerts(AlertsConfig((), None), "conformance"))
    server = InboundServer(trader, sink, tcfg, listen=[ListenAddress("127.0.0.1", 0)])
    async with server:
        before = _status("VmRSS")
        port_file.write_text(str(server.bound[0].port))
        while not done_file.exists():
            await asyncio.sleep(0.05)
        peak = _status("VmHWM")
    await writer.close()
    import gateway
    print(json.dumps({"rss_before": before, "peak": peak, "delta": peak - before,
                      "gateway": str(Path(gateway.__file__).parent)}))


# ------------------------------------------------------------------------------------------------ parent
async def push(port: int, msg: Any) -> Any:
    from gateway.config import load_gateway_config
    from gateway.transport.client import As4Client, summarize
    from gateway.transport.config import KeyMaterial, load_transport_config
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    tcfg = load_transport_config(cfg)
    tls = dataclasses.replace(tcfg.tls, client=KeyMaterial(cert=PKI / "customs-tls-client.pem",
                                                           key=PKI / "customs-tls-client.key"),
                              ca_bundle=(PKI / "trader-root.pem",))
    ccfg = dataclasses.replace(tcfg, tls=tls)
    ep = dataclasses.replace(tcfg.endpoint("sti"), url=f"https://127.0.0.1:{port}{tcfg.inbound.path}",
                             total_timeout=900.0)
    async with As4Client(_customs(), ccfg) as client:
        out = await client.send(ep, msg)
    return summarize(out)


def _customs() -> Any:
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    return Engine(load_identity_files(PKI / "customs-seal.key", PKI / "customs-chain.pem"),
                  TrustStore.from_files([PKI / "trader-root.pem", PKI / "customs-root.pem"]),
                  party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=250)
    ap.add_argument("--dense", action="store_true", help="random hex payload: the body is about half the payload")
    ap.add_argument("--tree", type=Path, default=REPO, help="source tree the server child runs")
    ap.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve[0]), Path(args.serve[1]), Path(args.serve[2])))
        return 0
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.ebms.engine import Engine
    customs = _customs()
    customs.limits = dataclasses.replace(customs.limits, send_max_payload_bytes=300 * 1024 * 1024,
                                         send_max_message_compressed_bytes=32 * 1024 * 1024)
    data = dense_payload(args.mib) if args.dense else payload(args.mib)
    msg = customs.user_message(action="IE3Q02", payload=data, service=SERVICE_C2T,
                               to_party=Engine.trader_party("NL123456789"))
    del data
    with tempfile.TemporaryDirectory(prefix="inbound-rss-") as tmp:
        work = Path(tmp)
        port_file, done_file = work / "port", work / "done"
        env = dict(os.environ, PYTHONPATH=str(args.tree))
        child = subprocess.Popen([sys.executable, "-m", "bench.inbound_rss", "--serve", str(work), str(port_file),
                                  str(done_file)], cwd=args.tree, env=env, stdout=subprocess.PIPE, text=True)
        try:
            while not port_file.exists() or not port_file.read_text():
                if child.poll() is not None:
                    raise SystemExit(f"server child exited with {child.returncode}")
                import time
                time.sleep(0.05)
            outcome = asyncio.run(push(int(port_file.read_text()), msg))
        finally:
            done_file.write_text("1")
            out, _ = child.communicate(timeout=120)
    figures = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({"payload_mib": args.mib, "dense": args.dense, "body_bytes": len(msg.body), "outcome": str(outcome)[:120],
                      **figures, "delta_mib": round(figures["delta"] / 2**20, 1),
                      "peak_mib": round(figures["peak"] / 2**20, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
