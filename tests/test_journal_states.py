"""The filing state machine, and docs/states.md kept in step with it."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, strategies as st

from gateway.journal.states import (
    FILING_STATES, FINAL_STATES, MESSAGE_STATES, allowed_next, can_transition, can_transition_message, is_final,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "states.md"


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_table_lists_every_state_and_its_finality() -> None:
    rows = re.findall(r"^\| `([a-z-]+)` \| (yes|no) \|", _doc(), flags=re.M)
    assert [r[0] for r in rows] == list(FILING_STATES)
    assert {s for s, final in rows if final == "yes"} == set(FINAL_STATES)


def test_documented_transitions_match_the_code() -> None:
    text = _doc().split("## Allowed transitions", 1)[1].split("##", 1)[0]
    documented: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^- (.+?) → (.+)$", line)
        if m:
            documented[m.group(1).strip("`")] = set(re.findall(r"`([a-z-]+)`", m.group(2)))
        if line.startswith("- ") and line.endswith("none (terminal)"):
            for s in re.findall(r"`([a-z-]+)`", line):
                documented[s] = set()
    assert documented == {s: set(allowed_next(s)) for s in FILING_STATES}


def test_every_state_reachable_from_received() -> None:
    seen, todo = {"received"}, ["received"]
    while todo:
        for nxt in allowed_next(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(FILING_STATES)


def test_final_states_are_terminal_except_assessment_complete() -> None:
    for s in FINAL_STATES:
        assert is_final(s)
        if s != "assessment-complete":
            assert allowed_next(s) == frozenset(), s
    assert not any(can_transition(s, s) for s in FILING_STATES)  # a "change" to the same state is a bug


@given(st.text(), st.sampled_from(FILING_STATES))
def test_unknown_states_never_transition(junk: str, known: str) -> None:
    if junk not in FILING_STATES:
        assert not can_transition(junk, known) and not can_transition(known, junk)


def test_message_states() -> None:
    assert can_transition_message("queued", "sending")
    assert can_transition_message("sending", "queued")
    assert not can_transition_message("receipted", "queued")
    assert set(MESSAGE_STATES) >= {"queued", "sending", "receipted", "failed", "held", "orphan"}


def test_unknown_and_terminal_states_lead_nowhere() -> None:
    """`allowed_next` answers an empty set (never None) for a state the machine does not know, so a caller can
    always test membership or iterate."""
    from gateway.journal.states import allowed_next
    assert allowed_next("no-such-state") == frozenset()
    assert allowed_next("") == frozenset()


def test_invalid_transition_names_the_filing_only_when_known() -> None:
    from gateway.journal.errors import InvalidTransition
    bare = InvalidTransition("registered", "received")
    assert (bare.old, bare.new, bare.filing) == ("registered", "received", "")
    assert str(bare) == ("invalid state transition 'registered' -> 'received' (see docs/states.md for the allowed "
                         "transitions out of 'registered')")
    named = InvalidTransition("registered", "received", filing="NL123/LRN-1")
    assert str(named).startswith("filing NL123/LRN-1: invalid state transition 'registered' -> 'received' ")


def test_a_message_in_an_unknown_state_may_not_move() -> None:
    from gateway.journal.states import can_transition_message
    assert can_transition_message("no-such-state", "queued") is False
    assert can_transition_message("queued", "sending") is True
