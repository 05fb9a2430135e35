"""TOML configuration: a typed reader whose errors name the file and the key, and the core settings.

Every module that owns a configuration section (journal, transport, pipeline, simulator ...) reads it
through ``Section`` so that all errors look alike: ``conf/gateway.toml: [journal.path] must be a string``.
Relative paths are resolved against the directory of the file that holds them, so a configuration works
from any working directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

_MISSING: Any = object()
# Set by gateway.settings.load_settings(secrets=False): commands that only read the journal must not need the
# seal password in their environment, yet must refuse the same typos as `run`. Secrets are then not read.
LENIENT_SECRETS: ContextVar[bool] = ContextVar("ics2gw_lenient_secrets", default=False)

# Top-level keys a gateway configuration may hold. Sections owned by later modules are listed so that a
# typo in a section name is reported instead of silently ignored; each listed section has a reader that
# refuses its own unknown keys, and gateway.settings.load_settings calls every reader.
GATEWAY_TOP_LEVEL = {
    "environment", "allow_production", "identity", "seal", "trust", "limits", "pmodes", "tls", "endpoints",
    "routing", "inbound", "pull", "journal", "intake", "api", "pipeline", "alerts", "logging", "health",
    "amqp", "hmrc",
}
# Where a key that looks plausible actually lives.
GATEWAY_HINTS = {"validation": "local validation is set in [intake] validation and validation_profile",
                 "log_level": "the log level is [logging] level", "log_format": "the log format is [logging] format"}
ENVIRONMENTS = ("conformance", "production")
PARTY_ID_RE = re.compile(r"^(?:(?P<system>[A-Za-z0-9]{1,12})@)?(?P<eori>[A-Z]{2}[A-Za-z0-9]{1,15})(?:@(?P<ms>[A-Z]{2}))?$")
EORI_RE = re.compile(r"^[A-Z]{2}[A-Za-z0-9]{1,15}$")


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""

    def __init__(self, file: Path | str, key: str, message: str) -> None:
        self.file, self.key, self.message = str(file), key, message
        where = f"[{key}] " if key else ""
        super().__init__(f"{file}: {where}{message}")


class Section:
    """Typed access to one table of a TOML file; ``prefix`` is its dotted path for error messages."""

    def __init__(self, data: dict[str, Any], *, file: Path, prefix: str = "", base_dir: Path | None = None) -> None:
        self.data, self.file, self.prefix = data, file, prefix
        self.base_dir = base_dir if base_dir is not None else file.parent

    # -- error helpers -------------------------------------------------------------------------------
    def key_path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(self.file, self.key_path(key), message)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any, kind: str) -> Any:
        if key not in self.data:
            if default is _MISSING:
                self.fail(key, f"is required ({kind})")
            return default
        return self.data[key]

    # -- scalar readers --------------------------------------------------------------------------------
    def str(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] | None = None,
            pattern: re.Pattern[str] | None = None, hint: str = "") -> Any:
        value = self._get(key, default, "a string")
        if value is default and key not in self.data:
            return value
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {type(value).__name__}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"{value!r} is not valid{': ' + hint if hint else ''}")
        return value

    def int(self, key: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None) -> Any:
        value = self._get(key, default, "an integer")
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, not {type(value).__name__}")
        if min is not None and value < min:
            self.fail(key, f"must be at least {min}, not {value}")
        if max is not None and value > max:
            self.fail(key, f"must be at most {max}, not {value}")
        return value

    def float(self, key: str, default: Any = _MISSING, *, min: float | None = None,
              max: float | None = None) -> Any:
        value = self._get(key, default, "a number")
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, not {type(value).__name__}")
        if min is not None and value < min:
            self.fail(key, f"must be at least {min}, not {value}")
        if max is not None and value > max:
            self.fail(key, f"must be at most {max}, not {value}")
        return float(value)

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default, "true or false")
        if value is default and key not in self.data:
            return value
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {value!r}")
        return value

    def list_str(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default, "a list of strings")
        if value is default and key not in self.data:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, "must be a list of strings")
        return list(value)

    def path(self, key: str, default: Any = _MISSING, *, must_exist: bool = True) -> Any:
        """A path relative to the configuration file; a string default is resolved the same way."""
        value = self.str(key, default)
        if value is None or not isinstance(value, str):
            return value
        return self._resolve(key, value, must_exist and key in self.data)

    def paths(self, key: str, default: Any = _MISSING, *, must_exist: bool = True) -> Any:
        values = self.list_str(key, default)
        if not isinstance(values, list):
            return values
        return [self._resolve(key, v, must_exist and key in self.data) for v in values]

    def _resolve(self, key: str, value: str, must_exist: bool) -> Path:
        p = Path(os.path.expanduser(value))
        if not p.is_absolute():
            p = (self.base_dir / p).resolve()
        if must_exist and not p.exists():
            self.fail(key, f"file {value!r} does not exist (resolved to {p})")
        return p

    def secret(self, key: str) -> str | None:
        """Reads ``KEY_env`` (name of an environment variable) or ``KEY_file`` (a file); never a literal."""
        if key in self.data:
            self.fail(key, f"secrets are never written in the configuration: use {key}_env or {key}_file")
        lenient = LENIENT_SECRETS.get()
        env_name = self.str(f"{key}_env", None)
        file_path = self.path(f"{key}_file", None, must_exist=not lenient)
        if env_name and file_path:
            self.fail(f"{key}_env", f"give either {key}_env or {key}_file, not both")
        if lenient:
            return None
        if env_name:
            if env_name not in os.environ:
                self.fail(f"{key}_env", f"environment variable {env_name} is not set")
            return os.environ[env_name]
        if file_path:
            try:
                return file_path.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                self.fail(f"{key}_file", f"cannot read {file_path}: {getattr(exc, 'strerror', None) or exc}")
        return None

    # -- tables ------------------------------------------------------------------------------------------
    def section(self, key: str, *, required: bool = False) -> Section:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                self.fail(key, "section is required")
            value = {}
        if not isinstance(value, dict):
            self.fail(key, "must be a table")
        return Section(value, file=self.file, prefix=self.key_path(key), base_dir=self.base_dir)

    def sections(self, key: str) -> list[Section]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, "must be an array of tables ([[...]])")
        return [Section(v, file=self.file, prefix=f"{self.key_path(key)}[{i}]", base_dir=self.base_dir)
                for i, v in enumerate(value)]

    def check_keys(self, known: set[str] | frozenset[str], hints: dict[str, str] | None = None) -> None:
        """Rejects keys this section does not know (a typo must not be silently ignored)."""
        for key in self.data:
            if key not in known:
                hint = (hints or {}).get(key)
                self.fail(key, f"unknown key ({hint})" if hint else f"unknown key (known: {', '.join(sorted(known))})")


def load_toml(path: Path | str) -> Section:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return Section(data, file=path.resolve())


# ---------------------------------------------------------------------------------------------------
# Core settings used by the AS4 engine and every command.
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    eori: str
    party_id: str
    fqdn: str


@dataclass(frozen=True)
class SealConfig:
    """Where the sealing key and its chain come from: PEM key + chain file, or PKCS#12 + password."""
    key: Path | None
    chain: Path | None
    pkcs12: Path | None
    password: str | None = field(repr=False)  # never printed


