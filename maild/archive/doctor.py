"""`archive_doctor`: compare the database with the archive, report the outbox lag, repair safely.

Safe repair (`fix=true`) re-queues archive writes for messages the archive lacks; files the
database lacks are only reported (rebuilding the database from the archive is `--rebuild`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import anyio

from maild.archive import formats
from maild.archive.committer import head_files
from maild.store import Connection, Store
from maild.store.outbox import enqueue


def _db_state(conn: Connection) -> dict[str, Any]:
    messages = conn.execute("SELECT m.id, p.slug FROM messages m JOIN projects p ON p.id = m.project_id").fetchall()
    pending = {
        int(row[0]) for row in conn.execute(
            "SELECT json_extract(payload, '$.message.id') FROM archive_outbox WHERE kind = 'message'"
        )
    }
    oldest, depth = conn.execute("SELECT min(created_ts), count(*) FROM archive_outbox").fetchall()[0]
    return {"messages": messages, "pending": pending, "oldest": oldest, "depth": depth}


def requeue_messages(conn: Connection, ids: list[int]) -> int:
    """Queue the archive write of each message again, from its database row (a message the archive
    lacks, or one whose attachments changed after a deferred image conversion)."""
    for message_id in ids:
        row = conn.execute(
            "SELECT m.id, m.project_id, m.sender_id, m.thread_id, m.subject, m.body_md, m.importance,"
            " m.ack_required, m.created_ts, m.attachments, s.name, p.slug, m.topic FROM messages m"
            " JOIN agents s ON s.id = m.sender_id JOIN projects p ON p.id = m.project_id WHERE m.id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            continue
        lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
        for kind, name in conn.execute(
            "SELECT r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
            " WHERE r.message_id = ? ORDER BY a.name", (message_id,)
        ):
            lists[kind].append(name)
        mentions = [str(name) for (name,) in conn.execute(
            "SELECT a.name FROM message_mentions x JOIN agents a ON a.id = x.agent_id WHERE x.message_id = ?"
            " ORDER BY a.name", (message_id,))]
        payload = {"id": row[0], "project_id": row[1], "sender_id": row[2], "thread_id": row[3], "subject": row[4],
                   "body_md": row[5], "importance": row[6], "ack_required": bool(row[7]), "created_ts": row[8],
                   "attachments": json.loads(row[9]), "from": row[10], "project_slug": row[11], **lists,
                   **({"topic": row[12]} if row[12] else {}), **({"mentions": mentions} if mentions else {})}
        enqueue(conn, "message", row[11], {"message": payload})
    return len(ids)


async def diagnose(store: Store, repo: Path, *, fix: bool) -> dict[str, Any]:
    state = await store.read(_db_state)
    files = await anyio.to_thread.run_sync(head_files, repo)
    archived: dict[int, str] = {}
    for path in files:
        match = formats.MESSAGE_FILE.match(path)
        if match:
            archived[int(match["id"])] = match["slug"]
    in_db = {int(mid): slug for mid, slug in state["messages"]}
    missing = sorted(set(in_db) - set(archived) - state["pending"])
    extra = sorted(set(archived) - set(in_db))
    per_project: dict[str, dict[str, int]] = {}
    for slug in in_db.values():
        per_project.setdefault(slug, {"db": 0, "archive": 0})["db"] += 1
    for slug in archived.values():
        per_project.setdefault(slug, {"db": 0, "archive": 0})["archive"] += 1
    lag = None
    if state["oldest"]:
        oldest = dt.datetime.fromisoformat(state["oldest"].replace("Z", "+00:00"))
        lag = round((dt.datetime.now(dt.UTC) - oldest).total_seconds(), 3)
    requeued = await store.write(requeue_messages, missing) if fix and missing else 0
    return {
        "ok": not missing and not extra,
        "projects": per_project,
        "messages_missing_in_archive": missing[:100],
        "missing_count": len(missing),
        "files_without_db_row": extra[:100],
        "extra_count": len(extra),
        "outbox": {"depth": state["depth"], "oldest_lag_seconds": lag, "pending_messages": len(state["pending"])},
        "fixed": {"requeued_messages": requeued},
    }
