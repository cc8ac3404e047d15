"""Full-text search over a project's mail: ranked queries, filters, snippets.

Owns: bm25 ranking with `<mark>` snippets, the filters (agent, time, importance, thread), and
applying the visibility rule of visibility.py inside the query. The query language itself (any
string to a valid FTS5 expression) lives in search_query.py. It does not keep the index in sync:
triggers in the store do that inside each writing transaction.

Cost: bm25 grows with the number of matches (implementation-notes §3.3), so only the newest
`search_rank_window` matches are ranked, topped up newest-first when filters leave too few;
thread and small time-range filters seek instead of walking; a reader limited to its own mail is
tested against its message set, built once per query (a reader with no mail costs nothing).
Figures: docs/search.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from maild.services import visibility
from maild.services.projects import find_in, validate_project_key
from maild.services.search_query import _EXPR_TERM, _highlighter, python_snippet, sanitize_query
from maild.services.visibility import Viewer
from maild.store import Connection, Store
from shared.errors import InvalidArgument, NotFound

__all__ = ["Search", "SearchFilters", "normalize_importance", "run_search", "sanitize_query"]

MAX_LIMIT = 1000
IMPORTANCE = ("low", "normal", "high", "urgent")
# Subject hits weigh twice body hits.
BM25 = "bm25(messages_fts, 2.0, 1.0)"
# Up to this many messages of its own, a reader limited to its own mail is tested against its
# message set (built once per query); beyond, each candidate row's recipients are probed.
SMALL_MAILBOX = 5000


@dataclass(frozen=True)
class SearchFilters:
    agent: str | None = None  # sender or any recipient (by name)
    since_ts: str | None = None
    until_ts: str | None = None
    importance: tuple[str, ...] = ()
    thread_id: str | None = None


def normalize_importance(value: str | list[str] | None) -> tuple[str, ...]:
    if not value:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        level = str(item).strip().lower()
        if level not in IMPORTANCE:
            raise InvalidArgument(f"importance must be one of {', '.join(IMPORTANCE)}, got {item!r}")
        out.append(level)
    return tuple(dict.fromkeys(out))


def find_agent_id(conn: Connection, name: str) -> int:
    row = conn.execute(
        "SELECT id FROM agents WHERE lower(name) = lower(?) ORDER BY is_active DESC, id DESC LIMIT 1", (name,)
    ).fetchone()
    if row is None:
        raise NotFound(
            f"agent_filter {name!r} is not a known agent; list agents with resource://agents/<project>",
            data={"type": "agent_filter_not_found", "agent": name},
        )
    agent_id: int = row[0]
    return agent_id


def _filter_sql(
    conn: Connection, project_id: int, viewer: Viewer, filters: SearchFilters, *, bulk: bool = False
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"project": project_id}
    where = ["m.project_id = :project", visibility.clause(viewer, params, project_id=project_id, bulk=bulk)]
    if filters.agent:
        params["agent"] = find_agent_id(conn, filters.agent)
        where.append(
            "(m.sender_id = :agent OR EXISTS (SELECT 1 FROM message_recipients ar"
            " WHERE ar.message_id = m.id AND ar.agent_id = :agent))"
        )
    if filters.since_ts:
        params["since"] = filters.since_ts
        where.append("m.created_ts >= :since")
    if filters.until_ts:
        params["until"] = filters.until_ts
        where.append("m.created_ts <= :until")
    if filters.importance:
        names = []
        for i, level in enumerate(filters.importance):
            params[f"imp{i}"] = level
            names.append(f":imp{i}")
        where.append(f"m.importance IN ({', '.join(names)})")
    if filters.thread_id:
        params["thread"] = filters.thread_id
        clause = "m.thread_id = :thread"
        if filters.thread_id.isdigit():
            params["thread_seed"] = int(filters.thread_id)
            clause = "(m.thread_id = :thread OR m.id = :thread_seed)"
        where.append(clause)
    return " AND ".join(where), params


def load_messages(
    conn: Connection, ids: list[int], viewer: Viewer, *, include_bodies: bool
) -> dict[int, dict[str, Any]]:
    """Full message dicts (with from/to/cc/bcc names) for `ids`; bcc names as visibility.shown_bcc."""
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    out: dict[int, dict[str, Any]] = {}
    for row in conn.execute(
        "SELECT m.id, m.project_id, m.sender_id, a.name, m.thread_id, m.subject, m.body_md, m.importance,"
        f" m.ack_required, m.created_ts, m.attachments FROM messages m JOIN agents a ON a.id = m.sender_id"
        f" WHERE m.id IN ({marks})",
        ids,
    ):
        try:
            attachments = json.loads(row[10])
        except ValueError:
            attachments = []
        message: dict[str, Any] = {
            "id": row[0],
            "project_id": row[1],
            "sender_id": row[2],
            "from": row[3],
            "thread_id": row[4],
            "subject": row[5],
            "importance": row[7],
            "ack_required": bool(row[8]),
            "created_ts": row[9],
            "attachments": attachments,
            "to": [],
            "cc": [],
            "bcc": [],
        }
        if include_bodies:
            message["body_md"] = row[6]
        out[row[0]] = message
    for message_id, kind, name in conn.execute(
        "SELECT r.message_id, r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
        f" WHERE r.message_id IN ({marks}) ORDER BY a.name",
        ids,
    ):
        owner = out.get(message_id)
        if owner is None:
            continue
        owner[kind].append(name)
    for message in out.values():  # a recipient must not learn who else was blind-copied
        message["bcc"] = visibility.shown_bcc(viewer, message["sender_id"], message["bcc"])
    return out


def relevance(bm25_score: float) -> float:
    """bm25 is negative (lower is better); map it to a score in [0, 1) that grows with relevance."""
    strength = max(0.0, -bm25_score)
    return round(strength / (1.0 + strength), 6)


def _ranked(
    conn: Connection, base: str, params: dict[str, Any], *, window: int, limit: int, ceiling: str
) -> list[Any]:
    """bm25 over the newest `window` matches, topped up newest-first when filters leave too few."""
    # Walking a doclist newest-first is cheap (no ranking, no join): it finds the window's floor.
    floor = conn.execute(
        f"SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q {ceiling}"
        " ORDER BY rowid DESC LIMIT 1 OFFSET :skip",
        {**params, "skip": max(1, window) - 1},
    ).fetchone()
    bounded = base if floor is None else f"{base} AND messages_fts.rowid >= {int(floor[0])}"
    rows = conn.execute(
        f"SELECT m.id, {BM25} AS score {bounded} ORDER BY score, m.id DESC LIMIT :limit", params
    ).fetchall()
    if floor is None or len(rows) >= limit:
        return rows
    # Selective filters (a rare importance, a bound agent's view): take the next matches that pass,
    # newest first, stopping as soon as there are enough (widening the ranked window instead
    # would walk many times more rows), then order everything by relevance.
    more = conn.execute(
        f"SELECT m.id, {BM25} AS score {base} AND messages_fts.rowid < {int(floor[0])}"
        " ORDER BY messages_fts.rowid DESC LIMIT :more",
        {**params, "more": limit - len(rows)},
    ).fetchall()
    return sorted([*rows, *more], key=lambda row: (row[1], -row[0]))


TIME_HINT_MAX_ROWS = 50_000


def _id_range(conn: Connection, project_id: int, filters: SearchFilters) -> tuple[int, int] | None:
    """The id span of the messages in a time range, when the range is small enough to scan.

    Exact whatever the id/time correlation: ids outside [lo, hi] cannot be in the range, and
    the time predicate itself still filters inside it. It lets FTS5 seek instead of walking.
    """
    if not (filters.since_ts or filters.until_ts):
        return None
    row = conn.execute(
        "SELECT min(id), max(id), count(*) FROM (SELECT id FROM messages WHERE project_id = ?"
        " AND created_ts >= ? AND created_ts <= ? LIMIT ?)",
        (project_id, filters.since_ts or "", filters.until_ts or "\uffff", TIME_HINT_MAX_ROWS + 1),
    ).fetchone()
    if row is None or row[2] > TIME_HINT_MAX_ROWS:
        return None
    if row[2] == 0:
        return (0, -1)
    return (int(row[0]), int(row[1]))


def _as_hits(rows: Any) -> list[tuple[int, float]]:
    return [(int(message_id), float(score)) for message_id, score in rows]


def run_search(
    conn: Connection,
    *,
    project_id: int,
    expr: str,
    viewer: Viewer,
    filters: SearchFilters,
    limit: int,
    order: str,
    window: int,
    include_bodies: bool,
) -> list[dict[str, Any]]:
    own = SMALL_MAILBOX + 1
    if visibility.participants_only(viewer, project_id):
        own = visibility.mail_count(conn, viewer.agent_id or 0, SMALL_MAILBOX + 1)
        if own == 0:
            return []  # a reader who took part in nothing finds nothing, without touching the index
    # A small message set is cheap to build once and test each match against; a large one matches
    # often enough that probing the recipients of the few rows looked at is cheaper.
    where, params = _filter_sql(conn, project_id, viewer, filters, bulk=own <= SMALL_MAILBOX)
    params["q"] = expr
    params["limit"] = limit
    if filters.thread_id:
        # A thread is small: walk its messages and probe the index for each (rowid = ? is a seek).
        base = (
            "FROM messages m CROSS JOIN messages_fts ON messages_fts.rowid = m.id"
            f" WHERE messages_fts MATCH :q AND {where}"
        )
        ordering = "messages_fts.rowid DESC" if order == "newest" else "score, m.id DESC"
        rows = conn.execute(f"SELECT m.id, {BM25} AS score {base} ORDER BY {ordering} LIMIT :limit", params).fetchall()
    else:
        base = (
            "FROM messages_fts CROSS JOIN messages m ON m.id = messages_fts.rowid"
            f" WHERE messages_fts MATCH :q AND {where}"
        )
        ceiling = ""
        span = _id_range(conn, project_id, filters)
        if span is not None:
            params["lo"], params["hi"] = span
            base += " AND messages_fts.rowid BETWEEN :lo AND :hi"
            ceiling = "AND rowid BETWEEN :lo AND :hi"
        if order == "newest":
            rows = conn.execute(
                f"SELECT m.id, {BM25} {base} ORDER BY messages_fts.rowid DESC LIMIT :limit", params
            ).fetchall()
        else:
            rows = _ranked(conn, base, params, window=window, limit=limit, ceiling=ceiling)
    hits = _as_hits(rows)
    ids = [message_id for message_id, _ in hits]
    if not ids:
        return []
    return _with_snippets(conn, expr, hits, load_messages(conn, ids, viewer, include_bodies=include_bodies))


def _with_snippets(
    conn: Connection, expr: str, hits: list[tuple[int, float]], messages: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The hits in order, each with its relevance score and subject/body snippets."""
    snippet_sql = (
        "SELECT snippet(messages_fts, 0, '<mark>', '</mark>', '...', 32),"
        " snippet(messages_fts, 1, '<mark>', '</mark>', '...', 64)"
        " FROM messages_fts WHERE messages_fts MATCH ? AND rowid = ?"
    )
    has_prefix = any(star for _, star in _EXPR_TERM.findall(expr))
    pattern = _highlighter(expr) if has_prefix else None
    results = []
    for message_id, score in hits:
        message = messages.get(message_id)
        if message is None:
            continue
        if has_prefix:
            subject_snippet = python_snippet(message["subject"], pattern, 32)
            body = message.get("body_md")
            if body is None:
                body = conn.execute("SELECT body_md FROM messages WHERE id = ?", (message_id,)).get
            body_snippet = python_snippet(str(body or ""), pattern, 64)
        else:
            # One seek per result: `rowid IN (...)` would make FTS5 evaluate the whole query.
            found = conn.execute(snippet_sql, (expr, message_id)).fetchone()
            subject_snippet, body_snippet = found if found is not None else ("", "")
        message["relevance_score"] = relevance(score)
        message["subject_snippet"] = subject_snippet
        message["body_snippet"] = body_snippet
        results.append(message)
    return results


