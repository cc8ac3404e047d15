"""The archiver task: drain `archive_outbox` into group commits, forever, without ever blocking mail.

Each round takes up to `MAX_BATCH` pending rows (after letting a burst gather for `GATHER_SECONDS`),
renders their files, makes one commit, then deletes exactly those rows. git failures (read-only
dir, full disk, broken repo) leave the rows in place, mark the archive degraded in health_check,
and retry with backoff; the queue catches up once git works again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from maild.archive import formats
from maild.archive.committer import ArchiveError, FastImportCommitter
from maild.store import Connection, Store, utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 1000
GATHER_SECONDS = 0.05
IDLE_POLL_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 30.0
REPACK_IDLE_SECONDS = 10.0  # quiet time before the archiver folds fast-import's small packs together
LAG_WINDOW = 50_000  # outbox rows whose lag statistics() reports (the last ~30 s at 1,500 sends/s)


def _pending(conn: Connection, limit: int) -> list[Any]:
    rows: list[Any] = conn.execute(
        "SELECT id, kind, project_slug, payload, created_ts FROM archive_outbox ORDER BY id LIMIT ?", (limit,)
    ).fetchall()
    return rows


Context = tuple[dict[str, str], dict[tuple[str, str, int], Any], dict[int, dict[str, int]]]
# A thread's digest is written in parts of this many messages, so a new message rewrites (and git
# stores again) one part, not the whole thread: long threads stay linear in size and in work.
DIGEST_PART = formats.DIGEST_PART


def _thread_messages(conn: Connection, project_id: int, thread: str, part: int) -> list[dict[str, Any]]:
    """Messages `part * DIGEST_PART` … of a thread, oldest first (keyset on id: no row is read twice)."""
    match = "m.project_id = :p AND (m.thread_id = :t OR m.id = :root)"
    params = {"p": project_id, "t": thread, "root": int(thread) if thread.isdigit() else -1}
    first = conn.execute(f"SELECT m.id FROM messages m WHERE {match} ORDER BY m.id LIMIT 1 OFFSET :skip",
                         {**params, "skip": part * DIGEST_PART}).fetchone()
    if first is None:
        return []
    rows = conn.execute(
        "SELECT m.id, m.thread_id, m.subject, m.body_md, m.importance, m.ack_required, m.created_ts, s.name"
        f" FROM messages m JOIN agents s ON s.id = m.sender_id WHERE {match} AND m.id >= :first"
        " ORDER BY m.id LIMIT :n", {**params, "first": first[0], "n": DIGEST_PART},
    ).fetchall()
    messages = []
    for row in rows:
        lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
        for kind, name in conn.execute(
            "SELECT r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
            " WHERE r.message_id = ? ORDER BY a.name", (row[0],)
        ):
            lists[kind].append(name)
        messages.append({"id": row[0], "thread_id": row[1], "subject": row[2], "body_md": row[3],
                         "importance": row[4], "ack_required": bool(row[5]), "created_ts": row[6],
                         "from": row[7], **lists})
    return messages


def _context(conn: Connection, threads: dict[tuple[str, str], list[int]], message_ids: list[int]) -> Context:
    """Project keys by slug, the digest parts each touched thread needs rewritten (with their
    messages), and the agent id behind every name of each message (names can be reclaimed)."""
    keys: dict[str, str] = {str(slug): str(key) for slug, key in conn.execute("SELECT slug, human_key FROM projects")}
    ids: dict[int, dict[str, int]] = {}
    for message_id in message_ids:
        ids[message_id] = {str(name): int(agent_id) for agent_id, name in conn.execute(
            "SELECT a.id, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id WHERE r.message_id = ?"
            " UNION SELECT a.id, a.name FROM messages m JOIN agents a ON a.id = m.sender_id WHERE m.id = ?",
            (message_id, message_id),
        )}
    digests: dict[tuple[str, str, int], Any] = {}
    for (slug, thread), new_ids in threads.items():
        project_id = conn.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).fetchone()
        if project_id is None:
            continue
        root = int(thread) if thread.isdigit() else -1
        parts = {
            conn.execute(
                "SELECT count(*) FROM messages m WHERE m.project_id = ? AND (m.thread_id = ? OR m.id = ?)"
                " AND m.id < ?", (project_id[0], thread, root, message_id),
            ).get // DIGEST_PART
            for message_id in new_ids
        }
        for part in parts:
            digests[(slug, thread, part)] = _thread_messages(conn, project_id[0], thread, part)
    return keys, digests, ids


Item = tuple[int, str, str | None, dict[str, Any], str]


def _depth(conn: Connection, limit: int) -> int:
    count: int = conn.execute("SELECT count(*) FROM (SELECT 1 FROM archive_outbox LIMIT ?)", (limit,)).get
    return count


def _batch(conn: Connection, limit: int) -> tuple[list[Item], dict[str, str], dict[tuple[str, str, int], Any]]:
    """Up to `limit` pending rows, parsed, with what rendering them needs (one read transaction)."""
    items: list[Item] = []
    threads: dict[tuple[str, str], list[int]] = {}
    message_ids: list[int] = []
    for row_id, kind, slug, payload_text, created in _pending(conn, limit):
        payload = json.loads(payload_text)
        items.append((row_id, kind, slug, payload, created))
        if kind == "message":
            message = payload["message"]
            if message["thread_id"]:  # a message nobody replied to yet has no digest
                threads.setdefault((message["project_slug"], message["thread_id"]), []).append(int(message["id"]))
            message_ids.append(int(message["id"]))
    keys, digests, agent_ids = _context(conn, threads, message_ids)
    for _row_id, kind, _slug, payload, _created in items:
        if kind == "message" and agent_ids.get(payload["message"]["id"]):
            payload["message"]["agent_ids"] = agent_ids[payload["message"]["id"]]
    return items, keys, digests


def _delete(conn: Connection, ids: list[int]) -> None:
    conn.executemany("DELETE FROM archive_outbox WHERE id = ?", [(i,) for i in ids])


class Archiver:
    def __init__(self, store: Store, repo: Path, author_name: str, author_email: str) -> None:
        self._store = store
        self._committer = FastImportCommitter(repo, author_name, author_email)
        self.repo = repo
        self.ok = True
        self.last_error: str | None = None
        self.last_commit_ts: str | None = None
        self.commits = 0
        self.archived = 0
        self.repacks = 0
        self.skipped = 0
        self.lag_seconds: deque[float] = deque(maxlen=LAG_WINDOW)
        self._lag_summary: dict[str, Any] | None = None
        self.after_commit: Callable[[], None] | None = None  # the mirror's push trigger (maild/archive/mirror.py)

    def statistics(self) -> dict[str, Any]:
        return {
            "archive": {
                "ok": self.ok,
                "path": str(self.repo),
                "commits": self.commits,
                "items_archived": self.archived,
                "repacks": self.repacks,
                "last_commit_ts": self.last_commit_ts,
                "last_error": self.last_error,
                **self._lag(),
            }
        }

    def _lag(self) -> dict[str, Any]:
        """Seconds from each row's DB commit to its confirmed git commit, over the last LAG_WINDOW
        rows (sorted once per change, not per health_check)."""
        if self._lag_summary is None:
            ordered = sorted(self.lag_seconds)
            self._lag_summary = {
                "lag_p50_seconds": _percentile(ordered, 0.50),
                "lag_p99_seconds": _percentile(ordered, 0.99),
                "lag_max_seconds": _percentile(ordered, 1.0),
                "lag_samples": len(ordered),
            }
        return self._lag_summary

    async def _repack(self) -> None:
        try:
            if await anyio.to_thread.run_sync(self._committer.maintain):
                self.repacks += 1
                log.info("archive repacked (%d so far)", self.repacks)
        except ArchiveError as exc:  # a bigger archive, not a lost one: log it, try after the next work
            log.warning("%s", exc)

    async def run(self) -> None:
        backoff = 0.5
        last_work = anyio.current_time()
        try:
            while True:
                try:
                    done = await self.drain_once()
                except ArchiveError as exc:
                    self.ok, self.last_error = False, str(exc)
                    log.error(  # noqa: TRY400 - expected operational failure, no traceback wanted
                        "archive commit failed (mail is unaffected; will retry in %.1f s): %s", backoff, exc
                    )
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                    continue
                except Exception as exc:  # top of a task: an archive bug must never stop the daemon
                    self.ok, self.last_error = False, f"{type(exc).__name__}: {exc}"[:500]
                    log.exception("archive round failed unexpectedly (mail is unaffected; will retry in %.1f s)",
                                  backoff)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                    continue
                backoff = 0.5
                if done:
                    last_work = anyio.current_time()
                else:
                    if anyio.current_time() - last_work >= REPACK_IDLE_SECONDS:
                        last_work = anyio.current_time()  # look again after another quiet spell
                        await self._repack()
                    await anyio.sleep(IDLE_POLL_SECONDS)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    while await self.drain_once():  # the last changes before shutdown
                        pass
                except Exception as exc:  # shutdown must finish; the outbox keeps the work
                    log.warning("final archive drain failed; the outbox keeps it for next start: %s", exc)
            await anyio.to_thread.run_sync(self._committer.close)

    async def drain_once(self) -> int:
        """One group commit of whatever is pending; returns how many outbox rows it archived.
        Three hops only (one read, one worker thread, one write): under a saturated event loop
        every hop waits its turn, and the archive must keep up with the sends it trails."""
        waiting = await self._store.read(_depth, MAX_BATCH)
        if not waiting:
            return 0
        if waiting < MAX_BATCH:
            await anyio.sleep(GATHER_SECONDS)  # let a burst of sends join this commit
        items, keys, digests = await self._store.read(_batch, MAX_BATCH)
        if not items:
            return 0
        skipped: list[int] = []
        committed = await anyio.to_thread.run_sync(self._render_and_commit, items, keys, digests, skipped)
        if committed:
            self.commits += 1
            self.last_commit_ts = utcnow()
            if self.after_commit is not None:
                self.after_commit()
        await self._store.write(_delete, [item[0] for item in items])
        now = time.time()
        self.lag_seconds.extend(now - _epoch(created) for *_, created in items)
        self._lag_summary = None
        self.skipped += len(skipped)
        self.archived += len(items)
        self.ok, self.last_error = True, None
        return len(items)

    def _render_and_commit(self, items: list[Item], keys: dict[str, str],
                           digests: dict[tuple[str, str, int], Any], skipped: list[int]) -> bool:
        """Render the batch's files and commit them (worker thread: pure rendering plus git)."""
        files: dict[str, bytes] = {}
        lines: list[str] = []
        agents: list[str] = []
        for row_id, kind, slug, payload, _created in items:
            try:
                files.update(render(kind, slug, payload, keys))
            except (ValueError, KeyError):  # a row that can never be archived must not block the rest
                skipped.append(row_id)
                log.exception("skipping unarchivable outbox row %d (%s)", row_id, kind)
                continue
            line, agent = formats.describe(kind, payload)
            lines.append(line)
            if agent and agent not in agents:
                agents.append(agent)
        for (slug, thread, part), messages in digests.items():
            if part > 0 or len(messages) > 1 or any(m["thread_id"] for m in messages):
                files.update(formats.thread_digest(thread, slug, messages, part))
        if not files:
            return False
        self._committer.commit(files, commit_message(lines, agents))
        return True


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)


