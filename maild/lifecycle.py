"""Daemon lifecycle plumbing: state dir, single-instance lock, status file, idle timer.

Imported by `maild/__main__.py` *before* the heavy MCP/apsw imports, so that when fifty clients
auto-start at once, the forty-nine losers of the lock exit after a few milliseconds of work.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import fasteners

from shared.paths import STATE_DIR_NAME, MailboxPaths

log = logging.getLogger(__name__)


class StartupError(Exception):
    """A one-line, actionable reason the daemon cannot start (printed without a traceback)."""


def prepare_state_dir(paths: MailboxPaths) -> None:
    """Create `<root>/.mcp_mail` (0700) and make sure it is writable by us."""
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.state_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create {paths.state_dir}: {exc.strerror}; check permissions") from None
    if not paths.state_dir.is_dir():
        raise StartupError(f"{paths.state_dir} exists but is not a directory; move it away")
    if not os.access(paths.state_dir, os.W_OK | os.X_OK):
        raise StartupError(f"{paths.state_dir} is not writable by this user; fix its permissions (chmod u+rwx)")
    info = paths.state_dir.stat()
    if info.st_uid != os.geteuid():
        raise StartupError(
            f"{paths.state_dir} belongs to uid {info.st_uid}, not to this user; remove it or use another root"
        )
    if info.st_mode & 0o077:
        paths.state_dir.chmod(0o700)


def exclude_from_user_repo(root: Path) -> None:
    """Add `.mcp_mail/` to the user's `.git/info/exclude` so mailbox state never gets committed."""
    if not (root / ".git").exists():
        return
    try:
        common = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--git-common-dir"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        log.warning("could not locate %s/.git; add %s/ to your ignores by hand", root, STATE_DIR_NAME)
        return
    exclude = (root / common).resolve() / "info" / "exclude"
    line = f"/{STATE_DIR_NAME}/"
    try:
        existing = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if any(entry.strip() in (line, f"{STATE_DIR_NAME}/", STATE_DIR_NAME) for entry in existing.splitlines()):
            return
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8") as handle:
            if existing and not existing.endswith("\n"):
                handle.write("\n")
            handle.write(f"# Agent Mail state (maild)\n{line}\n")
    except OSError as exc:
        log.warning("could not update %s: %s", exclude, exc)


class InstanceLock:
    """Held for the daemon's whole life: one maild per mailbox root. The kernel frees it on death."""

    def __init__(self, paths: MailboxPaths) -> None:
        self._lock = fasteners.InterProcessLock(str(paths.lock_file))

    def try_acquire(self) -> bool:
        return bool(self._lock.acquire(blocking=False))

    def release(self) -> None:
        try:
            self._lock.release()
        except (RuntimeError, OSError) as exc:
            log.warning("releasing the instance lock failed: %s", exc)


def write_status(paths: MailboxPaths, status: dict[str, Any]) -> None:
    """Write the status file atomically (temp file + rename): readers never see half a file."""
    tmp = paths.status_file.with_suffix(f".tmp.{os.getpid()}")
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(paths.status_file)


def remove_status(paths: MailboxPaths) -> None:
    """Remove the status file if it is still ours (a successor may already have replaced it)."""
    try:
        current = json.loads(paths.status_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if current.get("pid") == os.getpid():
        paths.status_file.unlink(missing_ok=True)
