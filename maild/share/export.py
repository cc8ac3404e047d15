"""The export pipeline: snapshot -> scope -> scrub -> attachments -> viewer -> chunking -> manifest.

Reads the live database only through a backup-API snapshot (store/snapshot.py) and attachment bytes
only from the content-addressed blob store, so it can run beside a busy daemon. Each step reports
through `progress(step)` (the CLI shows it with rich on a terminal). Writing the manifest, signing
and the zip are in bundle.py; the viewer's pages and search index are in viewer.py.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maild.archive.blobs import BlobStore
from maild.share import bundle, scrub, viewer
from maild.share.output import Output
from maild.store.snapshot import Snapshot, take_snapshot
from shared.errors import InvalidArgument
from shared.paths import MailboxPaths

DB_NAME = "mailbox.sqlite3"
STEPS = ("snapshot", "scope", "scrub", "attachments", "viewer", "database", "manifest")
Progress = Callable[[str], None]


@dataclasses.dataclass
class ExportConfig:
    """Everything that decides a bundle's content; stored in its manifest so `update` can replay it."""

    projects: list[str] = dataclasses.field(default_factory=list)
    scrub_preset: str = "standard"
    inline_threshold: int = 64 * 1024
    detach_threshold: int = 25 * 1024 * 1024
    chunk_threshold: int = 20 * 1024 * 1024
    chunk_size: int = 4 * 1024 * 1024

    def check(self) -> ExportConfig:
        scrub.check_preset(self.scrub_preset)
        if self.chunk_size <= 0:
            raise InvalidArgument("--chunk-size must be positive (bytes per chunk, e.g. 4194304)")
        if self.inline_threshold < 0 or self.detach_threshold <= self.inline_threshold:
            raise InvalidArgument("--detach-threshold must be larger than --inline-threshold (both bytes)")
        return self

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExportConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names}).check()


def export(paths: MailboxPaths, out: Path, config: ExportConfig, progress: Progress = lambda _s: None,
           previous: dict[str, str] | None = None) -> dict[str, Any]:
    """Write a bundle directory at `out` (created or emptied, `.git` kept); return its manifest.

    With `previous` (the old manifest's files), update the bundle at `out` in place instead: files
    whose bytes are already right are left alone, thread pages are re-rendered only when their
    messages changed, and files the new bundle does not hold are pruned (a stale signature too)."""
    config.check()
    if previous is None:
        bundle.prepare_dir(out)
    output = Output(out, previous)
    with tempfile.TemporaryDirectory(prefix="mail-share-") as work:
        snap_path = Path(work) / DB_NAME
        progress("snapshot")
        take_snapshot(paths.db, snap_path)
        snap = Snapshot(snap_path)
        try:
            progress("scope")
            scope = snap.scope(config.projects) if config.projects else [p["slug"] for p in snap.projects()]
            progress("scrub")
            scrub_summary = _scrub(snap, config.scrub_preset)
            progress("attachments")
            attachment_stats, placements = _attachments(snap, BlobStore(paths.blobs), output, config)
            progress("viewer")
            viewer_info = viewer.write(snap, output, placements)
            snap.finalise()
        finally:
            snap.close()
        progress("database")
        database = bundle.place_database(snap_path, output, DB_NAME, config.chunk_threshold, config.chunk_size)
    progress("manifest")
    manifest = {
        "project_scope": scope,
        "scrub": scrub_summary,
        "attachments": attachment_stats,
        "database": database,
        "viewer": viewer_info,
        "export_config": dataclasses.asdict(config),
    }
    manifest = bundle.write_manifest(out, manifest, output)
    if previous is not None:
        manifest["update"] = {"written": output.written, "unchanged": output.unchanged,
                              "pruned": output.prune(bundle.UNLISTED - {bundle.SIGNATURE})}
    return manifest


def _scrub(snap: Snapshot, preset: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"preset": preset, "secrets_redacted": 0, "bodies_redacted": 0,
                               "attachments_dropped": 0}
    if preset == "archive":
        return summary
    summary.update(snap.clear_private_state())
    changes = []
    for row in snap.messages():
        atts = json.loads(row["attachments"] or "[]")
        subject, body, kept, found = scrub.scrub_message(preset, row["subject"], row["body_md"], atts)
        summary["secrets_redacted"] += found
        if preset == "strict":
            summary["bodies_redacted"] += 1
        if (subject, body, kept) != (row["subject"], row["body_md"], atts):
            changes.append((row["id"], subject, body, kept))
    snap.rewrite_messages(changes)
    agents = []
    for agent in snap.agents():
        text, found = scrub.redact(agent["task_description"] or "")
        if found:
            summary["secrets_redacted"] += found
            agents.append((agent["id"], text))
    snap.rewrite_task_descriptions(agents)
    if preset == "strict":
        summary["attachments_dropped"] = snap.drop_attachments()
    return summary


def _attachments(snap: Snapshot, blobs: BlobStore, out: Output, config: ExportConfig
                 ) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Decide each blob's place in the bundle (inline, copied, external or missing), once per sha256.
    The database is left as scrubbed: placements go to the viewer, counts to the manifest."""
    stats = {"inline": 0, "copied": 0, "externalized": 0, "missing": 0, "bytes_copied": 0}
    placements: dict[str, dict[str, Any]] = {}
    for row in snap.messages():
        for meta in json.loads(row["attachments"] or "[]"):
            key = meta.get("sha256")
            if isinstance(key, str) and key not in placements:
                placements[key] = _place(meta, blobs, out, config, stats)
    return stats, placements


def _place(meta: dict[str, Any], blobs: BlobStore, out: Output, config: ExportConfig, stats: dict[str, int]
           ) -> dict[str, Any]:
    sha = str(meta["sha256"])
    if not blobs.has(sha):
        stats["missing"] += 1
        return {"mode": "missing"}
    source = blobs.path(sha)
    size = source.stat().st_size
    media = str(meta.get("media_type") or "application/octet-stream")
    if size >= config.detach_threshold:
        stats["externalized"] += 1
        return {"mode": "external", "sha256": sha, "bytes": size}
    if size <= config.inline_threshold:
        stats["inline"] += 1
        data = base64.b64encode(source.read_bytes()).decode()
        return {"mode": "inline", "sha256": sha, "bytes": size, "data_uri": f"data:{media};base64,{data}"}
    ext = Path(str(meta.get("path") or "")).suffix or ".bin"
    rel = f"attachments/{sha[:2]}/{sha}{ext}"
    out.copy(rel, source, sha)
    stats["copied"] += 1
    stats["bytes_copied"] += size
    return {"mode": "copied", "sha256": sha, "bytes": size, "path": rel}
