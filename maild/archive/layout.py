"""The archive's folder layout version, and the move to layout 3 from layout 1 (flat month folders)
or layout 2 (shard folders of 1,000 ids, not yet split in 100s).

Owns the path rules of the move; not the rendering of files (formats) nor running git (committer).
The move is one commit of `R` (rename) lines, so git stores no file twice, plus deletions of what
layout 3 no longer keeps: thread digests of an older layout (the archiver writes them anew in shard
folders, from the database: a digest's shard comes from its thread's first message, which its path
does not say) and layout 1's by-pattern reservation files of released reservations. It is
idempotent: a path already where layout 3 puts it is left alone, so a half-migrated archive (mail
archived before the move) is fine.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from maild.archive import formats
from maild.archive.committer import BRANCH, ArchiveError, head_files, read_blobs

_ANY = formats.SHARD_FOLDERS  # no shard folder (layout 1), one (layout 2) or two (layout 3)
_MAIL_COPY = re.compile(
    rf"^(?P<dir>projects/[^/]+/(?:messages|agents/[^/]+/(?:inbox|outbox))/\d{{4}}/\d{{2}})/{_ANY}"
    r"(?P<name>[^/]+__(?P<id>\d+)\.md)$")
_RECEIPT = re.compile(rf"^(?P<dir>projects/[^/]+/agents/[^/]+/receipts)/{_ANY}(?P<id>\d+)\.json$")
_RESERVATION_ID = re.compile(rf"^(?P<dir>projects/[^/]+/file_reservations)/(?:by-id/{_ANY})?id-(?P<id>\d+)\.json$")
_DIGEST = re.compile(r"^projects/[^/]+/messages/threads/.+\.md$")
_BY_PATTERN = re.compile(r"^projects/[^/]+/file_reservations/[0-9a-f]{40}\.json$")


def current(repo: Path) -> int | None:
    """The layout of the archive's head: None when nothing is committed yet, 1 without `layout.json`."""
    if not (repo / "HEAD").exists():
        return None
    try:
        done = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "-p", f"{BRANCH}:{formats.LAYOUT_FILE}"],
                              capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            has_head = subprocess.run(["git", "--git-dir", str(repo), "rev-parse", "--verify", "-q", BRANCH],
                                      capture_output=True, text=True, check=False, timeout=60)
            return 1 if has_head.returncode == 0 else None
        return int(json.loads(done.stdout)["layout"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        raise ArchiveError(f"cannot read the archive's layout at {repo}: {exc}") from None


def _layout_3_path(path: str) -> str | None:
    """Where layout 3 keeps a message copy, receipt or reservation file; None for any other file."""
    if (m := _MAIL_COPY.match(path)) is not None:
        return f"{m['dir']}/{formats.shard(int(m['id']))}/{m['name']}"
    if (m := _RECEIPT.match(path)) is not None:
        return f"{m['dir']}/{formats.shard(int(m['id']))}/{m['id']}.json"
    if (m := _RESERVATION_ID.match(path)) is not None:
        return f"{m['dir']}/by-id/{formats.shard(int(m['id']))}/id-{m['id']}.json"
    return None


def plan(repo: Path) -> tuple[list[tuple[str, str]], dict[str, bytes | None]]:
    """(renames, files) that take the head to layout 3. Every thread digest is deleted: the caller
    writes them anew from the database (a digest written anew replaces its deletion in `files`)."""
    renames: list[tuple[str, str]] = []
    files: dict[str, bytes | None] = {formats.LAYOUT_FILE: formats.layout_file()}
    by_pattern: list[str] = []
    for path in head_files(repo):
        if (target := _layout_3_path(path)) is not None:
            if target != path:
                renames.append((path, target))
        elif _DIGEST.match(path):
            files[path] = None
        elif _BY_PATTERN.match(path):
            by_pattern.append(path)
    for path, blob in read_blobs(repo, by_pattern).items():
        try:
            if json.loads(blob).get("released_ts"):
                files[path] = None  # layout 2 on keeps this folder to live reservations, as guards read it
        except ValueError:
            continue  # not ours to judge: leave it
    return renames, files
