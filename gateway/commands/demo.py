"""`ics2gw demo`: start the customs simulator and the gateway, file the sample ENS set, print the outcomes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import exitcodes


def _defaults() -> tuple[Path, Path, Path]:
    """conf/, samples/ and var/demo of the current folder when it is a working directory (`ics2gw init`),
    else the repository's / the installed package's."""
    from gateway import resources
    from gateway.conformance.demo import DEFAULT_CONF_DIR, DEFAULT_SAMPLES, DEFAULT_WORKDIR
    cwd = Path.cwd()
    if (cwd / "conf" / "gateway.toml").exists():
        samples = cwd / "samples" if (cwd / "samples").is_dir() else _or(DEFAULT_SAMPLES, resources, "samples")
        return cwd / "conf", samples, cwd / "var" / "demo"
    return (_or(DEFAULT_CONF_DIR, resources, "conf"), _or(DEFAULT_SAMPLES, resources, "samples"), DEFAULT_WORKDIR)


def _or(default: Path, resources: object, name: str) -> Path:
    if default.exists():
        return default
    try:
        return resources.path(name)  # type: ignore[attr-defined, no-any-return]
    except FileNotFoundError:
        return default


def register(sub: argparse._SubParsersAction) -> None:
    DEFAULT_CONF_DIR, DEFAULT_SAMPLES, DEFAULT_WORKDIR = _defaults()
    p = sub.add_parser("demo", help="run the gateway against the bundled customs simulator with the sample ENS set",
                       description="Start the customs simulator and the gateway as processes (own configurations "
                                   "derived from conf/*.toml, own working directory, free loopback ports), file the "
                                   "sample ENS set through the spool directory, wait for the outcomes, print one "
                                   "line per filing (LRN, action, state, MRN or error, round trip) and stop both "
                                   "with SIGTERM. Exit 0 when every valid filing is registered and every invalid one "
                                   "rejected with a reason, 1 otherwise, 4 when the demo cannot run.")
    p.add_argument("--conf-dir", type=Path, default=DEFAULT_CONF_DIR, metavar="DIR",
                   help=f"folder with gateway.toml and simulator.toml to derive from (default: {DEFAULT_CONF_DIR})")
    p.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, metavar="DIR",
                   help=f"folder of sample filings ens-*.xml (default: {DEFAULT_SAMPLES})")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, metavar="DIR",
                   help=f"working directory, emptied at start (default: {DEFAULT_WORKDIR})")
    p.add_argument("--timeout", type=float, default=40.0, metavar="SECONDS",
                   help="how long to wait for the outcomes once filed (default: 40)")
    p.add_argument("--amqp", action="store_true",
                   help="file the samples through a private RabbitMQ node (the ERP queue path) and read the events "
                        "back (needs Debian's rabbitmq-server)")
    p.add_argument("--allow-production", action="store_true",
                   help="accept a configuration with environment = \"production\" (never needed for the demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.conformance.demo import DemoError, run_demo
    try:
        result = run_demo(conf_dir=args.conf_dir, samples_dir=args.samples, workdir=args.workdir.resolve(),
                          timeout=args.timeout, allow_production=args.allow_production, amqp=args.amqp)
    except DemoError as exc:
        print(f"ics2gw demo: {exc}", file=sys.stderr)
        return exitcodes.RUNTIME
    return exitcodes.OK if result.ok else exitcodes.INVALID
