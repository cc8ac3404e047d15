"""The apsw store on both anyio backends: migrations, one writer door, a read-only reader."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from maild.store import open_store, utcnow
from maild.store.db import WAL_SIZE_LIMIT
from maild.store.migrations import LATEST_VERSION, MIGRATIONS
from shared.config import Settings
from shared.errors import MailError, StorageError

pytestmark = pytest.mark.anyio


async def test_migrations_are_recorded_once_and_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "mail.sqlite3"
    async with open_store(path, Settings()) as store:
        assert store.schema_version == LATEST_VERSION
    async with open_store(path, Settings()) as store:
        rows = await store.read(lambda c: c.execute("SELECT version, name FROM schema_migrations").fetchall())
        assert rows == [(version, name) for version, name, _sql in MIGRATIONS]
        assert rows[:4] == [(1, "initial"), (2, "unread_counts"), (3, "agent_origins"), (4, "send_keys")]
        mode = await store.read(lambda c: c.execute("PRAGMA journal_mode").get)
        assert mode == "wal"


async def test_concurrent_writes_all_land_and_check_then_act_is_atomic(tmp_path: Path) -> None:
    async with open_store(tmp_path / "m.db", Settings()) as store:
        await store.write(lambda c: c.execute("CREATE TABLE counter(n INTEGER)"))
        await store.write(lambda c: c.execute("INSERT INTO counter VALUES (0)"))

        def increment(conn: object) -> None:
            value = conn.execute("SELECT n FROM counter").get  # type: ignore[attr-defined]
            conn.execute("UPDATE counter SET n = ?", (value + 1,))  # type: ignore[attr-defined]

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(store.write, increment)
        assert await store.read(lambda c: c.execute("SELECT n FROM counter").get) == 200


async def test_a_failing_unit_of_work_rolls_back_whole(tmp_path: Path) -> None:
    class Refused(MailError):
        code = "REFUSED"

    async with open_store(tmp_path / "m.db", Settings()) as store:
        def half_then_fail(conn: object) -> None:
            conn.execute("INSERT INTO projects(slug, human_key, created_ts) VALUES ('a', 'a', ?)", (utcnow(),))  # type: ignore[attr-defined]
            raise Refused("no")

        with pytest.raises(Refused):
            await store.write(half_then_fail)
        assert await store.read(lambda c: c.execute("SELECT count(*) FROM projects").get) == 0


async def test_the_reader_cannot_write(tmp_path: Path) -> None:
    async with open_store(tmp_path / "m.db", Settings()) as store:
        with pytest.raises(StorageError):
            await store.read(
                lambda c: c.execute("INSERT INTO projects(slug, human_key, created_ts) VALUES ('a','a','x')")
            )


async def test_timestamps_are_fixed_width_utc_with_z() -> None:
    stamp = utcnow()
    assert len(stamp) == len("2026-01-01T00:00:00.000000Z")
    assert stamp.endswith("Z")


async def test_a_slow_read_does_not_hold_up_the_other_readers(tmp_path: Path) -> None:
    started, gate = threading.Event(), threading.Event()

    def slow(conn: object) -> None:  # e.g. a search over 1M messages
        started.set()
        gate.wait(10)

    async with open_store(tmp_path / "mail.sqlite3", Settings(reader_connections=2)) as store:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.read, slow)
            assert await anyio.to_thread.run_sync(started.wait, 5)
            with anyio.fail_after(5):
                assert await store.read(lambda conn: conn.execute("SELECT 1").get) == 1
            assert store.statistics()["readers_busy"] == 1, "the slow read is still running"
            gate.set()
        assert store.statistics()["readers_busy"] == 0


async def test_concurrent_writes_share_commits_and_a_failing_unit_rolls_back_alone(tmp_path: Path) -> None:
    """Group commit: units queued behind a running transaction commit together, each in its own
    savepoint; the failing one raises to its own caller only, and the change feed hears only
    committed rows."""

    class Refused(MailError):
        code = "REFUSED"

    async with open_store(tmp_path / "m.db", Settings()) as store:
        await store.write(lambda c: c.execute("CREATE TABLE counter(n INTEGER)"))
        await store.write(lambda c: c.execute("INSERT INTO counter VALUES (0)"))
        commits: list[int] = []
        await store.write(lambda c: c.set_commit_hook(lambda: commits.append(1) or False))
        announced: list[dict[str, list[int]]] = []
        store.on_commit(announced.append)

        def add_project(conn: object, slug: str, fail: bool) -> int:
            conn.execute("UPDATE counter SET n = n + 1")  # type: ignore[attr-defined]
            rowid: int = conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO projects(slug, human_key, created_ts) VALUES (?, ?, ?) RETURNING id",
                (slug, slug, utcnow())).get
            if fail:
                raise Refused(f"{slug} refused")
            return rowid

        outcomes: dict[str, object] = {}

        async def one(slug: str) -> None:
            try:
                outcomes[slug] = await store.write(add_project, slug, slug == "p13")
            except Refused as exc:
                outcomes[slug] = exc

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, f"p{i}")
        assert isinstance(outcomes.pop("p13"), Refused)
        ids = sorted(outcomes.values())  # type: ignore[type-var]
        assert len(ids) == 39
        assert await store.read(lambda c: c.execute("SELECT n FROM counter").get) == 39
        stored = await store.read(lambda c: [r[0] for r in c.execute("SELECT id FROM projects ORDER BY id")])
        assert stored == ids
        assert len(commits) < 40  # (one per batch; the first unit commits alone)
        heard = sorted(rowid for change in announced for rowid in change.get("projects", []))
        assert heard == [] or heard == ids  # projects is not a watched table today; if it becomes one
        assert store.statistics()["writes"] == 3 + 39


async def test_a_failure_that_ends_the_whole_transaction_fails_every_unit_in_it(tmp_path: Path) -> None:
    """A unit whose error made SQLite drop the whole transaction (here: it ends it itself) takes the
    batch with it: no caller is told its write landed when its rows were not committed."""
    async with open_store(tmp_path / "m.db", Settings()) as store:
        await store.write(lambda c: c.execute("CREATE TABLE t(n INTEGER)"))

        def insert(conn: object, n: int) -> None:
            conn.execute("INSERT INTO t VALUES (?)", (n,))  # type: ignore[attr-defined]
            if n == 5:
                conn.execute("ROLLBACK")  # type: ignore[attr-defined]
                raise RuntimeError("the transaction is gone")

        failed: list[int] = []

        async def one(n: int) -> None:
            try:
                await store.write(insert, n)
            except (RuntimeError, StorageError):
                failed.append(n)

        async def blocker() -> None:  # holds the writer so the others queue into one batch
            await store.write(lambda c: threading.Event().wait(0.2))

        async with anyio.create_task_group() as tg:
            tg.start_soon(blocker)
            await anyio.sleep(0.05)
            for n in range(10):
                tg.start_soon(one, n)
        rows = await store.read(lambda c: sorted(r[0] for r in c.execute("SELECT n FROM t")))
        assert sorted(failed) == list(range(10))  # one batch, all lost: every caller hears so
        assert rows == []
        await store.write(insert, 11)  # the writer works on afterwards


async def test_a_commit_names_the_agents_whose_unread_counter_moved_and_no_others(tmp_path: Path) -> None:
    """The unread hint re-reads an agent's counts only when this names it: a delivery and a read
    name the recipient; the sender's last_active_ts write does not; a rolled-back unit names no one."""
    from maild.store import UNREAD_MOVED

    class Refused(MailError):
        code = "REFUSED"

    async with open_store(tmp_path / "m.db", Settings()) as store:
        now = utcnow()

        def setup(conn: object) -> tuple[int, int]:
            c: Any = conn
            c.execute("INSERT INTO projects(id, slug, human_key, created_ts) VALUES (1, 'p', '/p', ?)", (now,))
            ids = [c.execute("INSERT INTO agents(project_id, name, inception_ts, last_active_ts) VALUES (1, ?, ?, ?)"
                             " RETURNING id", (name, now, now)).get for name in ("Sender", "Reader")]
            return ids[0], ids[1]

        sender, reader = await store.write(setup)
        announced: list[dict[str, list[int]]] = []
        store.on_commit(announced.append)

        def deliver(conn: object, fail: bool = False) -> int:
            c: Any = conn
            message: int = c.execute("INSERT INTO messages(project_id, sender_id, subject, body_md, created_ts)"
                                     " VALUES (1, ?, 's', 'b', ?) RETURNING id", (sender, now)).get
            c.execute("INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, 'to')",
                      (message, reader))
            c.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, sender))
            if fail:
                raise Refused("no")
            return message

        message = await store.write(deliver)
        assert announced[-1][UNREAD_MOVED] == [reader]
        assert sorted(announced[-1]["agents"]) == sorted([sender, reader])
        await store.write(lambda c: c.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, reader)))
        assert UNREAD_MOVED not in announced[-1]
        assert announced[-1]["agents"] == [reader]
        await store.write(lambda c: c.execute(
            "UPDATE message_recipients SET read_ts = ? WHERE message_id = ? AND agent_id = ?", (now, message, reader)))
        assert announced[-1][UNREAD_MOVED] == [reader]
        heard = len(announced)
        with pytest.raises(Refused):
            await store.write(deliver, True)
        assert len(announced) == heard  # nothing committed, nothing announced

        async with anyio.create_task_group() as tg:  # a failing unit inside a group commit is trimmed
            tg.start_soon(store.write, lambda c: c.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?",
                                                           (now, sender)))
            for fail in (True, False):
                tg.start_soon(_quietly, store.write(deliver, fail))
        moved = [agent for change in announced[heard:] for agent in change.get(UNREAD_MOVED, [])]
        assert moved == [reader]
        counts = await store.read(lambda c: c.execute("SELECT unread_count FROM agents ORDER BY id").fetchall())
        assert counts == [(0,), (1,)]


