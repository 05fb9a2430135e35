"""Helpers shared by command modules: the --conf option and JSON printing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_CONF = Path("conf/gateway.toml")


def add_conf_option(parser: argparse.ArgumentParser, default: Path = DEFAULT_CONF) -> None:
    parser.add_argument("--conf", type=Path, default=default, metavar="FILE",
                        help=f"configuration file (default: {default})")


def print_json(obj: Any, *, stream: Any = None) -> None:
    (stream or sys.stdout).write(json.dumps(obj, sort_keys=False, default=str) + "\n")