@dataclass(frozen=True)
class TrustConfig:
    anchors: tuple[Path, ...]
    crls: tuple[Path, ...]
    customs_certs: tuple[Path, ...]
    crl_refresh_seconds: int
    intermediates: tuple[Path, ...] = ()
    eori_binding: str = "refuse"   # refuse | if-present | report: gateway/security/binding.py


@dataclass(frozen=True)
class Limits:
    send_max_payload_bytes: int
    send_max_message_compressed_bytes: int
    recv_max_message_bytes: int
    recv_max_payload_bytes: int
    recv_max_compression_ratio: int
    max_mime_parts: int
    xml_max_depth: int
    xml_max_envelope_bytes: int

    @classmethod
    def defaults(cls) -> Limits:
        return cls(
            send_max_payload_bytes=100 * 1000 * 1000,           # ICD 4.2.6: 100 MB uncompressed
            send_max_message_compressed_bytes=20 * 1000 * 1000,  # ICD 4.2.6: 20 MB compressed
            recv_max_message_bytes=32 * 1024 * 1024,
            recv_max_payload_bytes=256 * 1024 * 1024,
            recv_max_compression_ratio=1000,
            # IE3R08 carries the ENS and every related notification as parts (ICD 3.1.9, 4.2.6): a part
            # count cap must not refuse it; the message size cap bounds the work per part
            max_mime_parts=1024,
            xml_max_depth=256,
            xml_max_envelope_bytes=4 * 1024 * 1024,
        )


