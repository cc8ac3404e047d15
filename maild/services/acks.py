"""Ack deadlines: the scanner that finds acknowledgements overdue past ACK_TTL_SECONDS, logs each
`ack_overdue` once and escalates it once (ACK_ESCALATION_MODE: message, file_reservation or log).

It owns the `ack_escalations` record: one row per overdue (message, recipient), written in the same
transaction as the escalation, so a daemon restart never repeats one and two scans never race.
Escalations are ordinary mail (send_in) and leases (reservations.grant_in), so they archive and
wake waiters like any other. It also holds the queries behind the ack views (who owes what); the
resources that show them are mail_views.py's.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio

from maild.services import agents as ag
from maild.services import contacts, names, visibility
from maild.services.messaging import MAX_SUBJECT_CHARS, Outgoing, send_in
from maild.services.reservations import grant_in
from maild.services.sessions import Session
from maild.store import Connection, Store, format_ts, utcnow
from shared.config import Settings
from shared.errors import MailError

log = logging.getLogger(__name__)

SCAN_BATCH = 200  # overdue messages escalated per scan; the next scan takes the rest
# A message committed late (a slow write) still has its send time: look back this far past the last
# full scan's cutoff, so it cannot fall behind the mark.
RESCAN_MARGIN_SECONDS = 300
MIN_SCAN_INTERVAL_SECONDS = 0.05  # an interval of 0 must not turn the scanner into a busy loop
_PAIR_COLUMNS = (
    "m.id, r.agent_id, r.kind, a.name, m.project_id, p.slug, p.human_key, m.created_ts, m.subject,"
    " m.sender_id, s.name, s.is_active, m.thread_id"
)
_OVERDUE = (
    "FROM messages m JOIN message_recipients r ON r.message_id = m.id JOIN agents a ON a.id = r.agent_id"
    " JOIN agents s ON s.id = m.sender_id JOIN projects p ON p.id = m.project_id"
    " WHERE m.ack_required = 1 AND m.created_ts < :cutoff AND r.ack_ts IS NULL AND a.is_active = 1"
    " AND NOT EXISTS (SELECT 1 FROM ack_escalations e WHERE e.message_id = m.id AND e.agent_id = r.agent_id)"
)


@dataclass(frozen=True)
class Overdue:
    """One recipient who owes an acknowledgement past the deadline."""

    message_id: int
    agent_id: int
    kind: str
    recipient: str
    project_id: int
    slug: str
    human_key: str
    created_ts: str
    subject: str
    sender_id: int
    sender: str
    sender_active: bool
    thread_id: str | None

    @classmethod
    def of(cls, row: Any) -> Overdue:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
                   bool(row[11]), row[12])


def overdue_messages(conn: Connection, cutoff: str, limit: int, since: str = "") -> list[int]:
    """Ids of messages sent in [since, cutoff) with at least one overdue, not yet handled recipient,
    oldest first."""
    return [r[0] for r in conn.execute(
        f"SELECT DISTINCT m.id {_OVERDUE} AND m.created_ts >= :since ORDER BY m.id LIMIT :limit",
        {"cutoff": cutoff, "limit": limit, "since": since})]


def _pairs(conn: Connection, message_id: int, cutoff: str) -> list[Overdue]:
    rows = conn.execute(f"SELECT {_PAIR_COLUMNS} {_OVERDUE} AND m.id = :id ORDER BY a.name",
                        {"cutoff": cutoff, "id": message_id}).fetchall()
    return [Overdue.of(r) for r in rows]


def _record(conn: Connection, pairs: list[Overdue], action: str, detail: str) -> None:
    now = utcnow()
    conn.executemany(
        "INSERT INTO ack_escalations(message_id, agent_id, action, detail, created_ts) VALUES (?, ?, ?, ?, ?)",
        [(p.message_id, p.agent_id, action, detail, now) for p in pairs],
    )


def _ops_agent(conn: Connection, name: str, project: dict[str, Any], purpose: str) -> Any:
    """The named ops agent, created (program `ops`, as upstream) in this project if it does not exist."""
    row = ag.find_active(conn, name)
    if row is None:
        row, _token = ag._create(conn, project, name, {"program": "ops", "model": "maild",
                                                       "task_description": purpose, "attachments_policy": "auto"})
    return row


def _age(created_ts: str) -> str:
    seconds = int((dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(created_ts.replace("Z", "+00:00")))
                  .total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _accepts(conn: Connection, ops: Any, agent_id: int) -> bool:
    """Whether the agent takes AckWatch's mail (a `block_all` policy or a blocked link refuses it)."""
    row = ag.get_by_id(conn, agent_id)
    return row is not None and contacts.refusal(conn, ops, row, utcnow(), intro=True) is None


