"""File reservations: advisory leases on path globs, with an atomic all-or-nothing mode.

Overlap uses gitignore-style matching (pathspec) and is symmetric: two patterns overlap when
either matches the other taken as a path (or they are equal). Virtual namespaces (`tool://x`,
`resource://y`) match exactly and never overlap file paths. Every grant runs inside one
`BEGIN IMMEDIATE` transaction, so with `fail_on_conflict=true` N racing agents get exactly one
grant. Expired leases are released on read and by a periodic sweep; released or expired leases
and non-exclusive ones never block anybody. Force-release probes the project's directory (file
mtimes, and `git log` when it is a repository) on a worker thread *before* taking the writer, then
decides inside the IMMEDIATE transaction; it never edits the user's repository.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio.to_thread

from maild.services import agents as ag
from maild.services.messaging import Outgoing, send_in
from maild.services.projects import find_in, slugify, validate_project_key
from maild.services.sessions import Session
from maild.store import Connection, Store, format_ts, utcnow
from maild.store.outbox import enqueue
from shared.config import Settings
from shared.errors import InvalidArgument, MailError, NotFound
from shared.globs import BROAD, PatternIndex, anchor, is_virtual, matches

MIN_TTL_SECONDS = 60
MAX_PATTERNS = 500
MAX_STALENESS_PROBES = 50
STALE_REASONS = ["agent_inactive", "no_recent_mail_activity", "no_recent_filesystem_activity",
                 "no_recent_git_activity"]
# Bounds on the force-release probes, so a huge tree or repository cannot stall the request.
MAX_PROBED_FILES = 20_000
GIT_PROBE_TIMEOUT_SECONDS = 5.0
_SKIPPED_DIRS = {".git", ".mcp_mail"}
COLUMNS = ("r.id, r.project_id, r.agent_id, a.name, r.path_pattern, r.exclusive, r.reason, r.created_ts,"
           " r.expires_ts, r.released_ts, p.slug")
FROM = "file_reservations r JOIN agents a ON a.id = r.agent_id JOIN projects p ON p.id = r.project_id"


class ReservationActive(MailError):
    code = "RESERVATION_ACTIVE"
    recoverable = True


def reservation_dict(row: Any) -> dict[str, Any]:
    return {"id": row[0], "agent": row[3], "path_pattern": row[4], "exclusive": bool(row[5]), "reason": row[6],
            "created_ts": row[7], "expires_ts": row[8], "released_ts": row[9]}


def normalise(pattern: str, project_root: Path | None) -> str:
    """Validate one pattern; return it relative to the project root. Raises INVALID_ARGUMENT."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidArgument("each path must be a non-empty glob such as 'src/auth/**' or 'docs/*.md'")
    text = pattern.strip()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):  # they would reach git commit messages
        raise InvalidArgument(f"path pattern {pattern!r} contains control characters; use a plain glob")
    if len(text) > 512:
        raise InvalidArgument(f"path pattern is {len(text)} characters; at most 512")
    if is_virtual(text):
        return text
    if text.startswith("/"):
        if project_root is None or not (text == str(project_root) or text.startswith(str(project_root) + "/")):
            raise InvalidArgument(
                f"{text!r} is an absolute path outside the project; use a path relative to the repository root"
            )
        text = text[len(str(project_root)):].lstrip("/") or "**"
    if ".." in PurePosixPath(text).parts:
        raise InvalidArgument(f"{pattern!r} escapes the repository with '..'; use a path inside it")
    return text


def _active(conn: Connection, project_id: int | None, now: str) -> list[Any]:
    where = "r.released_ts IS NULL AND r.expires_ts > ?"
    params: tuple[Any, ...] = (now,)
    if project_id is not None:
        where += " AND r.project_id = ?"
        params = (now, project_id)
    return conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE {where}", params).fetchall()


def _version(conn: Connection) -> tuple[int, int]:
    """Changes by other connections (data_version) and by this one (total_changes)."""
    return int(conn.execute("PRAGMA data_version").get), conn.total_changes()


@dataclass(frozen=True)
class ActiveSet:
    """One project's live reservations with a pattern index, reusable while the database is unchanged
    (same `PRAGMA data_version` and `total_changes()` on the connection) and none has expired yet."""

    conn: Connection
    version: tuple[int, int]
    valid_until: str
    rows: list[Any]
    index: PatternIndex

    def conflicts(self, agent_id: int, pattern: str, exclusive: bool) -> list[dict[str, Any]]:
        hits: list[Any] = self.index.overlapping(pattern)
        return [
            {"agent": r[3], "path_pattern": r[4], "exclusive": bool(r[5]), "expires_ts": r[8], "reservation_id": r[0]}
            for r in sorted(hits)
            if r[2] != agent_id and (exclusive or r[5])
        ]


