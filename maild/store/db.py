"""The apsw store: one writer connection (the only door for writes) and a small pool of readers.

Each unit of work is a plain sync function `fn(conn, *args)` run whole on the connection's own
worker thread (apsw's `as_async`), so a transaction never spans an `await`. Writes run inside
`BEGIN IMMEDIATE`, which makes check-then-act writes (name claims, reservations) atomic.
Readers are a pool (`reader_connections`, default 4), each on its own thread: SQLite runs queries
without the GIL, so a slow search at 1M messages no longer holds up every inbox poll behind it.
apsw errors are translated to `StorageError` here and never leak upward. Schema: migrations.py.
Committed writes are announced to `on_commit` listeners (the change feed behind the web UI's live
updates) as {table: [rowids]} for the tables in `WATCHED_TABLES`, taken from SQLite's update hook.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import apsw
import apsw.aio

from maild.store.migrations import apply_migrations
from shared.config import Settings
from shared.errors import MailError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _best_practice(conn: apsw.Connection) -> None:
    """apsw.bestpractice's recommended set, for every connection opened in this process: WAL,
    foreign keys, no double-quoted strings, `pragma optimize`, recursive triggers. Spelled out
    here because importing apsw.bestpractice imports apsw.ext (~10 % of the daemon's cold start)."""
    conn.set_busy_timeout(100)  # _configure sets the configured timeout on the store's own connections
    writable = True
    try:
        writable = not conn.readonly("main")
    except apsw.ReadOnlyError:
        writable = False
    if writable:
        conn.pragma("journal_mode", "wal")
    conn.pragma("foreign_keys", "ON")
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DML, 0)
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DDL, 0)
    if writable:
        conn.pragma("optimize", 0x10002)
    conn.pragma("recursive_triggers", "ON")


def _sqlite_log(code: int, message: str) -> None:
    """SQLite's own log (recovered WAL, schema changes, misuse) into ours, as apsw.ext.log_sqlite does."""
    primary = code & 0xFF
    if primary == apsw.SQLITE_SCHEMA:
        level = logging.INFO
    elif primary in (apsw.SQLITE_WARNING, apsw.SQLITE_NOTICE):
        level = logging.WARNING
    else:
        level = logging.ERROR
    log.log(level, "SQLITE_LOG: %s (%d) %s", message, code, apsw.mapping_result_codes.get(primary, ""))


if _best_practice not in apsw.connection_hooks:
    apsw.connection_hooks.append(_best_practice)
    apsw.config(apsw.SQLITE_CONFIG_LOG, _sqlite_log)

Connection = apsw.Connection
# Tables whose committed changes are announced (see Store.on_commit); others are not worth a wakeup.
# (WITHOUT ROWID tables such as message_recipients are never reported by SQLite's update hook.)
WATCHED_TABLES = frozenset({"messages", "agents", "sessions", "file_reservations", "archive_outbox", "projects"})
# Reported with a commit like a table: the agents whose unread counter (agents.unread_count, kept by
# triggers) moved. The update hook only says an agents row was written, and most such writes are
# a sender's last_active_ts: the unread hint re-reads an agent's counts only when this names it.
UNREAD_MOVED = "agents.unread_count"
_CAP = 256  # rowids announced per table per commit
CommitListener = Callable[[dict[str, list[int]]], object]
# A constraint (e.g. the unique active-name index) refused a write; services catch this one.
IntegrityError = apsw.ConstraintError


def utcnow() -> str:
    """The one timestamp representation: fixed-width ISO-8601 UTC with microseconds and `Z`."""
    return format_ts(dt.datetime.now(dt.UTC))


