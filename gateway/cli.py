"""Command-line entry point: argument parsing and printing only.

Each subcommand lives in its own module under ``gateway.commands`` and exposes
``register(subparsers) -> None``; the parser it adds sets ``func`` to a callable taking the parsed
namespace and returning an exit code (see ``gateway.exitcodes``). Modules are discovered at start, so
a new command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from gateway import __version__, exitcodes
from gateway.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ics2gw",
        description="AS4 access point gateway for the EU Import Control System 2 (ICS2).",
    )
    parser.add_argument("--version", action="version", version=f"ics2gw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import gateway.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"gateway.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return exitcodes.UNREADABLE
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"ics2gw: configuration error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
