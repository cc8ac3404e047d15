"""Client sessions: who is connected right now (presence) and which agent each session speaks as.

A session is one client connection: a shim for one editor's agent, one CLI call, one HTTP session.
The transport opens and closes sessions; tools read `current_session` to know their caller.
Rows are persisted so a binding survives a daemon restart (a shim reconnects with the same id).
Whether a hello's named agent may be bound is decided by the identity layer (agents.py), not here.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from maild.store import Connection, Store, utcnow
from shared.errors import MailError

log = logging.getLogger(__name__)


@dataclass
class Session:
    id: str
    client: str = "socket"
    pid: int | None = None
    ppid: int | None = None
    cwd: str | None = None
    requested_agent: str | None = None
    tools_mode: str | None = None
    agent_id: int | None = None
    persisted: bool = False
    # The hello's `token` (the shim's AGENT_MAIL_TOKEN): kept in memory only, never stored or shown.
    hello_token: str | None = field(default=None, repr=False)
    # Why the hello's named agent was not bound (told to the agent on its first identity-needing call).
    binding_refused: str | None = None
    # The transport already authenticated `requested_agent` (an HTTP token's verified agent claim).
    vouched: bool = False
    connected_at: str = field(default_factory=utcnow)
    # wait_for_mail's pending waits and open listen streams (objects with `wake()`): woken at hang-up
    # so none outlives its client.
    waits: set[Any] = field(default_factory=set, repr=False, compare=False)
    hung_up: bool = False
    # The unread hint (services/waiting.py): the unread-counter version last looked at, and what was told.
    unread_seen: tuple[int, int, int] | None = None
    unread_told: tuple[int, int, int] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client": self.client,
            "pid": self.pid,
            "agent_id": self.agent_id,
            "requested_agent": self.requested_agent,
            "connected_at": self.connected_at,
        }


# The session of the request being served; set by the transport for each connection's task tree.
current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar("current_session", default=None)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object, limit: int = 4096) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


class Sessions:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._live: dict[int, Session] = {}
        self._http: dict[str, Session] = {}
        # Set by the composition root: binds a hello's named agent (the identity layer owns that rule).
        self.on_hello: Callable[[Session], Awaitable[None]] | None = None
        # Called at a connection's hang-up (resource subscriptions end with their connection).
        self.on_hang_up: list[Callable[[Session], object]] = []

    async def mark_all_disconnected(self) -> None:
        """At start-up nobody is connected yet, whatever a crashed daemon left in the table."""
        await self._store.write(lambda conn: conn.execute("UPDATE sessions SET connected = 0 WHERE connected"))

    def connect(self, client: str = "socket") -> Session:
        """A new connection: an anonymous session until (unless) its hello arrives."""
        session = Session(id=secrets.token_hex(16), client=client)
        self._live[id(session)] = session
        return session

    async def hello(self, session: Session, hello: dict[str, Any]) -> None:
        """Apply a `maild/hello`: the client's session id, process facts and requested agent."""
        session.id = _str_or_none(hello.get("session"), 128) or session.id
        session.client = _str_or_none(hello.get("client"), 64) or session.client
        session.pid = _int_or_none(hello.get("pid"))
        session.ppid = _int_or_none(hello.get("ppid"))
        session.cwd = _str_or_none(hello.get("cwd"))
        session.requested_agent = _str_or_none(hello.get("agent"), 128)
        session.tools_mode = _str_or_none(hello.get("tools"), 16)
        session.hello_token = _str_or_none(hello.get("token"), 256)
        session.binding_refused = None
        session.persisted = True
        session.agent_id = await self._store.write(self._upsert, session)
        if self.on_hello is not None:
            await self.on_hello(session)

    @staticmethod
    def _upsert(conn: Connection, session: Session) -> int | None:
        now = utcnow()
        row = conn.execute(
            "INSERT INTO sessions(id, client, pid, ppid, cwd, created_ts, last_seen_ts, connected)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
            " ON CONFLICT(id) DO UPDATE SET client = excluded.client, pid = excluded.pid,"
            " ppid = excluded.ppid, cwd = excluded.cwd, last_seen_ts = excluded.last_seen_ts, connected = 1"
            " RETURNING agent_id",
            (session.id, session.client, session.pid, session.ppid, session.cwd, now, now),
        ).fetchone()
        return None if row is None else row[0]

    def hang_up(self, session: Session) -> None:
        """The client has gone (EOF): end its waits now instead of at their timeouts."""
        session.hung_up = True
        for waiter in list(session.waits):
            waiter.wake()
        for callback in self.on_hang_up:
            callback(session)

    async def close(self, session: Session) -> None:
        """Forget a closed connection. Never raises: it runs in the transport's `finally`, where an
        exception (a full disk failing the presence write) would take the whole daemon down."""
        self._live.pop(id(session), None)
        if not session.persisted:  # anonymous one-shot connections (scripts) leave no row
            return
        still_connected = any(s.id == session.id for s in self._live.values())
        try:
            await self._store.write(
                lambda conn: conn.execute(
                    "UPDATE sessions SET last_seen_ts = ?, connected = ? WHERE id = ?",
                    (utcnow(), int(still_connected), session.id),
                )
            )
        except MailError as exc:  # presence is best effort; start-up resets it anyway
            log.warning("could not record that session %s closed: %s", session.id, exc.message)

    def for_http(self, subject: str, agent: str | None) -> Session:
        """The session of one HTTP identity (JWT subject): reused across its requests, so a token's
        agent binding (from its agent claim, or from register_agent) holds for all of them."""
        key = f"http:{subject}"
        session = self._http.get(key)
        if session is None:
            session = Session(id=key, client="http", requested_agent=agent, vouched=True)
            if len(self._http) > 10_000:
                self._http.clear()  # bounded; a dropped session rebinds on its next request
            self._http[key] = session
        return session

    def live(self) -> list[Session]:
        return list(self._live.values())

    def statistics(self) -> dict[str, Any]:
        by_client: dict[str, int] = {}
        for session in self._live.values():
            by_client[session.client] = by_client.get(session.client, 0) + 1
        return {"live": len(self._live), "by_client": by_client}
