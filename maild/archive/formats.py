"""File formats of the archive (upstream §4.3 and §4.4): pure functions from outbox payloads to files,
and the parsers that read them back (for `doctor`, `rebuild` and the layout migration).

Layout 2 (`layout.json` at the root says which): big folders are fanned out into shards of 1,000
ids (`0052xxx` holds ids 52,000-52,999), so a group commit rewrites a few small trees instead of
folders with tens of thousands of entries. Upstream's paths that tools read stay where they were:
`project.json`, `agents/<Name>/profile.json`, and `file_reservations/<sha1(pattern)>.json` (the
pre-commit guard globs that folder; it now holds only the live reservations). See docs/archive.md.

Issue 14 adds `agents/<Name>/contacts/<target id>.json` (a contact link Name -> target) and
`deleted_agents/<agent id>.json` (the tombstone of a hard-deleted agent). Ids travel with names
(`agent_ids` in front matter, `id` in profiles, `agent_id` in reservations) so a rebuild reattaches
mail and leases to the right agent after a retired name is reclaimed.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_SUBJECT_SLUG = re.compile(r"[^a-zA-Z0-9._-]+")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SAFE_THREAD = re.compile(r"[^A-Za-z0-9._-]")
# Both layouts: layout 1 had no shard folder (`doctor` must read an archive not yet migrated).
MESSAGE_FILE = re.compile(r"^projects/(?P<slug>[^/]+)/messages/\d{4}/\d{2}/(?:\d+xxx/)?[^/]+__(?P<id>\d+)\.md$")
PREVIEW_CHARS = 1200
DIGEST_PART = 100
SHARD_SIZE = 1000
LAYOUT = 2
LAYOUT_FILE = "layout.json"
TOKEN_SALT_PREFIX = "salted-sha256$"  # noqa: S105 - a format tag, not a secret

Files = dict[str, bytes | None]  # path -> content; None deletes the path


def shard(number: int) -> str:
    """The shard folder of an id: `0052xxx` for 52,000-52,999 (sorted, readable, ≤ 1,000 entries)."""
    return f"{int(number) // SHARD_SIZE:04d}xxx"


def layout_file() -> bytes:
    return pretty_json({"layout": LAYOUT, "shard_size": SHARD_SIZE,
                        "see": "docs/archive.md of Agent Mail: where each kind of file lives"})


def subject_slug(subject: str) -> str:
    return _SUBJECT_SLUG.sub("-", subject).strip("-_").lower()[:80] or "message"


def segment(name: str) -> str:
    """A path segment from an agent name or slug; refuses anything that could escape its folder."""
    if not _SAFE_SEGMENT.match(name) or ".." in name:
        raise ValueError(f"unsafe archive path segment: {name!r}")
    return name


def message_filename(payload: dict[str, Any]) -> tuple[str, str]:
    """(YYYY/MM/<shard>, file name) for a message payload."""
    created = payload["created_ts"]
    stamp = created[:19].replace(":", "-") + "Z"
    name = f"{stamp}__{subject_slug(payload['subject'])}__{payload['id']}.md"
    return f"{created[:4]}/{created[5:7]}/{shard(payload['id'])}", name


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
    """Front matter, then the body exactly as sent (CRLF, indentation and blank lines kept: a rebuild
    must give back the same bytes; upstream stripped it), then one newline that parsing removes."""
    meta = json.dumps(front_matter(payload, project_key), indent=2, sort_keys=True, ensure_ascii=False)
    return f"---json\n{meta}\n---\n\n".encode() + str(payload["body_md"]).encode() + b"\n"


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
    folder, name = message_filename(payload)
    content = render_message(payload, project_key)
    files: Files = {f"projects/{slug}/messages/{folder}/{name}": content}
    files[f"projects/{slug}/agents/{segment(payload['from'])}/outbox/{folder}/{name}"] = content
    for recipient in [*payload["to"], *payload["cc"], *payload["bcc"]]:
        files[f"projects/{slug}/agents/{segment(recipient)}/inbox/{folder}/{name}"] = content
    return files


def digest_name(thread_id: str, part: int = 0) -> str:
    """File name of a digest part. A thread id that is not already a safe name gets a hash suffix
    (`a/b` and `a-b` must not share a file), and parts after the first use `~part-<n>`: `~` never
    occurs in a thread's own name, so thread `X.part-2` and thread X's second part stay apart."""
    safe = _SAFE_THREAD.sub("-", thread_id)
    if safe != thread_id or not safe or safe.startswith("."):
        tag = hashlib.sha1(thread_id.encode(), usedforsecurity=False).hexdigest()[:10]
        safe = f"{safe.lstrip('.') or 'thread'}~{tag}"
    return f"{safe}.md" if part == 0 else f"{safe}~part-{part + 1}.md"


def thread_digest(thread_id: str, slug: str, messages: list[dict[str, Any]], part: int = 0,
                  first_id: int | None = None) -> Files:
    """One part of a thread's digest (DIGEST_PART messages, oldest first; parts only grow), in the
    shard of the thread's first message. Later parts link back, so a long thread costs git one part
    a message."""
    root = first_id if first_id is not None else (messages[0]["id"] if messages else 0)
    parts = [f"# Thread {thread_id}\n"]
    if part > 0:
        first = part * DIGEST_PART + 1
        previous = digest_name(thread_id, part - 1)
        parts.append(f"\nMessages {first} to {first + DIGEST_PART - 1}; earlier ones: [{previous}]({previous})\n")
    for payload in messages:
        folder, filename = message_filename(payload)
        body = payload["body_md"].strip()
        preview = body if len(body) <= PREVIEW_CHARS else body[:PREVIEW_CHARS] + "..."
        recipients = ", ".join([*payload["to"], *payload["cc"]])
        parts.append(
            f"\n### {payload['subject']}\n\n## {payload['created_ts']} — {payload['from']} → {recipients}\n\n"
            f"[View canonical](../../{folder}/{filename})\n\n{preview}\n\n---\n"
        )
    path = f"projects/{segment(slug)}/messages/threads/{shard(root)}/{digest_name(thread_id, part)}"
    return {path: "".join(parts).encode()}


def pretty_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def salted_token_hash(token_hash: str, salt: str) -> str:
    """What the archive keeps of a registration token: a salted hash of the database's hash, never
    the token (the archive is meant to be shared). `token_matches` in services checks it after a
    rebuild, so agents keep their tokens."""
    if token_hash.startswith(TOKEN_SALT_PREFIX):
        return token_hash  # already salted (a rebuilt database): keep it as it is
    digest = hashlib.sha256(f"{salt}:{token_hash}".encode()).hexdigest()
    return f"{TOKEN_SALT_PREFIX}{salt}${digest}"


def token_salt(agent: dict[str, Any]) -> str:
    return hashlib.sha256(f"{agent['project_id']}/{agent['id']}/{agent['inception_ts']}".encode()).hexdigest()[:16]


def agent_files(agent: dict[str, Any], slug: str) -> Files:
    folder = f"projects/{segment(slug)}/agents/{segment(agent['name'])}"
    content = pretty_json(agent)
    return {f"{folder}/profile.json": content, f"{folder}/profiles/{int(agent['id'])}.json": content}


def receipt_files(receipt: dict[str, Any], slug: str) -> Files:
    """An agent's read/ack state for one message (the agent id inside: names can be reclaimed)."""
    folder = f"projects/{segment(slug)}/agents/{segment(receipt['agent'])}/receipts"
    message_id = int(receipt["message_id"])
    return {f"{folder}/{shard(message_id)}/{message_id}.json": pretty_json(receipt)}


