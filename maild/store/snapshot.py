"""A private copy of the mailbox database for export: SQLite's backup API, then edits on the copy.

`take_snapshot` copies the live database page by page through the backup API, which gives a
consistent image even while maild keeps writing (WAL readers see one committed state). `Snapshot`
then scopes, scrubs and reads the *copy*; the live database is never written. It knows nothing of
secret patterns or bundle files (maild/share decides what to change; this module only does SQL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from shared.errors import InvalidArgument, StorageError


def take_snapshot(source: Path, dest: Path) -> None:
    """Copy `source` to `dest` consistently, even while another process writes to it."""
    if not source.is_file():
        raise StorageError(f"no mailbox database at {source}; pick the mailbox with --root")
    dest.unlink(missing_ok=True)
    try:
        live = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
        live.set_busy_timeout(10_000)
        copy = apsw.Connection(str(dest))
        with copy.backup("main", live, "main") as backup:
            while not backup.done:
                backup.step(1024)  # pages per step: the writer is never held out for long
        copy.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file in the bundle
        copy.close()
        live.close()
    except apsw.Error as exc:
        raise StorageError(f"could not snapshot {source}: {exc}; is it an Agent Mail database?") from exc


class Snapshot:
    """SQL on a snapshot file: scope, scrub columns, read rows for the bundle, finalise."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = apsw.Connection(str(path))
        self.conn.execute("PRAGMA foreign_keys = OFF")  # rows are deleted across tables in bulk

    def _has_table(self, name: str) -> bool:
        return bool(self.conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?",
                                      (name,)).fetchone())

    def close(self) -> None:
        self.conn.close()

    def projects(self) -> list[dict[str, Any]]:
        return self._rows("SELECT id, slug, human_key, created_ts FROM projects ORDER BY id")

    def scope(self, keys: list[str]) -> list[str]:
        """Keep only the projects named by slug or human_key; return the slugs kept."""
        every = self.projects()
        kept = [p for p in every if p["slug"] in keys or p["human_key"] in keys]
        unknown = [k for k in keys if not any(k in (p["slug"], p["human_key"]) for p in every)]
        if unknown:
            names = ", ".join(p["slug"] for p in every) or "none"
            raise InvalidArgument(f"no project {', '.join(unknown)} in this mailbox; known: {names}")
        ids = [p["id"] for p in kept]
        marks = ",".join("?" * len(ids))
        with self.conn:
            for table in ("message_recipients",):
                self.conn.execute(
                    f"DELETE FROM {table} WHERE message_id IN "
                    f"(SELECT id FROM messages WHERE project_id NOT IN ({marks}))", ids)
            for table in ("attachments", "messages", "file_reservations"):
                self.conn.execute(f"DELETE FROM {table} WHERE project_id NOT IN ({marks})", ids)
            if self._has_table("build_slots"):  # an agent may hold a slot in another project: it goes too
                self.conn.execute(f"DELETE FROM build_slots WHERE project_id NOT IN ({marks}) OR agent_id IN "
                                  f"(SELECT id FROM agents WHERE project_id NOT IN ({marks}))", ids + ids)
            self.conn.execute(f"DELETE FROM sessions WHERE agent_id IN (SELECT id FROM agents WHERE project_id NOT IN ({marks}))", ids)  # noqa: E501
            self.conn.execute(f"DELETE FROM agents WHERE project_id NOT IN ({marks})", ids)
            # A sibling pair names both projects: it goes when either side is out of scope.
            self.conn.execute(f"DELETE FROM project_sibling_suggestions WHERE project_a_id NOT IN ({marks})"
                              f" OR project_b_id NOT IN ({marks})", ids + ids)
            self.conn.execute(f"DELETE FROM projects WHERE id NOT IN ({marks})", ids)
            self.conn.execute("DELETE FROM attachment_blobs WHERE sha256 NOT IN (SELECT sha256 FROM attachments)")
            self.conn.execute("DELETE FROM attachment_conversions")  # the daemon's work queue, not mail
        return [p["slug"] for p in kept]

    def clear_private_state(self) -> dict[str, int]:
        """What `standard` and `strict` drop: read/ack state, reservations, sessions, the outbox."""
        counts: dict[str, int] = {}
        with self.conn:
            self.conn.execute("UPDATE messages SET ack_required = 0 WHERE ack_required != 0")
            counts["ack_flags_cleared"] = self.conn.changes()
            self.conn.execute("UPDATE message_recipients SET read_ts = NULL, ack_ts = NULL "
                              "WHERE read_ts IS NOT NULL OR ack_ts IS NOT NULL")
            counts["recipient_states_cleared"] = self.conn.changes()
            # Salted hashes of registration tokens: useless to readers, and a bundle is public.
            self.conn.execute("UPDATE agents SET token_hash = NULL WHERE token_hash IS NOT NULL")
            counts["token_hashes_cleared"] = self.conn.changes()
            for table in ("file_reservations", "build_slots", "sessions", "archive_outbox"):
                if not self._has_table(table):
                    continue  # a database copied before its daemon ran the migration that adds it
                self.conn.execute(f"DELETE FROM {table}")
                counts[f"{table}_deleted"] = self.conn.changes()
        return counts

    def messages(self) -> Iterator[dict[str, Any]]:
        cursor = self.conn.execute(
            "SELECT m.id, m.project_id, p.slug AS project_slug, a.name AS sender, m.thread_id, m.subject,"
            " m.body_md, m.importance, m.ack_required, m.created_ts, m.attachments"
            " FROM messages m JOIN projects p ON p.id = m.project_id JOIN agents a ON a.id = m.sender_id"
            " ORDER BY m.id")
        yield from _dicts(cursor)

    def recipients(self) -> dict[int, list[dict[str, str]]]:
        out: dict[int, list[dict[str, str]]] = {}
        for mid, name, kind in self.conn.execute(
                "SELECT r.message_id, a.name, r.kind FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
                " WHERE r.kind != 'bcc' ORDER BY r.message_id, r.kind, a.name"):
            out.setdefault(mid, []).append({"name": name, "kind": kind})
        return out

    def agents(self) -> list[dict[str, Any]]:
        return self._rows("SELECT a.id, p.slug AS project_slug, a.name, a.program, a.model, a.task_description,"
                          " a.inception_ts, a.last_active_ts FROM agents a JOIN projects p ON p.id = a.project_id"
                          " ORDER BY p.slug, a.name")

    def rewrite_messages(self, changes: list[tuple[int, str, str, list[dict[str, Any]]]]) -> None:
        """Write scrubbed (id, subject, body_md, attachments) back; the FTS triggers follow."""
        with self.conn:
            self.conn.executemany(
                "UPDATE messages SET subject = ?, body_md = ?, attachments = ? WHERE id = ?",
                [(subject, body, json.dumps(atts), mid) for mid, subject, body, atts in changes])

    def rewrite_task_descriptions(self, changes: list[tuple[int, str]]) -> None:
        with self.conn:
            self.conn.executemany("UPDATE agents SET task_description = ? WHERE id = ?",
                                  [(text, agent_id) for agent_id, text in changes])

    def drop_attachments(self) -> int:
        with self.conn:
            self.conn.execute("DELETE FROM attachments")
            count = self.conn.changes()
            self.conn.execute("DELETE FROM attachment_blobs")
            self.conn.execute("DELETE FROM attachment_conversions")
        return count

    def finalise(self) -> None:
        """Compact the copy: rebuild the FTS index, vacuum, analyse (the file is what gets hashed)."""
        self.conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        self.conn.execute("VACUUM")
        self.conn.execute("ANALYZE")
        # maild.store.db turns WAL on for every connection (as apsw.bestpractice would);
        # the bundle's copy must be one plain file.
        self.conn.execute("PRAGMA journal_mode = DELETE")

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        return list(_dicts(self.conn.execute(sql)))


def _dicts(cursor: apsw.Cursor) -> Iterator[dict[str, Any]]:
    try:
        names = [d[0] for d in cursor.getdescription()]
    except apsw.ExecutionCompleteError:  # no rows at all
        return
    for row in cursor:
        yield dict(zip(names, row, strict=True))
