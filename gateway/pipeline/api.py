"""HTTP submit API on loopback: POST an ENS, get 202 with the LRN and a status URL; GET the status.

Idempotent: the same (person filing, LRN) with the same payload is the same filing (202 again); the same key
with a different payload is refused with 409 and a clear error. The 202 is sent only after the journal commit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from gateway.pipeline.accept import Acceptor, IntakeRefused
from gateway.pipeline.config import ApiConfig
from gateway.pipeline.delivery import write_status


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj, default=str), content_type="application/json")


def make_app(acceptor: Acceptor, journal: Any, cfg: ApiConfig, on_queued: Any, environment: str,
             status_dir: Any = None) -> web.Application:
    app = web.Application(client_max_size=cfg.max_request_bytes,
                          middlewares=[cfg.auth.middleware()] if cfg.auth.token else [])  # gateway.listen

    async def submit(request: web.Request) -> web.Response:
        data = await request.read()
        try:
            accepted = await acceptor.accept(data, action=request.query.get("action"),
                                             source=f"api:{request.remote}", endpoint=request.query.get("endpoint"))
        except IntakeRefused as exc:
            if exc.filing is not None and status_dir is not None:  # journaled as rejected-locally
                await asyncio.to_thread(write_status, status_dir, exc.filing.to_dict())
            return _json({"error": exc.reason, "message": str(exc), "findings": exc.findings}, exc.status)
        on_queued()
        f = accepted.filing
        body = {**accepted.to_dict(), "status_url": f"/filings/{f.filer_eori}/{f.lrn}", "environment": environment}
        return _json(body, 202)

    async def status(request: web.Request) -> web.Response:
        filing = journal.get_filing_by_key(request.match_info["filer"], request.match_info["lrn"])
        if filing is None:
            return _json({"error": "not-found"}, 404)
        return _json(journal.lifecycle(filing.id))

    async def by_reference(request: web.Request) -> web.Response:
        ref = request.query.get("lrn") or request.query.get("mrn") or ""
        filings = journal.find_filings_by_lrn(ref) if "lrn" in request.query else \
            [f for f in [journal.get_filing_by_mrn(ref)] if f]
        return _json([f.to_dict() for f in filings])

    async def health(_: web.Request) -> web.Response:
        return _json({"status": "ok", "environment": environment, "filings": journal.count_by_state()})

    app.router.add_post("/filings", submit)
    app.router.add_get("/filings", by_reference)
    app.router.add_get("/filings/{filer}/{lrn}", status)
    app.router.add_get("/health", health)
    return app
