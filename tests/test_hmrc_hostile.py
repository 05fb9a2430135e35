"""The HMRC route against what a hostile or broken HMRC (or anything answering in its name) can send.

A small TLS server (the test PKI, 127.0.0.1) plays HMRC with canned answers: success bodies that arrive in many
pieces, too large or cut off; outcome pages with poisoned items, unsafe ids and endless full pages; outcomes that
name one filing by correlation id and another by LRN / MRN. The gateway side is real: the client, the poller,
the inbound sink, a real SQLite journal with its writer, the inbox on disk."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.hmrc import protocol
from gateway.hmrc.client import HmrcClient, Refused, RetryLater, Submitted
from gateway.hmrc.oauth import OAuthSettings, TokenManager
from gateway.hmrc.poller import HmrcPoller
from gateway.hmrc.route import ROUTE, HmrcInbound, HmrcRoute
from gateway.hmrc.tokens import TokenSet, TokenStore
from gateway.hmrc_standin import outcomes
from gateway.journal import JournalWriter, NewFiling, SqliteJournal
from gateway.journal.records import OutboundMessage
from gateway.journal.states import FilingState as S
from tests.hmrc_support import EORI, FILER, ie313, ie315

T0 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.timezone.utc)
MRN_A, MRN_B = "26GB00000000000010", "26GB00000000000028"


class Alerts:
    def __init__(self) -> None:
        self.raised: list[dict[str, Any]] = []

    def raise_alert(self, kind: str, **detail: Any) -> None:
        self.raised.append({"alert": kind, **detail})

    def kinds(self) -> list[str]:
        return [a["alert"] for a in self.raised]


class FakeHmrc:
    """Canned answers by (method, path); records every request."""

    def __init__(self, pki: Path) -> None:
        self.pki = pki
        self.routes: dict[tuple[str, str], Any] = {}
        self.requests: list[tuple[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        h = self.routes.get((request.method, request.path))
        if h is None:
            return web.Response(status=404)
        return await h(request) if asyncio.iscoroutinefunction(h) else h(request)

    async def start(self) -> None:
        import ssl
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki / "customs-tls-server.pem", self.pki / "customs-tls-server.key")
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fake(pki: Path) -> Any:
    f = FakeHmrc(pki)
    await f.start()
    yield f
    await f.stop()


def _client(fake: FakeHmrc, pki: Path, tmp_path: Path) -> HmrcClient:
    store = TokenStore(tmp_path / "token.json")
    now = time.time()
    store.save(TokenSet("access-" + "a" * 30, "refresh-" + "r" * 30, now + 4 * 3600, protocol.SCOPE, now))
    settings = OAuthSettings(f"https://127.0.0.1:{fake.port}", "cid", "secret", "http://127.0.0.1:9/cb")
    return HmrcClient(settings.base_url, TokenManager(store, settings), ca_file=pki / "customs-root.pem",
                      timeout_seconds=10)


# ------------------------------------------------------------------------------------------ submission answers
async def test_a_success_body_in_many_pieces_is_read_whole(fake: FakeHmrc, pki: Path, tmp_path: Path) -> None:
    """``resp.content.read(n)`` returned the first buffered piece only: a 200 whose body came in several TCP
    segments lost its CorrelationId, and the filing failed although HMRC had it."""
    body = protocol.success_document("ABCDEFGHIJ1234")
    pad = b"<!--" + b"x" * 200_000 + b"-->"
    doc = body.replace(b"<ns:ResponseData>", pad + b"<ns:ResponseData>")

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/xml"})
        await resp.prepare(request)
        for i in range(0, len(doc), 1000):
            await resp.write(doc[i:i + 1000])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    fake.routes[("POST", protocol.DECLARATIONS)] = streamed
    c = _client(fake, pki, tmp_path)
    try:
        res = await c.submit(ie315("LRN-PIECES"), kind="IE315")
    finally:
        await c.close()
    assert isinstance(res, Submitted) and res.correlation_id == "ABCDEFGHIJ1234"


@pytest.mark.parametrize("shape", ["huge", "cut-off"])
async def test_a_200_whose_body_cannot_be_read_is_never_sent_again(fake: FakeHmrc, pki: Path, tmp_path: Path,
                                                                   shape: str) -> None:
    """HMRC has the filing once it said 200: a lost body must not become a retry (a second filing)."""
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        chunk = b" " * 65536
        for _ in range(protocol.MAX_DOCUMENT_BYTES // 65536 + 2):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def cut_off(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Length": "5000"})
        await resp.prepare(request)
        await resp.write(b"<ns:SuccessResponse")
        request.transport.close()  # type: ignore[union-attr]
        return resp

    fake.routes[("POST", protocol.DECLARATIONS)] = huge if shape == "huge" else cut_off
    c = _client(fake, pki, tmp_path)
    try:
        res = await c.submit(ie315("LRN-LOST-200"), kind="IE315")
    finally:
        await c.close()
    assert isinstance(res, Refused) and res.http_status == 200, res
    assert res.classification()[0] == "permanent" and "before resending" in res.reason
    assert not isinstance(res, RetryLater)


# ------------------------------------------------------------------------------------------------ the journal
async def _journal(tmp_path: Path) -> tuple[SqliteJournal, JournalWriter]:
    j = SqliteJournal.open(tmp_path / "j.sqlite3", now=T0)
    w = JournalWriter(j)
    await w.__aenter__()
    return j, w


def _filing(j: SqliteJournal, lrn: str, *, filer: str = FILER, endpoint: str = "hmrc", cid: str | None = None,
            mrn: str | None = None, state: str = S.SENT) -> Any:
    f, _ = j.insert_filing(NewFiling(filer_eori=filer, lrn=lrn, sender_eori=EORI, action="IE315",
                                     payload_sha256="0" * 64, endpoint=endpoint), now=T0)
    mid = f"m-{filer}-{lrn}"
    j.enqueue_message(OutboundMessage(message_id=mid, action="IE315", sealed=ie315(lrn), content_type="x",
                                      filing_id=f.id, priority="B", endpoint=endpoint), now=T0)
    for st in (S.QUEUED, S.SENDING, S.SENT):
        f = j.transition(f.id, st, now=T0)
    if cid:
        j.record_route_ref(ROUTE, cid, message_id=mid, filing_id=f.id, now=T0)
    if mrn:
        f = j.transition(f.id, S.REGISTERED, now=T0, mrn=mrn)
    return f


def _ie328(cid: str | None, lrn: str, mrn: str) -> protocol.Outcome:
    el = outcomes.accepted(submitter=EORI, correlation_id=cid or "", message_id="X1", lrn=lrn, mrn=mrn,
                           office="GB000060", person_lodging=FILER, now=T0)
    doc = outcomes.wrap(el, notification=False, ack_href="/x")
    if cid is None:
        doc = doc.replace(b"<CorIdeMES25></CorIdeMES25>", b"").replace(b"<CorIdeMES25/>", b"")
    return protocol.parse_wrapped(doc)


def _amend_outcome(kind: str, cid: str, mrn: str) -> protocol.Outcome:
    if kind == "IE304":
        el = outcomes.amendment_accepted(submitter=EORI, correlation_id=cid, message_id="X2", mrn=mrn,
                                         amended_at="202612021000", office="GB000060", person_lodging=FILER,
                                         now=T0)
    else:
        el = outcomes.amendment_rejected(submitter=EORI, correlation_id=cid, message_id="X3", mrn=mrn,
                                         amended_at="202612021000", office="GB000060", now=T0,
                                         errors=[("12", "/HEAHEA", "R123")])
    return protocol.parse_wrapped(outcomes.wrap(el, notification=False, ack_href="/x"))


def _inbound(j: SqliteJournal, w: JournalWriter, tmp_path: Path, alerts: Alerts) -> HmrcInbound:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    (tmp_path / "status").mkdir(exist_ok=True)
    return HmrcInbound(j, w, inbox_dir=tmp_path / "inbox", status_dir=tmp_path / "status", alerts=alerts,
                       clock=lambda: T0)


async def test_an_outcome_naming_one_filing_by_correlation_id_and_another_by_lrn_is_not_applied(
        tmp_path: Path) -> None:
    j, w = await _journal(tmp_path)
    alerts = Alerts()
    try:
        a = _filing(j, "LRN-A", cid="CIDAAAAAAAAAAA")
        b = _filing(j, "LRN-B", cid="CIDBBBBBBBBBBB")
        c = _filing(j, "LRN-C", cid="CIDCCCCCCCCCCC")
        sink = _inbound(j, w, tmp_path, alerts)
        # A's correlation id, B's LRN: neither A nor B may become registered with this MRN
        assert await sink.deliver(_ie328("CIDAAAAAAAAAAA", "LRN-B", MRN_A), source_id="outcome/CIDAAAAAAAAAAA")
        assert j.get_filing(a.id).state == S.SENT and j.get_filing(b.id).state == S.SENT
        assert alerts.kinds() == ["hmrc-correlation-conflict"]
        # listed under B's id but carrying C's CorIdeMES25: a conflict too
        assert await sink.deliver(_ie328("CIDCCCCCCCCCCC", "LRN-C", MRN_A), source_id="outcome/CIDBBBBBBBBBBB")
        assert j.get_filing(b.id).state == S.SENT and j.get_filing(c.id).state == S.SENT
        # the honest one is applied
        assert await sink.deliver(_ie328("CIDCCCCCCCCCCC", "LRN-C", MRN_A), source_id="outcome/CIDCCCCCCCCCCC")
        assert (j.get_filing(c.id).state, j.get_filing(c.id).mrn) == (S.REGISTERED, MRN_A)
        # an IE328 that would give C's MRN to D as well is refused
        d = _filing(j, "LRN-D", cid="CIDDDDDDDDDDDD")
        assert await sink.deliver(_ie328("CIDDDDDDDDDDDD", "LRN-D", MRN_A), source_id="outcome/CIDDDDDDDDDDDD")
        assert j.get_filing(d.id).state == S.SENT
        assert alerts.kinds().count("hmrc-correlation-conflict") == 3
        assert len(j.list_orphans()) == 3
    finally:
        await w.__aexit__(None, None, None)
        j.close()


async def test_same_lrn_from_two_filers_is_never_guessed(tmp_path: Path) -> None:
    j, w = await _journal(tmp_path)
    alerts = Alerts()
    try:
        a = _filing(j, "LRN-SAME", filer="GBFILER000001")
        b = _filing(j, "LRN-SAME", filer="GBFILER000002")
        other = _filing(j, "LRN-ICS2", endpoint="ics2-ti")     # another route's filing is never a candidate
        sink = _inbound(j, w, tmp_path, alerts)
        # an unknown correlation id: the LRN names two filings, so the outcome is an orphan
        assert await sink.deliver(_ie328(None, "LRN-SAME", MRN_A), source_id="outcome/UNKNOWN0000001")
        assert j.get_filing(a.id).state == S.SENT and j.get_filing(b.id).state == S.SENT
        assert await sink.deliver(_ie328(None, "LRN-ICS2", MRN_B), source_id="outcome/UNKNOWN0000002")
        assert j.get_filing(other.id).state == S.SENT
        assert alerts.kinds() == ["hmrc-correlation-conflict", "orphan"]     # ambiguous LRN, then no match
        assert "2 filings" in alerts.raised[0]["reason"]
    finally:
        await w.__aexit__(None, None, None)
        j.close()


async def test_ie305_for_one_amendment_while_another_is_pending(tmp_path: Path) -> None:
    """Two IE313 accepted by HMRC; the first is rejected (IE305): the second is still pending, so the filing
    stays pending-amendment until its IE304 arrives, then it is amended."""
    j, w = await _journal(tmp_path)
    alerts = Alerts()
    route = HmrcRoute(None, None, alerts)  # type: ignore[arg-type]
    try:
        f = _filing(j, "LRN-AM", cid="CIDFIRST000001", mrn=MRN_A)
        for n, cid in ((1, "CIDAMEND000001"), (2, "CIDAMEND000002")):
            mid = f"amend-{n}"
            j.enqueue_message(OutboundMessage(message_id=mid, action="IE313", sealed=ie313(MRN_A), content_type="x",
                                              filing_id=f.id, priority="B", endpoint="hmrc"), now=T0)
            msg = j.get_message(mid)
            with j.transaction():
                route.after_send(j, msg, Submitted(cid, b""), j.get_filing(f.id), T0)
        assert j.get_filing(f.id).state == S.PENDING_AMENDMENT
        sink = _inbound(j, w, tmp_path, alerts)
        assert await sink.deliver(_amend_outcome("IE305", "CIDAMEND000001", MRN_A),
                                  source_id="outcome/CIDAMEND000001")
        assert j.get_filing(f.id).state == S.PENDING_AMENDMENT          # the second amendment is still open
        assert await sink.deliver(_amend_outcome("IE304", "CIDAMEND000002", MRN_A),
                                  source_id="outcome/CIDAMEND000002")
        assert j.get_filing(f.id).state == S.AMENDED
        # an IE304 whose correlation id names the IE315 (not an IE313) is a conflict, not an amendment
        assert await sink.deliver(_amend_outcome("IE304", "CIDFIRST000001", MRN_A),
                                  source_id="outcome/CIDFIRST000001")
        assert "hmrc-correlation-conflict" in alerts.kinds()
    finally:
        await w.__aexit__(None, None, None)
        j.close()


async def test_a_reused_correlation_id_does_not_roll_back_the_send(tmp_path: Path) -> None:
    """Raising inside the sender's commit would roll it back and the lease would POST the filing again."""
    j, w = await _journal(tmp_path)
    alerts = Alerts()
    try:
        _filing(j, "LRN-1", cid="CIDREUSED00001")
        f2 = _filing(j, "LRN-2")
        msg = j.get_message("m-" + FILER + "-LRN-2")
        with j.transaction():
            HmrcRoute(None, None, alerts).after_send(j, msg, Submitted("CIDREUSED00001", b""),  # type: ignore[arg-type]
                                                      j.get_filing(f2.id), T0)
        assert j.find_route_ref(ROUTE, "CIDREUSED00001")[0] == "m-" + FILER + "-LRN-1"
        assert any(e.event == "hmrc-correlation-conflict" for e in j.events(filing_id=f2.id))
        assert "hmrc-correlation-conflict" in alerts.kinds()
    finally:
        await w.__aexit__(None, None, None)
        j.close()


