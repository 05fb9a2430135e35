"""Build hook: copy the shipped resources into the package (gateway/_data) so a wheel works outside the repo.

Everything else is in pyproject.toml. Why a copy at build time: the repository keeps one editable copy of each
file where people expect it (conf/, pmodes/, tests/fixtures/ics2/, certs/make_pki.py, packaging/systemd/);
gateway.resources finds either that or the packaged copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# the same map as gateway.resources.SOURCES (this file must not import the package it builds)
SOURCES = {"conf": "conf", "pmodes": "pmodes", "samples": "tests/fixtures/ics2", "make_pki.py": "certs/make_pki.py",
           "systemd": "packaging/systemd"}


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return   # an editable install reads the repository's files directly
        target = Path(self.build_lib) / "gateway" / "_data"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name, rel in SOURCES.items():
            src = HERE / rel
            if not src.exists():
                raise SystemExit(f"setup.py: {src} is missing; cannot build a package that works outside the repo")
            if src.is_file():
                shutil.copy2(src, target / name)
            elif name == "samples":
                (target / name).mkdir()
                for f in sorted(src.glob("ens-*.xml")):
                    shutil.copy2(f, target / name / f.name)
                # the files the samples declare as binaryFile attachments travel next to them
                for f in sorted((src.parent / "attachments").glob("*")):
                    if f.is_file():
                        shutil.copy2(f, target / name / f.name)
            else:
                shutil.copytree(src, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "out"))


setup(cmdclass={"build_py": BuildWithData})
