"""Files the gateway ships besides its code: configuration templates, P-Modes, sample ENS, the test PKI generator.

Why two places: in a repository checkout they live where people edit them (``conf/``, ``pmodes/``,
``tests/fixtures/ics2/``, ``certs/make_pki.py``); a built wheel or sdist carries copies under
``gateway/_data/`` (copied at build time by ``setup.py``, one source of truth). ``path(name)`` returns the
copy in the installed package if there is one, else the repository's. The XSD schemas and the ICS2
catalogue are ordinary package data of ``gateway.ics2`` and need nothing here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent / "_data"
REPO = Path(__file__).resolve().parent.parent

# name in the package -> where it lives in a repository checkout
SOURCES = {
    "conf": "conf",
    "pmodes": "pmodes",
    "samples": "tests/fixtures/ics2",
    "make_pki.py": "certs/make_pki.py",
    "systemd": "packaging/systemd",
}
# sample files copied into the package: the ENS the demo files (valid ones and the locally invalid ones)
SAMPLE_GLOB = "ens-*.xml"


class ResourceMissing(FileNotFoundError):
    """A shipped file is missing: neither in the installed package nor in a repository checkout."""


def path(name: str) -> Path:
    """Where the shipped resource ``name`` (a key of ``SOURCES``) is on this machine."""
    if name not in SOURCES:
        raise KeyError(f"unknown resource {name!r} (known: {', '.join(SOURCES)})")
    for candidate in (PACKAGE_DATA / name, REPO / SOURCES[name]):
        if candidate.exists():
            return candidate
    raise ResourceMissing(f"{name} is not shipped with this installation (looked in {PACKAGE_DATA / name} and "
                          f"{REPO / SOURCES[name]}); reinstall ics2gw from a wheel built with `python -m build`")
