"""Helpers for benchmarks: temporary mailboxes, percentiles, and the JSON report."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from shared.client import stop_daemon
from shared.paths import MailboxPaths

RESULTS = Path(__file__).parent / "results"


def temp_mailbox(prefix: str) -> MailboxPaths:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return MailboxPaths(root)


def stop(paths: MailboxPaths) -> None:
    stop_daemon(paths, force=True)


def summarise(samples_s: list[float]) -> dict[str, float]:
    """Milliseconds: median, p90, p95, p99, min, max over the samples (given in seconds)."""
    ms = sorted(s * 1000 for s in samples_s)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(pct(90), 3),
        "p95_ms": round(pct(95), 3),
        "p99_ms": round(pct(99), 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
    }


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def host_cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) CPU time of the whole machine so far, from /proc/stat; None off Linux. Steal is
    time the hypervisor gave this VM's CPUs to someone else: latencies of runs with much of it do
    not compare with runs without."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return fields[7], sum(fields)


def steal_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time the host stole between two `host_cpu_jiffies` readings."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return round((end[0] - start[0]) / (end[1] - start[1]), 4)


def write_report(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "bench": name,
        "machine": machine(),
        "figures": figures,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")
    return path
