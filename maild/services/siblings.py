"""Project siblings: which other projects of this mailbox look like parts of the same product.

Owns the score of a pair of projects (shared git remote, alike names, one parent folder, agent names
in both), its refresh (when a project is created, in the background, and when `resource://project/…`
is read) and the decision on it (`confirmed`, `dismissed`, or back to `suggested`). With LLM_ENABLED
a few plausible pairs per refresh are judged by the model too, in the background. It does not decide
anything for the agents: a confirmed sibling is information, never access to the other's mail.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.to_thread

from maild.services.llm import LLM
from maild.services.projects import find_in, validate_project_key
from maild.store import Connection, Store, utcnow
from shared.errors import InvalidArgument

log = logging.getLogger(__name__)

SUGGEST_SCORE = 0.6  # a heuristic pair below this is not stored (nor shown)
LLM_FLOOR = 0.4  # pairs the model is asked about: plausible, not certain
LLM_PAIRS_PER_REFRESH = 3  # the fork's bound: a refresh never fans out into many paid calls
MAX_CANDIDATES = 500  # a refresh scores a project against the most recent 500 others, no more
REMOTE_CACHE_SECONDS = 60.0  # .git/config is read at most once a minute per project
LLM_RETRY_SECONDS = 3600.0  # a pair the model failed to judge is asked again an hour later, not per read
STATUSES = ("suggested", "confirmed", "dismissed")
_PAIR_COLUMNS = ("id, project_a_id, project_b_id, score, status, rationale, source, created_ts, evaluated_ts,"
                 " confirmed_ts, dismissed_ts")

SYSTEM_PROMPT = (
    "You decide whether two software projects that share one coordination mailbox are siblings: parts "
    "of one product (e.g. a frontend and its backend, a library and its docs) rather than unrelated. "
    'Reply with one JSON object and nothing else: {"score": <0.0 to 1.0>, "rationale": "<one sentence>"}.'
)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the heuristic knows about one project."""

    id: int
    slug: str
    human_key: str
    remotes: frozenset[str]
    agents: frozenset[str]  # lower-cased agent names, retired ones included

    @property
    def basename(self) -> str:
        return _path_of(self.human_key).name.lower() if _is_path(self.human_key) else self.human_key.lower()

    @property
    def parent(self) -> str | None:
        if not _is_path(self.human_key):
            return None
        parent = _path_of(self.human_key).parent
        return str(parent) if parent != parent.parent else None  # "/" is everybody's parent


def _is_path(key: str) -> bool:
    return key.startswith(("/", "~"))


def _path_of(key: str) -> PurePosixPath:
    return PurePosixPath(key.rstrip("/") or "/")


def score_pair(a: Facts, b: Facts) -> tuple[float, str]:
    """(score 0..1, rationale) of two projects. Names count most; a shared remote settles it."""
    reasons: list[str] = []
    names = difflib.SequenceMatcher(None, a.basename, b.basename).ratio()
    score = 0.8 * names
    if names >= 0.5:
        reasons.append(f"names {a.basename!r} and {b.basename!r} are {names:.0%} alike")
    if a.parent is not None and a.parent == b.parent:
        score += 0.15
        reasons.append(f"both in {a.parent}")
    shared_agents = sorted(a.agents & b.agents)
    if shared_agents:
        score += min(0.2, 0.1 * len(shared_agents))
        reasons.append("agents in both: " + ", ".join(shared_agents[:5]))
    remotes = sorted(a.remotes & b.remotes)
    if remotes:
        score = max(score, 0.95)
        reasons.insert(0, f"same git remote {remotes[0]}")
    return round(min(score, 1.0), 2), "; ".join(reasons) or "nothing in common"


def normalise_remote(url: str) -> str:
    """One spelling per repository: `git@github.com:Acme/app.git` and `https://github.com/acme/app`
    are both `github.com/acme/app`."""
    url = url.strip()
    if "://" in url:
        parsed = urllib.parse.urlsplit(url)
        host = (parsed.hostname or "").lower()
        path = parsed.path
        if parsed.scheme == "file" or not host:
            return str(PurePosixPath(path)).rstrip("/").removesuffix(".git").lower()
    elif re.match(r"^[^/]+:", url):  # scp-like: [user@]host:path
        host, _, path = url.partition(":")
        host = host.rpartition("@")[2].lower()
    else:  # a local path
        return url.rstrip("/").removesuffix(".git").lower()
    path = path.strip("/").removesuffix(".git").lower()
    return f"{host}/{path}" if path else host


