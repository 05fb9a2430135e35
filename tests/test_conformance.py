"""The conformance catalogue against the bundled simulator (in-process, free loopback ports): every scenario passes,
the JUnit XML parses with the right counts, production configurations are refused, and negative scenarios are
skipped at an endpoint that is not the simulator and has not enabled them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.conformance import confgen
from gateway.conformance.junit import write_junit
from gateway.conformance.runner import RunnerRefused, print_report, run_conformance
from gateway.conformance.scenarios import CATALOGUE
from gateway.simulator.app import Simulator
from gateway.simulator.config import load_simulator_config

REPO = Path(__file__).resolve().parent.parent


def _confs(tmp: Path) -> tuple[Path, Path, int]:
    sim_port, admin_port, inbound = confgen.free_port(dual=True), confgen.free_port(), confgen.free_port(dual=True)
    sim_conf = confgen.write(tmp / "simulator.toml", confgen.simulator_doc(
        REPO / "conf" / "simulator.toml", tmp, port=sim_port, admin_port=admin_port,
        push_url=f"https://127.0.0.1:{inbound}/ics2/inbound"))
    gw_conf = confgen.write(tmp / "gateway.toml", confgen.gateway_doc(
        REPO / "conf" / "gateway.toml", tmp, sti_url=f"https://127.0.0.1:{sim_port}/ics2/sti", inbound_port=inbound))
    return sim_conf, gw_conf, admin_port


async def test_catalogue_passes_against_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim_conf, gw_conf, admin_port = _confs(tmp_path)
    sim = Simulator(load_simulator_config(sim_conf))
    await sim.start()
    try:
        report = await run_conformance(gw_conf, sim_admin=f"http://127.0.0.1:{admin_port}/admin",
                                       workdir=tmp_path / "run")
    finally:
        await sim.stop()
    import sys
    print_report(report, sys.stdout)
    failed = [(r.id, r.status, r.message, r.evidence) for r in report.results if not r.passed]
    assert not failed, failed
    assert report.simulator and report.negative_enabled
    assert [r.id for r in report.results] == [s.id for s in CATALOGUE]
    # the attachment scenario really carries its PDF, and the simulator really checks the link
    att = next(r for r in report.results if r.id == "filing-air-attachment")
    assert [a["id"] for a in att.evidence["attachments"]] == ["binaryattachment1"], att.evidence
    assert att.evidence["missing_attachment_answer"] == "IE3N99", att.evidence
    junit = write_junit(report, tmp_path / "junit.xml")
    suite = ET.parse(junit).getroot()
    if suite.tag == "testsuites":
        suite = suite.find("testsuite")
    assert suite is not None
    assert int(suite.get("tests")) == len(CATALOGUE)
    assert int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0 and int(suite.get("skipped")) == 0
    assert len(suite.findall("testcase")) == len(CATALOGUE)


async def test_negative_scenarios_only_when_enabled(tmp_path: Path) -> None:
    """Not recognised as the simulator: the negative scenarios are skipped unless the endpoint enables them."""
    sim_conf, gw_conf, _ = _confs(tmp_path)
    doc = confgen.load(gw_conf)
    doc["endpoints"][0]["negative_tests_enabled"] = True
    enabled = confgen.write(tmp_path / "enabled.toml", doc)
    wanted = ["ping", "leaf-only", "unauthorised-sender", "damaged-gzip", "undefined-action"]
    async with Simulator(load_simulator_config(sim_conf)):
        off = await run_conformance(gw_conf, scenarios=wanted, probe_simulator=False, workdir=tmp_path / "off")
        on = await run_conformance(enabled, scenarios=wanted, probe_simulator=False, workdir=tmp_path / "on")
    assert not off.simulator and not off.negative_enabled
    assert {r.id: r.status for r in off.results} == {"ping": "passed", "leaf-only": "skipped",
                                                     "unauthorised-sender": "skipped", "damaged-gzip": "skipped",
                                                     "undefined-action": "passed"}
    assert "negative_tests_enabled" in next(r for r in off.results if r.id == "leaf-only").message
    assert on.negative_enabled and all(r.passed for r in on.results), [(r.id, r.message) for r in on.results]
    counts = ET.parse(write_junit(off, tmp_path / "off.xml")).getroot().find("testsuite")
    assert counts is not None and counts.get("skipped") == "3" and counts.get("tests") == "5"


async def test_production_configuration_refused(tmp_path: Path) -> None:
    _, gw_conf, _ = _confs(tmp_path)
    doc = confgen.load(gw_conf)
    doc["environment"] = "production"
    doc["tls"]["environment"] = "production"
    for e in doc["endpoints"]:
        e["environment"] = "production"
    prod = confgen.write(tmp_path / "prod.toml", doc)
    with pytest.raises(RunnerRefused, match="production"):
        await run_conformance(prod, scenarios=["ping"], workdir=tmp_path / "prod")


async def test_unknown_scenario_refused(tmp_path: Path) -> None:
    _, gw_conf, _ = _confs(tmp_path)
    with pytest.raises(RunnerRefused, match="unknown scenario"):
        await run_conformance(gw_conf, scenarios=["no-such-thing"], probe_simulator=False, workdir=tmp_path / "x")


def test_cli_lists_the_catalogue() -> None:
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "gateway", "conformance", "--list"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == [s.id for s in CATALOGUE]
