"""Assembles the HMRC route for the daemon from ``[hmrc]``: token manager, client, acceptor, sender route, poller.

The daemon calls ``build_hmrc`` once; everything it returns is plain objects with no task running until
``start``. Kept apart from ``daemon.py`` so that the daemon learns one name, not the route's insides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.config import GatewayConfig
from gateway.hmrc.client import HmrcClient
from gateway.hmrc.config import HmrcConfig, read_hmrc_config
from gateway.hmrc.oauth import OAuthSettings, TokenManager
from gateway.hmrc.poller import HmrcPoller
from gateway.hmrc.route import HmrcAcceptor, HmrcInbound, HmrcRoute
from gateway.hmrc.tokens import TokenStore


def oauth_settings(cfg: HmrcConfig) -> OAuthSettings:
    return OAuthSettings(base_url=cfg.base_url, client_id=cfg.client_id, client_secret=cfg.client_secret,
                         redirect_uri=cfg.redirect_uri)


def make_client(cfg: HmrcConfig, *, on_alert: Any = None) -> HmrcClient:
    tokens = TokenManager(TokenStore(cfg.token_file), oauth_settings(cfg), refresh_fraction=cfg.refresh_fraction,
                          on_alert=on_alert)
    return HmrcClient(cfg.base_url, tokens, ca_file=cfg.ca_file, timeout_seconds=cfg.timeout_seconds,
                      test_headers=cfg.test_headers)


@dataclass
class HmrcWiring:
    cfg: HmrcConfig
    client: HmrcClient
    acceptor: HmrcAcceptor
    route: HmrcRoute
    inbound: HmrcInbound
    poller: HmrcPoller
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def routes(self) -> dict[str, Any]:
        return {self.cfg.endpoint: self.route}

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.poller.run(self.stop_event), name="hmrc-poller")
        return self.task

    async def stop(self, timeout: float) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait([self.task], timeout=timeout)
        await self.client.close()

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.cfg.endpoint, "base_url": self.cfg.base_url, "token": self.client.tokens.status(),
                "poller": self.poller.status(), "delivered": self.inbound.delivered}


def build_hmrc(cfg: GatewayConfig, *, writer: Any, journal: Any, alerts: Any, inbox_dir: Any, status_dir: Any,
               validation: str) -> HmrcWiring | None:
    hcfg = read_hmrc_config(cfg)
    if hcfg is None:
        return None
    client = make_client(hcfg, on_alert=alerts.raise_alert)
    inbound = HmrcInbound(journal, writer, inbox_dir=inbox_dir, status_dir=status_dir, alerts=alerts,
                           endpoint=hcfg.endpoint)
    return HmrcWiring(
        cfg=hcfg, client=client,
        acceptor=HmrcAcceptor(hcfg, writer, journal, fqdn=cfg.identity.fqdn, validation=validation),
        route=HmrcRoute(hcfg, client, alerts),
        inbound=inbound,
        poller=HmrcPoller(client, inbound.deliver, interval=hcfg.poll_seconds, max_interval=hcfg.max_poll_seconds,
                          alerts=alerts))
