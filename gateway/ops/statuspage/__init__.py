"""The status page: server-rendered HTML on the health/status listener, read-only, no JavaScript, no CDN.

Pages: ``/status`` (overview: do-not-load alerts first, open customs requests, endpoints, queue per lane, filings
by state and over the last 24 hours, orphans, recent alerts, certificates), ``/status/filings`` (search by LRN,
MRN or MessageId; filter by state; keyset paging), ``/status/filings/{id}`` (the lifecycle timeline with download
links), ``/status/filings/{id}/evidence.zip`` and ``/status/filings/{id}/evidence/{n}`` (one message as it crossed
the wire, with its Content-Type).

Why no JavaScript and a strict Content-Security-Policy: the page shows data that came from outside (payload
references, error texts customs sent); everything is escaped when rendered, and the CSP forbids scripts and inline
styles outright, so even a rendering bug cannot run code in an operator's browser. Every query is a bounded index
scan (``gateway/journal/queries.py``); ``bench/statuspage.py`` measures the pages with a million filings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from gateway.journal.errors import NotFound
from gateway.journal.states import FILING_STATES

_HERE = Path(__file__).resolve().parent
_BASE = Template((_HERE / "templates" / "base.html").read_text(encoding="utf-8"))
_CSS = (_HERE / "templates" / "style.css").read_bytes()
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@dataclass
class StatusContext:
    environment: str
    queries: Any                      # JournalQueries
    health: Any                       # () -> the /health document
    recent_alerts: Any                # () -> list of alert dicts, newest first


def _state(s: str | None) -> str:
    return f'<span class="state state-{e(s)}">{e(s)}</span>'


def _filing_link(row: dict[str, Any], text: Any = None) -> str:
    return f'<a href="/status/filings/{int(row["id"])}">{e(text if text is not None else row["lrn"])}</a>'


def _table(headers: list[str], rows: list[list[str]], *, empty: str = "none", cls: str = "",
           nums: tuple[int, ...] = ()) -> str:
    if not rows:
        return f'<p class="muted">{e(empty)}</p>'
    th = "".join(f'<th{" class=num" if i in nums else ""}>{h}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in nums else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _status(ctx: StatusContext) -> str:
    """The header's health badge (called in a worker thread: the report reads the journal)."""
    try:
        return str(ctx.health().get("status", "unknown"))
    except Exception:  # noqa: BLE001 - the page still renders; the badge says what /health would
        return "failing"


