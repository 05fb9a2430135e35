"""Derived configurations for the conformance runner and the demo: read a sample TOML, change a few keys, write it.

Why not edit the sample in place: the runner and the demo must never clobber a running set-up, so each gets
its own copy (own journal, spool, inbox, ports) in its own working directory. Relative paths of the original
(``"../certs/out/..."``) are made absolute against the original file's directory first, so the copy works
from anywhere. Only loopback addresses are ever generated.
"""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _looks_like_relative_path(value: str) -> bool:
    if not value or value.startswith("/") or ":" in value or "@" in value or " " in value:
        return False
    return value.startswith(("./", "../")) or "/" in value


def absolutize(obj: Any, base: Path) -> Any:
    """Every string that looks like a relative path becomes absolute against ``base`` (the original's directory)."""
    if isinstance(obj, dict):
        return {k: absolutize(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [absolutize(v, base) for v in obj]
    if isinstance(obj, str) and _looks_like_relative_path(obj):
        return str((base / obj).resolve())
    return obj


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):  # inline table
        return "{ " + ", ".join(f"{json.dumps(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dumps(doc: dict[str, Any]) -> str:
    """A small TOML writer for configuration documents (tables, arrays of tables, scalars, arrays)."""
    out: list[str] = []

    def table(d: dict[str, Any], path: list[str]) -> None:
        for k, v in d.items():
            if not isinstance(v, dict) and not _is_table_array(v):
                out.append(f"{_key(k)} = {_scalar(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                sub = path + [k]
                out.append("")
                out.append("[" + ".".join(_key(p) for p in sub) + "]")
                table(v, sub)
            elif _is_table_array(v):
                for item in v:
                    sub = path + [k]
                    out.append("")
                    out.append("[[" + ".".join(_key(p) for p in sub) + "]]")
                    table(item, sub)

    table(doc, [])
    return "\n".join(out).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def write(path: Path, doc: dict[str, Any], header: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((header + "\n" if header else "") + dumps(doc))
    return path


# ------------------------------------------------------------------------------------------------ ports
def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port(dual: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (and on ::1 as well when ``dual`` and IPv6 loopback exists)."""
    v6 = dual and ipv6_loopback()
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if v6:
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s6.bind(("::1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ derived files
def gateway_doc(base_conf: Path, workdir: Path, *, sti_url: str | None = None, inbound_port: int | None = None,
                api_port: int = 0, health_port: int | None = None, validation: str | None = None,
                fast: bool = True) -> dict[str, Any]:
    """A copy of ``base_conf`` with its own var/ under ``workdir``, its own API port and (optionally) the simulator
    URL of the first endpoint and the inbound port. ``fast``: short poll and retry intervals (loopback tests)."""
    doc = absolutize(load(base_conf), base_conf.resolve().parent)
    var = workdir / "var"
    if sti_url is not None and doc.get("endpoints"):
        doc["endpoints"][0]["url"] = sti_url
    if inbound_port is not None:
        ins = doc.setdefault("inbound", {})
        listen = [f"127.0.0.1:{inbound_port}"] + ([f"[::1]:{inbound_port}"] if ipv6_loopback() else [])
        ins["listen"] = listen
    doc.setdefault("api", {})["enabled"] = True
    doc["api"]["listen"] = f"127.0.0.1:{api_port}"
    doc.setdefault("health", {})["listen"] = f"127.0.0.1:{health_port}" if health_port else ""
    doc.setdefault("journal", {})["path"] = str(var / "journal.sqlite3")
    intake = doc.setdefault("intake", {})
    for key, sub in (("spool_dir", "spool/incoming"), ("work_dir", "spool/work"), ("archive_dir", "spool/archive"),
                     ("rejected_dir", "spool/rejected"), ("inbox_dir", "inbox"), ("status_dir", "status")):
        intake[key] = str(var / sub)
    if validation is not None:
        intake["validation"] = validation
    if fast:
        intake["poll_seconds"] = 0.05
        pipe = doc.setdefault("pipeline", {})
        pipe.update(drain_seconds=5, idle_poll_seconds=0.05, lease_seconds=10)
        retry = pipe.setdefault("retry", {})
        retry.update(initial_seconds=0.2, max_seconds=1.0, max_attempts=20)
    return doc


def simulator_doc(base_conf: Path, workdir: Path, *, port: int, admin_port: int, push_url: str,
                  reply_delay: float = 0.05) -> dict[str, Any]:
    """A copy of the simulator sample on its own ports and registry; every push party pushes to ``push_url``."""
    doc = absolutize(load(base_conf), base_conf.resolve().parent)
    doc.setdefault("server", {})["port"] = port
    doc["server"]["listen"] = ["127.0.0.1", "::1"] if ipv6_loopback() else ["127.0.0.1"]
    doc.setdefault("admin", {}).update(enabled=True, listen="127.0.0.1", port=admin_port)
    doc.setdefault("registry", {})["path"] = str(workdir / "simulator.sqlite")
    for party in doc.get("parties", []):
        if party.get("delivery", "push") == "push":
            party["push_url"] = push_url
    faults = doc.setdefault("faults", {})
    faults.update(reply_delay_seconds=reply_delay, push_retry_seconds=0.3, reoffer_after_seconds=3)
    return doc
