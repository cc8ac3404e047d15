"""Contact policy (upstream HEAD's contact tools): who may write to whom, and contact links.

Each agent has a `contact_policy`: `open` and `auto` (the default: everyone can write, as before)
accept all mail; `contacts_only` accepts mail from approved contacts, from agents it has itself
written to, and contact requests; `block_all` accepts nothing. A link is one `contacts` row per
(requester, target): `pending` after request_contact, `approved` or `blocked` after
respond_contact, each with an expiry; an approved link lets both sides write. `enforce` runs in
the send's own IMMEDIATE transaction, so once a block commits no later send gets through.
Links and policies are mirrored to the archive (agents/<Name>/contacts/, profile.json).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from maild.services import agents as ag
from maild.store import Connection, format_ts, utcnow
from maild.store.outbox import enqueue
from shared.errors import ContactBlocked, ContactRequired, InvalidArgument, NotFound

POLICIES = ("open", "auto", "contacts_only", "block_all")
REQUEST_TTL_SECONDS = 7 * 86400
APPROVAL_TTL_SECONDS = 30 * 86400


def _expiry(seconds: int) -> str:
    if seconds < 60:
        raise InvalidArgument(f"ttl_seconds must be at least 60, got {seconds}")
    return format_ts(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=min(seconds, 10 * 365 * 86400)))


def intro_body(sender: str, target: str, reason: str) -> str:
    return (f"{sender} asks to be able to write to you.\n\n" + (f"Reason: {reason}\n\n" if reason else "")
            + f"Accept with respond_contact(to_agent='{target}', from_agent='{sender}', accept=true), "
              "or decline with accept=false.")


def link_status(conn: Connection, a: int, b: int, now: str) -> tuple[str | None, str | None]:
    """(status of a→b, status of b→a) among unexpired links."""
    found: dict[tuple[int, int], str] = {}
    for src, dst, status in conn.execute(
        "SELECT from_agent_id, to_agent_id, status FROM contacts WHERE ((from_agent_id = ? AND to_agent_id = ?)"
        " OR (from_agent_id = ? AND to_agent_id = ?)) AND (expires_ts IS NULL OR expires_ts > ?)",
        (a, b, b, a, now),
    ):
        found[(src, dst)] = status
    return found.get((a, b)), found.get((b, a))


def _wrote_to(conn: Connection, author: int, reader: int) -> bool:
    return conn.execute(
        "SELECT 1 FROM messages m JOIN message_recipients r ON r.message_id = m.id"
        " WHERE m.sender_id = ? AND r.agent_id = ? LIMIT 1", (author, reader),
    ).fetchone() is not None


def refusal(conn: Connection, sender: Any, recipient: Any, now: str, *, intro: bool = False) -> str | None:
    """None when `recipient` accepts mail from `sender`; else "blocked" or "required"."""
    if sender[0] == recipient[0]:
        return None
    outgoing, incoming = link_status(conn, sender[0], recipient[0], now)
    policy = recipient[9]
    if policy == "block_all" or outgoing == "blocked":
        return "blocked"
    if policy != "contacts_only" or intro:
        return None
    if "approved" in (outgoing, incoming) or _wrote_to(conn, recipient[0], sender[0]):
        return None
    return "required"


def enforce(conn: Connection, sender: Any, recipients: list[Any], *, intro: bool = False) -> None:
    """Raise CONTACT_BLOCKED / CONTACT_REQUIRED if any recipient refuses `sender`'s mail."""
    now = utcnow()
    blocked, required = [], []
    for row in recipients:
        verdict = refusal(conn, sender, row, now, intro=intro)
        if verdict == "blocked":
            blocked.append(row[1])
        elif verdict == "required":
            required.append(row[1])
    if blocked:
        raise ContactBlocked(
            f"{', '.join(blocked)} do(es) not accept mail from {sender[1]} (contact policy block_all, or the "
            "contact was declined); remove them from the recipients. list_contacts shows your links",
            data={"recipients_blocked": blocked, "suggested_tool_calls": [{"tool": "list_contacts"}]},
        )
    if required:
        raise ContactRequired(
            f"{', '.join(required)} accept(s) mail only from approved contacts; call request_contact (or "
            "macro_contact_handshake) and wait for respond_contact, or send with auto_contact_if_blocked=true",
            data={
                "recipients_blocked": required,
                "suggested_tool_calls": [
                    {"tool": "request_contact", "arguments": {"from_agent": sender[1], "to_agent": name}}
                    for name in required
                ],
            },
        )


def contact_dict(conn: Connection, src: int, dst: int) -> dict[str, Any]:
    row: Any = conn.execute(
        "SELECT c.status, c.reason, c.created_ts, c.updated_ts, c.expires_ts, f.name, t.name FROM contacts c"
        " JOIN agents f ON f.id = c.from_agent_id JOIN agents t ON t.id = c.to_agent_id"
        " WHERE c.from_agent_id = ? AND c.to_agent_id = ?", (src, dst),
    ).fetchone()
    return {"from": row[5], "from_agent_id": src, "to": row[6], "to_agent_id": dst, "status": row[0],
            "reason": row[1], "created_ts": row[2], "updated_ts": row[3], "expires_ts": row[4]}


def _store_link(conn: Connection, src: Any, dst: Any, status: str, reason: str | None, expires: str) -> dict[str, Any]:
    now = utcnow()
    conn.execute(
        "INSERT INTO contacts(from_agent_id, to_agent_id, status, reason, created_ts, updated_ts, expires_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(from_agent_id, to_agent_id) DO UPDATE SET"
        " status = excluded.status, reason = coalesce(?, reason), updated_ts = excluded.updated_ts,"
        " expires_ts = excluded.expires_ts",
        (src[0], dst[0], status, reason or "", now, now, expires, reason),
    )
    link = contact_dict(conn, src[0], dst[0])
    enqueue(conn, "contact", src[13], {"contact": link})
    return link


def request_in(conn: Connection, sender: Any, target: Any, reason: str, ttl_seconds: int) -> dict[str, Any]:
    """Create or refresh a pending link sender→target (an approved or blocked one keeps its status)."""
    if sender[0] == target[0]:
        raise InvalidArgument("an agent cannot request contact with itself")
    current = conn.execute(
        "SELECT status FROM contacts WHERE from_agent_id = ? AND to_agent_id = ? AND (expires_ts IS NULL"
        " OR expires_ts > ?)", (sender[0], target[0], utcnow()),
    ).get
    if current in ("approved", "blocked"):
        return contact_dict(conn, sender[0], target[0])
    return _store_link(conn, sender, target, "pending", reason, _expiry(ttl_seconds))


def respond_in(conn: Connection, me: Any, requester: Any, accept: bool, ttl_seconds: int) -> dict[str, Any]:
    return _store_link(conn, requester, me, "approved" if accept else "blocked", None, _expiry(ttl_seconds))


def target_agent(conn: Connection, name: str, what: str) -> Any:
    ag.validate_name(name, what)
    row = ag.find_active(conn, name)
    if row is None:
        raise NotFound(f"no active agent named {name!r}; check the name with resource://agents/<project>",
                       data={what: name})
    return row
