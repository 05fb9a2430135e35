"""Operator signals of the daemon: SIGHUP reloads what can change safely, SIGUSR1 logs the current state.

Why a reload that picks: most settings are bound into running components (listeners, TLS contexts, worker
pools, the journal); changing them under load is where gateways lose messages. What can be swapped as one
object reference between two messages is reloaded: ``[trust]`` (anchors, intermediates, customs
certificates, CRLs: a new ``TrustStore`` replaces the engine's, at every SIGHUP since the files behind it are
replaced in place), ``[logging] level`` and ``[alerts]``. Every
other change is logged as refused (it needs a restart) and nothing of it is applied. A configuration that no
longer loads is refused as a whole and logged; the daemon keeps running on what it had. SIGHUP never stops
the daemon.

Other components can register their own section with ``RELOADERS[section] = fn(gateway, settings) -> str``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import sdnotify
from gateway.config import ConfigError

log = logging.getLogger("ics2gw.daemon")

Reloader = Callable[[Any, Any], str]


def _reload_trust(gw: Any, settings: Any) -> str:
    from gateway.security.trust import TrustStore
    t = settings.core.trust
    store = TrustStore.from_files(t.anchors, t.crls, t.customs_certs, t.crl_refresh_seconds, t.intermediates)
    engine = gw.components.get("engine")
    if engine is not None:
        engine.trust = store   # one reference swap: a verification in flight keeps the store it started with
        if t.customs_certs and not engine.policy.require_customs_signer:
            engine.policy = replace(engine.policy, require_customs_signer=True)
    return f"{len(t.anchors)} anchors, {len(t.crls)} CRLs, {len(t.customs_certs)} customs certificates"


def _reload_logging(gw: Any, settings: Any) -> str:
    from gateway.logsetup import set_level
    set_level(settings.logging.level)
    return f"level {settings.logging.level} (format changes need a restart)"


def _reload_alerts(gw: Any, settings: Any) -> str:
    alerts = gw.components.get("alerts")
    if alerts is not None:
        alerts.cfg = settings.daemon.alerts
    return "hook and webhook replaced"


RELOADERS: dict[str, Reloader] = {"trust": _reload_trust, "logging": _reload_logging, "alerts": _reload_alerts}
# reloaded at every SIGHUP even when the configuration text is unchanged: their files are replaced in place
ALWAYS_RELOADED = ("trust",)


class OpsSignals:
    """SIGHUP / SIGUSR1 handlers and systemd notifications for one ``Gateway``."""

    def __init__(self, gw: Any, conf: Path) -> None:
        self.gw, self.conf = gw, conf
        self.started_at = time.time()
        self.reloads = 0
        self._busy = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last: dict[str, Any] = dict(gw.cfg.root.data)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM/SIGINT drain (the gateway's own stop), SIGHUP reloads, SIGUSR1 dumps; READY=1 once started."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._spawn, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self._spawn, self.dump)
        self._spawn(self._ready)

    def stop(self) -> None:
        log.info("stop requested: draining")
        sdnotify.notify("STOPPING=1")
        self.gw.request_stop()

    def _spawn(self, fn: Callable[[], Any]) -> None:
        task = asyncio.get_running_loop().create_task(fn())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ready(self) -> None:
        started = getattr(self.gw, "started", None)
        if started is not None:
            await started.wait()
        sdnotify.notify(f"READY=1\nSTATUS=serving environment={self.gw.cfg.environment}\nMAINPID={os.getpid()}")

    async def reload(self) -> None:
        """SIGHUP: re-read the file; apply the reloadable sections that changed, log the rest as refused."""
        if self._busy:
            log.warning("reload ignored: a reload is already running")
            return
        self._busy = True
        sdnotify.notify("RELOADING=1")
        try:
            from gateway.settings import load_settings
            try:
                settings = await asyncio.to_thread(load_settings, self.conf)
            except ConfigError as exc:
                log.error("reload refused: the configuration does not load, nothing changed error=%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
                log.error("reload refused: nothing changed error=%s", f"{type(exc).__name__}: {exc}")
                return
            new = settings.core.root.data
            changed = sorted(k for k in set(self._last) | set(new) if self._last.get(k) != new.get(k))
            # the files behind [trust] change without the configuration changing (a new CRL, a renewed anchor)
            changed = sorted(set(changed) | set(ALWAYS_RELOADED))
            applied: dict[str, Any] = dict(self._last)
            for section in changed:
                fn = RELOADERS.get(section)
                if fn is None:
                    log.warning("reload refused section=%s reason=%s", section,
                                "cannot change while running; restart the daemon to apply it")
                    continue
                try:
                    detail = await asyncio.to_thread(fn, self.gw, settings)
                except Exception as exc:  # noqa: BLE001
                    log.error("reload failed section=%s error=%s (the previous settings stay)", section,
                              f"{type(exc).__name__}: {exc}")
                    continue
                applied[section] = new.get(section)
                if section not in new:
                    applied.pop(section, None)
                log.info("reloaded section=%s detail=%s", section, detail)
            self._last = applied
            self.reloads += 1
        finally:
            self._busy = False
            sdnotify.notify("READY=1")

    async def dump(self) -> None:
        """SIGUSR1: one log line with the daemon's state (what `/health` and the status page show)."""
        gw = self.gw
        c = gw.components
        fields: dict[str, Any] = {"pid": os.getpid(), "uptime_seconds": round(time.time() - self.started_at),
                                  "config": str(self.conf), "reloads": self.reloads, "api_port": gw.api_port}
        reader = c.get("reader")
        if reader is not None:
            try:
                counts = await asyncio.to_thread(reader.count_by_state)
                fields.update({f"filings_{k}": v for k, v in sorted(counts.items())})
            except Exception as exc:  # noqa: BLE001
                fields["filings_error"] = f"{type(exc).__name__}: {exc}"
        writer = c.get("writer")
        if writer is not None:
            fields.update(journal_commits=writer.stats.commits, journal_changes=writer.stats.changes)
        alerts = c.get("alerts")
        if alerts is not None:
            fields["alerts_raised"] = len(alerts.raised)
            if alerts.raised:
                fields["last_alert"] = alerts.raised[-1].get("alert")
        if "puller" in c:
            try:
                for k, v in c["puller"][0].status().items():
                    fields[f"pull_{k}"] = v
            except Exception:  # noqa: BLE001
                pass
        log.info("state dump " + " ".join(f"{k}=%s" for k in fields), *fields.values())
