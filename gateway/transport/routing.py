"""Which Trader Interface gets a message (ICD 3.3.2.4, 5.2).

Why here: the TI of a filing is a business decision with one rule and a few exceptions, and eb:To must
follow it. The order:

1. ``override``: an explicit endpoint name or customs party id (operator or conformance runner);
2. ``recorded``: every follow-up message of a filing goes to the TI recorded for that filing (the pipeline
   passes what it stored when the filing was first sent);
3. the country of the customs office of first entry (the first two letters of its reference number);
4. if that is unknown, the Member State the filing is addressed to;
5. the ``[routing] default`` endpoint (normally the STI).

Countries map to endpoints through each endpoint's ``countries`` list and ``[routing.countries]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.ebms.model import Party
from gateway.transport.config import COUNTRY_RE, Endpoint, TransportConfig


class RoutingError(LookupError):
    """An override or a recorded TI names no configured endpoint."""


@dataclass(frozen=True)
class Route:
    endpoint: Endpoint
    reason: str                     # override | recorded | office-of-first-entry | member-state | default

    @property
    def to_party(self) -> Party:
        """eb:To for this TI (ICD 4.2.2.1: sti-taxud or nti-xx, role Customs)."""
        from gateway.ebms.engine import Engine
        return Engine.customs_party(self.endpoint.party_id)

    @property
    def party_id(self) -> str:
        return self.endpoint.party_id


class Router:
    def __init__(self, config: TransportConfig) -> None:
        self.config = config

    def _named(self, ref: str, what: str) -> Endpoint:
        eps = self.config.endpoints
        if ref in eps:
            return eps[ref]
        by_party = [e for e in eps.values() if e.party_id == ref]
        if len(by_party) == 1:
            return by_party[0]
        raise RoutingError(f"{what} {ref!r} is neither an endpoint name nor the party id of exactly one endpoint "
                           f"(configured: {', '.join(f'{n} ({e.party_id})' for n, e in eps.items()) or 'none'})")

    def _by_country(self, country: str | None) -> Endpoint | None:
        if not country:
            return None
        name = self.config.routing.countries.get(country.upper())
        return self.config.endpoints.get(name) if name else None

    @staticmethod
    def office_country(office: str | None) -> str | None:
        """``FR000120`` -> ``FR``; None when the reference does not start with a country code."""
        if not office or len(office) < 2:
            return None
        cc = office[:2].upper()
        return cc if COUNTRY_RE.match(cc) else None

    def route(self, *, office_of_first_entry: str | None = None, member_state: str | None = None,
              recorded: str | None = None, override: str | None = None) -> Route:
        if override:
            return Route(self._named(override, "override"), "override")
        if recorded:
            return Route(self._named(recorded, "recorded TI"), "recorded")
        office_cc = self.office_country(office_of_first_entry)
        ep = self._by_country(office_cc)
        if ep is not None:
            return Route(ep, "office-of-first-entry")
        if office_cc is None:
            ep = self._by_country(member_state)
            if ep is not None:
                return Route(ep, "member-state")
        if not self.config.endpoints:
            raise RoutingError("no endpoint is configured ([[endpoints]])")
        return Route(self.config.endpoint(None), "default")
