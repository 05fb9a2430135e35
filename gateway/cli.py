"""Command-line entry point: argument parsing, and the one place that turns failures into exit codes.

Each subcommand lives in its own module under ``gateway.commands`` and exposes
``register(subparsers) -> None``; the parser it adds sets ``func`` to a callable taking the parsed
namespace and returning an exit code (see ``gateway.exitcodes``). Modules are discovered at start, so
a new command is one new file.

Why failures are mapped here: an operator (or systemd, or a script) needs one line that says what failed
and where, and an exit code it can act on, not a Python traceback. ``--debug`` (anywhere on the command
line) adds the traceback. A closed pipe (``ics2gw journal list | head``) is not a failure and prints nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence

from gateway import __version__, exitcodes
from gateway.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ics2gw",
        description="AS4 access point gateway for the EU Import Control System 2 (ICS2).",
        epilog="Exit codes: 0 success, 1 negative verdict, 2 unreadable input or usage error, 3 configuration "
               "error, 4 runtime failure (network, peer, journal, address in use).",
    )
    parser.add_argument("--version", action="version", version=f"ics2gw {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the Python traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import gateway.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"gateway.commands.{info.name}")
        module.register(sub)
    return parser


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one line) for a failure that escaped a command."""
    from gateway.commands._journal import CommandFailed
    from gateway.journal.errors import JournalError, JournalLocked, SchemaTooNew
    from gateway.listen import ListenError

    if isinstance(exc, ConfigError):
        return exitcodes.CONFIG, f"configuration error: {exc}"
    if isinstance(exc, CommandFailed):
        return exc.code, str(exc)
    if isinstance(exc, (JournalLocked, SchemaTooNew)):
        return exitcodes.RUNTIME, f"journal: {exc}"
    if isinstance(exc, JournalError):
        return exitcodes.RUNTIME, f"journal: {exc}"
    if type(exc).__name__ == "CommandFailedStorage":       # gateway.pipeline.daemon: storage unusable at start
        return exitcodes.RUNTIME, f"storage: {exc}"
    if isinstance(exc, ListenError):
        return exitcodes.RUNTIME, str(exc)
    if isinstance(exc, FileNotFoundError):
        return exitcodes.UNREADABLE, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    if isinstance(exc, PermissionError):
        return exitcodes.RUNTIME, f"{exc.filename or ''}: permission denied".lstrip(": ")
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return exitcodes.RUNTIME, f"{where}{exc.strerror or exc}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return exitcodes.RUNTIME, f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return exitcodes.UNREADABLE
    name = f"ics2gw {args.command}"
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`| head`): what it wanted, it got; nothing to report
        _silence_stdout()
        return exitcodes.OK
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place every failure becomes an exit code and a line
        code, line = classify(exc)
        if debug:
            traceback.print_exc(file=sys.stderr)
        try:
            print(f"{name}: {line}", file=sys.stderr)
        except BrokenPipeError:
            pass
        return code


if __name__ == "__main__":
    sys.exit(main())
