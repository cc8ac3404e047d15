"""Reading the archive's history for people: recent commits, one commit's markdown changes, and
which commit holds each message (the mailbox-with-commits view).

Read-only, through `git log` / `git show` in a subprocess (GitPython stays out of the daemon's
long-running paths, see DESIGN.md). The callers run these on a worker thread. It never writes.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from maild.archive import formats
from shared.errors import InvalidArgument, NotFound

SHA = re.compile(r"[0-9a-f]{7,40}")
MAX_DIFF_CHARS = 200_000
_SEP = "\x1f"


def _git(archive: Path, *args: str) -> str | None:
    if not (archive / ".git").exists() and not (archive / "HEAD").exists():
        return None
    try:
        return subprocess.run(["git", "-C", str(archive), *args], capture_output=True, text=True,
                              timeout=15, check=True, errors="replace").stdout
    except (OSError, subprocess.SubprocessError):
        return None


def recent_commits(archive: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The newest commits (sha, summary, author time, files changed); empty before the first."""
    out = _git(archive, "log", f"-n{limit}", f"--format=%x1e%H{_SEP}%s{_SEP}%aI", "--shortstat")
    commits = []
    for chunk in (out or "").split("\x1e")[1:]:
        head, _, stat = chunk.strip().partition("\n")
        sha, summary, when = [*head.split(_SEP), "", ""][:3]
        files = re.match(r"\s*(\d+) files? changed", stat.strip())
        commits.append({"sha": sha, "short": sha[:12], "summary": summary, "authored_ts": when,
                        "files": int(files[1]) if files else 0})
    return commits


def commit_detail(archive: Path, sha: str) -> dict[str, Any]:
    """One commit: header fields and, per markdown file changed, its unified diff."""
    if not SHA.fullmatch(sha):
        raise InvalidArgument(f"{sha!r} is not a commit id; use the hexadecimal id from the commits list")
    head = _git(archive, "show", "-s", f"--format=%H{_SEP}%s{_SEP}%aI{_SEP}%an{_SEP}%b", sha, "--")
    if not head:
        raise NotFound(f"no commit {sha} in the archive; pick one from the commits list")
    full, summary, when, author, body = [*head.split(_SEP), "", "", "", ""][:5]
    diff = _git(archive, "show", "--format=", "--no-color", "--no-ext-diff", full, "--", "*.md") or ""
    truncated = len(diff) > MAX_DIFF_CHARS
    files: list[dict[str, Any]] = []
    for block in re.split(r"^(?=diff --git )", diff[:MAX_DIFF_CHARS], flags=re.MULTILINE):
        if not block.startswith("diff --git "):
            continue
        first, _, rest = block.partition("\n")
        path = first.split(" b/", 1)[-1]
        files.append({"path": path, "diff": rest})
    return {"sha": full, "summary": summary, "authored_ts": when, "author": author, "body": body.strip(),
            "files": files, "truncated": truncated}


def message_path(slug: str, message: dict[str, Any]) -> str:
    """The canonical archive file of a message (`id`, `subject`, `created_ts`) in project `slug`."""
    folder, name = formats.message_filename(message)
    return f"projects/{formats.segment(slug)}/messages/{folder}/{name}"


def commits_holding(archive: Path, paths: list[str], timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    """path -> the newest commit that wrote it (a message file is written once: the commit that holds
    it; after a layout move, the commit that moved it). Paths never committed are absent.

    One `git log` over all the paths, newest first, read as a stream and stopped as soon as every
    path was seen: recent mail costs a few commits of history, not the whole of it."""
    wanted = set(paths)
    if not wanted or (not (archive / ".git").exists() and not (archive / "HEAD").exists()):
        return {}
    found: dict[str, dict[str, Any]] = {}
    proc = subprocess.Popen(
        ["git", "-C", str(archive), "-c", "core.quotePath=false", "log", "--no-renames", "--name-only",
         f"--format=\x1e%H{_SEP}%s{_SEP}%aI", "--", *sorted(wanted)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        commit: dict[str, Any] | None = None
        for line in proc.stdout:
            text = line.rstrip("\n")
            if time.monotonic() > deadline:
                break  # a huge history: report what was found rather than hold the caller
            if text.startswith("\x1e"):
                sha, summary, when = [*text[1:].split(_SEP), "", ""][:3]
                commit = {"hexsha": sha, "summary": summary, "authored_ts": when}
            elif commit is not None and text in wanted and text not in found:
                found[text] = commit
                if len(found) == len(wanted):
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return found


def head(archive: Path) -> str | None:
    """The archive's newest commit (None before the first)."""
    out = _git(archive, "rev-parse", "--verify", "-q", "HEAD")
    if out is None:
        return None
    return out.strip() or None
