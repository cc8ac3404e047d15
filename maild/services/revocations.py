"""Revoked bridge credentials: a deny list of JWT ids (`jti`) and agent names that the HTTP bridge
checks on every request, so one token (or every token of one agent) stops working before it expires.

The list lives in the database (it survives restarts) and in memory (the per-request check is a dict
lookup, never a query). With several bridges on one Redis, a `Shared` copy (maild/transport/http/
denylist.py) spreads it; entries found there are merged in. Only the operator may change the list:
callers on the Unix socket, or the bridge's static bearer — never an agent's JWT. It does not verify
tokens (maild/transport/http/auth.py does) and does not know about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import anyio

from maild.services.sessions import Session
from maild.store import Connection, Store, utcnow
from shared.errors import AuthenticationRequired, InvalidArgument

KINDS = ("jti", "agent")
OPERATOR_HTTP_SESSIONS = ("http:bearer", "http:localhost")
MAX_VALUE = 512


class Shared(Protocol):
    """Where other bridges see the list (Redis). Called from worker threads."""

    def publish(self, entries: list[dict[str, Any]]) -> None: ...

    def withdraw(self, kind: str, value: str) -> None: ...


def _key(kind: str, value: str) -> tuple[str, str]:
    return kind, value.lower() if kind == "agent" else value


class Revocations:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._local: dict[tuple[str, str], dict[str, Any]] = {}  # this database's entries
        self._shared: dict[tuple[str, str], dict[str, Any]] = {}  # entries other bridges published
        self.shared: Shared | None = None
        self.refused = 0

    async def load(self) -> None:
        rows = await self._store.read(
            lambda conn: list(conn.execute("SELECT kind, value, reason, revoked_ts FROM revoked_tokens")))
        self._local = {(k, v): {"kind": k, "value": v, "reason": r, "revoked_ts": ts} for k, v, r, ts in rows}

    def is_revoked(self, jti: str | None, agent: str | None) -> bool:
        """The bridge's per-request check: a dict lookup or two."""
        if not (self._local or self._shared):
            return False
        keys = ([("jti", jti)] if jti else []) + ([("agent", agent.lower())] if agent else [])
        if any(k in self._local or k in self._shared for k in keys):
            self.refused += 1
            return True
        return False

    def entries(self) -> list[dict[str, Any]]:
        merged = {**self._shared, **self._local}
        return sorted(merged.values(), key=lambda e: (e["revoked_ts"], e["kind"], e["value"]))

    def merge_shared(self, entries: Iterable[dict[str, Any]]) -> None:
        """Replace the view of what other bridges revoked (the shared copy is the whole list)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in entries:
            if entry.get("kind") in KINDS and isinstance(entry.get("value"), str):
                found[_key(entry["kind"], entry["value"])] = entry
        self._shared = found

    def unpublished(self, published: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Local entries the shared copy lacks (it was down when they were made, or was emptied)."""
        seen = set(published)
        return [entry for key, entry in self._local.items() if key not in seen]

    async def revoke(self, session: Session | None, jti: str | None, agent: str | None,
                     reason: str) -> dict[str, Any]:
        _operator_only(session)
        wanted = _wanted(jti, agent)
        now = utcnow()

        def write(conn: Connection) -> None:
            for kind, value in wanted:
                conn.execute("INSERT INTO revoked_tokens(kind, value, reason, revoked_ts) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT(kind, value) DO UPDATE SET reason = excluded.reason",
                             (kind, value, reason, now))

        await self._store.write(write)
        made = []
        for kind, value in wanted:
            entry = {"kind": kind, "value": value, "reason": reason,
                     "revoked_ts": self._local.get((kind, value), {}).get("revoked_ts", now)}
            self._local[(kind, value)] = entry
            made.append(entry)
        if self.shared is not None:
            await _in_thread(self.shared.publish, made)
        return {"revoked": made, "count": len(self.entries())}

    async def unrevoke(self, session: Session | None, jti: str | None, agent: str | None) -> dict[str, Any]:
        _operator_only(session)
        wanted = _wanted(jti, agent)

        def delete(conn: Connection) -> None:
            for kind, value in wanted:
                conn.execute("DELETE FROM revoked_tokens WHERE kind = ? AND value = ?", (kind, value))

        await self._store.write(delete)
        removed = [{"kind": k, "value": v} for k, v in wanted
                   if self._local.pop((k, v), None) is not None or self._shared.pop((k, v), None) is not None]
        if self.shared is not None:
            for kind, value in wanted:
                await _in_thread(self.shared.withdraw, kind, value)
        return {"unrevoked": removed, "count": len(self.entries())}

    def listing(self, session: Session | None) -> dict[str, Any]:
        _operator_only(session)
        return {"revoked": self.entries(), "shared": self.shared is not None, "refused": self.refused}

    def statistics(self) -> dict[str, Any]:
        return {"revoked": len(self.entries()), "refused": self.refused}


def _wanted(jti: str | None, agent: str | None) -> list[tuple[str, str]]:
    wanted = [_key(kind, value.strip()) for kind, value in (("jti", jti), ("agent", agent)) if value]
    if not wanted:
        raise InvalidArgument("name what to revoke: jti (one token's id) and/or agent (every token naming it)")
    for kind, value in wanted:
        if not value or len(value) > MAX_VALUE:
            raise InvalidArgument(f"{kind} must be 1 to {MAX_VALUE} characters")
    return wanted


def _operator_only(session: Session | None) -> None:
    if session is not None and session.client == "http" and session.id not in OPERATOR_HTTP_SESSIONS:
        raise AuthenticationRequired(
            "only the operator manages revoked tokens: use `mailctl http revoke` on the daemon's machine, "
            "or the bridge's HTTP_BEARER_TOKEN; an agent's JWT cannot")


async def _in_thread(fn: Any, *args: Any) -> None:
    await anyio.to_thread.run_sync(fn, *args)
