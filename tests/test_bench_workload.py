"""The whole-system benchmark harness stays runnable: a seconds-long smoke run, and its soak judge."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bench.soak import growth, judge_soak

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["trio"])  # the harness is the subject; both backends' tools are tested elsewhere
def test_a_short_run_through_real_shims_reports_every_figure(tmp_path: Path, backend: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--agents", "3", "--duration", "2", "--prefill", "300",
         "--solo-rounds", "5", "--sample-every", "0.5", "--backend", backend, "--out", str(tmp_path), "--plot"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads((tmp_path / "workload.json").read_text())
    assert report["errors"] == {}
    for tool in ("send_message", "fetch_inbox", "search_mailbox", "file_reservation_paths", "guard_check"):
        assert report["tools"][tool]["n"] > 0, tool
        assert report["tools"][tool]["p50_ms"] <= report["tools"][tool]["p99_ms"]
    assert set(report["solo"]) == {"send_message", "fetch_inbox", "search_mailbox"}
    assert report["throughput"]["sends"] > 0
    assert report["shim"]["spawn_to_initialize"]["n"] == 3
    assert report["shim"]["rss_mb_end_max"] > 0
    assert report["archive"]["queue_depth_end"] == 0  # everything sent reached git
    assert report["tools_list"]["core"]["tools"] < report["tools_list"]["extended"]["tools"]
    assert report["samples"][0]["daemon_fds"] > 0
    assert 0 <= report["host"]["steal_share"] < 1, "Linux: the host's steal time is read from /proc/stat"
    table = (tmp_path / "workload.md").read_text()
    assert "| `send_message` |" in table
    assert "| host steal during the load" in table
    assert (tmp_path / "workload-latency.png").read_bytes()[:4] == b"\x89PNG"


def test_the_soak_judge_fails_steady_growth_and_passes_a_warm_up_plateau() -> None:
    leak = [100.0 + 2 * i for i in range(40)]
    plateau = [50.0 + 40 * min(i, 8) / 8 for i in range(40)]  # rises during warm-up, then flat
    assert growth(leak)["bounded"] is False
    assert growth(plateau)["bounded"] is True
    assert growth([1.0, 2.0])["bounded"] is True  # too short to judge, said so in the note
    samples = [{"daemon_rss_mb": r, "daemon_fds": 20, "wal_mb": 1.0, "p50_ms": 2.0} for r in leak]
    assert judge_soak(samples)["passed"] is False
    samples = [{"daemon_rss_mb": r, "daemon_fds": 20 + i, "wal_mb": 1.0, "p50_ms": None}
               for i, r in enumerate(plateau)]
    verdict = judge_soak(samples)
    assert verdict["daemon_rss_mb"]["bounded"] is True
    assert verdict["passed"] is False  # the descriptors leak


Curve = Callable[[int], float]


def test_the_soak_judge_fails_storage_that_outgrows_the_mail() -> None:
    def run(archive_mb: Curve, packs: Curve, lag: Curve) -> dict[str, Any]:
        samples = [{"daemon_rss_mb": 80.0, "daemon_fds": 20, "p50_ms": 2.0, "wal_mb": 4.0, "db_mb": 20 + i * 0.1,
                    "archived": 100 * (i + 1), "archive_mb": archive_mb(i), "packs": packs(i),
                    "lag_recent_p99_s": lag(i)} for i in range(40)]
        return judge_soak(samples, prefill=1000)

    healthy = run(lambda i: 0.2 * (i + 1), lambda i: 3 + i % 10, lambda i: 0.3)
    assert healthy["passed"] is True, healthy["failed"]
    quadratic = run(lambda i: 0.01 * (i + 1) ** 2, lambda i: 3, lambda i: 0.3)  # issue 22: trees rewritten whole
    assert quadratic["failed"] == ["archive_bytes_per_message"]
    piling = run(lambda i: 0.2 * (i + 1), lambda i: 10 * i, lambda i: 0.3)  # the repack never runs
    assert piling["failed"] == ["packs"]
    falling_behind = run(lambda i: 0.2 * (i + 1), lambda i: 3, lambda i: 0.1 * i)
    assert falling_behind["failed"] == ["archive_lag_recent_p99"]
