"""The filing state machine and the AS4 message states: pure data and pure functions, no SQL.

Why here and pure: the journal enforces transitions on every write, the pipeline asks ``can_transition`` before
deciding, and docs/states.md is checked against ``FILING_STATES`` by a test, so the three never disagree.

"Final" means: nothing is pending at the gateway for this filing and no operator action is needed, so retention
(``purge``) may remove it once old enough. All final states are terminal except ``assessment-complete``: after
IE3N03 the trader may still file the arrival, amend or invalidate, so it keeps those exits.
"""

from __future__ import annotations

from enum import StrEnum


class FilingState(StrEnum):
    RECEIVED = "received"
    REJECTED_LOCALLY = "rejected-locally"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    HELD = "held"
    FAILED = "failed"
    REGISTERED = "registered"
    REJECTED = "rejected"
    PENDING_AMENDMENT = "pending-amendment"
    AMENDED = "amended"
    INFO_REQUESTED = "info-requested"
    SCREENING_REQUESTED = "screening-requested"
    DO_NOT_LOAD = "do-not-load"
    INVALIDATION_REQUESTED = "invalidation-requested"
    INVALIDATED = "invalidated"
    ASSESSMENT_COMPLETE = "assessment-complete"
    ARRIVED = "arrived"
    ABANDONED = "abandoned"


S = FilingState

FINAL_STATES: frozenset[str] = frozenset({
    S.REJECTED_LOCALLY, S.REJECTED, S.DO_NOT_LOAD, S.INVALIDATED, S.ASSESSMENT_COMPLETE, S.ARRIVED, S.ABANDONED,
})

# States in which the ENS is registered at customs (an MRN exists) and the risk analysis may still speak.
_LIVE = (S.REGISTERED, S.AMENDED, S.PENDING_AMENDMENT, S.INFO_REQUESTED, S.SCREENING_REQUESTED)
# What customs (or the trader) may do to a live ENS.
_LIVE_EXITS = (S.INFO_REQUESTED, S.SCREENING_REQUESTED, S.DO_NOT_LOAD, S.PENDING_AMENDMENT,
               S.INVALIDATION_REQUESTED, S.ASSESSMENT_COMPLETE, S.ARRIVED)

_TRANSITIONS: dict[str, frozenset[str]] = {
    # never-sent part
    S.RECEIVED: frozenset({S.QUEUED, S.REJECTED_LOCALLY, S.ABANDONED}),
    S.QUEUED: frozenset({S.SENDING, S.FAILED, S.ABANDONED, S.REGISTERED, S.REJECTED}),  # answer to a lost response
    # sending part: a business answer may outrun the bookkeeping of the receipt, and a receipt or answer may
    # still arrive for a message we gave up on (the transport timed out after customs had it).
    S.SENDING: frozenset({S.SENT, S.QUEUED, S.FAILED, S.HELD, S.REGISTERED, S.REJECTED}),
    S.SENT: frozenset({S.REGISTERED, S.REJECTED, S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED, S.ABANDONED, S.SENT, S.REGISTERED, S.REJECTED}),
    S.HELD: frozenset({S.QUEUED, S.ABANDONED, S.SENT, S.REGISTERED, S.REJECTED}),
    # registered part
    S.REGISTERED: frozenset(_LIVE_EXITS),
    S.AMENDED: frozenset(_LIVE_EXITS),
    # IE3N10 -> amended; IE3N99/IE3N01 on the amendment -> back to registered/amended (the filing stands as before)
    S.PENDING_AMENDMENT: frozenset(_LIVE_EXITS + (S.AMENDED, S.REGISTERED)) - {S.PENDING_AMENDMENT},
    # answered (IE3R02 receipted, or an amendment sent) -> back to the registered family
    S.INFO_REQUESTED: frozenset(_LIVE_EXITS + (S.REGISTERED, S.AMENDED)) - {S.INFO_REQUESTED},
    S.SCREENING_REQUESTED: frozenset(_LIVE_EXITS + (S.REGISTERED, S.AMENDED)) - {S.SCREENING_REQUESTED},
    # IE3R07 -> invalidated; IE3N99/IE3N01 on the IE3Q04 -> back to the state before it (a rejected follow-up
    # restores the filing's previous state, which may be an open request or a completed assessment)
    S.INVALIDATION_REQUESTED: frozenset({S.INVALIDATED, S.REGISTERED, S.AMENDED, S.INFO_REQUESTED,
                                         S.SCREENING_REQUESTED, S.ASSESSMENT_COMPLETE}),
    S.ASSESSMENT_COMPLETE: frozenset({S.ARRIVED, S.PENDING_AMENDMENT, S.INVALIDATION_REQUESTED}),
    # terminal
    S.REJECTED_LOCALLY: frozenset(),
    S.REJECTED: frozenset(),
    S.DO_NOT_LOAD: frozenset(),
    S.INVALIDATED: frozenset(),
    S.ARRIVED: frozenset(),
    S.ABANDONED: frozenset(),
}

