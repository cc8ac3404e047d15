"""File formats of the archive (upstream §4.3 and §4.4): pure functions from outbox payloads to files,
and the parsers that read them back (for `doctor` and `rebuild`).

    projects/<slug>/project.json
    projects/<slug>/agents/<Name>/profile.json                  (the agent holding the name now)
    projects/<slug>/agents/<Name>/profiles/<agent id>.json      (every agent that held the name)
    projects/<slug>/messages/YYYY/MM/<YYYY-MM-DDTHH-MM-SSZ>__<subject-slug>__<id>.md   (canonical)
    projects/<slug>/agents/<Name>/outbox/YYYY/MM/<same file name>                       (copy)
    projects/<slug>/agents/<Name>/inbox/YYYY/MM/<same file name>                        (copies)
    projects/<slug>/messages/threads/<thread_id>.md                  (digest, first 100 messages)
    projects/<slug>/messages/threads/<thread_id>.part-<n>.md         (messages 100(n-1)+1 …, n >= 2)
    projects/<slug>/file_reservations/<sha1(pattern)>.json      (latest change to that pattern)
    projects/<slug>/file_reservations/id-<reservation id>.json  (each reservation, all its states)
    projects/<slug>/agents/<Name>/contacts/<target id>.json     (a contact link Name -> target)
    projects/<slug>/deleted_agents/<agent id>.json              (tombstone of a hard-deleted agent)

Ids travel with names (`agent_ids` in front matter, `id` in profiles, `agent_id` in reservations)
so a rebuild reattaches mail and leases to the right agent after a retired name is reclaimed.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_SUBJECT_SLUG = re.compile(r"[^a-zA-Z0-9._-]+")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MESSAGE_FILE = re.compile(r"^projects/(?P<slug>[^/]+)/messages/\d{4}/\d{2}/[^/]+__(?P<id>\d+)\.md$")
PREVIEW_CHARS = 1200
DIGEST_PART = 100

Files = dict[str, bytes]


def subject_slug(subject: str) -> str:
    return _SUBJECT_SLUG.sub("-", subject).strip("-_").lower()[:80] or "message"


def segment(name: str) -> str:
    """A path segment from an agent name or slug; refuses anything that could escape its folder."""
    if not _SAFE_SEGMENT.match(name) or ".." in name:
        raise ValueError(f"unsafe archive path segment: {name!r}")
    return name


def message_filename(payload: dict[str, Any]) -> tuple[str, str]:
    """(YYYY/MM, file name) for a message payload."""
    created = payload["created_ts"]
    stamp = created[:19].replace(":", "-") + "Z"
    return f"{created[:4]}/{created[5:7]}", f"{stamp}__{subject_slug(payload['subject'])}__{payload['id']}.md"


def front_matter(payload: dict[str, Any], project_key: str) -> dict[str, Any]:
    return {
        "id": payload["id"],
        "thread_id": payload["thread_id"],
        "project": project_key,
        "project_slug": payload["project_slug"],
        "from": payload["from"],
        "to": payload["to"],
        "cc": payload["cc"],
        "bcc": payload["bcc"],
        "subject": payload["subject"],
        "importance": payload["importance"],
        "ack_required": payload["ack_required"],
        "created": payload["created_ts"],
        "attachments": payload.get("attachments", []),
        **({"agent_ids": payload["agent_ids"]} if "agent_ids" in payload else {}),
        **({"topic": payload["topic"]} if payload.get("topic") else {}),
        **({"mentions": payload["mentions"]} if payload.get("mentions") else {}),
    }


def render_message(payload: dict[str, Any], project_key: str) -> bytes:
    meta = json.dumps(front_matter(payload, project_key), indent=2, sort_keys=True, ensure_ascii=False)
    return f"---json\n{meta}\n---\n\n{payload['body_md'].strip()}\n".encode()


def parse_message(text: str) -> tuple[dict[str, Any], str]:
    """Front matter and body of a canonical message file (inverse of `render_message`)."""
    if not text.startswith("---json\n"):
        raise ValueError("not an archive message file (no ---json front matter)")
    meta_text, sep, body = text[len("---json\n"):].partition("\n---\n\n")
    if not sep:
        raise ValueError("unterminated front matter")
    return json.loads(meta_text), body[:-1] if body.endswith("\n") else body


def message_files(payload: dict[str, Any], project_key: str) -> Files:
    slug = segment(payload["project_slug"])
    month, name = message_filename(payload)
    content = render_message(payload, project_key)
    files = {f"projects/{slug}/messages/{month}/{name}": content}
    files[f"projects/{slug}/agents/{segment(payload['from'])}/outbox/{month}/{name}"] = content
    for recipient in [*payload["to"], *payload["cc"], *payload["bcc"]]:
        files[f"projects/{slug}/agents/{segment(recipient)}/inbox/{month}/{name}"] = content
    return files


def thread_digest(thread_id: str, slug: str, messages: list[dict[str, Any]], part: int = 0) -> Files:
    """One part of a thread's digest (DIGEST_PART messages, oldest first; parts only grow). Part 0 is
    upstream's `threads/<id>.md`; later parts link back, so a long thread costs git one part a message."""
    safe_thread = re.sub(r"[^A-Za-z0-9._-]", "-", thread_id)
    name = safe_thread if part == 0 else f"{safe_thread}.part-{part + 1}"
    parts = [f"# Thread {thread_id}\n"]
    if part > 0:
        previous = safe_thread if part == 1 else f"{safe_thread}.part-{part}"
        first = part * DIGEST_PART + 1
        parts.append(f"\nMessages {first} to {first + DIGEST_PART - 1}; earlier ones: [{previous}.md]({previous}.md)\n")
    for payload in messages:
        month, filename = message_filename(payload)
        body = payload["body_md"].strip()
        preview = body if len(body) <= PREVIEW_CHARS else body[:PREVIEW_CHARS] + "..."
        recipients = ", ".join([*payload["to"], *payload["cc"]])
        parts.append(
            f"\n### {payload['subject']}\n\n## {payload['created_ts']} — {payload['from']} → {recipients}\n\n"
            f"[View canonical](../{month}/{filename})\n\n{preview}\n\n---\n"
        )
    return {f"projects/{segment(slug)}/messages/threads/{name}.md": "".join(parts).encode()}


