"""`resource://tooling/locks`: the daemon's own lock files and who holds them, alive or stale.

Reports the single-instance lock (maild.lock), the auto-start lock (spawn.lock), the status file and
socket (whose owner is the pid the status file names), and any git lock files in the archive (git
holds those for milliseconds; one that stays is what a killed writer left). The holder of a POSIX
lock is read from /proc/locks (Linux; elsewhere `held` is null). Reads files only: changes nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from shared.paths import MailboxPaths, pid_alive

# An archive lock file older than this is reported as stale: git holds its locks for milliseconds.
ARCHIVE_LOCK_STALE_SECONDS = 60.0
_ARCHIVE_LOCKS = ("index.lock", "HEAD.lock", "packed-refs.lock", "shallow.lock", "config.lock")


def lock_holders() -> dict[tuple[int, int, int], int] | None:
    """(major, minor, inode) -> pid of every advisory lock the kernel knows (None off Linux)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    holders: dict[tuple[int, int, int], int] = {}
    for line in text.splitlines():
        parts = line.split()
        if "->" in parts:  # a waiter blocked on this lock, not a holder
            continue
        try:
            pid, device = int(parts[4]), parts[5]
            major, minor, inode = device.split(":")
            holders[(int(major, 16), int(minor, 16), int(inode))] = pid
        except (IndexError, ValueError):
            continue
    return holders


def _file_facts(path: Path, now: float) -> dict[str, Any]:
    try:
        info = path.stat()
    except OSError:
        return {"present": False, "size": None, "modified_ts": None, "age_seconds": None}
    return {"present": True, "size": info.st_size, "modified_ts": _iso(info.st_mtime),
            "age_seconds": round(max(0.0, now - info.st_mtime), 3)}


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _holder(path: Path, holders: dict[tuple[int, int, int], int] | None) -> int | None:
    if holders is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return holders.get((os.major(info.st_dev), os.minor(info.st_dev), info.st_ino))


def _entry(name: str, path: Path, category: str, purpose: str, now: float, *, owner_pid: int | None,
           held: bool | None) -> dict[str, Any]:
    facts = _file_facts(path, now)
    alive = pid_alive(owner_pid) if owner_pid is not None else None
    if not facts["present"]:
        status = "absent"
    elif held is False and owner_pid is None:
        status = "free"  # the file stays between uses; nobody holds the lock now
    elif alive is False:
        status = "stale"
    else:
        status = "active"
    return {"name": name, "path": str(path), "category": category, "purpose": purpose, **facts,
            "held": held, "owner_pid": owner_pid, "owner_alive": alive, "status": status}


def report(paths: MailboxPaths) -> dict[str, Any]:
    """The tooling/locks resource's body: one entry per lock file, then counts."""
    now = time.time()
    holders = lock_holders()
    try:
        status = json.loads(paths.status_file.read_text(encoding="utf-8"))
        status_pid = status.get("pid") if isinstance(status.get("pid"), int) else None
    except (OSError, ValueError, AttributeError):
        status_pid = None
    locks = []
    for name, path, purpose in (
        ("instance", paths.lock_file, "one maild per mailbox root (held for the daemon's life)"),
        ("spawn", paths.spawn_lock_file, "serialises clients auto-starting the daemon (held for a moment)"),
    ):
        pid = _holder(path, holders)
        locks.append(_entry(name, path, "daemon", purpose, now, owner_pid=pid,
                            held=None if holders is None else pid is not None))
    locks.append(_entry("status", paths.status_file, "daemon", "pid, socket and version of the running daemon",
                        now, owner_pid=status_pid, held=None))
    locks.append(_entry("socket", paths.socket, "daemon", "where clients connect (owned by the status file's pid)",
                        now, owner_pid=status_pid, held=None))
    for path in _archive_lock_files(paths.archive):
        entry = _entry(str(path.relative_to(paths.archive)), path, "archive", "a git lock in the archive repository",
                       now, owner_pid=None, held=None)
        entry["stale_timeout_seconds"] = ARCHIVE_LOCK_STALE_SECONDS
        entry["status"] = "stale" if (entry["age_seconds"] or 0) > ARCHIVE_LOCK_STALE_SECONDS else "active"
        locks.append(entry)
    summary = {"total": len(locks)}
    for key in ("active", "stale", "free", "absent"):
        summary[key] = sum(1 for lock in locks if lock["status"] == key)
    return {"locks": locks, "summary": summary, "holders_known": holders is not None}


def _archive_lock_files(archive: Path) -> list[Path]:
    found = [archive / name for name in _ARCHIVE_LOCKS if (archive / name).exists()]
    refs = archive / "refs"
    try:
        if refs.is_dir():
            found += sorted(refs.rglob("*.lock"))
    except OSError:
        pass
    return found
