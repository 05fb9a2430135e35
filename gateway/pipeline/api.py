"""HTTP submit API on loopback: POST an ENS (alone, or multipart with its attachments: see
``gateway.pipeline.submission``), get 202 with the LRN and a status URL; GET the status.

Idempotent: the same (person filing, LRN) with the same payload is the same filing (202 again); the same key
with a different payload is refused with 409 and a clear error. The 202 is sent only after the journal commit.

A journal that cannot be written or read (disk full, read-only, I/O error) answers 503 with a JSON body naming
the storage (``{"error": "storage-unavailable", "storage": "journal", "path", "condition", "message"}``) and a
``Retry-After``: the ERP keeps the filing and tries again; an alert is raised once per episode and a recovery
is logged when the journal answers again.

A journal database that does not answer (PostgreSQL restarting, failing over, unreachable) is the same 503 with
``"condition": "unavailable"``. While the group-commit writer is already waiting for the database, a new
submission is answered at once instead of joining the wait: nothing of it was journaled, and resubmitting later
is idempotent. A submission that was already waiting when the database went away keeps waiting for its commit
(up to the writer's budget): answering it 503 while its batch may still commit would tell the ERP "not filed"
about a filing that is then sent.

Reads run in a worker thread, as every other journal read of the daemon does: a database that takes seconds to
refuse a connection must not stall the event loop (the inbound server and the senders share it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from gateway.pipeline.accept import Acceptor, IntakeRefused
from gateway.pipeline.config import ApiConfig
from gateway.pipeline.delivery import write_status
from gateway.pipeline.submission import from_body
from gateway.pipeline.storage import StorageUnavailable, as_storage_error

RETRY_AFTER_SECONDS = 30
log = logging.getLogger("ics2gw.api")


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj, default=str), content_type="application/json",
                        headers=headers)


def _storage_guard(alert: Any, journal_name: Any) -> Any:
    """Turns a storage condition under any handler into a 503 naming the storage, alerting once per episode."""
    down: dict[str, str] = {}

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            err = as_storage_error(exc, "journal", journal_name)
            if err is None:  # a bug, not the request's fault: a JSON 500 naming the error, the traceback in the log
                log.exception("api request failed method=%s path=%s", request.method, request.path)
                return _json({"error": "internal-error", "message": f"{type(exc).__name__}: {exc}"}, 500)
            if not down:
                log.error("api journal unavailable condition=%s error=%s", err.condition, err.detail)
                alert("storage-unavailable", storage=err.storage, path=err.path, condition=err.condition,
                      error=err.detail, where="api")
            down["journal"] = err.condition
            return _json(err.to_dict(), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
        if down and request.method == "POST" and response.status < 500:  # a write went through
            log.warning("api journal available again after condition=%s", down.pop("journal", None))
            down.clear()
        return response

    return guard


def make_app(acceptor: Acceptor, journal: Any, cfg: ApiConfig, on_queued: Any, environment: str,
             status_dir: Any = None, alert: Any = None, journal_name: Any = None,
             journal_path: Any = None) -> web.Application:
    """``journal_name``: how a storage error names the journal (its file, or the database without a password);
    ``journal_path`` is its older name."""
    middlewares = [cfg.auth.middleware()] if cfg.auth.token else []      # gateway.listen: bearer token
    name = journal_name or journal_path or getattr(journal, "path", None) or \
        (journal.describe() if hasattr(journal, "describe") else "?")
    middlewares.append(_storage_guard(alert or (lambda kind, **detail: None), name))
    app = web.Application(client_max_size=cfg.max_request_bytes, middlewares=middlewares)

    writer = getattr(acceptor, "writer", None)

    async def submit(request: web.Request) -> web.Response:
        data = await request.read()
        since = getattr(writer, "unavailable_since", None)
        if since is not None:
            away = max(0.0, time.monotonic() - since)
            raise StorageUnavailable("journal", str(name), "unavailable",
                                     f"the journal database has not answered for {away:.0f} s; nothing of this "
                                     f"request was journaled: submit it again later (idempotent)")
        try:
            sub = from_body(request.headers.get("Content-Type"), data)  # XML alone, or multipart: ENS first
            accepted = await acceptor.accept(sub.payload, action=request.query.get("action"),
                                             source=f"api:{request.remote}", endpoint=request.query.get("endpoint"),
                                             attachments=sub.attachments)
        except IntakeRefused as exc:
            if exc.filing is not None and status_dir is not None:  # journaled as rejected-locally
                await asyncio.to_thread(write_status, status_dir, exc.filing.to_dict())
            return _json({"error": exc.reason, "message": str(exc), "findings": exc.findings}, exc.status)
        on_queued()
        f = accepted.filing  # None for a consultation (IE3Q05) of an ENS the journal does not know
        body = {**accepted.to_dict(), "status_url": f"/filings/{f.filer_eori}/{f.lrn}" if f else None,
                "environment": environment}
        return _json(body, 202)

    async def status(request: web.Request) -> web.Response:
        def read() -> Any:
            filing = journal.get_filing_by_key(request.match_info["filer"], request.match_info["lrn"])
            return None if filing is None else journal.lifecycle(filing.id)

        life = await asyncio.to_thread(read)
        if life is None:
            return _json({"error": "not-found"}, 404)
        return _json(life)

    async def by_reference(request: web.Request) -> web.Response:
        ref = request.query.get("lrn") or request.query.get("mrn") or ""

        def read() -> list[Any]:
            if "lrn" in request.query:
                return list(journal.find_filings_by_lrn(ref))
            return [f for f in [journal.get_filing_by_mrn(ref)] if f]

        return _json([f.to_dict() for f in await asyncio.to_thread(read)])

    async def health(_: web.Request) -> web.Response:
        counts = await asyncio.to_thread(journal.count_by_state)
        return _json({"status": "ok", "environment": environment, "filings": counts})

    app.router.add_post("/filings", submit)
    app.router.add_get("/filings", by_reference)
    app.router.add_get("/filings/{filer}/{lrn}", status)
    app.router.add_get("/health", health)
    return app
