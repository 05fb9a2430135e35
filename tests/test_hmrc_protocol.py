"""The HMRC documents, sans I/O: HMRC's own API examples parse, the stand-in's outcomes pass HMRC's XSDs, tokens
are never printed, and the token file is written atomically with 0600."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from gateway.hmrc import protocol
from gateway.hmrc.tokens import TokenSet, TokenStore, TokenStoreError
from gateway.hmrc_standin import outcomes as out
from gateway.ics2.validate import validate_payload
from tests.hmrc_support import FIXTURES, REPO, ie313, ie315

NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.timezone.utc)


def test_success_response_published_and_as_the_controller_emits_it() -> None:
    assert protocol.parse_success((FIXTURES / "validResponse.xml").read_bytes()) == "87491122139921"
    # HMRC's controller: TestInLive and an unqualified CorrelationId (the README of hmrc-ssgb)
    controller = (b'<ns:SuccessResponse xmlns:ns="http://www.hmrc.gov.uk/successresponse/2" TestInLive="false">'
                  b'<ns:ResponseData><CorrelationId>AbC123dEf45678</CorrelationId></ns:ResponseData>'
                  b'</ns:SuccessResponse>')
    assert protocol.parse_success(controller) == "AbC123dEf45678"
    # a comment inside the id must not shorten what we journal (itertext, not .text)
    split = controller.replace(b"AbC123dEf45678", b"AbC123<!-- -->dEf45678")
    assert protocol.parse_success(split) == "AbC123dEf45678"


@pytest.mark.parametrize("body", [
    b"<ns:SuccessResponse xmlns:ns='http://www.hmrc.gov.uk/successresponse/2'/>",
    b"<ns:SuccessResponse xmlns:ns='x'><CorrelationId>../../etc</CorrelationId></ns:SuccessResponse>",
    b"<error><code>X</code></error>",
    b"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>",
    b"not xml",
])
def test_success_response_without_a_usable_correlation_id_is_refused(body: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_success(body)


def test_error_response_becomes_findings() -> None:
    errors = protocol.parse_error_response((FIXTURES / "errorResponse.xml").read_bytes())
    assert [(e.number, e.type, e.location) for e in errors] == [("4065", "business", "/ie:CC315A[1]/MesSenMES3[1]")]
    assert errors[0].as_finding()["code"] == "4065"
    # unreadable bodies never raise: one finding that says so
    assert protocol.parse_error_response(b"<<<")[0].number == "4999"
    assert protocol.parse_error_response(b"<error><code>FORBIDDEN</code><message>Permission denied</message>"
                                         b"</error>")[0].number == "FORBIDDEN"


def test_hmrc_examples_of_the_outcome_and_notification_apis() -> None:
    refs = protocol.parse_outcome_list((FIXTURES / "listOfOutcomes.xml").read_bytes())
    assert [(r.correlation_id, r.mrn) for r in refs] == [("1234567890", "1234567890"), ("0987654321", None)]
    o = protocol.parse_wrapped((FIXTURES / "pollingResponse.xml").read_bytes())
    assert (o.kind, o.meaning, o.correlation_id, o.lrn, o.mrn) == ("IE328", "registered", "0JRF7UncK0t004",
                                                                   "Preeti_315A_TC001", "10GB08I01234567891")
    assert o.ack_href == "/customs/imports/outcomes/0JRF7UncK0t004"
    assert etree.fromstring(o.message).tag == "{http://ics.dgtaxud.ec/CC328A}CC328A"
    n = protocol.parse_notification_list((FIXTURES / "listOfInterventions.xml").read_bytes())
    assert [r.notification_id for r in n] == ["1D45fQ563", "ABx4414f4"]
    w = protocol.parse_wrapped((FIXTURES / "advancedNotification.xml").read_bytes(), notification=True)
    assert (w.kind, w.mrn, w.lrn) == ("IE351", "12AB3C4D5E6F7G8H90", "ABCD1234")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 65, "a b", "%2e%2e"])
def test_ids_from_hmrc_never_become_paths(bad: str) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.safe_id(bad, "correlationId")
    # the bad entry is dropped (never fetched, never a path) and does not hide the good one behind it
    doc = f"<entryDeclarationResponses><response><correlationId>{bad}</correlationId></response>" \
          f"<response><correlationId>GOOD1234567890</correlationId></response>" \
          f"</entryDeclarationResponses>".encode()
    assert [r.correlation_id for r in protocol.parse_outcome_list(doc)] == ["GOOD1234567890"]
    doc = f"<advancedNotifications><response><notificationId>{bad}</notificationId></response>" \
          f"<response><notificationId>N1</notificationId></response></advancedNotifications>".encode()
    assert [r.notification_id for r in protocol.parse_notification_list(doc)] == ["N1"]


def test_a_list_page_is_capped_at_100_entries() -> None:
    entries = "".join(f"<response><correlationId>C{i:013d}</correlationId></response>" for i in range(5000))
    refs = protocol.parse_outcome_list(f"<entryDeclarationResponses>{entries}</entryDeclarationResponses>".encode())
    assert len(refs) == protocol.PAGE_SIZE == 100


def test_wrapper_with_two_messages_or_an_unknown_one_is_refused() -> None:
    inner = out.accepted(submitter="GB1/1", correlation_id="C1", message_id="M1", lrn="L", mrn="26GB00000000000010",
                         office="GB000011", person_lodging="GB1", now=NOW)
    twice = out.wrap(inner, notification=False, ack_href="/x").replace(b"</response>",
                                                                        etree.tostring(inner) + b"</response>")
    with pytest.raises(protocol.ProtocolError, match="exactly one"):
        protocol.parse_wrapped(twice)
    with pytest.raises(protocol.ProtocolError, match="CC351A"):
        protocol.parse_wrapped(out.wrap(inner, notification=True, ack_href="/x"), notification=True)


def test_stand_in_outcomes_validate_against_hmrcs_published_schemas() -> None:
    common = {"submitter": "GB1234231/1234567890", "correlation_id": "ABCDEF12345678", "message_id": "M1",
              "now": NOW}
    mrn = "26GB00000000000010"
    messages = [
        out.accepted(lrn="L1", mrn=mrn, office="GB000011", person_lodging="GB1", **common),
        out.rejected(lrn="L1", errors=[("26", "/CC315A[1]/HEAHEA[1]/RefNumHEA4[1]", "R891")], **common),
        out.amendment_accepted(mrn=mrn, amended_at="202612021000", office="GB000011", person_lodging="GB1", **common),
        out.amendment_rejected(mrn=mrn, amended_at="202612021000", office="GB000011",
                               errors=[("12", "/CC313A[1]", "8999")], **common),
        out.intervention(lrn="L1", mrn=mrn, office="GB000011", transport_mode="4", person_lodging="GB1", **common),
    ]
    for el in messages:
        report = validate_payload(etree.tostring(el, xml_declaration=True, encoding="UTF-8"), profile="uk-ssgb")
        assert report.valid, report.as_dict()
    # and each survives the wrapper round trip the client parses
    kinds = [protocol.parse_wrapped(out.wrap(el, notification=el.tag.endswith("CC351A"), ack_href="/a"),
                                    notification=el.tag.endswith("CC351A")).kind for el in messages]
    assert kinds == ["IE328", "IE316", "IE304", "IE305", "IE351"]


def test_declaration_facts() -> None:
    d = protocol.declaration_facts(ie315("LRN-A"))
    assert (d.kind, d.sender_eori, d.lrn) == ("IE315", "GB1234231", "LRN-A")
    d = protocol.declaration_facts(ie313("26GB00000000000010"))
    assert (d.kind, d.mrn) == ("IE313", "26GB00000000000010")
    with pytest.raises(protocol.ProtocolError):
        protocol.declaration_facts(b"<IE3F32/>")


def _tokens(gen: int = 1) -> TokenSet:
    return TokenSet("acc-SECRET-1", "ref-SECRET-2", 1000.0 + 14400, "write:import-control-system", 1000.0, gen)


def test_tokens_are_never_printed() -> None:
    t = _tokens()
    for text in (repr(t), str(t), f"{t}", repr([t])):
        assert "SECRET" not in text


def test_refresh_is_due_half_way_and_never_after_expiry() -> None:
    t = _tokens()
    assert not t.due_for_refresh(1000.0 + 7199)
    assert t.due_for_refresh(1000.0 + 7201)
    assert t.valid(1000.0 + 14000) and not t.valid(1000.0 + 14390)


def test_token_file_is_private_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "sub" / "token.json")
    with pytest.raises(TokenStoreError, match="hmrc authorize"):
        store.load()
    store.save(_tokens())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load().refresh_token == "ref-SECRET-2"
    os.chmod(store.path, 0o644)
    with pytest.raises(TokenStoreError, match="chmod 600"):
        store.load()
    os.chmod(store.path, 0o600)
    store.path.write_text("{not json")
    with pytest.raises(TokenStoreError, match="unreadable"):
        store.load()
    assert not list(store.path.parent.glob(".*.tmp"))


def test_a_token_path_that_is_not_a_small_regular_file_is_refused(tmp_path: Path) -> None:
    """A FIFO would hang the daemon on read, /dev/zero would fill its memory: refused with the reason."""
    store = TokenStore(tmp_path / "token.json")
    os.mkfifo(store.path, 0o600)
    with pytest.raises(TokenStoreError, match="regular"):
        store.load()
    store.path.unlink()
    store.path.write_bytes(b" " * (64 * 1024 + 1))
    os.chmod(store.path, 0o600)
    with pytest.raises(TokenStoreError, match="regular"):
        store.load()


@pytest.mark.parametrize("point,expect_generation", [("token-tmp-written", 1), ("token-renamed", 2)])
def test_a_crash_while_saving_leaves_one_whole_token_set(tmp_path: Path, point: str, expect_generation: int) -> None:
    """SIGKILL between the steps of the atomic write: the file holds the old set or the new one, never a mix."""
    store = TokenStore(tmp_path / "token.json")
    store.save(_tokens(1))
    code = ("import sys; from gateway.hmrc.tokens import *; s = TokenStore(sys.argv[1]); "
            "s.save(TokenSet('acc-2', 'ref-2', 9e9, 's', 0.0, 2))")
    proc = subprocess.run([sys.executable, "-c", code, str(store.path)], cwd=REPO, capture_output=True,
                          env={**os.environ, "ICS2GW_HMRC_CRASH_AT": point})
    assert proc.returncode == -9, proc.stderr
    loaded = store.load()
    assert loaded.generation == expect_generation
    assert loaded.refresh_token == ("ref-SECRET-2" if expect_generation == 1 else "ref-2")
    json.loads(store.path.read_text())
