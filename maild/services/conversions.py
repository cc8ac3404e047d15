"""Deferred image conversion: the WebP encode that a send does not wait for.

A send validates an image fully (attachments.py: paths, limits, sniffed type, a full decode), stores
it as it is with `"conversion": "pending"` in its metadata, records a pending row in
`attachment_conversions` in the send's own transaction, and answers. The `Converter` here, one
background task of the daemon, then encodes the WebP in the low-priority worker process (one at a
time) and swaps it into every message carrying that original in one write transaction: metadata,
body references, links, blob rows, and archive writes through the outbox. Pending rows survive a
crash and are finished on restart. Knows nothing of MCP or of paths in the repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from maild.archive.blobs import BlobStore, archive_path
from maild.archive.doctor import requeue_messages
from maild.services import images
from maild.store import Connection, Store, utcnow
from maild.store.outbox import enqueue
from shared.config import Settings

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)

# Images up to this many pixels (128 x 128: icons, badges, small crops) are converted during the
# send: libwebp at method 6 takes 5-28 ms for them here, inside the send's budget. Larger ones wait.
INLINE_CONVERT_MAX_PIXELS = 128 * 128
BATCH = 16
CACHE_SIZE = 256
PENDING = "pending"


@dataclass(frozen=True)
class Blob:
    sha256: str
    ext: str
    media_type: str
    size: int
    width: int | None
    height: int | None


Key = tuple[str, int, int]  # (original sha256, WebP method, quality)


class Converter:
    """The daemon's one deferred-conversion task, and the lasting cache original -> converted."""

    def __init__(self, store: Store, settings: Settings, blobs: BlobStore) -> None:
        self._store = store
        self._settings = settings
        self._blobs = blobs
        self._wake = anyio.Event()
        self._worker = LowPriorityWorker()
        self.cache: OrderedDict[Key, Blob] = OrderedDict()

    def key(self, sha256: str) -> Key:
        return sha256, self._settings.webp_method, self._settings.webp_quality

    def remember(self, key: Key, blob: Blob) -> None:
        self.cache[key] = blob
        self.cache.move_to_end(key)
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)

    def known(self, conn: Connection, sha256: str) -> tuple[str, Blob | None]:
        """('done', blob) when this original was converted with the current settings and the WebP is
        still stored, ('failed', None) when its encode failed before (it is then stored as it is),
        else ('', None). Runs on a reader connection."""
        key = self.key(sha256)
        cached = self.cache.get(key)
        if cached is not None and self._blobs.has(cached.sha256):
            return "done", cached
        row = conn.execute(
            "SELECT c.status, b.sha256, b.ext, b.media_type, b.bytes, b.width, b.height FROM attachment_conversions c"
            " LEFT JOIN attachment_blobs b ON b.sha256 = c.converted_sha256"
            " WHERE c.original_sha256 = ? AND c.method = ? AND c.quality = ?", key,
        ).fetchone()
        if row is None:
            return "", None
        if row[0] == "failed":
            return "failed", None
        if row[0] == "done" and row[1] is not None and self._blobs.has(str(row[1])):
            blob = Blob(str(row[1]), str(row[2]), str(row[3]), int(row[4]), row[5], row[6])
            self.remember(key, blob)
            return "done", blob
        return "", None

    def notify(self) -> None:
        """A send committed pending conversions: wake the task (called on the event loop)."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: convert what is pending (first what a crash left), then wait for the next send."""
        try:
            await self._run()
        finally:
            self._worker.close()

    async def _run(self) -> None:
        while True:
            self._wake = anyio.Event()
            try:
                pending = await self._store.read(_pending, BATCH)
            except Exception:
                log.exception("cannot list pending image conversions; retrying in 5 s")
                await anyio.sleep(5)
                continue
            for row in pending:
                try:
                    await self._convert(*row)
                except Exception:  # the daemon must outlive a conversion; the row stays pending
                    log.exception("image conversion of %s failed; retrying in 5 s", row[0])
                    await anyio.sleep(5)
            if len(pending) < BATCH:
                with anyio.move_on_after(60):  # also a safety net should a wake-up ever be missed
                    await self._wake.wait()

    async def _convert(self, original: str, method: int, quality: int, converted: str | None) -> None:
        blob: Blob | None = None
        error: str | None = None
        if converted is not None and self._blobs.has(converted):
            # Converted before; a send raced the swap and linked the original again.
            row = await self._store.read(_blob_row, converted)
            blob = Blob(*row) if row is not None else None
        if blob is None:
            data = await anyio.to_thread.run_sync(self._blobs.read, original)
            if data is None:
                error = f"the original {original} is missing from {self._blobs.root}"
            else:
                try:
                    result = await self._worker.to_webp(data, method, quality)
                    sha = hashlib.sha256(result.data).hexdigest()
                    await anyio.to_thread.run_sync(self._blobs.put, result.data, sha)
                    blob = Blob(sha, "webp", "image/webp", len(result.data), result.width, result.height)
                except images.ImageRefused as exc:
                    error = str(exc)
                except (OSError, ValueError, MemoryError) as exc:  # libwebp limits (16383 px a side), disk
                    error = f"{type(exc).__name__}: {exc}"
        keep = self._settings.keep_original_images
        drop = await self._store.write(swap, original, blob, error, keep)
        if blob is not None:
            self.remember((original, method, quality), blob)
        else:
            log.warning("image %s stays as it is: its WebP conversion failed (%s)", original, error)
        for sha in drop:
            await anyio.to_thread.run_sync(self._blobs.remove, sha)


