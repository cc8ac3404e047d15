"""Append-only, numbered schema migrations. Never edit a shipped migration: add the next one.

Each migration is (version, name, sql). `apply_migrations` runs the missing ones in one IMMEDIATE
transaction each and records them in `schema_migrations`. It refuses a database whose recorded
version is newer than this code knows (a downgrade would silently misread it).
"""

from __future__ import annotations

from typing import Any

from shared.errors import StorageError

# 'AGML' in ASCII: marks the file as ours so a foreign SQLite file is never migrated in place.
APPLICATION_ID = 0x41474D4C

M001_INITIAL = """
CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    human_key   TEXT NOT NULL,
    created_ts  TEXT NOT NULL
);

CREATE TABLE agents (
    id                  INTEGER PRIMARY KEY,
    project_id          INTEGER NOT NULL REFERENCES projects(id),
    name                TEXT NOT NULL,
    program             TEXT NOT NULL DEFAULT '',
    model               TEXT NOT NULL DEFAULT '',
    task_description    TEXT NOT NULL DEFAULT '',
    attachments_policy  TEXT NOT NULL DEFAULT 'auto',
    contact_policy      TEXT NOT NULL DEFAULT 'auto',
    inception_ts        TEXT NOT NULL,
    last_active_ts      TEXT NOT NULL,
    is_active           INTEGER NOT NULL DEFAULT 1,
    deleted_ts          TEXT,
    token_hash          TEXT          -- sha256 of the registration token; the token itself is never stored
);
-- Active names are unique per mailbox root, case-insensitively: races are settled here, not by luck.
CREATE UNIQUE INDEX agents_active_name ON agents(lower(name)) WHERE is_active = 1;
CREATE INDEX agents_project ON agents(project_id, last_active_ts);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    project_id    INTEGER NOT NULL REFERENCES projects(id),
    sender_id     INTEGER NOT NULL REFERENCES agents(id),
    thread_id     TEXT,
    subject       TEXT NOT NULL,
    body_md       TEXT NOT NULL,
    importance    TEXT NOT NULL DEFAULT 'normal' CHECK (importance IN ('low', 'normal', 'high', 'urgent')),
    ack_required  INTEGER NOT NULL DEFAULT 0,
    created_ts    TEXT NOT NULL,
    attachments   TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX messages_project_created ON messages(project_id, created_ts);
CREATE INDEX messages_thread ON messages(project_id, thread_id) WHERE thread_id IS NOT NULL;
CREATE INDEX messages_sender ON messages(sender_id, id);

CREATE TABLE message_recipients (
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    agent_id    INTEGER NOT NULL REFERENCES agents(id),
    kind        TEXT NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
    read_ts     TEXT,
    ack_ts      TEXT,
    PRIMARY KEY (message_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX recipients_inbox ON message_recipients(agent_id, message_id);
CREATE INDEX recipients_unread ON message_recipients(agent_id, message_id) WHERE read_ts IS NULL;

-- Full-text index kept in sync by triggers inside the writing transaction.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    subject, body_md, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, subject, body_md) VALUES (new.id, new.subject, new.body_md);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, subject, body_md)
        VALUES ('delete', old.id, old.subject, old.body_md);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, body_md ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, subject, body_md)
        VALUES ('delete', old.id, old.subject, old.body_md);
    INSERT INTO messages_fts(rowid, subject, body_md) VALUES (new.id, new.subject, new.body_md);
END;

CREATE TABLE file_reservations (
    id            INTEGER PRIMARY KEY,
    project_id    INTEGER NOT NULL REFERENCES projects(id),
    agent_id      INTEGER NOT NULL REFERENCES agents(id),
    path_pattern  TEXT NOT NULL,
    exclusive     INTEGER NOT NULL DEFAULT 1,
    reason        TEXT NOT NULL DEFAULT '',
    created_ts    TEXT NOT NULL,
    expires_ts    TEXT NOT NULL,
    released_ts   TEXT
);
CREATE INDEX reservations_active ON file_reservations(project_id, expires_ts) WHERE released_ts IS NULL;
CREATE INDEX reservations_agent ON file_reservations(agent_id);

-- One row per client session (a shim, a CLI call, an HTTP session). Bindings survive restarts.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    agent_id      INTEGER REFERENCES agents(id),
    client        TEXT NOT NULL DEFAULT '',
    pid           INTEGER,
    ppid          INTEGER,
    cwd           TEXT,
    created_ts    TEXT NOT NULL,
    last_seen_ts  TEXT NOT NULL,
    connected     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_agent ON sessions(agent_id) WHERE agent_id IS NOT NULL;

-- Pending archive writes, recorded in the same transaction as the change they mirror.
CREATE TABLE archive_outbox (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    project_slug  TEXT,
    payload       TEXT NOT NULL,
    created_ts    TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);
"""

