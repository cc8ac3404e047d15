"""Idempotent sends: a client-chosen key makes a retried send_message/reply_message a no-op.

A client that lost the answer to a send (daemon killed, connection dropped) cannot know whether
it was committed; retrying with the same `idempotency_key` returns the first send's result instead
of sending a duplicate. Keys are scoped to (project, sender) and kept for `KEY_TTL_SECONDS`. This
module owns the `send_keys` table only; the send itself stays in messaging.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from maild.store import Connection, format_ts, utcnow
from shared.errors import InvalidArgument

MAX_KEY_CHARS = 128
# Long enough for any retry loop (a shim reconnecting, an editor retrying after a restart).
KEY_TTL_SECONDS = 24 * 3600


def validate_key(key: object) -> str | None:
    if key is None or key == "":
        return None
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise InvalidArgument(
            f"idempotency_key must be printable text of at most {MAX_KEY_CHARS} characters, "
            "e.g. a UUID chosen once per message and reused for its retries"
        )
    return key


def request_hash(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def once(
    conn: Connection,
    project_id: int,
    sender_id: int,
    key: str | None,
    fields: dict[str, Any],
    send: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run `send()` unless this key was used before (then return that result); inside the caller's
    write transaction, so the message and its key commit together or not at all."""
    if key is None:
        return send()
    digest = request_hash(fields)
    row = conn.execute(
        "SELECT request_hash, result FROM send_keys WHERE project_id = ? AND sender_id = ? AND key = ?",
        (project_id, sender_id, key),
    ).fetchone()
    if row is not None:
        if row[0] != digest:
            raise InvalidArgument(
                f"idempotency_key {key!r} was already used for a different message; "
                "use a fresh key for each new message (reuse it only to retry the same one)",
                data={"idempotency_key": key},
            )
        result: dict[str, Any] = json.loads(row[1])
        return result
    result = send()
    now = dt.datetime.now(dt.UTC)
    conn.execute(
        "INSERT INTO send_keys(project_id, sender_id, key, request_hash, result, created_ts)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (project_id, sender_id, key, digest, json.dumps(result, separators=(",", ":")), utcnow()),
    )
    cutoff = format_ts(now - dt.timedelta(seconds=KEY_TTL_SECONDS))
    conn.execute("DELETE FROM send_keys WHERE created_ts < ?", (cutoff,))
    return result
