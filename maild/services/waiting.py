"""wait_for_mail: an agent's call that returns the moment mail for it commits (or on its timeout).

Waiters are registered by agent id and sleep on their agent's Event; nothing polls. The change
feed announces each committed `messages` row; one background task (`run`) finds the recipients
among the agents rows the commit wrote, reads all their woken waiters' answers in one unit of work
and wakes only those agents, so 64 idle waiters cost no queries. A waiter holds no database
connection while it waits (each read is a short unit of work), and ends at once when its request
is cancelled or its connection hangs up (`Sessions.hang_up`). It does not decide who may read an
inbox: that is `agents.acting_agent`, as for fetch_inbox.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
NOTIFY_PATIENCE = 5.0  # a subscriber that does not take a notification within this is dropped
Notify = Callable[[], Awaitable[object]]


@dataclass(eq=False, slots=True)
class _Waiter:
    """One pending wait. It sleeps on its agent's Event (one per waiting agent, not per waiter: about
    0.8 KB each on asyncio), which mail sets for all of them at once, in a cancel scope holding its
    deadline; a hang-up cancels that scope (cancelling 64 scopes costs ~3x setting one Event)."""

    query: tuple[int, int, int, bool]  # agent id, since id, limit, include_bodies
    answer: tuple[list[dict[str, Any]], int] | None = None
    woken: bool = False
    scope: anyio.CancelScope | None = None

    def wake(self) -> None:
        """The client hung up: end the sleep, or skip it if not asleep yet."""
        self.woken = True
        if self.scope is not None:
            self.scope.cancel()


class MailWaiters:
    def __init__(self, store: Store, feed: ChangeFeed) -> None:
        self._store = store
        self._waiting: dict[int, set[_Waiter]] = {}
        self._mail_for: dict[int, anyio.Event] = {}  # agent id -> what its sleeping waiters wait on
        # Resource subscriptions (resource://inbox/{agent}): agent id -> (session, uri) -> notify.
        self._watchers: dict[int, dict[tuple[int, str], Notify]] = {}
        self.notified = 0
        # Bumped whenever a commit moves an agent's unread counter (not on every write of its row: a
        # send writes the sender's last_active_ts): the unread hint reads the database only for a
        # session whose agent's version moved since its last call. The epoch moves them all.
        self._agent_versions: dict[int, int] = {}
        self._unread_epoch = 0
        self._pending: set[int] = set()  # message ids whose recipients must be looked up
        self._touched: set[int] = set()  # agents whose rows the mail commits wrote (recipients among them)
        self._pending_at: float | None = None  # the first unrouted mail commit's time.monotonic()
        self.last_commit_at = 0.0  # that time for the last routed wake-up (benchmarks time from it)
        self._wake_all = False
        self._arrived = anyio.Event()
        self.woken = 0
        self.mail_commits = 0  # announced commits that added mail: a read that spans one may be stale
        feed.listen(self._on_change)

    def _on_change(self, change: Change) -> None:
        if len(change.unread_ids) >= _CAPPED:  # a capped list may miss someone: everyone re-reads
            self._unread_epoch += 1
        for agent_id in change.unread_ids:
            self._agent_versions[agent_id] = self._agent_versions.get(agent_id, 0) + 1
        if "mail" not in change.kinds:
            return
        self.mail_commits += 1
        if not (self._waiting or self._watchers):
            return
        if not change.message_ids or len(change.message_ids) >= min(_CAPPED, RING_SIZE):
            self._wake_all = True
        if change.agent_ids and len(change.agent_ids) < _CAPPED:
            # A delivery's unread trigger writes the recipient's agents row in the sending commit, so
            # the recipients are among the written agents: no lookup (and no reader hop) needed.
            # The sender is there too; its waiters, if any, re-check and wait on.
            self._touched.update(change.agent_ids)
        else:
            self._pending.update(change.message_ids)
        if self._pending_at is None:
            self._pending_at = change.at
        self._arrived.set()

    async def run(self) -> None:
        """Route new mail to its waiters; started once by the composition root. The woken waiters'
        answers are read here, in one unit of work for all of them (64 waiters on one agent are one
        query, not 64 queued on the reader pool), and handed over with the wake-up."""
        while True:
            await self._arrived.wait()
            self._arrived = anyio.Event()
            ids, self._pending = sorted(self._pending), set()
            agents, self._touched = self._touched, set()
            at, self._pending_at = self._pending_at, None
            wake_all, self._wake_all = self._wake_all, False
            try:
                if wake_all:
                    agents = self._everyone()
                elif ids:
                    agents |= await self._store.read(_recipients, ids)
            except Exception:  # a failed lookup must not strand anyone: wake them all to re-check
                log.exception("could not look up the recipients of messages %s", ids[:10])
                agents = self._everyone()
            woken = [w for agent_id in agents for w in self._waiting.get(agent_id, ())]
            if woken:
                await self._answer(woken)
                self.last_commit_at = at or 0.0
            for agent_id in agents:  # after the waiters: a slow subscriber must not delay them
                for key, notify in list(self._watchers.get(agent_id, {}).items()):
                    await self._notify(agent_id, key, notify)

    async def _answer(self, woken: list[_Waiter]) -> None:
        groups: dict[tuple[int, int, int, bool], list[_Waiter]] = {}
        for waiter in woken:
            groups.setdefault(waiter.query, []).append(waiter)
        try:
            answers = await self._store.read(_answers, list(groups))
        except Exception:  # each waiter then reads for itself
            log.exception("could not read the answers of %d waiters", len(woken))
            answers = {}
        for query, waiters in groups.items():
            for waiter in waiters:
                waiter.answer = answers.get(query)
                waiter.woken = True
                self.woken += 1
            arrived = self._mail_for.pop(query[0], None)
            if arrived is not None:
                arrived.set()

    def _everyone(self) -> set[int]:
        return set(self._waiting) | set(self._watchers)

    async def _notify(self, agent_id: int, key: tuple[int, str], notify: Notify) -> None:
        try:
            with anyio.fail_after(NOTIFY_PATIENCE):
                await notify()
            self.notified += 1
        except Exception:  # gone or stuck: drop it (a client re-subscribes after reconnecting)
            log.info("dropping the subscription to %s of a client that did not take a notification", key[1])
            self._drop(agent_id, key)

    def _drop(self, agent_id: int, key: tuple[int, str]) -> None:
        watchers = self._watchers.get(agent_id)
        if watchers is not None:
            watchers.pop(key, None)
            if not watchers:
                del self._watchers[agent_id]

    async def subscribe(
        self, session: Session | None, uri: str, agent_name: str, token: str | None, notify: Notify,
        owner: object = None,
    ) -> None:
        """Call `notify()` whenever mail for `agent_name` commits, until unsubscribe or hang-up.
        Only the session's bound agent, or a caller holding that agent's token, may subscribe.
        `owner` keys the subscription when it is not the session: one HTTP identity's session is
        shared by all its MCP sessions (each remote shim subscribes on its own)."""
        agent = await self._store.read(lambda conn: ag.acting_agent(conn, session, agent_name, token, param="agent"))
        self._watchers.setdefault(agent[0], {})[(id(session if owner is None else owner), uri)] = notify

    def unsubscribe(self, session: Session | None, uri: str, owner: object = None) -> None:
        key = (id(session if owner is None else owner), uri)
        for agent_id, watchers in list(self._watchers.items()):
            if key in watchers:
                self._drop(agent_id, key)

    def forget(self, session: Session) -> None:
        """A connection ended: its subscriptions go with it."""
        for agent_id, watchers in list(self._watchers.items()):
            for key in [k for k in watchers if k[0] == id(session)]:
                self._drop(agent_id, key)

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

        def resolve(conn: Connection) -> tuple[int, str, int, list[dict[str, Any]], int]:
            find_in(conn, key)
            agent = ag.acting_agent(conn, session, agent_name, token)
            base = since_id
            if base is None:  # from now on: whatever is already there is fetch_inbox's business
                base = conn.execute(
                    "SELECT coalesce(max(message_id), 0) FROM message_recipients WHERE agent_id = ?", (agent[0],)
                ).get
            return (agent[0], agent[1], int(base), *_newer(conn, agent[0], int(base), limit, include_bodies))

        # Who, from where, and what is already there, in one read. A waiter is registered only once
        # the agent is known, so a mail commit announced during this read means "read again".
        announced = self.mail_commits
        agent_id, name, base, items, unread = await self._store.read(resolve)
        current = self.mail_commits == announced
        deadline = anyio.current_time() + patience
        timed_out = hung_up = False
        while not items:
            # Registered before the read, so a commit in between still wakes us.
            waiter = _Waiter((agent_id, base, limit, include_bodies))
            self._waiting.setdefault(agent_id, set()).add(waiter)
            if session is not None:
                session.waits.add(waiter)
            try:
                if not current:
                    items, unread = await self._store.read(_newer, agent_id, base, limit, include_bodies)
                current = False
                # (A hang-up during the first read woke no one: this waiter was not registered yet.)
                hung_up = hung_up or (session is not None and session.hung_up)
                if items or timed_out or hung_up:
                    break
                # (Woken during the read: mail is there, read again.)
                timed_out = not waiter.woken and await self._sleep(waiter, deadline)
                hung_up = session is not None and session.hung_up
                if waiter.answer is not None and waiter.answer[0]:  # read for us by `run`
                    items, unread = waiter.answer
                    break
            finally:
                waiters = self._waiting.get(agent_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiting[agent_id]
                        self._mail_for.pop(agent_id, None)
                waiter.scope = None
                if session is not None:
                    session.waits.discard(waiter)
        last_id = max((int(item["id"]) for item in items), default=base)
        return {"result": items, "agent": name, "unread_count": unread, "timed_out": not items and timed_out,
                "since_id": base, "last_id": last_id}

    async def _sleep(self, waiter: _Waiter, deadline: float) -> bool:
        """Sleep until mail for the waiter's agent, a hang-up, or `deadline`; True if the deadline
        ended it. The Event may also wake a waiter that registered after `run` chose whom to answer:
        it is neither woken nor timed out, and reads again."""
        agent_id = waiter.query[0]
        arrived = self._mail_for.get(agent_id)
        if arrived is None:
            arrived = self._mail_for[agent_id] = anyio.Event()
        with anyio.CancelScope(deadline=deadline) as scope:
            waiter.scope = scope
            await arrived.wait()
        waiter.scope = None
        return scope.cancelled_caught and not waiter.woken

    async def unread_hint(self, session: Session | None, result: Any = None) -> dict[str, Any] | None:
        """`{"agent_mail/unread": {"count": n, "urgent": u}}` when the bound agent's unread counts
        changed since this session's last call (or on its first call with unread mail); else None.
        Costs no query unless a commit moved the agent's unread counter since the session last looked."""
        if session is None or session.agent_id is None:
            return None
        agent_id = session.agent_id
        if isinstance(result, dict) and "unread_count" in result:  # fetch_inbox, wait_for_mail: said already
            return None
        version = (agent_id, self._unread_epoch, self._agent_versions.get(agent_id, 0))
        if session.unread_seen == version:
            return None
        session.unread_seen = version
        count, urgent = await self._store.read(_unread, agent_id)
        told = (agent_id, count, urgent)
        first = session.unread_told is None or session.unread_told[0] != agent_id
        if told == session.unread_told or (first and count == 0):
            session.unread_told = told
            return None
        session.unread_told = told
        return {"agent_mail/unread": {"count": count, "urgent": urgent}}

    def statistics(self) -> dict[str, Any]:
        return {"waiters": sum(len(events) for events in self._waiting.values()), "agents": len(self._waiting),
                "woken": self.woken, "subscriptions": sum(len(w) for w in self._watchers.values()),
                "notified": self.notified, "last_commit_monotonic": self.last_commit_at}


