"""The archive repository and its single committer: a persistent `git fast-import` process.

fast-import needs no index and no work tree, so many changes become one commit at ~O(batch) cost,
and there is no `index.lock` to contend on (measured: ~100x GitPython's per-commit index writes).
The repository is bare: browse it with `git -C .mcp_mail/archive log --stat` or clone it.
A batch counts as committed only when fast-import has checkpointed it, answered our `progress`
marker, *and* the branch ref on disk names the batch's commit: fast-import answers `progress` even
when the checkpoint could not update the ref (e.g. a held `refs/heads/main.lock`), so the reply alone
proves nothing. Until then its outbox rows stay, and a replay rewrites the same deterministic files.
Every failure (git errors, OSError, timeouts) leaves this module as `ArchiveError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from shared.errors import StorageError

log = logging.getLogger(__name__)
BRANCH = "refs/heads/main"


class ArchiveError(StorageError):
    """git failed (permissions, disk full, corrupt repo, timeout); the outbox keeps the work for later."""


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True,
                          check=check, timeout=60)


def repair_stale_locks(repo: Path) -> list[str]:
    """Remove lock files a crashed writer left behind. Safe at start-up only: the daemon (which
    holds the instance lock) is the archive's one writer, and nothing of ours runs yet."""
    removed = []
    candidates = [repo / "index.lock", repo / "HEAD.lock", repo / "packed-refs.lock", repo / "shallow.lock"]
    refs = repo / "refs"
    try:
        if refs.is_dir():
            candidates += list(refs.rglob("*.lock"))
        for lock in candidates:
            if lock.exists():
                lock.unlink()
                removed.append(str(lock.relative_to(repo)))
    except OSError as exc:
        raise ArchiveError(f"cannot remove stale git lock in {repo} ({exc}); make the archive writable") from None
    if removed:
        log.warning("removed stale archive locks: %s", ", ".join(removed))
    return removed


def ensure_repository(repo: Path) -> None:
    if (repo / "HEAD").exists():
        return
    try:
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], capture_output=True, text=True,
                       check=True, timeout=60)
        _git(repo, "config", "commit.gpgsign", "false")
        _git(repo, "config", "gc.auto", "0")  # we pack when idle, not in the middle of a batch
    except subprocess.CalledProcessError as exc:
        raise ArchiveError(f"git init failed: {exc.stderr.strip()}") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ArchiveError(f"cannot create the archive repository {repo}: {exc}") from None


def branch_head(repo: Path) -> str | None:
    """The commit the branch names on disk right now (loose ref first, then `git rev-parse`)."""
    loose = repo / BRANCH
    try:
        text = loose.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    done = _git(repo, "rev-parse", "--verify", "-q", BRANCH, check=False)  # packed, or no branch yet
    return done.stdout.strip() or None


LOAD_PACK_THRESHOLD = 12  # packs that make a busy archiver roll the small ones up (geometric)
# Commits go on beside a repack, one pack each, so a slow repack (a loaded machine, a long roll-up)
# lets batch packs pile up past the threshold. At this many, the next commit waits for the repack to
# finish (its batch grows meanwhile): a hard bound, well above what roll-ups reach under heavy load,
# since every wait is archive lag (a 16-agent soak with the ceiling at 24 waited 16 times, up to 16 s
# each, and missed the lag target; with 64 the same soak reached 58 packs and never waited).
PACK_CEILING = 64
IDLE_PACK_THRESHOLD = 2  # after a quiet spell, anything to fold is folded
LOOSE_DIR_THRESHOLD = 128  # objects/xx fan-out folders in use (of 256): many loose objects
IDLE_LOOSE_DIR_THRESHOLD = 16
# Each group commit is a fast-import checkpoint, i.e. a new pack, and fast-import deltifies a tree only
# against an older version in its *current* pack: every commit writes the trees it touches whole, and
# the repack has to find their deltas. git sorts delta candidates by a hash of the file name and then
# by size, so the versions of one agent's `inbox/…/0097xxx` tree sit among every other agent's trees of
# that name: with git's default window of 10 most are missed. A window of 50 finds them: on a 4-minute
# 8-agent soak archive, 10.5 MB against 21.4 MB (window 10) and 14.0 MB (the incremental repacks).
REPACK_WINDOW = 50
# A repack leaves the archive's big packs as they are: a pack of at least an eighth of the archive (and
# SETTLED_MIN_BYTES) is "settled" and passed to `--keep-pack`. Geometric repacking would otherwise
# rewrite the biggest pack whenever the small ones add up to half of it: git writes the new pack
# before it deletes the old, so the archive briefly doubled on disk (2.97x the database in a 30-minute
# soak), and batch packs piled up (61) during the long rewrite. A settled pack rejoins the roll-ups
# once the archive has grown eight times past it, so their count stays about SETTLED_FRACTION.
SETTLED_FRACTION = 8
SETTLED_MIN_BYTES = 8 << 20
_TMP_PACK = ("tmp_pack_", "tmp_idx_", ".tmp-")
# A repack under load runs at the lowest CPU priority (it and the git processes it starts): on a busy
# machine it otherwise competes with the daemon for the CPU that sends wait for. It runs beside the
# commit path, so a slower repack delays nothing but the next one (docs/archive.md has the figures).
LOAD_REPACK_NICE = 19
# glibc hands the free top of the heap back to the kernel once it passes 128 KB. git deflates every
# object with a fresh zlib state (~270 KB), so each object it writes cost a heap shrink, then page
# faults and zeroing to grow it again: in a 16-agent run the kernel's page-fault work was 46 % of
# fast-import's CPU. A higher trim threshold keeps those pages (fast-import 5.8 -> 3.7 s CPU in a
# 90-s run, docs/archive.md). Other C libraries ignore the variable.
GIT_MALLOC_TUNABLES = "glibc.malloc.trim_threshold=67108864:glibc.malloc.top_pad=16777216"


