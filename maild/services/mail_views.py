"""Read models behind the mail resources: inbox/outbox/views, a message, a thread, agent lists.

Agent-scoped views (inbox, outbox, ack views, the mailbox with archive commits) obey the identity
rule of `agents.acting_agent` (own session or token); messages and threads obey visibility.py
(the operator, mailctl, reads all). Nothing here writes; the archive is read through git (history.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import anyio.to_thread

from maild.archive import history
from maild.services import acks, visibility
from maild.services import agents as ag
from maild.services.messaging import (
    MESSAGE_COLUMNS,
    TOPIC,
    _visible_message,
    inbox_rows,
    message_row_dict,
    parse_ts,
    recipients_of,
    unread_count,
)
from maild.services.projects import find_in, project_dict, validate_project_key
from maild.services.sessions import Session
from maild.store import Connection, Store, format_ts
from shared.errors import InvalidArgument


def to_int(value: str | int | None, what: str, default: int, low: int = 1, high: int = 1000) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise InvalidArgument(f"{what} must be between {low} and {high}, got {number}")
    return number


def to_bool(value: str | bool | None, what: str) -> bool:
    if value is None or value == "" or isinstance(value, bool):
        return bool(value)
    text = value.lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"{what} must be true or false, got {value!r}")


class MailViews:
    def __init__(self, store: Store, agents: ag.Agents) -> None:
        self._store = store
        self._agents = agents

    async def projects(self) -> dict[str, Any]:
        rows = await self._store.read(
            lambda c: c.execute("SELECT id, slug, human_key, created_ts FROM projects ORDER BY id").fetchall()
        )
        return {"projects": [project_dict(r) for r in rows]}

    async def agents(self, project_key: str, include_retired: bool = False) -> dict[str, Any]:
        active = "" if include_retired else " AND a.is_active = 1"

        def unit(conn: Connection) -> tuple[dict[str, Any], list[tuple[Any, Any]]]:
            project = find_in(conn, project_key)
            rows = conn.execute(
                f"SELECT {ag.AGENT_COLUMNS}, (SELECT max(last_seen_ts) FROM sessions WHERE agent_id = a.id)"
                f" FROM {ag.AGENT_FROM} WHERE a.project_id = ?{active}"
                " ORDER BY a.is_active DESC, a.last_active_ts DESC",
                (project["id"],),
            ).fetchall()
            return project, [(r, r[-1]) for r in rows]  # the last column: last session time

        project, rows = await self._store.read(unit)
        return {
            "project": {"slug": project["slug"], "human_key": project["human_key"]},
            "agents": [
                {**ag.agent_dict(r), "unread_count": r[12], "retired": not r[10], **self._agents.presence(r, seen)}
                for r, seen in rows
            ],
        }

    async def project(self, slug: str) -> dict[str, Any]:
        listing = await self.agents(slug)

        def unit(conn: Connection) -> dict[str, Any]:
            return find_in(conn, slug)

        return {**await self._store.read(unit), "agents": listing["agents"]}

    async def mailbox(
        self, session: Session | None, agent: str, params: dict[str, Any], *, box: str
    ) -> dict[str, Any]:
        """inbox / outbox / urgent-unread / ack-required / ack-overdue / acks-stale / mailbox /
        mailbox-with-commits for one agent."""
        limit = to_int(params.get("limit"), "limit", 50 if box == "ack-overdue" else 20)
        include_bodies = to_bool(params.get("include_bodies"), "include_bodies")
        urgent_only = to_bool(params.get("urgent_only"), "urgent_only")
        since = parse_ts(params.get("since_ts"))
        ttl_minutes = to_int(params.get("ttl_minutes"), "ttl_minutes", 60, 0, 10**6)
        ttl_seconds = to_int(params.get("ttl_seconds"), "ttl_seconds", self._agents.settings.ack_ttl_seconds, 0, 10**8)
        now = dt.datetime.now(dt.UTC)
        project_key = params.get("project")

        def unit(conn: Connection) -> dict[str, Any]:
            me = ag.acting_agent(conn, session, agent, params.get("agent_token"), param="agent")
            project = find_in(conn, project_key) if project_key else None
            project_id = project["id"] if project else None
            if box == "outbox":
                items = _outbox(conn, me[0], project_id, limit, include_bodies, since)
            else:
                extra = {
                    "inbox": "",
                    "urgent-unread": "m.importance IN ('high', 'urgent') AND r.read_ts IS NULL",
                    "ack-required": "m.ack_required = 1 AND r.ack_ts IS NULL",
                    "ack-overdue": "m.ack_required = 1 AND r.ack_ts IS NULL AND m.created_ts < "
                    + _quote(format_ts(now - dt.timedelta(minutes=ttl_minutes))),
                    "acks-stale": "m.ack_required = 1 AND r.ack_ts IS NULL AND m.created_ts < "
                    + _quote(format_ts(now - dt.timedelta(seconds=ttl_seconds))),
                    "mailbox": "",
                    "mailbox-with-commits": "",
                }[box]
                items = inbox_rows(conn, me[0], project_id, limit, urgent_only, include_bodies, since,
                                   extra_where=extra)
            if box == "acks-stale":
                acks.stale_details(conn, me[0], items, now)
            elif box in ("mailbox", "mailbox-with-commits"):
                _archive_state(conn, items, enabled=self._agents.settings.archive_enabled)
            return {
                "project": project["slug"] if project else None,
                "agent": me[1],
                "count": len(items),
                "unread_count": unread_count(conn, me[0]),
                **({"ttl_seconds": ttl_seconds} if box == "acks-stale" else {}),
                "messages": items,
            }

        found = await self._store.read(unit)
        if box == "mailbox":
            found["archive_head"] = await anyio.to_thread.run_sync(history.head, self._agents.archive)
        elif box == "mailbox-with-commits":
            await _with_commits(self._agents.archive, found["messages"])
        return found

    async def acks(self, session: Session | None, project_key: str, params: dict[str, Any]) -> dict[str, Any]:
        """A project's pending acknowledgements, one per (message, recipient): `state` pending (all) or
        overdue (older than ttl_seconds, default ACK_TTL_SECONDS); `agent` keeps one recipient's."""
        state = params.get("state") or "pending"
        if state not in ("pending", "overdue"):
            raise InvalidArgument(f"state must be pending or overdue, got {state!r}")
        ttl = to_int(params.get("ttl_seconds"), "ttl_seconds", self._agents.settings.ack_ttl_seconds, 0, 10**8)
        limit = to_int(params.get("limit"), "limit", 200)
        key = validate_project_key(project_key)
        now = dt.datetime.now(dt.UTC)

        def unit(conn: Connection) -> dict[str, Any]:
            project = find_in(conn, key)
            viewer = self._viewer(conn, session)
            if viewer is None:
                ag.acting_agent(conn, session, None, None)  # explains how to get an identity
                raise AssertionError("unreachable")
            agent_id = None
            if params.get("agent"):
                agent_id = ag.require_active(conn, ag.validate_name(params["agent"], "agent"))[0]
            cutoff = format_ts(now - dt.timedelta(seconds=ttl)) if state == "overdue" else None
            rows = acks.pending_in(conn, viewer, project["id"], cutoff=cutoff, agent_id=agent_id, limit=limit,
                                   now=now)
            for row in rows:
                row["overdue"] = row["age_seconds"] >= ttl
            return {"project": project["slug"], "state": state, "ttl_seconds": ttl, "count": len(rows), "acks": rows}

        return await self._store.read(unit)

    def _viewer(self, conn: Connection, session: Session | None) -> visibility.Viewer | None:
        """Who reads: the operator (a Viewer with no agent), the session's agent, or None (nobody)."""
        mode = self._agents.settings.message_visibility
        if session is not None and session.agent_id is not None:
            return visibility.viewer_of(conn, session.agent_id, mode)
        return visibility.Viewer(mode=mode) if ag.is_operator(session) else None

    async def message(self, session: Session | None, message_id: str) -> dict[str, Any]:
        number = to_int(message_id, "message id", 0, 1, 2**62)

        def unit(conn: Connection) -> dict[str, Any]:
            row = _visible_message(conn, session, number, None, self._agents.settings.message_visibility)
            viewer = self._viewer(conn, session) or visibility.Viewer(agent_id=-1)
            lists = recipients_of(conn, number)
            lists["bcc"] = visibility.shown_bcc(viewer, row[2], lists["bcc"])
            return {**message_row_dict(row, include_body=True), **lists}

        return await self._store.read(unit)

    async def fetch_topic(
        self, session: Session | None, project_key: str, topic: str, limit: int, include_bodies: bool
    ) -> dict[str, Any]:
        """A project's messages tagged `topic`, newest first, as the caller may read them."""
        key = validate_project_key(project_key)
        if not isinstance(topic, str) or not TOPIC.fullmatch(topic):
            raise InvalidArgument(f"topic {topic!r} is not valid: 1-64 letters, digits, '_' or '-'")
        mode = self._agents.settings.message_visibility

        def unit(conn: Connection) -> dict[str, Any]:
            project = find_in(conn, key)
            if session is not None and session.agent_id is not None:
                viewer = visibility.viewer_of(conn, session.agent_id, mode)
            elif ag.is_operator(session):
                viewer = visibility.Viewer(mode=mode)
            else:
                ag.acting_agent(conn, session, None, None)  # explains how to get an identity
                raise AssertionError("unreachable")
            params: dict[str, Any] = {"project": project["id"], "topic": topic, "limit": limit}
            where = visibility.clause(viewer, params, project_id=project["id"])
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id"
                f" WHERE m.project_id = :project AND m.topic = :topic AND {where} ORDER BY m.id DESC LIMIT :limit",
                params,
            ).fetchall()
            return {"project": project["slug"], "topic": topic, "count": len(rows),
                    "messages": [{**message_row_dict(r, include_body=include_bodies), "topic": topic} for r in rows]}

        return await self._store.read(unit)

    async def thread(self, session: Session | None, thread_id: str, include_bodies: bool) -> dict[str, Any]:
        def unit(conn: Connection) -> dict[str, Any]:
            viewer = self._viewer(conn, session)
            seed = int(thread_id) if thread_id.isdigit() and len(thread_id) < 19 else None
            params: dict[str, Any] = {"thread": thread_id, "seed": seed if seed is not None else -1}
            where = "1" if viewer is None else visibility.clause(viewer, params)
            rows: list[Any] = [] if viewer is None else conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id"
                f" WHERE (m.thread_id = :thread OR m.id = :seed) AND {where} ORDER BY m.id",
                params,
            ).fetchall()
            visible = []
            for row in rows:
                lists = recipients_of(conn, row[0])
                assert viewer is not None
                visible.append({**message_row_dict(row, include_body=include_bodies), "to": lists["to"],
                                "cc": lists["cc"], "bcc": visibility.shown_bcc(viewer, row[2], lists["bcc"])})
            return {"thread_id": thread_id, "count": len(visible), "messages": visible}

        return await self._store.read(unit)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _outbox(
    conn: Connection, agent_id: int, project_id: int | None, limit: int, include_bodies: bool, since: str | None
) -> list[dict[str, Any]]:
    where, params = ["m.sender_id = ?"], [agent_id]
    if project_id is not None:
        where.append("m.project_id = ?")
        params.append(project_id)
    if since is not None:
        where.append("m.created_ts > ?")
        params.append(since)  # type: ignore[arg-type]
    rows: list[Any] = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id"
        f" WHERE {' AND '.join(where)} ORDER BY m.id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [{**message_row_dict(r, include_body=include_bodies), **recipients_of(conn, r[0])} for r in rows]


