"""What travels over a broker, sans I/O: an intake message turned into a filing request, and a journal event
turned into a message for the ERP. Broker-neutral: the AMQP module (and a Kafka or JMS one later) only moves bytes.

Intake (one broker message = one filing):

* ``content_type`` ``application/xml`` (or ``text/xml``): the body is the ENS;
* ``multipart/related`` (or ``multipart/form-data``): the first part is the ENS, each further part an attachment
  whose ``Content-ID`` is the payload's ``binaryFile/identification`` (the HTTP API's convention);
* headers ``action`` and ``endpoint`` as the API's query string; ``message_id`` / ``correlation_id`` are kept in
  the journal and echoed on every event of the filing.

Events (at least once; ``message_id`` = ``ics2gw-event-<journal event id>``, stable, so consumers drop repeats):

* every state change of a filing: routing key ``filing.<new state>``, JSON body (``application/json``):
  ``{"event_id", "at", "event", "from", "to", "filing": {...}, "detail": {...}, "intake": {...}}``;
* every inbound business message: routing key ``inbound.<action>``, ``multipart/related``: the inbox metadata as
  the first part (``application/json``), then each payload part with its ``Content-ID`` and type.

Headers on every event: ``event``, ``lrn``, ``filer_eori``, ``mrn``, ``state``, ``action`` when known; the AMQP
``correlation_id`` echoes the intake message's correlation id (or its message id).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_PARTS = 64
_ROUTING_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class IntakeFormatError(ValueError):
    """The broker message cannot be a filing; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class IntakeRequest:
    data: bytes = field(repr=False)
    attachments: tuple[Any, ...] = ()                  # gateway.ics2.binaryfiles.Supplied, one per attachment
    action: str | None = None
    endpoint: str | None = None


def _header(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = str(value).strip()
    if not value or len(value) > 100 or not re.fullmatch(r"[A-Za-z0-9._:@-]+", value):
        raise IntakeFormatError("bad-header", f"header {name} must be a short plain token, not {value[:40]!r}")
    return value


def parse_intake(body: bytes, content_type: str | None, headers: dict[str, Any] | None = None) -> IntakeRequest:
    """The ENS (and its attachments) of one broker message, by the HTTP API's convention
    (``gateway.pipeline.submission.from_body``); raises ``IntakeFormatError`` or ``IntakeRefused``."""
    from gateway.pipeline.submission import from_body
    headers = headers or {}
    action, endpoint = _header(headers, "action"), _header(headers, "endpoint")
    media = (content_type or "application/xml").split(";")[0].strip().lower()
    if media in ("application/xml", "text/xml"):
        return IntakeRequest(bytes(body), (), action, endpoint)
    if media not in ("multipart/related", "multipart/form-data"):
        raise IntakeFormatError("content-type", f"content_type {media!r}: send application/xml or "
                                                "multipart/related (the ENS first, then its attachments)")
    sub = from_body(content_type, bytes(body))
    return IntakeRequest(sub.payload, tuple(sub.attachments), action, endpoint)


# ------------------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class EventMessage:
    routing_key: str
    body: bytes = field(repr=False)
    content_type: str
    message_id: str
    correlation_id: str | None
    headers: dict[str, Any]


def event_message_id(event_id: int) -> str:
    return f"ics2gw-event-{event_id}"


def routing_key(event: Any) -> str | None:
    """``filing.<state>`` for a state change, ``inbound.<action>`` for an inbound business message, else None."""
    detail = event.detail or {}
    if detail.get("to") and event.filing_id is not None:
        return "filing." + _ROUTING_SAFE.sub("-", str(detail["to"]))
    if event.event == "inbound-received" and detail.get("action"):
        return "inbound." + _ROUTING_SAFE.sub("-", str(detail["action"]))
    return None


def _headers(filing: dict[str, Any] | None, event: Any, extra: dict[str, Any]) -> dict[str, Any]:
    h: dict[str, Any] = {"event": event.event}
    if filing:
        for k in ("lrn", "filer_eori", "mrn", "state", "action"):
            if filing.get(k) is not None:
                h[k] = str(filing[k])
    h.update({k: str(v) for k, v in extra.items() if v is not None})
    return h


def filing_event(event: Any, filing: dict[str, Any] | None, intake: dict[str, Any] | None) -> EventMessage:
    """A state change; ``filing.state`` is the state this event moved to (not today's, which may be later)."""
    detail = dict(event.detail or {})
    frm, to = detail.pop("from", None), detail.pop("to", None)
    snapshot = None
    if filing is not None:
        # only what the event row itself fixes, or what never changes after intake: the same event published
        # again (at least once) carries the same bytes, whatever the filing became since
        snapshot = {k: filing.get(k) for k in ("lrn", "filer_eori", "action", "source")}
        snapshot["state"] = to
        snapshot["mrn"] = detail.get("mrn")
    doc = {"event_id": event.id, "at": event.at, "event": event.event, "from": frm, "to": to, "filing": snapshot,
           "detail": detail, "intake": intake}
    rk = routing_key(event)
    assert rk is not None
    return EventMessage(rk, json.dumps(doc, sort_keys=True, default=str).encode(), "application/json",
                        event_message_id(event.id), _correlation(intake), _headers(snapshot, event, {}))


def _correlation(intake: dict[str, Any] | None) -> str | None:
    if not intake:
        return None
    return intake.get("correlation_id") or intake.get("message_id")


def inbound_event(event: Any, metadata: dict[str, Any], parts: list[tuple[str, str, bytes]],
                  intake: dict[str, Any] | None) -> EventMessage:
    """``multipart/related``: the metadata JSON first, then each payload part (content id, type, bytes)."""
    boundary = "ics2gw-" + uuid.uuid4().hex
    out = bytearray()
    root = json.dumps({**metadata, "event_id": event.id}, sort_keys=True, default=str).encode()
    chunks = [("<metadata>", "application/json", root)] + [(f"<{cid}>", mt, data) for cid, mt, data in parts]
    for cid, mt, data in chunks:
        out += (f"--{boundary}\r\nContent-Type: {mt}\r\nContent-ID: {cid}\r\n"
                f"Content-Transfer-Encoding: binary\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    filing = metadata.get("filing") or {}
    rk = routing_key(event)
    assert rk is not None
    return EventMessage(rk, bytes(out), f'multipart/related; type="application/json"; boundary="{boundary}"; '
                                        f'start="<metadata>"', event_message_id(event.id), _correlation(intake),
                        _headers(filing, event, {"action": metadata.get("action"),
                                                 "message_id": metadata.get("message_id")}))


def rejection_event(*, reason: str, message: str, findings: list[dict[str, Any]], amqp_message_id: str | None,
                    correlation_id: str | None, queue: str, body_sha256: str = "") -> EventMessage:
    """The answer to an intake message that could not become a filing (never journaled, so not in the outbox)."""
    doc = {"event": "intake-rejected", "reason": reason, "message": message, "findings": findings[:100],
           "intake": {"channel": f"amqp:{queue}", "message_id": amqp_message_id, "correlation_id": correlation_id}}
    # stable for a redelivery of the same message, distinct for two messages (even without an AMQP message_id)
    mid = f"ics2gw-rejection-{uuid.uuid5(uuid.NAMESPACE_URL, f'{queue}/{amqp_message_id}/{reason}/{body_sha256}')}"
    return EventMessage(f"intake.rejected.{_ROUTING_SAFE.sub('-', reason)}",
                        json.dumps(doc, sort_keys=True, default=str).encode(), "application/json", mid,
                        correlation_id or amqp_message_id, {"event": "intake-rejected", "reason": reason})