# ---------------------------------------------------------------------------------------------------- polling
def _list(ids: list[str]) -> bytes:
    return ("<entryDeclarationResponses>" + "".join(
        f"<response><correlationId>{i}</correlationId><link>/customs/imports/outcomes/{i}</link></response>"
        for i in ids) + "</entryDeclarationResponses>").encode()


async def test_a_poisoned_outcome_neither_blocks_the_others_nor_is_acknowledged(fake: FakeHmrc, pki: Path,
                                                                               tmp_path: Path) -> None:
    j, w = await _journal(tmp_path)
    alerts = Alerts()
    good = _filing(j, "LRN-GOOD", cid="GOODCID0000001")
    ok_doc = outcomes.wrap(outcomes.accepted(submitter=EORI, correlation_id="GOODCID0000001", message_id="M1",
                                             lrn="LRN-GOOD", mrn=MRN_A, office="GB000060", person_lodging=FILER,
                                             now=T0), notification=False, ack_href="/x")
    fake.routes[("GET", protocol.OUTCOMES)] = lambda r: web.Response(
        body=_list(["POISON00000001", "../etc", "GOODCID0000001"]))
    fake.routes[("GET", protocol.OUTCOMES + "POISON00000001")] = lambda r: web.Response(
        body=b"<outcomeResponse><response><CC999A/></response></outcomeResponse>")
    fake.routes[("GET", protocol.OUTCOMES + "GOODCID0000001")] = lambda r: web.Response(body=ok_doc)
    for cid in ("POISON00000001", "GOODCID0000001"):
        fake.routes[("DELETE", protocol.OUTCOMES + cid)] = lambda r: web.Response(status=200)
    fake.routes[("GET", protocol.NOTIFICATIONS)] = lambda r: web.Response(status=204)
    c = _client(fake, pki, tmp_path)
    sink = _inbound(j, w, tmp_path, alerts)
    poller = HmrcPoller(c, sink.deliver, interval=60, alerts=alerts)
    try:
        report = await poller.poll_once()
        assert report.delivered == 1 and report.acknowledged == 1 and len(report.errors) == 1
        assert j.get_filing(good.id).state == S.REGISTERED
        assert ("DELETE", protocol.OUTCOMES + "POISON00000001") not in fake.requests     # stays at HMRC
        assert not any("etc" in p for _, p in fake.requests)
        await poller.poll_once()                     # once more: alerted once, still not acknowledged
        assert alerts.kinds().count("hmrc-item-unreadable") == 1
        assert ("DELETE", protocol.OUTCOMES + "POISON00000001") not in fake.requests
    finally:
        await c.close()
        await w.__aexit__(None, None, None)
        j.close()