REFUSED = "CONTACT_BLOCKED: the recipient's contact policy refuses AckWatch's mail; not reminded"


def _system_mail(conn: Connection, pairs: list[Overdue]) -> tuple[str, set[int]]:
    """`message` mode: a reminder to each overdue recipient and one notice to the sender, from AckWatch.
    Returns the detail to record and the recipients who refuse its mail (recorded as skipped).

    A bcc recipient's reminder goes as bcc (private to it), and a notice naming a bcc recipient goes to
    the sender as bcc, so no reminder shows who was bcc'd to anyone the original did not show it to."""
    first = pairs[0]
    project = {"id": first.project_id, "slug": first.slug}
    ops = _ops_agent(conn, ag.SYSTEM_NAME, project, "Reminds agents of overdue acknowledgements")
    session = Session(id="system:ack-watch", client="system", agent_id=ops[0])
    thread = first.thread_id or str(first.message_id)
    age = _age(first.created_ts)
    refused = {p.agent_id for p in pairs if p.agent_id != ops[0] and not _accepts(conn, ops, p.agent_id)}
    sent = 0
    for pair in pairs:
        if pair.agent_id == ops[0] or pair.agent_id in refused:
            continue
        where = "bcc" if pair.kind == "bcc" else "to"
        out = Outgoing(
            project_key=pair.human_key, subject=f"Reminder: please acknowledge: {pair.subject}"[:MAX_SUBJECT_CHARS],
            body_md=(f"{pair.sender} asked you to acknowledge message {pair.message_id} (\"{pair.subject}\", sent "
                     f"{pair.created_ts}); it is still unacknowledged after {age}.\n\nRead it "
                     f"(resource://message/{pair.message_id}), act on it, then call `acknowledge_message` with "
                     f"message_id={pair.message_id}. This is the only reminder."),
            to=[pair.recipient] if where == "to" else [], bcc=[pair.recipient] if where == "bcc" else [],
            importance="high", thread_id=thread, contact_intro=True)
        send_in(conn, session, out, None, None, False, mentions=False)
        sent += 1
    owing = [p for p in pairs if p.agent_id != first.sender_id]
    if first.sender_active and first.sender_id != ops[0] and owing and _accepts(conn, ops, first.sender_id):
        reminded = [p.recipient for p in owing if p.agent_id not in refused]
        not_reminded = [p.recipient for p in owing if p.agent_id in refused]
        private = any(p.kind == "bcc" for p in owing)
        out = Outgoing(
            project_key=first.human_key, subject=f"Not yet acknowledged: {first.subject}"[:MAX_SUBJECT_CHARS],
            body_md=(f"Your message {first.message_id} (\"{first.subject}\", sent {first.created_ts}) asked for an "
                     f"acknowledgement. After {age}, it is still pending from: "
                     f"{', '.join(p.recipient for p in owing)}.\n\n"
                     + (f"{ag.SYSTEM_NAME} reminded {', '.join(reminded)} once. " if reminded else "")
                     + (f"Not reminded (they refuse {ag.SYSTEM_NAME}'s mail): {', '.join(not_reminded)}. "
                        if not_reminded else "")
                     + "resource://views/acks/<project> lists who still owes what."),
            to=[] if private else [first.sender], bcc=[first.sender] if private else [],
            thread_id=thread, contact_intro=True)
        send_in(conn, session, out, None, None, False, mentions=False)
        sent += 1
    return f"{sent} mail(s) from {ag.SYSTEM_NAME}", refused


