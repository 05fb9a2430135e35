"""Wiring of the simulator: engine, registry, faults, HTTPS endpoint, admin endpoint, pusher.

In-process (tests)::

    sim = Simulator(load_simulator_config(path))
    await sim.start()          # binds; port 0 in the configuration picks a free port (sim.port)
    ... sim.sti_url, sim.admin_url, sim.faults.update({...}), sim.registry.report() ...
    await sim.stop()

As a process: ``run_simulator(cfg)`` runs until SIGTERM / SIGINT (``ics2gw simulate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import socket
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.ebms.constants import SERVICE_C2T, TEST_ACTION, TEST_SERVICE
from gateway.ebms.engine import Engine
from gateway.security.keys import load_identity_files, load_pem_certificates
from gateway.security.trust import TrustStore
from gateway.security.verify import STRICT
from gateway.simulator import business, replies
from gateway.simulator.config import SimulatorConfig
from gateway.simulator.faults import Faults
from gateway.simulator.pusher import Pusher
from gateway.simulator.registry import Registry, monotonic_now
from gateway.simulator.server import StiEndpoint, admin_app
from gateway.transport.config import KeyMaterial
from gateway.transport.tls import build_client_context, build_server_context

log = logging.getLogger("ics2gw.simulator")
STOP_STEP_SECONDS = 15.0   # each step of a stop (pusher, each listener) is given this long


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Simulator:
    def __init__(self, cfg: SimulatorConfig, *, clock: Any = None) -> None:
        self.cfg = cfg
        self.identity = load_identity_files(cfg.seal_key, cfg.seal_chain)
        self.trust = TrustStore.from_files(cfg.anchors, cfg.crls)
        self.engine = Engine(self.identity, self.trust, party_id=cfg.party_id, fqdn=cfg.fqdn, limits=cfg.limits,
                             role="Customs", policy=STRICT)
        self.faults = Faults(cfg.faults)
        self.registered_certs: dict[str, set[bytes]] = {
            p.party_id: {c.public_bytes(Encoding.DER) for path in p.seal_certs for c in load_pem_certificates(path)}
            for p in cfg.parties}
        self.registry: Registry | Any = None
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.port = 0
        self.admin_port = 0
        self._runners: list[web.AppRunner] = []
        self._hosts: list[str] = []
        self._pusher: Pusher | None = None
        self._pusher_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        cfg = self.cfg
        self.registry = Registry(cfg.registry_path)
        server_ctx = build_server_context(server=KeyMaterial(cert=cfg.tls_cert, key=cfg.tls_key),
                                          client_ca=[cfg.client_ca], environment="simulator", name="sti")
        client_ctx = build_client_context(ca_files=[cfg.push_server_ca],
                                          client=KeyMaterial(cert=cfg.push_client_cert, key=cfg.push_client_key))
        endpoint = StiEndpoint(self)
        app = web.Application(client_max_size=cfg.limits.recv_max_message_bytes)
        app.router.add_post(cfg.path, endpoint.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        port = cfg.port
        self._hosts = []
        for i, host in enumerate(cfg.listen):
            try:
                sock = _bind(host, port)
            except OSError as exc:
                if i == 0:
                    raise
                # e.g. no IPv6 on this host: serve the addresses that work, say which one does not
                log.warning("event=listen_failed host=%s port=%s reason=%r", host, port, str(exc))
                continue
            port = sock.getsockname()[1]
            self._hosts.append(host)
            site = web.SockSite(runner, sock, ssl_context=server_ctx)
            await site.start()
        self.port = port
        if cfg.admin_enabled:
            arunner = web.AppRunner(admin_app(self), access_log=None, handle_signals=False)
            await arunner.setup()
            self._runners.append(arunner)
            asock = _bind(cfg.admin_listen if cfg.admin_listen != "localhost" else "127.0.0.1", cfg.admin_port)
            self.admin_port = asock.getsockname()[1]
            await web.SockSite(arunner, asock).start()
        self._pusher = Pusher(self, client_ctx)
        self._pusher_task = asyncio.create_task(self._pusher.run(), name="simulator-pusher")
        log.info("event=simulator_started sti_url=%s admin_url=%s registry=%s", self.sti_url,
                 self.admin_url, cfg.registry_path)

    async def stop(self) -> None:
        # bounded: a stop must end even if a peer never completes a TLS close (a test suite once hung here for
        # its whole 600 s timeout after every assertion had passed)
        if self._pusher_task is not None:
            self._pusher_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._pusher_task, STOP_STEP_SECONDS)
            self._pusher_task = None
        for r in reversed(self._runners):
            try:
                await asyncio.wait_for(r.cleanup(), STOP_STEP_SECONDS)
            except asyncio.TimeoutError:
                log.warning("event=stop_slow step=listener_cleanup seconds=%s", STOP_STEP_SECONDS)
        self._runners.clear()
        if self.registry is not None:
            self.registry.close()
            self.registry = None
        log.info("event=simulator_stopped")

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def sti_url(self) -> str:
        return f"https://{_url_host(self.cfg.listen[0])}:{self.port}{self.cfg.path}"

    @property
    def admin_url(self) -> str | None:
        if not self.cfg.admin_enabled:
            return None
        return f"http://{_url_host(self.cfg.admin_listen)}:{self.admin_port}/admin"

    def wake(self) -> None:
        if self._pusher is not None:
            self._pusher.wake()

    # ------------------------------------------------------------------------------------------- business
    def _new_mrn(self, country: str) -> str:
        while True:
            mrn = business.new_mrn(country, self.clock())
            if not self.registry.mrn_exists(mrn):
                return mrn

    def handle_business(self, inc: business.Incoming, decision: business.Decision | None = None) -> None:
        """Decides and, in one transaction, registers and queues the replies (before the receipt is sent).

        ``decision``: one already taken (the attachment link check's IE3N99), instead of the business rules."""
        opts = business.Options(mrn_country=self.cfg.mrn_country, duplicate_lrn=self.cfg.duplicate_lrn,
                                arrival_control=self.cfg.arrival_control,
                                complete_after_answer=self.cfg.complete_after_answer)
        decision = decision or business.decide(inc, self.registry, self.cfg.rules, opts, self.clock(),
                                               self._new_mrn)
        with self.registry.transaction():
            filing_id = self.registry.apply(inc.message_id, inc.party_id, inc.eori, decision)
            start = monotonic_now() + self.faults.reply_delay_seconds
            for r in decision.replies:
                to = inc.party_id if r.to_eori is None else self._party_of(r.to_eori)
                if to is None:
                    continue  # nobody registered for that person: the TI notifies only registered parties
                self._enqueue(to, r.action, r.payload, inc.message_id if r.ref_to else None,
                              answers=inc.message_id, filing_id=filing_id, lrn=r.lrn, mrn=r.mrn, not_before=start)
        log.info("event=business message_id=%s action=%s outcome=%r replies=%s", inc.message_id, inc.action,
                 decision.outcome, ",".join(r.action for r in decision.replies) or "none")

    def _party_of(self, eori: str) -> str | None:
        """The first registered PartyId of ``eori`` (ICD 4.4.1: the default AP of a person not yet filed)."""
        return next((p.party_id for p in self.cfg.parties if p.eori == eori), None)

    def _enqueue(self, party_id: str, action: str, payload: bytes, ref_to: str | None, *, answers: str,
                 filing_id: int | None, lrn: str | None, mrn: str | None, not_before: float) -> str:
        party = self.cfg.party(party_id)
        assert party is not None
        pull = party.delivery == "pull"
        omit = self.cfg.omit_ref_to_message_id
        if pull and ("*" in omit or action in omit):
            ref_to = None
        msg = self.engine.user_message(action=action, payload=payload, to_party=Engine.trader_party(party_id),
                                       service=SERVICE_C2T, ref_to_message_id=ref_to,
                                       mpc=party.mpc if pull else None)
        self.registry.enqueue(message_id=msg.message_id, party_id=party_id, mode=party.delivery,
                              mpc=party.mpc if pull else None, action=action, ref_to=ref_to, answers=answers,
                              filing_id=filing_id, lrn=lrn, mrn=mrn, content_type=msg.content_type, body=msg.body,
                              digests=msg.reference_digests, not_before=not_before)
        return msg.message_id

    def send_scripted(self, action: str, mrn: str, *, ref_to: str | None = None,
                      party_id: str | None = None) -> dict[str, Any]:
        """Queues an unsolicited customs message about a registered filing (admin ``POST /admin/send``). To the
        party that filed it, or to ``party_id`` (e.g. the carrier: IE3N04 / IE3N05 / IE3Q01 and the IE3R01 copy
        go to a carrier that did not file, ICD 3.1.8 and Annex 3)."""
        filing = self.registry.by_mrn(mrn)
        if filing is None:
            raise ValueError(f"MRN {mrn!r} is not registered")
        to = party_id or filing.party_id
        if self.cfg.party(to) is None:
            raise ValueError(f"party {to!r} is not registered")
        now = self.clock()
        ctx = filing.context
        builders = {
            "IE3R01": lambda: replies.ie3r01(lrn=filing.lrn, mrn=mrn, ctx=ctx, now=now),
            "IE3Q01": lambda: replies.ie3q01(mrn=mrn, ctx=ctx, now=now),
            "IE3Q02": lambda: replies.ie3q02(mrn=mrn, ctx=ctx, now=now, reference=f"RFI-{mrn[-8:]}-A",
                                             response_type=replies.RESPONSE_BY_IE3R02),
            "IE3Q03": lambda: replies.ie3q03(mrn=mrn, ctx=ctx, now=now, reference=f"HRCM-{mrn[-8:]}-A"),
            "IE3N03": lambda: replies.ie3n03(mrn=mrn, ctx=ctx, now=now),
            "IE3N08": lambda: replies.ie3n08(mrn=mrn, ctx=ctx, now=now),
            **{a: (lambda a=a: replies.notification(a, mrn=mrn, ctx=ctx, now=now)) for a in replies.NOTIFICATIONS},
        }
        if action not in builders:
            raise ValueError(f"action must be one of {', '.join(builders)}")
        with self.registry.transaction():
            if action in ("IE3Q02", "IE3Q03") and to == filing.party_id:
                self.registry.apply_update(filing.id, open_request=action,
                                           request_mode="IE3R02" if action == "IE3Q02" else "IE3R03")
            mid = self._enqueue(to, action, builders[action](), ref_to, answers="", filing_id=filing.id,
                                lrn=filing.lrn, mrn=mrn, not_before=monotonic_now())
        self.wake()
        return {"message_id": mid, "action": action, "mrn": mrn, "party_id": to}


    def send_ping(self, party_id: str) -> dict[str, Any]:
        """Queues an ebMS test message from customs to a registered party (ICD 4.5.1: the TI may test the trader's
        access point too), pushed or offered on its MPC like any reply (admin ``POST /admin/ping``)."""
        party = self.cfg.party(party_id)
        if party is None:
            raise ValueError(f"party {party_id!r} is not registered")
        pull = party.delivery == "pull"
        msg = self.engine.ping(Engine.trader_party(party_id)) if not pull else self.engine.user_message(
            action=TEST_ACTION, payload=None, to_party=Engine.trader_party(party_id), service=TEST_SERVICE,
            service_type=None, mpc=party.mpc)
        self.registry.enqueue(message_id=msg.message_id, party_id=party_id, mode=party.delivery,
                              mpc=party.mpc if pull else None, action="ping", ref_to=None, answers="",
                              filing_id=None, lrn=None, mrn=None, content_type=msg.content_type, body=msg.body,
                              digests=msg.reference_digests, not_before=monotonic_now())
        self.wake()
        return {"message_id": msg.message_id, "action": "ping", "party_id": party_id, "mode": party.delivery}


async def run_simulator(cfg: SimulatorConfig, *, stop: asyncio.Event | None = None) -> None:
    """Runs the simulator until ``stop`` is set, or SIGTERM / SIGINT."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sim = Simulator(cfg)
    await sim.start()
    try:
        await stop.wait()
    finally:
        await sim.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
