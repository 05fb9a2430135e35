"""Is this phase-1 message valid against the official (HMRC) XSD? Schema loading and XSD findings.

The bundled schemas under ``schemas/`` are byte copies from ``shared/schemas/hmrc-ssgb`` (see that folder's
``SOURCES.json``): ``ens/`` = HMRC's ENS validation set v11-2 (CC315A, CC313A, their ``-New`` optional-fields
variants, CC323A), ``outcome/`` = the published v10-0 outcome and notification schemas (CC328A, CC316A, CC304A,
CC305A, CC351A). Each schema is compiled once per process (module cache). Imports resolve only against the
bundled directory: the parser has ``no_network`` and a resolver that refuses anything else.

Schema error numbers follow HMRC's store (``SchemaErrorCodeMapper``, Xerces keys -> 4000-4086, 4999 catch-all);
libxml2's error types are mapped to the Xerces key they correspond to. Like Xerces, a simple-type failure
(pattern, length, enumeration ...) is reported twice: the facet error and ``cvc-type.3.1.3`` (4065).
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from gateway.ics2.findings import INCORRECT, MISSING, NOT_SUPPORTED, TOO_LONG, TOO_SHORT, Finding
from gateway.ics2.xmlutil import pointer

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

# (message root, variant) -> schema file. Variant "plain" = HMRC's conf/xsds names, "new" = optional-fields set.
SCHEMA_FILES: dict[tuple[str, str], str] = {
    ("CC315A", "plain"): "ens/CC315A-v11-2.xsd",
    ("CC315A", "new"): "ens/CC315A-v11-2-New.xsd",
    ("CC313A", "plain"): "ens/CC313A-v11-2.xsd",
    ("CC313A", "new"): "ens/CC313A-v11-2-New.xsd",
    ("CC323A", "plain"): "ens/CC323A-v11-2.xsd",
    ("CC328A", "plain"): "outcome/CC328A-v10-0.xsd",
    ("CC316A", "plain"): "outcome/CC316A-v10-0.xsd",
    ("CC304A", "plain"): "outcome/CC304A-v10-0.xsd",
    ("CC305A", "plain"): "outcome/CC305A-v10-0.xsd",
    ("CC351A", "plain"): "outcome/CC351A-v10-0.xsd",
}

# libxml2 error type -> (Xerces key, HMRC number, functional error type)
_FACETS: dict[str, tuple[str, int, int]] = {
    "SCHEMAV_CVC_PATTERN_VALID": ("cvc-pattern-valid", 4085, INCORRECT),
    "SCHEMAV_CVC_ENUMERATION_VALID": ("cvc-enumeration-valid", 4080, INCORRECT),
    "SCHEMAV_CVC_MAXLENGTH_VALID": ("cvc-maxLength-valid", 4083, TOO_LONG),
    "SCHEMAV_CVC_MINLENGTH_VALID": ("cvc-minLength-valid", 4082, TOO_SHORT),
    "SCHEMAV_CVC_LENGTH_VALID": ("cvc-length-valid", 4082, INCORRECT),
    "SCHEMAV_CVC_TOTALDIGITS_VALID": ("cvc-totalDigits-valid", 4086, INCORRECT),
    "SCHEMAV_CVC_FRACTIONDIGITS_VALID": ("cvc-fractionDigits-valid", 4081, INCORRECT),
    "SCHEMAV_CVC_MININCLUSIVE_VALID": ("cvc-minInclusive-valid", 4084, INCORRECT),
    "SCHEMAV_CVC_MINEXCLUSIVE_VALID": ("cvc-minExclusive-valid", 4084, INCORRECT),
    "SCHEMAV_CVC_MAXINCLUSIVE_VALID": ("cvc-maxInclusive-valid", 4083, INCORRECT),
    "SCHEMAV_CVC_MAXEXCLUSIVE_VALID": ("cvc-maxExclusive-valid", 4083, INCORRECT),
    "SCHEMAV_CVC_DATATYPE_VALID_1_2_1": ("cvc-datatype-valid.1.2.1", 4020, INCORRECT),
    "SCHEMAV_CVC_DATATYPE_VALID_1_2_2": ("cvc-datatype-valid.1.2.2", 4020, INCORRECT),
    "SCHEMAV_CVC_DATATYPE_VALID_1_2_3": ("cvc-datatype-valid.1.2.3", 4020, INCORRECT),
}
_OTHER: dict[str, tuple[str, int, int]] = {
    "SCHEMAV_CVC_ELT_1": ("cvc-elt.1", 4057, NOT_SUPPORTED),
    "SCHEMAV_CVC_COMPLEX_TYPE_4": ("cvc-complex-type.4", 4001, MISSING),
    "SCHEMAV_CVC_COMPLEX_TYPE_3_2_1": ("cvc-complex-type.3.2.1", 4000, NOT_SUPPORTED),
    "SCHEMAV_CVC_COMPLEX_TYPE_3_2_2": ("cvc-complex-type.3.2.2", 4000, NOT_SUPPORTED),
    "SCHEMAV_CVC_ATTRIBUTE_3": ("cvc-attribute.3", 4000, INCORRECT),
    "SCHEMAV_CVC_COMPLEX_TYPE_2_1": ("cvc-complex-type.2.1", 4051, NOT_SUPPORTED),
    "SCHEMAV_CVC_COMPLEX_TYPE_2_3": ("cvc-complex-type.2.3", 4053, NOT_SUPPORTED),
    "SCHEMAV_CVC_ELT_3_1": ("cvc-elt.3.1", 4003, NOT_SUPPORTED),
    "SCHEMAV_CVC_ELT_3_2_1": ("cvc-elt.3.2.1", 4051, NOT_SUPPORTED),
    "SCHEMAV_CVC_TYPE_3_1_1": ("cvc-type.3.1.1", 4068, NOT_SUPPORTED),
}

_cache: dict[str, etree.XMLSchema] = {}
_lock = threading.Lock()


class _LocalOnly(etree.Resolver):
    """Refuses every external reference that is not a file inside the bundled schema directory."""

    def resolve(self, system_url, public_id, context):  # type: ignore[override]
        path = Path(system_url.removeprefix("file://")).resolve() if system_url else None
        if path is not None and SCHEMA_DIR in path.parents and path.is_file():
            return self.resolve_filename(str(path), context)
        raise etree.XMLSchemaParseError(f"refusing to load external schema resource {system_url!r}")


def _schema_parser() -> etree.XMLParser:
    p = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    p.resolvers.add(_LocalOnly())
    return p


def schema(relpath: str) -> etree.XMLSchema:
    """The compiled schema for ``relpath`` under ``schemas/`` (compiled once, then cached)."""
    s = _cache.get(relpath)
    if s is None:
        with _lock:
            s = _cache.get(relpath)
            if s is None:
                doc = etree.parse(str(SCHEMA_DIR / relpath), parser=_schema_parser())
                s = etree.XMLSchema(doc)
                _cache[relpath] = s
    return s


def schema_for(root_name: str, variant: str = "plain") -> etree.XMLSchema | None:
    """The schema for a phase-1 message root, or None when no XSD is bundled (CC324A, CC325A)."""
    rel = SCHEMA_FILES.get((root_name, variant)) or SCHEMA_FILES.get((root_name, "plain"))
    return schema(rel) if rel else None


def _element_for_line(doc_root: etree._Element, line: int, name: str | None) -> etree._Element | None:
    best = None
    for el in doc_root.iter():
        if not isinstance(el.tag, str):
            continue
        if el.sourceline == line and (name is None or el.tag.rsplit("}", 1)[-1] == name):
            return el
        if el.sourceline is not None and el.sourceline <= line:
            best = el
    return best


def _element_name(message: str) -> str | None:
    if message.startswith("Element '"):
        raw = message[len("Element '"):].split("'", 1)[0]
        return raw.rsplit("}", 1)[-1].split(":")[-1]
    return None


def xsd_findings(root: etree._Element, xsd: etree.XMLSchema, *, hmrc_codes: bool) -> list[Finding]:
    """Validates ``root`` and turns every schema error into Findings (rule ``XSD``)."""
    doc = etree.ElementTree(root)
    if xsd.validate(doc):
        return []
    out: list[Finding] = []
    for err in xsd.error_log:
        msg = err.message
        name = _element_name(msg)
        el = _element_for_line(root, err.line, name)
        ptr = pointer(el) if el is not None else (err.path or "")
        value = el.text.strip() if (el is not None and el.text and el.text.strip()) else None
        tn = err.type_name
        if tn in _FACETS:
            key, number, etype = _FACETS[tn]
            out.append(Finding(str(number) if hmrc_codes else str(etype), "XSD", ptr, f"{key}: {msg}", value, etype))
            out.append(Finding("4065" if hmrc_codes else str(etype), "XSD", ptr,
                               f"cvc-type.3.1.3: invalid value of element '{name}'", value, etype))
            continue
        if tn == "SCHEMAV_ELEMENT_CONTENT":
            if "Missing child element" in msg:
                key, number, etype = "cvc-complex-type.2.4.b", 4066, MISSING
            elif "Expected is" in msg:
                key, number, etype = "cvc-complex-type.2.4.a", 4065, NOT_SUPPORTED
            else:
                key, number, etype = "cvc-complex-type.2.4.d", 4051, NOT_SUPPORTED
            value = None
        else:
            key, number, etype = _OTHER.get(tn, ("unmapped", 4999, INCORRECT))
        out.append(Finding(str(number) if hmrc_codes else str(etype), "XSD", ptr, f"{key}: {msg}", value, etype))
    return out