def _claim(conn: Connection, pairs: list[Overdue], settings: Settings) -> str:
    """`file_reservation` mode (upstream): a lease on each recipient's archive inbox folder of that month,
    held by ACK_ESCALATION_CLAIM_HOLDER_NAME (an ops agent, created if needed) or by the recipient."""
    leases = []
    holder_name = names.sanitize(settings.ack_escalation_claim_holder_name)
    for pair in pairs:
        project = {"id": pair.project_id, "slug": pair.slug}
        holder_id = pair.agent_id
        if holder_name:
            holder_id = _ops_agent(conn, holder_name, project, "Holds leases on overdue acknowledgements")[0]
        pattern = f"agents/{pair.recipient}/inbox/{pair.created_ts[:4]}/{pair.created_ts[5:7]}/*.md"
        lease = grant_in(conn, project, holder_id, pattern, exclusive=settings.ack_escalation_claim_exclusive,
                         reason=f"ack overdue: message {pair.message_id}",
                         ttl_seconds=settings.ack_escalation_claim_ttl_seconds)
        leases.append(f"#{lease['id']} {pattern}")
    return "lease " + ", ".join(leases)


@dataclass
class AckDeadlines:
    """The scanner over one store; `statistics()` feeds health_check."""

    store: Store
    settings: Settings
    scans: int = 0
    handled: dict[str, int] = field(default_factory=dict)
    last_scan_ts: str | None = None
    last_error: str | None = None
    _checked_until: str = ""  # every overdue pair sent before this was handled (see scan_once)

    @property
    def action(self) -> str:
        return self.settings.ack_escalation_mode if self.settings.ack_escalation_enabled else "log"

    def statistics(self) -> dict[str, Any]:
        return {"enabled": self.settings.ack_ttl_enabled, "ttl_seconds": self.settings.ack_ttl_seconds,
                "escalation": self.action, "scans": self.scans, "handled": dict(self.handled),
                "last_scan_ts": self.last_scan_ts, "last_error": self.last_error}

    async def run(self) -> None:
        """Scan at start, then every ACK_TTL_SCAN_INTERVAL_SECONDS, until cancelled."""
        while True:
            try:
                await self.scan_once()
            except Exception as exc:
                self.last_error = str(exc)
                log.exception("ack scan failed; retrying next interval")
            await anyio.sleep(max(MIN_SCAN_INTERVAL_SECONDS, self.settings.ack_ttl_scan_interval_seconds))

    async def scan_once(self) -> int:
        """Handle every overdue pair found now (up to SCAN_BATCH messages); returns how many pairs.

        The first scan of a daemon looks at all ack-required mail; once a scan found less than a batch,
        later ones start RESCAN_MARGIN_SECONDS before its cutoff (pairs older than that were handled,
        acknowledged, or belong to retired agents), so the steady cost follows new mail, not history."""
        moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.ack_ttl_seconds)
        cutoff = format_ts(moment)
        handled = 0
        found = await self.store.read(overdue_messages, cutoff, SCAN_BATCH, self._checked_until)
        for message_id in found:
            handled += await self._handle(message_id, cutoff)
        if len(found) < SCAN_BATCH:
            self._checked_until = format_ts(moment - dt.timedelta(seconds=RESCAN_MARGIN_SECONDS))
        self.scans += 1
        self.last_scan_ts = utcnow()
        return handled

    async def _handle(self, message_id: int, cutoff: str) -> int:
        action = self.action

        def escalate(conn: Connection) -> list[tuple[Overdue, str, str]]:
            # Re-read inside the write: a pair acknowledged (or handled) since the scan's read is skipped.
            pairs = _pairs(conn, message_id, cutoff)
            if not pairs:
                return []
            detail, refused = "", set[int]()
            if action == "message":
                detail, refused = _system_mail(conn, pairs)
            elif action == "file_reservation":
                detail = _claim(conn, pairs, self.settings)
            done = [(p, "skipped", REFUSED) if p.agent_id in refused else (p, action, detail) for p in pairs]
            for pair, what, why in done:
                _record(conn, [pair], what, why)
            return done

        def skip(conn: Connection, reason: str) -> list[tuple[Overdue, str, str]]:
            pairs = _pairs(conn, message_id, cutoff)
            _record(conn, pairs, "skipped", reason)
            return [(p, "skipped", reason) for p in pairs]

        try:
            done = await self.store.write(escalate)
        except MailError as exc:  # an escalation that can never be made: recorded, never retried
            log.warning("ack escalation of message %d (%s) not made: %s", message_id, action, exc.message)
            done = await self.store.write(skip, f"{exc.code}: {exc.message}"[:500])
        for pair, what, detail in done:
            log.warning("ack_overdue message=%d recipient=%s sender=%s project=%s created=%s action=%s%s",
                        pair.message_id, pair.recipient, pair.sender, pair.slug, pair.created_ts, what,
                        f" ({detail})" if detail else "")
            self.handled[what] = self.handled.get(what, 0) + 1
        return len(done)