def _archive_state(conn: Connection, items: list[dict[str, Any]], *, enabled: bool) -> None:
    """Each item's `archive_status`: committed (in git), pending (still in the archive outbox: the
    archiver commits it within moments), or disabled (AGENT_MAIL_ARCHIVE_ENABLED=false). Adds the
    project slug the archive path needs, as `project`."""
    if not items:
        return
    ids = [item["id"] for item in items]
    marks = ",".join("?" * len(ids))
    pending = {r[0] for r in conn.execute(
        "SELECT json_extract(payload, '$.message.id') FROM archive_outbox WHERE kind = 'message'"
        f" AND json_extract(payload, '$.message.id') IN ({marks})", ids)}
    projects = {item["project_id"] for item in items}
    slugs: dict[int, str] = {r[0]: r[1] for r in conn.execute(
        f"SELECT id, slug FROM projects WHERE id IN ({','.join('?' * len(projects))})", list(projects))}
    for item in items:
        item["project"] = slugs[item["project_id"]]
        item["archive_status"] = "disabled" if not enabled else "pending" if item["id"] in pending else "committed"


async def _with_commits(archive: Any, items: list[dict[str, Any]]) -> None:
    """Each committed item's `commit` {hexsha, summary, authored_ts}: the archive commit holding its
    canonical file (None while pending, or `missing` when git does not have it)."""
    paths = {item["id"]: history.message_path(item["project"], item) for item in items
             if item["archive_status"] == "committed"}
    found = await anyio.to_thread.run_sync(history.commits_holding, archive, list(paths.values()))
    for item in items:
        path = paths.get(item["id"])
        item["commit"] = found.get(path) if path is not None else None
        if path is not None and item["commit"] is None:
            item["archive_status"] = "missing"