# Unread counts kept by triggers, so "how much unread mail do I have" is O(1) at any mailbox size.
M002_UNREAD_COUNTS = """
ALTER TABLE agents ADD COLUMN unread_count INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER recipients_unread_insert AFTER INSERT ON message_recipients WHEN new.read_ts IS NULL BEGIN
    UPDATE agents SET unread_count = unread_count + 1 WHERE id = new.agent_id;
END;
CREATE TRIGGER recipients_unread_read AFTER UPDATE OF read_ts ON message_recipients
WHEN old.read_ts IS NULL AND new.read_ts IS NOT NULL BEGIN
    UPDATE agents SET unread_count = unread_count - 1 WHERE id = new.agent_id;
END;
CREATE TRIGGER recipients_unread_delete AFTER DELETE ON message_recipients WHEN old.read_ts IS NULL BEGIN
    UPDATE agents SET unread_count = unread_count - 1 WHERE id = old.agent_id;
END;
"""

# How an agent came to exist, for the identity rules in maild/services/agents.py:
# - placeholder: auto-registered as a recipient (MESSAGING_AUTO_REGISTER_RECIPIENTS); the first real
#   register_agent of that name claims this row (same id, so the mail already sent is kept);
# - named_by_env: registered under the name its shim's hello gave (AGENT_MAIL_NAME, the editor
#   config); only such agents may be bound by a later token-less hello naming them, when offline.
M003_AGENT_ORIGINS = """
ALTER TABLE agents ADD COLUMN placeholder INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN named_by_env INTEGER NOT NULL DEFAULT 0;
"""

# Idempotent sends: a client-chosen key per (project, sender) remembers the first send's result, so
# a retry after a lost answer (crash, dropped connection) returns it instead of sending again.
# `request_hash` tells an honest retry from a different message reusing the key.
M004_SEND_KEYS = """
CREATE TABLE send_keys (
    project_id    INTEGER NOT NULL REFERENCES projects(id),
    sender_id     INTEGER NOT NULL REFERENCES agents(id),
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    result        TEXT NOT NULL,
    created_ts    TEXT NOT NULL,
    PRIMARY KEY (project_id, sender_id, key)
) WITHOUT ROWID;
CREATE INDEX send_keys_created ON send_keys(created_ts);
"""

# Issue 14, agents working as a group:
# - messages.bcc_only: no to/cc recipient, so the message stays private to its sender and its bcc
#   recipients even where the project can read everything else (MESSAGE_VISIBILITY=project);
# - messages.topic: upstream HEAD's topic tag (fetch_topic);
# - message_mentions: `@Name` of a project agent who is not a recipient (fetch_inbox shows them,
#   they are never deliveries: no unread count, no read/ack state);
# - contacts: one row per (from, to) agent pair: pending, approved or blocked, with an expiry.
M005_GROUP_WORK = """
ALTER TABLE messages ADD COLUMN bcc_only INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN topic TEXT;
UPDATE messages SET bcc_only = 1 WHERE NOT EXISTS (
    SELECT 1 FROM message_recipients r WHERE r.message_id = messages.id AND r.kind IN ('to', 'cc'));
CREATE INDEX messages_topic ON messages(project_id, topic, id) WHERE topic IS NOT NULL;

CREATE TABLE message_mentions (
    agent_id    INTEGER NOT NULL REFERENCES agents(id),
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    PRIMARY KEY (agent_id, message_id)
) WITHOUT ROWID;

CREATE TABLE contacts (
    from_agent_id  INTEGER NOT NULL REFERENCES agents(id),
    to_agent_id    INTEGER NOT NULL REFERENCES agents(id),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'blocked')),
    reason         TEXT NOT NULL DEFAULT '',
    created_ts     TEXT NOT NULL,
    updated_ts     TEXT NOT NULL,
    expires_ts     TEXT,
    PRIMARY KEY (from_agent_id, to_agent_id)
) WITHOUT ROWID;
CREATE INDEX contacts_to ON contacts(to_agent_id, from_agent_id);
"""

