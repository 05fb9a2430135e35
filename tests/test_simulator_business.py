"""The simulator's decision logic without a network: lifecycle of a filing through ``business.decide`` applied to
an in-memory registry, and the process-level command (start, SIGTERM, report)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.ics2.inspect import inspect_payload
from gateway.simulator.business import Incoming, Options, decide
from gateway.simulator.config import load_simulator_config
from gateway.simulator.registry import Registry

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "ics2"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def world(pki: Path):  # type: ignore[no-untyped-def]
    cfg = load_simulator_config(REPO / "conf" / "simulator.toml")
    reg = Registry(":memory:")
    n = {"i": 0}

    def send(action: str, payload: bytes, party: str = "NL123456789") -> list[tuple[str, bytes]]:
        n["i"] += 1
        mid = f"m{n['i']}@trader.test"
        reg.record_received(mid, "user-message", action, party)
        d = decide(Incoming(mid, action, party, "NL123456789", payload), reg, cfg.rules,
                   Options(complete_after_answer=True), NOW)
        reg.apply(mid, party, "NL123456789", d)
        return [(r.action, r.payload) for r in d.replies]
    yield send, reg
    reg.close()


def ens(lrn: str) -> bytes:
    return (FIXTURES / "ens-IE3F32-express.xml").read_bytes().replace(b"NLEXP2405140003", lrn.encode())


def mrn_payload(action: str, mrn: str, extra: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><{action} xmlns="urn:wco:datamodel:eu:ics2:2"><MRN>{mrn}</MRN>'
            f'<declarant><identificationNumber>NL123456789</identificationNumber></declarant>{extra}</{action}>'
            ).encode()


def amendment(mrn: str) -> bytes:
    data = (FIXTURES / "amd-IE3A32-express.xml").read_bytes()
    old = inspect_payload(data).mrn
    assert old
    return data.replace(old.encode(), mrn.encode())


def test_amendment_invalidation_and_lifecycle_errors(world) -> None:  # type: ignore[no-untyped-def]
    send, reg = world
    [(a, p)] = send("IE3F32", ens("LRN-LIFE"))
    assert a == "IE3R01"
    mrn = inspect_payload(p).mrn
    assert mrn and mrn.startswith("26NL")      # office of first entry NL000854
    [(a, p)] = send("IE3A32", amendment(mrn))
    assert a == "IE3N10" and inspect_payload(p).mrn == mrn
    [(a, p)] = send("IE3A32", amendment("26NLAAAAAAAAAAAAA1"))
    assert a == "IE3N01" and inspect_payload(p).functional_reference == "26NLAAAAAAAAAAAAA1"
    [(a, _)] = send("IE3R02", mrn_payload("IE3R02", mrn))
    assert a == "IE3N01"                        # no open additional information request
    [(a, p)] = send("IE3Q04", mrn_payload("IE3Q04", mrn))
    assert a == "IE3R07" and inspect_payload(p).mrn == mrn
    [(a, _)] = send("IE3A32", amendment(mrn))
    assert a == "IE3N01"                        # invalidated
    [row] = reg.report()
    assert row["status"] == "invalidated" and row["registrations"] == 1 and len(row["related"]) == 4


def test_info_request_closed_by_amendment(world) -> None:  # type: ignore[no-untyped-def]
    send, reg = world
    out = send("IE3F32", ens("AMD-1"))          # rule: IE3Q02 asking for an amendment
    assert [a for a, _ in out] == ["IE3R01", "IE3Q02"]
    assert b"<responseType>2</responseType>" in out[1][1]
    mrn = inspect_payload(out[0][1]).mrn
    assert reg.report()[0]["open_request"] == "IE3Q02"
    out = send("IE3A32", amendment(mrn))
    assert [a for a, _ in out] == ["IE3N10", "IE3N03"]
    assert reg.report()[0]["open_request"] is None


def test_hrcm_and_scripted_rejection(world) -> None:  # type: ignore[no-untyped-def]
    send, reg = world
    out = send("IE3F32", ens("HRCM-1"))
    assert [a for a, _ in out] == ["IE3R01", "IE3Q03"]
    mrn = inspect_payload(out[0][1]).mrn
    assert [a for a, _ in send("IE3R03", mrn_payload("IE3R03", mrn))] == ["IE3N03"]
    out = send("IE3F32", ens("REJ-1"))
    assert [a for a, _ in out] == ["IE3N99"] and b"CL2001" in out[0][1]
    assert [r["lrn"] for r in reg.report()] == ["HRCM-1"]     # a rejected filing is not registered


def test_arrival_registration_and_control(world) -> None:  # type: ignore[no-untyped-def]
    send, reg = world
    arrival = (FIXTURES / "arr-IE3N06-arrival.xml").read_bytes()
    [(a, p)] = send("IE3N06", arrival)
    assert a == "IE3R04" and inspect_payload(p).lrn == "NLARR2405280001"
    out = send("IE3F32", ens("LRN-CTL"))
    mrn = inspect_payload(out[0][1]).mrn
    ctl = arrival.replace(b"NLARR2405280001", b"CTL-ARR-1").replace(
        b"<LRN>", f"<MRN>{mrn}</MRN><LRN>".encode())
    out = send("IE3N06", ctl)
    assert [a for a, _ in out] == ["IE3R04", "IE3N08"] and inspect_payload(out[1][1]).mrn == mrn
    kinds = {r["lrn"]: (r["kind"], r["action"]) for r in reg.report()}
    assert kinds["NLARR2405280001"] == ("arrival", "IE3N06")


def sea(action: str, lrn: str, master: str, house: str | None = None) -> bytes:
    """The sea fixture as another dataset: master document ``master``, and a house level when ``house``."""
    data = (FIXTURES / "ens-IE3F10-sea.xml").read_text().replace("IE3F10", action).replace(
        "NLSEA2405140001", lrn).replace("MSCUSH2405001", master).replace(">F10<", f">F{action[4:]}<")
    if house:
        data = data.replace("  </consignmentMasterLevel>", f"""    <consignmentHouseLevel>
      <transportDocumentHouseLevel><documentNumber>{house}</documentNumber><type>N714</type>
      </transportDocumentHouseLevel>
    </consignmentHouseLevel>
  </consignmentMasterLevel>""")
    return data.encode()


def test_duplicate_lrn_answered_by_ie3n01_not_registered_again(world) -> None:  # type: ignore[no-untyped-def]
    send, reg = world
    [(a, p)] = send("IE3F32", ens("LRN-TWICE"))
    mrn = inspect_payload(p).mrn
    [(a, p)] = send("IE3F32", ens("LRN-TWICE"))             # a new MessageId, the same LRN and filer
    facts = inspect_payload(p)
    assert a == "IE3N01" and facts.functional_reference == "LRN-TWICE" and mrn.encode() in p
    [row] = reg.report()
    assert row["registrations"] == 1 and row["mrns"] == [mrn] and len(row["message_ids"]) == 1
    assert row["related"][0]["outcome"].startswith("rejected (IE3N01)")


def test_multiple_filing_incomplete_until_linked(world) -> None:  # type: ignore[no-untyped-def]
    """A partial master level (IE3F12) alone is not complete (IE3N02); the house level (IE3F14) with the same
    master document links to it and is complete."""
    send, reg = world
    out = send("IE3F12", sea("IE3F12", "MF-MASTER-1", "MBL-MF-1"))
    assert [a for a, _ in out] == ["IE3R01", "IE3N02"]
    assert b"MBL-MF-1" in out[1][1] and inspect_payload(out[1][1]).mrn == inspect_payload(out[0][1]).mrn
    out = send("IE3F14", sea("IE3F14", "MF-HOUSE-1", "MBL-MF-1", "HBL-MF-1"))
    assert [a for a, _ in out] == ["IE3R01"]
    house = next(r for r in reg.report() if r["lrn"] == "MF-HOUSE-1")
    assert "linked" in (reg.received(house["message_ids"][0]) or {})["outcome"]


def test_house_level_first_notifies_the_carrier(world) -> None:  # type: ignore[no-untyped-def]
    """A house level filed before its master level: IE3N02 to the filer and IE3N11 (ENS pending) addressed to the
    carrier named in the payload, who has not filed yet."""
    from gateway.simulator.business import Incoming, Options, decide
    send, reg = world
    cfg = load_simulator_config(REPO / "conf" / "simulator.toml")
    data = sea("IE3F14", "MF-HOUSE-2", "MBL-MF-2", "HBL-MF-2")
    reg.record_received("h2@trader.test", "user-message", "IE3F14", "NL123456789")
    d = decide(Incoming("h2@trader.test", "IE3F14", "NL123456789", "NL123456789", data), reg, cfg.rules,
               Options(), NOW)
    assert [(r.action, r.to_eori, r.ref_to) for r in d.replies] == [
        ("IE3R01", None, True), ("IE3N02", None, True), ("IE3N11", "DE987654321", False)]
    assert b"MBL-MF-2" in d.replies[2].payload and "IE3N11" in d.outcome


def test_consultation_by_mrn_and_by_transport_document(world) -> None:  # type: ignore[no-untyped-def]
    send, reg = world
    out = send("IE3F11", sea("IE3F11", "CONS-DOC-1", "MBL-CONS-1", "HBL-CONS-1"))
    mrn = inspect_payload(out[0][1]).mrn
    [(a, p)] = send("IE3Q05", mrn_payload("IE3Q05", mrn))
    assert a == "IE3R08" and inspect_payload(p).mrn == mrn and b"<status>registered</status>" in p
    for number in ("MBL-CONS-1", "HBL-CONS-1"):
        q = ('<?xml version="1.0" encoding="UTF-8"?><IE3Q05 xmlns="urn:wco:datamodel:eu:ics2:2"><transportDocument>'
             f'<documentNumber>{number}</documentNumber></transportDocument><declarant><identificationNumber>'
             'NL123456789</identificationNumber></declarant></IE3Q05>').encode()
        [(a, p)] = send("IE3Q05", q)
        assert a == "IE3R08" and inspect_payload(p).mrn == mrn, number
    [(a, _)] = send("IE3Q05", q.replace(b"HBL-CONS-1", b"NO-SUCH-DOC"))
    assert a == "IE3N01"


def test_arrival_for_an_invalidated_ens_gets_ie3n07(world) -> None:  # type: ignore[no-untyped-def]
    send, _ = world
    mrn = inspect_payload(send("IE3F32", ens("LRN-N07"))[0][1]).mrn
    send("IE3Q04", mrn_payload("IE3Q04", mrn))
    arrival = (FIXTURES / "arr-IE3N06-arrival.xml").read_bytes().replace(b"NLARR2405280001", b"ARR-N07").replace(
        b"<LRN>", f"<MRN>{mrn}</MRN><LRN>".encode())
    out = send("IE3N06", arrival)
    assert [a for a, _ in out] == ["IE3R04", "IE3N07"] and b"invalidated" in out[1][1]


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    from gateway.config import ConfigError
    text = (REPO / "conf" / "simulator.toml").read_text().replace('delivery = "pull"', 'delivery = "carrier-pigeon"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("../certs", str(REPO / "certs")))
    with pytest.raises(ConfigError) as exc:
        load_simulator_config(bad)
    assert "parties[1].delivery" in str(exc.value) and str(bad) in str(exc.value)


def test_process_runs_and_stops_on_sigterm(tmp_path: Path, pki: Path) -> None:
    text = (REPO / "conf" / "simulator.toml").read_text().replace("../certs", str(REPO / "certs"))
    text = text.replace("port = 8443", "port = 0").replace("port = 8480", "port = 0")
    text = text.replace('listen = ["127.0.0.1", "::1"]', 'listen = ["127.0.0.1"]')
    text = text.replace('"../var/simulator.sqlite"', json.dumps(str(tmp_path / "sim.sqlite")))
    conf = tmp_path / "simulator.toml"
    conf.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", "--conf", str(conf)], cwd=tmp_path,
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        line = ""
        while "simulator_started" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, "simulator did not start"
            line = proc.stderr.readline()  # type: ignore[union-attr]
        assert "sti_url=https://127.0.0.1:" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = subprocess.run([sys.executable, "-m", "gateway", "simulate", "report", "--conf", str(conf), "--json"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout == ""
