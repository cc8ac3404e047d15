"""The blob store checked against the database, behind `mailctl doctor` (archive_doctor's `blobs`).

Every `attachment_blobs` row must have its file in `.mcp_mail/blobs/` whose bytes hash to its name;
every file there must be named by a row. Repair (`fix=true`) copies missing or corrupt blobs back
from the Git archive (when it has a copy that hashes right) and deletes orphans old enough not to
belong to a send in flight (its files are stored just before its transaction commits). Knows nothing
of messages or of who may read what.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from maild.archive.blobs import SHA256, BlobStore, archive_path
from maild.archive.committer import ArchiveError, head_files, read_blobs
from maild.store import Connection, Store

# A file younger than this may be a send's blob whose transaction has not committed yet.
ORPHAN_MIN_AGE_SECONDS = 3600.0
LISTED = 100


@dataclass
class Scan:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)
    young_orphans: int = 0


def _known(conn: Connection) -> dict[str, tuple[str, str | None]]:
    """sha256 -> (ext, a project slug whose archive folder should hold it)."""
    known: dict[str, tuple[str, str | None]] = {}
    for sha, ext, slug in conn.execute(
        "SELECT b.sha256, b.ext, (SELECT p.slug FROM attachments a JOIN projects p ON p.id = a.project_id"
        " WHERE a.sha256 = b.sha256 LIMIT 1) FROM attachment_blobs b"
    ):
        known[str(sha)] = (str(ext), str(slug) if slug is not None else None)
    return known


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def scan(blobs: BlobStore, known: dict[str, tuple[str, str | None]], now: float) -> Scan:
    found = Scan()
    for sha in known:
        found.checked += 1
        path = blobs.path(sha)
        if not path.is_file():
            found.missing.append(sha)
        elif _digest(path) != sha:
            found.corrupt.append(sha)
    if blobs.root.is_dir():
        for path in blobs.root.glob("*/*"):
            named = SHA256.match(path.name) is not None and path.parent.name == path.name[:2]
            if named and path.name in known:
                continue
            try:
                young = now - path.stat().st_mtime < ORPHAN_MIN_AGE_SECONDS
            except OSError:
                continue
            if young:
                found.young_orphans += 1
            else:
                found.orphans.append(path)
    return found


def _repair(blobs: BlobStore, repo: Path | None, known: dict[str, tuple[str, str | None]],
            found: Scan) -> dict[str, Any]:
    """Restore what the archive has (a copy must hash to its name), delete old orphans."""
    wanted = {sha: archive_path(slug, sha, ext) for sha in [*found.missing, *found.corrupt]
              for ext, slug in [known[sha]] if slug is not None}
    copies: dict[str, bytes] = {}
    if repo is not None and wanted:
        with contextlib.suppress(ArchiveError, ValueError, OSError):
            present = set(head_files(repo))
            copies = read_blobs(repo, [p for p in wanted.values() if p in present])
    restored, lost = [], []
    for sha in [*found.missing, *found.corrupt]:
        data = copies.get(wanted.get(sha, ""))
        if data is None or hashlib.sha256(data).hexdigest() != sha:
            lost.append(sha)
            continue
        blobs.remove(sha)  # a corrupt file of the right size would otherwise be kept
        blobs.put(data, sha)
        restored.append(sha)
    removed = 0
    for path in found.orphans:
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return {"restored": len(restored), "orphans_removed": removed, "unrecoverable": lost[:LISTED]}


async def check_blobs(store: Store, blobs: BlobStore, repo: Path | None, *, fix: bool) -> dict[str, Any]:
    known = await store.read(_known)
    found = await anyio.to_thread.run_sync(scan, blobs, known, time.time())
    report: dict[str, Any] = {
        "ok": not found.missing and not found.corrupt and not found.orphans,
        "checked": found.checked,
        "missing": found.missing[:LISTED],
        "missing_count": len(found.missing),
        "corrupt": found.corrupt[:LISTED],
        "corrupt_count": len(found.corrupt),
        "orphans": [str(p.relative_to(blobs.root)) for p in found.orphans[:LISTED]],
        "orphan_count": len(found.orphans),
        "recent_unlinked_files": found.young_orphans,
    }
    if fix and not report["ok"]:
        report["fixed"] = await anyio.to_thread.run_sync(_repair, blobs, repo, known, found)
    return report
