"""The archive mirror: push the archive's branch to a git server (`archive_remote`) after group commits.

The archiver calls `notify()` after each commit (cheap, never blocks); the mirror's own task waits
`archive_push_interval_seconds` so a burst of commits becomes one push, then runs `git push` in a
worker thread. Failures back off (doubling, up to MAX_BACKOFF_SECONDS) and are reported through
health_check (`archive.mirror`: pushed head, lag, last error). A push the server rejects because its
branch moved (non-fast-forward) is reported as `diverged` and never forced: a person decides.
It does not fetch, merge or rewrite anything; mail never waits for it.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio

from maild.archive.committer import BRANCH, ArchiveError, branch_head

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 60.0
PUSH_TIMEOUT_SECONDS = 120.0
_REJECTED = ("non-fast-forward", "fetch first", "[rejected]", "stale info", "! [remote rejected]")


def redact(url: str) -> str:
    """The URL without a password (https://user:secret@host → https://user:***@host)."""
    return re.sub(r"(://[^/:@]+):[^/@]+@", r"\1:***@", url)


class Mirror:
    def __init__(self, repo: Path, remote: str, interval: float) -> None:
        self.repo = repo
        self.remote = remote
        self.interval = interval
        self._wake = anyio.Event()
        self._dirty_since: float | None = None  # wall clock of the oldest commit not yet pushed
        self.pushes = 0
        self.failures = 0
        self.pushed_head: str | None = None
        self.last_push_ts: float | None = None
        self.last_error: str | None = None
        self.diverged = False

    def notify(self) -> None:
        """A group commit landed: push it soon. Called from the archiver's task."""
        if self._dirty_since is None:
            self._dirty_since = time.time()
        self._wake.set()

    def statistics(self) -> dict[str, Any]:
        lag = None if self._dirty_since is None else round(time.time() - self._dirty_since, 3)
        return {
            "remote": redact(self.remote),
            "ok": self.last_error is None,
            "pushes": self.pushes,
            "failures": self.failures,
            "pushed_head": self.pushed_head,
            "last_push_ts": None if self.last_push_ts is None else time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_push_ts)),
            "push_lag_seconds": lag,
            "diverged": self.diverged,
            "last_error": self.last_error,
        }

    async def run(self) -> None:
        """Push at start (a commit from before a restart may be unpushed), then after each burst."""
        self.notify()
        backoff = 1.0
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await anyio.sleep(self.interval)  # let a burst of group commits join this push
                if await anyio.to_thread.run_sync(self.push_once):
                    backoff = 1.0
                    continue
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                self._wake.set()  # try again
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                if self._dirty_since is not None:  # the last commits before shutdown
                    await anyio.to_thread.run_sync(self.push_once)

    def push_once(self) -> bool:
        """One `git push` of the branch (worker thread). True when the remote has our head."""
        head = branch_head(self.repo)
        if head is None:
            self._dirty_since = None
            return True
        if head == self.pushed_head:
            self._dirty_since = None
            return True
        started = self._dirty_since
        try:
            done = subprocess.run(
                ["git", "--git-dir", str(self.repo), "push", "--porcelain", self.remote, f"{BRANCH}:{BRANCH}"],
                capture_output=True, text=True, timeout=PUSH_TIMEOUT_SECONDS, check=False,
                env=_push_environment(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return self._failed(f"git push to {redact(self.remote)} failed: {exc}")
        output = f"{done.stdout}\n{done.stderr}"
        if done.returncode != 0:
            if any(marker in output for marker in _REJECTED):
                self.diverged = True
                return self._failed(
                    f"{redact(self.remote)} rejected the push: its {BRANCH} has commits this archive lacks (the "
                    "remote moved). Nothing was forced; reconcile it by hand (or point archive_remote elsewhere)")
            detail = " ".join(done.stderr.strip().splitlines()[-2:]) or f"exit status {done.returncode}"
            return self._failed(f"git push to {redact(self.remote)} failed: {redact(detail)}")
        self.pushes += 1
        self.pushed_head = head
        self.last_push_ts = time.time()
        self.last_error, self.diverged = None, False
        if self._dirty_since == started:
            self._dirty_since = None  # nothing newer arrived while we pushed
        elif branch_head(self.repo) != head:
            self._wake.set()
        return True

    def _failed(self, message: str) -> bool:
        self.failures += 1
        if message != self.last_error:
            log.warning("archive mirror: %s", message)
        self.last_error = message[:500]
        return False


def fetch_mirror(repo: Path, url: str) -> str:
    """Bring the archive at `repo` up to the mirror's branch: clone it (bare) when absent, else fetch
    fast-forward only (a local archive with commits the mirror lacks is never overwritten).
    Returns the branch head. Raises ArchiveError saying what to do."""
    if not (repo / "HEAD").exists():
        if repo.exists() and any(repo.iterdir()):
            raise ArchiveError(f"{repo} exists but is not a git archive; move it aside and retry")
        command = ["git", "clone", "-q", "--bare", url, str(repo)]
    else:
        command = ["git", "--git-dir", str(repo), "fetch", "-q", url, f"{BRANCH}:{BRANCH}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PUSH_TIMEOUT_SECONDS, check=False,
                              env=_push_environment())
    except (OSError, subprocess.SubprocessError) as exc:
        raise ArchiveError(f"cannot fetch the archive from {redact(url)}: {exc}") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.strip().splitlines()[-2:])
        if "non-fast-forward" in detail or "rejected" in detail:
            raise ArchiveError(f"the local archive {repo} has commits the mirror {redact(url)} lacks; nothing was "
                               "overwritten: move the archive aside to rebuild from the mirror alone")
        raise ArchiveError(f"cannot fetch the archive from {redact(url)}: {redact(detail)}")
    head = branch_head(repo)
    if head is None:
        raise ArchiveError(f"the mirror {redact(url)} has no {BRANCH} branch: is it the right URL?")
    return head


def _push_environment() -> dict[str, str]:
    import os

    # Never ask on a terminal for a password or host key: a daemon has no one to answer.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": os.environ.get(
        "GIT_SSH_COMMAND", "ssh -o BatchMode=yes")}