class LowPriorityWorker:
    """One process, started on first use, at idle priority (images.lower_priority), for deferred encodes.
    Not anyio's worker pool: its processes also verify images during sends, which must not wait
    behind a lowered priority. One conversion at a time: on 2 cores a second concurrent encode
    would only take CPU from the daemon's loop and writer (other agents' sends)."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None

    async def to_webp(self, data: bytes, method: int, quality: int) -> images.Converted:
        # Imported here: multiprocessing is ~10 ms of the daemon's start that only images need.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=images.lower_priority)
        future = self._executor.submit(images.to_webp, data, method=method, quality=quality)
        try:
            # A thread waits for the process, so the loop stays free; on cancellation (the daemon
            # stopping) the wait is abandoned and close() ends the process.
            converted: images.Converted = await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        except BrokenProcessPool:
            self._executor = None  # the process died (killed, out of memory): a new one next time
            raise OSError("the converter process died") from None
        return converted

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list(getattr(executor, "_processes", {}).values())  # shutdown() would wait for the encode
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()


def record_pending(conn: Connection, original: Blob, method: int, quality: int) -> None:
    """In a send's transaction: this original waits for its WebP. A row already done is set back to
    pending (the new message must be swapped too; the converter reuses the WebP it made)."""
    now = utcnow()
    conn.execute(
        "INSERT INTO attachment_conversions(original_sha256, original_ext, original_media_type, method, quality,"
        " status, created_ts, updated_ts) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)"
        " ON CONFLICT(original_sha256) DO UPDATE SET status = 'pending', updated_ts = excluded.updated_ts,"
        " converted_sha256 = CASE WHEN method = excluded.method AND quality = excluded.quality"
        "   THEN converted_sha256 END, method = excluded.method, quality = excluded.quality, error = NULL"
        " WHERE status != 'pending'",
        (original.sha256, original.ext, original.media_type, method, quality, now, now),
    )


def is_pending(conn: Connection, sha256: str) -> bool:
    return conn.execute("SELECT 1 FROM attachment_conversions WHERE original_sha256 = ? AND status = ?",
                        (sha256, PENDING)).fetchone() is not None


def converted_from(conn: Connection, sha256: str) -> str | None:
    """The WebP an original became (resource://attachment/{original} keeps answering with it)."""
    row = conn.execute("SELECT converted_sha256 FROM attachment_conversions WHERE original_sha256 = ?"
                       " AND converted_sha256 IS NOT NULL", (sha256,)).fetchone()
    return str(row[0]) if row is not None else None


def _pending(conn: Connection, limit: int) -> list[tuple[str, int, int, str | None]]:
    return [(str(r[0]), int(r[1]), int(r[2]), r[3]) for r in conn.execute(
        "SELECT original_sha256, method, quality, converted_sha256 FROM attachment_conversions"
        " WHERE status = 'pending' ORDER BY created_ts LIMIT ?", (limit,))]


def _blob_row(conn: Connection, sha256: str) -> tuple[Any, ...] | None:
    row = conn.execute("SELECT sha256, ext, media_type, bytes, width, height FROM attachment_blobs WHERE sha256 = ?",
                       (sha256,)).fetchone()
    return tuple(row) if row is not None else None


def swap(conn: Connection, original: str, blob: Blob | None, error: str | None, keep: bool) -> list[str]:
    """One transaction: every message carrying `original` as pending now carries `blob` (or, when the
    encode failed, keeps the original, no longer pending). Returns the blobs to delete from the store
    once this commits (the original, unless kept or still carried as it is by some message)."""
    row = conn.execute("SELECT status FROM attachment_conversions WHERE original_sha256 = ?", (original,)).fetchone()
    if row is None or row[0] != PENDING:
        return []
    now = utcnow()
    if blob is not None:
        conn.execute(
            "INSERT OR IGNORE INTO attachment_blobs(sha256, ext, media_type, bytes, width, height, created_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (blob.sha256, blob.ext, blob.media_type, blob.size, blob.width, blob.height, now),
        )
    carriers = conn.execute(
        "SELECT a.message_id, a.project_id, p.slug, m.attachments, m.body_md FROM attachments a"
        " JOIN messages m ON m.id = a.message_id JOIN projects p ON p.id = a.project_id"
        " WHERE a.sha256 = ? ORDER BY a.message_id", (original,),
    ).fetchall()
    changed: list[int] = []
    archived: set[tuple[str, int]] = set()
    for message_id, project_id, slug, metas_text, body in carriers:
        metas = json.loads(str(metas_text))
        new_body = _rewrite(metas, str(body), original, blob, keep, str(slug))
        if new_body is None:
            continue  # it carries this image as it is (sent with convert_images=false)
        if blob is not None:
            _archive_once(conn, archived, blob.sha256, blob.ext, str(slug), int(str(project_id)))
            conn.execute("INSERT OR IGNORE INTO attachments(message_id, sha256, project_id) VALUES (?, ?, ?)",
                         (message_id, blob.sha256, project_id))
            if not keep:
                conn.execute("DELETE FROM attachments WHERE message_id = ? AND sha256 = ?", (message_id, original))
        if blob is None or keep:  # the original stays in the mail: it goes to the archive now
            ext = conn.execute("SELECT ext FROM attachment_blobs WHERE sha256 = ?", (original,)).fetchone()
            if ext is not None:
                _archive_once(conn, archived, original, str(ext[0]), str(slug), int(str(project_id)), force=True)
        if new_body != body:
            conn.execute("UPDATE messages SET attachments = ?, body_md = ? WHERE id = ?",
                         (json.dumps(metas), new_body, message_id))
        else:
            conn.execute("UPDATE messages SET attachments = ? WHERE id = ?", (json.dumps(metas), message_id))
        changed.append(int(str(message_id)))
    requeue_messages(conn, changed)  # the archive's copies of those messages are rewritten
    conn.execute(
        "UPDATE attachment_conversions SET status = ?, converted_sha256 = ?, error = ?, updated_ts = ?"
        " WHERE original_sha256 = ?",
        ("done" if blob is not None else "failed", blob.sha256 if blob is not None else None, error, now, original),
    )
    if blob is None or keep:
        return []
    if conn.execute("SELECT 1 FROM attachments WHERE sha256 = ? LIMIT 1", (original,)).fetchone() is not None:
        return []  # still carried as it is by a message sent with convert_images=false
    conn.execute("DELETE FROM attachment_blobs WHERE sha256 = ?", (original,))
    return [original]


def _rewrite(metas: list[dict[str, Any]], body: str, original: str, blob: Blob | None, keep: bool,
             slug: str) -> str | None:
    """Swap the WebP into a message's attachment metadata (in place) and body references; the new
    body, or None when the message carries no pending `original`."""
    touched = False
    for meta in metas:
        if meta.get("sha256") != original or meta.get("conversion") != PENDING:
            continue
        touched = True
        if blob is None:
            meta["conversion"] = "failed"  # readers see the original, for good
            continue
        del meta["conversion"]
        old_path, new_path = meta["path"], archive_path(slug, blob.sha256, blob.ext)
        if keep:
            meta.update(original_path=old_path, original_sha256=original, original_media_type=meta["media_type"],
                        original_bytes=meta["bytes"])
        meta.update(media_type=blob.media_type, bytes=blob.size, width=blob.width, height=blob.height,
                    sha256=blob.sha256, path=new_path)
        body = body.replace(f"]({old_path}", f"]({new_path}")
    return body if touched else None


def _archive_once(conn: Connection, done: set[tuple[str, int]], sha: str, ext: str, slug: str, project_id: int,
                  *, force: bool = False) -> None:
    """Queue the blob's archive copy for a project once (an extra copy would only rewrite the same file)."""
    if (sha, project_id) in done:
        return
    done.add((sha, project_id))
    known = conn.execute("SELECT 1 FROM attachments WHERE sha256 = ? AND project_id = ? LIMIT 1",
                         (sha, project_id)).fetchone()
    if force or known is None:
        enqueue(conn, "attachment", slug, {"attachment": {"sha256": sha, "ext": ext, "project_slug": slug}})