# Attachments (issue 16): one row per stored blob (content-addressed by the sha256 of its bytes;
# the bytes live in .mcp_mail/blobs and the archive), and links from messages to the blobs they carry
# (a converted image and, with KEEP_ORIGINAL_IMAGES, its original). project_id is copied into the link
# so "is this blob already in that project's archive folder" is one index probe.
M007_ATTACHMENTS = """
CREATE TABLE attachment_blobs (
    sha256      TEXT PRIMARY KEY,
    ext         TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    width       INTEGER,
    height      INTEGER,
    created_ts  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE attachments (
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    sha256      TEXT NOT NULL REFERENCES attachment_blobs(sha256),
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    PRIMARY KEY (message_id, sha256)
) WITHOUT ROWID;
CREATE INDEX attachments_blob ON attachments(sha256, project_id);
"""

# Build slots (issue 17): leases on a named build resource ("frontend-build", "test-db"), exclusive or
# shared. One row per (project, slot, agent, branch), reused by each acquire: the table (and the
# archive, one file per row) stays as small as the set of who-builds-what, however many builds run.
M008_BUILD_SLOTS = """
CREATE TABLE build_slots (
    id           INTEGER PRIMARY KEY,
    project_id   INTEGER NOT NULL REFERENCES projects(id),
    slot         TEXT NOT NULL,
    agent_id     INTEGER NOT NULL REFERENCES agents(id),
    branch       TEXT NOT NULL,
    exclusive    INTEGER NOT NULL,
    acquired_ts  TEXT NOT NULL,
    expires_ts   TEXT NOT NULL,
    released_ts  TEXT,
    UNIQUE (project_id, slot, agent_id, branch)
);
CREATE INDEX build_slots_live ON build_slots(project_id, slot, expires_ts) WHERE released_ts IS NULL;
CREATE INDEX build_slots_agent ON build_slots(agent_id);
"""

# Ack deadlines (issue 17): each overdue (message, recipient) pair is handled once, across restarts:
# `action` says what the scanner did (log, message, file_reservation, or skipped when the escalation
# could not be made, e.g. the recipient blocks all mail). The partial index keeps the scan to
# ack-required mail, which is a small part of a mailbox.
M009_ACK_ESCALATIONS = """
CREATE TABLE ack_escalations (
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    agent_id    INTEGER NOT NULL REFERENCES agents(id),
    action      TEXT NOT NULL CHECK (action IN ('log', 'message', 'file_reservation', 'skipped')),
    detail      TEXT NOT NULL DEFAULT '',
    created_ts  TEXT NOT NULL,
    PRIMARY KEY (message_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX messages_ack_required ON messages(created_ts) WHERE ack_required = 1;
"""

# Tool metrics (issue 17, tooling resources): per tool, calls, errors and a latency histogram
# (`buckets`: JSON {bucket index: count}, log-scaled microseconds; see maild/services/metrics.py).
# Written by a periodic flush and at shutdown, never per call, so a restart keeps the history.
M010_TOOL_METRICS = """
CREATE TABLE tool_metrics (
    tool        TEXT PRIMARY KEY,
    calls       INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    total_us    INTEGER NOT NULL,
    max_us      INTEGER NOT NULL,
    buckets     TEXT NOT NULL,
    first_ts    TEXT NOT NULL,
    last_ts     TEXT NOT NULL
) WITHOUT ROWID;
"""

