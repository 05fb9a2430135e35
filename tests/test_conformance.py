"""The conformance catalogue against the bundled simulator (in-process, free loopback ports): every scenario passes,
the JUnit XML parses with the right counts, production configurations are refused, and negative scenarios are
skipped at an endpoint that is not the simulator and has not enabled them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.conformance import confgen
from gateway.conformance.junit import write_junit
from gateway.conformance.runner import RunnerCannotRun, RunnerRefused, print_report, run_conformance
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
    wanted = ["ping", "leaf-only", "unauthorised-sender", "damaged-gzip", "undefined-action", "ti-ping-push"]
    async with Simulator(load_simulator_config(sim_conf)):
        off = await run_conformance(gw_conf, scenarios=wanted, probe_simulator=False, workdir=tmp_path / "off")
        on = await run_conformance(enabled, scenarios=wanted, probe_simulator=False, workdir=tmp_path / "on")
    assert not off.simulator and not off.negative_enabled
    assert {r.id: r.status for r in off.results} == {"ping": "passed", "leaf-only": "skipped",
                                                     "unauthorised-sender": "skipped", "damaged-gzip": "skipped",
                                                     "undefined-action": "passed", "ti-ping-push": "skipped"}
    assert "negative_tests_enabled" in next(r for r in off.results if r.id == "leaf-only").message
    # customs-initiated cases need the simulator (at a real TI the test officer triggers them): skipped, not failed
    assert "test officer" in next(r for r in off.results if r.id == "ti-ping-push").message
    assert on.negative_enabled and all(r.status in ("passed", "skipped") for r in on.results), \
        [(r.id, r.message) for r in on.results]
    counts = ET.parse(write_junit(off, tmp_path / "off.xml")).getroot().find("testsuite")
    assert counts is not None and counts.get("skipped") == "4" and counts.get("tests") == "6"


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


# ------------------------------------------------------------------------------------------------ fail fast
async def test_unreachable_ti_stops_the_run_naming_the_cause(tmp_path: Path) -> None:
    """Nothing listens on the TI port: one clear refusal before any scenario (not one connection error each)."""
    _, gw_conf, _ = _confs(tmp_path)           # no simulator started: the port is closed
    with pytest.raises(RunnerCannotRun, match=r"TI endpoint .* is not usable: .*connect"):
        await run_conformance(gw_conf, probe_simulator=False, workdir=tmp_path / "run")


async def test_silent_ti_stops_the_run_within_the_preflight_timeout(tmp_path: Path) -> None:
    """A TI that accepts TCP and then says nothing (a black hole behind a load balancer) is named at once, not
    waited for scenario after scenario."""
    import asyncio
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)                     # never answers, never closes

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    doc = confgen.gateway_doc(REPO / "conf" / "gateway.toml", tmp_path, sti_url=f"https://127.0.0.1:{port}/ics2/sti",
                              inbound_port=confgen.free_port())
    conf = confgen.write(tmp_path / "gateway.toml", doc)
    try:
        with pytest.raises(RunnerCannotRun, match=r"did not answer a ping within 1 s"):
            await run_conformance(conf, probe_simulator=False, workdir=tmp_path / "run", preflight_timeout=1.0)
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_inbound_address_held_by_a_daemon_stops_the_run(tmp_path: Path) -> None:
    """The inbound listen address is where customs pushes: if something (a running daemon) holds it, the run is
    refused before it sends anything, and the message says what to do."""
    import socket
    sim_conf, gw_conf, _ = _confs(tmp_path)
    port = int(confgen.load(gw_conf)["inbound"]["listen"][0].rsplit(":", 1)[1])
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    try:
        async with Simulator(load_simulator_config(sim_conf)) as sim:
            with pytest.raises(RunnerCannotRun, match=rf"inbound address 127.0.0.1:{port} .* in use.*daemon"):
                await run_conformance(gw_conf, scenarios=["filing-express"], probe_simulator=False,
                                      workdir=tmp_path / "run")
            assert sim.registry.report() == []  # nothing was filed
    finally:
        holder.close()


def test_cli_exit_code_when_the_ti_is_unreachable(tmp_path: Path) -> None:
    import subprocess
    import sys
    _, gw_conf, _ = _confs(tmp_path)
    r = subprocess.run([sys.executable, "-m", "gateway", "conformance", "--conf", str(gw_conf), "--workdir",
                        str(tmp_path / "run"), "--scenarios", "ping"], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert "cannot run" in r.stderr and "not usable" in r.stderr


# ------------------------------------------------------------------------------------------------ pulled = kept
async def test_everything_pulled_is_journaled_never_dropped(tmp_path: Path, pki: Path) -> None:
    """Messages waiting on the pull MPC that belong to no scenario (a customs ping, the IE3R01 of an earlier
    filing) are journaled by the runner's gateway before their receipts leave. The old runner acknowledged them
    and dropped them."""
    import sqlite3

    import aiohttp

    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.transport.config import KeyMaterial
    from gateway.transport.tls import build_client_context
    sim_conf, gw_conf, admin_port = _confs(tmp_path)
    engine = Engine.from_config(load_gateway_config(gw_conf))
    pull_engine = Engine(engine.identity, engine.trust, party_id="system1@NL123456789", fqdn="ap.trader.test")
    earlier = pull_engine.user_message(action="IE3F32", to_party=Engine.customs_party(),
                                       payload=(REPO / "tests" / "fixtures" / "ics2" / "ens-IE3F32-express.xml")
                                       .read_bytes())
    tls = build_client_context(ca_files=[pki / "customs-root.pem"],
                               client=KeyMaterial(cert=pki / "trader-tls-client.pem",
                                                  key=pki / "trader-tls-client.key"))
    async with Simulator(load_simulator_config(sim_conf)) as sim:
        ping = sim.send_ping("system1@NL123456789")["message_id"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as s:
            async with s.post(sim.sti_url, data=earlier.body, headers={"Content-Type": earlier.content_type}) as r:
                assert r.status == 200
        report = await run_conformance(gw_conf, scenarios=["pull-mode"], workdir=tmp_path / "run",
                                       sim_admin=f"http://127.0.0.1:{admin_port}/admin")
        assert [r.status for r in report.results] == ["passed"], report.results[0].message
        rows = {o["message_id"]: o for o in sim.registry.outbound_list()}
    [r01] = [mid for mid, o in rows.items() if o["action"] == "IE3R01" and o["answers"] == earlier.message_id]
    assert rows[ping]["state"] == "acknowledged" and rows[r01]["state"] == "acknowledged"
    db = sqlite3.connect(tmp_path / "run" / "var" / "journal.sqlite3")
    journaled = {row[0] for row in db.execute("SELECT message_id FROM messages WHERE direction = 'in'")}
    orphans = {row[0] for row in db.execute("SELECT m.message_id FROM orphans o "
                                            "JOIN messages m ON m.id = o.message_row")}
    db.close()
    assert r01 in journaled and r01 in orphans        # kept, and visible as a message that matches no filing


# fixed in gateway/pipeline/inbound.py: a pulled IE3R08 without RefToMessageId finds its consultation by MRN
async def test_consultation_answer_pulled_without_ref_reaches_its_filing(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.conformance import campaign, scenarios
    from gateway.conformance.context import Scenario
    monkeypatch.setattr(scenarios, "CATALOGUE", (Scenario("consultation-pulled", "IE3R08 pulled without "
                                                          "RefToMessageId", "pull", campaign.consultation_pulled,
                                                          daemon=True),))
    sim_conf, gw_conf, admin_port = _confs(tmp_path)
    async with Simulator(load_simulator_config(sim_conf)):
        report = await run_conformance(gw_conf, sim_admin=f"http://127.0.0.1:{admin_port}/admin",
                                       workdir=tmp_path / "run", timeout=4)
    assert [r.status for r in report.results] == ["passed"], report.results[0].message