def _unread(conn: Connection, agent_id: int) -> tuple[int, int]:
    urgent: int = conn.execute(
        "SELECT count(*) FROM message_recipients r JOIN messages m ON m.id = r.message_id"
        " WHERE r.agent_id = ? AND r.read_ts IS NULL AND m.importance IN ('high', 'urgent')",
        (agent_id,),
    ).get
    return unread_count(conn, agent_id), urgent


def _recipients(conn: Connection, message_ids: list[int]) -> set[int]:
    if not message_ids:
        return set()
    marks = ",".join("?" * len(message_ids))
    rows = conn.execute(
        f"SELECT DISTINCT agent_id FROM message_recipients WHERE message_id IN ({marks})", message_ids
    ).fetchall()
    return {row[0] for row in rows if isinstance(row[0], int)}


def _answers(
    conn: Connection, queries: list[tuple[int, int, int, bool]]
) -> dict[tuple[int, int, int, bool], tuple[list[dict[str, Any]], int]]:
    return {query: _newer(conn, *query) for query in queries}


def _newer(
    conn: Connection, agent_id: int, base: int, limit: int, include_bodies: bool
) -> tuple[list[dict[str, Any]], int]:
    items = inbox_rows(conn, agent_id, None, limit, False, include_bodies, None, extra_where=f"r.message_id > {base:d}")
    return items, unread_count(conn, agent_id)
