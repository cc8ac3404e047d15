"""Rebuild the database from the archive alone (`mailctl doctor --rebuild`, `maild rebuild`).

Reads the archive's current commit (projects, agent profiles, canonical message files,
reservation and build slot files), writes a fresh database beside the old one, then swaps them, keeping the old
file as `mail.sqlite3.bak-<time>` (WAL checkpointed first). Retired agents come back retired, and
mail and leases keep their original agent ids, read/ack state comes back from the receipts, and
registration tokens keep working through the salted hash each profile carries (profiles archived
before that have none: those agents re-register). Reads layout 1 and layout 2 archives alike.
Runs only while no daemon serves the root.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from maild.archive import blobs as attachment_blobs
from maild.archive import formats
from maild.archive.committer import head_files, read_blobs
from maild.store import Connection, open_store
from shared.config import Settings
from shared.errors import MailError

log = logging.getLogger(__name__)

PROJECT_FILE = re.compile(r"^projects/[^/]+/project\.json$")
PROFILE_FILE = re.compile(r"^projects/[^/]+/agents/[^/]+/profile\.json$")
PROFILE_HISTORY_FILE = re.compile(r"^projects/[^/]+/agents/[^/]+/profiles/\d+\.json$")
# Both layouts (layout 2 adds shard folders; see formats): a rebuild must read an older archive too.
RESERVATION_FILE = re.compile(
    r"^projects/(?P<slug>[^/]+)/file_reservations/(?:by-id/\d+xxx/)?(?P<by_id>id-)?[0-9a-f]+\.json$")
RECEIPT_FILE = re.compile(r"^projects/[^/]+/agents/[^/]+/receipts/(?:\d+xxx/)?\d+\.json$")
CONTACT_FILE = re.compile(r"^projects/[^/]+/agents/[^/]+/contacts/\d+\.json$")
TOMBSTONE_FILE = re.compile(r"^projects/[^/]+/deleted_agents/\d+\.json$")
BUILD_SLOT_FILE = re.compile(r"^projects/(?P<slug>[^/]+)/build_slots/[^/]+/[^/]+__[^/]+\.json$")
WANTED = (PROJECT_FILE, PROFILE_FILE, PROFILE_HISTORY_FILE, RESERVATION_FILE, RECEIPT_FILE, CONTACT_FILE,
          TOMBSTONE_FILE, BUILD_SLOT_FILE, formats.MESSAGE_FILE)

Progress = Callable[[str, int, int], None]


def collect(repo: Path) -> dict[str, list[Any]]:
    """Everything a database needs, from the archive's head. Agents and reservations are keyed by
    id: the per-id files (`profiles/<id>.json`, `id-<id>.json`) win over the by-name / by-pattern
    ones, which older archives alone have and which a reclaimed name or a reused pattern overwrote."""
    wanted = [p for p in head_files(repo) if any(rx.match(p) for rx in WANTED)]
    blobs = read_blobs(repo, wanted)
    projects: list[Any] = []
    messages: list[Any] = []
    agents: dict[int, tuple[bool, Any]] = {}
    reservations: dict[int, tuple[bool, Any]] = {}
    receipts: list[Any] = []
    contacts: list[Any] = []
    slots: list[Any] = []
    deleted: set[int] = set()
    for path, blob in sorted(blobs.items()):
        text = blob.decode()
        if PROJECT_FILE.match(path):
            projects.append(json.loads(text))
        elif PROFILE_FILE.match(path) or PROFILE_HISTORY_FILE.match(path):
            agent, exact = json.loads(text), PROFILE_HISTORY_FILE.match(path) is not None
            if exact or not agents.get(agent["id"], (False, None))[0]:
                agents[agent["id"]] = (exact, agent)
        elif (match := RESERVATION_FILE.match(path)) is not None:
            reservation, exact = {**json.loads(text), "project_slug": match["slug"]}, match["by_id"] is not None
            if exact or not reservations.get(reservation["id"], (False, None))[0]:
                reservations[reservation["id"]] = (exact, reservation)
        elif RECEIPT_FILE.match(path):
            receipts.append(json.loads(text))
        elif CONTACT_FILE.match(path):
            contacts.append(json.loads(text))
        elif TOMBSTONE_FILE.match(path):
            deleted.add(int(json.loads(text)["id"]))
        elif (match := BUILD_SLOT_FILE.match(path)) is not None:
            slots.append({**json.loads(text), "project_slug": match["slug"]})
        else:
            meta, body = formats.parse_message(text)
            messages.append({**meta, "body_md": body})
    # A hard-deleted agent stays deleted: its profile, the mail it sent, its receipts and links.
    kept_agents = [a for _, a in agents.values() if a["id"] not in deleted]
    names = {a["name"].lower(): a["id"] for a in kept_agents}

    def gone(message: dict[str, Any]) -> bool:
        ids = message.get("agent_ids") or {}
        sender = ids.get(message["from"], names.get(message["from"].lower()))
        return sender is None or sender in deleted

    return {"projects": projects, "agents": kept_agents, "messages": [m for m in messages if not gone(m)],
            "reservations": [r for _, r in reservations.values() if r.get("agent_id") not in deleted],
            "receipts": [r for r in receipts if r["agent_id"] not in deleted],
            "contacts": [c for c in contacts if not {c["from_agent_id"], c["to_agent_id"]} & deleted],
            "build_slots": [s for s in slots if s["agent_id"] not in deleted]}


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
            " contact_policy, inception_ts, last_active_ts, is_active, deleted_ts, placeholder, token_hash)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (a["id"], a["project_id"], a["name"], a.get("program", ""), a.get("model", ""),
             a.get("task_description", ""), a.get("attachments_policy", "auto"), a.get("contact_policy", "auto"),
             a["inception_ts"], a.get("last_active_ts", a["inception_ts"]), int(a["is_active"]), a.get("deleted_ts"),
             int(a.get("placeholder", False)),  # an auto-registered recipient stays claimable
             a.get("token_hash")),  # salted (formats.salted_token_hash): agents keep their tokens
        )
        if a["is_active"] or a["name"].lower() not in names:
            names[a["name"].lower()] = a["id"]

    def agent_id(name: str, ids: dict[str, int] | None) -> int:
        # Archives written before ids were recorded only have names: the active holder is the best guess.
        return ids[name] if ids and name in ids else names[name.lower()]

    kept = {a["id"] for a in found["agents"]}
    messages = sorted(found["messages"], key=lambda m: m["id"])
    for index, m in enumerate(messages, 1):
        ids = m.get("agent_ids")
        conn.execute(
            "INSERT INTO messages(id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required,"
            " created_ts, attachments) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (m["id"], projects[m["project_slug"]], agent_id(m["from"], ids), m["thread_id"], m["subject"],
             m["body_md"], m["importance"], int(m["ack_required"]), m["created"], json.dumps(m["attachments"])),
        )
        found_blobs, links = attachment_blobs.link_rows(m, projects[m["project_slug"]], m["created"])
        conn.executemany("INSERT OR IGNORE INTO attachment_blobs(sha256, ext, media_type, bytes, width, height,"
                         " created_ts) VALUES (?,?,?,?,?,?,?)", found_blobs)
        conn.executemany("INSERT OR IGNORE INTO attachments(message_id, sha256, project_id) VALUES (?,?,?)", links)
        conn.executemany("INSERT OR IGNORE INTO attachment_conversions(original_sha256, original_ext,"
                         " original_media_type, method, quality, status, created_ts, updated_ts)"
                         " VALUES (?,?,?,?,?,'pending',?,?)",
                         attachment_blobs.pending_rows(m, m["created"]))
        for kind in ("to", "cc", "bcc"):
            for name in m[kind]:
                recipient = (ids or {}).get(name, names.get(name.lower()))
                if recipient not in kept:
                    continue  # a recipient that was hard-deleted since
                conn.execute(
                    "INSERT OR IGNORE INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, ?)",
                    (m["id"], recipient, kind),
                )
        conn.execute("UPDATE messages SET topic = ?, bcc_only = ? WHERE id = ?",
                     (m.get("topic"), int(not m["to"] and not m["cc"]), m["id"]))
        for name in m.get("mentions", []):
            if name.lower() in names:
                conn.execute("INSERT OR IGNORE INTO message_mentions(agent_id, message_id) VALUES (?, ?)",
                             (names[name.lower()], m["id"]))
        if index % 1000 == 0 or index == len(messages):
            progress("messages", index, len(messages))
    for r in sorted(found["reservations"], key=lambda r: r["id"]):
        conn.execute(
            "INSERT INTO file_reservations(id, project_id, agent_id, path_pattern, exclusive, reason, created_ts,"
            " expires_ts, released_ts) VALUES (?,?,?,?,?,?,?,?,?)",
            (r["id"], projects[r["project_slug"]], r.get("agent_id") or names[r["agent"].lower()], r["path_pattern"],
             int(r["exclusive"]), r.get("reason", ""), r["created_ts"], r["expires_ts"], r.get("released_ts")),
        )
    conn.executemany(
        "UPDATE message_recipients SET read_ts = ?, ack_ts = ? WHERE message_id = ? AND agent_id = ?",
        [(r["read_ts"], r["ack_ts"], r["message_id"], r["agent_id"]) for r in found["receipts"]],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO contacts(from_agent_id, to_agent_id, status, reason, created_ts, updated_ts,"
        " expires_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(c["from_agent_id"], c["to_agent_id"], c["status"], c.get("reason", ""), c["created_ts"], c["updated_ts"],
          c.get("expires_ts")) for c in found["contacts"]],
    )
    conn.executemany(
        "INSERT INTO build_slots(project_id, slot, agent_id, branch, exclusive, acquired_ts, expires_ts, released_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(projects[s["project_slug"]], s["slot"], s["agent_id"], s["branch"], int(s["exclusive"]), s["acquired_ts"],
          s["expires_ts"], s.get("released_ts")) for s in found["build_slots"] if s["agent_id"] in kept],
    )
    conn.execute("DELETE FROM archive_outbox")  # the archive already holds everything just read
    return {key: len(value) for key, value in found.items()}


def rebuild(db: Path, repo: Path, settings: Settings, progress: Progress, blobs: Path | None = None) -> dict[str, Any]:
    """Build a fresh database from the archive beside `db`, then swap it in (keeping a backup).
    With `blobs`, attachment files missing from that store are copied back from the archive."""
    found = collect(repo)
    restored = attachment_blobs.restore_from_archive(repo, attachment_blobs.BlobStore(blobs)) if blobs else 0
    fresh = db.with_name(db.name + ".rebuilding")
    for stale in (fresh, fresh.with_name(fresh.name + "-wal"), fresh.with_name(fresh.name + "-shm")):
        stale.unlink(missing_ok=True)

    async def build() -> dict[str, int]:
        async with open_store(fresh, settings) as store:
            return await store.write(_insert_all, found, progress)

    counts = anyio.run(build)
    backup = _set_aside(db, settings)
    fresh.rename(db)
    return {"rebuilt": {**counts, "attachment_files_restored": restored}, "database": str(db),
            "previous_database": str(backup) if backup else None}


def _set_aside(db: Path, settings: Settings) -> Path | None:
    """Move the old database out of the way *with* its committed WAL content: after an unclean
    death the newest transactions live only in `-wal`, so checkpoint it in (opening and closing the
    store does that) or, if the old file cannot be opened, keep its `-wal` beside the backup."""
    if not db.exists():
        return None

    async def checkpoint() -> None:
        async with open_store(db, settings):
            pass

    try:
        anyio.run(checkpoint)
    except MailError as exc:  # a damaged database is a reason to rebuild; keep its WAL as it is
        log.warning("could not checkpoint the old database before the rebuild (%s); keeping its -wal", exc.message)
    backup = db.with_name(f"{db.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
    db.rename(backup)
    wal = db.with_name(db.name + "-wal")
    if wal.exists():
        wal.rename(backup.with_name(backup.name + "-wal"))  # SQLite replays it when the backup is opened
    db.with_name(db.name + "-shm").unlink(missing_ok=True)
    return backup
