"""The HMRC client and token manager against the stand-in, over real TLS on loopback (the test PKI).

Each status of the API definitions is met for real: 200, 400 with errorresponse, 401 (expired token, refreshed
once), 403 (EORI), 406 / 415 (headers), 429 with Retry-After, 5xx; refresh tokens rotate and the old one dies."""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.hmrc import protocol
from gateway.hmrc.client import HmrcClient, NotAuthorised, Refused, RetryLater, Submitted
from gateway.hmrc.oauth import AuthorisationNeeded, OAuthSettings, TokenManager, authorize_url, exchange_code
from gateway.hmrc.tokens import TokenStore
from gateway.hmrc_standin.app import HmrcStandin, StandinConfig
from tests.hmrc_support import EORI, ie313, ie315


@pytest.fixture
async def standin(pki: Path) -> Any:
    s = HmrcStandin(StandinConfig(port=0, cert=pki / "customs-tls-server.pem", key=pki / "customs-tls-server.key",
                                  outcome_delay=0.0))
    await s.start()
    yield s
    await s.stop()


def _settings(s: HmrcStandin) -> OAuthSettings:
    return OAuthSettings(base_url=f"https://127.0.0.1:{s.port}", client_id=s.cfg.client_id,
                         client_secret=s.cfg.client_secret, redirect_uri="http://127.0.0.1:9/callback")


def _ssl(pki: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki / "customs-root.pem"))


async def _authorise(s: HmrcStandin, pki: Path, store: TokenStore) -> None:
    settings = _settings(s)
    url, state = authorize_url(settings)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ssl(pki))) as session:
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status == 302
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(resp.headers["Location"]).query)
        assert q["state"] == [state]
        tokens = await exchange_code(session, settings, q["code"][0])
        store.save(tokens)
        with pytest.raises(AuthorisationNeeded):          # an authorisation code works once
            await exchange_code(session, settings, q["code"][0])


@pytest.fixture
async def client(standin: HmrcStandin, pki: Path, tmp_path: Path) -> Any:
    store = TokenStore(tmp_path / "token.json")
    await _authorise(standin, pki, store)
    alerts: list[tuple[str, dict[str, Any]]] = []
    tm = TokenManager(store, _settings(standin), on_alert=lambda kind, **d: alerts.append((kind, d)))
    c = HmrcClient(f"https://127.0.0.1:{standin.port}", tm, ca_file=pki / "customs-root.pem")
    c.alerts = alerts  # type: ignore[attr-defined]
    yield c
    await c.close()


async def test_submit_poll_fetch_acknowledge(client: HmrcClient, standin: HmrcStandin) -> None:
    res = await client.submit(ie315("LRN-CLIENT-1"), kind="IE315")
    assert isinstance(res, Submitted) and protocol.CORRELATION_ID_RE.match(res.correlation_id)
    assert len(res.correlation_id) == 14
    refs = await client.list_outcomes()
    assert [r.correlation_id for r in refs] == [res.correlation_id] and refs[0].mrn
    o = await client.get_outcome(res.correlation_id)
    assert o is not None and o.kind == "IE328" and o.lrn == "LRN-CLIENT-1" and o.mrn == refs[0].mrn
    assert o.correlation_id == res.correlation_id
    assert await client.ack_outcome(res.correlation_id) is True
    assert await client.ack_outcome(res.correlation_id) is False      # 404: already acknowledged
    assert await client.get_outcome(res.correlation_id) is None
    assert await client.list_outcomes() == []                        # 204


async def test_schema_and_rule_errors_are_400_with_findings(client: HmrcClient) -> None:
    bad = ie315("LRN-BAD").replace(b"<TraModAtBorHEA76>4</TraModAtBorHEA76>", b"<TraModAtBorHEA76>X</TraModAtBorHEA76>")
    res = await client.submit(bad, kind="IE315")
    assert isinstance(res, Refused) and res.http_status == 400
    assert res.findings and all(f["code"].isdigit() for f in res.findings)
    assert res.classification()[0] == "permanent"


async def test_another_eori_in_messenmes3_is_403(client: HmrcClient) -> None:
    res = await client.submit(ie315("LRN-403", sender="GB999999999"), kind="IE315")
    assert isinstance(res, Refused) and res.http_status == 403 and "FORBIDDEN" in res.reason


async def test_amendment_with_another_mrn_in_the_body_is_8999(client: HmrcClient) -> None:
    body = ie313("26GB00000000000010")
    status, data, _ = await client._request("PUT", protocol.DECLARATIONS + "26GB00000000000028", body=body)
    assert status == 400 and protocol.parse_error_response(data)[0].number == "8999"
    res = await client.submit(body, kind="IE313", mrn="not-an-mrn")
    assert isinstance(res, Refused) and res.http_status == 0


