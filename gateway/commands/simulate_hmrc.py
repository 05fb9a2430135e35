"""`ics2gw simulate-hmrc`: run the HMRC S&S GB stand-in (OAuth, ENS store, outcomes, notifications) over HTTPS."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway import exitcodes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate-hmrc", help="run the HMRC S&S GB stand-in (OAuth + ENS + outcomes APIs)",
                       description="An HTTPS stand-in for HMRC's Safety and Security GB APIs, faithful to the API "
                                   "definitions: OAuth with expiring access tokens and rotating refresh tokens, "
                                   "scope/Accept/Content-Type checks, EORI checks (403), XSD and business rules "
                                   "(400), outcomes after a delay until acknowledged, IE351 notifications, 429 "
                                   "rate limiting. Runs until SIGTERM or Ctrl-C.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8490, help="listen port (default: 8490; 0 = any free port)")
    p.add_argument("--cert", type=Path, default=Path("certs/out/customs-tls-server.pem"),
                   help="TLS server certificate (default: the test PKI's customs-tls-server.pem)")
    p.add_argument("--key", type=Path, default=Path("certs/out/customs-tls-server.key"), help="its key")
    p.add_argument("--client-id", default="ics2gw-test-client", help="the one registered application's client id")
    p.add_argument("--client-secret-env", default="HMRC_CLIENT_SECRET", metavar="NAME",
                   help="environment variable holding the application's client secret (default: HMRC_CLIENT_SECRET;"
                        " if unset, the test secret 'ics2gw-test-secret')")
    p.add_argument("--client-secret-file", type=Path, metavar="FILE",
                   help="file holding the client secret (instead of --client-secret-env)")
    p.add_argument("--enrol", action="append", metavar="EORI",
                   help="an EORI with an HMRC-SS-ORG enrolment (repeatable; default: GB1234231)")
    p.add_argument("--user-eori", metavar="EORI", help="who grants access at /oauth/authorize (default: first --enrol)")
    p.add_argument("--access-token-seconds", type=float, default=4 * 3600.0, help="access token lifetime (4 h)")
    p.add_argument("--decision", choices=("accept", "reject", "none"), default="accept",
                   help="outcome when no simulateRiskingResponse test header is sent (default: accept)")
    p.add_argument("--outcome-delay", type=float, default=1.0, help="seconds before an outcome appears (default 1)")
    p.add_argument("--interventions", action="store_true", help="an IE351 after every accepted ENS")
    p.add_argument("--rate", type=float, default=3.0, help="requests per second per application (HMRC: 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gateway.hmrc_standin.app import StandinConfig, serve

    enrolled = tuple(args.enrol or ["GB1234231"])
    for f in (args.cert, args.key):
        if not f.exists():
            print(f"ics2gw simulate-hmrc: {f} not found (run `make pki`, or give --cert/--key)", file=sys.stderr)
            return exitcodes.UNREADABLE
    cfg = StandinConfig(host=args.host, port=args.port, cert=args.cert, key=args.key, client_id=args.client_id,
                        client_secret=(args.client_secret_file.read_text().strip() if args.client_secret_file
                                       else os.environ.get(args.client_secret_env, "ics2gw-test-secret")),
                        enrolled=enrolled, user_eori=args.user_eori or enrolled[0],
                        access_token_seconds=args.access_token_seconds, default_decision=args.decision,
                        outcome_delay=args.outcome_delay, interventions=args.interventions,
                        rate_per_second=args.rate)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    def ready(port: int) -> None:
        print(f"hmrc stand-in ready port={port}", flush=True)

    async def main() -> None:
        import signal
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, ready=ready, stop=stop)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"ics2gw simulate-hmrc: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return exitcodes.RUNTIME
    return exitcodes.OK