def _archive(conn: Connection, slug: str, rows: list[Any]) -> None:
    """Queue the archive files of `rows` (COLUMNS rows); every state change calls this. The holder's
    id travels with its name so a rebuild keeps leases on the right agent after a name is reclaimed."""
    if rows:
        enqueue(conn, "file_reservation", slug,
                {"reservations": [{**reservation_dict(r), "agent_id": r[2]} for r in rows]})


def release_all_of_agent(conn: Connection, agent_id: int, now: str) -> int:
    """Release and archive every live lease of one agent (it was retired); returns how many."""
    released = conn.execute(
        "UPDATE file_reservations SET released_ts = ? WHERE agent_id = ? AND released_ts IS NULL RETURNING id",
        (now, agent_id),
    ).fetchall()
    by_slug: dict[str, list[Any]] = {}
    for (rid,) in released:
        fresh: Any = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?", (rid,)).fetchone()
        by_slug.setdefault(fresh[10], []).append(fresh)
    for slug, rows in by_slug.items():
        _archive(conn, slug, rows)
    return len(released)


def grant_in(conn: Connection, project: dict[str, Any], agent_id: int, pattern: str, *, exclusive: bool,
             reason: str, ttl_seconds: int) -> dict[str, Any]:
    """A lease made by the daemon itself (the ack escalation's): no conflict check, since it blocks
    nobody's mail; a live lease of the same holder and pattern is refreshed instead of doubled."""
    now_dt = dt.datetime.now(dt.UTC)
    now, expires = format_ts(now_dt), format_ts(now_dt + dt.timedelta(seconds=ttl_seconds))
    mine = conn.execute(
        "SELECT id FROM file_reservations WHERE agent_id = ? AND project_id = ? AND path_pattern = ?"
        " AND released_ts IS NULL AND expires_ts > ?", (agent_id, project["id"], pattern, now),
    ).fetchone()
    if mine is not None:
        conn.execute("UPDATE file_reservations SET expires_ts = max(expires_ts, ?) WHERE id = ?", (expires, mine[0]))
        rid = mine[0]
    else:
        rid = conn.execute(
            "INSERT INTO file_reservations(project_id, agent_id, path_pattern, exclusive, reason, created_ts,"
            " expires_ts) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (project["id"], agent_id, pattern, int(exclusive), reason, now, expires),
        ).get
    row: Any = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?", (rid,)).fetchone()
    _archive(conn, project["slug"], [row])
    return reservation_dict(row)


def release_expired(conn: Connection, now: str) -> int:
    rows = conn.execute(
        "UPDATE file_reservations SET released_ts = expires_ts WHERE released_ts IS NULL AND expires_ts <= ?"
        " RETURNING id", (now,)
    ).fetchall()
    for (rid,) in rows:
        row: Any = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?", (rid,)).fetchone()
        _archive(conn, row[10], [row])
    return len(rows)


@dataclass(frozen=True)
class Activity:
    """What the filesystem and git say about a pattern, observed outside any transaction."""

    filesystem_ts: str | None = None
    git_ts: str | None = None


def begin(conn: Connection, key: str, session: Session | None, agent_name: str | None, token: str | None,
          release: Callable[[Connection, str], int] = release_expired) -> tuple[dict[str, Any], Any, dt.datetime]:
    """What every lease change starts with (file reservations, and build slots with their own
    `release`): the project, the acting agent, the time, and the leases that expired by then
    released, so they never count as holders."""
    project = find_in(conn, key)
    agent = ag.acting_agent(conn, session, agent_name, token)
    now_dt = dt.datetime.now(dt.UTC)
    release(conn, format_ts(now_dt))
    return project, agent, now_dt


