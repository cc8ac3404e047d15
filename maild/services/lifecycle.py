"""Agent lifecycle: retire, unretire, deregister, hard delete, and the optional auto-retire sweep.

A retired agent keeps its mail and history, cannot act (acting_agent refuses it), is skipped by
broadcast and by name resolution, and its leases are released and archived. Its name is free for
someone else; unretire takes it back if it still is. Deregister keeps the agent but blocks all
mail to it (contact policy `block_all`). Hard delete removes the agent, the mail it sent and its
receipts, leases, links and mentions from the database, and leaves a tombstone in the archive.
Who may do it: the agent itself (its session or token) or the operator (mailctl).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from maild.services import agents as ag
from maild.services import names
from maild.services.build_slots import with_slots
from maild.services.projects import find_in, validate_project_key
from maild.services.reservations import release_all_of_agent
from maild.services.sessions import Session
from maild.store import Connection, IntegrityError, Store, format_ts, utcnow
from maild.store.outbox import enqueue
from shared.errors import AuthenticationRequired, InvalidArgument, NameTaken, NotFound

CONFIRMATION = "I UNDERSTAND"


def _target(conn: Connection, session: Session | None, project: dict[str, Any], name: str | None,
            token: str | None) -> Any:
    """The active agent to act on: any one for the operator, else the caller's own (session or token)."""
    if ag.is_operator(session) and name:
        return ag.require_active(conn, name, project)
    row = ag.acting_agent(conn, session, name, token)
    if row[7] != project["id"]:
        raise NotFound(f"{row[1]} is not an agent of project {project['slug']!r}", data={"agent_name": row[1]})
    return row


def _retired(conn: Connection, project: dict[str, Any], name: str) -> Any:
    row = conn.execute(
        f"SELECT {ag.AGENT_COLUMNS} FROM {ag.AGENT_FROM} WHERE lower(a.name) = ? AND a.project_id = ?"
        " AND a.is_active = 0 ORDER BY a.deleted_ts DESC, a.id DESC LIMIT 1",
        (names.lookup_key(name), project["id"]),
    ).fetchone()
    if row is None:
        raise NotFound(f"no retired agent named {name!r} in project {project['slug']!r}",
                       data={"agent_name": name})
    return row


def retire_in(conn: Connection, session: Session | None, project_key: str, name: str | None,
              token: str | None) -> dict[str, Any]:
    project = find_in(conn, project_key)
    row = _target(conn, session, project, name, token)
    now = utcnow()
    released = ag.retire_in(conn, row, now, with_slots(release_all_of_agent))
    return {"status": "retired", "agent_name": row[1], "retired_ts": now, "released_reservations": released}


def unretire_in(conn: Connection, session: Session | None, project_key: str, name: str,
                token: str | None) -> dict[str, Any]:
    project = find_in(conn, project_key)
    row = _retired(conn, project, name)
    if not (ag.is_operator(session) or ag.token_matches(conn, row[0], token)):
        raise AuthenticationRequired(
            f"unretiring {row[1]} needs its registration_token (or mailctl agents unretire {row[1]})",
            data={"agent_name": row[1], "parameter": "registration_token"},
        )
    try:
        conn.execute("UPDATE agents SET is_active = 1, deleted_ts = NULL, last_active_ts = ? WHERE id = ?",
                     (utcnow(), row[0]))
    except IntegrityError:
        raise NameTaken(f"the name {row[1]} now belongs to another active agent; it cannot be unretired",
                        data={"name": row[1]}) from None
    enqueue(conn, "agent", row[13], {"agent": ag.agent_dict(ag.get_by_id(conn, row[0]))})
    return {"status": "active", "agent_name": row[1]}


def deregister_in(conn: Connection, session: Session | None, project_key: str, name: str | None,
                  token: str | None) -> dict[str, Any]:
    project = find_in(conn, project_key)
    row = _target(conn, session, project, name, token)
    now = utcnow()
    task = row[4] if row[4].startswith("[DEREGISTERED") else f"[DEREGISTERED at {now}] {row[4]}"[:2048]
    conn.execute("UPDATE agents SET contact_policy = 'block_all', task_description = ? WHERE id = ?", (task, row[0]))
    enqueue(conn, "agent", row[13], {"agent": ag.agent_dict(ag.get_by_id(conn, row[0]))})
    return {"status": "deregistered", "agent_name": row[1], "project_key": project["human_key"]}


