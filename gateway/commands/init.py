"""`ics2gw init DIR`: a ready-to-run working directory from the templates shipped in the package.

Layout (the templates' relative paths assume it: ``conf/gateway.toml`` names ``../certs/out/...``,
``../pmodes`` and ``../var/...``)::

    DIR/conf/gateway.toml, simulator.toml   configuration (edit identity, endpoints, keys for real use)
    DIR/pmodes/*.toml                        the ICS2 P-Modes
    DIR/samples/ens-*.xml                    sample ENS filings (valid and locally invalid) for `ics2gw demo`
    DIR/certs/make_pki.py                    the test PKI generator; DIR/certs/out/ with --test-pki
    DIR/systemd/                             the systemd unit and its environment file (see README "Operations")
    DIR/var/...                              state folders and an empty journal

Why an empty journal is created here: ``ics2gw run`` refuses a journal that does not exist, so that a mistyped
path is an error instead of a fresh journal that forgets every filing in flight.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from gateway import exitcodes
from gateway.commands._journal import CommandFailed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create a ready-to-run working directory (configuration, P-Modes, journal)",
                       description="Create DIR with the configuration templates, P-Modes, sample ENS files, the "
                                   "state folders and an empty journal; with --test-pki also generate the test "
                                   "PKI, so that `cd DIR && ics2gw demo` works at once. DIR must not exist or "
                                   "be empty.")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--test-pki", action="store_true",
                   help="generate the test PKI into DIR/certs/out (for the demo and conformance with the simulator; "
                        "never for production)")
    p.set_defaults(func=run)


def _copy(src: Path, dst: Path, pattern: str = "*") -> int:
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted(src.glob(pattern)):
        if f.is_file():
            shutil.copy2(f, dst / f.name)
            n += 1
    return n


def run(args: argparse.Namespace) -> int:
    from gateway import resources
    from gateway.config import load_toml
    from gateway.journal.config import read_journal_config
    from gateway.journal.factory import migrate_journal
    from gateway.pipeline.config import read_intake

    d: Path = args.dir.resolve()
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise CommandFailed(exitcodes.UNREADABLE, f"{d} exists and is not an empty folder; choose a new one")
    d.mkdir(parents=True, exist_ok=True)
    _copy(resources.path("conf"), d / "conf", "*.toml")
    _copy(resources.path("pmodes"), d / "pmodes", "*.toml")
    samples = _copy(resources.path("samples"), d / "samples", resources.SAMPLE_GLOB)
    for folder in (resources.path("samples"), resources.path("samples").parent / "attachments"):
        for pattern in ("*.pdf", "*.jpg"):          # the attachments the samples declare, next to them
            if folder.is_dir():
                _copy(folder, d / "samples", pattern)
    (d / "certs").mkdir(exist_ok=True)
    shutil.copy2(resources.path("make_pki.py"), d / "certs" / "make_pki.py")
    try:
        _copy(resources.path("systemd"), d / "systemd")
    except resources.ResourceMissing:
        pass
    if args.test_pki:
        proc = subprocess.run([sys.executable, str(d / "certs" / "make_pki.py"), "--out", str(d / "certs" / "out")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise CommandFailed(exitcodes.RUNTIME, f"the test PKI generator failed: {proc.stderr.strip()[-500:]}")

    # state folders and the empty journal, from the template itself (its key files may not exist yet)
    root = load_toml(d / "conf" / "gateway.toml")
    intake = read_intake(root.section("intake"))
    intake.ensure()
    jcfg = read_journal_config(root.section("journal"))
    if jcfg.backend == "sqlite":
        jcfg.path.parent.mkdir(parents=True, exist_ok=True)
    migrate_journal(jcfg)

    print(f"ics2gw init: {d} ready: conf/, pmodes/, {samples} samples, var/ with an empty journal"
          + (", certs/out/ (test PKI)" if args.test_pki else ""))
    print(f"next: cd {d} && ics2gw doctor --offline"
          + (" && ics2gw demo" if args.test_pki else
             "   (put your sealing and TLS keys where conf/gateway.toml says, or rerun with --test-pki)"))
    return exitcodes.OK