async def test_an_endless_full_page_does_not_spin(fake: FakeHmrc, pki: Path, tmp_path: Path) -> None:
    """HMRC keeps listing 100 items we already journaled (or cannot read): the poller waits its interval instead
    of polling back to back."""
    j, w = await _journal(tmp_path)
    alerts = Alerts()
    ids = [f"FULL{i:010d}" for i in range(100)]
    fake.routes[("GET", protocol.OUTCOMES)] = lambda r: web.Response(body=_list(ids))
    for i in ids:
        fake.routes[("GET", protocol.OUTCOMES + i)] = lambda r: web.Response(body=b"<notXml")
    fake.routes[("GET", protocol.NOTIFICATIONS)] = lambda r: web.Response(status=204)
    c = _client(fake, pki, tmp_path)
    sink = _inbound(j, w, tmp_path, alerts)
    delays: list[float] = []
    stop = asyncio.Event()

    async def sleep(d: float) -> None:
        delays.append(d)
        if len(delays) >= 3:
            stop.set()

    poller = HmrcPoller(c, sink.deliver, interval=60, alerts=alerts, sleep=sleep)
    try:
        await asyncio.wait_for(poller.run(stop), timeout=60)
    finally:
        await c.close()
        await w.__aexit__(None, None, None)
        j.close()
    assert delays == [60, 60, 60]
    assert poller.polls == 3 and alerts.kinds().count("hmrc-item-unreadable") == 100