def hard_delete_in(conn: Connection, session: Session | None, project_key: str, name: str,
                   token: str | None) -> dict[str, Any]:
    project = find_in(conn, project_key)
    row = conn.execute(
        f"SELECT {ag.AGENT_COLUMNS} FROM {ag.AGENT_FROM} WHERE lower(a.name) = ? AND a.project_id = ?"
        " ORDER BY a.is_active DESC, a.id DESC LIMIT 1", (names.lookup_key(name), project["id"]),
    ).fetchone()
    if row is None:
        raise NotFound(f"no agent named {name!r} in project {project['slug']!r}", data={"agent_name": name})
    if not (ag.is_operator(session) or ag.token_matches(conn, row[0], token)
            or (session is not None and session.agent_id == row[0])):
        raise AuthenticationRequired(f"deleting {row[1]} needs its registration_token (or mailctl)",
                                     data={"agent_name": row[1], "parameter": "registration_token"})
    agent_id = row[0]
    sent = "SELECT id FROM messages WHERE sender_id = :a"
    counts = {
        "mentions_deleted": conn.execute(
            f"DELETE FROM message_mentions WHERE agent_id = :a OR message_id IN ({sent}) RETURNING 1", {"a": agent_id}
        ).fetchall(),
        "message_recipients_deleted": conn.execute(
            f"DELETE FROM message_recipients WHERE agent_id = :a OR message_id IN ({sent}) RETURNING 1",
            {"a": agent_id},
        ).fetchall(),
        "messages_deleted": conn.execute(
            "DELETE FROM messages WHERE sender_id = ? RETURNING 1", (agent_id,)
        ).fetchall(),
        "file_reservations_deleted": conn.execute(
            "DELETE FROM file_reservations WHERE agent_id = ? RETURNING 1", (agent_id,)
        ).fetchall(),
        "build_slots_deleted": conn.execute(
            "DELETE FROM build_slots WHERE agent_id = ? RETURNING 1", (agent_id,)
        ).fetchall(),
        "contacts_deleted": conn.execute(
            "DELETE FROM contacts WHERE from_agent_id = :a OR to_agent_id = :a RETURNING 1", {"a": agent_id}
        ).fetchall(),
    }
    conn.execute("UPDATE sessions SET agent_id = NULL WHERE agent_id = ?", (agent_id,))
    conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
    stats = {key: len(value) for key, value in counts.items()}
    now = utcnow()
    enqueue(conn, "agent_deleted", row[13], {"deleted": {"id": agent_id, "name": row[1], "deleted_at": now,
                                                         "deletion_stats": stats}})
    return {"agent_id": agent_id, "agent_name": row[1], "project": project["human_key"], **stats}


def auto_retire_in(conn: Connection, days: float) -> list[str]:
    """Retire active agents idle (no activity, no session seen) for longer than `days`."""
    cutoff = format_ts(dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
    rows = conn.execute(
        f"SELECT {ag.AGENT_COLUMNS} FROM {ag.AGENT_FROM} WHERE a.is_active = 1 AND a.last_active_ts < ?"
        " AND coalesce((SELECT max(last_seen_ts) FROM sessions s WHERE s.agent_id = a.id), '') < ?"
        " AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.agent_id = a.id AND s.connected = 1)",
        (cutoff, cutoff),
    ).fetchall()
    now = utcnow()
    for row in rows:
        ag.retire_in(conn, row, now, with_slots(release_all_of_agent))
    return [str(row[1]) for row in rows]


class Lifecycle:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def retire(self, session: Session | None, project_key: str, name: str | None,
                     token: str | None) -> dict[str, Any]:
        return await self._store.write(retire_in, session, validate_project_key(project_key), name, token)

    async def unretire(self, session: Session | None, project_key: str, name: str,
                       token: str | None) -> dict[str, Any]:
        ag.validate_name(name, "agent_name")
        return await self._store.write(unretire_in, session, validate_project_key(project_key), name, token)

    async def deregister(self, session: Session | None, project_key: str, name: str | None,
                         token: str | None) -> dict[str, Any]:
        return await self._store.write(deregister_in, session, validate_project_key(project_key), name, token)

    async def hard_delete(self, session: Session | None, project_key: str, name: str, confirmation: str,
                          token: str | None) -> dict[str, Any]:
        if confirmation != CONFIRMATION:
            raise InvalidArgument(f"hard_delete_agent removes the agent and all the mail it sent: pass "
                                  f"confirmation={CONFIRMATION!r} to proceed", data={"parameter": "confirmation"})
        ag.validate_name(name, "agent_name")
        return await self._store.write(hard_delete_in, session, validate_project_key(project_key), name, token)

    async def auto_retire(self, days: float) -> list[str]:
        return await self._store.write(auto_retire_in, days)
