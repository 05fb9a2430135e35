"""Structured logs shared by the gateway and the simulator: logfmt (``key=value``) or JSON lines, UTC, to stderr.

Every line is ``ts=... level=... logger=... environment=... msg="..." key=value ...``; with ``json`` the same
fields, each its own key. Why a parser here rather than at every call site: the modules log in two styles,
``log.info("gateway started environment=%s journal=%s", env, path)`` and ``logfmt.log(...)`` (already
``key=value``). The formatter turns both into fields, so a value with a space (a path) stays one quoted value
and a JSON reader gets ``{"journal": "/var/lib/ics2gw/journal.sqlite3"}``, not one ``msg`` string.

- ``key=%s`` in a format string: the argument is the field's value, whatever it contains;
- an already formatted ``key=value`` or ``key="quoted"`` token is parsed back;
- ``extra={"fields": {...}}`` (what ``gateway.transport.logfmt.log`` passes) is taken as is.

The environment (eDelivery 1.4.4.7: never wonder which environment a line came from) is added to every line
by the handler's filter, set once by ``setup_logging(environment=...)``. Secrets never reach a log call:
configuration dataclasses hide them from ``repr``, and callers log identifiers only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("kv", "json")
LOGGING_KEYS = frozenset({"level", "format"})

_KEY = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_SPEC = re.compile(r"%(?:\((?P<name>[^)]*)\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<conv>[diouxXeEfFgGcrsa%])")
_BARE = re.compile(r'[^\s"=\\]+')   # a value that needs no quotes: no space, quote, '=' or backslash
_TOKEN = re.compile(rf'(?P<key>{_KEY})=(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<v>\S*))|(?P<word>\S+)')
# reserved: a message field with one of these names is renamed so it cannot overwrite the line's own
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})


@dataclass(frozen=True)
class LoggingConfig:
    """``[logging]``: defaults for ``run`` (the command line overrides them)."""
    level: str = "info"
    format: str = "kv"


def read_logging(sec: Any) -> LoggingConfig:
    """Reads ``[logging]`` (a ``gateway.config.Section``)."""
    sec.check_keys(LOGGING_KEYS)
    return LoggingConfig(level=sec.str("level", "info", choices=LEVELS),
                         format=sec.str("format", "kv", choices=FORMATS))


def quote(value: Any) -> str:
    """A logfmt value: bare when it is safe, else double-quoted with backslash escapes."""
    text = "" if value is None else str(value)
    if _BARE.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def _unescape(q: str) -> str:
    try:
        return json.loads(f'"{q}"')
    except ValueError:
        return q.replace('\\"', '"').replace("\\\\", "\\")


def parse_message(text: str) -> tuple[str, dict[str, Any]]:
    """(free text, fields) of an already formatted line: leading words, then ``key=value`` tokens.

    A word after a field is taken as the rest of that field's unquoted value (a path with a space logged
    with ``%s`` by older code), so nothing is lost.
    """
    words: list[str] = []
    fields: dict[str, Any] = {}
    last: str | None = None
    for m in _TOKEN.finditer(text):
        if m.group("key") is not None:
            last = m.group("key")
            fields[last] = _unescape(m.group("q")) if m.group("q") is not None else m.group("v")
        elif last is not None:
            fields[last] = f"{fields[last]} {m.group('word')}"
        else:
            words.append(m.group("word"))
    return " ".join(words), fields


@lru_cache(maxsize=4096)
def _compile(msg: str) -> tuple[tuple[tuple[str, str | None, str], ...], str] | None:
    """The parts of a ``%``-format string: (literal before, field key or None, conversion spec) per
    placeholder, and the literal tail; None for forms not handled here (named or ``*`` specs). Cached: a
    module logs with a few hundred constant format strings."""
    parts: list[tuple[str, str | None, str]] = []
    pos = 0
    pending = ""
    for m in _SPEC.finditer(msg):
        if m.group("name") is not None or "*" in m.group(0):
            return None
        before = pending + msg[pos:m.start()]
        pos = m.end()
        if m.group("conv") == "%":
            pending = before + "%"
            continue
        pending = ""
        km = re.search(rf"(?:^|\s)({_KEY})=$", before)
        if km:
            parts.append((before[:km.start(1)], km.group(1), m.group(0)))
        else:
            parts.append((before, None, m.group(0)))
    return tuple(parts), pending + msg[pos:]


@lru_cache(maxsize=4096)
def _parse_static(text: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    words, fields = parse_message(text)
    return words, tuple(fields.items())


def _from_template(msg: str, args: tuple[Any, ...]) -> tuple[str, dict[str, Any]] | None:
    """(free text, fields) of a ``%``-format string and its arguments; None when they do not match."""
    compiled = _compile(msg)
    if compiled is None:
        return None
    parts, tail = compiled
    if len(parts) != len(args):
        return None
    fields: dict[str, Any] = {}
    out: list[str] = []
    dynamic_text = False
    for (before, key, spec), value in zip(parts, args):
        out.append(before)
        if key is not None:
            fields[key] = value if isinstance(value, (int, float, bool)) or value is None else str(value)
        else:
            dynamic_text = True
            try:
                out.append(spec % (value,))
            except (TypeError, ValueError):
                return None
    out.append(tail)
    if dynamic_text:
        text, more = parse_message("".join(out))
    else:
        text, static = _parse_static("".join(out))   # only literals: the same for every line of this template
        more = dict(static)
    more.update(fields)
    return text, more


def record_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """(free text, fields) of a log record, whichever way it was logged."""
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        return "", dict(extra)   # the message is the rendering of these fields (gateway.transport.logfmt)
    if record.args and isinstance(record.msg, str) and isinstance(record.args, tuple):
        parsed = _from_template(record.msg, record.args)
        if parsed is not None:
            return parsed
    return parse_message(record.getMessage())


def _base(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    ts = formatter.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
    return {"ts": ts, "level": record.levelname.lower(), "logger": record.name}


def _merge(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    doc = _base(record, formatter)
    text, fields = record_fields(record)
    env = fields.pop("environment", None) or getattr(record, "environment", None)
    if env:
        doc["environment"] = env
    if text:
        doc["msg"] = text
    for k, v in fields.items():
        doc[f"field.{k}" if k in _RESERVED else k] = v
    if record.exc_info:
        doc["exc"] = formatter.formatException(record.exc_info)
    return doc


class KeyValueFormatter(logging.Formatter):
    """logfmt: ``ts=... level=... logger=... environment=... msg="..." key=value``."""
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={quote(v)}" for k, v in _merge(record, self).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, every field its own key."""
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_merge(record, self), ensure_ascii=False, default=str)


class EnvironmentFilter(logging.Filter):
    """Stamps the active environment on every record that has none (eDelivery 1.4.4.7)."""

    def __init__(self, environment: str) -> None:
        super().__init__()
        self.environment = environment

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "environment", None):
            record.environment = self.environment
        return True


def setup_logging(level: str = "info", fmt: str = "kv", *, environment: str = "unknown",
                  stream: Any = None) -> logging.Handler:
    """Installs the one handler of the process; returns it (``set_level`` changes the level at run time)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(EnvironmentFilter(environment))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


def set_level(level: str) -> None:
    """Changes the level of every line from now on (SIGHUP reload)."""
    logging.getLogger().setLevel(level.upper())
