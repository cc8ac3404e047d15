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
