"""Read models and actions for the human overseer (the web mailbox): mail across projects, a
project's recent threads, any agent's inbox, ack-overdue mail, mark read, and overseer compose.

`viewer` is an agent id when the page is seen by an agent (a JWT with an agent claim) and None for
the person who owns the mailbox (login link, static bearer, trusted localhost), who may read all
mail as the CLI operator may. Agent viewers see only mail they sent or received, and only their own
inbox. Overseer mail is sent as the CLI's `HumanOperator`, so the human has one identity.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from maild.services import agents as ag
from maild.services import visibility
from maild.services.messaging import (
    MESSAGE_COLUMNS,
    Messaging,
    Outgoing,
    inbox_rows,
    message_row_dict,
    unread_count,
)
from maild.services.projects import find_in, validate_project_key
from maild.services.sessions import Session
from maild.store import Connection, Store, format_ts, utcnow
from maild.store.outbox import enqueue
from shared.errors import AuthenticationRequired, InvalidArgument, NotFound

# Upstream's overseer preamble: agents pause and put the human's instructions first.
OVERSEER_PREAMBLE = (
    "**MESSAGE FROM HUMAN OVERSEER**\n\n"
    "This message is from a human operator overseeing this project. Please prioritize the "
    "instructions below over your current tasks: pause what you are doing, read them carefully, "
    "and follow them; then resume your work if appropriate.\n\n---\n\n"
)
MAX_OVERSEER_CHARS = 50_000
THREAD_SCAN_ROWS = 300  # recent messages grouped into threads for a project page


def _listing(conn: Connection, rows: list[Any]) -> list[dict[str, Any]]:
    """Message headers with to/cc names and project slug, in three queries whatever the count."""
    if not rows:
        return []
    ids = [row[0] for row in rows]
    marks = ",".join("?" * len(ids))
    lists: dict[int, dict[str, list[str]]] = {i: {"to": [], "cc": []} for i in ids}
    for message_id, kind, name in conn.execute(
            "SELECT r.message_id, r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
            f" WHERE r.message_id IN ({marks}) AND r.kind != 'bcc' ORDER BY a.name", ids):
        lists[message_id][kind].append(name)
    projects = {row[1] for row in rows}
    slugs: dict[int, str] = {
        r[0]: r[1] for r in conn.execute(
            f"SELECT id, slug FROM projects WHERE id IN ({','.join('?' * len(projects))})", list(projects))}
    return [{**message_row_dict(row, include_body=False), **lists[row[0]], "project": slugs[row[1]]}
            for row in rows]


class Overview:
    def __init__(self, store: Store, agents: ag.Agents, messaging: Messaging, mode: str = "project") -> None:
        self._store = store
        self._mode = mode  # MESSAGE_VISIBILITY: what an agent-bound viewer may read (services/visibility.py)
        self._agents = agents
        self._messaging = messaging

    async def recent(self, viewer: int | None, limit: int = 50, project_key: str | None = None) -> list[dict[str, Any]]:
        """Newest mail across all projects (or one), as the unified inbox shows it."""

        def unit(conn: Connection) -> list[dict[str, Any]]:
            params: dict[str, Any] = {"limit": limit}
            where = visibility.clause(visibility.viewer_of(conn, viewer, self._mode), params)
            if project_key is not None:
                params["project"] = find_in(conn, validate_project_key(project_key))["id"]
                where += " AND m.project_id = :project"
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id"
                f" WHERE {where} ORDER BY m.id DESC LIMIT :limit", params).fetchall()
            return _listing(conn, rows)

        return await self._store.read(unit)

    async def threads(self, viewer: int | None, project_key: str, limit: int = 20) -> list[dict[str, Any]]:
        """A project's most recently active threads: key, subject, last message, count seen, people."""
        messages = await self.recent(viewer, THREAD_SCAN_ROWS, project_key)
        threads: dict[str, dict[str, Any]] = {}
        for m in messages:
            key = m["thread_id"] or str(m["id"])
            thread = threads.get(key)
            if thread is None:
                if len(threads) >= limit:
                    continue
                thread = threads[key] = {"thread_id": key, "last": m, "subject": m["subject"], "count": 0,
                                         "people": set()}
            thread["count"] += 1
            thread["subject"] = m["subject"]  # the oldest seen: the thread's opening subject
            thread["people"].update([m["from"], *m["to"]])
        return [{**t, "people": sorted(t["people"])} for t in threads.values()]

    async def inbox(self, viewer: int | None, agent_name: str, limit: int = 50) -> dict[str, Any]:
        """One agent's inbox: the overseer may read any; an agent viewer only its own."""

        def unit(conn: Connection) -> dict[str, Any]:
            row = ag.require_active(conn, ag.validate_name(agent_name))
            if viewer is not None and viewer != row[0]:
                raise AuthenticationRequired(
                    f"this page shows {row[1]}'s inbox, which only {row[1]} and the mailbox owner may read")
            items = inbox_rows(conn, row[0], None, limit, False, False, None)
            return {"agent": ag.agent_dict(row), "unread_count": unread_count(conn, row[0]), "messages": items}

        return await self._store.read(unit)

    async def ack_overdue(self, viewer: int | None, project_key: str, ttl_minutes: int,
                          limit: int = 200) -> list[dict[str, Any]]:
        """(message, recipient) pairs needing an ack older than `ttl_minutes`, oldest first."""
        cutoff = format_ts(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=ttl_minutes))

        def unit(conn: Connection) -> list[dict[str, Any]]:
            params: dict[str, Any] = {"cutoff": cutoff, "limit": limit}
            params["project"] = find_in(conn, validate_project_key(project_key))["id"]
            where = visibility.clause(visibility.viewer_of(conn, viewer, self._mode), params)
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS}, a.name FROM messages m JOIN agents s ON s.id = m.sender_id"
                " JOIN message_recipients r ON r.message_id = m.id JOIN agents a ON a.id = r.agent_id"
                " WHERE m.project_id = :project AND m.ack_required = 1 AND r.ack_ts IS NULL"
                f" AND m.created_ts < :cutoff AND {where} ORDER BY m.id LIMIT :limit", params).fetchall()
            return [{**message_row_dict(r, include_body=False), "recipient": r[11]} for r in rows]

        return await self._store.read(unit)

    async def mark_read(self, viewer: int | None, agent_name: str, message_ids: list[int] | None) -> int:
        """Mark the listed messages (None: all unread) read in one agent's inbox; how many changed."""

        def unit(conn: Connection) -> int:
            row = ag.require_active(conn, ag.validate_name(agent_name))
            if viewer is not None and viewer != row[0]:
                raise AuthenticationRequired(f"only {row[1]} and the mailbox owner may mark {row[1]}'s mail read")
            now = utcnow()
            sql = "UPDATE message_recipients SET read_ts = ? WHERE agent_id = ? AND read_ts IS NULL"
            params: list[Any] = [now, row[0]]
            if message_ids is not None:
                if not message_ids:
                    return 0
                sql += f" AND message_id IN ({','.join('?' * len(message_ids))})"
                params.extend(message_ids)
            changed = conn.execute(sql + " RETURNING message_id, read_ts, ack_ts", params).fetchall()
            for message_id, read_ts, ack_ts in changed:  # mirrored like mark_message_read's receipts
                enqueue(conn, "receipt", row[13], {"receipt": {
                    "message_id": message_id, "agent_id": row[0], "agent": row[1], "read_ts": read_ts,
                    "ack_ts": ack_ts}})
            return len(changed)

        return await self._store.write(unit)

    async def overseer_send(self, session: Session, project_key: str, to: list[str], subject: str,
                            body_md: str, *, everyone: bool) -> dict[str, Any]:
        """Send as HumanOperator with the overseer preamble and `high` importance."""
        key = validate_project_key(project_key)
        if not ag.is_operator(session):
            raise AuthenticationRequired("only the mailbox owner may write as the human overseer")
        if len(OVERSEER_PREAMBLE) + len(body_md) > MAX_OVERSEER_CHARS:
            raise InvalidArgument(f"the message is longer than {MAX_OVERSEER_CHARS} characters; shorten it")
        if not body_md.strip():
            raise InvalidArgument("write the instructions for the agents in the message body")
        await self._agents.register(session, key, "mailctl", "human", ag.OPERATOR_NAME, "", "auto",
                                    force_reclaim=False, token=None)
        if everyone:
            listing = await self._store.read(
                lambda conn: [r[0] for r in conn.execute(
                    "SELECT a.name FROM agents a WHERE a.project_id = ? AND a.is_active = 1 AND a.placeholder = 0",
                    (find_in(conn, key)["id"],))])
            to = sorted({*to, *(n for n in listing if not ag.is_operator_name(n))})
        if not to:
            raise InvalidArgument("choose at least one recipient, or send to all agents of the project")
        out = Outgoing(project_key=key, subject=subject, body_md=OVERSEER_PREAMBLE + body_md, to=to,
                       importance="high")
        return await self._messaging.send(session, out, None, None)

    async def message_project(self, message_id: int) -> str:
        def unit(conn: Connection) -> str:
            slug = conn.execute("SELECT p.slug FROM messages m JOIN projects p ON p.id = m.project_id"
                                " WHERE m.id = ?", (message_id,)).fetchone()
            if slug is None:
                raise NotFound(f"message {message_id} does not exist")
            return str(slug[0])

        return await self._store.read(unit)
