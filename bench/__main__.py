"""`python -m bench [--quick] [--n N] [--skip-e2e] [--skip-peer] [--skip-big] [--skip-amqp] [--skip-multi] [--skip-failover]`: run everything, print the
table, write bench/results.json. Ratios are between figures measured in this same run on this machine."""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import amqp, e2e, failover, limit, micro, multi, peer, report
from bench.timing import cores

REPO = Path(__file__).resolve().parent.parent


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter timings (a smoke run, not for the README)")
    ap.add_argument("--n", type=int, default=300, help="10 KB filings per e2e mode (default 300)")
    ap.add_argument("--n-big", type=int, default=20, help="1 MB filings in the e2e variant (default 20)")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-amqp", action="store_true")
    ap.add_argument("--skip-failover", action="store_true", help="skip the PostgreSQL failover timings")
    ap.add_argument("--skip-multi", action="store_true",
                    help="skip SQLite x1 vs PostgreSQL x1/x2/x3 instances on one journal")
    ap.add_argument("--n-multi", type=int, default=None, help="10 KB filings per multi-instance configuration "
                                                             "(default: --n)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    args = ap.parse_args(argv)
    pki = REPO / "certs" / "out"
    if not (pki / "trader-seal.key").exists():
        print("bench: certs/out is missing: run `make pki` (make bench does)", file=sys.stderr)
        return 2
    t0 = time.time()
    n_cores = cores()
    res: dict = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "machine": {"cpu": _cpu(), "cores": n_cores, "python": platform.python_version(),
                             "platform": platform.platform()}}
    work = Path(tempfile.mkdtemp(prefix="ics2gw-bench-"))
    try:
        step = lambda s: print(f"bench: {s} ...", file=sys.stderr, flush=True)  # noqa: E731
        step("crypto floor (RSA, gzip, SHA-256, c14n)")
        res["limit"] = limit.run(pki, quick=args.quick)
        step("seal / verify of a 10 KB ENS")
        res["micro"] = micro.run_crypto(pki, work, quick=args.quick)
        if not args.skip_peer:
            step("Apache Santuario verifying the same message")
            res["peer"] = peer.run(pki, work / "ens-10k.mime", work, repeat=3000 if args.quick else 10000)
        if not args.skip_big:
            step("streaming pack / inspect of a 100 MB payload")
            res["big"] = micro.run_big(pki, work)
        if not args.skip_e2e:
            step(f"end to end, push and pull, {args.n} filings each, and {args.n_big} of 1 MB")
            res["e2e"] = e2e.run(work, n=args.n, n_big=args.n_big, quick=args.quick)
        else:
            res["e2e"] = {"skipped": "--skip-e2e"}
        if not args.skip_amqp:
            step(f"AMQP intake and events next to the HTTP API, {args.n} filings each")
            res["amqp"] = amqp.run(work, n=args.n)
        if not args.skip_multi:
            n_multi = args.n_multi or args.n
            step(f"one journal, several instances: SQLite x1, PostgreSQL x1/x2/x3, {n_multi} filings each")
            res["multi"] = multi.run(work, n=n_multi)
        if not args.skip_failover:
            step("PostgreSQL journal failure paths: singleton release, database restart and crash")
            res["failover"] = failover.measure()
        lim, mic = res["limit"], res["micro"]
        sign, verify = lim["engine_sign_per_s"], lim["engine_verify_per_s"]
        ratios: dict = {"cores": n_cores}
        ratios["limit_push_filings_per_s"] = limit.filing_limit(n_cores, sign, verify)
        ratios["seal_ratio_of_rsa"] = mic["seal_pack_per_s"] / sign
        ratios["seal_only_ratio_of_rsa"] = mic["seal_build_per_s"] / sign
        p = res.get("peer", {})
        ratios["verify_ratio_vs_santuario"] = mic["verify_per_s"] / p["verify_per_s"] if "verify_per_s" in p else None
        big = res.get("big", {})
        ratios["pack_rss_ratio"] = big.get("pack_rss_ratio")
        ratios["inspect_rss_ratio"] = big.get("inspect_rss_ratio")
        push, pull = res["e2e"].get("push", {}), res["e2e"].get("pull", {})
        if push.get("filings_per_s"):
            ratios["e2e_filings_per_s"] = push["filings_per_s"]
            ratios["e2e_ratio_of_limit"] = push["filings_per_s"] / ratios["limit_push_filings_per_s"]
            ratios["fsyncs_per_filing"] = push["fsyncs_per_filing"]
        if pull.get("filings_per_s"):
            extra = pull.get("pull_requests_per_filing", 0.0)
            ratios["limit_pull_filings_per_s"] = limit.filing_limit(n_cores, sign, verify, extra, extra)
            ratios["e2e_pull_filings_per_s"] = pull["filings_per_s"]
            ratios["e2e_ratio_of_limit_pull"] = pull["filings_per_s"] / ratios["limit_pull_filings_per_s"]
        res["ratios"] = ratios
        res["duration_s"] = time.time() - t0
        report.write(res, args.out)
        print(report.table(res))
        print(f"\nwritten: {args.out}")
        failed = res.get("multi", {}).get("failed")
        if failed:
            print("\nbench: FAILED: a multi-instance run was wrong (not merely slow):", file=sys.stderr)
            for key, why in failed.items():
                for line in why:
                    print(f"  {key}: {line}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
