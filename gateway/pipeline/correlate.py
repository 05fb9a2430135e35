"""What an inbound business message does to the filing it belongs to, and what a sent follow-up does.

Pure functions over the catalogue and the journal's state machine: no SQL, no I/O. The pipeline finds the
filing (eb:RefToMessageId first, then the functional reference of ICD table 9), asks ``inbound_effect`` what to
do, and the journal applies it in one transaction.

Outcomes belong to AS4 messages first and filings second: IE3N99 / IE3N01 reject the *message* they answer, and
the filing follows from which message that was (the first filing message -> rejected; an amendment or an
invalidation request -> the registered ENS stays registered).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.journal.states import FilingState as S
from gateway.journal.states import can_transition

# The message ids that open a request customs expects an answer to, and what answers them (ICD Annex 1).
REQUESTS = {
    "IE3Q01": (),                               # do not load: a final alert, no reply in the ICD
    "IE3Q02": ("IE3R02", "IE3A"),               # additional information: IE3R02, or an amendment IE3Axx
    "IE3Q03": ("IE3R03",),                      # HRCM screening: IE3R03
}
# Inbound messages correlated only by eb:RefToMessageId: their functional reference is not unique (ICD 4.5.3)
REF_ONLY = frozenset({"IE3R08"})
# Requests we may send without a filing of ours: IE3Q05 consults any ENS by MRN or transport document (ICD 3.1.9);
# their answers (IE3R08, or IE3N99) are correlated by RefToMessageId to the request, not to a filing.
STANDALONE_REQUESTS = frozenset({"IE3Q05"})
# Which of our requests a REF_ONLY answer answers, when it arrives without RefToMessageId (pulled from the STI):
# then the oldest unanswered request about the same MRN / LRN is taken (ICD 4.1.3.3: no RefToMessageId on pull).
ANSWERS_REQUEST = {"IE3R08": "IE3Q05"}


@dataclass(frozen=True)
class UnmatchedAlert:
    kind: str
    category: str        # A = urgent (act before loading / answer customs), B = soon, C = information
    why: str


# A customs message that matches no filing of ours is still addressed to us: the carrier gets copies of what
# concerns goods it carries (ICD 3.1.8: IE3Q01 "must be also communicated to the Carrier", IE3R01 copies, Annex 3),
# and a person not yet filed is told to file (IE3N11). Each raises the alert its action calls for, not a generic
# "orphan" one; the message is kept as an orphan all the same (listable, resolvable by the operator).
UNMATCHED_ALERTS: dict[str, UnmatchedAlert] = {
    "IE3Q01": UnmatchedAlert("do-not-load", "A", "customs asks not to load goods we may carry"),
    "IE3Q02": UnmatchedAlert("information-requested", "A", "customs asks for information on an ENS we carry"),
    "IE3Q03": UnmatchedAlert("screening-requested", "A", "customs asks for HRCM screening of goods we carry"),
    "IE3R01": UnmatchedAlert("registration-copy", "A", "an ENS for goods we carry was registered by another "
                                                       "filer: its MRN is needed for loading and arrival"),
    "IE3N11": UnmatchedAlert("ens-pending", "A", "we are obliged to file an ENS that is not filed yet"),
    "IE3N02": UnmatchedAlert("ens-not-complete", "B", "an ENS for goods we carry is not complete"),
    "IE3N09": UnmatchedAlert("aeo-control", "B", "customs will control goods we carry"),
}


def unmatched_alert(action: str) -> UnmatchedAlert:
    """The alert for a customs message ``action`` that matches no filing (``orphan`` when it means nothing more)."""
    return UNMATCHED_ALERTS.get(action, UnmatchedAlert("orphan", "B", "matches no filing"))


@dataclass(frozen=True)
class InboundEffect:
    new_state: str | None = None          # the filing's next state, None to leave it
    message_outcome: str | None = None    # outcome recorded on the outbound message this one answers
    learn_mrn: str | None = None
    open_request: str | None = None       # IE3Q01/02/03
    alert: str | None = None              # an operator alert (do-not-load, information requested, ...)
    event: str = "inbound"
    via: str | None = None                # an intermediate state to pass through first (sent -> registered -> arrived)


def _to(current: str, target: str) -> str | None:
    """``target`` if the state machine allows it from ``current``, else None (keep the state: a late or
    out-of-order message never drags a filing backwards)."""
    if current == target:
        return None
    return target if can_transition(current, target) else None


_SENDING_FAMILY = (S.SENDING, S.SENT, S.QUEUED, S.FAILED, S.HELD)


def _risk(current: str, target: str) -> dict[str, str | None]:
    """new_state and via for a risk-analysis message. Customs speaks only about a registered ENS, so one that
    outruns its IE3R01 (out-of-order delivery) registers the filing on the way instead of being lost."""
    if current in _SENDING_FAMILY and can_transition(current, S.REGISTERED) and can_transition(S.REGISTERED, target):
        return {"new_state": target, "via": S.REGISTERED}
    return {"new_state": _to(current, target), "via": None}


def is_filing_action(action: str | None) -> bool:
    return bool(action) and action.startswith("IE3F")  # type: ignore[union-attr]


def inbound_effect(action: str, *, current_state: str, answered_action: str | None, mrn: str | None,
                   registered_state: str = S.REGISTERED, restore_state: str | None = None) -> InboundEffect:
    """The effect of inbound ``action`` on a filing in ``current_state``.

    ``answered_action`` is the action of our message this one answers (found by RefToMessageId or inferred from
    the filing), ``registered_state`` what a rejected follow-up returns the filing to (registered or amended) when
    ``restore_state``, the state the filing had before that follow-up was receipted, is unknown or unreachable."""
    if action == "IE3R01":
        # The first filing message is answered by IE3R01, IE3N99 or IE3N01 (ICD Annex 3); IE3R01 registers it.
        if current_state not in _SENDING_FAMILY:  # late or repeated: never drags info-requested etc. back
            return InboundEffect(None, "registered", learn_mrn=mrn, event="registered")
        target = S.REGISTERED
        if current_state in (S.SENDING, S.QUEUED, S.FAILED, S.HELD) and not can_transition(current_state, target):
            target = S.SENT
        return InboundEffect(_to(current_state, target), "registered", learn_mrn=mrn, event="registered")
    if action in ("IE3N99", "IE3N01"):
        if answered_action is None or is_filing_action(answered_action) or answered_action == "IE3N06":
            return InboundEffect(_to(current_state, S.REJECTED), "rejected", alert="filing-rejected",
                                 event="rejected")
        # an amendment, invalidation or answer refused: the registered ENS stands as it was before it (an
        # information request answered by a rejected IE3R02 is open again: info-requested; amended stays amended)
        target = registered_state
        if restore_state and (restore_state == current_state or can_transition(current_state, restore_state)):
            target = restore_state
        return InboundEffect(_to(current_state, target), "rejected", alert="follow-up-rejected",
                             event="follow-up-rejected")
    if action == "IE3N10":
        return InboundEffect(_to(current_state, S.AMENDED), "amendment-accepted", learn_mrn=mrn, event="amended")
    if action == "IE3R07":
        return InboundEffect(_to(current_state, S.INVALIDATED), "invalidated", event="invalidated")
    if action == "IE3Q01":
        return InboundEffect(**_risk(current_state, S.DO_NOT_LOAD), open_request="IE3Q01", alert="do-not-load",
                             event="do-not-load", learn_mrn=mrn)
    if action == "IE3Q02":
        return InboundEffect(**_risk(current_state, S.INFO_REQUESTED), open_request="IE3Q02",
                             alert="information-requested", event="information-requested", learn_mrn=mrn)
    if action == "IE3Q03":
        return InboundEffect(**_risk(current_state, S.SCREENING_REQUESTED), open_request="IE3Q03",
                             alert="screening-requested", event="screening-requested", learn_mrn=mrn)
    if action == "IE3N03":
        return InboundEffect(**_risk(current_state, S.ASSESSMENT_COMPLETE), event="assessment-complete",
                             learn_mrn=mrn)
    if action == "IE3R04":
        # the arrival is registered (MRN of the arrival notification): the IE3N06 filing has arrived
        if can_transition(current_state, S.ARRIVED):
            return InboundEffect(S.ARRIVED, "registered", learn_mrn=mrn, event="arrived")
        if can_transition(current_state, S.REGISTERED) and can_transition(S.REGISTERED, S.ARRIVED):
            return InboundEffect(S.ARRIVED, "registered", learn_mrn=mrn, event="arrived", via=S.REGISTERED)
        return InboundEffect(None, "registered", learn_mrn=mrn, event="arrived")
    # IE3N02, IE3N04, IE3N05, IE3N07, IE3N09, IE3N11, IE3R08 ...: information only, kept as events
    return InboundEffect(None, None, event=f"notification-{action}")


def follow_up_state(action: str, current_state: str) -> str | None:
    """The filing state once a follow-up we sent is receipted (None: unchanged)."""
    if action.startswith("IE3A"):
        return _to(current_state, S.PENDING_AMENDMENT)
    if action == "IE3Q04":
        return _to(current_state, S.INVALIDATION_REQUESTED)
    if action in ("IE3R02", "IE3R03"):
        return _to(current_state, S.REGISTERED if current_state != S.AMENDED else S.AMENDED)
    return None


def state_before_follow_up(events: list[dict[str, object]], follow_up_message_id: str) -> str | None:
    """The filing state before the receipt of follow-up ``follow_up_message_id`` moved it (from the journal's
    ``follow-up-<action>`` transition event), or None when that receipt did not change the state."""
    for e in reversed(events):
        d = e.get("detail")
        if isinstance(d, dict) and str(e.get("event", "")).startswith("follow-up-") \
                and d.get("message_id") == follow_up_message_id and "from" in d:
            return str(d["from"])
    return None


def answers_request(action: str, request_kind: str) -> bool:
    """True when a follow-up ``action`` answers an open request of ``request_kind`` (IE3Q02 -> IE3R02 or IE3Axx)."""
    return any(action.startswith(prefix) for prefix in REQUESTS.get(request_kind, ()))