async def test_expired_access_token_is_refreshed_once_and_the_old_refresh_token_dies(
        client: HmrcClient, standin: HmrcStandin, pki: Path) -> None:
    before = client.tokens.current()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ssl(pki))) as s:
        async with s.post(f"https://127.0.0.1:{standin.port}/admin/expire-tokens") as r:
            assert r.status == 200
    res = await client.submit(ie315("LRN-EXPIRED"), kind="IE315")
    assert isinstance(res, Submitted)
    after = client.tokens.current()
    assert after.generation == before.generation + 1 and after.refresh_token != before.refresh_token
    assert client.tokens.store.load().refresh_token == after.refresh_token      # on disk before it was used
    assert standin.state.counters["refreshes"] == 1 and standin.state.counters["expired-token"] == 1
    # HMRC rotates: the previous refresh token is refused from now on
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ssl(pki))) as s:
        async with s.post(f"https://127.0.0.1:{standin.port}/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": before.refresh_token,
                "client_id": standin.cfg.client_id, "client_secret": standin.cfg.client_secret}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"


async def test_refresh_is_early_and_concurrent_callers_share_one_refresh(client: HmrcClient,
                                                                        standin: HmrcStandin) -> None:
    t = client.tokens.current()
    client.tokens.clock = lambda: t.obtained_at + t.lifetime() * 0.6          # past half of the lifetime
    results = await asyncio.gather(*(client.submit(ie315(f"LRN-PAR-{i}"), kind="IE315") for i in range(5)))
    assert all(isinstance(r, Submitted) for r in results)
    assert standin.state.counters["refreshes"] == 1


async def test_a_lost_rotation_keeps_filing_on_the_access_token_and_alerts(client: HmrcClient,
                                                                           standin: HmrcStandin) -> None:
    """HMRC rotated but we never stored the new pair (as after a crash): the refresh token is dead. The access
    token in hand still works, so filing goes on; an urgent alert asks the operator to re-authorise."""
    t = client.tokens.current()
    standin.state.refresh.pop(t.refresh_token)                  # rotated elsewhere: ours is no longer valid
    client.tokens.clock = lambda: t.obtained_at + t.lifetime() * 0.6
    res = await client.submit(ie315("LRN-LOST"), kind="IE315")
    assert isinstance(res, Submitted)
    assert client.tokens.refresh_broken and client.alerts[0][0] == "hmrc-authorisation-needed"  # type: ignore
    assert client.alerts[0][1]["category"] == "A"                                                  # type: ignore
    client.tokens.clock = lambda: t.expires_at + 1                # and once it has expired: hold, do not guess
    res = await client.submit(ie315("LRN-LOST-2"), kind="IE315")
    assert isinstance(res, NotAuthorised) and res.classification()[0] == "hold"


async def test_rate_limit_is_429_with_retry_after(client: HmrcClient, standin: HmrcStandin) -> None:
    standin.cfg.rate_per_second = 2.0
    results = [await client.submit(ie315(f"LRN-RATE-{i}"), kind="IE315") for i in range(4)]
    limited = [r for r in results if isinstance(r, RetryLater)]
    assert limited and limited[0].http_status == 429 and limited[0].retry_after == 1.0
    assert limited[0].classification()[0] == "retry"


async def test_server_errors_are_retried_later(client: HmrcClient, standin: HmrcStandin) -> None:
    standin.state.fail_next.extend([503, 500])
    r1 = await client.submit(ie315("LRN-5XX"), kind="IE315")
    r2 = await client.submit(ie315("LRN-5XX"), kind="IE315")
    assert isinstance(r1, RetryLater) and r1.http_status == 503
    assert isinstance(r2, RetryLater) and r2.http_status == 500
    assert isinstance(await client.submit(ie315("LRN-5XX"), kind="IE315"), Submitted)


async def test_headers_the_definitions_require(client: HmrcClient, standin: HmrcStandin, pki: Path) -> None:
    session = await client.session()
    bearer = await client.tokens.bearer(session)
    url = f"https://127.0.0.1:{standin.port}{protocol.DECLARATIONS}"
    auth = {"Authorization": f"Bearer {bearer}"}
    async with session.post(url, data=ie315("H1"), headers={**auth, "Accept": "application/xml",
                                                            "Content-Type": protocol.CONTENT_TYPE}) as r:
        assert r.status == 406
    async with session.post(url, data=ie315("H2"), headers={**auth, "Accept": protocol.ACCEPT,
                                                            "Content-Type": "text/plain"}) as r:
        assert r.status == 415
    async with session.post(url, data=ie315("H3"), headers={"Accept": protocol.ACCEPT,
                                                            "Content-Type": protocol.CONTENT_TYPE}) as r:
        assert r.status == 401
    big = b"<x>" + b"a" * (standin.cfg.max_body_bytes + 10) + b"</x>"
    async with session.post(url, data=big, headers={**auth, "Accept": protocol.ACCEPT,
                                                     "Content-Type": protocol.CONTENT_TYPE}) as r:
        assert r.status == 413


