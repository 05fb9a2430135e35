"""What is a validation result? The Finding / ValidationReport model shared by every validator."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Phase-1 FUNCTIONAL ERROR.Error type (IE316/IE305 ErrTypER11, R98), used as the finding code outside HMRC's
# numbering: 12 incorrect value, 13 missing, 15 not supported in this position, 26 duplicate, 35 too many
# repetitions, 39 too long, 40 too short.
INCORRECT, MISSING, NOT_SUPPORTED, DUPLICATE, TOO_MANY, TOO_LONG, TOO_SHORT = 12, 13, 15, 26, 35, 39, 40


@dataclass(frozen=True)
class Finding:
    """One failed check, reported like a functional error.

    ``code``: HMRC error number for the ``uk-ssgb`` profile (4xxx schema, 8xxx business), otherwise the
    functional error type above, as a string. ``rule``: the condition/rule id (``C17``, ``R105``, ``XSD``,
    ``ICS2-LRN`` ...). ``pointer``: indexed XPath of local names. ``text``: the reason. ``value``: the original
    value when there is one. ``error_type``: the functional error type.
    """

    code: str
    rule: str
    pointer: str
    text: str
    value: str | None = None
    error_type: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None or k in ("code", "rule", "pointer", "text")}


@dataclass
class ValidationReport:
    """The verdict on one payload."""

    message: str | None
    valid: bool
    errors: list[Finding] = field(default_factory=list)
    profile: str | None = None
    warnings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "valid": self.valid, "profile": self.profile,
                "errors": [e.as_dict() for e in self.errors]}
