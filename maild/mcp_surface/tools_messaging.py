"""Messaging tools: send_message, reply_message, fetch_inbox, fetch_topic, mark_message_read,
acknowledge_message."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from maild.mcp_surface.context import Services
from maild.mcp_surface.project_default import ProjectKey, project_of
from maild.mcp_surface.registry import Args, ToolOutput, ToolRegistry
from maild.services.messaging import Outgoing, as_name_list
from maild.services.sessions import current_session

Names = str | list[str]
# Few words: every advertised byte counts against the core tools/list budget (docs/messaging.md explains).
IdempotencyKey = Field(None, description="Same key on retry: no duplicate.")


def send_key(args: SendMessageArgs | ReplyMessageArgs) -> str | None:
    """`idempotency_key`, or upstream-style `client_msg_id` (an unadvertised alias)."""
    return args.idempotency_key or args.client_msg_id


class SendMessageArgs(Args):
    project_key: str | None = ProjectKey
    to: Names = Field(default_factory=list, description="Recipient name(s); Name@project for another project.")
    subject: str
    body_md: str = Field(description="GitHub-flavoured markdown.")
    sender_name: str | None = Field(None, description="Defaults to this session's agent.")
    cc: Names | None = None
    bcc: Names | None = None
    importance: str = Field("normal", description="low | normal | high | urgent")
    ack_required: bool = False
    thread_id: str | None = Field(None, description="Join a thread, e.g. a message id or FEAT-12.")
    attachment_paths: list[str] | None = Field(None, description="Files, relative to the repo root.")
    convert_images: bool | None = None
    broadcast: bool = Field(False, description="To every agent of the project.")
    topic: str | None = None
    # Accepted for upstream compatibility, not advertised (every listed parameter costs tokens).
    auto_contact_if_blocked: SkipJsonSchema[bool] = False
    sender_token: str | None = Field(None, description="Only to act as an agent other than your own.")
    idempotency_key: str | None = IdempotencyKey
    client_msg_id: SkipJsonSchema[str | None] = None


class ReplyMessageArgs(Args):
    project_key: str | None = ProjectKey
    message_id: int
    body_md: str
    sender_name: str | None = None
    to: Names | None = Field(None, description="Defaults to the original sender.")
    cc: Names | None = None
    bcc: Names | None = None
    subject_prefix: str = "Re:"
    sender_token: str | None = None
    attachment_paths: list[str] | None = None
    convert_images: SkipJsonSchema[bool | None] = None  # accepted; not advertised (tools/list budget)
    idempotency_key: str | None = None
    client_msg_id: SkipJsonSchema[str | None] = None


class FetchInboxArgs(Args):
    project_key: str | None = ProjectKey
    agent_name: str | None = Field(None, description="Defaults to this session's agent.")
    limit: int = Field(20, ge=1, le=1000)
    urgent_only: bool = False
    include_bodies: bool = False
    since_ts: str | None = Field(None, description="Only messages strictly newer (ISO-8601).")
    unread_only: bool = False
    topic: str | None = None
    registration_token: str | None = None
    include_attachments: bool = False  # adds each attached image as MCP image content


class FetchTopicArgs(Args):
    project_key: str | None = ProjectKey
    topic: str
    limit: int = Field(20, ge=1, le=1000)
    include_bodies: bool = False


class MarkArgs(Args):
    project_key: str | None = ProjectKey
    message_id: int
    agent_name: str | None = None
    registration_token: str | None = None


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=True, category="messaging")
    async def send_message(services: Services, args: SendMessageArgs) -> dict[str, Any]:
        """Send markdown mail (to/cc/bcc, or broadcast to the project). thread_id keeps a discussion together;
        ack_required asks for an acknowledgement. Unknown names: RECIPIENT_NOT_FOUND with suggestions."""
        key = await project_of(services, args.project_key)
        out = Outgoing(
            project_key=key,
            subject=args.subject,
            body_md=args.body_md,
            to=as_name_list(args.to, "to"),
            cc=as_name_list(args.cc, "cc"),
            bcc=as_name_list(args.bcc, "bcc"),
            importance=args.importance,
            ack_required=args.ack_required,
            thread_id=args.thread_id,
            attachment_paths=args.attachment_paths or [],
            convert_images=args.convert_images,
            broadcast=args.broadcast,
            topic=args.topic,
        )
        return await services.messaging.send(current_session.get(), out, args.sender_name, args.sender_token,
                                             send_key(args), auto_contact_if_blocked=args.auto_contact_if_blocked)

    @tools.tool(core=True, category="messaging")
    async def reply_message(services: Services, args: ReplyMessageArgs) -> dict[str, Any]:
        """Reply in a message's thread (subject gets "Re:", importance/ack inherited, to = original sender)."""
        key = await project_of(services, args.project_key)
        return await services.messaging.reply(
            current_session.get(), key, args.message_id, args.sender_name, args.sender_token,
            args.body_md, as_name_list(args.to, "to") or None, as_name_list(args.cc, "cc"),
            as_name_list(args.bcc, "bcc"), args.subject_prefix, args.attachment_paths, args.convert_images,
            idempotency_key=send_key(args),
        )

    @tools.tool(core=True, category="messaging", read_only=True)
    async def fetch_inbox(services: Services, args: FetchInboxArgs) -> dict[str, Any] | ToolOutput:
        """Your newest mail first (and mail that @mentions you), with unread_count. Never marks anything
        read (mark_message_read does). Poll with since_ts to get only new mail."""
        key = await project_of(services, args.project_key)
        result = await services.messaging.fetch_inbox(
            current_session.get(), key, args.agent_name, args.registration_token,
            limit=args.limit, urgent_only=args.urgent_only, include_bodies=args.include_bodies,
            since_ts=args.since_ts, unread_only=args.unread_only, topic=args.topic,
        )
        if args.include_attachments and services.attachments is not None:
            images = await services.attachments.images_for(result["result"])
            return ToolOutput(result, [(mime, data) for _sha, mime, data in images])
        return result

    @tools.tool(core=False, category="messaging", read_only=True)
    async def fetch_topic(services: Services, args: FetchTopicArgs) -> dict[str, Any]:
        """The project's messages tagged with a topic (send_message topic=...), newest first."""
        key = await project_of(services, args.project_key)
        return await services.views.fetch_topic(
            current_session.get(), key, args.topic, args.limit, args.include_bodies
        )

    @tools.tool(core=True, category="messaging", idempotent=True)
    async def mark_message_read(services: Services, args: MarkArgs) -> dict[str, Any]:
        """Mark one of your messages read (idempotent: the first read time is kept)."""
        key = await project_of(services, args.project_key)
        return await services.messaging.mark(
            current_session.get(), key, args.agent_name, args.registration_token,
            args.message_id, ack=False,
        )

    @tools.tool(core=False, category="messaging", idempotent=True)
    async def acknowledge_message(services: Services, args: MarkArgs) -> dict[str, Any]:
        """Acknowledge a message (also marks it read). Idempotent: repeat calls return the same times."""
        key = await project_of(services, args.project_key)
        return await services.messaging.mark(
            current_session.get(), key, args.agent_name, args.registration_token,
            args.message_id, ack=True,
        )
