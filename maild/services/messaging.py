"""Mail: send, reply, inbox, read/ack, and the read models behind the mail resources.

Every send is one IMMEDIATE transaction: resolve sender and recipients, insert the message and its
recipient rows (FTS and unread counters follow by trigger), record the archive write in the
outbox. Nothing else — in particular no git — sits on the send path. Reading never changes state:
read and ack are explicit calls.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maild.services import agents as ag
from maild.services import contacts, fanout, idempotency, names, visibility
from maild.services.projects import find_in, validate_project_key
from maild.services.sessions import Session
from maild.store import Connection, Store, format_ts, utcnow
from maild.store.outbox import enqueue
from shared.config import Settings
from shared.errors import ContactRequired, InvalidArgument, NotFound, RecipientNotFound

if TYPE_CHECKING:
    from maild.services.attachments import Attachments, Prepared

IMPORTANCE = ("low", "normal", "high", "urgent")
URGENT = ("high", "urgent")
MAX_SUBJECT_CHARS = 512
MAX_RECIPIENTS = 256
THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUALIFIED = re.compile(r"^project:(?P<project>[^#]+)#(?P<name>.+)$")

MESSAGE_COLUMNS = (
    "m.id, m.project_id, m.sender_id, m.thread_id, m.subject, m.importance, m.ack_required, m.created_ts,"
    " m.attachments, m.body_md, s.name"
)


def parse_ts(value: str | None, what: str = "since_ts") -> str | None:
    """ISO-8601 in (with Z, an offset, or naive meaning UTC); our canonical form out."""
    if value is None or value == "":
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{what} {value!r} is not an ISO-8601 timestamp; use e.g. 2026-11-25T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return format_ts(moment)


def as_name_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise InvalidArgument(f"{what} must be an agent name or a list of agent names")
    cleaned = [item.strip() for item in items if item.strip()]
    if len(cleaned) > MAX_RECIPIENTS:
        raise InvalidArgument(f"{what} has {len(cleaned)} names; at most {MAX_RECIPIENTS}")
    return cleaned


def message_row_dict(row: Any, *, include_body: bool) -> dict[str, Any]:
    out = {
        "id": row[0],
        "project_id": row[1],
        "sender_id": row[2],
        "thread_id": row[3],
        "subject": row[4],
        "importance": row[5],
        "ack_required": bool(row[6]),
        "created_ts": row[7],
        "attachments": json.loads(row[8]),
        "from": row[10],
    }
    if include_body:
        out["body_md"] = row[9]
    return out


def recipients_of(conn: Connection, message_id: int) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
    for kind, name in conn.execute(
        "SELECT r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
        " WHERE r.message_id = ? ORDER BY a.name",
        (message_id,),
    ):
        lists[kind].append(name)
    return lists


@dataclass
class Outgoing:
    """A validated message about to be sent (send_message and reply_message both build one)."""

    project_key: str
    subject: str
    body_md: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    importance: str = "normal"
    ack_required: bool = False
    thread_id: str | None = None
    attachment_paths: list[str] = field(default_factory=list)
    convert_images: bool | None = None
    prepared: Prepared | None = None  # set by Messaging (attachments.py) once the files are stored
    broadcast: bool = False
    topic: str | None = None
    # A contact request or handshake welcome: contacts_only recipients accept it (block_all does not).
    contact_intro: bool = False


def validate_outgoing(out: Outgoing, max_body_bytes: int) -> None:
    if not out.subject.strip():
        raise InvalidArgument("subject must not be empty; say in a few words what the message is about")
    if len(out.subject) > MAX_SUBJECT_CHARS:
        raise InvalidArgument(f"subject is {len(out.subject)} characters; at most {MAX_SUBJECT_CHARS}")
    size = len(out.body_md.encode("utf-8", "surrogatepass"))
    if size > max_body_bytes:
        raise InvalidArgument(
            f"body_md is {size} bytes; the limit is {max_body_bytes} (AGENT_MAIL_MAX_BODY_BYTES). "
            "Put large content in a file and reference its path"
        )
    if "\x00" in out.body_md or "\x00" in out.subject:
        raise InvalidArgument("subject and body_md must not contain NUL characters")
    if out.importance not in IMPORTANCE:
        raise InvalidArgument(f"importance must be one of {', '.join(IMPORTANCE)}, got {out.importance!r}")
    if out.thread_id is not None and not THREAD_ID.fullmatch(out.thread_id):
        raise InvalidArgument(
            f"thread_id {out.thread_id!r} is not valid: 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if out.topic is not None and not TOPIC.fullmatch(out.topic):
        raise InvalidArgument(f"topic {out.topic!r} is not valid: 1-64 letters, digits, '_' or '-'",
                              data={"parameter": "topic"})
    fanout.check_broadcast(out.broadcast, out.to)


def _resolve(
    conn: Connection,
    address: str,
    sender: Any,
    auto_register: bool,
    unknown: list[str],
) -> Any:
    """One recipient address -> agent row; unknown names are collected (or auto-registered)."""
    project_key: str | None = None
    name = address
    qualified = _QUALIFIED.match(address)
    if qualified:
        project_key, name = qualified["project"], qualified["name"]
    elif "@" in address:
        name, _, project_key = address.partition("@")
    if len(name) > names.MAX_NAME_CHARS:
        raise InvalidArgument(f"recipient {address[:40]!r}… is longer than {names.MAX_NAME_CHARS} characters")
    if names.is_reserved(name):
        raise InvalidArgument("`all` (everyone in the project) is only valid in `to`, or use broadcast=true")
    row = ag.find_active(conn, name)
    if row is not None and project_key is not None:
        try:
            project = find_in(conn, project_key)
        except NotFound:
            row = None
        else:
            row = row if row[7] == project["id"] else None
    if row is not None:
        return row
    clean = names.sanitize(name)
    if clean and project_key is None and _retired_in(conn, clean, sender[7]):
        raise RecipientNotFound(
            f"{clean} is retired and receives no new mail; unretire_agent brings it back",
            data={"unknown_recipients": [address], "retired": [clean]},
        )
    if auto_register and clean and project_key is None:
        # A placeholder: nobody holds its token (it is discarded); the first register_agent of this
        # name claims the row, and with it the mail sent here before it registered.
        project = {"id": sender[7], "slug": sender[13]}
        created, _token = ag._create(
            conn, project, clean,
            {"program": sender[2], "model": sender[3], "task_description": "", "attachments_policy": "auto"},
            placeholder=True,
        )
        return created
    unknown.append(address)
    return None


def _retired_in(conn: Connection, name: str, project_id: int) -> bool:
    """A retired agent of that name in the project, and no active one anywhere."""
    return conn.execute(
        "SELECT 1 FROM agents WHERE lower(name) = ? AND project_id = ? AND is_active = 0 AND placeholder = 0",
        (names.lookup_key(name), project_id),
    ).fetchone() is not None


def send_in(
    conn: Connection,
    session: Session | None,
    out: Outgoing,
    sender_name: str | None,
    sender_token: str | None,
    auto_register: bool,
    *,
    broadcast_cap: int = 100,
    mentions: bool = True,
) -> dict[str, Any]:
    project = find_in(conn, out.project_key)
    sender = ag.acting_agent(conn, session, sender_name, sender_token, param="sender_name")
    resolved: dict[int, tuple[str, Any]] = {}
    unknown: list[str] = []
    to, everyone = fanout.split_broadcast(out.to)
    truncated = False
    if out.broadcast or everyone:
        targets, truncated = fanout.broadcast_targets(conn, project["id"], sender[0], broadcast_cap)
        for row in targets:
            resolved[row[0]] = ("to", row)
    for kind, addresses in (("to", to), ("cc", out.cc), ("bcc", out.bcc)):
        for address in addresses:
            row = _resolve(conn, address, sender, auto_register, unknown)
            if row is not None and row[0] not in resolved:
                resolved[row[0]] = (kind, row)
    if unknown:
        raise RecipientNotFound(
            f"unknown recipient(s): {', '.join(unknown)}. Check the names (resource://agents/{project['slug']}) "
            "or register them first",
            data={
                "unknown_recipients": unknown,
                "suggested_tool_calls": [
                    {"tool": "register_agent",
                     "arguments": {"project_key": project["human_key"], "name": names.sanitize(u.split("@")[0]),
                                   "program": sender[2], "model": sender[3]}}
                    for u in unknown
                ],
            },
        )
    if not resolved:
        if out.broadcast or everyone:
            raise InvalidArgument("nobody to broadcast to: the project has no other active agent")
        raise InvalidArgument("at least one recipient is required in to, cc or bcc")
    contacts.enforce(conn, sender, [row for _kind, row in resolved.values()], intro=out.contact_intro)
    now = utcnow()
    attachments = out.prepared.metas if out.prepared is not None else []
    bcc_only = all(kind == "bcc" for kind, _row in resolved.values())
    message_id = conn.execute(
        "INSERT INTO messages(project_id, sender_id, thread_id, subject, body_md, importance, ack_required,"
        " created_ts, attachments, bcc_only, topic) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (project["id"], sender[0], out.thread_id, out.subject, out.body_md, out.importance,
         int(out.ack_required), now, json.dumps(attachments), int(bcc_only), out.topic),
    ).get
    if out.prepared is not None:
        out.prepared.link_in(conn, message_id, project["id"])
    conn.executemany(
        "INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, ?)",
        [(message_id, agent_id, kind) for agent_id, (kind, _row) in resolved.items()],
    )
    conn.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, sender[0]))
    lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
    for kind, row in resolved.values():
        lists[kind].append(row[1])
    mentioned = [] if bcc_only or not mentions else fanout.record_mentions(
        conn, message_id, project["id"], out.body_md, {sender[0], *resolved})
    payload = {
        "id": message_id,
        "project_id": project["id"],
        "sender_id": sender[0],
        "thread_id": out.thread_id,
        "subject": out.subject,
        "body_md": out.body_md,
        "importance": out.importance,
        "ack_required": out.ack_required,
        "created_ts": now,
        "attachments": attachments,
        "from": sender[1],
        **lists,
        **({"topic": out.topic} if out.topic else {}),
        **({"mentions": mentioned} if mentioned else {}),
    }
    enqueue(conn, "message", project["slug"], {"message": {**payload, "project_slug": project["slug"]}})
    result: dict[str, Any] = {"deliveries": [{"project": project["human_key"], "payload": payload}], "count": 1}
    if out.prepared is not None and out.prepared.warnings:
        result["warnings"] = out.prepared.warnings
    if out.broadcast or everyone:
        result.update(broadcast=True, recipient_count=len(resolved), truncated=truncated)
    return result


def _visible_message(conn: Connection, session: Session | None, message_id: int, agent: Any | None,
                     mode: str = "project") -> Any:
    """The message row if the caller may read it (visibility.py); NOT_FOUND otherwise, as for a
    missing message, so its existence is not revealed."""
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.id = ?",
        (message_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"message {message_id} does not exist", data={"message_id": message_id})
    if ag.is_operator(session) and agent is None:
        return row
    viewer_id = agent[0] if agent is not None else (session.agent_id if session is not None else None)
    if viewer_id is None or not visibility.can_read(conn, visibility.viewer_of(conn, viewer_id, mode), message_id):
        raise NotFound(f"message {message_id} does not exist", data={"message_id": message_id})
    return row


def _request_contacts(
    conn: Connection, session: Session | None, sender_name: str | None, token: str | None, targets: list[str]
) -> list[str]:
    """auto_contact_if_blocked: a pending contact request and an intro message to each target."""
    sender = ag.acting_agent(conn, session, sender_name, token, param="sender_name")
    requested = []
    for name in targets:
        target = contacts.target_agent(conn, name, "to")
        link = contacts.request_in(conn, sender, target, "auto_contact_if_blocked", contacts.REQUEST_TTL_SECONDS)
        if link["status"] == "pending":
            out = Outgoing(project_key=target[13], subject=f"Contact request from {sender[1]}", to=[target[1]],
                           body_md=contacts.intro_body(sender[1], target[1], ""), ack_required=True,
                           contact_intro=True)
            send_in(conn, session, out, sender[1], token, False)
        requested.append(target[1])
    return requested


def reply_subject(subject: str, prefix: str) -> str:
    return subject if subject.lower().startswith(prefix.lower()) else f"{prefix} {subject}"


class Messaging:
    def __init__(self, store: Store, settings: Settings, attachments: Attachments | None = None) -> None:
        self._store = store
        self._settings = settings
        self.attachments = attachments

    async def _prepare(
        self, session: Session | None, out: Outgoing, sender_name: str | None, sender_token: str | None
    ) -> None:
        """Store the message's files (off the loop and the writer) before its transaction links them."""
        if self.attachments is None:
            if out.attachment_paths:
                raise InvalidArgument("attachments are disabled in this daemon; reference file paths in body_md")
            return
        out.prepared = await self.attachments.prepare(
            session, out.project_key, sender_name, sender_token, out.body_md, out.attachment_paths,
            out.convert_images)
        if out.prepared is not None:
            out.body_md = out.prepared.body_md

    async def send(
        self, session: Session | None, out: Outgoing, sender_name: str | None, sender_token: str | None,
        idempotency_key: str | None = None,
        *, auto_contact_if_blocked: bool = False,
    ) -> dict[str, Any]:
        out.project_key = validate_project_key(out.project_key)
        validate_outgoing(out, self._settings.max_body_bytes)
        key = idempotency.validate_key(idempotency_key)
        await self._prepare(session, out, sender_name, sender_token)
        auto = self._settings.auto_register_recipients
        send = functools.partial(send_in, broadcast_cap=self._settings.broadcast_max_recipients,
                                 mentions=self._settings.mentions_enabled)

        def unit(conn: Connection) -> dict[str, Any]:
            if key is None:
                return send(conn, session, out, sender_name, sender_token, auto)
            project = find_in(conn, out.project_key)
            sender = ag.acting_agent(conn, session, sender_name, sender_token, param="sender_name")
            # The stored files are not part of the request (a retry stores them again, content-addressed).
            fields = {name: value for name, value in vars(out).items() if name != "prepared"}
            return idempotency.once(conn, project["id"], sender[0], key, {"send": fields},
                                    lambda: send(conn, session, out, sender_name, sender_token, auto))

        try:
            result: dict[str, Any] = await self._store.write(unit)
        except ContactRequired as exc:
            if not auto_contact_if_blocked:
                raise
            # The send failed as a whole (its transaction rolled back); the requests are a unit of their own.
            names_blocked = list(exc.data.get("recipients_blocked", []))
            exc.data["contact_requested"] = await self._store.write(
                _request_contacts, session, sender_name, sender_token, names_blocked
            )
            exc.message += f". Contact requested from {', '.join(names_blocked)}: send again once they accept"
            raise ContactRequired(exc.message, data=exc.data) from None
        if self.attachments is not None:
            self.attachments.committed(out.prepared)
        return result

    async def reply(
        self,
        session: Session | None,
        project_key: str,
        message_id: int,
        sender_name: str | None,
        sender_token: str | None,
        body_md: str,
        to: list[str] | None,
        cc: list[str],
        bcc: list[str],
        subject_prefix: str,
        attachment_paths: list[str] | None = None,
        convert_images: bool | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        key = validate_project_key(project_key)
        send_key = idempotency.validate_key(idempotency_key)
        files = Outgoing(project_key=key, subject="-", body_md=body_md, to=[], attachment_paths=attachment_paths or [],
                         convert_images=convert_images)
        await self._prepare(session, files, sender_name, sender_token)

        def unit(conn: Connection) -> dict[str, Any]:
            sender = ag.acting_agent(conn, session, sender_name, sender_token, param="sender_name")
            if send_key is None:
                return reply_in(conn, sender)
            fields = {"reply": [message_id, body_md, to, cc, bcc, subject_prefix, attachment_paths or []]}
            project = find_in(conn, key)
            return idempotency.once(conn, project["id"], sender[0], send_key, fields, lambda: reply_in(conn, sender))

        def reply_in(conn: Connection, sender: Any) -> dict[str, Any]:
            original = _visible_message(conn, session, message_id, sender, self._settings.message_visibility)
            out = Outgoing(
                project_key=key,
                subject=reply_subject(original[4], subject_prefix)[:MAX_SUBJECT_CHARS],
                body_md=body_md,
                to=to or [original[10]],
                cc=cc,
                bcc=bcc,
                importance=original[5],
                ack_required=bool(original[6]),
                thread_id=original[3] or str(original[0]),
            )
            validate_outgoing(out, self._settings.max_body_bytes)
            out.body_md, out.prepared = files.body_md, files.prepared
            result = send_in(conn, session, out, sender[1], sender_token, False,
                             mentions=self._settings.mentions_enabled)
            payload = result["deliveries"][0]["payload"]
            return {**payload, "thread_id": out.thread_id, "reply_to": message_id, **result}

        replied: dict[str, Any] = await self._store.write(unit)
        if self.attachments is not None:
            self.attachments.committed(files.prepared)
        return replied

    async def fetch_inbox(
        self,
        session: Session | None,
        project_key: str,
        agent_name: str | None,
        token: str | None,
        *,
        limit: int,
        urgent_only: bool,
        include_bodies: bool,
        since_ts: str | None,
        unread_only: bool = False,
        topic: str | None = None,
    ) -> dict[str, Any]:
        key = validate_project_key(project_key)
        since = parse_ts(since_ts)
        mentions = self._settings.mentions_enabled

        def unit(conn: Connection) -> dict[str, Any]:
            find_in(conn, key)
            agent = ag.acting_agent(conn, session, agent_name, token)
            # An agent's inbox is all mail addressed to it: names are unique across the mailbox root,
            # so mail sent from another project (Name@project) arrives here too.
            extra = []
            params: list[Any] = []
            if unread_only:
                extra.append("r.read_ts IS NULL")
            if topic:
                extra.append("m.topic = ?")
                params.append(topic)
            items = inbox_rows(conn, agent[0], None, limit, urgent_only, include_bodies, since,
                               extra_where=" AND ".join(extra), extra_params=params)
            if mentions and not unread_only:  # a mention has no read state: unread_only lists deliveries
                items = _with_mentions(conn, agent[0], items, limit, urgent_only, include_bodies, since, topic)
            return {"result": items, "agent": agent[1], "unread_count": unread_count(conn, agent[0])}

        return await self._store.read(unit)

    async def mark(
        self, session: Session | None, project_key: str, agent_name: str | None, token: str | None,
        message_id: int, *, ack: bool,
    ) -> dict[str, Any]:
        key = validate_project_key(project_key)

        def unit(conn: Connection) -> dict[str, Any]:
            find_in(conn, key)
            agent = ag.acting_agent(conn, session, agent_name, token)
            now = utcnow()
            sql = (
                "UPDATE message_recipients SET read_ts = coalesce(read_ts, ?), ack_ts = coalesce(ack_ts, ?)"
                if ack
                else "UPDATE message_recipients SET read_ts = coalesce(read_ts, ?)"
            )
            params: tuple[Any, ...] = (now, now) if ack else (now,)
            row = conn.execute(
                f"{sql} WHERE message_id = ? AND agent_id = ? RETURNING read_ts, ack_ts",
                (*params, message_id, agent[0]),
            ).fetchone()
            if row is None:
                raise NotFound(
                    f"{agent[1]} is not a recipient of message {message_id}; check the id in fetch_inbox",
                    data={"message_id": message_id, "agent_name": agent[1]},
                )
            conn.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, agent[0]))
            # Mirrored to the archive (agents/<Name>/receipts/), so a rebuild restores read and ack state.
            enqueue(conn, "receipt", agent[13], {"receipt": {
                "message_id": message_id, "agent_id": agent[0], "agent": agent[1], "read_ts": row[0],
                "ack_ts": row[1]}})
            if ack:
                return {"message_id": message_id, "acknowledged": True, "acknowledged_at": row[1],
                        "read_at": row[0]}
            return {"message_id": message_id, "read": True, "read_at": row[0]}

        return await self._store.write(unit)

    async def read(self, fn: Any, *args: Any) -> Any:
        """Run a read model (resources) on the reader connection."""
        return await self._store.read(fn, *args)