async def test_unenrolled_user_cannot_file(client: HmrcClient, standin: HmrcStandin) -> None:
    standin.cfg.enrolled = ("GB000000001",)
    res = await client.submit(ie315("LRN-ENROL"), kind="IE315")
    assert isinstance(res, NotAuthorised)


async def test_transport_failure_is_retry_later(tmp_path: Path, pki: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    from gateway.hmrc.tokens import TokenSet
    store.save(TokenSet("a", "r", time.time() + 3600, protocol.SCOPE, time.time()))
    settings = OAuthSettings("https://127.0.0.1:1", "c", "s", "http://127.0.0.1:9/cb")
    c = HmrcClient("https://127.0.0.1:1", TokenManager(store, settings), ca_file=pki / "customs-root.pem",
                   timeout_seconds=5)
    try:
        res = await c.submit(ie315("LRN-DOWN"), kind="IE315")
    finally:
        await c.close()
    assert isinstance(res, RetryLater) and res.http_status is None


def test_stand_in_enrolled_default_matches_the_sample() -> None:
    assert StandinConfig().enrolled == (EORI,)


_REFRESH_SCRIPT = """
import asyncio, ssl, sys, aiohttp
from gateway.hmrc.oauth import OAuthSettings, TokenManager
from gateway.hmrc.tokens import TokenStore
store, base, ca, cid, secret = sys.argv[1:6]
async def main():
    tm = TokenManager(TokenStore(store), OAuthSettings(base, cid, secret, "http://127.0.0.1:9/cb"))
    ctx = ssl.create_default_context(cafile=ca)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        await tm.refresh(s, reason="test")
asyncio.run(main())
"""


@pytest.mark.parametrize("point", ["refresh-answered", "refresh-saved"])
async def test_a_crash_during_refresh_token_rotation_never_leaves_the_gateway_without_a_token(
        client: HmrcClient, standin: HmrcStandin, pki: Path, point: str) -> None:
    """SIGKILL right after HMRC rotated (new pair only in memory) or right after the new pair was saved. Either
    way the restarted gateway holds a valid access token and keeps filing; after the lost rotation it says, once,
    that the operator must re-authorise."""
    import os
    import sys
    store = client.tokens.store
    before = store.load()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _REFRESH_SCRIPT, str(store.path), f"https://127.0.0.1:{standin.port}",
        str(pki / "customs-root.pem"), standin.cfg.client_id, standin.cfg.client_secret,
        env={**os.environ, "ICS2GW_HMRC_CRASH_AT": point}, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == -9, err.decode()
    assert standin.state.counters["refreshes"] == 1                     # HMRC did rotate
    on_disk = store.load()
    restarted = TokenManager(store, _settings(standin), on_alert=lambda kind, **d: client.alerts.append((kind, d)))  # type: ignore
    c = HmrcClient(client.base_url, restarted, ca_file=pki / "customs-root.pem")
    try:
        if point == "refresh-answered":
            assert on_disk.generation == before.generation and on_disk.refresh_started_at is not None
            restarted.clock = lambda: on_disk.obtained_at + on_disk.lifetime() * 0.6   # a refresh is due
            assert isinstance(await c.submit(ie315("LRN-ROT-1"), kind="IE315"), Submitted)
            assert restarted.refresh_broken and [a[0] for a in client.alerts] == ["hmrc-authorisation-needed"]  # type: ignore
            assert store.load().refresh_started_at is None
        else:
            assert on_disk.generation == before.generation + 1
            restarted.clock = lambda: on_disk.obtained_at + on_disk.lifetime() * 0.6
            assert isinstance(await c.submit(ie315("LRN-ROT-2"), kind="IE315"), Submitted)
            assert restarted.refresh_broken is None and store.load().generation == before.generation + 2
            assert client.alerts == []                                                                     # type: ignore
    finally:
        await c.close()


async def test_poller_backs_off_on_429_and_5xx_and_acknowledges_only_after_delivery(
        client: HmrcClient, standin: HmrcStandin) -> None:
    from gateway.hmrc.poller import HmrcPoller
    res = await client.submit(ie315("LRN-POLL"), kind="IE315")
    assert isinstance(res, Submitted)
    delivered: list[str] = []
    acked_at_delivery: list[bool] = []

    async def deliver(o: Any, *, source_id: str) -> bool:
        acked_at_delivery.append(standin.state.outcomes[o.correlation_id].acked)
        delivered.append(source_id)
        return True

    delays: list[float] = []
    stop = asyncio.Event()

    async def sleep(d: float) -> None:
        delays.append(d)
        if len(delays) == 4:
            stop.set()

    standin.state.fail_next.extend([429, 503, 502])
    poller = HmrcPoller(client, deliver, interval=1.0, max_interval=8.0, sleep=sleep)
    await asyncio.wait_for(poller.run(stop), 30)
    assert delays[:3] == [2.0, 4.0, 8.0]          # doubled (Retry-After 1 s is shorter), capped at max_interval
    assert delays[3] == 1.0                       # back to the interval once a poll succeeds
    assert delivered == [f"outcome/{res.correlation_id}"] and acked_at_delivery == [False]
    assert standin.state.outcomes[res.correlation_id].acked


async def test_reauthorisation_while_running_is_picked_up_without_restart(client: HmrcClient, standin: HmrcStandin,
                                                                          pki: Path) -> None:
    """The refresh token died (refresh broken, access token expired: hold). The operator runs `hmrc authorize`,
    which replaces the token file: the running manager must use it at once, not after a restart."""
    t = client.tokens.current()
    standin.state.refresh.pop(t.refresh_token)
    client.tokens.clock = lambda: t.obtained_at + t.lifetime() * 0.6
    assert isinstance(await client.submit(ie315("LRN-RE-1"), kind="IE315"), Submitted)
    assert client.tokens.refresh_broken
    client.tokens.clock = time.time
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ssl(pki))) as s:
        async with s.post(f"https://127.0.0.1:{standin.port}/admin/expire-tokens") as r:
            assert r.status == 200
    assert isinstance(await client.submit(ie315("LRN-RE-2"), kind="IE315"), NotAuthorised)
    await _authorise(standin, pki, client.tokens.store)             # what `ics2gw hmrc authorize` does
    res = await client.submit(ie315("LRN-RE-3"), kind="IE315")
    assert isinstance(res, Submitted), res
    assert client.tokens.refresh_broken is None and client.tokens.status()["authorised"] is True