def pretty_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def agent_files(agent: dict[str, Any], slug: str) -> Files:
    folder = f"projects/{segment(slug)}/agents/{segment(agent['name'])}"
    content = pretty_json(agent)
    return {f"{folder}/profile.json": content, f"{folder}/profiles/{int(agent['id'])}.json": content}


def receipt_files(receipt: dict[str, Any], slug: str) -> Files:
    """An agent's read/ack state for one message (the agent id inside: names can be reclaimed)."""
    folder = f"projects/{segment(slug)}/agents/{segment(receipt['agent'])}/receipts"
    return {f"{folder}/{int(receipt['message_id'])}.json": pretty_json(receipt)}


def contact_files(contact: dict[str, Any], slug: str) -> Files:
    """One contact link, in the requester's folder, by the target's id (names can be reclaimed)."""
    folder = f"projects/{segment(slug)}/agents/{segment(contact['from'])}/contacts"
    return {f"{folder}/{int(contact['to_agent_id'])}.json": pretty_json(contact)}


def tombstone_files(deleted: dict[str, Any], slug: str) -> Files:
    """A hard-deleted agent: rebuild leaves out the agent, the mail it sent and its receipts."""
    return {f"projects/{segment(slug)}/deleted_agents/{int(deleted['id'])}.json": pretty_json(deleted)}


def project_files(project: dict[str, Any]) -> Files:
    return {f"projects/{segment(project['slug'])}/project.json": pretty_json(project)}


def reservation_files(reservations: list[dict[str, Any]], slug: str) -> Files:
    files: Files = {}
    for reservation in reservations:
        digest = hashlib.sha1(reservation["path_pattern"].encode(), usedforsecurity=False).hexdigest()
        content = pretty_json(reservation)
        files[f"projects/{segment(slug)}/file_reservations/{digest}.json"] = content
        files[f"projects/{segment(slug)}/file_reservations/id-{int(reservation['id'])}.json"] = content
    return files


def describe(kind: str, payload: dict[str, Any]) -> tuple[str, str | None]:
    """(one commit-message line, acting agent) for an outbox item."""
    if kind == "message":
        m = payload["message"]
        return f"mail: {m['from']} -> {', '.join([*m['to'], *m['cc']])} | {m['subject']}", m["from"]
    if kind == "agent":
        return f"agent: profile {payload['agent']['name']}", payload["agent"]["name"]
    if kind == "file_reservation":
        items = payload["reservations"]
        more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
        holder = items[0]["agent"] if items else "?"
        return f"file_reservation: {holder} {items[0]['path_pattern'] if items else ''}{more}", holder
    if kind == "project":
        return f"project: {payload['project']['slug']}", None
    if kind == "receipt":
        r = payload["receipt"]
        return f"receipt: {r['agent']} {'acked' if r['ack_ts'] else 'read'} #{r['message_id']}", r["agent"]
    if kind == "contact":
        c = payload["contact"]
        return f"contact: {c['from']} -> {c['to']} {c['status']}", c["from"]
    if kind == "agent_deleted":
        return f"agent: delete {payload['deleted']['name']}", None
    return f"{kind}: update", None
