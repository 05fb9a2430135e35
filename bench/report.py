"""The results table (stdout) and bench/results.json: every figure, every target, pass or miss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = {  # name: (comparison, threshold, what it means)
    "e2e_ratio_of_limit": (">=", 0.5, "push filings/s over the RSA-only limit cores/(4 sign + 4 verify)"),
    "e2e_ratio_of_limit_pull": (">=", 0.5, "pull filings/s over the RSA-only limit incl. PullRequests"),
    "seal_ratio_of_rsa": (">=", 0.8, "seal+pack of a 10 KB ENS vs the bare RSA signature (ops/s ratio)"),
    "verify_ratio_vs_santuario": (">=", 2.0, "our verify vs Apache Santuario's, same message, per core"),
    "pack_rss_ratio": ("<", 1.0, "peak RSS of streaming pack of a 100 MB payload / payload size"),
    "inspect_rss_ratio": ("<", 1.0, "peak RSS of inspect of that message / payload size"),
    "fsyncs_per_filing": ("<", 1.0, "journal commits (one WAL fsync each) per filing, push e2e"),
}


def verdict(name: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "skipped"
    op, thr, _ = TARGETS[name]
    ok = value >= thr if op == ">=" else value < thr
    return "met" if ok else "MISSED"


def _f(v: Any, nd: int = 2) -> str:
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if v is None:
        return "-"
    return str(v)


def table(res: dict[str, Any]) -> str:
    lines = [f"ics2gw benchmark {res['date']} on {res['machine']['cpu']} ({res['machine']['cores']} cores), "
             f"{res['duration_s']:.0f} s", "", "TARGETS"]
    for name, (op, thr, what) in TARGETS.items():
        v = res["ratios"].get(name)
        lines.append(f"  {name:28} {_f(v, 3):>10}  target {op} {thr:<4}  {verdict(name, v):8} {what}")
    lim = res.get("limit", {})
    mic = res.get("micro", {})
    lines += ["", "CRYPTO FLOOR (one core)",
              f"  RSA sign/s   engine {_f(lim.get('engine_sign_per_s'), 0)}  cryptography "
              f"{_f(lim.get('cryptography_sign_per_s'), 0)}  xmlsec {_f(lim.get('xmlsec_sign_per_s'), 0)}  "
              f"openssl speed {_f(lim.get('openssl_speed', {}).get('sign_per_s'), 0)}",
              f"  RSA verify/s engine {_f(lim.get('engine_verify_per_s'), 0)}  cryptography "
              f"{_f(lim.get('cryptography_verify_per_s'), 0)}  xmlsec {_f(lim.get('xmlsec_verify_per_s'), 0)}  "
              f"openssl speed {_f(lim.get('openssl_speed', {}).get('verify_per_s'), 0)}",
              f"  MB/s 10 KB / 1 MB: gzip-6 {_f(lim.get('gzip6_10k_mb_per_s'), 0)} / {_f(lim.get('gzip6_1m_mb_per_s'), 0)}"
              f"  sha256 {_f(lim.get('sha256_10k_mb_per_s'), 0)} / {_f(lim.get('sha256_1m_mb_per_s'), 0)}"
              f"  exc-c14n {_f(lim.get('exc_c14n_10k_mb_per_s'), 0)} / {_f(lim.get('exc_c14n_1m_mb_per_s'), 0)}",
              f"  limit filings/s push {_f(res['ratios'].get('limit_push_filings_per_s'), 1)}  pull "
              f"{_f(res['ratios'].get('limit_pull_filings_per_s'), 1)}",
              "", "MICRO (10 KB ENS, one core)",
              f"  seal+pack/s {_f(mic.get('seal_pack_per_s'), 0)}  seal/s {_f(mic.get('seal_build_per_s'), 0)}  "
              f"verify/s {_f(mic.get('verify_per_s'), 0)}  receipt/s {_f(mic.get('receipt_per_s'), 0)}"]
    peer = res.get("peer", {})
    lines.append(f"  Santuario verify/s {_f(peer.get('verify_per_s'), 0)} (median of {peer.get('runs')} in one JVM)"
                 if "verify_per_s" in peer else f"  Santuario: {peer.get('skipped')}")
    big = res.get("big", {})
    if big:
        lines += ["", f"100 MB PAYLOAD ({_f(big.get('payload_bytes'), 0)} bytes, limits raised by configuration)"]
        for k in ("baseline", "pack", "inspect", "pack_command", "inspect_command"):
            d = big.get(k, {})
            if "error" in d:
                lines.append(f"  {k:13} error: {d['error'][-200:]}")
            else:
                lines.append(f"  {k:13} wall {_f(d.get('wall_s'), 2)} s  peak RSS {_f(d.get('peak_rss_bytes', 0) / 1e6, 1)} MB"
                             + (f"  compressed {_f(d.get('compressed_bytes', 0) / 1e6, 1)} MB" if 'compressed_bytes' in d else ""))
    e2e = res.get("e2e", {})
    lines += ["", "END TO END (daemon + simulator, loopback TLS)"]
    if "skipped" in e2e:
        lines.append(f"  skipped: {e2e['skipped']}")
    for key, d in e2e.items():
        if not isinstance(d, dict):
            continue
        if "skipped" in d:
            lines.append(f"  {key:9} skipped: {d['skipped']}")
            continue
        lr, lm = d["latency_receipt_s"], d["latency_mrn_s"]
        lines.append(f"  {key:9} {d['registered']}/{d['filings']} registered  {_f(d['filings_per_s'], 1)} filings/s  "
                     f"receipt p50/p95/p99 {_f(lr['p50'], 3)}/{_f(lr['p95'], 3)}/{_f(lr['p99'], 3)} s  "
                     f"MRN {_f(lm['p50'], 3)}/{_f(lm['p95'], 3)}/{_f(lm['p99'], 3)} s")
        lines.append(f"  {'':9} CPU s/filing gateway {_f(d['cpu_s_per_filing']['gateway'], 4)} simulator "
                     f"{_f(d['cpu_s_per_filing']['simulator'], 4)}  peak RSS gateway "
                     f"{_f(d['peak_rss_bytes']['gateway'] / 1e6, 0)} MB simulator "
                     f"{_f(d['peak_rss_bytes']['simulator'] / 1e6, 0)} MB  fsyncs/filing {_f(d['fsyncs_per_filing'], 2)}"
                     + (f"  PullRequests {d['pull_requests']} ({d['pull_requests_empty']} empty)" if "pull_requests" in d else ""))
    amqp = res.get("amqp")
    if amqp:
        lines += ["", "AMQP INTAKE AND EVENTS vs HTTP API (same gateway, same run, private RabbitMQ)"]
        if "skipped" in amqp:
            lines.append(f"  skipped: {amqp['skipped']}")
        for key in ("api", "amqp"):
            d = amqp.get(key)
            if isinstance(d, dict):
                lines.append(f"  {key:5} {amqp['filings']} filings: intake {_f(d['intake_s'], 2)} s  "
                             f"{_f(d['filings_per_s'], 1)} filings/s to registered  CPU s/filing gateway "
                             f"{_f(d['gateway_cpu_s_per_filing'], 4)}  events {d['events']} "
                             f"({_f(d['events_per_s'], 1)}/s)")
    lines += multi_table(res.get("multi"))
    lines += failover_lines(res.get("failover"))
    return "\n".join(lines)


def multi_table(m: dict[str, Any] | None) -> list[str]:
    if not m:
        return []
    lines = ["", f"ONE JOURNAL, SEVERAL INSTANCES ({m.get('filings')} x 10 KB filings each; this machine has "
                 f"{m.get('cores')} cores, shared by every process below)"]
    if "skipped" in m:
        return lines + [f"  skipped: {m['skipped']}"]
    lines.append(f"  {'config':10} {'filings/s':>9} {'wall s':>7}  {'CPU ms/filing: gw':>17} {'sim':>5} {'pg':>5}  "
                 f"{'sim share':>9} {'machine busy':>12} {'other load':>10}  per-instance gw CPU s")
    for key, d in m.get("configs", {}).items():
        if "filings_per_s" not in d:
            lines.append(f"  {key:10} FAILED: {'; '.join(d.get('failed', []))[:300]}")
            continue
        c, cs = d["cpu_s_per_filing"], d["cpu_s"]
        lines.append(f"  {key:10} {_f(d['filings_per_s'], 1):>9} {_f(d['wall_s'], 1):>7}  {c['gateway'] * 1e3:>17.1f} "
                     f"{c['simulator'] * 1e3:>5.1f} {c['postgres'] * 1e3:>5.1f}  "
                     f"{d['simulator_share_of_machine'] * 100:>8.0f}% {d['machine_busy'] * 100:>11.0f}% "
                     f"{cs['other'] / (d['wall_s'] * m['cores']) * 100:>9.0f}%  "
                     + " ".join(f"{x:.1f}" for x in cs["gateway_per_instance"]))
        if d.get("instances", 1) > 1:
            lines.append(f"  {'':10} per instance: user messages sent {d.get('user_messages_sent_per_instance')}, "
                         f"inbound received {d.get('inbound_received_per_instance')}, balancer connections "
                         f"{d.get('balancer_connections')}")
        lines.append(f"  {'':10} journal commits per filing (all instances) {_f(d.get('journal_commits_per_filing'), 2)}"
                     + "".join(f"; lock wait x{c}: {q}" for q, c in list((d.get("lock_wait_queries") or {}).items())[:2]))
        pgs = (d.get("pg_sessions_sampled") or {}).get("mean_sessions")
        if pgs:
            lines.append(f"  {'':10} PostgreSQL sessions not idle (mean per sample): "
                         + ", ".join(f"{w} {v:.2f}" for w, v in list(pgs.items())[:5]))
        if d.get("failed"):
            lines.append(f"  {'':10} FAILED: {'; '.join(d['failed'])[:400]}")
    lines.append(f"  scaling PostgreSQL 1 -> 2 instances {_f(m.get('scaling_1_to_2'), 2)}x, 1 -> 3 "
                 f"{_f(m.get('scaling_1_to_3'), 2)}x; PostgreSQL x1 / SQLite x1 {_f(m.get('pg_1_vs_sqlite_1'), 2)}")
    lines.append("  CPU-bound filings/s (cores / (gateway + simulator + postgres CPU per filing)): "
                 + ", ".join(f"{k} {_f(d.get('cpu_bound_filings_per_s'), 1)}" for k, d in m.get("configs", {}).items())
                 + f"; its scaling 1 -> 2 {_f(m.get('cpu_bound_scaling_1_to_2'), 2)}x, 1 -> 3 "
                   f"{_f(m.get('cpu_bound_scaling_1_to_3'), 2)}x")
    lines.append("  sim share and machine busy: of the whole machine's capacity (wall x cores); other load: busy CPU "
                 "not from our processes (other users of this machine)")
    return lines


def failover_lines(f: dict[str, Any] | None) -> list[str]:
    """The PostgreSQL journal's failure paths (bench/failover.py)."""
    if not f:
        return []
    if "skipped" in f:
        return ["", f"PostgreSQL failover: skipped ({f['skipped']})"]
    r, c = f["database_restart"], f["database_crash"]
    return ["", "PostgreSQL failover (bench/failover.py, medians)",
            f"  singleton lock free after the holder's SIGKILL  {_f(f['singleton_release_seconds']['median'], 3)} s"
            " (the daemon adds its 2 s retry and 3 s grace)",
            f"  database restart -> first commit              {_f(r['median'])} s, failed submissions "
            f"{r['failed_submissions']}, filings {r['filings']}/{r['expected']}",
            f"  database crash + recovery -> first commit     {_f(c['median'])} s, failed submissions "
            f"{c['failed_submissions']}, filings {c['filings']}/{c['expected']}"]


def write(res: dict[str, Any], path: Path) -> None:
    res["verdicts"] = {k: verdict(k, res["ratios"].get(k)) for k in TARGETS}
    path.write_text(json.dumps({**res["ratios"], "verdicts": res["verdicts"], "details": res}, indent=2,
                               default=str) + "\n")
