"""`ics2gw submit FILE...`: hand ENS files to the running gateway through its submit API (loopback)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from gateway import exitcodes
from gateway.commands._common import add_conf_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit ENS files to the running gateway",
                       description="POST each file to the gateway's submit API ([api] listen). Prints one JSON "
                                   "object per file; a progress bar on stderr for many files. Exit 0 when every "
                                   "file was accepted, 1 when any was refused, 2 unreadable, 4 gateway unreachable.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--action", help="ICS2 message id (default: each payload's root element)")
    p.add_argument("--attach", action="append", default=[], metavar="IDENT=FILE",
                   help="a binary attachment (PDF or JPEG) of the one FILE, named by the payload's "
                        "binaryFile/identification IDENT; repeat for each (sent as multipart/related)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_conf_option(p)
    p.set_defaults(func=run)


_TYPES = {".pdf": "application/pdf", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _progress(done: int, total: int) -> None:
    width = 40
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from gateway.pipeline.config import read_api
    from gateway.settings import load_settings
    settings = load_settings(args.conf, secrets=False)      # every section checked, no secret needed ...
    api = read_api(settings.core.root.section("api"))     # ... except the API's own token, read here
    host = api.host if api.host not in ("0.0.0.0", "::") else "127.0.0.1"   # a wildcard bind: the local side
    host = f"[{host}]" if ":" in host else host
    headers = {"Content-Type": "application/xml"}
    if api.auth.token:
        headers["Authorization"] = f"Bearer {api.auth.token}"
    if api.auth.tls:
        print("ics2gw submit: [api] uses TLS client certificates; submit with your ERP's client "
              "certificate (e.g. curl --cert), or give the API a token_env for this command", file=sys.stderr)
        return exitcodes.CONFIG
    url = f"http://{host}:{api.port}/filings" + (f"?action={args.action}" if args.action else "")
    worst = exitcodes.OK
    show = len(args.files) > 1 and not args.quiet and sys.stderr.isatty()
    if args.attach and len(args.files) != 1:
        print("ics2gw submit: --attach goes with exactly one ENS file", file=sys.stderr)
        return exitcodes.UNREADABLE
    files = []
    for spec in args.attach:
        ident, sep, file = spec.partition("=")
        if not sep or not ident or not file:
            print(f"ics2gw submit: --attach {spec!r}: write IDENT=FILE (IDENT: the binaryFile identification)",
                  file=sys.stderr)
            return exitcodes.UNREADABLE
        try:
            files.append((ident, _TYPES.get(Path(file).suffix.lower(), "application/octet-stream"),
                          Path(file).read_bytes()))
        except OSError as exc:
            print(f"ics2gw submit: cannot read {file}: {exc.strerror}", file=sys.stderr)
            return exitcodes.UNREADABLE
    for i, path in enumerate(args.files, start=1):
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(json.dumps({"file": str(path), "error": "unreadable", "message": exc.strerror}))
            worst = max(worst, exitcodes.UNREADABLE)
            continue
        ctype = "application/xml"
        if files:
            from gateway.pipeline.submission import to_multipart
            ctype, data = to_multipart(data, files)
        req = urllib.request.Request(url, data=data, headers={**headers, "Content-Type": ctype}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                print(json.dumps({"file": str(path), **json.loads(resp.read())}))
        except urllib.error.HTTPError as exc:
            print(json.dumps({"file": str(path), "http_status": exc.code, **json.loads(exc.read() or b"{}")}))
            worst = max(worst, exitcodes.INVALID)
        except (urllib.error.URLError, OSError) as exc:
            print(f"ics2gw submit: the gateway is not reachable at {url}: {exc}", file=sys.stderr)
            return exitcodes.RUNTIME
        if show:
            _progress(i, len(args.files))
    return worst
