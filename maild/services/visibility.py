"""Who may read which message: the one place the visibility rule (MESSAGE_VISIBILITY) is written.

`project` (the default, upstream's model): an agent reads every message of its own project, except
mail sent only to bcc recipients (`messages.bcc_only`), which stays with its sender and those
recipients. `participants`: an agent reads only mail it sent or received. In both modes, and in
other projects, an agent reads what it took part in; the operator (mailctl) reads everything.
A bcc *name* is shown only to the sender and to that recipient. Inboxes are not decided here: an
inbox is personal whatever the mode (agents.acting_agent). Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maild.store import Connection

MODES = ("project", "participants")


@dataclass(frozen=True)
class Viewer:
    """The reader of a request: an agent (with its project), or the operator (`agent_id` None)."""

    agent_id: int | None = None
    project_id: int | None = None
    name: str | None = None
    mode: str = "project"

    @property
    def is_operator(self) -> bool:
        return self.agent_id is None


def viewer_of(conn: Connection, agent_id: int | None, mode: str) -> Viewer:
    """The Viewer for an agent id (None: the operator), reading the agent's project and name."""
    if agent_id is None:
        return Viewer(mode=mode)
    row = conn.execute("SELECT project_id, name FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if row is None:
        return Viewer(agent_id=agent_id, mode="participants")  # a deleted agent sees only its own mail
    return Viewer(agent_id=agent_id, project_id=row[0], name=row[1], mode=mode)


def _involved(alias: str, *, bulk: bool = False) -> str:
    if bulk:
        # Not correlated: SQLite builds the reader's message set once (an ephemeral index) and each
        # candidate row costs a lookup in it, instead of a probe of message_recipients per row.
        return (
            f"({alias}.id IN (SELECT id FROM messages WHERE sender_id = :viewer"
            " UNION ALL SELECT message_id FROM message_recipients WHERE agent_id = :viewer))"
        )
    return (
        f"({alias}.sender_id = :viewer OR EXISTS (SELECT 1 FROM message_recipients vr"
        f" WHERE vr.message_id = {alias}.id AND vr.agent_id = :viewer))"
    )


def clause(
    viewer: Viewer, params: dict[str, Any], alias: str = "m", project_id: int | None = None, *, bulk: bool = False
) -> str:
    """SQL limiting rows of `messages {alias}` to what `viewer` may read.

    `project_id`: the query is already limited to that project, which lets the common case (an
    agent reading its own project) be one column test instead of a walk of recipient rows.
    `bulk`: many candidate rows (search): test membership in the reader's message set."""
    if viewer.agent_id is None:
        return "1"
    params["viewer"] = viewer.agent_id
    involved = _involved(alias, bulk=bulk)
    if viewer.mode != "project" or viewer.project_id is None:
        return involved
    if project_id is not None:
        if project_id != viewer.project_id:
            return involved
        return f"({alias}.bcc_only = 0 OR {involved})"
    params["viewer_project"] = viewer.project_id
    return f"(({alias}.project_id = :viewer_project AND {alias}.bcc_only = 0) OR {involved})"


def participants_only(viewer: Viewer, project_id: int) -> bool:
    """Whether, in this project, `viewer` reads only the mail it took part in."""
    return viewer.agent_id is not None and (viewer.mode != "project" or viewer.project_id != project_id)


def mail_count(conn: Connection, agent_id: int, cap: int) -> int:
    """How many messages the agent sent plus received, counted up to `cap` (a brand-new agent: 0)."""
    found = conn.execute(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM messages WHERE sender_id = :a LIMIT :cap))"
        " + (SELECT count(*) FROM (SELECT 1 FROM message_recipients WHERE agent_id = :a LIMIT :cap))",
        {"a": agent_id, "cap": cap},
    ).get
    return int(found or 0)


def can_read(conn: Connection, viewer: Viewer, message_id: int) -> bool:
    """Whether `viewer` may read one message (a missing message: False)."""
    params: dict[str, Any] = {"id": message_id}
    where = clause(viewer, params)
    return conn.execute(f"SELECT 1 FROM messages m WHERE m.id = :id AND {where}", params).fetchone() is not None


def involved_in(conn: Connection, agent_id: int, message_id: int) -> bool:
    """Sender or recipient (to, cc or bcc) of the message."""
    return conn.execute(
        "SELECT 1 FROM messages m WHERE m.id = :id AND " + _involved("m"), {"id": message_id, "viewer": agent_id}
    ).fetchone() is not None


def shown_bcc(viewer: Viewer, sender_id: int, bcc: list[str]) -> list[str]:
    """The bcc names `viewer` may see: all for the sender and the operator, else only its own."""
    if viewer.agent_id is None or viewer.agent_id == sender_id:
        return bcc
    own = (viewer.name or "").lower()
    return [name for name in bcc if name.lower() == own]