def contact_files(contact: dict[str, Any], slug: str) -> Files:
    """One contact link, in the requester's folder, by the target's id (names can be reclaimed)."""
    folder = f"projects/{segment(slug)}/agents/{segment(contact['from'])}/contacts"
    return {f"{folder}/{int(contact['to_agent_id'])}.json": pretty_json(contact)}


def tombstone_files(deleted: dict[str, Any], slug: str) -> Files:
    """A hard-deleted agent: rebuild leaves out the agent, the mail it sent and its receipts."""
    return {f"projects/{segment(slug)}/deleted_agents/{int(deleted['id'])}.json": pretty_json(deleted)}


def project_files(project: dict[str, Any]) -> Files:
    return {f"projects/{segment(project['slug'])}/project.json": pretty_json(project)}


def pattern_path(slug: str, pattern: str) -> str:
    """Upstream's by-pattern file; the archiver keeps it for live reservations only."""
    digest = hashlib.sha1(pattern.encode(), usedforsecurity=False).hexdigest()
    return f"projects/{segment(slug)}/file_reservations/{digest}.json"


def reservation_files(reservations: list[dict[str, Any]], slug: str) -> Files:
    """Each reservation's own file, every state change (`by-id/<shard>/id-<id>.json`). The
    by-pattern file depends on the other reservations of the pattern: the archiver writes it."""
    files: Files = {}
    for reservation in reservations:
        rid = int(reservation["id"])
        files[f"projects/{segment(slug)}/file_reservations/by-id/{shard(rid)}/id-{rid}.json"] = pretty_json(reservation)
    return files


def build_slot_path(slug: str, slot: str, agent: str, branch: str) -> str:
    """Upstream's lease file `build_slots/<slot>/<agent>__<branch>.json`. One file per holder and
    branch, rewritten on acquire, renew and release: the folder grows with who builds, not how often.
    A branch that is not a safe file name (`feature/x`) gets a hash suffix, as thread names do."""
    name = branch
    if not _SAFE_SEGMENT.match(branch) or ".." in branch:
        digest = hashlib.sha1(branch.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{_SAFE_THREAD.sub('-', branch).strip('-.')[:80] or 'branch'}~{digest}"
    return f"projects/{segment(slug)}/build_slots/{segment(slot)}/{segment(agent)}__{name}.json"


def build_slot_files(leases: list[dict[str, Any]], slug: str) -> Files:
    return {build_slot_path(slug, lease["slot"], lease["agent"], lease["branch"]): pretty_json(lease)
            for lease in leases}


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
    if kind == "build_slot":
        leases = payload["leases"]
        more = f" (+{len(leases) - 1} more)" if len(leases) > 1 else ""
        first = leases[0] if leases else {"agent": "?", "slot": "", "branch": ""}
        return f"build_slot: {first['agent']} {payload['action']} {first['slot']}@{first['branch']}{more}", \
            first["agent"]
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