def unread_count(conn: Connection, agent_id: int) -> int:
    count: int = conn.execute("SELECT unread_count FROM agents WHERE id = ?", (agent_id,)).get
    return count


def inbox_rows(
    conn: Connection,
    agent_id: int,
    project_id: int | None,
    limit: int,
    urgent_only: bool,
    include_bodies: bool,
    since: str | None,
    *,
    extra_where: str = "",
    extra_params: list[Any] | None = None,
) -> list[dict[str, Any]]:
    where = ["r.agent_id = ?"]
    params: list[Any] = [agent_id]
    if project_id is not None:
        where.append("m.project_id = ?")
        params.append(project_id)
    if urgent_only:
        where.append("m.importance IN ('high', 'urgent')")
    if since is not None:
        where.append("m.created_ts > ?")
        params.append(since)
    if extra_where:
        where.append(extra_where)
        params.extend(extra_params or [])
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS}, r.kind, r.read_ts, r.ack_ts FROM message_recipients r"
        " JOIN messages m ON m.id = r.message_id JOIN agents s ON s.id = m.sender_id"
        f" WHERE {' AND '.join(where)} ORDER BY r.message_id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [
        {**message_row_dict(row, include_body=include_bodies), "kind": row[11], "read_ts": row[12], "ack_ts": row[13]}
        for row in rows
    ]


def _with_mentions(
    conn: Connection, agent_id: int, items: list[dict[str, Any]], limit: int, urgent_only: bool,
    include_bodies: bool, since: str | None, topic: str | None,
) -> list[dict[str, Any]]:
    """The inbox items merged with mail that mentions the agent (`source: "mention"`), newest first."""
    where: list[str] = ["mm.agent_id = ?"]
    params: list[Any] = [agent_id]
    if urgent_only:
        where.append("m.importance IN ('high', 'urgent')")
    if since is not None:
        where.append("m.created_ts > ?")
        params.append(since)
    if topic:
        where.append("m.topic = ?")
        params.append(topic)
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM message_mentions mm JOIN messages m ON m.id = mm.message_id"
        f" JOIN agents s ON s.id = m.sender_id WHERE {' AND '.join(where)} ORDER BY mm.message_id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    if not rows:
        return items
    seen = {item["id"] for item in items}
    mentioned = [{**message_row_dict(r, include_body=include_bodies), "kind": "mention", "source": "mention",
                  "read_ts": None, "ack_ts": None} for r in rows if r[0] not in seen]
    return sorted([*items, *mentioned], key=lambda item: -item["id"])[:limit]