def format_ts(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The WAL file keeps the size of its longest run: SQLite starts writing it over from the beginning
# once a checkpoint has copied every page back, but never shrinks it. Under sustained load a long
# read now and then keeps a checkpoint from finishing, the WAL runs long for a while, and the file
# ratcheted up with each such spike (15 → 44 MB in a 30-minute 16-agent soak, issue 22). With a
# size limit SQLite cuts the file back to it each time the WAL starts over.
WAL_SIZE_LIMIT = 16 << 20


def _configure(conn: apsw.Connection, settings: Settings, *, writer: bool) -> None:
    conn.set_busy_timeout(settings.busy_timeout_ms)
    conn.execute(f"PRAGMA synchronous = {settings.synchronous}")
    if writer:
        conn.transaction_mode = "IMMEDIATE"
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    else:
        conn.execute("PRAGMA query_only = 1")


def _disk_full(path: Path) -> bool:
    """SQLite reports some ENOSPC failures (growing the WAL index) as a plain I/O error: look."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 64 * 1024


def _describe(exc: apsw.Error, path: Path) -> StorageError:
    if isinstance(exc, apsw.NotADBError):
        return StorageError(
            f"{path} is not a SQLite database (corrupt or foreign file); move it away and restart maild, "
            "or rebuild it from the archive with `mailctl doctor --rebuild`"
        )
    if isinstance(exc, apsw.CantOpenError | apsw.ReadOnlyError | apsw.PermissionsError):
        return StorageError(f"cannot open {path} for writing ({exc}); check the directory's permissions")
    if isinstance(exc, apsw.CorruptError):
        return StorageError(f"{path} is corrupt ({exc}); rebuild it with `mailctl doctor --rebuild`")
    if isinstance(exc, apsw.FullError) or (isinstance(exc, apsw.IOError) and _disk_full(path)):
        err = StorageError(
            f"the disk holding {path} is full ({exc}); nothing was written. Free some space, then retry "
            "(no restart needed: writes succeed again as soon as there is room)"
        )
        err.recoverable = True
        return err
    if isinstance(exc, apsw.BusyError):
        err = StorageError(f"the database is busy ({exc}); retry")
        err.recoverable = True
        return err
    return StorageError(f"database error: {exc}")


class _Pending:
    """One queued unit of work and, once its transaction has ended, its outcome."""

    __slots__ = ("aborted", "args", "done", "error", "fn", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.aborted = False  # its failure took the whole transaction with it


class Store:
    """Async façade over the two connections. Create it with `open_store`."""

    def __init__(self, path: Path, writer: Any, readers: list[Any], schema_version: int) -> None:
        self.path = path
        self._writer = writer
        self._readers = readers
        self._idle_readers = list(readers)
        self._reader_slots = anyio.Semaphore(len(readers))  # a slot held = a reader popped from the idle list
        self.schema_version = schema_version
        self._writes = 0
        self._changed: dict[str, list[int]] = {}  # filled by the writer's update hook, on its thread
        self._listeners: list[CommitListener] = []
        # time.monotonic() on the writer thread right after the commit being announced (listeners
        # read it): CLOCK_MONOTONIC is one clock for every process of the machine, so a benchmark
        # can time "from the commit" to what its client receives.
        self.last_commit_at = 0.0
        self._queue: list[_Pending] = []  # units waiting for the next write transaction
        self._committing = False
        self._batch_done = anyio.Event()  # set (and replaced) as each write transaction ends
        self._inline: apsw.Connection | None = None  # read_inline's, opened on first use

    def on_commit(self, listener: CommitListener) -> None:
        """Call `listener({table: [rowids]})` on the event loop after each write that changed a
        watched table (rowids are capped per table; a listener must not block)."""
        self._listeners.append(listener)

    def _record_change(self, _op: int, _db: str, table: str, rowid: int) -> None:
        if table in WATCHED_TABLES:
            rows = self._changed.setdefault(table, [])
            if len(rows) < _CAP:
                rows.append(rowid)

    def _record_unread(self, agent_id: int) -> None:
        """Called by the writer's TEMP trigger on agents.unread_count (see `_watch_unread`)."""
        rows = self._changed.setdefault(UNREAD_MOVED, [])
        if len(rows) < _CAP:
            rows.append(agent_id)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` as one unit of work on the single writer connection, atomically.

        Group commit: units submitted while a transaction is running queue up and the next
        transaction runs them all, each in its own SAVEPOINT (a failing unit rolls back alone and
        raises to its own caller), with one COMMIT for the lot. A unit still sees every earlier
        unit's writes, as with one transaction each; no caller returns before its COMMIT.
        """
        pending = _Pending(fn, args)
        self._queue.append(pending)
        # Shielded: a write that has been submitted always completes (and commits or rolls back
        # whole); cancelling the caller must not abort SQLite mid-transaction.
        with anyio.CancelScope(shield=True):
            while not pending.done:
                if self._committing:
                    await self._batch_done.wait()
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                try:
                    await self._commit(batch)
                finally:
                    self._committing = False
                    finished, self._batch_done = self._batch_done, anyio.Event()
                    finished.set()
        if pending.error is not None:
            if isinstance(pending.error, apsw.Error):
                raise _describe(pending.error, self.path) from pending.error
            raise pending.error
        return cast(T, pending.value)

    async def _commit(self, batch: list[_Pending]) -> None:
        """One write transaction for `batch` on the writer's thread; announce what it changed."""

        def unit(conn: apsw.Connection) -> tuple[dict[str, list[int]], float]:
            try:
                with conn:
                    if len(batch) == 1:
                        batch[0].value = batch[0].fn(conn, *batch[0].args)
                    else:
                        for pending in batch:
                            self._run_savepoint(conn, pending)
            except BaseException as exc:  # the transaction as a whole failed: nothing of it holds
                cause = next((p.error for p in batch if p.error is not None and p.aborted), exc)
                for pending in batch:
                    pending.error, pending.value = cause, None
            finally:  # committed or rolled back: either way these rows are no longer pending
                changed, self._changed = self._changed, {}
            return changed, time.monotonic()

        changed: dict[str, list[int]] = {}
        committed_at = 0.0
        try:
            changed, committed_at = await self._writer.async_run(unit, self._writer)
        except Exception as exc:  # the worker itself failed (a closed connection): each caller hears it
            for pending in batch:
                pending.error = pending.error or exc
        finally:
            for pending in batch:
                pending.done = True
        self._writes += sum(1 for p in batch if p.error is None)
        if changed and any(p.error is None for p in batch):
            self.last_commit_at = committed_at
            for listener in self._listeners:
                listener(changed)

    def _run_savepoint(self, conn: apsw.Connection, pending: _Pending) -> None:
        marks = {table: len(rows) for table, rows in self._changed.items()}
        try:
            with conn:  # nested: a SAVEPOINT
                pending.value = pending.fn(conn, *pending.args)
        except Exception as exc:
            pending.error = exc
            for table, rows in self._changed.items():  # the rolled-back unit's rows were never written
                del rows[marks.get(table, 0):]
            if not conn.in_transaction:  # SQLite gave up the whole transaction (disk full, I/O error)
                pending.aborted = True
                raise

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on an idle read-only connection (one WAL snapshot for the unit)."""

        def unit(conn: apsw.Connection) -> T:
            with conn:  # one snapshot for the whole unit of work
                result = fn(conn, *args)
            return result

        # An idle reader is taken without a checkpoint: anyio's `acquire` yields to the event loop
        # even when a slot is free, one extra loop round per read (~6 % of an HTTP call's CPU).
        try:
            self._reader_slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._reader_slots.acquire()
        reader = self._idle_readers.pop()
        try:
            return await self._run(reader, unit)
        finally:
            self._idle_readers.append(reader)
            self._reader_slots.release()

    async def read_inline(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a *cheap* `fn(conn, *args)` on the event loop's own thread, with no hand-off to a
        reader thread and back (under HTTP load that round trip costs ~120 µs of CPU per read, more
        than a small query). Only for queries that take microseconds (a count of a short queue, an
        indexed lookup): the loop waits for them. SQLite never makes it wait on a lock: the
        connection is read-only with no busy timeout, and a busy database sends the unit to `read`."""
        conn = self._inline
        try:
            if conn is None:
                conn = self._inline = _open_inline(self.path)
            with conn:
                result: T = fn(conn, *args)
        except apsw.BusyError:
            return await self.read(fn, *args)
        except apsw.Error as exc:
            raise _describe(exc, self.path) from exc
        return result

    async def _run(self, target: Any, unit: Callable[[apsw.Connection], T]) -> T:
        try:
            result: T = await target.async_run(unit, target)
        except MailError:
            raise
        except apsw.Error as exc:
            raise _describe(exc, self.path) from exc
        return result

    async def ping(self) -> bool:
        """A live check: the reader can run a query."""
        try:
            await self.read(lambda conn: conn.execute("SELECT 1").get)
        except StorageError:
            return False
        return True

    def statistics(self) -> dict[str, Any]:
        return {"path": str(self.path), "schema_version": self.schema_version, "writes": self._writes,
                "readers": len(self._readers), "readers_busy": len(self._readers) - len(self._idle_readers)}

    async def aclose(self) -> None:
        """Drain: checkpoint the WAL and close both connections (waits for in-flight work)."""
        with anyio.CancelScope(shield=True):
            try:
                await self._writer.async_run(
                    lambda conn: conn.execute("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE)").fetchall(),
                    self._writer,
                )
            except apsw.Error as exc:  # closing must not fail because a checkpoint could not run
                log.warning("WAL checkpoint at shutdown failed: %s", exc)
            for reader in self._readers:
                await reader.aclose()
            if self._inline is not None:
                self._inline.close()
            await self._writer.aclose()


def _open_inline(path: Path) -> apsw.Connection:
    """Store.read_inline's connection: read-only (so opening it runs no `pragma optimize`), plain
    (not `as_async`: it runs on the loop's thread), never waiting on a lock."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(0)
    return conn


def _watch_unread(conn: apsw.Connection, record: Callable[[int], None]) -> None:
    """A TEMP trigger (this connection's alone, no schema change) reporting which agents' unread
    counters a transaction moved; a rolled-back savepoint's reports are trimmed like its rowids."""
    def moved(*args: Any) -> None:  # SQL: maild_unread_moved(agent_id)
        record(int(args[0]))

    conn.create_scalar_function("maild_unread_moved", moved, 1)
    conn.execute(
        "CREATE TEMP TRIGGER IF NOT EXISTS maild_unread_moved AFTER UPDATE OF unread_count ON main.agents"
        " BEGIN SELECT maild_unread_moved(new.id); END"
    )


def _controller() -> Any:
    """apsw's controller for the running backend. Not its AnyIO one: that one hands every finished
    unit back with a *blocking* `from_thread.run_sync`, so the worker thread idles until the event
    loop gets round to it (under 16 writers, ~20 % of the writer thread's time). The asyncio and
    trio controllers post the result and move on."""
    trio = sys.modules.get("trio")  # anyio's trio backend has imported it if it is the one running
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return apsw.aio.Trio()
    return apsw.aio.AsyncIO()


async def _open_connection(path: Path, settings: Settings, *, writer: bool) -> Any:
    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if writer else 0)
    chosen = apsw.async_controller.set(cast(Any, _controller))  # a factory, as its default (aio.Auto) is
    try:
        conn = await apsw.Connection.as_async(str(path), flags=flags)
    finally:
        apsw.async_controller.reset(chosen)
    try:
        await conn.async_run(functools.partial(_configure, settings=settings, writer=writer), conn)
    except BaseException:
        await conn.aclose()
        raise
    return conn


@asynccontextmanager
async def open_store(path: Path, settings: Settings) -> AsyncIterator[Store]:
    """Open (creating and migrating if needed) the database at `path`; close it on exit."""
    try:
        writer = await _open_connection(path, settings, writer=True)
    except apsw.Error as exc:
        raise _describe(exc, path) from exc
    readers: list[Any] = []
    try:
        try:
            version = await writer.async_run(lambda conn: apply_migrations(conn, str(path), utcnow()), writer)
            for _ in range(settings.reader_connections):
                readers.append(await _open_connection(path, settings, writer=False))
        except apsw.Error as exc:
            raise _describe(exc, path) from exc
        store = Store(path, writer, readers, version)
        await writer.async_run(lambda conn: conn.set_update_hook(store._record_change), writer)
        await writer.async_run(_watch_unread, writer, store._record_unread)
    except BaseException:
        with anyio.CancelScope(shield=True):
            for reader in readers:
                await reader.aclose()
            await writer.aclose()
        raise
    try:
        yield store
    finally:
        await store.aclose()