_SECTION = re.compile(r'^\s*\[\s*remote\s+"(?P<name>[^"]*)"\s*\]')
_OTHER_SECTION = re.compile(r"^\s*\[")
_URL = re.compile(r"^\s*url\s*=\s*(?P<url>\S.*?)\s*$", re.IGNORECASE)


def git_remotes(human_key: str) -> frozenset[str]:
    """The normalised remote URLs of the git repository at `human_key`, if it is a path to one.
    Read from .git/config with the standard library (only maild/archive may import git)."""
    if not _is_path(human_key):
        return frozenset()
    root = Path(human_key).expanduser()
    try:
        git = root / ".git"
        if git.is_file():  # a worktree or submodule: `gitdir: …`, and the shared config in commondir
            text = git.read_text(errors="replace")[:4096]
            if not text.startswith("gitdir:"):
                return frozenset()
            git = (root / text[len("gitdir:"):].strip()).resolve()
            common = git / "commondir"
            if common.is_file():
                git = (git / common.read_text(errors="replace").strip()).resolve()
        config = (git / "config").read_text(errors="replace")[:1 << 16]
    except OSError:
        return frozenset()
    found: set[str] = set()
    in_remote = False
    for line in config.splitlines():
        if _SECTION.match(line):
            in_remote = True
        elif _OTHER_SECTION.match(line):
            in_remote = False
        elif in_remote and (match := _URL.match(line)):
            remote = normalise_remote(match["url"].strip('"'))
            if remote:
                found.add(remote)
    return frozenset(found)