# Issue 17, project siblings (the fork's project_sibling_suggestions): one row per unordered pair of
# projects (a < b) that the heuristic (or the LLM, `source`) found related, with what a person or an
# agent decided about it. Pairs scoring below the suggestion floor are not stored at all.
M011_PROJECT_SIBLINGS = """
CREATE TABLE project_sibling_suggestions (
    id            INTEGER PRIMARY KEY,
    project_a_id  INTEGER NOT NULL REFERENCES projects(id),
    project_b_id  INTEGER NOT NULL REFERENCES projects(id),
    score         REAL NOT NULL,
    status        TEXT NOT NULL DEFAULT 'suggested' CHECK (status IN ('suggested', 'confirmed', 'dismissed')),
    rationale     TEXT NOT NULL DEFAULT '',
    source        TEXT NOT NULL DEFAULT 'heuristic' CHECK (source IN ('heuristic', 'llm')),
    created_ts    TEXT NOT NULL,
    evaluated_ts  TEXT NOT NULL,
    confirmed_ts  TEXT,
    dismissed_ts  TEXT,
    CHECK (project_a_id < project_b_id),
    UNIQUE (project_a_id, project_b_id)
);
CREATE INDEX project_siblings_b ON project_sibling_suggestions(project_b_id, project_a_id);
"""

# Deferred image conversion (issue 16): a send stores the image as it is and answers; the daemon's
# converter encodes the WebP afterwards and swaps it into every message carrying that original.
# One row per original: its state (pending / done / failed) survives a crash (pending rows are
# finished on restart), and a done row is the lasting cache original -> converted (same settings),
# which also lets resource://attachment/{original} keep working after the original is dropped.
M012_ATTACHMENT_CONVERSIONS = """
CREATE TABLE attachment_conversions (
    original_sha256      TEXT PRIMARY KEY,
    original_ext         TEXT NOT NULL,
    original_media_type  TEXT NOT NULL,
    method               INTEGER NOT NULL,
    quality              INTEGER NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    converted_sha256     TEXT,
    error                TEXT,
    created_ts           TEXT NOT NULL,
    updated_ts           TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX attachment_conversions_pending ON attachment_conversions(created_ts) WHERE status = 'pending';
CREATE INDEX attachment_conversions_converted ON attachment_conversions(converted_sha256)
    WHERE converted_sha256 IS NOT NULL;
"""

# Revoked bridge credentials (issue 21): a deny list the HTTP bridge checks on every request. `kind`
# is 'jti' (one JWT) or 'agent' (every JWT naming that agent, lower-cased as names compare).
M013_REVOKED_TOKENS = """
CREATE TABLE revoked_tokens (
    kind        TEXT NOT NULL CHECK (kind IN ('jti', 'agent')),
    value       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    revoked_ts  TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "initial", M001_INITIAL),
    (2, "unread_counts", M002_UNREAD_COUNTS),
    (3, "agent_origins", M003_AGENT_ORIGINS),
    (4, "send_keys", M004_SEND_KEYS),
    (5, "group_work", M005_GROUP_WORK),
    (7, "attachments", M007_ATTACHMENTS),
    (8, "build_slots", M008_BUILD_SLOTS),
    (9, "ack_escalations", M009_ACK_ESCALATIONS),
    (10, "tool_metrics", M010_TOOL_METRICS),
    (11, "project_siblings", M011_PROJECT_SIBLINGS),
    (12, "attachment_conversions", M012_ATTACHMENT_CONVERSIONS),
    (13, "revoked_tokens", M013_REVOKED_TOKENS),
)
LATEST_VERSION = MIGRATIONS[-1][0]


def apply_migrations(conn: Any, path: str, now: str) -> int:
    """Bring the schema up to date; return the version. Raises StorageError on a foreign/future DB."""
    app_id = conn.execute("PRAGMA application_id").get
    user_tables = conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).get
    if app_id != APPLICATION_ID:
        if user_tables:
            raise StorageError(
                f"{path} is a SQLite database that does not belong to Agent Mail; "
                "move it away or point AGENT_MAIL_ROOT elsewhere"
            )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts TEXT NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    current = max(applied, default=0)
    if current > LATEST_VERSION:
        raise StorageError(
            f"{path} has schema version {current}, newer than this maild understands "
            f"({LATEST_VERSION}); upgrade agent-mail (pip install -U agent-mail)"
        )
    # Numbers were handed out to branches developed side by side, so a database may hold a later
    # one without an earlier one: apply every migration it lacks, in order, not only those past the max.
    for version, name, sql in MIGRATIONS:
        if version in applied:
            continue
        with conn:
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_ts) VALUES (?, ?, ?)",
                (version, name, now),
            )
    return LATEST_VERSION
