"""`ics2gw hmrc authorize|status|poll`: the operator's side of the UK S&S GB route (OAuth grant, token, polling)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.parse

from gateway import exitcodes
from gateway.commands._common import add_conf_option, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hmrc", help="HMRC S&S GB route: authorise once, show the token state",
                       description="Operator commands of the UK Safety and Security GB route ([hmrc] section).")
    add_conf_option(p)
    sp = p.add_subparsers(dest="hmrc_command", metavar="SUBCOMMAND")
    a = sp.add_parser("authorize", help="grant the gateway access to HMRC (OAuth authorisation code), once",
                      description="Prints the HMRC authorisation URL. Open it, sign in with the Government Gateway "
                                  "account that holds the HMRC-SS-ORG enrolment and grant access; HMRC redirects to "
                                  "[hmrc] redirect_uri, which this command listens on when it is a loopback address "
                                  "(or paste the code with --code). The tokens are written to [hmrc] token_file "
                                  "(0600, atomically). Exit 0 when authorised, 4 when HMRC refused the code.")
    add_conf_option(a)
    a.add_argument("--code", metavar="CODE", help="the authorisation code, if you copied it from the redirect")
    a.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for the redirect (default: 600)")
    a.add_argument("--follow", action="store_true",
                   help="fetch the URL yourself instead of a browser (only the bundled stand-in approves without "
                        "a sign-in page; for tests and the demo)")
    a.set_defaults(func=authorize)
    s = sp.add_parser("status", help="show the token's state (never the token itself)",
                      description="Token generation, seconds left, and whether a refresh failed. Exit 0 when a "
                                  "valid access token is held, 1 otherwise.")
    add_conf_option(s)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=status)
    p.set_defaults(func=lambda args: (p.print_help(), exitcodes.UNREADABLE)[1])


def _cfg(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gateway.config import ConfigError, load_gateway_config
    from gateway.hmrc.config import read_hmrc_config
    cfg = load_gateway_config(args.conf)
    hcfg = read_hmrc_config(cfg)
    if hcfg is None:
        raise ConfigError(args.conf, "hmrc.enabled", "the HMRC route is not enabled ([hmrc] enabled = true)")
    return hcfg


async def _wait_for_code(redirect_uri: str, state: str, timeout: float) -> str:
    from aiohttp import web
    u = urllib.parse.urlsplit(redirect_uri)
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        if request.query.get("state") != state:
            return web.Response(status=400, text="state does not match: ignored\n")
        code = request.query.get("code")
        if not code:
            return web.Response(status=400, text=f"no code: {request.query.get('error', 'unknown error')}\n")
        if not got.done():
            got.set_result(code)
        return web.Response(text="ics2gw: authorised. You can close this window.\n")

    app = web.Application()
    app.router.add_get(u.path or "/", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host = "127.0.0.1" if u.hostname in ("localhost", "127.0.0.1") else u.hostname
    site = web.TCPSite(runner, host, u.port or 80)
    await site.start()
    try:
        return await asyncio.wait_for(got, timeout)
    finally:
        await runner.cleanup()


def authorize(args: argparse.Namespace) -> int:
    import aiohttp

    from gateway.hmrc.oauth import AuthorisationNeeded, authorize_url, exchange_code
    from gateway.hmrc.tokens import TokenStore
    from gateway.hmrc.wiring import oauth_settings

    hcfg = _cfg(args)
    settings = oauth_settings(hcfg)
    url, state = authorize_url(settings)
    loopback = urllib.parse.urlsplit(hcfg.redirect_uri).hostname in ("localhost", "127.0.0.1")

    async def main() -> int:
        import ssl
        ctx = ssl.create_default_context(cafile=str(hcfg.ca_file)) if hcfg.ca_file else True
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            code = args.code
            if code is None:
                print(f"Open this URL, sign in and grant access:\n\n  {url}\n", flush=True)
                if not loopback:
                    code = input("Paste the code from the redirect: ").strip()
                else:
                    waiter = asyncio.create_task(_wait_for_code(hcfg.redirect_uri, state, args.timeout))
                    await asyncio.sleep(0.2)      # the listener is up before anyone is redirected to it
                    if args.follow:
                        async with session.get(url, allow_redirects=False) as resp:
                            location = resp.headers.get("Location")
                        if not location:
                            waiter.cancel()
                            print("ics2gw hmrc authorize: the authorisation URL did not redirect", file=sys.stderr)
                            return exitcodes.RUNTIME
                        async with aiohttp.ClientSession() as plain:
                            async with plain.get(location) as resp:
                                await resp.read()
                    print(f"waiting for the redirect to {hcfg.redirect_uri} ...", flush=True)
                    code = await waiter
            try:
                tokens = await exchange_code(session, settings, code)
            except AuthorisationNeeded as exc:
                print(f"ics2gw hmrc authorize: {exc}", file=sys.stderr)
                return exitcodes.RUNTIME
        store = TokenStore(hcfg.token_file)
        with store.locked():     # not in the middle of the daemon's refresh; the daemon re-reads the file
            store.save(tokens)
        print(f"authorised: token written to {hcfg.token_file} (access token valid for {tokens.lifetime():.0f} s; "
              "the daemon refreshes it)")
        return exitcodes.OK

    try:
        return asyncio.run(main())
    except (asyncio.TimeoutError, TimeoutError):
        print(f"ics2gw hmrc authorize: no redirect within {args.timeout:.0f} s", file=sys.stderr)
        return exitcodes.RUNTIME
    except (aiohttp.ClientError, OSError) as exc:
        print(f"ics2gw hmrc authorize: cannot reach HMRC: {exc}", file=sys.stderr)
        return exitcodes.RUNTIME


def status(args: argparse.Namespace) -> int:
    from gateway.hmrc.oauth import TokenManager
    from gateway.hmrc.tokens import TokenStore
    from gateway.hmrc.wiring import oauth_settings

    hcfg = _cfg(args)
    doc = TokenManager(TokenStore(hcfg.token_file), oauth_settings(hcfg)).status()
    doc = {"token_file": str(hcfg.token_file), **doc}
    if args.json:
        print_json(doc)
    elif doc.get("authorised"):
        print(f"authorised: token generation {doc['generation']}, access token valid for "
              f"{doc['access_seconds_left']} s ({doc['token_file']})")
    else:
        print(f"not authorised: {doc.get('reason') or 'the access token has expired'}; run `ics2gw hmrc authorize`")
    return exitcodes.OK if doc.get("authorised") else exitcodes.INVALID
