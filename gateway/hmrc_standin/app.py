"""An HMRC S&S GB stand-in: the OAuth server, the ENS store and the outcome/notification APIs, over HTTPS.

Faithful to the API definitions in ``shared/schemas/hmrc-ssgb`` where a client can tell the difference, and at
least as strict as HMRC:

* OAuth 2.0 authorisation-code grant (``/oauth/authorize`` approves at once as the configured Government
  Gateway user, and redirects with a one-time code), ``/oauth/token`` for the code and for refreshes; access
  tokens expire; every refresh rotates the refresh token and the old one stops working at once.
* Every API call: rate limit per application (429 ``MESSAGE_THROTTLED_OUT`` with Retry-After), bearer token
  (401), scope ``write:import-control-system`` (401), ``Accept: application/vnd.hmrc.1.0+xml`` (406),
  ``Content-Type: application/xml`` (415), body size (413).
* Submissions in HMRC's order: well-formed XML (no DOCTYPE) -> the EORI before ``/`` in ``MesSenMES3`` must be
  the caller's enrolled EORI (403, even for a schema-invalid body) -> for an IE313 the body's MRN equals the URL's
  (400, 8999) -> XSD and business rules with the ``uk-ssgb`` profile (400 ``err:ErrorResponse``) -> 200 with a
  14-character CorrelationId.
* Outcomes (IE328 / IE316 / IE304 / IE305) and IE351 notifications appear after ``outcome_delay`` seconds and
  stay until acknowledged by DELETE; they are visible only to the EORI that submitted. The sandbox's test
  headers are honoured (``simulateRiskingResponse``, ``riskingResponseError``, ``simulateInterventionResponse``);
  without them the ``default_decision`` applies (the real sandbox gives no outcome then, which is useless for a
  demo). LRN uniqueness is not checked at submission, as at HMRC: a repeated LRN comes back as an IE316.
* ``/admin/*`` (loopback): a JSON report, token expiry, injected failures, the throttle, the user who grants.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import secrets
import ssl
import string
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree

from gateway.hmrc import protocol
from gateway.hmrc.protocol import HmrcError
from gateway.hmrc_standin import outcomes as out
from gateway.ics2.validate import validate_payload
from gateway.ics2.xmlutil import child, child_text, local, text
from gateway.xmlsafe import XmlRejected, parse_xml

log = logging.getLogger("ics2gw.hmrc-standin")
_ALNUM = string.ascii_letters + string.digits


@dataclass
class StandinConfig:
    host: str = "127.0.0.1"
    port: int = 0
    cert: Path | None = None
    key: Path | None = None
    client_id: str = "ics2gw-test-client"
    client_secret: str = "ics2gw-test-secret"
    enrolled: tuple[str, ...] = ("GB1234231",)      # EORIs with an HMRC-SS-ORG enrolment
    user_eori: str = "GB1234231"                    # who grants access at /oauth/authorize
    access_token_seconds: float = 4 * 3600.0        # HMRC: 4 hours
    default_decision: str = "accept"                # accept | reject | none (the real sandbox: none)
    outcome_delay: float = 0.2
    interventions: bool = False                     # an IE351 after every accepted ENS
    rate_per_second: float = 50.0                   # HMRC's platform default is 3 per second per application
    max_body_bytes: int = 5 * 1024 * 1024


@dataclass
class _Token:
    eori: str
    client_id: str
    scope: str
    expires_at: float


@dataclass
class _Item:
    """An outcome or notification waiting for its DELETE."""
    eori: str
    ready_at: float
    body: bytes
    kind: str
    acked: bool = False


@dataclass
class State:
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    access: dict[str, _Token] = field(default_factory=dict)
    refresh: dict[str, dict[str, str]] = field(default_factory=dict)
    retired_refresh: set[str] = field(default_factory=set)
    submissions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, _Item] = field(default_factory=dict)
    notifications: dict[str, _Item] = field(default_factory=dict)
    lrns: dict[tuple[str, str], str] = field(default_factory=dict)     # (eori, lrn) -> mrn
    mrns: dict[str, dict[str, str]] = field(default_factory=dict)      # mrn -> {eori, lrn, office, tin}
    counters: dict[str, int] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)                  # injected HTTP statuses
    bucket: dict[str, tuple[float, float]] = field(default_factory=dict)
    mrn_seq: int = 0

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _xml(status: int, body: bytes, **headers: str) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml", charset="utf-8", headers=headers)


def _simple(status: int, code: str, message: str, **headers: str) -> web.Response:
    return _xml(status, protocol.simple_error_document(code, message), **headers)


class HmrcStandin:
    def __init__(self, cfg: StandinConfig, *, clock: Any = time.time) -> None:
        self.cfg, self.clock = cfg, clock
        self.state = State()
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes + 1024)
        app.router.add_get(protocol.AUTHORIZE, self.authorize)
        app.router.add_post(protocol.TOKEN, self.token)
        app.router.add_post("/oauth/refresh", self.token)           # the OpenAPI file's refreshUrl
        app.router.add_post(protocol.DECLARATIONS, self.submit)
        app.router.add_put(protocol.DECLARATIONS + "{mrn}", self.submit)
        app.router.add_get(protocol.OUTCOMES, self.list_outcomes)
        app.router.add_get(protocol.OUTCOMES + "{id}", self.get_outcome)
        app.router.add_delete(protocol.OUTCOMES + "{id}", self.ack_outcome)
        app.router.add_get(protocol.NOTIFICATIONS, self.list_notifications)
        app.router.add_get(protocol.NOTIFICATIONS + "{id}", self.get_notification)
        app.router.add_delete(protocol.NOTIFICATIONS + "{id}", self.ack_notification)
        app.router.add_get("/admin/report", self.admin_report)
        app.router.add_post("/admin/expire-tokens", self.admin_expire)
        app.router.add_post("/admin/fail", self.admin_fail)
        app.router.add_post("/admin/settings", self.admin_settings)
        return app

    async def start(self) -> int:
        ctx = None
        if self.cfg.cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(self.cfg.cert), str(self.cfg.key))
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.cfg.host, self.cfg.port, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ---------------------------------------------------------------------------------------------- OAuth
    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("response_type") != "code" or q.get("client_id") != self.cfg.client_id:
            return web.json_response({"error": "invalid_request", "error_description": "unknown client or "
                                      "response_type"}, status=400)
        if q.get("scope") != protocol.SCOPE:
            return web.json_response({"error": "invalid_scope"}, status=400)
        redirect = q.get("redirect_uri", "")
        if not redirect.startswith(("http://localhost", "http://127.0.0.1", "urn:ietf:wg:oauth:2.0:oob")):
            return web.json_response({"error": "invalid_request", "error_description": "redirect_uri"}, status=400)
        code = _rand(32)
        self.state.codes[code] = {"redirect_uri": redirect, "eori": self.cfg.user_eori, "scope": q["scope"]}
        self.state.count("authorisations")
        sep = "&" if "?" in redirect else "?"
        target = redirect + sep + urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
        if redirect.startswith("urn:"):
            return web.Response(text=f"Authorisation code: {code}\n")
        raise web.HTTPFound(target)

    def _issue(self, eori: str, client_id: str, scope: str) -> dict[str, Any]:
        access, refresh = _rand(32), _rand(32)
        self.state.access[access] = _Token(eori, client_id, scope, self.clock() + self.cfg.access_token_seconds)
        self.state.refresh[refresh] = {"eori": eori, "client_id": client_id, "scope": scope}
        return {"access_token": access, "refresh_token": refresh, "expires_in": int(self.cfg.access_token_seconds),
                "scope": scope, "token_type": "bearer"}

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.cfg.client_id or form.get("client_secret") != self.cfg.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            code = self.state.codes.pop(str(form.get("code", "")), None)   # one use only
            if code is None or code["redirect_uri"] != form.get("redirect_uri"):
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.state.count("codes-exchanged")
            return web.json_response(self._issue(code["eori"], self.cfg.client_id, code["scope"]))
        if grant == "refresh_token":
            old = str(form.get("refresh_token", ""))
            info = self.state.refresh.pop(old, None)      # rotation: the old refresh token dies now
            if info is None:
                self.state.count("refresh-refused" if old in self.state.retired_refresh else "refresh-unknown")
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.state.retired_refresh.add(old)
            self.state.count("refreshes")
            return web.json_response(self._issue(info["eori"], info["client_id"], info["scope"]))
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    # -------------------------------------------------------------------------------------- API gatekeeping
    def _gate(self, request: web.Request, *, body: bool) -> tuple[_Token | None, web.Response | None]:
        st = self.state
        if st.fail_next:
            status = st.fail_next.pop(0)
            st.count(f"injected-{status}")
            return None, _simple(status, "SERVER_ERROR" if status >= 500 else "INJECTED", "injected failure",
                                 **({"Retry-After": "1"} if status == 429 else {}))
        auth = request.headers.get("Authorization", "")
        tok = st.access.get(auth[7:]) if auth.startswith("Bearer ") else None
        client = tok.client_id if tok else request.remote or "?"
        now = self.clock()
        level, last = st.bucket.get(client, (self.cfg.rate_per_second, now))
        level = min(self.cfg.rate_per_second, level + (now - last) * self.cfg.rate_per_second)
        if level < 1.0:
            st.bucket[client] = (level, now)
            st.count("throttled")
            return None, _simple(429, "MESSAGE_THROTTLED_OUT", "The request for the API is throttled as you have "
                                 "exceeded your quota.", **{"Retry-After": "1"})
        st.bucket[client] = (level - 1.0, now)
        if tok is None:
            st.count("unauthorised")
            return None, _simple(401, "INVALID_CREDENTIALS", "Invalid Authentication information provided")
        if tok.expires_at <= now:
            st.count("expired-token")
            return None, _simple(401, "INVALID_CREDENTIALS", "Invalid Authentication information provided")
        if protocol.SCOPE not in tok.scope.split():
            return None, _simple(401, "INCORRECT_ACCESS_TOKEN_TYPE", "The access token does not carry the "
                                 "write:import-control-system scope")
        if tok.eori not in self.cfg.enrolled:
            st.count("not-enrolled")
            return None, _simple(401, "UNAUTHORIZED", "Unauthorized: no HMRC-SS-ORG enrolment")
        if request.headers.get("Accept") != protocol.ACCEPT:
            return None, _simple(406, "ACCEPT_HEADER_INVALID", "The accept header is missing or invalid")
        if body:
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/xml":
                return None, _simple(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/xml")
            if (request.content_length or 0) > self.cfg.max_body_bytes:
                return None, _simple(413, "REQUEST_ENTITY_TOO_LARGE", "Request entity too large")
        return tok, None

    # ------------------------------------------------------------------------------------------ submissions
    async def submit(self, request: web.Request) -> web.Response:
        tok, refused = self._gate(request, body=True)
        if refused is not None:
            return refused
        assert tok is not None
        data = await request.read()
        if len(data) > self.cfg.max_body_bytes:
            return _simple(413, "REQUEST_ENTITY_TOO_LARGE", "Request entity too large")
        amend_mrn = request.match_info.get("mrn")
        expected = "CC313A" if amend_mrn is not None else "CC315A"
        try:
            root = parse_xml(data, what="ENS")
        except XmlRejected as exc:
            self.state.count("refused-400")
            return _xml(400, protocol.error_document([HmrcError("4999", "schema", str(exc), "/")]))
        sender = text(child(root, "MesSenMES3")) or ""
        if sender.split("/", 1)[0] != tok.eori:
            self.state.count("refused-403")
            return _simple(403, "FORBIDDEN", "Permission denied")
        if local(root) != expected:
            self.state.count("refused-400")
            return _xml(400, protocol.error_document([HmrcError("4999", "schema", f"expected {expected}, got "
                                                                f"{local(root)}", "/")]))
        hea = child(root, "HEAHEA")
        if amend_mrn is not None and child_text(hea, "DocNumHEA5") != amend_mrn:
            self.state.count("refused-400")
            return _xml(400, protocol.error_document([HmrcError("8999", "business", "MRN in body and URL do not "
                                                                "match.", "")]))
        report = await asyncio.to_thread(validate_payload, data, profile="uk-ssgb")
        if not report.valid:
            self.state.count("refused-400")
            errs = [HmrcError(f.code, "schema" if f.rule == "XSD" else "business", f.text,
                              f.pointer.replace("/CC3", "/ie:CC3", 1)) for f in report.errors]
            return _xml(400, protocol.error_document(errs))
        cid = _rand(14)
        self.state.count("accepted-200")
        decision = request.headers.get("simulateRiskingResponse") or self.cfg.default_decision
        reason = request.headers.get("riskingResponseError", "badTransportMode")
        intervene = (request.headers.get("simulateInterventionResponse") == "true") or self.cfg.interventions
        try:
            delay = min(float(request.headers.get("simulateRiskingResponseLatencyMillis", "0")) / 1000.0, 30.0)
        except ValueError:
            delay = 0.0
        sub = {"correlation_id": cid, "eori": tok.eori, "kind": expected, "sender": sender,
               "lrn": child_text(hea, "RefNumHEA4"), "mrn": amend_mrn,
               "sha256": hashlib.sha256(data).hexdigest(), "decision": decision, "at": self.clock()}
        self.state.submissions.append(sub)
        self._decide(root, sub, decision, reason, intervene, self.clock() + self.cfg.outcome_delay + delay)
        return _xml(200, protocol.success_document(cid))

    def _next_mrn(self) -> str:
        self.state.mrn_seq += 1
        year = dt.datetime.now(dt.timezone.utc).strftime("%y")
        return f"{year}GB{self.state.mrn_seq:013d}0"

    def _decide(self, root: etree._Element, sub: dict[str, Any], decision: str, reason: str, intervene: bool,
                ready_at: float) -> None:
        if decision not in ("accept", "reject"):
            return                                    # the real sandbox: no outcome without the test header
        now = dt.datetime.now(dt.timezone.utc)
        eori, cid = sub["eori"], sub["correlation_id"]
        hea = child(root, "HEAHEA")
        office = child_text(child(root, "CUSOFFFENT730"), "RefNumCUSOFFFENT731") or "GB000011"
        tin = child_text(child(root, "PERLODSUMDEC"), "TINPLD1") or eori
        msg_id = _rand(12)
        common = {"submitter": sub["sender"], "correlation_id": cid, "message_id": msg_id, "now": now}
        if sub["kind"] == "CC315A":
            lrn = sub["lrn"] or ""
            errors: list[tuple[str, str, str]] = []
            if (eori, lrn) in self.state.lrns:
                errors = [("26", "/CC315A[1]/HEAHEA[1]/RefNumHEA4[1]", "R891")]     # LRN not unique
            elif office.startswith("XI"):
                errors = [("12", "/CC315A[1]/CUSOFFFENT730[1]/RefNumCUSOFFFENT731[1]", "8999")]
            elif decision == "reject":
                errors = {"nonUniqueLRN": [("26", "/CC315A[1]/HEAHEA[1]/RefNumHEA4[1]", "R891")],
                          "badMessageCode": [("12", "/CC315A[1]/MesTypMES20[1]", "R030")]}.get(
                    reason, [("12", "/CC315A[1]/HEAHEA[1]/TraModAtBorHEA76[1]", "C17")])
            if errors:
                el = out.rejected(lrn=lrn, errors=errors, **common)
            else:
                mrn = self._next_mrn()
                self.state.lrns[(eori, lrn)] = mrn
                self.state.mrns[mrn] = {"eori": eori, "lrn": lrn, "office": office, "tin": tin}
                el = out.accepted(lrn=lrn, mrn=mrn, office=office, person_lodging=tin, **common)
                if intervene:
                    self._notify(sub, lrn, mrn, office, tin, child_text(hea, "TraModAtBorHEA76") or "4",
                                 ready_at)
        else:
            mrn = sub["mrn"] or ""
            known = self.state.mrns.get(mrn)
            amended_at = child_text(hea, "DatTimAmeHEA113") or now.strftime("%Y%m%d%H%M")
            if known is None or known["eori"] != eori:
                el = out.amendment_rejected(mrn=mrn, amended_at=amended_at, office=office,
                                            errors=[("12", "/CC313A[1]/HEAHEA[1]/DocNumHEA5[1]", "R101")], **common)
            elif decision == "reject":
                el = out.amendment_rejected(mrn=mrn, amended_at=amended_at, office=office,
                                            errors=[("12", "/CC313A[1]/HEAHEA[1]/TraModAtBorHEA76[1]", "C17")],
                                            **common)
            else:
                el = out.amendment_accepted(mrn=mrn, amended_at=amended_at, office=office, person_lodging=tin,
                                            **common)
        body = out.wrap(el, notification=False, ack_href=protocol.OUTCOMES + cid)
        self.state.outcomes[cid] = _Item(eori, ready_at, body, local(el))

    def _notify(self, sub: dict[str, Any], lrn: str, mrn: str, office: str, tin: str, mode: str,
                ready_at: float) -> None:
        nid = _rand(9)
        el = out.intervention(submitter=sub["sender"], correlation_id=sub["correlation_id"], message_id=_rand(12),
                              lrn=lrn, mrn=mrn, office=office, transport_mode=mode, person_lodging=tin,
                              now=dt.datetime.now(dt.timezone.utc))
        body = out.wrap(el, notification=True, ack_href=protocol.NOTIFICATIONS + nid)
        self.state.notifications[nid] = _Item(sub["eori"], ready_at, body, "CC351A")

    # ------------------------------------------------------------------------------- outcomes / notifications
    def _visible(self, items: dict[str, _Item], eori: str) -> list[tuple[str, _Item]]:
        now = self.clock()
        return [(k, v) for k, v in items.items() if v.eori == eori and not v.acked and v.ready_at <= now]

    async def list_outcomes(self, request: web.Request) -> web.Response:
        tok, refused = self._gate(request, body=False)
        if refused is not None:
            return refused
        assert tok is not None
        items = self._visible(self.state.outcomes, tok.eori)[:100]
        if not items:
            return web.Response(status=204)
        root = etree.Element("entryDeclarationResponses")
        for cid, item in items:
            r = etree.SubElement(root, "response")
            etree.SubElement(r, "correlationId").text = cid
            etree.SubElement(r, "link").text = protocol.OUTCOMES + cid
            if item.kind == "CC328A":
                mrn = parse_mrn(item.body)
                if mrn:
                    etree.SubElement(r, "MRN").text = mrn
        return _xml(200, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    async def _get(self, request: web.Request, items: dict[str, _Item], code: str) -> web.Response:
        tok, refused = self._gate(request, body=False)
        if refused is not None:
            return refused
        assert tok is not None
        item = items.get(request.match_info["id"])
        if item is None or item.eori != tok.eori or item.acked or item.ready_at > self.clock():
            return _simple(404, code, "not found")
        self.state.count(f"fetched-{item.kind}")
        return _xml(200, item.body)

    async def _ack(self, request: web.Request, items: dict[str, _Item], code: str) -> web.Response:
        tok, refused = self._gate(request, body=False)
        if refused is not None:
            return refused
        assert tok is not None
        item = items.get(request.match_info["id"])
        if item is None or item.eori != tok.eori or item.acked:
            return _simple(404, code, "not found")
        item.acked = True
        self.state.count(f"acked-{item.kind}")
        return web.Response(status=200)

    async def get_outcome(self, request: web.Request) -> web.Response:
        return await self._get(request, self.state.outcomes, "OUTCOME_NOT_FOUND")

    async def ack_outcome(self, request: web.Request) -> web.Response:
        return await self._ack(request, self.state.outcomes, "OUTCOME_NOT_FOUND")

    async def list_notifications(self, request: web.Request) -> web.Response:
        tok, refused = self._gate(request, body=False)
        if refused is not None:
            return refused
        assert tok is not None
        items = self._visible(self.state.notifications, tok.eori)[:100]
        if not items:
            return web.Response(status=204)
        root = etree.Element("advancedNotifications")
        for nid, item in items:
            r = etree.SubElement(root, "response")
            etree.SubElement(r, "correlationId").text = parse_correlation(item.body) or ""
            etree.SubElement(r, "notificationId").text = nid
            etree.SubElement(r, "link").text = protocol.NOTIFICATIONS + nid
        return _xml(200, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    async def get_notification(self, request: web.Request) -> web.Response:
        return await self._get(request, self.state.notifications, "NOTIFICATION_NOT_FOUND")

    async def ack_notification(self, request: web.Request) -> web.Response:
        return await self._ack(request, self.state.notifications, "NOTIFICATION_NOT_FOUND")

    # ------------------------------------------------------------------------------------------------ admin
    def _admin_ok(self, request: web.Request) -> None:
        if request.remote not in ("127.0.0.1", "::1"):
            raise web.HTTPForbidden(text="admin is loopback only")

    async def admin_report(self, request: web.Request) -> web.Response:
        self._admin_ok(request)
        st = self.state
        return web.json_response({
            "counters": st.counters, "submissions": st.submissions,
            "registered": {f"{e}/{lrn}": mrn for (e, lrn), mrn in st.lrns.items()},
            "outcomes": {k: {"kind": v.kind, "acked": v.acked} for k, v in st.outcomes.items()},
            "notifications": {k: {"kind": v.kind, "acked": v.acked} for k, v in st.notifications.items()},
            "live_refresh_tokens": len(st.refresh)})

    async def admin_expire(self, request: web.Request) -> web.Response:
        self._admin_ok(request)
        for tok in self.state.access.values():
            tok.expires_at = 0.0
        return web.json_response({"expired": len(self.state.access)})

    async def admin_fail(self, request: web.Request) -> web.Response:
        self._admin_ok(request)
        doc = await request.json()
        self.state.fail_next.extend([int(doc.get("status", 503))] * int(doc.get("count", 1)))
        return web.json_response({"queued": len(self.state.fail_next)})

    async def admin_settings(self, request: web.Request) -> web.Response:
        self._admin_ok(request)
        doc = await request.json()
        for key in ("rate_per_second", "outcome_delay", "access_token_seconds"):
            if key in doc:
                setattr(self.cfg, key, float(doc[key]))
        for key in ("default_decision", "user_eori"):
            if key in doc:
                setattr(self.cfg, key, str(doc[key]))
        if "interventions" in doc:
            self.cfg.interventions = bool(doc["interventions"])
        if "enrolled" in doc:
            self.cfg.enrolled = tuple(doc["enrolled"])
        return web.json_response({"ok": True})


def parse_mrn(body: bytes) -> str | None:
    try:
        return protocol.parse_wrapped(body).mrn
    except protocol.ProtocolError:
        return None


def parse_correlation(body: bytes) -> str | None:
    try:
        return protocol.parse_wrapped(body, notification=True).correlation_id
    except protocol.ProtocolError:
        return None


async def serve(cfg: StandinConfig, *, ready: Any = None, stop: asyncio.Event | None = None) -> None:
    standin = HmrcStandin(cfg)
    port = await standin.start()
    scheme = "https" if cfg.cert else "http"
    log.info("hmrc stand-in listening url=%s://%s:%d enrolled=%s", scheme, cfg.host, port, ",".join(cfg.enrolled))
    if ready is not None:
        ready(port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await standin.stop()


def report_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True)
