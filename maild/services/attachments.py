"""Attachments: files and images carried by mail (upstream §4.5, with its safety rules tightened).

`prepare` runs before a send's transaction, off the event loop and off the writer: it resolves
`attachment_paths` and markdown images `![alt](path)` against the mailbox root, refuses anything
that leaves it, reads, hashes, converts images to WebP and stores each blob once (BlobStore). The
send's own transaction then only links the blobs (`Prepared.link_in`) and queues their archive copy
through the outbox. Reading (`read_blob`, `images_for`) serves the same blobs to anyone who may read
a message carrying them. Knows nothing of MCP; Pillow lives in images.py.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from maild.archive.blobs import ARCHIVE_FILE, SHA256, BlobStore, archive_path
from maild.archive.committer import ArchiveError, read_blobs
from maild.services import agents as ag
from maild.services import images
from maild.services.conversions import (
    INLINE_CONVERT_MAX_PIXELS,
    PENDING,
    Blob,
    Converter,
    converted_from,
    is_pending,
    record_pending,
)
from maild.services.messaging import _visible_message
from maild.services.projects import slugify
from maild.services.sessions import Session
from maild.store import Connection, Store, utcnow
from maild.store.outbox import enqueue
from shared.config import Settings
from shared.errors import InvalidArgument, NotFound, StorageError
from shared.paths import STATE_DIR_NAME

MAX_ATTACHMENTS = 32
# `![alt](target)` or `![alt](target "title")`; the target is a path, a URL or a data: URI.
MARKDOWN_IMAGE = re.compile(r"!\[(?P<alt>[^\]\n]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"\n]*\")?\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DATA_URI = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?[;,]")
MAX_IMAGES_PER_READ = 16
MAX_IMAGE_BYTES_PER_READ = 8 * 1024 * 1024


class _Missing(Exception):
    """The path does not exist (a body image is then left as it is)."""


@dataclass
class Prepared:
    """What a send carries: the body with image references rewritten, the payload metadata, the
    blobs to link, and warnings for the caller."""

    slug: str
    body_md: str
    metas: list[dict[str, Any]] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Bytes to write once every file of the message has been read and converted: a refused file
    # leaves nothing behind, not even the blobs of the files before it.
    pending: dict[str, bytes] = field(default_factory=dict, repr=False)
    # Originals stored as they are until the converter swaps in their WebP (conversions.py), and the
    # settings they are to be converted with.
    deferred: list[Blob] = field(default_factory=list)
    webp: tuple[int, int] = (6, 80)

    def link_in(self, conn: Connection, message_id: int, project_id: int) -> None:
        """Inside the send's transaction: record each blob once, link it to the message, and queue
        its archive copy the first time this project carries it (one file per content)."""
        now = utcnow()
        for blob in self.blobs:
            conn.execute(
                "INSERT OR IGNORE INTO attachment_blobs(sha256, ext, media_type, bytes, width, height, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (blob.sha256, blob.ext, blob.media_type, blob.size, blob.width, blob.height, now),
            )
            known = conn.execute(
                "SELECT 1 FROM attachments WHERE sha256 = ? AND project_id = ? LIMIT 1", (blob.sha256, project_id)
            ).fetchone()
            conn.execute(
                "INSERT OR IGNORE INTO attachments(message_id, sha256, project_id) VALUES (?, ?, ?)",
                (message_id, blob.sha256, project_id),
            )
            if blob in self.deferred:
                record_pending(conn, blob, *self.webp)  # archived once converted (or if that fails)
            elif known is None or is_pending(conn, blob.sha256):  # pending links were never archived
                enqueue(conn, "attachment", self.slug,
                        {"attachment": {"sha256": blob.sha256, "ext": blob.ext, "project_slug": self.slug}})


def image_refs(body_md: str) -> list[str]:
    """Local paths referenced as markdown images (URLs, anchors and data: URIs excluded)."""
    return [m["target"] for m in MARKDOWN_IMAGE.finditer(body_md) if _is_path(m["target"])]


def _is_path(target: str) -> bool:
    return not _SCHEME.match(target) and not target.startswith(("#", "//"))


def _policy(conn: Connection, session: Session | None, name: str | None, token: str | None) -> str:
    policy: str = ag.acting_agent(conn, session, name, token, param="sender_name")[8]
    return policy


class Attachments:
    def __init__(self, store: Store, settings: Settings, root: Path, blobs: BlobStore, archive: Path | None) -> None:
        self._store = store
        self._settings = settings
        self._root = root.resolve()
        self._private = (self._root / STATE_DIR_NAME, self._root / ".git", blobs.root.resolve())
        self.blobs = blobs
        self._archive = archive
        # Conversion is CPU-bound: leave a core to the daemon's loop and the writer.
        self._limiter = anyio.CapacityLimiter(max(1, (os.cpu_count() or 2) - 1))
        self.converter = Converter(store, settings, blobs)

    async def prepare(
        self,
        session: Session | None,
        project_key: str,
        sender_name: str | None,
        sender_token: str | None,
        body_md: str,
        paths: list[str] | None,
        convert_images: bool | None,
    ) -> Prepared | None:
        """None when the message carries nothing to attach (the common case costs no extra hop)."""
        paths = list(paths or [])
        refs = image_refs(body_md)
        data_uris = [m["target"] for m in MARKDOWN_IMAGE.finditer(body_md) if m["target"].startswith("data:")]
        if not paths and not refs and not data_uris:
            return None
        if len(paths) + len(refs) > MAX_ATTACHMENTS:
            raise InvalidArgument(f"{len(paths) + len(refs)} attachments; at most {MAX_ATTACHMENTS} per message")
        for item in paths:
            if not isinstance(item, str) or not item.strip() or "\x00" in item:
                raise InvalidArgument(f"attachment path {item!r} is not a usable path; give a file path relative "
                                      f"to the repository root {self._root}")
        policy = await self._store.read(_policy, session, sender_name, sender_token)
        # Upstream: an agent whose policy is inline or file always gets its images converted.
        convert = True if policy in ("inline", "file") else (
            self._settings.convert_images if convert_images is None else convert_images)
        return await anyio.to_thread.run_sync(
            self._prepare_sync, slugify(project_key), body_md, paths, refs, data_uris, convert, policy)

    def _prepare_sync(
        self, slug: str, body_md: str, paths: list[str], refs: list[str], data_uris: list[str],
        convert: bool, policy: str,
    ) -> Prepared:
        prepared = Prepared(slug=slug, body_md=body_md,
                            webp=(self._settings.webp_method, self._settings.webp_quality))
        metas: dict[str, dict[str, Any]] = {}
        for text, found in self._read_all(prepared, paths, refs).items():
            if found is not None:
                metas[text] = self._store_one(prepared, text, found[0], found[1], convert, policy)
        for text in paths:
            prepared.metas.append(metas[text])
        for uri in dict.fromkeys(data_uris):
            media = _DATA_URI.match(uri)
            prepared.metas.append({"type": "inline", "media_type": media["media"] if media and media["media"]
                                   else "application/octet-stream"})

        def rewrite(match: re.Match[str]) -> str:
            meta = metas.get(match["target"])
            if meta is None or match["target"] not in refs:
                return match[0]
            target = (f"data:{meta['media_type']};base64,{meta['data_base64']}" if meta["type"] == "inline"
                      else meta["path"])
            return f"![{match['alt']}]({target}{match['title'] or ''})"

        prepared.body_md = MARKDOWN_IMAGE.sub(rewrite, body_md)
        for text in refs:
            if metas.get(text) is not None and text not in paths:
                prepared.metas.append(metas[text])
        try:
            for sha, data in prepared.pending.items():
                self.blobs.put(data, sha)
        except OSError as exc:
            raise StorageError(f"cannot store attachments in {self.blobs.root}: {exc.strerror}; free disk space "
                               "or fix the directory's permissions") from None
        prepared.pending.clear()
        return prepared

    def _read_all(self, prepared: Prepared, paths: list[str], refs: list[str]) -> dict[str, tuple[str, bytes] | None]:
        """Each distinct path's (file name, bytes); None for a body image that does not exist."""
        loaded: dict[str, tuple[str, bytes] | None] = {}
        total = 0
        for text, from_body in [*((p, False) for p in paths), *((r, True) for r in refs)]:
            if text in loaded:
                continue
            try:
                found = self._read(text)
            except _Missing:
                if not from_body:
                    raise InvalidArgument(
                        f"attachment {text!r} does not exist (paths are relative to the repository root "
                        f"{self._root})", data={"path": text}) from None
                loaded[text] = None
                prepared.warnings.append(f"image {text!r} in body_md does not exist; left as it is")
                continue
            loaded[text] = found
            total += len(found[1])
            if total > self._settings.attachment_message_max_bytes:
                raise InvalidArgument(
                    f"attachments total more than {self._settings.attachment_message_max_bytes} bytes "
                    "(ATTACHMENT_MESSAGE_MAX_BYTES); send fewer or smaller files", data={"path": text})
        return loaded

    def _resolve(self, text: str) -> Path:
        """The real path of `text`, or InvalidArgument naming it. Relative paths resolve against the
        mailbox root and must stay inside it, also after following symlinks."""
        if "\x00" in text:
            raise InvalidArgument(f"attachment path {text!r} contains a NUL character")
        given = Path(text)
        candidate = given if given.is_absolute() else self._root / given
        if not os.path.lexists(candidate):
            raise _Missing(text)
        if given.is_absolute() and not self._settings.allow_absolute_attachment_paths:
            raise InvalidArgument(
                f"attachment {text!r} is an absolute path; give it relative to the repository root {self._root} "
                "(or set ALLOW_ABSOLUTE_ATTACHMENT_PATHS=true)", data={"path": text})
        real = candidate.resolve()
        if not given.is_absolute() and not real.is_relative_to(self._root):
            lexical = Path(os.path.normpath(candidate))
            why = ("is a symlink that leaves the repository root" if lexical.is_relative_to(self._root)
                   else "leaves the repository root (..)")
            raise InvalidArgument(f"attachment {text!r} {why} {self._root}; attach files inside the repository",
                                  data={"path": text})
        if any(real.is_relative_to(private) for private in self._private):
            # The database (all mail, whoever may read it), the blobs and git's config are not mail.
            raise InvalidArgument(f"attachment {text!r} is inside .mcp_mail/ or .git/, which cannot be attached",
                                  data={"path": text})
        return real

    def _read(self, text: str) -> tuple[str, bytes]:
        real = self._resolve(text)
        limit = self._settings.attachment_max_bytes
        try:
            info = real.stat()
            if stat.S_ISDIR(info.st_mode):
                raise InvalidArgument(f"attachment {text!r} is a directory; attach files one by one",
                                      data={"path": text})
            if not stat.S_ISREG(info.st_mode):
                raise InvalidArgument(f"attachment {text!r} is not a regular file (a device, FIFO or socket)",
                                      data={"path": text})
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                opened = os.fstat(handle.fileno())
                if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(opened.st_mode):
                    raise InvalidArgument(f"attachment {text!r} changed while it was being read; send again",
                                          data={"path": text})
                if opened.st_size > limit:
                    raise InvalidArgument(
                        f"attachment {text!r} is {opened.st_size} bytes; the limit is {limit} (ATTACHMENT_MAX_BYTES)",
                        data={"path": text})
                data = handle.read(limit + 1)
        except FileNotFoundError:
            raise _Missing(text) from None
        except OSError as exc:
            raise InvalidArgument(f"cannot read attachment {text!r}: {exc.strerror}", data={"path": text}) from None
        if len(data) > limit:
            raise InvalidArgument(f"attachment {text!r} is over {limit} bytes (ATTACHMENT_MAX_BYTES)",
                                  data={"path": text})
        return real.name, data

    def _store_one(self, prepared: Prepared, text: str, name: str, data: bytes, convert: bool,
                   policy: str) -> dict[str, Any]:
        media_type, ext = images.sniff(data)
        meta: dict[str, Any] = {"name": name, "sha1": hashlib.sha1(data, usedforsecurity=False).hexdigest()}
        try:
            blob, how = self._image(prepared, data, media_type, ext, convert, policy) if images.is_image(
                media_type) else (self._put(prepared, data, media_type, ext, None, None), "as_is")
        except images.ImageRefused as exc:
            raise InvalidArgument(f"attachment {text!r} was refused: {exc}; nothing was sent",
                                  data={"path": text}) from None
        deferred = how == PENDING
        if how == "converted" and self._settings.keep_original_images:
            original = self._put(prepared, data, media_type, ext, blob.width, blob.height)
            prepared.blobs.append(original)
            meta.update(original_path=archive_path(prepared.slug, original.sha256, original.ext),
                        original_sha256=original.sha256, original_media_type=media_type, original_bytes=original.size)
        prepared.blobs.append(blob)
        inline = not deferred and images.is_image(blob.media_type) and (
            policy == "inline" or (policy == "auto" and blob.size <= self._settings.inline_image_max_bytes))
        meta.update(type="inline" if inline else "file", media_type=blob.media_type, bytes=blob.size,
                    width=blob.width, height=blob.height, sha256=blob.sha256,
                    path=archive_path(prepared.slug, blob.sha256, blob.ext))
        if deferred:
            meta["conversion"] = PENDING
        if inline:
            stored = prepared.pending.get(blob.sha256) or self.blobs.read(blob.sha256) or b""
            meta["data_base64"] = base64.b64encode(stored).decode()
        return meta

    def _image(self, prepared: Prepared, data: bytes, media_type: str, ext: str, convert: bool,
               policy: str) -> tuple[Blob, str]:
        """(the blob a message carries, "as_is" | "converted" | "pending"). Converted during the send:
        an image converted before, one small enough to encode within a few ms, and any image an agent
        wants inline (its bytes go into the message). Otherwise the image is fully decoded here (a
        corrupt one is refused now, with nothing stored) and stored as it is; conversions.py swaps in
        the WebP once it is encoded."""
        width, height = images.probe(data)
        if not convert:
            return self._put(prepared, data, media_type, ext, width, height), "as_is"
        sha = hashlib.sha256(data).hexdigest()
        state, converted = anyio.from_thread.run(self._store.read, self.converter.known, sha)
        if converted is not None:
            return converted, "converted"
        if state == "failed":  # its encode failed before (an encoder limit): it is kept as it is
            self._check(data)
            return self._put(prepared, data, media_type, ext, width, height, sha), "as_is"
        if policy == "inline" or width * height <= INLINE_CONVERT_MAX_PIXELS:
            return self._convert(prepared, data), "converted"
        width, height = self._check(data)
        original = self._put(prepared, data, media_type, ext, width, height, sha)
        prepared.deferred.append(original)
        return original, PENDING

    def _convert(self, prepared: Prepared, data: bytes) -> Blob:
        """WebP of an image, now."""
        key = self.converter.key(hashlib.sha256(data).hexdigest())
        converted = anyio.from_thread.run(self._encode, data)
        blob = self._put(prepared, converted.data, "image/webp", "webp", converted.width, converted.height)
        self.converter.remember(key, blob)
        return blob

    def _check(self, data: bytes) -> tuple[int, int]:
        """images.verify in a worker process, not this thread (Pillow's decoders hold the GIL). The
        bytes go through a scratch file rather than the worker's pipe, which would take 2 MB in 64 KiB
        round trips, each a wake-up of both processes on a busy machine."""
        try:
            scratch = self.blobs.scratch(data)
        except OSError as exc:
            raise StorageError(f"cannot write to {self.blobs.root}: {exc.strerror}; free disk space or fix the "
                               "directory's permissions") from None
        try:
            size: tuple[int, int] = anyio.from_thread.run(functools.partial(
                anyio.to_process.run_sync, images.verify_file_in_worker, str(scratch), limiter=self._limiter))
            return size
        finally:
            scratch.unlink(missing_ok=True)

    async def _encode(self, data: bytes) -> images.Converted:
        # A worker process, not this thread: Pillow holds the GIL for parts of a conversion (tens
        # of ms per 2 MB image), which showed up in other agents' send latency.
        converted: images.Converted = await anyio.to_process.run_sync(
            images.to_webp_in_worker, data, self._settings.webp_method, self._settings.webp_quality,
            limiter=self._limiter)
        return converted

    def committed(self, prepared: Prepared | None) -> None:
        """After a send's transaction: start the conversions it deferred."""
        if prepared is not None and prepared.deferred:
            self.converter.notify()

    @staticmethod
    def _put(prepared: Prepared, data: bytes, media_type: str, ext: str, width: int | None,
             height: int | None, sha: str | None = None) -> Blob:
        sha = sha or hashlib.sha256(data).hexdigest()
        prepared.pending[sha] = data
        return Blob(sha, ext, media_type, len(data), width, height)

    # -- reading -------------------------------------------------------------------------------

    async def read_blob(self, session: Session | None, sha256: str) -> tuple[str, bytes]:
        """(media type, bytes) of a blob, for a caller who may read at least one message carrying it."""
        sha = sha256.strip().lower()
        if not SHA256.match(sha):
            raise InvalidArgument(f"{sha256!r} is not an attachment address; use the sha256 from a message's "
                                  "attachments (64 hex characters)")
        media_type, ext, slug, served = await self._store.read(
            _authorised, session, sha, self._settings.message_visibility)
        data = await anyio.to_thread.run_sync(self._load, served, ext, slug)
        return media_type, data

    def _load(self, sha: str, ext: str, slug: str) -> bytes:
        data = self.blobs.read(sha)
        if data is None and self._archive is not None:  # the blob dir was lost: the archive has a copy
            path = archive_path(slug, sha, ext)
            try:
                data = read_blobs(self._archive, [path]).get(path)
            except (ArchiveError, ValueError):
                data = None
            if data is not None and hashlib.sha256(data).hexdigest() == sha:
                self.blobs.put(data, sha)
        if data is None:
            raise NotFound(f"attachment {sha} is recorded but its bytes are missing from {self.blobs.root} and "
                           "the archive; run `mailctl doctor`", data={"sha256": sha})
        return data

    async def images_for(self, messages: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
        """(sha256, media type, bytes) of the images the given (already visible) messages carry, in order,
        capped so one read cannot balloon: MAX_IMAGES_PER_READ images, MAX_IMAGE_BYTES_PER_READ bytes."""
        wanted: dict[str, dict[str, Any]] = {}
        for message in messages:
            for meta in message.get("attachments") or []:
                if str(meta.get("media_type", "")).startswith("image/") and SHA256.match(str(meta.get("sha256", ""))):
                    wanted.setdefault(meta["sha256"], meta)
        out: list[tuple[str, str, bytes]] = []
        total = 0
        for sha, meta in list(wanted.items())[:MAX_IMAGES_PER_READ]:
            if total + int(meta.get("bytes") or 0) > MAX_IMAGE_BYTES_PER_READ:
                break
            where = ARCHIVE_FILE.match(str(meta.get("path", "")))
            if where is None:
                continue
            data = await anyio.to_thread.run_sync(self._load, sha, where["ext"], where["slug"])
            total += len(data)
            out.append((sha, meta["media_type"], data))
        return out


def _authorised(conn: Connection, session: Session | None, sha: str, mode: str) -> tuple[str, str, str, str]:
    """The blob's (media type, ext, a project slug carrying it, the sha256 to serve), if the caller
    may read one message that carries it — the message resource's own check, so the two can never
    disagree."""
    missing = NotFound(f"no attachment {sha} in a message you can read", data={"sha256": sha})
    try:
        return _authorised_blob(conn, session, sha, mode, missing)
    except NotFound:
        # An original replaced by its WebP (deferred conversion): its address keeps working and
        # answers with what the messages carry now, under the same check.
        converted = converted_from(conn, sha)
        if converted is None:
            raise
        return _authorised_blob(conn, session, converted, mode, missing)


def _authorised_blob(conn: Connection, session: Session | None, sha: str, mode: str,
                     missing: NotFound) -> tuple[str, str, str, str]:
    blob = conn.execute("SELECT media_type, ext FROM attachment_blobs WHERE sha256 = ?", (sha,)).fetchone()
    if blob is None:
        raise missing
    viewer = session.agent_id if session is not None else None
    # Messages the caller sent or received first: under MESSAGE_VISIBILITY=participants they are the
    # ones that pass, so a widely shared blob is not checked message by message.
    rows = conn.execute(
        "SELECT a.message_id, p.slug FROM attachments a JOIN projects p ON p.id = a.project_id"
        " JOIN messages m ON m.id = a.message_id WHERE a.sha256 = :s"
        " ORDER BY (m.sender_id = :v OR EXISTS (SELECT 1 FROM message_recipients r"
        "  WHERE r.message_id = a.message_id AND r.agent_id = :v)) DESC, a.message_id",
        {"s": sha, "v": viewer if viewer is not None else -1},
    )
    for message_id, slug in rows:
        try:
            _visible_message(conn, session, int(message_id), None, mode)
        except NotFound:
            continue
        return str(blob[0]), str(blob[1]), str(slug), sha
    raise missing
