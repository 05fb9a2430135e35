"""The ebMS error catalogue (ICD Annex 4, eDelivery AS4 1.15) and ``EbmsFault``, the refusal every layer raises.

Why a catalogue: an error signal must carry the exact ``shortDescription``, ``severity`` and ``category`` the
specifications give for its code, and the pipeline must decide from a received code whether resending the
same message can ever help. Both questions are answered here and nowhere else.

Sources, checked line by line:
- ICD v3.30 Annex 4 tables 20-23 (ebMS processing, security, reliability and AS4 feature errors) and table 24
  (the UUM&DS sub-codes A001-A003 that travel with EBMS:0004);
- eDelivery AS4 1.15 section 1.4.3.1 (EBMS:0303 ``DecompressionFailure``; the ICD table wraps it as
  "Decompression- Failure") and 1.4.3.2 (EBMS:0301 / EBMS:0202 semantics).

Category values are spelled as the ICD tables print them; ``origin`` follows the ebMS3 Core values
(``ebMS``, ``security``, ``reliability``; the AS4 feature errors are ``ebMS``). Compare both
case-insensitively when reading what another MSH sent.

Permanence (``ErrorCode.permanent``, ``is_permanent``) answers "can resending the very same message succeed?":

==========  =========  ===========================================================================
code        permanent  why
==========  =========  ===========================================================================
0001-0003   yes        the content is wrong or unsupported; resending the same bytes fails again
0004 A001   yes        UUM&DS refused the sender's authorisation; fix the registration first
0004 A002   yes        a technical (REST) user was refused; a registration problem
0004 A003   no         UUM&DS internal error or down; a retry later may pass
0004 (none) no         "other internal error, contact the helpdesk": a server-side fault; retry
                       within the reception-awareness budget, then escalate
0005        no         ConnectionFailure is by definition what reception awareness retries
0006        no         a warning, not a failure: the MPC is empty now; pull again later
0007-0011   yes        packaging / header / P-Mode / payload problems of this message
0101-0103   yes        signature, decryption or policy failures repeat on every resend
0201, 0202  no         the receiver could not deliver; AS4 says resend (eDelivery 1.4.3.2)
0301        no         no receipt came back; reception awareness resends (same MessageId)
0302        no         the receipt did not match what we sent; resending (the receiver's duplicate
                       detection answers with a new receipt) is the only way to obtain valid evidence
0303        yes        the receiver cannot decompress what we compressed; resending changes nothing
unknown     yes        an unrecognised code is escalated to a human instead of being retried forever
==========  =========  ===========================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.ebms.model import EbmsError

FAILURE = "failure"
WARNING = "warning"


@dataclass(frozen=True)
class ErrorCode:
    """One row of the catalogue; ``permanent`` says whether resending the same message is pointless."""
    code: str
    short_description: str
    severity: str
    category: str
    origin: str
    meaning: str
    permanent: bool


def _e(code: str, short: str, severity: str, category: str, origin: str, permanent: bool, meaning: str) -> ErrorCode:
    return ErrorCode(code, short, severity, category, origin, meaning, permanent)


_CATALOGUE: tuple[ErrorCode, ...] = (
    # ICD Annex 4 table 20: ebMS processing errors (origin ebMS)
    _e("EBMS:0001", "ValueNotRecognized", FAILURE, "Content", "ebMS", True,
       "Although the message document is well formed and schema valid, some element/attribute contains a value "
       "that could not be recognized and therefore could not be used by the MSH."),
    _e("EBMS:0002", "FeatureNotSupported", WARNING, "Content", "ebMS", True,
       "Although the message document is well formed and schema valid, some element/attribute value cannot be "
       "processed as expected because the related feature is not supported by the MSH."),
    _e("EBMS:0003", "ValueInconsistent", FAILURE, "Content", "ebMS", True,
       "Although the message document is well formed and schema valid, some element/attribute value is "
       "inconsistent either with the content of other element/attribute, or with the processing mode of the "
       "MSH, or with the normative requirements of the ebMS specification."),
    _e("EBMS:0004", "Other", FAILURE, "Content", "ebMS", False,
       "Other error. In ICS2 it carries the UUM&DS sub-codes A001-A003 (ICD Annex 4 table 24); without a "
       "sub-code it is an internal error not related to UUM&DS (contact the helpdesk)."),
    _e("EBMS:0005", "ConnectionFailure", FAILURE, "Communication", "ebMS", False,
       "The MSH is experiencing temporary or permanent failure in trying to open a transport connection with "
       "a remote MSH."),
    _e("EBMS:0006", "EmptyMessagePartitionChannel", WARNING, "Communication", "ebMS", False,
       "There is no message available for pulling from this MPC at this moment."),
    _e("EBMS:0007", "MimeInconsistency", FAILURE, "Unpackaging", "ebMS", True,
       "The use of MIME is not consistent with the required usage in this specification."),
    _e("EBMS:0008", "FeatureNotSupported", FAILURE, "Unpackaging", "ebMS", True,
       "Although the message document is well formed and schema valid, the presence or absence of some "
       "element/attribute is not consistent with the capability of the MSH, with respect to supported "
       "features."),
    _e("EBMS:0009", "InvalidHeader", FAILURE, "Unpackaging", "ebMS", True,
       "The ebMS header is either not well formed as an XML document, or does not conform to the ebMS "
       "packaging rules."),
    _e("EBMS:0010", "ProcessingModeMismatch", FAILURE, "Processing", "ebMS", True,
       "The ebMS header or another header (e.g. reliability, security) expected by the MSH is not compatible "
       "with the expected content, based on the associated P-Mode."),
    _e("EBMS:0011", "ExternalPayloadError", FAILURE, "Content", "ebMS", True,
       "The MSH is unable to resolve an external payload reference (i.e. a Part that is not contained within "
       "the ebMS Message, as identified by a PartInfo/href URI)."),
    # ICD Annex 4 table 21: security processing errors (origin security)
    _e("EBMS:0101", "FailedAuthentication", FAILURE, "Processing", "security", True,
       "The signature in the Security header intended for the \"ebms\" SOAP actor, could not be validated by "
       "the Security module."),
    _e("EBMS:0102", "FailedDecryption", FAILURE, "Processing", "security", True,
       "The encrypted data reference the Security header intended for the \"ebms\" SOAP actor could not be "
       "decrypted by the Security Module."),
    _e("EBMS:0103", "PolicyNoncompliance", FAILURE, "Processing", "security", True,
       "The processor determined that the message's security methods, parameters, scope or other security "
       "policy-level requirements or agreements were not satisfied."),
    # ICD Annex 4 table 22: reliable messaging errors (origin reliability)
    _e("EBMS:0201", "DysfunctionalReliability", FAILURE, "Processing", "reliability", False,
       "Some reliability function as implemented by the Reliability module, is not operational, or the "
       "reliability state associated with this message sequence is not valid."),
    _e("EBMS:0202", "DeliveryFailure", FAILURE, "Communication", "reliability", False,
       "Although the message was sent under Guaranteed delivery requirement, the Reliability module could not "
       "get assurance that the message was properly delivered, in spite of resending efforts."),
    # ICD Annex 4 table 23: AS4 feature errors (origin ebMS)
    _e("EBMS:0301", "MissingReceipt", FAILURE, "Communication", "ebMS", False,
       "A Receipt has not been received for a message that was previously sent by the MSH generating this "
       "error."),
    _e("EBMS:0302", "InvalidReceipt", FAILURE, "Communication", "ebMS", False,
       "A Receipt has been received for a message that was previously sent by the MSH generating this error, "
       "but the content does not match the message content (e.g. some part has not been acknowledged, or the "
       "digest associated does not match the signature digest, for NRR)."),
    _e("EBMS:0303", "DecompressionFailure", FAILURE, "Communication", "ebMS", True,
       "An error occurred during the decompression."),
)

ERRORS: dict[str, ErrorCode] = {e.code: e for e in _CATALOGUE}


@dataclass(frozen=True)
class SubCode:
    """An ICS2 UUM&DS sub-code of EBMS:0004 (ICD Annex 4 table 24)."""
    code: str
    meaning: str
    permanent: bool


SUB_CODES: dict[str, SubCode] = {
    "A001": SubCode("A001", "UUM&DS rejected the authorization and the incoming message is rejected.", True),
    "A002": SubCode("A002", "Technical user trying to connect to the rest API is rejected.", True),
    "A003": SubCode("A003", "Internal UUM&DS error, or UUM&DS is down", False),
}

_SUB_CODE_RE = re.compile(r"(?<![A-Za-z0-9])(A00[1-3])(?![A-Za-z0-9])")


def _normalise(code: str) -> str:
    """``ebms:0004`` / `` EBMS:0004 `` -> ``EBMS:0004`` (some stacks vary the case of the prefix)."""
    c = code.strip()
    return "EBMS:" + c[5:] if c[:5].upper() == "EBMS:" else c


def lookup(code: str) -> ErrorCode | None:
    """The catalogue entry of ``code`` (case of the ``EBMS:`` prefix ignored), or None if unknown."""
    return ERRORS.get(_normalise(code))


def find_sub_code(*texts: str | None) -> str | None:
    """The first UUM&DS sub-code (A001-A003) found as a whole token in ``texts``, in the order given.

    The ICD does not say where the TI puts the sub-code, so callers pass ErrorDetail, Description and
    shortDescription; ``A0012`` or ``XA001`` do not count, ``A001:``, ``(A001)`` and ``subcode=A001`` do.
    """
    for text in texts:
        if text:
            m = _SUB_CODE_RE.search(text)
            if m:
                return m.group(1)
    return None


def is_permanent(code: str, sub_code: str | None = None) -> bool:
    """True when resending the same message cannot succeed (see the module table); unknown codes are permanent."""
    entry = lookup(code)
    if entry is None:
        return True
    if entry.code == "EBMS:0004" and sub_code is not None:
        sub = SUB_CODES.get(sub_code.strip().upper())
        if sub is not None:
            return sub.permanent
    return entry.permanent


def is_permanent_error(error: EbmsError) -> bool:
    """``is_permanent`` for a received eb:Error, looking for the sub-code in detail, description and short text."""
    return is_permanent(error.error_code,
                        find_sub_code(error.error_detail, error.description, error.short_description))


class EbmsFault(Exception):
    """A refusal that the transport answers with an ebMS Error signal carrying ``code``.

    Every engine layer (MIME, parsing, security, P-Mode matching, decompression) raises this with a message
    a person can act on; ``to_error`` turns it into the ``EbmsError`` the signal builder serialises.
    An unknown ``code`` is a programming error and raises ValueError at once, so a typo never reaches the wire.
    """

    def __init__(self, code: str, message: str, *, detail: str | None = None,
                 ref_to_message_id: str | None = None, severity: str | None = None) -> None:
        entry = lookup(code)
        if entry is None:
            raise ValueError(f"{code!r} is not an ebMS error code of the catalogue")
        if severity is not None and severity not in (FAILURE, WARNING):
            raise ValueError(f"severity must be 'failure' or 'warning', not {severity!r}")
        self.entry = entry
        self.code = entry.code
        self.message = message
        self.detail = detail
        self.ref_to_message_id = ref_to_message_id
        self.severity = severity or entry.severity
        super().__init__(f"{self.code} {entry.short_description}: {message}")

    @property
    def short_description(self) -> str:
        return self.entry.short_description

    @property
    def category(self) -> str:
        return self.entry.category

    @property
    def origin(self) -> str:
        return self.entry.origin

    @property
    def permanent(self) -> bool:
        return is_permanent(self.code, find_sub_code(self.detail, self.message))

    def to_error(self, *, ref_to_message_in_error: str | None = None) -> EbmsError:
        """The eb:Error to send. ``description`` is our message; ``error_detail`` the optional detail."""
        return EbmsError(
            error_code=self.code, severity=self.severity, category=self.category,
            short_description=self.short_description, description=self.message, error_detail=self.detail,
            origin=self.origin, ref_to_message_in_error=ref_to_message_in_error or self.ref_to_message_id,
        )

    def __repr__(self) -> str:
        return f"EbmsFault({self.code!r}, {self.message!r})"
