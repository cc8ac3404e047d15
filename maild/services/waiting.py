"""wait_for_mail: an agent's call that returns the moment mail for it commits (or on its timeout).

Waiters are anyio Events keyed by agent id; nothing polls. The change feed announces each committed
`messages` row; one background task (`run`) looks up those messages' recipients in a single read
and sets only the matching agents' events, so 64 idle waiters cost 64 Events and no queries. A
waiter holds no database connection while it waits (each read is a short unit of work), and ends
at once when its request is cancelled or its connection hangs up (`Sessions.hang_up`). It does not
decide who may read an inbox: that is `agents.acting_agent`, as for fetch_inbox.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from maild.services import agents as ag
from maild.services.changes import RING_SIZE, Change, ChangeFeed
from maild.services.messaging import inbox_rows, unread_count
from maild.services.projects import find_in, validate_project_key
from maild.services.sessions import Session
from maild.store import Connection, Store
from shared.errors import InvalidArgument

log = logging.getLogger(__name__)

MIN_TIMEOUT, MAX_TIMEOUT = 1.0, 300.0
# The store announces at most 256 rowids per table per commit: a full list may be truncated, so
# every waiter re-checks rather than risk sleeping through its mail.
_CAPPED = 256


class MailWaiters:
    def __init__(self, store: Store, feed: ChangeFeed) -> None:
        self._store = store
        self._waiting: dict[int, set[anyio.Event]] = {}
        self._pending: set[int] = set()
        self._wake_all = False
        self._arrived = anyio.Event()
        self.woken = 0
        feed.listen(self._on_change)

    def _on_change(self, change: Change) -> None:
        if "mail" not in change.kinds or not self._waiting:
            return
        if not change.message_ids or len(change.message_ids) >= min(_CAPPED, RING_SIZE):
            self._wake_all = True
        self._pending.update(change.message_ids)
        self._arrived.set()

    async def run(self) -> None:
        """Route new mail to its waiters; started once by the composition root."""
        while True:
            await self._arrived.wait()
            self._arrived = anyio.Event()
            ids, self._pending = sorted(self._pending), set()
            wake_all, self._wake_all = self._wake_all, False
            try:
                agents = set(self._waiting) if wake_all else await self._store.read(_recipients, ids)
            except Exception:  # a failed lookup must not strand anyone: wake them all to re-check
                log.exception("could not look up the recipients of messages %s", ids[:10])
                agents = set(self._waiting)
            for agent_id in agents:
                for event in self._waiting.get(agent_id, ()):
                    event.set()
                    self.woken += 1

    async def wait(
        self,
        session: Session | None,
        project_key: str,
        agent_name: str | None,
        token: str | None,
        *,
        patience: float,
        since_id: int | None,
        limit: int,
        include_bodies: bool,
    ) -> dict[str, Any]:
        if not MIN_TIMEOUT <= patience <= MAX_TIMEOUT:
            raise InvalidArgument(
                f"timeout_seconds must be between {MIN_TIMEOUT:.0f} and {MAX_TIMEOUT:.0f} (got {patience}); "
                "call again in a loop to wait longer"
            )
        key = validate_project_key(project_key)

        def resolve(conn: Connection) -> tuple[int, str, int]:
            find_in(conn, key)
            agent = ag.acting_agent(conn, session, agent_name, token)
            base = since_id
            if base is None:  # from now on: whatever is already there is fetch_inbox's business
                base = conn.execute(
                    "SELECT coalesce(max(message_id), 0) FROM message_recipients WHERE agent_id = ?", (agent[0],)
                ).get
            return agent[0], agent[1], int(base)

        agent_id, name, base = await self._store.read(resolve)
        deadline = anyio.current_time() + patience
        timed_out = hung_up = False
        while True:
            event = anyio.Event()  # registered before the read, so a commit in between still wakes us
            self._waiting.setdefault(agent_id, set()).add(event)
            if session is not None:
                session.waits.add(event)
            try:
                items, unread = await self._store.read(_newer, agent_id, base, limit, include_bodies)
                if items or timed_out or hung_up:
                    break
                with anyio.move_on_after(deadline - anyio.current_time()) as scope:
                    await event.wait()
                timed_out = scope.cancelled_caught
                hung_up = session is not None and session.hung_up
            finally:
                waiters = self._waiting.get(agent_id)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiting[agent_id]
                if session is not None:
                    session.waits.discard(event)
        last_id = max((int(item["id"]) for item in items), default=base)
        return {"result": items, "agent": name, "unread_count": unread, "timed_out": not items and timed_out,
                "since_id": base, "last_id": last_id}

    def statistics(self) -> dict[str, Any]:
        return {"waiters": sum(len(events) for events in self._waiting.values()), "agents": len(self._waiting),
                "woken": self.woken}


def _recipients(conn: Connection, message_ids: list[int]) -> set[int]:
    if not message_ids:
        return set()
    marks = ",".join("?" * len(message_ids))
    rows = conn.execute(
        f"SELECT DISTINCT agent_id FROM message_recipients WHERE message_id IN ({marks})", message_ids
    ).fetchall()
    return {row[0] for row in rows if isinstance(row[0], int)}


def _newer(
    conn: Connection, agent_id: int, base: int, limit: int, include_bodies: bool
) -> tuple[list[dict[str, Any]], int]:
    items = inbox_rows(conn, agent_id, None, limit, False, include_bodies, None, extra_where=f"r.message_id > {base:d}")
    return items, unread_count(conn, agent_id)