def stale_details(conn: Connection, agent_id: int, items: list[dict[str, Any]], now: dt.datetime) -> None:
    """The acks-stale view's extras per item: `read_at`, `age_seconds`, and `escalation` (what the
    scanner did about it, or None)."""
    ids = [item["id"] for item in items]
    done = {r[0]: {"action": r[1], "detail": r[2], "at": r[3]} for r in conn.execute(
        "SELECT message_id, action, detail, created_ts FROM ack_escalations WHERE agent_id = ?"
        f" AND message_id IN ({','.join('?' * len(ids))})", [agent_id, *ids])} if ids else {}
    for item in items:
        created = dt.datetime.fromisoformat(item["created_ts"].replace("Z", "+00:00"))
        item["read_at"] = item["read_ts"]
        item["age_seconds"] = int((now - created).total_seconds())
        item["escalation"] = done.get(item["id"])


def pending_in(conn: Connection, viewer: visibility.Viewer, project_id: int, *, cutoff: str | None,
               agent_id: int | None, limit: int, now: dt.datetime) -> list[dict[str, Any]]:
    """Who owes which acknowledgement in a project, one row per (message, recipient), oldest first:
    all pending ones, or (`cutoff`) those sent before it. `viewer` reads what visibility.py allows,
    and a bcc recipient's row only if it is that recipient or the sender (the operator sees all)."""
    params: dict[str, Any] = {"project": project_id, "limit": limit, "cutoff": cutoff or "9999",
                              "agent": agent_id}
    where = visibility.clause(viewer, params, project_id=project_id)
    if not viewer.is_operator:
        where += " AND (r.kind != 'bcc' OR m.sender_id = :viewer OR r.agent_id = :viewer)"
    rows: list[Any] = conn.execute(
        "SELECT m.id, m.subject, m.created_ts, s.name, a.name, r.kind, r.read_ts, m.importance, m.thread_id,"
        " e.action, e.created_ts FROM messages m JOIN agents s ON s.id = m.sender_id"
        " JOIN message_recipients r ON r.message_id = m.id JOIN agents a ON a.id = r.agent_id"
        " LEFT JOIN ack_escalations e ON e.message_id = m.id AND e.agent_id = r.agent_id"
        " WHERE m.project_id = :project AND m.ack_required = 1 AND r.ack_ts IS NULL AND m.created_ts < :cutoff"
        f" AND (:agent IS NULL OR r.agent_id = :agent) AND {where} ORDER BY m.id, a.name LIMIT :limit",
        params).fetchall()
    return [{"message_id": r[0], "subject": r[1], "created_ts": r[2], "from": r[3], "recipient": r[4],
             "kind": r[5], "read_at": r[6], "importance": r[7], "thread_id": r[8],
             "age_seconds": int((now - dt.datetime.fromisoformat(r[2].replace("Z", "+00:00"))).total_seconds()),
             "escalation": {"action": r[9], "at": r[10]} if r[9] else None} for r in rows]
