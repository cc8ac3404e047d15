"""The archive outbox: pending Git-archive writes recorded in the same transaction as their change.

Services call `enqueue` inside their write unit; the archiver (maild/archive) drains the table.
Because both happen in one SQLite transaction, a crash can never leave a change without its
pending archive write.
"""

from __future__ import annotations

import json
from typing import Any

from maild.store.db import Connection, utcnow


def enqueue(conn: Connection, kind: str, project_slug: str | None, payload: dict[str, Any]) -> int:
    row_id: int = conn.execute(
        "INSERT INTO archive_outbox(kind, project_slug, payload, created_ts) VALUES (?, ?, ?, ?) RETURNING id",
        (kind, project_slug, json.dumps(payload, sort_keys=True), utcnow()),
    ).get
    return row_id


def depth(conn: Connection) -> int:
    count: int = conn.execute("SELECT count(*) FROM archive_outbox").get
    return count
