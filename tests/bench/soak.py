"""What a soak samples and how it is judged: the daemon's RSS and descriptors, and storage — the
archive's bytes on disk, packs, loose-object folders and lag, the database and its WAL — over time.

Owns the sampling of storage, the verdict and the soak's charts; not the load (workload.py).
A soak fails when something keeps growing faster than the mail does: RSS or descriptors at all,
the archive or the database per message, the archive's pack count, its lag, or the WAL.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maild.archive.committer import PACK_CEILING
from shared.client import DaemonClient
from shared.paths import MailboxPaths

LAG_LIMIT_SECONDS = 1.0  # issue 22: archive lag p99 ≤ 1 s
# A bounded pack count: the archiver rolls packs up at 12 (geometric, so a few stay) and holds its
# commits at PACK_CEILING packs waiting for a repack; settled packs (about 8) are not rolled up.
# +1: a repack's new pack is on disk before the packs it folded are deleted.
PACK_LIMIT = PACK_CEILING + 1


def dir_bytes(path: Path) -> int:
    """Bytes of the files under `path`; files and folders a concurrent repack deletes are skipped."""
    total = 0
    for folder, _dirs, names in os.walk(path):  # os.walk ignores folders that vanish under it
        for name in names:
            try:
                total += (Path(folder) / name).stat().st_size
            except OSError:
                continue
    return total


def _count(folder: Path, wanted: Callable[[str], bool]) -> int:
    try:
        return sum(1 for entry in folder.iterdir() if wanted(entry.name))
    except OSError:
        return 0


def storage_sample(paths: MailboxPaths, health: DaemonClient) -> dict[str, Any]:
    """One sample of storage (the daemon's health_check gives archive progress and lag)."""
    report = health.call_tool("health_check", {})
    archive = report.get("archive", {})
    wal = paths.db.with_name(paths.db.name + "-wal")
    return {
        "archive_mb": round(dir_bytes(paths.archive) / 1e6, 2),
        "packs": _count(paths.archive / "objects" / "pack", lambda n: n.endswith(".pack")),
        "settled_packs": archive.get("settled_packs", 0),
        "loose_dirs": _count(paths.archive / "objects", lambda n: len(n) == 2),
        # (a daemon from before issue 22 reports neither: the soak of the old code falls back to
        # all archived changes and to the p99 over its last 50,000 rows, and says so in its title)
        "archived": archive.get("messages_archived", archive.get("items_archived")),
        "queue_depth": archive.get("queue_depth"),
        "lag_recent_p99_s": archive.get("lag_recent_p99_seconds", archive.get("lag_p99_seconds")),
        "repacks": archive.get("repacks"),
        "ceiling_waits": archive.get("ceiling_waits"),  # commits that waited for a repack (pack ceiling)
        "db_mb": round(paths.db.stat().st_size / 1e6, 2) if paths.db.exists() else 0.0,
        "wal_mb": round(wal.stat().st_size / 1e6, 2) if wal.exists() else 0.0,
    }


def growth(values: list[float], warmup_fraction: float = 0.25, limit_pct: float = 10.0) -> dict[str, Any]:
    """Compare the level just after warm-up with the level at the end (medians of the first and last
    quarter of the post-warm-up samples), so one spike does not count as growth."""
    kept = values[int(len(values) * warmup_fraction):]
    if len(kept) < 4:
        return {"samples": len(kept), "growth_pct": None, "bounded": True, "note": "too few samples to judge"}
    quarter = max(1, len(kept) // 4)
    start, end = statistics.median(kept[:quarter]), statistics.median(kept[-quarter:])
    pct = 100.0 * (end - start) / start if start else 0.0
    return {"samples": len(kept), "start": round(start, 4), "end": round(end, 4), "growth_pct": round(pct, 2),
            "bounded": pct <= limit_pct}


def _per_message(samples: list[dict[str, Any]], key: str, count: str) -> list[float]:
    return [s[key] * 1e6 / s[count] for s in samples if s.get(key) is not None and s.get(count)]


def judge_soak(samples: list[dict[str, Any]], prefill: int = 0) -> dict[str, Any]:
    """The verdict. Storage is judged per message (it must grow with the mail, not faster): bytes
    per message may not rise by more than 25 % from warm-up to the end."""
    for s in samples:  # the database holds the prefill and every send (archived or not yet)
        s["db_messages"] = prefill + (s.get("sends") or s.get("archived") or 0)
    verdict: dict[str, Any] = {key: growth([float(s[key]) for s in samples if s.get(key) is not None])
                               for key in ("daemon_rss_mb", "daemon_fds", "p50_ms")}
    verdict["archive_bytes_per_message"] = growth(_per_message(samples, "archive_mb", "archived"), limit_pct=25)
    verdict["db_bytes_per_message"] = growth(_per_message(samples, "db_mb", "db_messages"), limit_pct=25)
    packs = [s["packs"] for s in samples if s.get("packs") is not None]
    unsettled = [s["packs"] - (s.get("settled_packs") or 0) for s in samples if s.get("packs") is not None]
    verdict["packs"] = {"max": max(packs, default=0), "end": packs[-1] if packs else None,
                        "unsettled_max": max(unsettled, default=0),
                        "bounded": max(unsettled, default=0) <= PACK_LIMIT}
    lags = [float(s["lag_recent_p99_s"]) for s in samples if s.get("lag_recent_p99_s") is not None]
    lag = growth(lags, limit_pct=50)
    lag["bounded"] = lag["bounded"] or (lag.get("end") or 0) <= LAG_LIMIT_SECONDS  # a flat, low lag may wobble
    verdict["archive_lag_recent_p99"] = lag
    wal = growth([float(s["wal_mb"]) for s in samples if s.get("wal_mb") is not None], limit_pct=100)
    wal["bounded"] = wal["bounded"] or (wal.get("end") or 0) <= 16  # the WAL resets at each checkpoint
    verdict["wal_mb"] = wal
    judged = ("daemon_rss_mb", "daemon_fds", "archive_bytes_per_message", "db_bytes_per_message", "packs",
              "archive_lag_recent_p99", "wal_mb")
    verdict["failed"] = [key for key in judged if not verdict[key]["bounded"]]
    verdict["passed"] = not verdict["failed"]
    return verdict


def archive_ratio(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 22's size bound, at every sample: the archive against the database (max and end), skipping
    the first minute (an empty archive beside a prefilled database says nothing)."""
    ratios = [s["archive_mb"] / s["db_mb"] for s in samples
              if s.get("db_mb") and s.get("archive_mb") is not None and (s.get("t") or 0) >= 60]
    return {"max": round(max(ratios), 3) if ratios else None, "end": round(ratios[-1], 3) if ratios else None}


# What a rebuilt database must give back, for the mail that went through the archive: messages with
# sender and thread, each recipient's read and ack state, and reservations (names, not ids).
_MAIL = ("SELECT m.id, a.name, m.thread_id, m.subject, m.body_md, m.importance, m.ack_required, m.created_ts"
         " FROM messages m JOIN agents a ON a.id = m.sender_id WHERE m.id > ? ORDER BY m.id")
_RECIPIENTS = ("SELECT r.message_id, a.name, r.kind, r.read_ts, r.ack_ts FROM message_recipients r"
               " JOIN agents a ON a.id = r.agent_id WHERE r.message_id > ? ORDER BY r.message_id, a.name, r.kind")
_RESERVATIONS = ("SELECT f.id, a.name, f.path_pattern, f.exclusive, f.reason, f.created_ts, f.expires_ts,"
                 " f.released_ts FROM file_reservations f JOIN agents a ON a.id = f.agent_id ORDER BY f.id")


def _rows(db: Path, first_id: int) -> dict[str, list[Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {"messages": conn.execute(_MAIL, (first_id,)).fetchall(),
                "recipients": conn.execute(_RECIPIENTS, (first_id,)).fetchall(),
                "reservations": conn.execute(_RESERVATIONS).fetchall()}
    finally:
        conn.close()


def prefilled_up_to(db: Path) -> int:
    """The last message id of a prefilled database, before the load starts."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0])
    finally:
        conn.close()


def rebuild_check(paths: MailboxPaths, prefill: int) -> dict[str, Any]:
    """Issue 22: `doctor --rebuild` still reproduces the database. Copies the stopped soak's mailbox,
    runs `maild rebuild` on the copy (what `mailctl doctor --rebuild --yes` runs), and compares the
    mail sent during the soak. The prefilled messages are left out: they were written into the
    database directly, never through the outbox, so the archive never had them."""
    with tempfile.TemporaryDirectory(prefix="soak-rebuild-") as tmp:
        copy = Path(tmp) / paths.root.name
        shutil.copytree(paths.root / ".mcp_mail", copy / ".mcp_mail",
                        ignore=shutil.ignore_patterns("*.sock", "maild.log*"))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-P", "-m", "maild", "rebuild", "--root", str(copy)],
                              capture_output=True, text=True, check=False, timeout=3600)
        seconds = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            return {"ok": False, "seconds": seconds, "error": done.stderr.strip()[-500:]}
        before, after = _rows(paths.db, prefill), _rows(copy / ".mcp_mail" / paths.db.name, prefill)
    differing = {key: sum(1 for a, b in zip(before[key], after[key], strict=False) if a != b)
                 + abs(len(before[key]) - len(after[key])) for key in before}
    return {"ok": not any(differing.values()), "seconds": seconds, "prefilled_left_out": prefill,
            "compared": {key: len(rows) for key, rows in before.items()}, "differing": differing,
            "rebuilt": {key: len(rows) for key, rows in after.items()}}


def archive_checks(repo: Path) -> dict[str, Any]:
    """After the load: `git log -1` time (best of 5), `git fsck`, pack count (issue 22's targets)."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(["git", "--git-dir", str(repo), "log", "-1", "--format=%H"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    fsck = subprocess.run(["git", "--git-dir", str(repo), "fsck", "--no-progress"], capture_output=True, text=True,
                          check=False)
    count = subprocess.run(["git", "--git-dir", str(repo), "count-objects", "-v"], capture_output=True, text=True,
                           check=False)
    objects = dict(line.split(": ", 1) for line in count.stdout.splitlines() if ": " in line)
    return {"git_log_1_ms": round(min(times) * 1000, 1),
            "git_log_1_ms_median": round(statistics.median(times) * 1000, 1),
            "fsck_ok": fsck.returncode == 0, "fsck_errors": fsck.stderr.strip()[:500],
            "packs": int(objects.get("packs", 0)), "loose_objects": int(objects.get("count", 0)),
            "size_pack_kb": int(objects.get("size-pack", 0))}


def plot(samples: list[dict[str, Any]], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[float]:
        return [float("nan") if s.get(key) is None else float(s[key]) for s in samples]

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    size, packs, lag, per = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    size.plot(t, series("archive_mb"), label="archive (MB on disk)")
    size.plot(t, series("db_mb"), label="database (MB)")
    size.plot(t, series("wal_mb"), label="WAL (MB)")
    size.set_title("size")
    size.legend()
    packs.plot(t, series("packs"), label="packs")
    packs.plot(t, series("loose_dirs"), label="loose-object folders")
    packs.set_title("archive packs")
    packs.legend()
    lag.plot(t, series("lag_recent_p99_s"), label="lag p99, last 1,000 rows (s)")
    lag.plot(t, [v / 1000 for v in series("queue_depth")], label="outbox depth (thousands)")
    lag.axhline(LAG_LIMIT_SECONDS, color="red", linestyle=":", label="target 1 s")
    lag.set_title("archive lag")
    lag.set_xlabel("minutes")
    lag.legend()
    per.plot(t, [s["archive_mb"] * 1e3 / s["archived"] if s.get("archived") else float("nan") for s in samples],
             label="archive KB / archived message")
    per.axhline(2.0, color="red", linestyle=":", label="target 2 KB")
    per.set_title("archive bytes per message")
    per.set_xlabel("minutes")
    per.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
