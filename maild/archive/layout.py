"""The archive's folder layout version, and the move from layout 1 (flat month folders) to layout 2.

Owns the path rules of the move; not the rendering of files (formats) nor running git (committer).
The move is one commit of `R` (rename) lines, so git stores no file twice, plus deletions of what
layout 2 no longer keeps: flat thread digests (the archiver writes them anew in shard folders, from
the database) and by-pattern reservation files of released reservations. It is idempotent: paths
already in layout 2 match no rule, so a half-migrated archive (mail archived before the move) is fine.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from maild.archive import formats
from maild.archive.committer import BRANCH, ArchiveError, head_files, read_blobs

_MAIL_COPY = re.compile(
    r"^(?P<dir>projects/[^/]+/(?:messages|agents/[^/]+/(?:inbox|outbox))/\d{4}/\d{2})/(?P<name>[^/]+__(?P<id>\d+)\.md)$")
_RECEIPT = re.compile(r"^(?P<dir>projects/[^/]+/agents/[^/]+/receipts)/(?P<id>\d+)\.json$")
_RESERVATION_ID = re.compile(r"^(?P<dir>projects/[^/]+/file_reservations)/id-(?P<id>\d+)\.json$")
_FLAT_DIGEST = re.compile(r"^projects/[^/]+/messages/threads/[^/]+\.md$")
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


def plan(repo: Path) -> tuple[list[tuple[str, str]], dict[str, bytes | None]]:
    """(renames, files) that take the head from layout 1 to layout 2 (thread digests excepted)."""
    renames: list[tuple[str, str]] = []
    files: dict[str, bytes | None] = {formats.LAYOUT_FILE: formats.layout_file()}
    by_pattern: list[str] = []
    for path in head_files(repo):
        if (m := _MAIL_COPY.match(path)) is not None:
            renames.append((path, f"{m['dir']}/{formats.shard(int(m['id']))}/{m['name']}"))
        elif (m := _RECEIPT.match(path)) is not None:
            renames.append((path, f"{m['dir']}/{formats.shard(int(m['id']))}/{m['id']}.json"))
        elif (m := _RESERVATION_ID.match(path)) is not None:
            renames.append((path, f"{m['dir']}/by-id/{formats.shard(int(m['id']))}/id-{m['id']}.json"))
        elif _FLAT_DIGEST.match(path):
            files[path] = None
        elif _BY_PATTERN.match(path):
            by_pattern.append(path)
    for path, blob in read_blobs(repo, by_pattern).items():
        try:
            if json.loads(blob).get("released_ts"):
                files[path] = None  # layout 2 keeps this folder to live reservations, as guards read it
        except ValueError:
            continue  # not ours to judge: leave it
    return renames, files
