"""What the simulator's endpoint (``server``) and push delivery (``pusher``) need from the running simulator.

Why a Protocol of its own: ``app.Simulator`` wires ``server`` and ``pusher`` together, and both call back into
it. With this interface both import this module and ``app`` imports them, so no module imports its importer
(DESIGN.md: no import circles). ``app.Simulator`` is the one implementation.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.ebms.engine import Engine
from gateway.security.keys import SealingIdentity
from gateway.simulator import business
from gateway.simulator.config import SimulatorConfig
from gateway.simulator.faults import Faults
from gateway.simulator.registry import Registry


class SimulatorHost(Protocol):
    cfg: SimulatorConfig
    engine: Engine
    identity: SealingIdentity
    faults: Faults
    registry: Registry
    registered_certs: dict[str, set[bytes]]

    @property
    def sti_url(self) -> str: ...

    def wake(self) -> None: ...

    def handle_business(self, inc: business.Incoming) -> None: ...

    def send_scripted(self, action: str, mrn: str, *, ref_to: str | None = None,
                      party_id: str | None = None) -> dict[str, Any]: ...

    def send_ping(self, party_id: str) -> dict[str, Any]: ...