async def _quietly(write: Any) -> None:
    with contextlib.suppress(MailError):
        await write


async def test_an_inline_read_runs_on_the_loop_thread_sees_each_commit_and_cannot_write(tmp_path: Path) -> None:
    async with open_store(tmp_path / "m.db", Settings()) as store:
        await store.write(lambda c: c.execute("CREATE TABLE queue(n INTEGER)"))
        threads: list[int] = []

        def count(conn: Any) -> int:
            threads.append(threading.get_ident())
            return int(conn.execute("SELECT count(*) FROM queue").get)

        assert await store.read_inline(count) == 0
        await store.write(lambda c: c.execute("INSERT INTO queue VALUES (1), (2)"))
        assert await store.read_inline(count) == 2  # its connection stays open and still sees every commit
        assert threads == [threading.get_ident()] * 2  # no hand-off to a reader thread
        with pytest.raises(StorageError):
            await store.read_inline(lambda c: c.execute("INSERT INTO queue VALUES (3)"))
        with pytest.raises(StorageError):
            await store.read_inline(lambda c: c.execute("SELECT * FROM missing").get)
        assert await store.read(count) == 2


async def test_the_wal_file_shrinks_back_after_a_long_read_let_it_run_long(tmp_path: Path) -> None:
    """A read held open keeps checkpoints from finishing, so the WAL runs long; the file used to keep
    that size for good, ratcheting up spike after spike (a 30-minute 16-agent soak: 15 → 44 MB,
    issue 22). Once the read ends, the next commits start the WAL over and cut the file back."""
    path = tmp_path / "mail.sqlite3"
    wal = path.with_name(path.name + "-wal")
    holding, release = threading.Event(), threading.Event()

    def long_read(conn: Any) -> None:
        with conn:  # a snapshot held until released, as a long search would
            conn.execute("SELECT count(*) FROM load").fetchall()
            holding.set()
            release.wait(30)

    def insert(conn: Any) -> None:
        conn.execute("INSERT INTO load VALUES (randomblob(100000))")

    async with open_store(path, Settings(reader_connections=2)) as store:
        await store.write(lambda conn: conn.execute("CREATE TABLE load (data BLOB)"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.read, long_read)
            assert await anyio.to_thread.run_sync(holding.wait, 10)
            for _ in range(WAL_SIZE_LIMIT // 100000 * 3 // 2):  # 1.5 times the limit through the WAL
                await store.write(insert)
            assert wal.stat().st_size > WAL_SIZE_LIMIT, "the held read should have let the WAL run long"
            release.set()
        for _ in range(20):  # the next commits checkpoint, then start the WAL over
            await store.write(insert)
        assert wal.stat().st_size <= WAL_SIZE_LIMIT
