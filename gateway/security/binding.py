"""The EORI binding: a trader's seal must carry the EORI of the PartyId it signs for.

Customs authorise a sender by the pair (eb:From PartyId's EORI, sealing certificate) registered in UUM&DS (ICD
4.6.3); a mismatch is answered EBMS:0004 / A001 and blocks the sender. A verifier without UUM&DS (our simulator,
and any peer that receives trader messages) approximates the registration by the certificate's own EORI
(``keys.eori_of``: organizationIdentifier ``EORI:...`` or an EORI-shaped serialNumber).

Where the ICD leaves it to registration (a seal whose subject carries no EORI at all) the operator chooses with
``[trust] eori_binding``:

- ``refuse`` (default): the seal must carry an EORI, and it must equal the PartyId's;
- ``if-present``: a different EORI is refused, a seal without EORI passes (binding left to registration);
- ``report``: nothing is refused; a mismatch is logged (``event=eori_binding_mismatch``).
"""

from __future__ import annotations

import logging

from cryptography import x509

from gateway.config import PARTY_ID_RE
from gateway.security.keys import eori_of, eoris_of

logger = logging.getLogger("ics2gw.security")


class EoriBindingError(ValueError):
    """The seal does not carry the EORI of the party it signs for; the message names both."""

    def __init__(self, cause: str, message: str) -> None:
        self.cause = cause       # eori-mismatch, eori-missing or eori-ambiguous
        super().__init__(message)


def party_eori(party_id: str) -> str | None:
    """The EORI inside a ``[system@]EORI[@MS]`` PartyId (ICD table 8), or None when it has no such shape."""
    m = PARTY_ID_RE.match(party_id)
    return m.group("eori") if m else None


def check_eori_binding(signer: x509.Certificate, party_id: str, mode: str = "refuse") -> None:
    """Raises ``EoriBindingError`` when ``signer`` may not seal for ``party_id`` under ``mode``."""
    wanted = party_eori(party_id)
    have = eori_of(signer)
    named = eoris_of(signer)
    who = signer.subject.rfc4514_string()
    if len(named) > 1:
        problem = ("eori-ambiguous", f"the seal {who} names several EORIs ({', '.join(named)}), so it cannot be "
                                     f"bound to PartyId {party_id}")
    elif wanted is None:
        problem = ("eori-mismatch", f"PartyId {party_id!r} carries no EORI ([system@]EORI[@MS], ICD table 8), so "
                                    f"the seal {who} cannot be bound to it")
    elif have is None:
        if mode != "refuse":
            return
        problem = ("eori-missing", f"the seal {who} carries no EORI, so it cannot seal for PartyId {party_id} "
                                   "(ICD 4.6.3; set [trust] eori_binding = \"if-present\" to leave the binding to the "
                                   "UUM&DS registration)")
    elif have != wanted:
        problem = ("eori-mismatch", f"the seal {who} carries EORI {have}, but signs for PartyId {party_id} "
                                    f"(EORI {wanted}): a seal may only seal for its own EORI (ICD 4.6.3)")
    else:
        return
    if mode == "report":
        logger.warning("event=eori_binding_mismatch cause=%s party_id=%s signer=%r", problem[0], party_id, who)
        return
    raise EoriBindingError(*problem)