class Siblings:
    def __init__(self, store: Store, llm: LLM) -> None:
        self._store = store
        self._llm = llm
        self._remotes: dict[str, tuple[float, frozenset[str]]] = {}
        self._queued: set[int] = set()  # projects created since the background task last ran
        self._llm_queue: list[tuple[Facts, Facts, float, str]] = []
        self._llm_asked: dict[tuple[int, int], float] = {}  # pair -> time.monotonic() it was last queued
        self._arrived = anyio.Event()
        self.refreshes = 0
        self.llm_judged = 0
        store.on_commit(self._on_commit)

    def _on_commit(self, changed: dict[str, list[int]]) -> None:
        created = changed.get("projects")
        if created:
            self._queued.update(created)
            self._arrived.set()

    async def run(self) -> None:
        """Score each new project against the others, then let the model judge the queued pairs;
        started once by the composition root. Failures are logged and retried by the next event."""
        while True:
            await self._arrived.wait()
            self._arrived = anyio.Event()
            queued, self._queued = sorted(self._queued), set()
            for project_id in queued:
                try:
                    await self.refresh(project_id)
                except Exception:
                    log.exception("could not score the siblings of project %d", project_id)
            while self._llm_queue:
                a, b, score, rationale = self._llm_queue.pop(0)
                try:
                    await self._judge(a, b, score, rationale)
                except Exception:
                    log.exception("the LLM could not judge projects %s and %s", a.slug, b.slug)

    async def refresh(self, project_id: int) -> None:
        """Re-score `project_id` against the others; writes only when a score or rationale moved."""
        target, others, stored = await self._store.read(_facts_rows, project_id)
        if target is None:
            return
        facts = await anyio.to_thread.run_sync(self._with_remotes, [target, *others])
        me, rest = facts[0], facts[1:]
        upserts: list[tuple[int, int, float, str]] = []
        drops: list[tuple[int, int]] = []
        plausible: list[tuple[float, Facts, str]] = []
        for other in rest:
            score, rationale = score_pair(me, other)
            a, b = sorted((me.id, other.id))
            row = stored.get((a, b))
            if row is not None and row["source"] == "llm":
                continue  # the model's judgement stands until someone decides
            if score >= SUGGEST_SCORE or (row is not None and row["status"] != "suggested"):
                if row is None or row["score"] != score or row["rationale"] != rationale:
                    upserts.append((a, b, score, rationale))
            elif row is not None:
                drops.append((a, b))
            if score >= LLM_FLOOR and (row is None or row["status"] == "suggested"):
                plausible.append((score, other, rationale))
        if upserts or drops:
            await self._store.write(_apply, upserts, drops, utcnow())
        self.refreshes += 1
        if self._llm.configured:
            plausible.sort(key=lambda item: -item[0])
            now = time.monotonic()
            for score, other, rationale in plausible[:LLM_PAIRS_PER_REFRESH]:
                pair = (min(me.id, other.id), max(me.id, other.id))
                if now - self._llm_asked.get(pair, -LLM_RETRY_SECONDS) >= LLM_RETRY_SECONDS:
                    self._llm_asked[pair] = now
                    self._llm_queue.append((me, other, score, rationale))
                    self._arrived.set()

    async def _judge(self, a: Facts, b: Facts, heuristic: float, rationale: str) -> None:
        prompt = "\n".join(
            f"Project {n}: key {p.human_key!r}, slug {p.slug!r}, git remotes {sorted(p.remotes) or 'none'}, "
            f"agents {sorted(p.agents)[:20] or 'none'}"
            for n, p in (("A", a), ("B", b))
        ) + f"\nA simple heuristic scored them {heuristic:.2f} ({rationale})."
        result = await self._llm.complete(self._llm.model_for(None), prompt, SYSTEM_PROMPT)
        reply = result.reply or {}
        score, reason = reply.get("score"), reply.get("rationale")
        if result.status != "ok" or not isinstance(score, int | float) or not isinstance(reason, str):
            log.info("no LLM judgement of %s and %s (%s): the heuristic score stands", a.slug, b.slug,
                     result.error or "the reply lacked score or rationale")
            return
        score = round(min(max(float(score), 0.0), 1.0), 2)
        first, second = sorted((a.id, b.id))
        await self._store.write(_judged, first, second, score, f"LLM: {reason.strip()[:500]}", utcnow())
        self.llm_judged += 1

    def _with_remotes(self, rows: list[tuple[int, str, str, frozenset[str]]]) -> list[Facts]:
        """Facts with each project's git remotes (runs in a worker thread: it reads files)."""
        now = time.monotonic()
        facts = []
        for project_id, slug, key, agents in rows:
            cached = self._remotes.get(key)
            if cached is None or now - cached[0] > REMOTE_CACHE_SECONDS:
                cached = (now, git_remotes(key))
                self._remotes[key] = cached
            facts.append(Facts(project_id, slug, key, cached[1], agents))
        return facts

    async def for_project(self, project_id: int) -> list[dict[str, Any]]:
        """The project's sibling pairs, best first: suggestions above the floor and every decided or
        model-judged pair (so a dismissal can be taken back). Refreshed on the way."""
        await self.refresh(project_id)
        return await self._store.read(_listing, project_id)

    async def update(self, project_key: object, other_project: object, status: str) -> dict[str, Any]:
        """Confirm or dismiss a pair (or put it back to `suggested`), from either side."""
        if status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)} (got {status!r})",
                                  data={"parameter": "status"})
        key, other_key = validate_project_key(project_key), validate_project_key(other_project)

        def both(conn: Connection) -> tuple[int, int]:
            return find_in(conn, key)["id"], find_in(conn, other_key)["id"]

        mine, theirs = await self._store.read(both)
        if mine == theirs:
            raise InvalidArgument(f"{key!r} and {other_key!r} are the same project; name another one",
                                  data={"parameter": "other_project"})
        target, others, _ = await self._store.read(_facts_rows, mine, [theirs])
        if target is None or not others:  # deleted in between (a share scope): as if never there
            raise InvalidArgument(f"{key!r} or {other_key!r} no longer exists", data={"parameter": "other_project"})
        me, them = await anyio.to_thread.run_sync(self._with_remotes, [target, others[0]])
        score, rationale = score_pair(me, them)
        await self._store.write(_decide, mine, theirs, status, score, rationale, utcnow())
        found = [p for p in await self._store.read(_listing, mine, True) if p["project_id"] == theirs]
        return {"project": me.slug, "sibling": found[0]}

    def statistics(self) -> dict[str, Any]:
        return {"refreshes": self.refreshes, "llm_judged": self.llm_judged, "llm_queued": len(self._llm_queue)}


