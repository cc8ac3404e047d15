"""The files an export writes into a bundle folder, each hashed as it is written (so the manifest
never re-reads the bundle), and, for `share update`, left alone when the bytes on disk are already
right. `prune` then removes whatever the new bundle no longer holds. `.git` is never touched.
Which files to write, and what goes in them, is decided by export.py, viewer.py and bundle.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

KEEP = frozenset({".git"})


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Output:
    """A bundle folder being written. `previous` is the old manifest's {path: sha256} when updating a
    bundle in place (None for a fresh export, which starts from an empty folder)."""

    def __init__(self, root: Path, previous: dict[str, str] | None = None) -> None:
        self.root = root
        self.previous = previous
        self.files: dict[str, str] = {}
        self.written = 0
        self.unchanged = 0

    def _on_disk(self, rel: str, sha: str) -> bool:
        # An update trusts no file blindly: it is kept only if its bytes still hash to what the
        # old manifest listed and to what the new bundle wants (a tampered file is rewritten).
        if self.previous is None or self.previous.get(rel) != sha:
            return False
        path = self.root / rel
        return path.is_file() and _hash_file(path) == sha

    def write(self, rel: str, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        sha = hashlib.sha256(raw).hexdigest()
        if self._on_disk(rel, sha):
            self.unchanged += 1
        else:
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
            self.written += 1
        self.files[rel] = sha

    def copy(self, rel: str, source: Path, sha: str | None = None) -> None:
        """Copy a file in (a blob: `sha` is its known hash, checked on the copy's bytes)."""
        if sha is not None and self._on_disk(rel, sha):
            self.unchanged += 1
            self.files[rel] = sha
            return
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        self.files[rel] = _hash_file(path)
        self.written += 1

    def keep(self, rel: str) -> bool:
        """Reuse the old bundle's file as it is, if it is still intact; False means: make it again."""
        sha = (self.previous or {}).get(rel)
        if sha is None or not self._on_disk(rel, sha):
            return False
        self.files[rel] = sha
        self.unchanged += 1
        return True

    def record(self, files: dict[str, str], written: int, unchanged: int) -> None:
        """Files written elsewhere (by a worker process) on this output's behalf."""
        self.files.update(files)
        self.written += written
        self.unchanged += unchanged

    def prune(self, also_keep: frozenset[str] = frozenset()) -> int:
        """Delete every file the new bundle does not hold (and emptied folders); `.git` stays."""
        pruned = 0
        for dirpath, _dirs, filenames in os.walk(self.root, topdown=False):
            here = Path(dirpath)
            rel_dir = here.relative_to(self.root)
            if rel_dir.parts and rel_dir.parts[0] in KEEP:
                continue
            for name in filenames:
                rel = (rel_dir / name).as_posix()
                if rel in KEEP:
                    continue
                if rel not in self.files and rel not in also_keep:
                    (here / name).unlink()
                    pruned += 1
            if here != self.root and not any(here.iterdir()):
                here.rmdir()
        return pruned
