"""Small timing helpers: best-of-rounds rates on one core, peak RSS of children, process CPU from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def rate(fn: Callable[[], object], seconds: float = 1.0, rounds: int = 3) -> float:
    """Operations per second of ``fn`` on this core: the best of ``rounds`` timed rounds after a warm-up.

    Best-of, because the machine is shared: other load only ever makes a round slower."""
    fn()
    n = 1
    t = time.perf_counter()
    while time.perf_counter() - t < 0.05:
        fn()
        n += 1
    per = (time.perf_counter() - t) / n
    batch = max(1, int(seconds / rounds / per))
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        best = max(best, batch / (time.perf_counter() - t0))
    return best


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