def _epoch(ts: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def render(kind: str, slug: str | None, payload: dict[str, Any], keys: dict[str, str]) -> dict[str, bytes]:
    if kind == "message":
        message = payload["message"]
        return formats.message_files(message, keys.get(message["project_slug"], message["project_slug"]))
    if kind == "agent":
        return formats.agent_files(payload["agent"], slug or payload["agent"]["project_slug"])
    if kind == "project":
        return formats.project_files(payload["project"])
    if kind == "file_reservation":
        return formats.reservation_files(payload["reservations"], slug or "")
    if kind == "receipt":
        return formats.receipt_files(payload["receipt"], slug or "")
    raise ValueError(f"unknown outbox kind {kind!r}")


def commit_message(lines: list[str], agents: list[str]) -> str:
    if len(lines) == 1:
        subject, body = lines[0], ""
    else:
        counts: dict[str, int] = {}
        for line in lines:
            kind = line.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        subject = "; ".join(f"{kind}: {n} change{'s' if n > 1 else ''}" for kind, n in counts.items())
        body = "\n".join(lines[:200]) + (f"\n… and {len(lines) - 200} more" if len(lines) > 200 else "") + "\n\n"
    trailers = "".join(f"Agent: {name}\n" for name in agents[:50])
    return f"{subject}\n\n{body}{trailers}".rstrip("\n") + "\n"
