"""The archiver task: drain `archive_outbox` into group commits, forever, without ever blocking mail.

Each round takes up to `MAX_BATCH` pending rows (after letting a burst gather for `GATHER_SECONDS`),
renders their files, makes one commit, then deletes exactly those rows. git failures (read-only
dir, full disk, broken repo) leave the rows in place, mark the archive degraded in health_check,
and retry with backoff; the queue catches up once git works again. Beside the rounds, a maintenance
task repacks (under load too) so size and pack count stay bounded; before the first round, an
archive in an older layout is moved (layout.py). Not here: file formats (formats), git (committer).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from maild.archive import formats, layout
from maild.archive.blobs import BlobStore, attachment_files
from maild.archive.committer import PACK_CEILING, ArchiveError, FastImportCommitter
from maild.store import Connection, Store, utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 1000
GATHER_SECONDS = 0.05
IDLE_POLL_SECONDS = 0.05
PACKING_CACHE_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
REPACK_IDLE_SECONDS = 10.0  # quiet time before the archiver folds fast-import's small packs together
# The longest a commit waits for a repack at PACK_CEILING: a repack stuck past this (its own timeout
# is 30 minutes) must not stop the archive; the packs it let pile up are folded by the next one.
CEILING_WAIT_SECONDS = 60.0
RECENT_LAG_ROWS = 1000  # the soak plots lag over time from the p99 of the newest rows
LAG_WINDOW = 50_000  # outbox rows whose lag statistics() reports (the last ~30 s at 1,500 sends/s)


def _pending(conn: Connection, limit: int) -> list[Any]:
    rows: list[Any] = conn.execute(
        "SELECT id, kind, project_slug, payload, created_ts FROM archive_outbox ORDER BY id LIMIT ?", (limit,)
    ).fetchall()
    return rows


Digests = dict[tuple[str, str, int], tuple[int, list[dict[str, Any]]]]  # (slug, thread, part) -> (first id, rows)
# A thread's digest is written in parts of this many messages, so a new message rewrites (and git
# stores again) one part, not the whole thread: long threads stay linear in size and in work.
DIGEST_PART = formats.DIGEST_PART
_THREAD = "m.project_id = :p AND (m.thread_id = :t OR m.id = :root)"


_RECIPIENTS = ("SELECT r.message_id, r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
               " WHERE r.message_id IN (SELECT value FROM json_each(?)) ORDER BY r.message_id, a.name")


# The touched threads, as rows of the JSON array bound to the query: [key, project id, thread id, root, n].
_TOUCHED = ("WITH t(k, p, thread, root, n) AS (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4"
            " FROM json_each(:threads))")
_IN_THREAD = "m.project_id = t.p AND (m.thread_id = t.thread OR m.id = t.root)"


def _digests(conn: Connection, threads: dict[tuple[str, str], list[int]]) -> Digests:
    """The digest parts each touched thread needs rewritten, with their messages and the thread's
    first message id (its shard folder). Two queries a batch, however many threads it touches:
    a few queries a thread were most of the archiver's CPU in the daemon (382 µs a message)."""
    projects = dict(conn.execute("SELECT slug, id FROM projects"))
    keys = [(slug, thread, sorted(new_ids)) for (slug, thread), new_ids in threads.items()
            if new_ids and slug in projects]
    touched = [[k, projects[slug], thread, int(thread) if thread.isdigit() else -1, new_ids[0]]
               for k, (slug, thread, new_ids) in enumerate(keys)]  # n: the oldest new message
    # 1. every message of each thread from the start of the part that holds its oldest new one,
    # with its position in the thread and the thread's first message (positions come from the ids
    # alone, through the thread index; only the rows from that part on are read whole)
    rows: dict[int, list[Any]] = {}
    starts: dict[int, tuple[int, int]] = {}
    for k, first, position, *message in conn.execute(
        f"{_TOUCHED}, x AS (SELECT t.k AS k, m.id AS id, row_number() OVER w - 1 AS pos,"
        " min(m.id) OVER (PARTITION BY t.k) AS first, sum(m.id < t.n) OVER (PARTITION BY t.k) AS before"
        f" FROM t JOIN messages m ON {_IN_THREAD} WINDOW w AS (PARTITION BY t.k ORDER BY m.id))"
        " SELECT x.k, x.first, x.pos, m.id, m.thread_id, m.subject, m.body_md, m.importance, m.ack_required,"
        " m.created_ts, s.name FROM x JOIN messages m ON m.id = x.id JOIN agents s ON s.id = m.sender_id"
        " WHERE x.pos >= x.before / :part * :part ORDER BY x.k, x.pos",
        {"threads": json.dumps(touched), "part": DIGEST_PART},
    ):
        found = rows.setdefault(int(k), [])
        if not found:
            starts[int(k)] = (int(first), int(position))
        found.append(message)
    # 2. their recipients
    lists: dict[int, dict[str, list[str]]] = {
        message[0]: {"to": [], "cc": [], "bcc": []} for found in rows.values() for message in found}
    for message_id, kind, name in conn.execute(_RECIPIENTS, (json.dumps(list(lists)),)):
        lists[message_id][kind].append(name)
    digests: Digests = {}
    for k, found in rows.items():
        slug, thread, new_ids = keys[k]
        first, offset = starts[k]
        ids = [message[0] for message in found]
        for part in {(offset + bisect.bisect_left(ids, mid)) // DIGEST_PART for mid in new_ids}:
            chunk = found[part * DIGEST_PART - offset:(part + 1) * DIGEST_PART - offset]
            digests[(slug, thread, part)] = (first, [
                {"id": m[0], "thread_id": m[1], "subject": m[2], "body_md": m[3], "importance": m[4],
                 "ack_required": bool(m[5]), "created_ts": m[6], "from": m[7], **lists[m[0]]} for m in chunk])
    return digests


def _agent_ids(conn: Connection, message_ids: list[int]) -> dict[int, dict[str, int]]:
    """The agent id behind every name of each message (names can be reclaimed), in one query."""
    ids: dict[int, dict[str, int]] = {}
    for message_id, agent_id, name in conn.execute(
        "SELECT r.message_id, a.id, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
        " WHERE r.message_id IN (SELECT value FROM json_each(:ids))"
        " UNION SELECT m.id, a.id, a.name FROM messages m JOIN agents a ON a.id = m.sender_id"
        " WHERE m.id IN (SELECT value FROM json_each(:ids))", {"ids": json.dumps(message_ids)},
    ):
        ids.setdefault(int(message_id), {})[str(name)] = int(agent_id)
    return ids


def _live_reservations(conn: Connection, patterns: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest unreleased reservation of each (project slug, pattern): what upstream's by-pattern
    file shows. One query for the batch; a pattern with none is absent."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for row in conn.execute(
        "WITH w(slug, pattern) AS (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
        " SELECT w.slug, w.pattern, r.id, a.name, r.path_pattern, r.exclusive, r.reason, r.created_ts, r.expires_ts,"
        " r.released_ts, r.agent_id FROM w JOIN projects p ON p.slug = w.slug JOIN file_reservations r"
        " ON r.project_id = p.id AND r.path_pattern = w.pattern AND r.released_ts IS NULL"
        " JOIN agents a ON a.id = r.agent_id ORDER BY r.id", (json.dumps(patterns),),
    ):
        live[(row[0], row[1])] = {  # ordered by id: the newest wins
            "id": row[2], "agent": row[3], "path_pattern": row[4], "exclusive": bool(row[5]), "reason": row[6],
            "created_ts": row[7], "expires_ts": row[8], "released_ts": row[9], "agent_id": row[10]}
    return live


Item = tuple[int, str, str | None, dict[str, Any], str]


def _depth(conn: Connection, limit: int) -> int:
    count: int = conn.execute("SELECT count(*) FROM (SELECT 1 FROM archive_outbox LIMIT ?)", (limit,)).get
    return count


class Batch:
    """Pending outbox rows, parsed, with everything rendering them needs (read in one transaction)."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.keys: dict[str, str] = {}
        self.digests: Digests = {}
        self.patterns: dict[tuple[str, str], dict[str, Any] | None] = {}


def _batch(conn: Connection, limit: int) -> Batch:
    batch = Batch()
    threads: dict[tuple[str, str], list[int]] = {}
    message_ids: list[int] = []
    for row_id, kind, slug, payload_text, created in _pending(conn, limit):
        payload = json.loads(payload_text)
        batch.items.append((row_id, kind, slug, payload, created))
        if kind == "message":
            message = payload["message"]
            if message["thread_id"]:  # a message nobody replied to yet has no digest
                threads.setdefault((message["project_slug"], message["thread_id"]), []).append(int(message["id"]))
            message_ids.append(int(message["id"]))
        elif kind == "file_reservation":
            for reservation in payload["reservations"]:
                batch.patterns[(slug or "", reservation["path_pattern"])] = None
        elif kind == "agent":
            agent = payload["agent"]
            stored = conn.execute("SELECT token_hash FROM agents WHERE id = ?", (agent["id"],)).get
            if stored:  # never the token, nor its plain hash: a salted hash of that (see formats)
                agent["token_hash"] = formats.salted_token_hash(str(stored), formats.token_salt(agent))
    batch.keys = {str(slug): str(key) for slug, key in conn.execute("SELECT slug, human_key FROM projects")}
    batch.digests = _digests(conn, threads)
    agent_ids = _agent_ids(conn, message_ids)
    live = _live_reservations(conn, list(batch.patterns))
    batch.patterns = {key: live.get(key) for key in batch.patterns}
    for _row_id, kind, _slug, payload, _created in batch.items:
        if kind == "message" and agent_ids.get(payload["message"]["id"]):
            payload["message"]["agent_ids"] = agent_ids[payload["message"]["id"]]
    return batch


def _all_threads(conn: Connection) -> dict[tuple[str, str], list[int]]:
    """Every thread with a digest, each with one message id per part (for the layout move)."""
    threads: dict[tuple[str, str], list[int]] = {}
    for slug, thread in conn.execute(
        "SELECT DISTINCT p.slug, m.thread_id FROM messages m JOIN projects p ON p.id = m.project_id"
        " WHERE m.thread_id IS NOT NULL"
    ):
        project_id = conn.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).get
        params = {"p": project_id, "t": thread, "root": int(thread) if thread.isdigit() else -1}
        ids = [row[0] for row in conn.execute(f"SELECT m.id FROM messages m WHERE {_THREAD} ORDER BY m.id", params)]
        threads[(slug, thread)] = ids[::DIGEST_PART]
    return threads


def _migration_digests(conn: Connection) -> Digests:
    return _digests(conn, _all_threads(conn))


def _delete(conn: Connection, ids: list[int]) -> None:
    conn.executemany("DELETE FROM archive_outbox WHERE id = ?", [(i,) for i in ids])


class Archiver:
    def __init__(self, store: Store, repo: Path, author_name: str, author_email: str,
                 blobs: BlobStore | None = None, commit_interval: float = 0.0) -> None:
        self._store = store
        self._commit_interval = commit_interval  # seconds between round starts while busy
        self._round_started = 0.0
        self.blobs = blobs  # where `attachment` rows find their bytes
        self._committer = FastImportCommitter(repo, author_name, author_email)
        self.repo = repo
        self.ok = True
        self.last_error: str | None = None
        self.last_commit_ts: str | None = None
        self.commits = 0
        self.archived = 0
        self.repacks = 0
        self.skipped = 0
        self.messages_archived = 0
        self.lag = LagWindow(LAG_WINDOW)
        self._lag_summary: dict[str, Any] | None = None
        self._packing_cache: tuple[float, dict[str, int]] | None = None
        self._layout: int | None = -1  # -1: not looked at yet; None: empty archive
        self._repack_done: anyio.Event | None = None  # one per repack, set when it ends
        self.ceiling_waits = 0  # commits that waited for a repack at PACK_CEILING packs
        self._busy = False  # the last round committed something: the next one keeps the cadence
        self._full = False  # ... and it was a full batch (a backlog): no pause at all
        self.after_commit: Callable[[], None] | None = None  # the mirror's push trigger (maild/archive/mirror.py)

    def statistics(self) -> dict[str, Any]:
        return {
            "archive": {
                "ok": self.ok,
                "path": str(self.repo),
                "commits": self.commits,
                "items_archived": self.archived,
                "messages_archived": self.messages_archived,
                "repacks": self.repacks,
                "maintaining": self._maintaining,
                "ceiling_waits": self.ceiling_waits,
                **self._packing(),
                "last_commit_ts": self.last_commit_ts,
                "last_error": self.last_error,
                **self._lag(),
            }
        }

    def _packing(self) -> dict[str, int]:
        """The committer's pack counts, listed at most once a second between commits: health_check
        may be polled hundreds of times a second (load balancers, bench_remote), each listing reads
        two folders."""
        now = time.monotonic()
        if self._packing_cache is None or now - self._packing_cache[0] >= PACKING_CACHE_SECONDS:
            self._packing_cache = (now, self._committer.packing())
        return self._packing_cache[1]

    def _lag(self) -> dict[str, Any]:
        """Seconds from each row's DB commit to its confirmed git commit, over the last LAG_WINDOW
        rows (worked out once per change, not per health_check)."""
        if self._lag_summary is None:
            self._lag_summary = {
                "lag_recent_p99_seconds": _percentile(sorted(self.lag.newest(RECENT_LAG_ROWS)), 0.99),
                "lag_p50_seconds": self.lag.percentile(0.50),
                "lag_p99_seconds": self.lag.percentile(0.99),
                "lag_max_seconds": self.lag.percentile(1.0),
                "lag_samples": len(self.lag),
            }
        return self._lag_summary

    @property
    def _maintaining(self) -> bool:
        """Whether a repack runs now."""
        return self._repack_done is not None and not self._repack_done.is_set()

    async def _repack(self, done: anyio.Event, *, idle: bool) -> None:
        """One maintenance pass beside the commit path (see FastImportCommitter.maintain)."""
        try:
            if await anyio.to_thread.run_sync(functools.partial(self._committer.maintain, idle=idle)):
                self.repacks += 1
                self._packing_cache = None
                log.info("archive repacked (%d so far)", self.repacks)
        except ArchiveError as exc:  # a bigger archive, not a lost one: log it, try after the next work
            log.warning("%s", exc)
        finally:
            done.set()

    def _maybe_repack(self, tg: TaskGroup, *, idle: bool) -> None:
        if not self._maintaining and self._committer.maintenance_due(idle=idle):
            self._repack_done = anyio.Event()
            tg.start_soon(functools.partial(self._repack, self._repack_done, idle=idle))

    async def _wait_below_ceiling(self) -> None:
        """Hold the next commit while a repack runs and PACK_CEILING packs are waiting for it."""
        done = self._repack_done
        if done is None or done.is_set():
            return
        packing = self._packing()  # fresh enough: a commit clears the cache, and only commits add packs
        if packing["packs"] - packing["settled_packs"] >= PACK_CEILING:
            self.ceiling_waits += 1
            log.info("archive at %d packs: the next commit waits for the repack", PACK_CEILING)
            with anyio.move_on_after(CEILING_WAIT_SECONDS):
                await done.wait()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                await self._loop(tg)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    while await self.drain_once():  # the last changes before shutdown
                        pass
                except Exception as exc:  # shutdown must finish; the outbox keeps the work
                    log.warning("final archive drain failed; the outbox keeps it for next start: %s", exc)
            await anyio.to_thread.run_sync(self._committer.close)

    async def _loop(self, tg: TaskGroup) -> None:
        backoff = 0.5
        last_work = anyio.current_time()
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
                self._maybe_repack(tg, idle=False)  # under load too: the pack count must stay bounded
            else:
                if anyio.current_time() - last_work >= REPACK_IDLE_SECONDS:
                    last_work = anyio.current_time()  # look again after another quiet spell
                    self._maybe_repack(tg, idle=True)
                await anyio.sleep(IDLE_POLL_SECONDS)

    async def migrate(self) -> bool:
        """Move a layout-1 archive to layout 2 in one commit (see layout.py); True if it did.
        Runs before the first batch of each daemon, so new files never land in a half-old layout."""
        if self._layout == -1:
            self._layout = await anyio.to_thread.run_sync(layout.current, self.repo)
        if self._layout is None or self._layout >= formats.LAYOUT:
            return False
        renames, files = await anyio.to_thread.run_sync(layout.plan, self.repo)
        digests = await self._store.read(_migration_digests)
        files.update(_digest_files(digests))
        message = (f"archive: layout {formats.LAYOUT} (shard folders of {formats.SHARD_SIZE} ids)\n\n"
                   f"{len(renames)} files moved, {sum(v is None for v in files.values())} removed, "
                   f"{len(digests)} thread digest parts written anew.\n")
        await anyio.to_thread.run_sync(functools.partial(self._committer.commit, files, message, renames))
        log.info("archive moved to layout %d (%d files moved)", formats.LAYOUT, len(renames))
        self._layout = formats.LAYOUT
        self._committed()
        return True

    def _committed(self) -> None:
        """Count a commit and tell the mirror (if any) that there is something to push."""
        self.commits += 1
        self._packing_cache = None  # a commit adds a pack: count again
        self.last_commit_ts = utcnow()
        if self.after_commit is not None:
            self.after_commit()

    async def drain_once(self) -> int:
        """One group commit of whatever is pending; returns how many outbox rows it archived.
        Three hops only (one read, one worker thread, one write): under a saturated event loop
        every hop waits its turn, and the archive must keep up with the sends it trails. Right
        after a commit the rows that arrived meanwhile *are* the next group: no depth check and
        no gathering pause then (under load those two cost a hop and 50 ms a round, in lag)."""
        await self.migrate()  # once per daemon: an older archive moves before anything new lands
        if self._busy:  # sustained load: let the next group fill until the cadence allows a commit
            if not self._full:  # a backlog is drained as fast as git goes
                await anyio.sleep_until(self._round_started + self._commit_interval)
        else:
            waiting = await self._store.read(_depth, MAX_BATCH)
            if not waiting:
                return 0
            if waiting < MAX_BATCH:
                await anyio.sleep(GATHER_SECONDS)  # let a burst of sends join this commit
        await self._wait_below_ceiling()
        self._round_started = anyio.current_time()
        batch = await self._store.read(_batch, MAX_BATCH)
        self._busy, self._full = bool(batch.items), len(batch.items) >= MAX_BATCH
        if not batch.items:
            return 0
        skipped: list[int] = []
        committed, archived_at = await anyio.to_thread.run_sync(self._render_and_commit, batch, skipped)
        if committed:
            self._committed()
        await self._store.write(_delete, [item[0] for item in batch.items])
        self.lag.extend(archived_at - _epoch(created) for *_, created in batch.items)
        self._lag_summary = None
        self.skipped += len(skipped)
        self.archived += len(batch.items)
        self.messages_archived += sum(1 for item in batch.items if item[1] == "message")
        self.ok, self.last_error = True, None
        return len(batch.items)

    def _render_and_commit(self, batch: Batch, skipped: list[int]) -> tuple[bool, float]:
        """Render the batch's files and commit them (worker thread: pure rendering plus git).
        Returns whether it committed and when git had it: the archive lag ends there, not when
        the event loop next gets round to it or when the outbox rows are deleted."""
        files: formats.Files = {}
        lines: list[str] = []
        agents: list[str] = []
        for row_id, kind, slug, payload, _created in batch.items:
            try:
                files.update(render(kind, slug, payload, batch.keys, self.blobs))
            except (ValueError, KeyError):  # a row that can never be archived must not block the rest
                skipped.append(row_id)
                log.exception("skipping unarchivable outbox row %d (%s)", row_id, kind)
                continue
            line, agent = formats.describe(kind, payload)
            lines.append(line)
            if agent and agent not in agents:
                agents.append(agent)
        files.update(_digest_files(batch.digests))
        for (slug, pattern), live in batch.patterns.items():
            try:
                files[formats.pattern_path(slug, pattern)] = formats.pretty_json(live) if live else None
            except ValueError:
                continue  # an unsafe slug was already skipped with its row
        first = self._layout is None
        if first:  # the archive's first commit says which layout it is in
            files[formats.LAYOUT_FILE] = formats.layout_file()
        if not files:
            return False, time.time()
        self._committer.commit(files, commit_message(lines, agents))
        if first:
            self._layout = formats.LAYOUT
        return True, time.time()


def _digest_files(digests: Digests) -> formats.Files:
    files: formats.Files = {}
    for (slug, thread, part), (first, messages) in digests.items():
        if part > 0 or len(messages) > 1 or any(m["thread_id"] for m in messages):
            files.update(formats.thread_digest(thread, slug, messages, part, first))
    return files


class LagWindow:
    """The archive lag of the last `size` outbox rows, counted per millisecond: a percentile walks the
    distinct values (a few hundred when lags stay under a second) instead of sorting the window —
    sorting 50,000 floats took 7 ms, on the event loop, at the first health_check after each batch."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: deque[int] = deque()  # milliseconds, oldest first
        self._counts: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._rows)

    def extend(self, lags: Iterable[float]) -> None:
        for lag in lags:
            ms = max(0, round(lag * 1000))
            self._rows.append(ms)
            self._counts[ms] += 1
            if len(self._rows) > self.size:
                oldest = self._rows.popleft()
                self._counts[oldest] -= 1
                if not self._counts[oldest]:
                    del self._counts[oldest]

    def newest(self, rows: int) -> list[float]:
        return [ms / 1000 for ms in itertools.islice(reversed(self._rows), rows)]

    def percentile(self, fraction: float) -> float | None:
        """The value at rank `fraction * n` of the sorted window (as `_percentile` picks it)."""
        if not self._rows:
            return None
        rank = min(len(self._rows) - 1, int(fraction * len(self._rows)))
        seen = 0
        for ms in sorted(self._counts):
            seen += self._counts[ms]
            if seen > rank:
                return ms / 1000
        return None  # not reached: the counts add up to the rows


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)


def _epoch(ts: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def render(kind: str, slug: str | None, payload: dict[str, Any], keys: dict[str, str],
           blobs: BlobStore | None = None) -> formats.Files:
    if kind == "attachment":
        if blobs is None:
            raise ValueError("an attachment row needs the blob store")
        return dict(attachment_files(payload, blobs))
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
    if kind == "build_slot":
        return formats.build_slot_files(payload["leases"], slug or "")
    if kind == "contact":
        return formats.contact_files(payload["contact"], slug or "")
    if kind == "agent_deleted":
        return formats.tombstone_files(payload["deleted"], slug or "")
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
