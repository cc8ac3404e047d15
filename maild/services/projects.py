"""Projects: labels that group agents and mail inside one mailbox root (upstream `ensure_project`).

A project key is any string (a path, a repo name, a label). Keys that slugify alike are the same
project: `/backend`, `Backend` and `backend` all map to slug `backend` (rule: shared/slugs.py).
"""

from __future__ import annotations

from typing import Any

from maild.store import Connection, Store, utcnow
from maild.store.outbox import enqueue
from shared.errors import InvalidArgument, NotFound
from shared.slugs import LEGACY_EMPTY_SLUG, slugify

__all__ = ["ensure_in", "find_in", "project_dict", "slugify", "validate_project_key"]

MAX_PROJECT_KEY_CHARS = 1024


def validate_project_key(human_key: object) -> str:
    if not isinstance(human_key, str) or not human_key.strip():
        raise InvalidArgument(
            "project_key must be a non-empty string: the repository path (e.g. /home/me/app) or any label"
        )
    if len(human_key) > MAX_PROJECT_KEY_CHARS:
        raise InvalidArgument(f"project_key is {len(human_key)} characters; at most {MAX_PROJECT_KEY_CHARS}")
    if "\x00" in human_key:
        raise InvalidArgument("project_key must not contain NUL characters")
    return human_key.strip()


def project_dict(row: Any) -> dict[str, Any]:
    return {"id": row[0], "slug": row[1], "human_key": row[2], "created_at": row[3]}


COLUMNS = "id, slug, human_key, created_ts"


def _lookup(conn: Connection, human_key: str, slug: str) -> Any:
    row = conn.execute(f"SELECT {COLUMNS} FROM projects WHERE slug = ?", (slug,)).fetchone()
    if row is None and slug.startswith(LEGACY_EMPTY_SLUG + "-"):
        # A database from before hashed slugs: this key's project was created as plain `project`.
        row = conn.execute(
            f"SELECT {COLUMNS} FROM projects WHERE slug = ? AND human_key = ?", (LEGACY_EMPTY_SLUG, human_key)
        ).fetchone()
    return row


def ensure_in(conn: Connection, human_key: str) -> dict[str, Any]:
    """Find or create the project inside the caller's write transaction."""
    slug = slugify(human_key)
    found = _lookup(conn, human_key, slug)
    if found is not None:
        return project_dict(found)
    created = conn.execute(
        f"INSERT INTO projects(slug, human_key, created_ts) VALUES (?, ?, ?) RETURNING {COLUMNS}",
        (slug, human_key, utcnow()),
    ).fetchone()
    project = project_dict(created)
    enqueue(conn, "project", slug, {"project": project})
    return project


def find_in(conn: Connection, human_key: str) -> dict[str, Any]:
    """Look a project up by key or slug; NOT_FOUND says how to create it."""
    slug = slugify(human_key)
    row = _lookup(conn, human_key, slug)
    if row is None:
        raise NotFound(
            f"project {human_key!r} (slug {slug!r}) does not exist; call ensure_project or register_agent first",
            data={"project_key": human_key, "slug": slug},
        )
    return project_dict(row)


class Projects:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def ensure(self, human_key: object) -> dict[str, Any]:
        key = validate_project_key(human_key)
        slug = slugify(key)

        def lookup(conn: Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = _lookup(conn, key, slug)
            return row

        # Fast path on the reader: most calls find an existing project and need no write.
        existing = await self._store.read(lookup)
        if existing is not None:
            return project_dict(existing)
        return await self._store.write(ensure_in, key)

    async def find(self, human_key: object) -> dict[str, Any]:
        """An existing project (NOT_FOUND, saying how to create it, otherwise)."""
        key = validate_project_key(human_key)
        return await self._store.read(find_in, key)

    async def list(self) -> list[dict[str, Any]]:
        rows = await self._store.read(
            lambda conn: conn.execute(f"SELECT {COLUMNS} FROM projects ORDER BY id").fetchall()
        )
        return [project_dict(r) for r in rows]
