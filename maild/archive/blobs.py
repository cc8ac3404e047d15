"""Attachment bytes: a content-addressed file store beside the archive, and the archive's copy of it.

`BlobStore` keeps each blob once, at `.mcp_mail/blobs/<aa>/<sha256>`, written atomically (temp file
+ rename) before the database row that names it commits, so a row never points at a missing file.
The archiver copies each blob into a project's archive folder (`attachment_files`), and a rebuild
copies them back (`restore`). Knows nothing of messages, images or who may read what.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from maild.archive import formats

SHA256 = re.compile(r"^[0-9a-f]{64}$")
OCTETS = "application/octet-stream"
EXT = re.compile(r"^[a-z0-9]{1,8}$")
ARCHIVE_FILE = re.compile(
    r"^projects/(?P<slug>[^/]+)/attachments/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})\.(?P<ext>[a-z0-9]{1,8})$"
)


def archive_path(slug: str, sha256: str, ext: str) -> str:
    """Where a blob lives in a project's archive folder (upstream layout, keyed by sha256)."""
    if not SHA256.match(sha256) or not EXT.match(ext):
        raise ValueError(f"not a blob address: {sha256!r}.{ext!r}")
    return f"projects/{formats.segment(slug)}/attachments/{sha256[:2]}/{sha256}.{ext}"


class BlobStore:
    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = root
        self._fsync = fsync  # with synchronous=FULL the blob must survive power loss like its row

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store `data` (once: an existing blob is not rewritten); return its sha256."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.is_file() and target.stat().st_size == len(data):
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if self._fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            Path(temp).replace(target)  # atomic: readers see the whole blob or none
        except BaseException:
            with contextlib.suppress(OSError):
                Path(temp).unlink()
            raise
        return digest

    def scratch(self, data: bytes) -> Path:
        """A private temporary file holding `data` (the caller deletes it): how a worker process gets
        a large image to check without the bytes crossing a pipe in 64 KiB round trips."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".tmp-check-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return Path(temp)

    def remove(self, sha256: str) -> None:
        """Drop a blob no row names any more (an original replaced by its converted image)."""
        self.path(sha256).unlink(missing_ok=True)

    def read(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None


def attachment_files(payload: dict[str, Any], blobs: BlobStore) -> dict[str, bytes]:
    """The archive file for an `attachment` outbox row. A blob that is gone from the store cannot be
    archived: ValueError makes the archiver skip (and log) the row instead of retrying forever."""
    item = payload["attachment"]
    data = blobs.read(item["sha256"])
    if data is None:
        raise ValueError(f"attachment blob {item['sha256']} is missing from {blobs.root}")
    return {archive_path(item["project_slug"], item["sha256"], item["ext"]): data}


def restore(blobs: BlobStore, found: dict[str, bytes]) -> int:
    """Write archive attachment files back into the store (rebuild); returns how many were missing.
    A file whose bytes do not hash to its name is skipped: the name is the address."""
    restored = 0
    for path, data in found.items():
        match = ARCHIVE_FILE.match(path)
        if match is None or blobs.has(match["sha"]):
            continue
        if hashlib.sha256(data).hexdigest() != match["sha"]:
            continue
        blobs.put(data, match["sha"])
        restored += 1
    return restored


Rows = list[tuple[Any, ...]]


def link_rows(message: dict[str, Any], project_id: int, created_ts: str) -> tuple[Rows, Rows]:
    """Rebuild: the `attachment_blobs` and `attachments` rows a message's front matter implies (its
    metadata names each blob: the stored one and, with KEEP_ORIGINAL_IMAGES, the original)."""
    blobs: Rows = []
    links: Rows = []
    for meta in message.get("attachments") or []:
        for prefix in ("", "original_"):
            sha, path = meta.get(f"{prefix}sha256"), meta.get(f"{prefix}path")
            where = ARCHIVE_FILE.match(str(path or ""))
            if not isinstance(sha, str) or where is None:
                continue
            size = meta.get("bytes") if not prefix else meta.get("original_bytes", 0)
            media = meta.get("media_type") if not prefix else meta.get("original_media_type", OCTETS)
            width, height = meta.get("width"), meta.get("height")
            blobs.append((sha, where["ext"], media, size or 0, width, height, created_ts))
            links.append((message["id"], sha, project_id))
    return blobs, links


def pending_rows(message: dict[str, Any], created_ts: str, method: int = 6, quality: int = 80) -> Rows:
    """Rebuild: `attachment_conversions` rows for images the archive shows still waiting for their
    WebP (`"conversion": "pending"`), so the converter finishes them once the daemon runs (from the
    blob store; an original it lost cannot be converted and is marked failed)."""
    rows: Rows = []
    for meta in message.get("attachments") or []:
        where = ARCHIVE_FILE.match(str(meta.get("path") or ""))
        if meta.get("conversion") == "pending" and where is not None and isinstance(meta.get("sha256"), str):
            rows.append((meta["sha256"], where["ext"], meta.get("media_type", OCTETS), method, quality,
                         created_ts, created_ts))
    return rows


def restore_from_archive(repo: Path, blobs: BlobStore, chunk: int = 64) -> int:
    """Copy the archive's attachment files that the blob store lacks back into it (rebuild)."""
    from maild.archive.committer import head_files, read_blobs

    wanted = [p for p in head_files(repo) if (m := ARCHIVE_FILE.match(p)) is not None and not blobs.has(m["sha"])]
    restored = 0
    for start in range(0, len(wanted), chunk):  # a chunk at a time: attachments can be large
        restored += restore(blobs, read_blobs(repo, wanted[start : start + chunk]))
    return restored
