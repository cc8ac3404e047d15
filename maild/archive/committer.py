"""The archive repository and its single committer: a persistent `git fast-import` process.

fast-import needs no index and no work tree, so many changes become one commit at ~O(batch) cost,
and there is no `index.lock` to contend on (measured: ~100x GitPython's per-commit index writes).
The repository is bare: browse it with `git -C .mcp_mail/archive log --stat` or clone it.
A batch counts as committed only when fast-import has checkpointed it (the ref is updated) and
answered our `progress` marker; until then its outbox rows stay, and a replay rewrites the same
deterministic files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
BRANCH = "refs/heads/main"


class ArchiveError(Exception):
    """git failed (permissions, disk full, corrupt repo); the outbox keeps the work for later."""


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True,
                          check=check, timeout=60)


def repair_stale_locks(repo: Path) -> list[str]:
    """Remove lock files a crashed writer left behind. Safe: only the daemon (which holds the
    instance lock) ever writes to the archive."""
    removed = []
    candidates = [repo / "index.lock", repo / "HEAD.lock", repo / "packed-refs.lock", repo / "shallow.lock"]
    refs = repo / "refs"
    if refs.is_dir():
        candidates += list(refs.rglob("*.lock"))
    for lock in candidates:
        if lock.exists():
            lock.unlink()
            removed.append(str(lock.relative_to(repo)))
    if removed:
        log.warning("removed stale archive locks: %s", ", ".join(removed))
    return removed


def ensure_repository(repo: Path) -> None:
    if (repo / "HEAD").exists():
        return
    repo.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], capture_output=True, text=True,
                       check=True, timeout=60)
        _git(repo, "config", "commit.gpgsign", "false")
        _git(repo, "config", "gc.auto", "0")  # we pack when idle, not in the middle of a batch
    except subprocess.CalledProcessError as exc:
        raise ArchiveError(f"git init failed: {exc.stderr.strip()}") from None


class FastImportCommitter:
    def __init__(self, repo: Path, author_name: str, author_email: str) -> None:
        self.repo = repo
        self._author = f"{author_name} <{author_email}>"
        self._proc: subprocess.Popen[bytes] | None = None
        self._needs_from = False
        self._batches = 0

    def _start(self) -> subprocess.Popen[bytes]:
        ensure_repository(self.repo)
        repair_stale_locks(self.repo)
        exists = _git(self.repo, "rev-parse", "--verify", "-q", BRANCH, check=False).returncode == 0
        self._needs_from = exists
        self._proc = subprocess.Popen(
            ["git", "--git-dir", str(self.repo), "fast-import", "--quiet", "--done"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        return self._proc

    def commit(self, files: dict[str, bytes], message: str) -> None:
        """Write one commit with `files` (path -> content) and wait until the ref moved."""
        proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._batches += 1
        marker = f"batch-{os.getpid()}-{self._batches}"
        now = int(time.time())
        text = message.encode()
        chunks = [
            f"commit {BRANCH}\n".encode(),
            f"author {self._author} {now} +0000\ncommitter {self._author} {now} +0000\n".encode(),
            f"data {len(text)}\n".encode(), text, b"\n",
        ]
        if self._needs_from:
            chunks.append(f"from {BRANCH}^0\n".encode())
        for path, content in sorted(files.items()):
            chunks += [f"M 100644 inline {path}\n".encode(), f"data {len(content)}\n".encode(), content, b"\n"]
        chunks.append(f"\ncheckpoint\n\nprogress {marker}\n".encode())
        try:
            proc.stdin.write(b"".join(chunks))
            proc.stdin.flush()
            reply = proc.stdout.readline().decode().strip()
        except (BrokenPipeError, OSError) as exc:
            raise ArchiveError(self._failure(proc, str(exc))) from None
        if reply != f"progress {marker}":
            raise ArchiveError(self._failure(proc, f"unexpected reply {reply!r}"))
        self._needs_from = False

    def _failure(self, proc: subprocess.Popen[bytes], fallback: str) -> str:
        self._kill(proc)
        stderr: IO[bytes] | None = proc.stderr
        detail = stderr.read().decode(errors="replace").strip() if stderr is not None else ""
        if stderr is not None:
            stderr.close()
        self._proc = None
        return (detail.splitlines()[-1] if detail else fallback)[:500]

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.write(b"done\n")
                proc.stdin.flush()
            except OSError:
                pass
        self._kill(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def head_files(repo: Path, prefix: str = "projects") -> list[str]:
    """Paths in the archive's current commit (empty when nothing is committed yet)."""
    if _git(repo, "rev-parse", "--verify", "-q", BRANCH, check=False).returncode != 0:
        return []
    out = _git(repo, "ls-tree", "-r", "--name-only", BRANCH, "--", prefix).stdout
    return out.splitlines()


def read_blobs(repo: Path, paths: list[str]) -> dict[str, bytes]:
    """Contents of `paths` at the archive's head, through one `git cat-file --batch`."""
    if not paths:
        return {}
    request = "".join(f"{BRANCH}:{p}\n" for p in paths).encode()
    proc = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "--batch"], input=request,
                          capture_output=True, check=True, timeout=600)
    out, pos, blobs = proc.stdout, 0, {}
    for path in paths:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        size = int(header[2])
        blobs[path] = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
    return blobs