class Search:
    def __init__(self, store: Store, rank_window: int = 2000, visibility_mode: str = "project") -> None:
        self._store = store
        self._rank_window = max(1, rank_window)
        self._mode = visibility_mode

    async def agent_id(self, name: str) -> int:
        """The id of the agent called `name` (any case); NOT_FOUND otherwise."""
        return await self._store.read(find_agent_id, name)

    async def search(
        self,
        project_key: str,
        query: str,
        *,
        viewer: int | None,
        filters: SearchFilters | None = None,
        limit: int = 20,
        order: str = "relevance",
        include_bodies: bool = True,
    ) -> list[dict[str, Any]]:
        """Ranked matches visible to `viewer` (an agent id; None = operator). Never fails on `query`."""
        key = validate_project_key(project_key)
        if order not in ("relevance", "newest"):
            raise InvalidArgument(f"order must be 'relevance' or 'newest', got {order!r}")
        limit = max(1, min(int(limit), MAX_LIMIT))
        expr = sanitize_query(query if isinstance(query, str) else "")
        filters = filters or SearchFilters()

        def unit(conn: Connection) -> list[dict[str, Any]]:
            project = find_in(conn, key)
            if expr is None:
                return []
            return run_search(
                conn,
                project_id=project["id"],
                expr=expr,
                viewer=visibility.viewer_of(conn, viewer, self._mode),
                filters=filters,
                limit=limit,
                order=order,
                window=self._rank_window,
                include_bodies=include_bodies,
            )

        return await self._store.read(unit)