def _page(ctx: StatusContext, title: str, body: str, started: float, *, query: str = "",
          status: str = "unknown", http_status: int = 200) -> web.Response:
    text = _BASE.substitute(title=e(title), environment=e(ctx.environment), status=e(status), body=body,
                            query=e(query), generated=e(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                            render_ms=f"{(time.perf_counter() - started) * 1000:.1f}")
    return web.Response(text=text, status=http_status, content_type="text/html", charset="utf-8", headers=_HEADERS)


# ----------------------------------------------------------------------------------------------------- overview
def _overview(ctx: StatusContext) -> tuple[str, str]:
    q = ctx.queries
    health = ctx.health()
    parts: list[str] = []
    dnl = q.do_not_load(limit=50)
    reqs = q.open_requests(limit=200)
    q01 = [r for r in reqs if r["kind"] == "IE3Q01"]
    if dnl or q01:  # first on the page: goods must not be loaded
        rows = [[_filing_link(f), f'<span class="mono">{e(f["mrn"])}</span>', e(f["filer_eori"]), e(f["priority"]),
                 e(f["updated_at"])] for f in dnl]
        parts.append('<section class="alarm" id="do-not-load"><h2>Do not load (IE3Q01)</h2>' +
                     _table(["LRN", "MRN", "Person filing", "Lane", "Since"], rows, cls="dnl") + "</section>")
    if health.get("reasons"):
        parts.append('<section class="attention" id="reasons"><strong>Health: ' + e(health["status"]) +
                     '</strong><ul class="reasons">' + "".join(f"<li>{e(r)}</li>" for r in health["reasons"]) +
                     "</ul></section>")
    open_q = [r for r in reqs if r["kind"] != "IE3Q01"]
    rows = [[e(r["kind"]), _filing_link({"id": r["filing_id"], "lrn": r["lrn"]}),
             f'<span class="mono">{e(r["mrn"])}</span>', e(r["priority"]), e(r["opened_at"]),
             f'<span class="mono">{e(r["request_message_id"])}</span>'] for r in open_q]
    parts.append('<section id="requests"><h2>Open customs requests (IE3Q02 / IE3Q03)</h2>' +
                 _table(["Request", "LRN", "MRN", "Lane", "Opened", "Request MessageId"], rows,
                        empty="no open request") + "</section>")
    eps = []
    for name, d in (health.get("endpoints") or {}).items():
        eps.append([e(name), f'<span class="mono">{e(d.get("url"))}</span>', e(d.get("state")),
                    "paused" if d.get("paused") else "", e(d.get("last_success")), e(d.get("last_ping")),
                    e(d.get("consecutive_failures")), e(d.get("last_error") or "")])
    lanes = [[e(lane), e(v["queued"]), e(v["sending"]), e(v["oldest_age_seconds"])]
             for lane, v in (health.get("queue") or {}).items()]
    parts.append('<div class="grid"><section id="endpoints"><h2>Endpoints</h2>' +
                 _table(["Name", "URL", "State", "Paused", "Last success", "Last ping", "Failures in a row",
                         "Last error"], eps, nums=(6,)) +
                 '</section><section id="queue"><h2>Queue per lane</h2>' +
                 _table(["Lane", "Queued", "Sending", "Oldest queued (s)"], lanes, nums=(1, 2, 3)) + "</section></div>")
    counts = health.get("filings") or q.counts_by_state()
    rows = [[f'<a href="/status/filings?state={quote(s)}">{_state(s)}</a>', e(n)] for s, n in counts.items() if n]
    parts.append('<div class="grid"><section id="states"><h2>Filings by state</h2>' +
                 _table(["State", "Filings"], rows, empty="no filings yet", nums=(1,)) + "</section>" +
                 '<section id="over-time"><h2>Filings over the last 24 hours</h2>' + _chart(q) + "</section></div>")
    orphans = q.orphans(limit=20)
    rows = [[f'<span class="mono">{e(o["message_id"])}</span>', e(o["action"]), e(o["functional_reference"]),
             e(o["reason"]), e(o["created_at"])] for o in orphans]
    parts.append('<section id="orphans"><h2>Orphans (inbound messages matching no filing)</h2>' +
                 _table(["MessageId", "Action", "Reference", "Reason", "Received"], rows, empty="no orphans") +
                 "</section>")
    alerts = list(ctx.recent_alerts())[:30]
    rows = [[e(a.get("at")), e(a.get("alert")),
             e(" ".join(f"{k}={v}" for k, v in a.items() if k not in ("at", "alert", "environment"))[:300])]
            for a in alerts]
    parts.append('<section id="alerts"><h2>Recent alerts (since the daemon started)</h2>' +
                 _table(["At", "Alert", "Detail"], rows, empty="no alerts") + "</section>")
    certs = (health.get("certificates") or []) + (health.get("crls") or [])
    rows = [[e(c["kind"]), e(c["role"]), e(c["subject"]), e(c["not_after"]),
             f'<span class="level-{e(c.get("level"))}">{e(c["days_left"])}</span>', e(c.get("level")),
             f'<span class="mono">{e(c["source"])}</span>'] for c in certs]
    parts.append('<section id="certificates"><h2>Certificates and CRLs</h2>' +
                 _table(["Kind", "Role", "Subject", "Expires / next update", "Days left", "Level", "File"], rows,
                        empty="not checked yet", nums=(4,)) + "</section>")
    return "".join(parts), health.get("status", "unknown")


_CHART_COLORS = {"registered": "#2e7d32", "rejected": "#b00020", "do-not-load": "#6a0010", "failed": "#d84315",
                 "queued": "#1565c0", "sent": "#5c6bc0"}


def _chart(q: Any) -> str:
    """An inline SVG bar chart (no script, no inline style: the CSP stays strict)."""
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    since = now - dt.timedelta(hours=23)
    rows = q.created_per_hour(since)
    hours = [(since + dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H") for i in range(24)]
    per: dict[str, dict[str, int]] = {h: {} for h in hours}
    for r in rows:
        if r["hour"] in per:
            per[r["hour"]][r["state"]] = r["n"]
    top = max([sum(v.values()) for v in per.values()] + [1])
    w, h, bw = 900, 140, 900 / 24
    bars: list[str] = []
    for i, hour in enumerate(hours):
        y = float(h)
        for state, n in sorted(per[hour].items()):
            bh = n / top * (h - 10)
            y -= bh
            color = _CHART_COLORS.get(state, "#90a4ae")
            bars.append(f'<rect x="{i * bw + 2:.1f}" y="{y:.1f}" width="{bw - 4:.1f}" height="{bh:.1f}" '
                        f'fill="{color}"><title>{e(hour)}:00Z {e(state)}: {n}</title></rect>')
        if i % 3 == 0:
            bars.append(f'<text x="{i * bw + 2:.1f}" y="{h + 12}">{e(hour[11:])}h</text>')
    total = sum(sum(v.values()) for v in per.values())
    legend = "".join(f'<span><svg width="10" height="10"><rect width="10" height="10" fill="{c}"/></svg> {e(s)}'
                     f'</span>' for s, c in _CHART_COLORS.items())
    return (f'<svg class="chart" viewBox="0 0 {w} {h + 16}" role="img" aria-label="filings created per hour">'
            + "".join(bars) + f'</svg><p class="legend">{legend}<span class="muted">{total} filings created in '
            f'24 h, coloured by their current state; peak {top}/h</span></p>')


# ----------------------------------------------------------------------------------------------------- filings
def _filings(ctx: StatusContext, query: dict[str, str]) -> str:
    state = query.get("state") or None
    search = (query.get("q") or "").strip()
    page = ctx.queries.filings(state=state, search=search or None, cursor=query.get("cursor") or None, limit=50)
    filters = '<p class="filters">State: <a href="/status/filings' + \
        (f'?q={quote(search)}' if search else "") + '">all</a>' + "".join(
            f'<a href="/status/filings?{urlencode({k: v for k, v in (("q", search), ("state", s)) if v})}"'
            f'{" class=current" if s == state else ""}>{e(s)}</a>' for s in FILING_STATES) + "</p>"
    head = ""
    if search:
        how = {"message-id": "MessageId", "mrn": "MRN", "lrn": "LRN"}.get(page.search or "", "")
        head = f'<p id="search-result">{len(page.rows)} filing(s) for <code>{e(search)}</code>' + \
            (f" by {how}" if how else "") + (f" in state {_state(state)}" if state else "") + "</p>"
    rows = [[_filing_link(r), f'<span class="mono">{e(r["mrn"] or "")}</span>', _state(r["state"]), e(r["action"]),
             e(r["filer_eori"]), e(r["priority"]), e(r["endpoint"] or ""), e(r["updated_at"]),
             e((r["last_error"] or "")[:120])] for r in page.rows]
    table = _table(["LRN", "MRN", "State", "Action", "Person filing", "Lane", "Endpoint", "Updated", "Last error"],
                   rows, empty="no filing matches", cls="filings")
    pager = ""
    if page.next_cursor:
        params = {k: v for k, v in (("q", search), ("state", state or ""), ("cursor", page.next_cursor)) if v}
        pager = f'<p class="pager"><a id="next-page" href="/status/filings?{urlencode(params)}">Older &rarr;</a></p>'
    return filters + head + table + pager


def _timeline(ctx: StatusContext, filing_id: int) -> tuple[str, str]:
    t = ctx.queries.timeline(filing_id)
    f = t["filing"]
    facts = [("LRN", f["lrn"]), ("MRN", f["mrn"]), ("State", None), ("Person filing", f["filer_eori"]),
             ("Sender", f["sender_eori"]), ("Action", f["action"]), ("Lane", f["priority"]),
             ("Endpoint", f["endpoint"]), ("Attempts", f["attempts"]), ("Source", f["source"]),
             ("Created", f["created_at"]), ("Updated", f["updated_at"]), ("Last error", f["last_error"])]
    dl = "".join(f"<tr><th>{k}</th><td>{_state(f['state']) if k == 'State' else e(v)}</td></tr>" for k, v in facts)
    rows = []
    for x in t["entries"]:
        rows.append([e(x["at"]), e(x["kind"]), e(x["direction"]), f'<strong>{e(x["action"])}</strong>',
                     e(x["what"]), e(x["state"]), f'<span class="mono">{e(x["message_id"])}</span>', e(x["detail"])])
    items = ctx.queries.evidence(filing_id)
    ev = [[f'<a href="/status/filings/{filing_id}/evidence/{i}">{e(it.name)}</a>', e(it.kind),
           f'<span class="mono">{e(it.message_id)}</span>', e(it.content_type), e(len(it.data))]
          for i, it in enumerate(items)]
    reqs = [[e(r["kind"]), e(r["state"]), e(r["opened_at"]), f'<span class="mono">{e(r["request_message_id"])}</span>',
             f'<span class="mono">{e(r["answer_message_id"] or "")}</span>'] for r in t["requests"]]
    body = (f'<table class="facts">{dl}</table>'
            f'<h2>Timeline</h2>' + _table(["At", "Kind", "Dir", "Action / event", "What", "State", "MessageId",
                                            "Detail"], rows, cls="timeline") +
            '<h2>Customs requests</h2>' + _table(["Kind", "State", "Opened", "Request", "Answer"], reqs) +
            f'<h2>Evidence</h2><p><a id="evidence-zip" href="/status/filings/{filing_id}/evidence.zip">'
            f'Download the evidence bundle (zip)</a> <span class="muted">each message as it crossed the wire, '
            f'with a .ctype file: <code>ics2gw inspect FILE</code> checks it as it is</span></p>' +
            _table(["File", "Kind", "MessageId", "Content-Type", "Bytes"], ev, nums=(4,)))
    return body, f"Filing {f['lrn']}"


# ----------------------------------------------------------------------------------------------------- wiring
def add_routes(app: web.Application, ctx: StatusContext) -> None:
    async def overview(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body, status = await asyncio.to_thread(_overview, ctx)
        return _page(ctx, "Overview", body, started, status=status)

    async def filings(request: web.Request) -> web.Response:
        started = time.perf_counter()
        query = dict(request.query)
        status = await asyncio.to_thread(_status, ctx)
        try:
            body = await asyncio.to_thread(_filings, ctx, query)
        except ValueError as exc:
            return _page(ctx, "Filings", f'<p class="alarm">{e(exc)}</p>', started, query=query.get("q", ""),
                         status=status, http_status=400)
        return _page(ctx, "Filings", body, started, query=query.get("q", ""), status=status)

    def _id(request: web.Request) -> int:
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise web.HTTPNotFound()
        return int(raw)

    async def filing(request: web.Request) -> web.Response:
        started = time.perf_counter()
        status = await asyncio.to_thread(_status, ctx)
        try:
            body, title = await asyncio.to_thread(_timeline, ctx, _id(request))
        except NotFound:
            return _page(ctx, "Not found", "<p>No such filing.</p>", started, status=status, http_status=404)
        return _page(ctx, title, body, started, status=status)

    async def bundle(request: web.Request) -> web.Response:
        fid = _id(request)

        def build() -> tuple[bytes, str]:
            from gateway.ops.evidence import build_zip
            life = ctx.queries.lifecycle(fid)
            return build_zip(life["filing"], ctx.queries.evidence(fid), life), life["filing"]["lrn"]
        try:
            data, lrn = await asyncio.to_thread(build)
        except NotFound:
            raise web.HTTPNotFound() from None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in lrn)[:60]
        return web.Response(body=data, content_type="application/zip", headers={
            **_HEADERS, "Content-Disposition": f'attachment; filename="evidence-{safe}.zip"'})

    async def item(request: web.Request) -> web.Response:
        fid, n = _id(request), request.match_info["n"]
        if not n.isdigit():
            raise web.HTTPNotFound()
        try:
            items = await asyncio.to_thread(ctx.queries.evidence, fid)
        except NotFound:
            raise web.HTTPNotFound() from None
        if int(n) >= len(items):
            raise web.HTTPNotFound()
        it = items[int(n)]
        # served as a download, never rendered: the browser must not interpret customs' bytes as a page
        return web.Response(body=it.data, headers={
            **_HEADERS, "Content-Type": "application/octet-stream", "X-Wire-Content-Type": it.content_type or "",
            "Content-Disposition": f'attachment; filename="{it.name}"'})

    async def css(_: web.Request) -> web.Response:
        return web.Response(body=_CSS, content_type="text/css", headers={"Cache-Control": "max-age=300",
                                                                         "X-Content-Type-Options": "nosniff"})

    async def root(_: web.Request) -> web.Response:
        raise web.HTTPFound("/status")

    app.router.add_get("/", root)
    app.router.add_get("/status", overview)
    app.router.add_get("/status/", overview)
    app.router.add_get("/status/style.css", css)
    app.router.add_get("/status/filings", filings)
    app.router.add_get("/status/filings/{id}", filing)
    app.router.add_get("/status/filings/{id}/evidence.zip", bundle)
    app.router.add_get("/status/filings/{id}/evidence/{n}", item)
