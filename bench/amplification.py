"""Worst-case verification work a peer can cause without a trusted seal (issue 16, docs/benchmarks.md).

    .venv/bin/python -m bench.amplification build DIR        # writes the hostile messages (current code)
    .venv/bin/python -m bench.amplification measure DIR      # times Engine.open on each, one JSON line per case

``measure`` runs each case in a child process with a time cap, so the same files can be measured against an
older checkout (``cd OLD && PYTHONPATH=OLD python -m bench.amplification measure DIR``) for a before/after
figure. Every hostile message starts from a real sealed message and is edited *after* sealing: no key is
needed, which is the point (the old verifier computed every digest before looking at the signature).

Cases: a flood of ds:References to one large attachment (gzip bytes: SHA-256 per reference; XML: parse and
c14n per reference), a PrefixList of 100 000 prefixes, 100 000 namespace declarations inside eb:Messaging
(exclusive c14n drops them, so the digest still matches), and two honest baselines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAP_SECONDS = 120


def _engine():  # type: ignore[no-untyped-def]
    from gateway.config import Limits
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    pki = REPO / "certs" / "out"
    return Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                  TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"],
                                        intermediates=[pki / "trader-int.pem"]),
                  party_id="sti-taxud", fqdn="sti.test", role="Customs", limits=Limits.defaults())


def build(out: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from lxml import etree

    from gateway.conformance.unsafe import Part, Recipe, build_message, xml_part
    from gateway.ebms import mime
    from gateway.ebms.constants import NS_DS, NS_EC
    from gateway.security.keys import load_pem_certificates
    from gateway.xmlsafe import parse_xml

    pki = REPO / "certs" / "out"
    key = serialization.load_pem_private_key((pki / "trader-seal.key").read_bytes(), None)
    chain = load_pem_certificates(pki / "trader-chain.pem")
    ens = (REPO / "tests" / "fixtures" / "ics2" / "ens-IE3F10-sea.xml").read_bytes()
    big_gz = os.urandom(20 * 1024 * 1024)            # incompressible: 20 MB on the wire (ICD 4.2.6)
    item = b"<Item><Description>Spare parts for agricultural machines</Description><Mass>12.5</Mass></Item>"
    big_xml = b'<?xml version="1.0" encoding="UTF-8"?><Doc>' + item * (4 * 1024 * 1024 // len(item)) + b"</Doc>"
    out.mkdir(parents=True, exist_ok=True)
    ds = "{%s}" % NS_DS

    def write(name: str, ctype: str, body: bytes) -> None:
        (out / f"{name}.mime").write_bytes(mime.write_message_file(ctype, body))

    def edit_soap(ctype: str, body: bytes, fn) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
        u = mime.unpack(ctype, body, max_parts=8, max_part_bytes=len(body))
        root = parse_xml(bytes(u.soap.content))
        fn(root)
        soap = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return mime.pack(soap, [(p.content_id, p.content_type, p.content) for p in u.attachments])

    def flood_refs(copies: int):  # type: ignore[no-untyped-def]
        def fn(root) -> None:  # type: ignore[no-untyped-def]
            last = list(root.iter(ds + "Reference"))[-1]     # the attachment's reference, valid digest
            for _ in range(copies):
                last.addnext(deepcopy(last))
        return fn

    ok = build_message(Recipe(parts=[xml_part(ens)]), key, chain)
    write("baseline-10k-ens", *ok)
    gz = build_message(Recipe(parts=[xml_part(ens), Part("big@x", "application/pdf", big_gz, compress=False)]),
                       key, chain)
    write("baseline-20mb-attachment", *gz)
    write("ref-flood-20mb-x500", *edit_soap(*gz, flood_refs(500)))
    xml = build_message(Recipe(parts=[xml_part(ens), Part("big@x", "application/xml", big_xml, compress=False)]),
                        key, chain)
    write("ref-flood-4mb-xml-x100", *edit_soap(*xml, flood_refs(100)))

    def prefix_flood(root) -> None:  # type: ignore[no-untyped-def]
        prefixes = " ".join(f"p{i}" for i in range(100_000))
        for t in list(root.iter(ds + "Transform"))[:1] + list(root.iter(ds + "CanonicalizationMethod")):
            for inc in t.findall("{%s}InclusiveNamespaces" % NS_EC):
                t.remove(inc)
            etree.SubElement(t, "{%s}InclusiveNamespaces" % NS_EC, nsmap={"ec": NS_EC}, PrefixList=prefixes)
    write("prefixlist-100k", *edit_soap(*ok, prefix_flood))

    ctype, body = ok
    decls = " ".join(f'xmlns:n{i}="urn:n{i}"' for i in range(100_000)).encode()
    write("namespaces-100k", ctype, body.replace(b"<eb:UserMessage", b"<eb:UserMessage " + decls, 1))
    # linear floods that stay within the 4 MB envelope cap, in a header nobody reads (allowed there)
    def header_flood(inner: bytes, count: int, depth: int = 1) -> tuple[str, bytes]:
        block = b"<f:F>" * depth + inner * count + b"</f:F>" * depth
        return ctype, body.replace(b"<env:Header>", b'<env:Header><f:Flood xmlns:f="urn:x-flood">' + block
                                   + b"</f:Flood>", 1)
    write("comments-500k-depth-200", *header_flood(b"<!---->", 500_000, depth=200))
    write("ids-200k", *header_flood(b'<f:I Id="i"/>', 200_000))
    write("partinfo-40k", ctype, body.replace(b"</eb:PayloadInfo>", b"".join(
        b'<eb:PartInfo href="cid:p%d@x"/>' % i for i in range(40_000)) + b"</eb:PayloadInfo>", 1))
    print(f"hostile messages written to {out}")


def _one(path: Path) -> None:
    from gateway.ebms import mime
    from gateway.ebms.errors import EbmsFault
    engine = _engine()
    from gateway.xmlsafe import parse_xml
    ctype, body = mime.read_message_file(path.read_bytes())
    t0 = time.perf_counter()  # the floor: what unpacking and parsing alone cost (no verification)
    try:
        parse_xml(bytes(mime.unpack(ctype, body, max_parts=64, max_part_bytes=len(body)).soap.content),
                  max_bytes=len(body))
    except Exception:  # noqa: BLE001 - only a reference figure
        pass
    parse_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        engine.open(ctype, body)
        verdict = "accepted"
    except EbmsFault as exc:
        verdict = f"{exc.code}: {exc.message[:90]}"
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 3), "parse_seconds": round(parse_seconds, 3),
                      "verdict": verdict}))


def measure(directory: Path) -> None:
    for path in sorted(directory.glob("*.mime")):
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.amplification", "one", str(path)], capture_output=True,
                                  text=True, timeout=CAP_SECONDS, cwd=os.getcwd())
            row = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {
                "error": proc.stderr.strip().splitlines()[-1:]}
        except subprocess.TimeoutExpired:
            row = {"seconds": f"> {CAP_SECONDS}", "verdict": "still running at the cap"}
        row = {"case": path.stem, "bytes": path.stat().st_size, **row}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    cmd, arg = sys.argv[1], Path(sys.argv[2])
    {"build": build, "measure": measure, "one": _one}[cmd](arg)