def _pack_sizes(pack_dir: Path) -> dict[str, int]:
    sizes = {}
    for pack in pack_dir.glob("*.pack"):
        with contextlib.suppress(FileNotFoundError):  # a repack beside us may just have folded it
            sizes[pack.name] = pack.stat().st_size
    return sizes


def _settled_packs(sizes: dict[str, int]) -> list[str]:
    """The names of the packs a repack leaves alone (see SETTLED_FRACTION)."""
    floor = max(SETTLED_MIN_BYTES, sum(sizes.values()) // SETTLED_FRACTION)
    return sorted(name for name, size in sizes.items() if size >= floor)


def _nice(level: int) -> list[str]:
    """The `nice -n LEVEL` prefix that runs a command (and every git process it starts) at a lower
    CPU priority; nothing where there is no `nice` (the command then runs as usual)."""
    found = shutil.which("nice")
    return [found, "-n", str(level)] if found else []


def _git_env() -> dict[str, str]:
    """The environment for the git processes that write objects: ours, plus GIT_MALLOC_TUNABLES
    (after any GLIBC_TUNABLES of the user's, which win where they name the same tunable)."""
    env = dict(os.environ)
    theirs = env.get("GLIBC_TUNABLES", "")
    env["GLIBC_TUNABLES"] = f"{GIT_MALLOC_TUNABLES}:{theirs}" if theirs else GIT_MALLOC_TUNABLES
    return env


def _fast_import_keeps(pack_dir: Path) -> list[Path]:
    return [keep for keep in pack_dir.glob("*.keep")
            if keep.read_text(errors="replace").startswith("fast-import")]


def recover(repo: Path) -> list[str]:
    """Finish or undo what a killed daemon left: stale locks, half-written packs (a repack or a
    fast-import cut short) and the `.keep` marks of fast-imports that are gone. Safe at start-up
    only, before our own fast-import runs: the daemon is the archive's one writer."""
    done = repair_stale_locks(repo)
    pack_dir = repo / "objects" / "pack"
    try:
        if pack_dir.is_dir():
            for path in pack_dir.iterdir():
                if path.name.startswith(_TMP_PACK):
                    path.unlink()
                    done.append(str(path.relative_to(repo)))
            for keep in _fast_import_keeps(pack_dir):
                keep.unlink()
                done.append(str(keep.relative_to(repo)))
    except OSError as exc:
        raise ArchiveError(f"cannot clean up {pack_dir} after a crash ({exc}); make the archive writable") from None
    return done


class FastImportCommitter:
    """One live fast-import, used from worker threads: commits and maintenance may overlap, so the
    process handle is guarded by a lock; a repack runs outside it, beside the next fast-import."""

    def __init__(self, repo: Path, author_name: str, author_email: str) -> None:
        self.repo = repo
        self._author = f"{author_name} <{author_email}>"
        self._proc: subprocess.Popen[bytes] | None = None
        self._needs_from = False
        self._batches = 0
        self._repaired = False
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        ensure_repository(self.repo)
        if not self._repaired:
            # Only once per daemon: a lock that appears later belongs to someone else (a human's git,
            # a backup tool) and must make commits fail and retry, not be deleted under them.
            recover(self.repo)
            self._repaired = True
        self._needs_from = branch_head(self.repo) is not None
        self._proc = subprocess.Popen(
            ["git", "--git-dir", str(self.repo), "fast-import", "--quiet", "--done"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_git_env(),
        )
        return self._proc

    def commit(self, files: dict[str, bytes | None], message: str,
               renames: list[tuple[str, str]] | None = None) -> str:
        """Write one commit with `files` (path -> content, None deletes) after `renames` (old, new);
        return its id once the branch names it. Raises ArchiveError for every failure (the caller
        keeps the work and retries)."""
        with self._lock:
            try:
                return self._commit(files, message, renames or [])
            except ArchiveError:
                raise
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                if self._proc is not None:
                    self._failure(self._proc, str(exc))
                raise ArchiveError(f"archive commit failed: {exc}") from None

    def _commit(self, files: dict[str, bytes | None], message: str, renames: list[tuple[str, str]]) -> str:
        proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._batches += 1
        marker = f"batch-{os.getpid()}-{self._batches}"
        now = int(time.time())
        text = message.encode()
        chunks = [
            f"commit {BRANCH}\nmark :{self._batches}\n".encode(),
            f"author {self._author} {now} +0000\ncommitter {self._author} {now} +0000\n".encode(),
            f"data {len(text)}\n".encode(), text, b"\n",
        ]
        if self._needs_from:
            chunks.append(f"from {BRANCH}^0\n".encode())
        chunks += [f"R {old} {new}\n".encode() for old, new in renames]  # our paths have no spaces
        for path, content in sorted(files.items()):
            if content is None:
                chunks.append(f"D {path}\n".encode())
            else:
                chunks += [f"M 100644 inline {path}\n".encode(), f"data {len(content)}\n".encode(), content, b"\n"]
        chunks.append(f"\ncheckpoint\n\nget-mark :{self._batches}\nprogress {marker}\n".encode())
        try:
            proc.stdin.write(b"".join(chunks))
            proc.stdin.flush()
            made = proc.stdout.readline().decode().strip()
            reply = proc.stdout.readline().decode().strip()
        except (BrokenPipeError, OSError) as exc:
            raise ArchiveError(self._failure(proc, str(exc))) from None
        if reply != f"progress {marker}" or len(made) != 40:
            raise ArchiveError(self._failure(proc, f"unexpected reply {made!r} {reply!r}"))
        head = branch_head(self.repo)
        if head != made:
            # The checkpoint wrote the objects but could not move the ref (a held ref lock, a
            # read-only refs dir). fast-import now believes in a branch git does not have: restart it
            # so the retry builds on the real ref.
            detail = self._failure(proc, "", graceful=True)
            raise ArchiveError(f"git did not move {BRANCH} to the new commit (it names {head}): "
                               f"{detail or 'ref update failed'}")
        self._needs_from = False
        return made

    def _failure(self, proc: subprocess.Popen[bytes], fallback: str, *, graceful: bool = False) -> str:
        if graceful and proc.stdin is not None:  # a clean `done` spares us fast-import's crash report
            with contextlib.suppress(OSError):
                proc.stdin.write(b"done\n")
                proc.stdin.flush()
        self._kill(proc)
        stderr: IO[bytes] | None = proc.stderr
        detail = stderr.read().decode(errors="replace").strip() if stderr is not None else ""
        if stderr is not None:
            stderr.close()
        self._proc = None
        lines = detail.splitlines()
        errors = [line for line in lines if line.startswith(("error:", "fatal:"))]
        return (errors[0] if errors else lines[-1] if lines else fallback)[:500]

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

    def packing(self) -> dict[str, int]:
        """Packs (and how many of them are settled) and loose-object folders in the archive now
        (cheap: directory listings and a stat per pack)."""
        objects = self.repo / "objects"
        try:
            sizes = _pack_sizes(objects / "pack")  # one listing for both counts
            packs, settled = len(sizes), len(_settled_packs(sizes))
            loose = sum(1 for d in objects.iterdir() if len(d.name) == 2)
        except OSError:  # no archive yet (nothing committed): nothing to pack
            return {"packs": 0, "settled_packs": 0, "loose_dirs": 0}
        return {"packs": packs, "settled_packs": settled, "loose_dirs": loose}

    def maintenance_due(self, *, idle: bool) -> bool:
        """Whether a repack would pay now. Busy: once LOAD_PACK_THRESHOLD batch packs piled up (each
        batch is a pack with no deltas to the others). Idle: whenever there is anything to fold.
        Settled packs do not count: a repack leaves them alone."""
        now = self.packing()
        packs = now["packs"] - now["settled_packs"]
        if idle:
            return packs >= IDLE_PACK_THRESHOLD or now["loose_dirs"] >= IDLE_LOOSE_DIR_THRESHOLD
        return packs >= LOAD_PACK_THRESHOLD or now["loose_dirs"] >= LOOSE_DIR_THRESHOLD

    def maintain(self, *, idle: bool = False) -> bool:
        """Fold fast-import's batch packs (and loose objects) into few deltified ones; True if it ran.
        Stops the live fast-import first (so its packs lose their `.keep`; the next batch starts a
        fresh one on the branch), then runs `git repack --geometric=2 -d` *without* the lock:
        commits go on beside it, and their new packs carry `.keep` so the repack leaves them alone.
        Geometric keeps the pack count logarithmic; the settled packs are kept out of it, so no
        repack rewrites most of the archive (see SETTLED_FRACTION). Crash-safe: git writes the new
        pack before deleting old ones, and `recover` clears what a kill left."""
        if not self.maintenance_due(idle=idle):
            return False
        pack_dir = self.repo / "objects" / "pack"
        with self._lock:
            self.close()
            ours = set(_fast_import_keeps(pack_dir))  # the live fast-import's packs are all ours now
        try:
            for keep in ours:
                keep.unlink(missing_ok=True)
            settled = [f"--keep-pack={name}" for name in _settled_packs(_pack_sizes(pack_dir))]
            subprocess.run(
                [*([] if idle else _nice(LOAD_REPACK_NICE)),
                 "git", "-c", "repack.writeBitmaps=false", "-c", f"pack.threads={2 if idle else 1}",
                 "-c", f"pack.window={REPACK_WINDOW}",
                 "--git-dir", str(self.repo), "repack", "-d", "-q", "--geometric=2", *settled],
                capture_output=True, text=True, check=True, timeout=1800, env=_git_env(),
            )
        except subprocess.CalledProcessError as exc:
            raise ArchiveError(f"archive repack failed (the archive is intact, only larger): "
                               f"{exc.stderr.strip()[:300]}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise ArchiveError(f"archive repack failed (the archive is intact, only larger): {exc}") from None
        return True

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
    try:
        if _git(repo, "rev-parse", "--verify", "-q", BRANCH, check=False).returncode != 0:
            return []
        out = _git(repo, "ls-tree", "-r", "--name-only", BRANCH, "--", prefix).stdout
    except subprocess.CalledProcessError as exc:
        raise ArchiveError(f"cannot list the archive at {repo}: {exc.stderr.strip()[:300]}; "
                           f"check it with `git --git-dir {repo} fsck`") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ArchiveError(f"cannot read the archive at {repo}: {exc}") from None
    return out.splitlines()


def head_objects(repo: Path, prefix: str = ".") -> dict[str, str]:
    """Path -> blob id in the archive's current commit, from one `git ls-tree -r`."""
    try:
        if _git(repo, "rev-parse", "--verify", "-q", BRANCH, check=False).returncode != 0:
            return {}
        out = _git(repo, "ls-tree", "-r", "-z", BRANCH, "--", prefix).stdout
    except subprocess.CalledProcessError as exc:
        raise ArchiveError(f"cannot list the archive at {repo}: {exc.stderr.strip()[:300]}; "
                           f"check it with `git --git-dir {repo} fsck`") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ArchiveError(f"cannot read the archive at {repo}: {exc}") from None
    found = {}
    for record in out.split("\0"):
        meta, _, path = record.partition("\t")
        if path:
            found[path] = meta.split()[2]
    return found


def read_blobs(repo: Path, paths: list[str]) -> dict[str, bytes]:
    """Contents of `paths` at the archive's head, through one `git cat-file --batch`. Asked for by
    object id, not `main:<path>`: a path makes cat-file walk the trees again for every file
    (measured: 2,000 files 338 ms by path, see docs/archive.md for the figure by id)."""
    if not paths:
        return {}
    ids = head_objects(repo)
    missing = [p for p in paths if p not in ids]
    if missing:
        raise ArchiveError(f"archive file {missing[0]} is not in the archive's head ({len(missing)} missing)")
    request = "".join(f"{ids[p]}\n" for p in paths).encode()
    try:
        proc = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "--batch"], input=request,
                              capture_output=True, check=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ArchiveError(f"cannot read files from the archive at {repo}: {exc}; "
                           f"check it with `git --git-dir {repo} fsck`") from None
    out, pos, blobs = proc.stdout, 0, {}
    for path in paths:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if len(header) < 3 or header[1] != b"blob":
            raise ArchiveError(f"archive file {path} is unreadable ({out[pos:header_end].decode(errors='replace')})")
        size = int(header[2])
        blobs[path] = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
    return blobs
