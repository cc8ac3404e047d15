"""Build slots: named leases on a build resource ("frontend-build", "test-db"), exclusive or shared.

A lease belongs to (agent, branch): one agent building in two worktrees holds two leases. Acquire
decides inside one IMMEDIATE write transaction, so N agents racing for an exclusive slot get exactly
one grant; a conflict grants nothing and names each holder, its branch and its expiry. Renew never
shortens a lease; release is idempotent. Expired leases never block anybody and the daemon's
periodic sweep records their release. Every state change is archived (one file per lease, rewritten
in place). It does not run builds: `mailctl run --slot` does, on the client side.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from maild.services.projects import find_in, validate_project_key
from maild.services.reservations import begin
from maild.services.sessions import Session
from maild.store import Connection, Store, format_ts, utcnow
from maild.store.outbox import enqueue
from shared.errors import InvalidArgument, SlotNotHeld

MIN_TTL_SECONDS = 60  # upstream's minimum
MAX_TTL_SECONDS = 7 * 24 * 3600  # a forgotten lease must end some day
DEFAULT_BRANCH = "main"  # upstream's default (its `BRANCH` environment variable)
_SLOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Anything git accepts as a branch name, roughly: no whitespace, control characters or ~^:?*[\ .
_BRANCH_NAME = re.compile(r"^[^\s\x00-\x1f\x7f~^:?*\[\\]{1,200}$")
COLUMNS = ("s.id, s.project_id, s.agent_id, a.name, s.slot, s.branch, s.exclusive, s.acquired_ts, s.expires_ts,"
           " s.released_ts, p.slug")
FROM = "build_slots s JOIN agents a ON a.id = s.agent_id JOIN projects p ON p.id = s.project_id"
RetireHook = Callable[[Connection, int, str], int]


def lease_dict(row: Any) -> dict[str, Any]:
    return {"slot": row[4], "agent": row[3], "branch": row[5], "exclusive": bool(row[6]), "acquired_ts": row[7],
            "expires_ts": row[8], "released_ts": row[9]}


def holder_dict(row: Any) -> dict[str, Any]:
    """How a conflict names a holder: who, on which branch, shared or not, until when."""
    return {"agent": row[3], "branch": row[5], "exclusive": bool(row[6]), "acquired_ts": row[7],
            "expires_ts": row[8]}


def validate_slot(slot: object) -> str:
    if not isinstance(slot, str) or not _SLOT_NAME.match(slot) or ".." in slot:
        raise InvalidArgument(
            f"slot {slot!r} is not a slot name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (e.g. 'frontend-build')", data={"parameter": "slot"})
    return slot


def validate_branch(branch: str | None) -> str:
    if branch is None or branch == "":
        return DEFAULT_BRANCH
    if not _BRANCH_NAME.match(branch) or ".." in branch:
        raise InvalidArgument(
            f"branch {branch!r} is not a branch name: at most 200 characters, no whitespace, control characters "
            "or any of ~^:?*[\\ and no '..' (e.g. 'main' or 'feature/login')", data={"parameter": "branch"})
    return branch


def validate_ttl(seconds: int, name: str) -> int:
    if not MIN_TTL_SECONDS <= seconds <= MAX_TTL_SECONDS:
        raise InvalidArgument(
            f"{name} must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} seconds (got {seconds})",
            data={"parameter": name})
    return seconds


def _archive(conn: Connection, slug: str, action: str, rows: list[Any]) -> None:
    """Queue the lease files of `rows` (COLUMNS rows). The holder's id travels with its name, since
    names can be reclaimed."""
    if rows:
        enqueue(conn, "build_slot", slug,
                {"action": action, "leases": [{**lease_dict(r), "agent_id": r[2]} for r in rows]})


def _row(conn: Connection, lease_id: Any) -> Any:
    return conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE s.id = ?", (lease_id,)).fetchone()


def release_expired(conn: Connection, now: str) -> int:
    """Record the release of every expired lease (released_ts = its expiry) and archive it."""
    expired = conn.execute(
        "UPDATE build_slots SET released_ts = expires_ts WHERE released_ts IS NULL AND expires_ts <= ? RETURNING id",
        (now,)).fetchall()
    by_slug: dict[str, list[Any]] = {}
    for (lease_id,) in expired:
        row = _row(conn, lease_id)
        by_slug.setdefault(row[10], []).append(row)
    for slug, rows in by_slug.items():
        _archive(conn, slug, "expired", rows)
    return len(expired)


def release_slots_of_agent(conn: Connection, agent_id: int, now: str) -> int:
    """Release and archive every live lease of one agent (it was retired); returns how many."""
    released = conn.execute(
        "UPDATE build_slots SET released_ts = ? WHERE agent_id = ? AND released_ts IS NULL RETURNING id",
        (now, agent_id)).fetchall()
    rows = [_row(conn, lease_id) for (lease_id,) in released]
    for slug in {r[10] for r in rows}:
        _archive(conn, slug, "released", [r for r in rows if r[10] == slug])
    return len(released)


def with_slots(release_reservations: RetireHook) -> RetireHook:
    """A retire hook that also releases the agent's build slots; it returns what the reservations
    hook returns (the `released_reservations` count callers report)."""

    def hook(conn: Connection, agent_id: int, now: str) -> int:
        release_slots_of_agent(conn, agent_id, now)
        return release_reservations(conn, agent_id, now)

    return hook


class BuildSlots:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def acquire(self, session: Session | None, project_key: str, agent_name: str | None, token: str | None,
                      slot: str, branch: str | None, ttl_seconds: int, exclusive: bool) -> dict[str, Any]:
        key = validate_project_key(project_key)
        name = validate_slot(slot)
        on_branch = validate_branch(branch)
        ttl = dt.timedelta(seconds=validate_ttl(ttl_seconds, "ttl_seconds"))

        def unit(conn: Connection) -> dict[str, Any]:
            project, agent, now_dt = begin(conn, key, session, agent_name, token, release_expired)
            now = format_ts(now_dt)
            live = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE s.project_id = ? AND s.slot = ?"
                                " AND s.released_ts IS NULL ORDER BY s.id", (project["id"], name)).fetchall()
            mine = next((r for r in live if r[2] == agent[0] and r[5] == on_branch), None)
            conflicts = [holder_dict(r) for r in live if r is not mine and (exclusive or r[6])]
            if conflicts:  # nothing is written: the caller may wait and retry, or build elsewhere
                return {"granted": False, "slot": name, "branch": on_branch, "exclusive": exclusive,
                        "conflicts": conflicts}
            expires = format_ts(now_dt + ttl)
            if mine is not None:  # re-acquiring one's own live lease: never shortens it
                conn.execute("UPDATE build_slots SET exclusive = ?, expires_ts = max(expires_ts, ?) WHERE id = ?",
                             (int(exclusive), expires, mine[0]))
                lease_id = mine[0]
            else:  # the (project, slot, agent, branch) row is reused: one row per holder and branch
                lease_id = conn.execute(
                    "INSERT INTO build_slots(project_id, slot, agent_id, branch, exclusive, acquired_ts, expires_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, slot, agent_id, branch) DO UPDATE SET"
                    " exclusive = excluded.exclusive, acquired_ts = excluded.acquired_ts,"
                    " expires_ts = excluded.expires_ts, released_ts = NULL RETURNING id",
                    (project["id"], name, agent[0], on_branch, int(exclusive), now, expires)).get
            conn.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, agent[0]))
            row = _row(conn, lease_id)
            _archive(conn, project["slug"], "acquired", [row])
            return {"granted": True, **lease_dict(row), "conflicts": []}

        return await self._store.write(unit)

    def _held(self, conn: Connection, project: dict[str, Any], agent: Any, slot: str, branch: str) -> Any:
        return conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE s.project_id = ? AND s.slot = ? AND s.agent_id = ?"
                            " AND s.branch = ?", (project["id"], slot, agent[0], branch)).fetchone()

    async def renew(self, session: Session | None, project_key: str, agent_name: str | None, token: str | None,
                    slot: str, branch: str | None, extend_seconds: int) -> dict[str, Any]:
        key = validate_project_key(project_key)
        name = validate_slot(slot)
        on_branch = validate_branch(branch)
        extend = dt.timedelta(seconds=validate_ttl(extend_seconds, "extend_seconds"))

        def unit(conn: Connection) -> dict[str, Any]:
            project, agent, now_dt = begin(conn, key, session, agent_name, token, release_expired)
            row = self._held(conn, project, agent, name, on_branch)
            if row is None or row[9] is not None:
                state = "was never acquired" if row is None else f"ended at {row[9]}"
                raise SlotNotHeld(
                    f"{agent[1]} holds no lease on slot {name!r} for branch {on_branch!r} (it {state}); "
                    "call acquire_build_slot again (someone else may hold the slot now)",
                    data={"slot": name, "branch": on_branch, "agent": agent[1]})
            # Never shortens: a lease acquired for 2 h and renewed by 30 min keeps its 2 h.
            new = max(row[8], format_ts(now_dt + extend))
            conn.execute("UPDATE build_slots SET expires_ts = ? WHERE id = ?", (new, row[0]))
            fresh = _row(conn, row[0])
            _archive(conn, project["slug"], "renewed", [fresh])
            return {"renewed": True, "slot": name, "branch": on_branch, "old_expires_ts": row[8],
                    "expires_ts": new}

        return await self._store.write(unit)

    async def release(self, session: Session | None, project_key: str, agent_name: str | None, token: str | None,
                      slot: str, branch: str | None) -> dict[str, Any]:
        key = validate_project_key(project_key)
        name = validate_slot(slot)
        on_branch = validate_branch(branch)

        def unit(conn: Connection) -> dict[str, Any]:
            project, agent, now_dt = begin(conn, key, session, agent_name, token, release_expired)
            now = format_ts(now_dt)
            row = self._held(conn, project, agent, name, on_branch)
            if row is None or row[9] is not None:  # idempotent: releasing twice is not an error
                return {"released": False, "slot": name, "branch": on_branch,
                        "released_ts": None if row is None else row[9]}
            conn.execute("UPDATE build_slots SET released_ts = ? WHERE id = ?", (now, row[0]))
            _archive(conn, project["slug"], "released", [_row(conn, row[0])])
            return {"released": True, "slot": name, "branch": on_branch, "released_ts": now}

        return await self._store.write(unit)

    async def listing(self, project_key: str, active_only: bool) -> dict[str, Any]:
        """A project's leases grouped by slot; expired ones are marked (the sweep releases them)."""
        key = validate_project_key(project_key)

        def unit(conn: Connection) -> dict[str, Any]:
            project = find_in(conn, key)
            now = utcnow()
            rows: list[Any] = conn.execute(
                f"SELECT {COLUMNS} FROM {FROM} WHERE s.project_id = ? ORDER BY s.slot, s.id", (project["id"],)
            ).fetchall()
            leases = []
            for r in rows:
                live = r[9] is None and r[8] > now
                if active_only and not live:
                    continue
                leases.append({**lease_dict(r), "active": live, "expired": r[9] is None and not live})
            return {"project": project["slug"], "generated_at": now, "slots": leases}

        return await self._store.read(unit)

    async def sweep(self) -> int:
        return await self._store.write(release_expired, utcnow())
