"""Mail to many: broadcast (`broadcast=true` or the address `all`) and `@Name` mentions.

Broadcast expands, inside the send's transaction, to every active agent of the project except
the sender, placeholders, and agents whose contact policy is `block_all`, most recently active
first, capped at BROADCAST_MAX_RECIPIENTS (`truncated` says so). `all` is a reserved name: no agent
can ever be called that. A mention of a project agent who is not a recipient records a
`message_mentions` row: fetch_inbox shows the message with `source: "mention"`; it is never a
delivery (no unread count, no read/ack state) and never comes from bcc-only mail.
"""

from __future__ import annotations

import re
from typing import Any

from maild.services import agents as ag
from maild.services import names
from maild.store import Connection
from shared.errors import InvalidArgument

BROADCAST_ADDRESS = "all"
MAX_MENTIONS = 32
# `@Name` not preceded by a word character, dot or @ (so e-mail addresses are not mentions).
MENTION = re.compile(r"(?<![\w.@])@(?P<name>[A-Za-z][\w-]{0,63})")


def is_reserved(name: str) -> bool:
    """Names no agent may take: `all` addresses everyone."""
    return names.is_reserved(name)


def split_broadcast(addresses: list[str]) -> tuple[list[str], bool]:
    """The addresses without `all`, and whether `all` was among them."""
    kept = [a for a in addresses if not is_reserved(a)]
    return kept, len(kept) != len(addresses)


def broadcast_targets(conn: Connection, project_id: int, sender_id: int, cap: int) -> tuple[list[Any], bool]:
    """(agent rows, truncated) for a broadcast from `sender_id` in a project."""
    rows = conn.execute(
        f"SELECT {ag.AGENT_COLUMNS} FROM {ag.AGENT_FROM} WHERE a.project_id = ? AND a.is_active = 1"
        " AND a.placeholder = 0 AND a.contact_policy != 'block_all' AND a.id != ?"
        " ORDER BY a.last_active_ts DESC, a.id LIMIT ?",
        (project_id, sender_id, cap + 1),
    ).fetchall()
    return rows[:cap], len(rows) > cap


def check_broadcast(broadcast: bool, to: list[str]) -> None:
    if broadcast and to:
        raise InvalidArgument(
            "broadcast=true sends to every agent of the project: leave `to` empty (or address `all`)",
            data={"parameter": "to"},
        )


def mentioned_names(body: str) -> list[str]:
    """Distinct `@Name`s of a body (first MAX_MENTIONS), in order of appearance."""
    found: dict[str, str] = {}
    for match in MENTION.finditer(body):
        found.setdefault(names.lookup_key(match["name"]), match["name"])
        if len(found) >= MAX_MENTIONS:
            break
    return list(found.values())


def record_mentions(
    conn: Connection, message_id: int, project_id: int, body: str, exclude: set[int]
) -> list[str]:
    """Mention rows for the project's active agents named in `body` who are not in `exclude`
    (the sender and the recipients); returns their names."""
    recorded = []
    for name in mentioned_names(body):
        if is_reserved(name):
            continue
        row = ag.find_active(conn, name)
        if row is None or row[7] != project_id or row[0] in exclude:
            continue
        conn.execute("INSERT OR IGNORE INTO message_mentions(agent_id, message_id) VALUES (?, ?)", (row[0], message_id))
        exclude.add(row[0])
        recorded.append(row[1])
    return recorded