def newest_mtime(root: Path, pattern: str) -> float | None:
    """Newest mtime of the files under `root` matching `pattern`; walks only below the pattern's
    literal leading directories and at most MAX_PROBED_FILES files."""
    prefix = anchor(pattern)
    start = root.joinpath(*prefix) if prefix else root
    walk: Any = [(start.parent, [], [start.name])] if start.is_file() else os.walk(start)
    newest: float | None = None
    seen = 0
    for directory, dirnames, filenames in walk:
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS]
        for name in filenames:
            seen += 1
            if seen > MAX_PROBED_FILES:
                return newest
            path = Path(directory, name)
            if not matches(pattern, path.relative_to(root).as_posix()):
                continue
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            newest = mtime if newest is None else max(newest, mtime)
    return newest


def last_commit_ts(root: Path, pattern: str, within_seconds: float) -> float | None:
    """Commit time of the newest commit touching `pattern` in the last `within_seconds`, when `root`
    is in a git repository. `--since` keeps the history walk short; errors mean "no signal"."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", f"--since={max(1, int(within_seconds))} seconds ago",
             "--format=%ct", "--", pattern],
            capture_output=True, text=True, timeout=GIT_PROBE_TIMEOUT_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return float(text.split()[0]) if out.returncode == 0 and text else None


def probe_activity(root: Path | None, pattern: str, grace_seconds: float) -> Activity:
    """File and commit activity for one reserved pattern (blocking: run it on a worker thread)."""
    if root is None or is_virtual(pattern) or not root.is_dir():
        return Activity()

    def ts(epoch: float | None) -> str | None:
        return None if epoch is None else format_ts(dt.datetime.fromtimestamp(epoch, dt.UTC))

    return Activity(filesystem_ts=ts(newest_mtime(root, pattern)),
                    git_ts=ts(last_commit_ts(root, pattern, grace_seconds)))


class Reservations:
    def __init__(self, store: Store, inactivity_seconds: float = 1800, grace_seconds: float = 900) -> None:
        """`inactivity_seconds` / `grace_seconds`: upstream's FILE_RESERVATION_INACTIVITY_SECONDS and
        FILE_RESERVATION_ACTIVITY_GRACE_SECONDS, the stale-holder thresholds for force-release."""
        self._store = store
        self._inactivity = inactivity_seconds
        self._grace = grace_seconds

        # Per (connection, project): parsing 1,000 live reservations costs ~0.7 ms, reusing them ~10 us.
        self._active_sets: dict[tuple[int, int | None], ActiveSet] = {}
        self._active_sets_lock = threading.Lock()  # the reader and the writer threads share it

    def _active_set(self, conn: Connection, project_id: int | None, now: str) -> ActiveSet:
        cached = self._cached_set(conn, project_id, now)
        if cached is not None:
            return cached
        rows = _active(conn, project_id, now)
        fresh = ActiveSet(conn, _version(conn), min((r[8] for r in rows), default="9999"), rows,
                          PatternIndex([(r[4], r) for r in rows]))
        with self._active_sets_lock:
            if len(self._active_sets) > 256:
                self._active_sets.clear()
            self._active_sets[(id(conn), project_id)] = fresh
        return fresh

    def _cached_set(self, conn: Connection, project_id: int | None, now: str | None = None) -> ActiveSet | None:
        """The connection's live set for a project if it is still exact (never re-reads)."""
        with self._active_sets_lock:
            cached = self._active_sets.get((id(conn), project_id))
        if (cached is not None and cached.conn is conn and cached.version == _version(conn)
                and (now or utcnow()) < cached.valid_until):
            return cached
        return None

    def _advance(self, conn: Connection, project_id: int, active: ActiveSet, granted: list[Any],
                 released: list[Any] | None = None) -> None:
        """After a grant or release, derive the new live set from the old one instead of re-reading
        1,000 rows: granted rows replace earlier rows with the same ids (refreshes), released go."""
        released = released or []
        ids = {r[0] for r in granted} | {r[0] for r in released}

        def keep(row: Any) -> bool:
            return row[0] not in ids

        fresh = ActiveSet(conn, _version(conn), min([active.valid_until, *(r[8] for r in granted)]),
                          [r for r in active.rows if keep(r)] + granted,
                          active.index.updated([(r[4], r) for r in granted], [r[4] for r in released], keep))
        with self._active_sets_lock:
            self._active_sets[(id(conn), project_id)] = fresh

    def _forget(self, conn: Connection | None = None) -> None:
        """Drop a connection's cached sets (after a rollback, total_changes() no longer describes it)."""
        with self._active_sets_lock:
            for slot in [s for s, cached in self._active_sets.items() if conn is None or cached.conn is conn]:
                del self._active_sets[slot]

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> Reservations:
        return cls(store, settings.reservation_inactivity_seconds, settings.reservation_activity_grace_seconds)

    async def reserve(
        self, session: Session | None, project_key: str, agent_name: str | None, token: str | None,
        paths: list[str], ttl_seconds: int, exclusive: bool, reason: str, fail_on_conflict: bool,
    ) -> dict[str, Any]:
        key = validate_project_key(project_key)
        if not paths:
            raise InvalidArgument("paths must list at least one glob, e.g. ['src/auth/**']")
        if len(paths) > MAX_PATTERNS:
            raise InvalidArgument(f"at most {MAX_PATTERNS} paths per call")
        if ttl_seconds < MIN_TTL_SECONDS:
            raise InvalidArgument(f"ttl_seconds must be at least {MIN_TTL_SECONDS} (got {ttl_seconds})")
        if len(reason) > 512:
            raise InvalidArgument("reason is limited to 512 characters")
        root = Path(key) if key.startswith("/") else None
        patterns = list(dict.fromkeys(normalise(p, root) for p in paths))
        warnings = [f"{p!r} covers the whole repository; reserve the paths you will edit" for p in patterns
                    if p in BROAD]

        def unit(conn: Connection) -> dict[str, Any]:
            project, agent, now_dt = begin(conn, key, session, agent_name, token)
            now = format_ts(now_dt)
            active = self._active_set(conn, project["id"], now)
            conflicts: list[dict[str, Any]] = [
                {"path": p, "holders": c} for p in patterns if (c := active.conflicts(agent[0], p, exclusive))
            ]
            if fail_on_conflict and any(h["exclusive"] or exclusive for c in conflicts for h in c["holders"]):
                return {"granted": [], "conflicts": conflicts, "warnings": warnings, "refused": True}
            expires = format_ts(now_dt + dt.timedelta(seconds=ttl_seconds))
            granted = []
            for pattern in patterns:
                mine = conn.execute(
                    "SELECT id FROM file_reservations WHERE agent_id = ? AND project_id = ? AND path_pattern = ?"
                    " AND released_ts IS NULL AND expires_ts > ?", (agent[0], project["id"], pattern, now),
                ).fetchone()
                if mine is not None:  # re-reserving one's own pattern refreshes it
                    conn.execute("UPDATE file_reservations SET expires_ts = ?, exclusive = ?, reason = ? WHERE id = ?",
                                 (expires, int(exclusive), reason, mine[0]))
                    rid = mine[0]
                else:
                    rid = conn.execute(
                        "INSERT INTO file_reservations(project_id, agent_id, path_pattern, exclusive, reason,"
                        " created_ts, expires_ts) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        (project["id"], agent[0], pattern, int(exclusive), reason, now, expires),
                    ).get
                granted.append(conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?", (rid,)).fetchone())
            conn.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, agent[0]))
            _archive(conn, project["slug"], granted)
            self._advance(conn, project["id"], active, granted)  # last: after every write of this unit
            return {
                "granted": [{k: v for k, v in reservation_dict(r).items() if k not in ("agent", "released_ts")}
                            for r in granted],
                "conflicts": conflicts,
                "warnings": warnings,
            }

        def guarded(conn: Connection) -> dict[str, Any]:
            try:
                return unit(conn)
            except BaseException:
                self._forget(conn)
                raise

        try:
            return await self._store.write(guarded)
        except BaseException:
            self._forget()  # the commit itself may have failed after the unit advanced the cache
            raise

    async def release(self, session: Session | None, project_key: str, agent_name: str | None, token: str | None,
                      paths: list[str] | None, ids: list[int] | None) -> dict[str, Any]:
        key = validate_project_key(project_key)

        def unit(conn: Connection) -> dict[str, Any]:
            project = find_in(conn, key)
            agent = ag.acting_agent(conn, session, agent_name, token)
            cached = self._cached_set(conn, project["id"])
            now = utcnow()
            rows = [r for r in conn.execute(
                f"SELECT {COLUMNS} FROM {FROM} WHERE r.agent_id = ? AND r.project_id = ? AND r.released_ts IS NULL",
                (agent[0], project["id"])).fetchall()
                if (paths is None or r[4] in paths) and (ids is None or r[0] in ids)]
            for r in rows:
                conn.execute("UPDATE file_reservations SET released_ts = ? WHERE id = ?", (now, r[0]))
            _archive(conn, project["slug"], [conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?",
                                                          (r[0],)).fetchone() for r in rows])
            if cached is not None:
                self._advance(conn, project["id"], cached, [], rows)
            return {"released": len(rows), "released_at": now}

        try:
            return await self._store.write(unit)
        except BaseException:
            self._forget()  # the unit may have advanced the cache before a rollback
            raise

    async def renew(self, session: Session | None, project_key: str, agent_name: str | None, token: str | None,
                    extend_seconds: int, paths: list[str] | None, ids: list[int] | None) -> dict[str, Any]:
        key = validate_project_key(project_key)
        extend = dt.timedelta(seconds=max(MIN_TTL_SECONDS, extend_seconds))

        def unit(conn: Connection) -> dict[str, Any]:
            project, agent, now_dt = begin(conn, key, session, agent_name, token)
            renewed: list[dict[str, Any]] = []
            rows: list[Any] = []
            mine: list[Any] = conn.execute(
                f"SELECT {COLUMNS} FROM {FROM} WHERE r.agent_id = ? AND r.project_id = ? AND r.released_ts IS NULL",
                (agent[0], project["id"]),
            ).fetchall()
            for r in mine:
                if (paths is not None and r[4] not in paths) or (ids is not None and r[0] not in ids):
                    continue
                old = dt.datetime.fromisoformat(r[8].replace("Z", "+00:00"))
                new = format_ts(max(now_dt, old) + extend)
                # Only the expiry changes: exclusive and reason keep their original values.
                conn.execute("UPDATE file_reservations SET expires_ts = ? WHERE id = ?", (new, r[0]))
                renewed.append({"id": r[0], "path_pattern": r[4], "old_expires_ts": r[8], "new_expires_ts": new})
                rows.append(conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?", (r[0],)).fetchone())
            _archive(conn, project["slug"], rows)
            return {"renewed": len(renewed), "file_reservations": renewed}

        return await self._store.write(unit)

    def _staleness(self, conn: Connection, row: Any, activity: Activity, now: dt.datetime) -> dict[str, Any]:
        def age(ts: str | None) -> float | None:
            return None if ts is None else (now - dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds()

        agent_ts = conn.execute("SELECT last_active_ts FROM agents WHERE id = ?", (row[2],)).get
        mail_ts = conn.execute(
            "SELECT max(ts) FROM (SELECT max(created_ts) AS ts FROM messages WHERE sender_id = ?"
            " UNION ALL SELECT max(coalesce(ack_ts, read_ts)) FROM message_recipients WHERE agent_id = ?)",
            (row[2], row[2]),
        ).get
        reasons = []
        agent_age = age(agent_ts)
        if agent_age is not None and agent_age < self._inactivity:
            reasons.append("agent_recently_active")
        for name, ts in (("mail", mail_ts), ("filesystem", activity.filesystem_ts), ("git", activity.git_ts)):
            seen = age(ts)
            if seen is not None and seen < self._grace:
                reasons.append(f"recent_{name}_activity")
        return {"stale": not reasons, "active_reasons": reasons, "last_agent_activity_ts": agent_ts,
                "last_mail_activity_ts": mail_ts, "last_filesystem_activity_ts": activity.filesystem_ts,
                "last_git_activity_ts": activity.git_ts}

    async def force_release(self, session: Session | None, project_key: str, agent_name: str | None,
                            token: str | None, reservation_id: int, notify_previous: bool,
                            note: str) -> dict[str, Any]:
        key = validate_project_key(project_key)
        root = Path(key) if key.startswith("/") else None

        def lookup(conn: Connection) -> Any:
            project = find_in(conn, key)
            row = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ? AND r.project_id = ?",
                               (reservation_id, project["id"])).fetchone()
            if row is None:
                raise NotFound(f"file reservation {reservation_id} does not exist in this project",
                               data={"file_reservation_id": reservation_id})
            return row

        # Probe the filesystem and git first, off the writer: a slow walk must not hold up every write.
        pattern = (await self._store.read(lookup))[4]
        activity = await anyio.to_thread.run_sync(probe_activity, root, pattern, self._grace)

        def unit(conn: Connection) -> dict[str, Any]:
            project = find_in(conn, key)
            me = ag.acting_agent(conn, session, agent_name, token)
            row = lookup(conn)
            if row[9] is not None:
                return {"released": 0, "released_at": row[9], "already_released": True}
            now_dt = dt.datetime.now(dt.UTC)
            signals = self._staleness(conn, row, activity, now_dt)
            if not signals["stale"] and row[8] > format_ts(now_dt):
                raise ReservationActive(
                    f"reservation {reservation_id} on {row[4]!r} by {row[3]} is still in use "
                    f"({', '.join(signals['active_reasons'])}); message {row[3]} instead",
                    data={"stale_reasons": signals["active_reasons"], **signals},
                )
            now = format_ts(now_dt)
            conn.execute("UPDATE file_reservations SET released_ts = ? WHERE id = ?", (now, row[0]))
            fresh = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?", (row[0],)).fetchone()
            _archive(conn, project["slug"], [fresh])
            notified = False
            if notify_previous and row[2] != me[0]:
                body = (f"{me[1]} released your stale reservation of `{row[4]}` (id {row[0]}).\n\n"
                        f"- last agent activity: {signals['last_agent_activity_ts']}\n"
                        f"- last mail activity: {signals['last_mail_activity_ts']}\n"
                        f"- last file change: {signals['last_filesystem_activity_ts']}\n"
                        f"- last commit touching it: {signals['last_git_activity_ts']}\n"
                        + (f"\nNote: {note}\n" if note else ""))
                out = Outgoing(project_key=key, subject=f"[file-reservations] Released stale lock on {row[4]}"[:512],
                               body_md=body, to=[row[3]])
                send_in(conn, session, out, me[1], token, False)
                notified = True
            return {"released": 1, "released_at": now,
                    "reservation": {**reservation_dict(fresh), **signals, "notified": notified}}

        return await self._store.write(unit)

    async def listing(self, project_key: str, active_only: bool) -> list[dict[str, Any]]:
        """A project's reservations; live ones carry upstream's staleness fields (stale, stale_reasons,
        last_*_activity_ts), probed like force-release does, for at most MAX_STALENESS_PROBES of them."""
        key = validate_project_key(project_key)
        root = Path(key) if key.startswith("/") else None

        def rows_of(conn: Connection) -> list[Any]:
            project = find_in(conn, key)
            found: list[Any] = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.project_id = ? ORDER BY r.id",
                                            (project["id"],)).fetchall()
            return found

        rows = await self._store.read(rows_of)
        now = utcnow()
        live = [r for r in rows if r[9] is None and r[8] > now][:MAX_STALENESS_PROBES]
        activity: dict[int, Activity] = {}
        for r in live:
            activity[r[0]] = await anyio.to_thread.run_sync(probe_activity, root, r[4], self._grace)

        def unit(conn: Connection) -> list[dict[str, Any]]:
            now_dt = dt.datetime.now(dt.UTC)
            out = []
            for r in rows:
                expired = r[9] is None and r[8] <= now
                if active_only and (r[9] is not None or expired):
                    continue
                item = {**reservation_dict(r), "expired": expired}
                if r[0] in activity:
                    signals = self._staleness(conn, r, activity[r[0]], now_dt)
                    # Stale means every signal is quiet; otherwise active_reasons says which one is not.
                    item.update(stale=signals["stale"], stale_reasons=STALE_REASONS if signals["stale"] else [],
                                active_reasons=signals["active_reasons"],
                                **{k: v for k, v in signals.items() if k.startswith("last_")})
                out.append(item)
            return out

        return await self._store.read(unit)

    async def check_paths(self, agent_name: str | None, paths: list[str],
                          project_key: str | None = None) -> list[dict[str, Any]]:
        """Exclusive reservations of *other* agents that these concrete paths fall under (the guard),
        within one project when `project_key` is given (the hook always gives its repository's)."""
        slug = None if project_key is None else slugify(validate_project_key(project_key))

        def unit(conn: Connection) -> list[dict[str, Any]]:
            project_id = None
            if slug is not None:
                project_id = conn.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).get
                if project_id is None:  # a project nobody has used yet holds no reservations
                    return []
            me = ag.find_active(conn, agent_name) if agent_name else None
            active = self._active_set(conn, project_id, utcnow())
            hits = []
            for path in paths:
                for r in active.index.matching(path):
                    assert isinstance(r, tuple)
                    if r[5] and not is_virtual(r[4]) and (me is None or r[2] != me[0]):
                        hits.append({"path": path, "agent": r[3], "path_pattern": r[4], "expires_ts": r[8],
                                     "reservation_id": r[0]})
            return hits

        return await self._store.read(unit)

    async def sweep(self) -> int:
        return await self._store.write(release_expired, utcnow())
