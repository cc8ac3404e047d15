"""The Git archive: a human-readable mirror of every change, in `.mcp_mail/archive/` (its own repo).

The only package that runs git. SQLite stays the source of truth; the archive converges on it by
draining the `archive_outbox` table, which services fill in the same transaction as each change.
"""
