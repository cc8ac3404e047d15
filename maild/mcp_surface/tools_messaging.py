"""Messaging tools: send_message, reply_message, fetch_inbox, mark_message_read, acknowledge_message."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry
from maild.services.messaging import Outgoing, as_name_list
from maild.services.sessions import current_session
from shared.errors import InvalidArgument

ProjectKey = Field(description="Repo path or project label.")
Names = str | list[str]
# Few words: every advertised byte counts against the core tools/list budget (docs/messaging.md explains).
IdempotencyKey = Field(None, description="Same key on retry: no duplicate.")


def send_key(args: SendMessageArgs | ReplyMessageArgs) -> str | None:
    """`idempotency_key`, or upstream-style `client_msg_id` (an unadvertised alias)."""
    return args.idempotency_key or args.client_msg_id


class SendMessageArgs(Args):
    project_key: str = ProjectKey
    to: Names = Field(description="Recipient name(s); Name@project for another project.")
    subject: str
    body_md: str = Field(description="GitHub-flavoured markdown.")
    sender_name: str | None = Field(None, description="Defaults to this session's agent.")
    cc: Names | None = None
    bcc: Names | None = None
    importance: str = Field("normal", description="low | normal | high | urgent")
    ack_required: bool = False
    thread_id: str | None = Field(None, description="Join a thread, e.g. a message id or FEAT-12.")
    # Accepted for upstream compatibility, not advertised (every listed parameter costs tokens).
    attachment_paths: SkipJsonSchema[list[str] | None] = None
    convert_images: SkipJsonSchema[bool | None] = None
    auto_contact_if_blocked: SkipJsonSchema[bool] = False
    sender_token: str | None = Field(None, description="Only to act as an agent other than your own.")
    idempotency_key: str | None = IdempotencyKey
    client_msg_id: SkipJsonSchema[str | None] = None


class ReplyMessageArgs(Args):
    project_key: str = ProjectKey
    message_id: int
    body_md: str
    sender_name: str | None = None
    to: Names | None = Field(None, description="Defaults to the original sender.")
    cc: Names | None = None
    bcc: Names | None = None
    subject_prefix: str = "Re:"
    sender_token: str | None = None
    idempotency_key: str | None = None
    client_msg_id: SkipJsonSchema[str | None] = None


class FetchInboxArgs(Args):
    project_key: str = ProjectKey
    agent_name: str | None = Field(None, description="Defaults to this session's agent.")
    limit: int = Field(20, ge=1, le=1000)
    urgent_only: bool = False
    include_bodies: bool = False
    since_ts: str | None = Field(None, description="Only messages strictly newer (ISO-8601).")
    registration_token: str | None = None


class MarkArgs(Args):
    project_key: str = ProjectKey
    message_id: int
    agent_name: str | None = None
    registration_token: str | None = None


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=True, category="messaging")
    async def send_message(services: Services, args: SendMessageArgs) -> dict[str, Any]:
        """Send markdown mail to other agents. Use thread_id to keep a topic together; ack_required when you
        need a confirmation. Fails with RECIPIENT_NOT_FOUND (with suggestions) on unknown names."""
        if args.attachment_paths:
            raise InvalidArgument("attachments are not supported yet; reference file paths in body_md instead")
        out = Outgoing(
            project_key=args.project_key,
            subject=args.subject,
            body_md=args.body_md,
            to=as_name_list(args.to, "to"),
            cc=as_name_list(args.cc, "cc"),
            bcc=as_name_list(args.bcc, "bcc"),
            importance=args.importance,
            ack_required=args.ack_required,
            thread_id=args.thread_id,
        )
        return await services.messaging.send(
            current_session.get(), out, args.sender_name, args.sender_token, send_key(args)
        )

    @tools.tool(core=True, category="messaging")
    async def reply_message(services: Services, args: ReplyMessageArgs) -> dict[str, Any]:
        """Reply in a message's thread (subject gets "Re:", importance/ack inherited, to = original sender)."""
        return await services.messaging.reply(
            current_session.get(), args.project_key, args.message_id, args.sender_name, args.sender_token,
            args.body_md, as_name_list(args.to, "to") or None, as_name_list(args.cc, "cc"),
            as_name_list(args.bcc, "bcc"), args.subject_prefix, send_key(args),
        )

    @tools.tool(core=True, category="messaging", read_only=True)
    async def fetch_inbox(services: Services, args: FetchInboxArgs) -> dict[str, Any]:
        """Your newest mail first, with unread_count. Never marks anything read: call mark_message_read or
        acknowledge_message for that. Poll with since_ts to get only new mail."""
        return await services.messaging.fetch_inbox(
            current_session.get(), args.project_key, args.agent_name, args.registration_token,
            limit=args.limit, urgent_only=args.urgent_only, include_bodies=args.include_bodies,
            since_ts=args.since_ts,
        )

    @tools.tool(core=True, category="messaging", idempotent=True)
    async def mark_message_read(services: Services, args: MarkArgs) -> dict[str, Any]:
        """Mark one of your messages read (idempotent: the first read time is kept)."""
        return await services.messaging.mark(
            current_session.get(), args.project_key, args.agent_name, args.registration_token,
            args.message_id, ack=False,
        )

    @tools.tool(core=False, category="messaging", idempotent=True)
    async def acknowledge_message(services: Services, args: MarkArgs) -> dict[str, Any]:
        """Acknowledge a message (also marks it read). Idempotent: repeat calls return the same times."""
        return await services.messaging.mark(
            current_session.get(), args.project_key, args.agent_name, args.registration_token,
            args.message_id, ack=True,
        )