async def test_an_unexpected_error_does_not_end_the_poller(fake: FakeHmrc, pki: Path, tmp_path: Path) -> None:
    """Whatever goes wrong in a round (here the sink of a full round fails outside any item: a bug), the poller
    logs it, backs off and polls again; it never ends silently."""
    fake.routes[("GET", protocol.OUTCOMES)] = lambda r: web.Response(status=204)
    fake.routes[("GET", protocol.NOTIFICATIONS)] = lambda r: web.Response(status=204)
    c = _client(fake, pki, tmp_path)
    delays: list[float] = []
    stop = asyncio.Event()

    class Broken(HmrcPoller):
        async def poll_once(self) -> Any:
            report = await super().poll_once()          # real requests to the fake HMRC
            if self.polls == 1:
                raise RuntimeError("a bug after the round")
            return report

    async def sleep(d: float) -> None:
        delays.append(d)
        if len(delays) >= 2:
            stop.set()

    poller = Broken(c, lambda *a, **k: None, interval=5, alerts=Alerts(), sleep=sleep)  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(poller.run(stop), timeout=60)
    finally:
        await c.close()
    assert poller.polls == 2 and delays == [10, 5] and poller.last_error is None


async def test_a_huge_token_answer_is_not_read_into_memory(fake: FakeHmrc, pki: Path, tmp_path: Path) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b" " * 65536)
        await resp.write_eof()
        return resp

    fake.routes[("POST", protocol.TOKEN)] = huge
    c = _client(fake, pki, tmp_path)
    t = c.tokens.current()
    c.tokens.clock = lambda: t.obtained_at + t.lifetime() * 0.6            # due
    try:
        assert await c.tokens.bearer(await c.session()) == t.access_token  # kept: the refresh failed, will retry
    finally:
        await c.close()
    assert c.tokens.refresh_broken is None