def _facts_rows(
    conn: Connection, project_id: int, only: list[int] | None = None
) -> tuple[tuple[int, str, str, frozenset[str]] | None, list[tuple[int, str, str, frozenset[str]]],
           dict[tuple[int, int], dict[str, Any]]]:
    """(the project, up to MAX_CANDIDATES others (or those in `only`), the stored pairs of the project)."""
    if only is None:
        rows = conn.execute("SELECT id, slug, human_key FROM projects WHERE id != ? ORDER BY id DESC LIMIT ?",
                            (project_id, MAX_CANDIDATES)).fetchall()
    else:
        marks = ",".join("?" * len(only))
        rows = conn.execute(f"SELECT id, slug, human_key FROM projects WHERE id IN ({marks})", only).fetchall()
    me = conn.execute("SELECT id, slug, human_key FROM projects WHERE id = ?", (project_id,)).fetchone()
    if me is None:
        return None, [], {}
    ids = [me[0], *(r[0] for r in rows)]
    agents: dict[int, set[str]] = {}
    marks = ",".join("?" * len(ids))
    for pid, name in conn.execute(
        f"SELECT project_id, lower(name) FROM agents WHERE placeholder = 0 AND project_id IN ({marks})", ids
    ):
        agents.setdefault(pid, set()).add(name)
    stored = {(p["project_a_id"], p["project_b_id"]): p for p in _pairs(conn, project_id)}

    def row(r: Any) -> tuple[int, str, str, frozenset[str]]:
        return r[0], r[1], r[2], frozenset(agents.get(r[0], ()))

    return row(me), [row(r) for r in rows], stored


def _pairs(conn: Connection, project_id: int) -> list[dict[str, Any]]:
    names = [c.strip() for c in _PAIR_COLUMNS.split(",")]
    cursor = conn.execute(
        f"SELECT {_PAIR_COLUMNS} FROM project_sibling_suggestions WHERE project_a_id = ? OR project_b_id = ?",
        (project_id, project_id),
    )
    return [dict(zip(names, r, strict=True)) for r in cursor]


def _apply(conn: Connection, upserts: list[tuple[int, int, float, str]], drops: list[tuple[int, int]],
           now: str) -> None:
    for a, b, score, rationale in upserts:
        # Never overwrites the model's judgement or anyone's decision (only the score beside it).
        conn.execute(
            "INSERT INTO project_sibling_suggestions(project_a_id, project_b_id, score, rationale, created_ts,"
            " evaluated_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(project_a_id, project_b_id) DO UPDATE SET"
            " score = excluded.score, rationale = excluded.rationale, evaluated_ts = excluded.evaluated_ts"
            " WHERE source = 'heuristic'",
            (a, b, score, rationale, now, now),
        )
    for a, b in drops:
        conn.execute("DELETE FROM project_sibling_suggestions WHERE project_a_id = ? AND project_b_id = ?"
                     " AND status = 'suggested' AND source = 'heuristic'", (a, b))


def _judged(conn: Connection, a: int, b: int, score: float, rationale: str, now: str) -> None:
    conn.execute(
        "INSERT INTO project_sibling_suggestions(project_a_id, project_b_id, score, rationale, source, created_ts,"
        " evaluated_ts) VALUES (?, ?, ?, ?, 'llm', ?, ?) ON CONFLICT(project_a_id, project_b_id) DO UPDATE SET"
        " score = excluded.score, rationale = excluded.rationale, source = 'llm', evaluated_ts = excluded.evaluated_ts",
        (a, b, score, rationale, now, now),
    )


def _decide(conn: Connection, mine: int, theirs: int, status: str, score: float, rationale: str, now: str) -> None:
    a, b = sorted((mine, theirs))
    confirmed = now if status == "confirmed" else None
    dismissed = now if status == "dismissed" else None
    conn.execute(
        "INSERT INTO project_sibling_suggestions(project_a_id, project_b_id, score, status, rationale, created_ts,"
        " evaluated_ts, confirmed_ts, dismissed_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(project_a_id, project_b_id) DO UPDATE SET status = excluded.status,"
        " confirmed_ts = excluded.confirmed_ts, dismissed_ts = excluded.dismissed_ts",
        (a, b, score, status, rationale, now, now, confirmed, dismissed),
    )


def _listing(conn: Connection, project_id: int, everything: bool = False) -> list[dict[str, Any]]:
    shown = []
    for pair in _pairs(conn, project_id):
        if not everything and pair["status"] == "suggested" and pair["score"] < SUGGEST_SCORE:
            continue  # judged unlikely by the model: kept so it is not asked again, not shown
        other = pair["project_b_id"] if pair["project_a_id"] == project_id else pair["project_a_id"]
        found = conn.execute("SELECT slug, human_key FROM projects WHERE id = ?", (other,)).fetchone()
        if found is None:
            continue
        slug, key = found
        shown.append({
            "project_id": other, "slug": slug, "human_key": key, "score": pair["score"], "status": pair["status"],
            "rationale": pair["rationale"], "source": pair["source"], "evaluated_ts": pair["evaluated_ts"],
            "confirmed_ts": pair["confirmed_ts"], "dismissed_ts": pair["dismissed_ts"],
        })
    shown.sort(key=lambda s: (-s["score"], s["slug"]))
    return shown