_OTHER_PROCESS = """
import asyncio, ssl, sys
from pathlib import Path
import aiohttp
from gateway.hmrc.oauth import OAuthSettings, TokenManager
from gateway.hmrc.tokens import TokenStore

async def main() -> None:
    store = TokenStore(Path(sys.argv[1]))
    t = store.load()
    tm = TokenManager(store, OAuthSettings(sys.argv[2], sys.argv[3], sys.argv[4], "http://127.0.0.1:9/cb"),
                      clock=lambda: t.obtained_at + t.lifetime() * 0.6)
    tm.current()
    print("loaded", flush=True)
    sys.stdin.readline()
    ctx = ssl.create_default_context(cafile=sys.argv[5])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        await tm.refresh(s, reason="due")
    print("broken" if tm.refresh_broken else f"ok {tm.current().generation}", flush=True)

asyncio.run(main())
"""


async def test_a_refresh_by_another_process_is_seen_not_repeated(client: HmrcClient, standin: HmrcStandin,
                                                                 pki: Path) -> None:
    """Two processes on one token file (the daemon, and a CLI or a second daemon), both holding generation 1 and
    both due. One refreshes; the other must re-read the file under the lock and use generation 2, not spend the
    dead refresh token (which HMRC answers with invalid_grant: authorisation broken for nothing)."""
    import sys
    t = client.tokens.current()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OTHER_PROCESS, str(client.tokens.store.path), f"https://127.0.0.1:{standin.port}",
        standin.cfg.client_id, standin.cfg.client_secret, str(pki / "customs-root.pem"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).parent.parent))
    assert proc.stdout is not None and proc.stdin is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 60)) == b"loaded\n"
    client.tokens.clock = lambda: t.obtained_at + t.lifetime() * 0.6
    await client.tokens.refresh(await client.session(), reason="due")
    assert client.tokens.current().generation == 2
    out, _ = await asyncio.wait_for(proc.communicate(b"go\n"), 60)
    assert out.decode().strip() == "ok 2"
    assert standin.state.counters["refreshes"] == 1 and client.tokens.refresh_broken is None


def test_saving_never_removes_a_live_writers_temporary_file(tmp_path: Path) -> None:
    import os
    from gateway.hmrc.tokens import TokenSet
    store = TokenStore(tmp_path / "token.json")
    dead = 2 ** 22 + 12345                                                  # above any pid_max: not alive
    live = tmp_path / f".token.json.{os.getppid()}.1.tmp"                  # another process mid-write
    gone = tmp_path / f".token.json.{dead}.1.tmp"                          # left by a crash
    live.write_text("{}")
    gone.write_text("{}")
    store.save(TokenSet("a", "r", time.time() + 60, protocol.SCOPE, time.time()))
    assert live.exists() and not gone.exists()
