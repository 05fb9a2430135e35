"""Transport configuration (environment binding, TLS keys, listen addresses) and TI routing (ICD 3.3.2.4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_gateway_config
from gateway.transport.config import DEFAULT_CIPHERS, load_transport_config
from gateway.transport.routing import Router, RoutingError
from tests.conftest import REPO

BASE = (REPO / "conf" / "gateway.toml").read_text().replace('"../', f'"{REPO}/')
NTI = '''
[[endpoints]]
name = "nti-fr"
url = "https://localhost:9443/as4"
party_id = "nti-fr"
environment = "conformance"
countries = ["FR"]
'''


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "gateway.toml"
    p.write_text(text)
    return load_transport_config(load_gateway_config(p))


def test_sample_configuration(tmp_path: Path, pki: Path) -> None:
    tc = _load(tmp_path, BASE)
    assert tc.environment == "conformance" and tc.tls.min_version == "TLSv1.2" and tc.tls.ciphers == DEFAULT_CIPHERS
    assert [str(a) for a in tc.inbound.listen] == ["127.0.0.1:8444", "[::1]:8444"]
    assert tc.endpoint().party_id == "sti-taxud" and tc.health.listen is not None
    assert tc.health.listen.host == "127.0.0.1" and tc.inbound.path.startswith("/")
    assert not tc.pull.enabled and tc.pull.endpoint == "sti"


def test_endpoint_of_another_environment_is_refused(tmp_path: Path, pki: Path) -> None:
    text = BASE.replace('environment = "conformance"        # must equal the top-level environment (eDelivery',
                        'environment = "production"        # (eDelivery')
    with pytest.raises(ConfigError, match="1.4.4.7"):
        _load(tmp_path, text)


def test_tls_declared_for_another_environment(tmp_path: Path, pki: Path) -> None:
    text = BASE.replace('environment = "conformance"        # must equal the top-level environment\n',
                        'environment = "production"\n')
    with pytest.raises(ConfigError, match=r"\[tls.environment\]"):
        _load(tmp_path, text)


@pytest.mark.parametrize("old,new,match", [
    (r'^max_request_bytes = ', 'listen_typo = 1\nmax_request_bytes = ', "unknown key"),
    (r'^listen = "127\.0\.0\.1:84(\d\d)"', r'listen = "0.0.0.0:84\1"', "loopback"),
    ('listen = ["127.0.0.1:8444", "[::1]:8444"]', 'listen = ["::1:8444"]', "HOST:PORT"),
    ('min_version = "TLSv1.2"', 'min_version = "TLSv1.1"', "must be one of"),
    ('min_version = "TLSv1.2"', 'min_version = "TLSv1.3"\nmax_version = "TLSv1.2"', "below min_version"),
    ('client_key = "', 'client_password = "secret"\nclient_key = "', "never written"),
    ('url = "https://127.0.0.1:8443/ics2/sti"', 'url = "http://127.0.0.1:8443/ics2/sti"', "https"),
    ('party_id = "sti-taxud"', 'party_id = "customs"', "sti-taxud or nti"),
    ('default = "sti"', 'default = "nope"', "no endpoint named"),
])
def test_configuration_errors_name_the_key(tmp_path: Path, pki: Path, old: str, new: str, match: str) -> None:
    pattern = old if old.startswith("^") else re.escape(old)
    assert re.search(pattern, BASE, re.M), old
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, re.sub(pattern, new if old.startswith("^") else new.replace("\\", "\\\\"), BASE, count=1,
                               flags=re.M))


def test_pkcs12_client_password_from_file(tmp_path: Path, pki: Path) -> None:
    text = BASE.replace(f'client_cert = "{REPO}/certs/out/trader-tls-client.pem"',
                        f'client_pkcs12 = "{pki}/trader-seal.p12"\nclient_password_file = "{pki}/trader-seal.p12.password"')
    text = text.replace(f'client_key = "{REPO}/certs/out/trader-tls-client.key"\n', "")
    tc = _load(tmp_path, text)
    assert tc.tls.client.pkcs12 is not None and tc.tls.client.password and "password" not in repr(tc.tls.client)
    from gateway.transport.tls import client_context
    client_context(tc)


def test_routing(tmp_path: Path, pki: Path) -> None:
    tc = _load(tmp_path, BASE + NTI)
    r = Router(tc)
    assert r.route(office_of_first_entry="FR000120").endpoint.name == "nti-fr"
    assert r.route(office_of_first_entry="FR000120").to_party.party_id == "nti-fr"
    assert r.route(office_of_first_entry="NL000396").endpoint.name == "sti"
    assert r.route(office_of_first_entry="NL000396", member_state="FR").reason == "default"
    assert r.route(member_state="FR").reason == "member-state"
    assert r.route().endpoint.name == "sti"
    assert r.route(office_of_first_entry="FR000120", recorded="sti-taxud").endpoint.name == "sti"
    assert r.route(recorded="sti", override="nti-fr").reason == "override"
    with pytest.raises(RoutingError, match="nti-de"):
        r.route(recorded="nti-de")


def test_routing_countries_table_overrides(tmp_path: Path, pki: Path) -> None:
    tc = _load(tmp_path, BASE.replace('# countries = { FR = "nti-fr" }', 'countries = { BE = "nti-fr" }') + NTI)
    assert Router(tc).route(office_of_first_entry="BE101000").endpoint.name == "nti-fr"