@dataclass(frozen=True)
class GatewayConfig:
    file: Path
    environment: str
    allow_production: bool
    identity: Identity
    seal: SealConfig
    trust: TrustConfig
    limits: Limits
    pmodes_dir: Path
    root: Section  # the whole file, for sections read by their own modules

    @property
    def mpc(self) -> str:
        """The trader's pull MPC (ICD 4.3.3)."""
        return f"urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/{self.identity.party_id}"


def read_identity(sec: Section) -> Identity:
    sec.check_keys({"eori", "party_id", "fqdn"})
    eori = sec.str("eori", pattern=EORI_RE, hint="an EORI is a 2-letter country code and up to 15 characters")
    party_id = sec.str("party_id", eori, pattern=PARTY_ID_RE,
                       hint="the form is [system@]EORI[@MS], system alphanumeric of at most 12 characters, "
                            "MS an ISO 3166 alpha-2 code (ICD table 8)")
    m = PARTY_ID_RE.match(party_id)
    assert m is not None
    if m.group("eori") != eori:
        sec.fail("party_id", f"the EORI in party_id ({m.group('eori')}) differs from identity.eori ({eori})")
    fqdn = sec.str("fqdn", pattern=re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"),
                   hint="a host name, used as the right side of every eb:MessageId")
    return Identity(eori=eori, party_id=party_id, fqdn=fqdn)


def read_seal(sec: Section) -> SealConfig:
    sec.check_keys({"key", "chain", "pkcs12", "password_env", "password_file"})
    key, chain, p12 = sec.path("key", None), sec.path("chain", None), sec.path("pkcs12", None)
    if p12 and (key or chain):
        sec.fail("pkcs12", "give either pkcs12 or key + chain, not both")
    if not p12 and not (key and chain):
        sec.fail("key", "give key and chain (PEM files) or pkcs12")
    return SealConfig(key=key, chain=chain, pkcs12=p12, password=sec.secret("password"))


def read_trust(sec: Section) -> TrustConfig:
    sec.check_keys({"anchors", "crls", "customs_certs", "crl_refresh_seconds", "intermediates", "eori_binding"})
    anchors = sec.paths("anchors")
    if not anchors:
        sec.fail("anchors", "at least one trust anchor is required")
    return TrustConfig(anchors=tuple(anchors), crls=tuple(sec.paths("crls", [])),
                       customs_certs=tuple(sec.paths("customs_certs", [])),
                       crl_refresh_seconds=sec.int("crl_refresh_seconds", 3600, min=10),
                       intermediates=tuple(sec.paths("intermediates", [])),
                       eori_binding=sec.str("eori_binding", "refuse", choices=("refuse", "if-present", "report")))


def read_limits(sec: Section) -> Limits:
    d = Limits.defaults()
    names = set(d.__dataclass_fields__)
    sec.check_keys(names)
    return Limits(**{n: sec.int(n, getattr(d, n), min=1) for n in names})


def load_gateway_config(path: Path | str) -> GatewayConfig:
    root = load_toml(path)
    root.check_keys(GATEWAY_TOP_LEVEL, GATEWAY_HINTS)
    environment = root.str("environment", choices=ENVIRONMENTS)
    pm = root.section("pmodes")
    pm.check_keys({"dir"})
    return GatewayConfig(
        file=root.file,
        environment=environment,
        allow_production=root.bool("allow_production", False),
        identity=read_identity(root.section("identity", required=True)),
        seal=read_seal(root.section("seal", required=True)),
        trust=read_trust(root.section("trust", required=True)),
        limits=read_limits(root.section("limits")),
        pmodes_dir=pm.path("dir", "../pmodes"),
        root=root,
    )