FILING_STATES: tuple[str, ...] = tuple(s.value for s in FilingState)
assert set(_TRANSITIONS) == set(FILING_STATES)
LIVE_STATES: frozenset[str] = frozenset(_LIVE)


def can_transition(old: str, new: str) -> bool:
    """True if a filing may move from ``old`` to ``new``; unknown states are never allowed."""
    return new in _TRANSITIONS.get(old, frozenset())


def allowed_next(state: str) -> frozenset[str]:
    """States reachable from ``state`` in one step (empty for terminal and unknown states)."""
    return _TRANSITIONS.get(state, frozenset())


def is_final(state: str) -> bool:
    return state in FINAL_STATES


# ---------------------------------------------------------------------------------------------------------------
# AS4 messages. Outbound: queued -> sending -> receipted | queued (retry) | failed | held; cancelled by the
# operator. Inbound: received -> processed | orphan. Signals (receipts, errors we got back) are stored on the
# message they answer, not as rows of their own.
# ---------------------------------------------------------------------------------------------------------------

class MessageState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    RECEIPTED = "receipted"
    FAILED = "failed"
    HELD = "held"
    CANCELLED = "cancelled"
    RECEIVED = "received"
    PROCESSED = "processed"
    ORPHAN = "orphan"


M = MessageState
MESSAGE_STATES: tuple[str, ...] = tuple(m.value for m in MessageState)
_MESSAGE_TRANSITIONS: dict[str, frozenset[str]] = {
    M.QUEUED: frozenset({M.SENDING, M.CANCELLED, M.FAILED}),
    M.SENDING: frozenset({M.RECEIPTED, M.QUEUED, M.FAILED, M.HELD}),
    M.RECEIPTED: frozenset(),
    M.FAILED: frozenset({M.QUEUED, M.CANCELLED, M.RECEIPTED}),
    M.HELD: frozenset({M.QUEUED, M.CANCELLED, M.RECEIPTED}),
    M.CANCELLED: frozenset(),
    M.RECEIVED: frozenset({M.PROCESSED, M.ORPHAN}),
    M.ORPHAN: frozenset({M.PROCESSED}),
    M.PROCESSED: frozenset(),
}
FINAL_MESSAGE_STATES: frozenset[str] = frozenset({M.RECEIPTED, M.CANCELLED, M.PROCESSED})

DIRECTIONS = ("in", "out")
MESSAGE_KINDS = ("user-message", "receipt", "error", "pull-request", "ping")
PRIORITIES = ("A", "B", "C")
REQUEST_KINDS = ("IE3Q01", "IE3Q02", "IE3Q03")
REQUEST_STATES = ("open", "answered", "closed")


def can_transition_message(old: str, new: str) -> bool:
    return new in _MESSAGE_TRANSITIONS.get(old, frozenset())
