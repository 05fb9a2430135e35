"""Mutation testing by module group (`make mutation`; docs/mutation.md records the scores).

mutmut 3 reads one ``[tool.mutmut]`` table from ``pyproject.toml`` in its working directory, with one test
selection for every mutated file. Running every module against the union of their suites makes the stats run and
each survivor's re-run slow, so each group below gets its own working directory (``var/mutation/<group>``) with
symlinks to the sources and tests and a ``pyproject.toml`` whose ``[tool.mutmut]`` names that group's modules and
the suites that exercise them. Everything else in ``pyproject.toml`` (pytest options) is kept.

    python scripts/mutation.py [GROUP ...]          # run (default: every group, in priority order)
    python scripts/mutation.py --results [GROUP ...]  # survivors and counts of the last run
    python scripts/mutation.py --list
    python scripts/mutation.py --fresh GROUP ...     # delete the group's cached mutants and stats first

``MUTMUT_CHILDREN`` (default 1) sets mutmut's parallelism; mutmut runs under ``nice -n 19``
(``MUTMUT_NICE`` sets another niceness). A group's mutants
are cached in its directory: a second run only re-checks what changed (delete ``var/mutation/<group>`` to start
afresh, or pass ``--fresh``). Extra arguments after ``--`` are passed to ``mutmut run`` (e.g. mutant names or globs).

Interrupting a group's first run is not harmless with mutmut 3.8: its test-to-function map
(``mutants/mutmut-stats.json``) may be saved incomplete, and the next run then maps only tests it has not seen,
so mutants "survive" against a handful of tests. Start such a group again with ``--fresh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "var" / "mutation"
MUTMUT = REPO / ".venv" / "bin" / "mutmut"

# group -> (modules to mutate, test files that exercise them); in the order the issue prioritises them
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "verify": (["gateway/security/verify.py"],
               ["tests/test_vectors.py", "tests/test_signed_reading.py", "tests/test_engine.py",
                "tests/test_certpath_vectors.py", "tests/test_pathvalidate.py"]),
    "pathvalidate": (["gateway/security/pathvalidate.py"],
                     ["tests/test_pathvalidate.py", "tests/test_certpath_vectors.py"]),
    "binding": (["gateway/security/binding.py"],
                ["tests/test_pathvalidate.py", "tests/test_engine.py", "tests/test_certpath_vectors.py"]),
    "parse": (["gateway/ebms/parse.py"],
              ["tests/test_signed_reading.py", "tests/test_vectors.py", "tests/test_engine.py"]),
    "mime": (["gateway/ebms/mime.py"],
             ["tests/test_mime.py", "tests/test_vectors.py", "tests/test_stream.py"]),
    "correlate": (["gateway/pipeline/correlate.py"],
                  ["tests/test_pipeline_units.py", "tests/test_inbound_rules.py"]),
    # the daemon's sink runs in-process only in these (test_pipeline_inbox / test_reliability drive the transport's
    # InboundProcessor or the daemon as a subprocess, which mutmut cannot see)
    "inbound": (["gateway/pipeline/inbound.py"],
                ["tests/test_pipeline_units.py", "tests/test_inbound_rules.py", "tests/test_pipeline_boundaries.py",
                 "tests/test_inbound_processor.py"]),
    "security-rest": (["gateway/security/trust.py", "gateway/security/keys.py", "gateway/security/seal.py",
                       "gateway/security/pkipath.py", "gateway/security/rsa_backend.py"],
                      ["tests/test_trust_store.py", "tests/test_seal_rules.py", "tests/test_pathvalidate.py",
                       "tests/test_certpath_vectors.py", "tests/test_engine.py", "tests/test_signed_reading.py"]),
    "journal": (["gateway/journal/core.py", "gateway/journal/sqlite.py"],
                ["tests/test_journal.py", "tests/test_journal_states.py", "tests/test_journal_writer.py"]),
    # the backend-neutral journal alone, on SQLite only (fast: the PostgreSQL parametrisations need a server and
    # run the same core.py code); new tests in test_journal.py still run on both backends in the full suite
    "journal-core": (["gateway/journal/core.py"],
                     ["tests/test_journal.py", "tests/test_journal_reliab.py", "tests/test_journal_states.py",
                      "tests/test_journal_writer.py"]),
    # the SQLite backend alone (its mutants can only be killed by the SQLite parametrisations)
    "journal-sqlite": (["gateway/journal/sqlite.py"],
                       ["tests/test_journal.py", "tests/test_journal_writer.py", "tests/test_journal_reliab.py"]),
    # the PostgreSQL backend: its suites run against one private server that this script starts for the whole group
    # (SHARED_PG); one mutant at a time, since two of the selected tests restart or SIGKILL that server
    "journal-pg": (["gateway/journal/postgres.py", "gateway/journal/committer.py", "gateway/journal/schema_pg.py",
                    "gateway/journal/pgconn.py"],
                   ["tests/test_journal.py", "tests/test_journal_pg.py", "tests/test_journal_schema_parity.py",
                    "tests/test_journal_writer.py", "tests/test_sender_leases.py", "tests/test_pipeline_units.py",
                    "tests/test_pipeline_robust.py", "tests/test_journal_config.py"]),
    # the rest of the journal package: configuration, backend choice, operators' queries, the SQLite schema, records,
    # the state machine and the time format (both backends, on the shared server)
    "journal-rest": (["gateway/journal/config.py", "gateway/journal/factory.py", "gateway/journal/queries.py",
                      "gateway/journal/schema.py", "gateway/journal/records.py", "gateway/journal/states.py",
                      "gateway/journal/timeutil.py", "gateway/journal/errors.py"],
                     ["tests/test_journal_config.py", "tests/test_journal.py", "tests/test_journal_states.py",
                      "tests/test_journal_schema_parity.py", "tests/test_ops_units.py", "tests/test_journal_reliab.py",
                      "tests/test_journal_pg.py", "tests/test_journal_queries.py"]),
    # the private server of the tests themselves (each test of test_pglocal starts its own: no shared server)
    "pglocal": (["gateway/journal/pglocal.py"], ["tests/test_pglocal.py"]),
}

# groups whose suites use one PostgreSQL server started here for the group (tests/pg_support.py SHARED_ENV), and the
# most mutants each may run at once (None: MUTMUT_CHILDREN)
SHARED_PG: dict[str, int | None] = {"journal-pg": 1, "journal-rest": None}

# extra pytest arguments of a group (for its stats run and every mutant)
# (journal-core: test_sigkill_leaves_no_torn_state needs its child to journal 400 changes within 15 s, which a
# niced run on a loaded machine does not; its failure in the stats run aborts the whole run)
PYTEST_ARGS: dict[str, list[str]] = {"journal-core": ["-k", "not postgresql and not sigkill"],
                                     "journal-sqlite": ["-k", "not postgresql and not sigkill"],
                                     "journal-pg": ["-k", "not sigkill"],
                                     # (these two restart / SIGKILL the server under mutants run two at a time)
                                     "journal-rest": ["-k", "not sigkill and not database_restart and not "
                                                            "killed_database"]}

LINKS = ["gateway", "tests", "certs", "conf", "pmodes", "docs"]
# copied into mutmut's mutants/ tree: what the tests read besides the package (test_journal_states reads docs/states.md)
ALSO_COPY: dict[str, list[str]] = {g: ["docs"] for g in ("journal", "journal-core", "journal-sqlite", "journal-pg",
                                                          "journal-rest")}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(group: str) -> Path:
    modules, tests = GROUPS[group]
    d = WORK / group
    d.mkdir(parents=True, exist_ok=True)
    for name in LINKS:
        link = d / name
        if not link.is_symlink() and (REPO / name).exists():
            link.symlink_to(REPO / name)
    base = (REPO / "pyproject.toml").read_text("utf-8")
    base = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", base)
    cfg = (f"\n[tool.mutmut]\nsource_paths = [\"gateway\"]\nonly_mutate = {_toml_list(modules)}\n"
           f"also_copy = {_toml_list(['certs', 'conf', 'pmodes', *ALSO_COPY.get(group, [])])}\n"
           f"pytest_add_cli_args = "
           f"{_toml_list(['-p', 'no:cacheprovider', '-q', '-x', *PYTEST_ARGS.get(group, [])])}\n"
           f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n")
    target = d / "pyproject.toml"
    text = base.rstrip() + "\n" + cfg
    if not target.exists() or target.read_text("utf-8") != text:
        target.write_text(text, "utf-8")
    return d


@contextlib.contextmanager
def shared_postgres(group: str, d: Path) -> Iterator[dict[str, str]]:
    """The environment of a group's mutmut run: for a SHARED_PG group, one private PostgreSQL server (started here,
    stopped at the end) that every forked test run attaches to instead of starting its own (a few seconds each)."""
    env = dict(os.environ)
    if group not in SHARED_PG:
        yield env
        return
    sys.path.insert(0, str(REPO))
    from gateway.journal.pglocal import LocalPostgres
    from tests.pg_support import ROLE, SHARED_ENV

    with LocalPostgres() as server:
        role_password = secrets.token_urlsafe(12)
        server.create_role(ROLE, role_password)
        info = d / "shared-postgres.json"
        fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({**server.describe(), "role_password": role_password}, f)
        env[SHARED_ENV] = str(info)
        try:
            yield env
        finally:
            info.unlink(missing_ok=True)


def results(group: str) -> dict[str, int]:
    d = WORK / group
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=d, capture_output=True, text=True, check=False).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if ":" in line:
            status = line.rsplit(":", 1)[1].strip()
            counts[status] = counts.get(status, 0) + 1
    return counts


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    if "--list" in argv:
        for g, (mods, tests) in GROUPS.items():
            print(f"{g:14} {' '.join(mods)}\n{'':14} tests: {' '.join(tests)}")
        return 0
    show = "--results" in argv
    fresh = "--fresh" in argv
    groups = [a for a in argv if not a.startswith("--")] or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; --list shows them", file=sys.stderr)
        return 2
    rc = 0
    for g in groups:
        if g.startswith("journal") and not all((REPO / m).exists() for m in GROUPS[g][0]):
            print(f"== {g}: skipped ({' '.join(GROUPS[g][0])} not all present)")
            continue
        if fresh and not show:
            import shutil
            shutil.rmtree(WORK / g, ignore_errors=True)
        d = prepare(g)
        if not show:
            children = os.environ.get("MUTMUT_CHILDREN", "1")
            if SHARED_PG.get(g):
                children = str(min(int(children), SHARED_PG[g] or 1))
            print(f"== {g}: mutmut run in {d.relative_to(REPO)} ({children} at a time)", flush=True)
            with shared_postgres(g, d) as env:
                r = subprocess.run(["nice", "-n", os.environ.get("MUTMUT_NICE", "19"), str(MUTMUT), "run",
                                    "--max-children", children, *extra], cwd=d, env=env, check=False)
            rc = rc or r.returncode
        counts = results(g)
        total = sum(counts.values())
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        score = f"{100 * killed / total:.0f} %" if total else "-"
        print(f"== {g}: {total} mutants, {counts} -> score {score} (killed + timeout / all)")
        if show:
            out = subprocess.run([str(MUTMUT), "results"], cwd=d, capture_output=True, text=True, check=False).stdout
            print(out.rstrip())
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
