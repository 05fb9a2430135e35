"""Steps several scenarios share: file through the in-process gateway and wait for a state, check the simulator's
registration, wait for a customs answer. Used by ``scenarios.py`` and ``campaign.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from gateway.conformance.context import Context, ScenarioFailed, _ms, in_messages

REGISTERED_OR_LATER = ("registered", "amended", "assessment-complete")


def _sample_attachments(ctx: Context, data: bytes) -> list[tuple[str, str, bytes]]:
    """The files a sample ENS declares (``binaryFile``), found by their declared file name in the samples folder,
    its ``attachments/`` sub-folder or the sibling ``attachments/`` folder (tests/fixtures/attachments)."""
    from gateway.pipeline.submission import declared_files
    try:
        found = declared_files(data, (ctx.samples, ctx.samples / "attachments", ctx.samples.parent / "attachments"))
    except LookupError as exc:
        raise ScenarioFailed(f"a sample attachment is missing: {exc}") from None
    return [(ident, mime_type, path.read_bytes()) for ident, mime_type, path in found]


async def _submit(ctx: Context, data: bytes, *, action: str | None = None) -> dict[str, Any]:
    """Through the submit API: the ENS alone, or with the attachments it declares as multipart/related."""
    files = _sample_attachments(ctx, data)
    if not files:
        return await ctx.submit(data, action=action)
    from gateway.pipeline.submission import to_multipart
    if ctx.http is None or ctx.api_url is None:
        raise ScenarioFailed("the in-process gateway is not running")
    ctype, body = to_multipart(data, files)
    url = ctx.api_url + "/filings" + (f"?action={action}" if action else "")
    async with ctx.http.post(url, data=body, headers={"Content-Type": ctype}) as r:
        answer = await r.json(content_type=None)
        if r.status != 202:
            raise ScenarioFailed(f"the submit API answered {r.status}: {answer.get('message') or answer}",
                                 {"http_status": r.status, "error": answer.get("error")})
        return {**answer, "attachments": [f[0] for f in files]}


async def _file(ctx: Context, data: bytes, lrn: str, states: Sequence[str], *, action: str | None = None,
                timeout: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    t0 = time.monotonic()
    accepted = await _submit(ctx, data, action=action)
    filer = accepted["filer_eori"]
    life = await ctx.wait_state(filer, lrn, states, timeout=timeout)
    f = life["filing"]
    answers = [m["action"] for m in in_messages(life)]
    ev = {"lrn": lrn, "action": f["action"], "message_id": accepted.get("message_id"), "state": f["state"],
          "mrn": f.get("mrn"), "answers": answers, "ms": _ms(time.monotonic() - t0)}
    return life, ev


async def _registered_once(ctx: Context, lrn: str, ev: dict[str, Any]) -> None:
    if not ctx.sim_admin:
        return
    row = await ctx.sim_report(lrn)
    if row is None or row.get("registrations") != 1 or len(row.get("message_ids", [])) != 1:
        raise ScenarioFailed("the simulator did not register the filing exactly once", {**ev, "report": row})
    ev["sim_copies"] = row.get("copies")


async def _registered(ctx: Context, prefix: str = "CT", fixture: str = "ens-IE3F32-express.xml"
                      ) -> tuple[str, str, dict[str, Any]]:
    lrn = ctx.lrn(prefix)
    life, ev = await _file(ctx, ctx.ens(fixture, lrn), lrn, ("registered",))
    return lrn, life["filing"]["filer_eori"], ev



async def wait_answer(ctx: Context, filer: str, lrn: str, action: str, *, count: int = 1,
                      timeout: float | None = None) -> dict[str, Any]:
    """Polls the journal until ``count`` inbound ``action`` messages are recorded for the filing."""
    deadline = time.monotonic() + (timeout or ctx.timeout)
    life: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        life = ctx.lifecycle(filer, lrn)
        if life is not None and sum(1 for m in in_messages(life) if m["action"] == action) >= count:
            return life
        await asyncio.sleep(0.05)
    raise ScenarioFailed(f"no {action} recorded for filing {lrn} within {timeout or ctx.timeout:.0f} s",
                         {"lrn": lrn, "state": life["filing"]["state"] if life else None,
                          "answers": [m["action"] for m in in_messages(life)] if life else []})


async def wait_sim_outbound(ctx: Context, predicate: Any, *, timeout: float | None = None) -> dict[str, Any]:
    """Polls the simulator's reply queue until a row satisfies ``predicate``."""
    deadline = time.monotonic() + (timeout or ctx.timeout)
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = await ctx.sim("GET", "/outbound")
        row = next((r for r in rows if predicate(r)), None)
        if row is not None:
            return row
        await asyncio.sleep(0.05)
    raise ScenarioFailed("the simulator's reply queue never reached the expected state", {"outbound": rows[-5:]})
