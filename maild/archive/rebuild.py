"""Rebuild the database from the archive alone (`mailctl doctor --rebuild`, `maild rebuild`).

Reads the archive's current commit (projects, agent profiles, canonical message files,
reservation files), writes a fresh database beside the old one, then swaps them, keeping the old
file as `mail.sqlite3.bak-<time>`. What the archive does not hold cannot come back: read/ack
state (every message is unread again) and registration tokens (agents re-register, and
`force_reclaim` or their own session binds them again). Runs only while no daemon serves the root.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from maild.archive import formats
from maild.archive.committer import head_files, read_blobs
from maild.store import Connection, open_store
from shared.config import Settings

PROJECT_FILE = re.compile(r"^projects/[^/]+/project\.json$")
PROFILE_FILE = re.compile(r"^projects/[^/]+/agents/[^/]+/profile\.json$")
RESERVATION_FILE = re.compile(r"^projects/(?P<slug>[^/]+)/file_reservations/[0-9a-f]+\.json$")

Progress = Callable[[str, int, int], None]


def collect(repo: Path) -> dict[str, list[Any]]:
    paths = head_files(repo)
    wanted = [p for p in paths if PROJECT_FILE.match(p) or PROFILE_FILE.match(p)
              or formats.MESSAGE_FILE.match(p) or RESERVATION_FILE.match(p)]
    blobs = read_blobs(repo, wanted)
    found: dict[str, list[Any]] = {"projects": [], "agents": [], "messages": [], "reservations": []}
    for path, blob in blobs.items():
        text = blob.decode()
        if PROJECT_FILE.match(path):
            found["projects"].append(json.loads(text))
        elif PROFILE_FILE.match(path):
            found["agents"].append(json.loads(text))
        elif (match := RESERVATION_FILE.match(path)) is not None:
            found["reservations"].append({**json.loads(text), "project_slug": match["slug"]})
        else:
            meta, body = formats.parse_message(text)
            found["messages"].append({**meta, "body_md": body})
    return found


def _insert_all(conn: Connection, found: dict[str, list[Any]], progress: Progress) -> dict[str, int]:
    projects = {}
    for p in sorted(found["projects"], key=lambda p: p["id"]):
        conn.execute("INSERT INTO projects(id, slug, human_key, created_ts) VALUES (?, ?, ?, ?)",
                     (p["id"], p["slug"], p["human_key"], p["created_at"]))
        projects[p["slug"]] = p["id"]
    names: dict[str, int] = {}
    for a in sorted(found["agents"], key=lambda a: a["id"]):
        conn.execute(
            "INSERT INTO agents(id, project_id, name, program, model, task_description, attachments_policy,"
            " contact_policy, inception_ts, last_active_ts, is_active, deleted_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (a["id"], a["project_id"], a["name"], a["program"], a["model"], a["task_description"],
             a["attachments_policy"], a["contact_policy"], a["inception_ts"], a["last_active_ts"],
             int(a["is_active"]), a["deleted_ts"]),
        )
        if a["is_active"] or a["name"].lower() not in names:
            names[a["name"].lower()] = a["id"]
    messages = sorted(found["messages"], key=lambda m: m["id"])
    for index, m in enumerate(messages, 1):
        conn.execute(
            "INSERT INTO messages(id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required,"
            " created_ts, attachments) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (m["id"], projects[m["project_slug"]], names[m["from"].lower()], m["thread_id"], m["subject"],
             m["body_md"], m["importance"], int(m["ack_required"]), m["created"], json.dumps(m["attachments"])),
        )
        for kind in ("to", "cc", "bcc"):
            for name in m[kind]:
                conn.execute(
                    "INSERT OR IGNORE INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, ?)",
                    (m["id"], names[name.lower()], kind),
                )
        if index % 1000 == 0 or index == len(messages):
            progress("messages", index, len(messages))
    for r in found["reservations"]:
        conn.execute(
            "INSERT INTO file_reservations(id, project_id, agent_id, path_pattern, exclusive, reason, created_ts,"
            " expires_ts, released_ts) VALUES (?,?,?,?,?,?,?,?,?)",
            (r["id"], projects[r["project_slug"]], names[r["agent"].lower()], r["path_pattern"],
             int(r["exclusive"]), r.get("reason", ""), r["created_ts"], r["expires_ts"], r.get("released_ts")),
        )
    conn.execute("DELETE FROM archive_outbox")  # the archive already holds everything just read
    return {key: len(value) for key, value in found.items()}


def rebuild(db: Path, repo: Path, settings: Settings, progress: Progress) -> dict[str, Any]:
    """Build a fresh database from the archive beside `db`, then swap it in (keeping a backup)."""
    found = collect(repo)
    fresh = db.with_name(db.name + ".rebuilding")
    for stale in (fresh, fresh.with_name(fresh.name + "-wal"), fresh.with_name(fresh.name + "-shm")):
        stale.unlink(missing_ok=True)

    async def build() -> dict[str, int]:
        async with open_store(fresh, settings) as store:
            return await store.write(_insert_all, found, progress)

    counts = anyio.run(build)
    backup = None
    if db.exists():
        backup = db.with_name(f"{db.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
        db.rename(backup)
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
    fresh.rename(db)
    return {"rebuilt": counts, "database": str(db), "previous_database": str(backup) if backup else None}
