"""Test helper: insert projects, agents and messages as rows, straight into the store's tables.

Search and summaries are built and tested against the store (messaging's send_message lives in
another issue). Each function is a sync unit of work `fn(conn, ...)` for `store.write`, or for a
plain apsw connection on a daemon's database file.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from maild.store.db import format_ts, utcnow

BASE = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)


def ts(minutes: float) -> str:
    """A fixed timestamp `minutes` after 2026-01-01T09:00Z (deterministic ordering in tests)."""
    return format_ts(BASE + dt.timedelta(minutes=minutes))


def insert_project(conn: Any, slug: str, human_key: str | None = None) -> int:
    project_id: int = conn.execute(
        "INSERT INTO projects(slug, human_key, created_ts) VALUES (?, ?, ?) RETURNING id",
        (slug, human_key or slug, utcnow()),
    ).get
    return project_id


def insert_agent(conn: Any, project_id: int, name: str) -> int:
    now = utcnow()
    agent_id: int = conn.execute(
        "INSERT INTO agents(project_id, name, inception_ts, last_active_ts) VALUES (?, ?, ?, ?) RETURNING id",
        (project_id, name, now, now),
    ).get
    return agent_id


def insert_message(
    conn: Any,
    project_id: int,
    sender_id: int,
    subject: str,
    body: str = "",
    *,
    to: tuple[int, ...] = (),
    cc: tuple[int, ...] = (),
    bcc: tuple[int, ...] = (),
    thread_id: str | None = None,
    importance: str = "normal",
    created_ts: str | None = None,
) -> int:
    message_id: int = conn.execute(
        "INSERT INTO messages(project_id, sender_id, thread_id, subject, body_md, importance, created_ts,"
        " attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (project_id, sender_id, thread_id, subject, body, importance, created_ts or utcnow(), json.dumps([])),
    ).get
    for kind, agents in (("to", to), ("cc", cc), ("bcc", bcc)):
        for agent_id in agents:
            conn.execute(
                "INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, ?)",
                (message_id, agent_id, kind),
            )
    if bcc and not to and not cc:  # as the send path records it (visibility: blind-only mail is private)
        conn.execute("UPDATE messages SET bcc_only = 1 WHERE id = ?", (message_id,))
    return message_id
