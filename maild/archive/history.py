"""Reading the archive's history for people: recent commits, and one commit's markdown changes.

Read-only, through `git log` / `git show` in a subprocess (GitPython stays out of the daemon's
long-running paths, see DESIGN.md). The callers run these on a worker thread. It never writes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

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
