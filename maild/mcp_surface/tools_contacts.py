"""Contact tools (upstream HEAD): request_contact, respond_contact, list_contacts, set_contact_policy
and macro_contact_handshake. Thin adapters over maild/services/contact_requests.py; extended set."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.project_default import ProjectKey, project_of
from maild.mcp_surface.registry import Args, ToolRegistry
from maild.services.contacts import APPROVAL_TTL_SECONDS, REQUEST_TTL_SECONDS
from maild.services.sessions import current_session


class RequestContactArgs(Args):
    project_key: str | None = ProjectKey
    to_agent: str
    from_agent: str | None = Field(None, description="Defaults to this session's agent.")
    reason: str = ""
    ttl_seconds: int = REQUEST_TTL_SECONDS
    registration_token: str | None = None


class RespondContactArgs(Args):
    project_key: str | None = ProjectKey
    from_agent: str = Field(description="Who asked.")
    accept: bool
    to_agent: str | None = Field(None, description="Defaults to this session's agent.")
    ttl_seconds: int = APPROVAL_TTL_SECONDS
    registration_token: str | None = None


class ListContactsArgs(Args):
    project_key: str | None = ProjectKey
    agent_name: str | None = None
    registration_token: str | None = None


class SetPolicyArgs(Args):
    project_key: str | None = ProjectKey
    policy: Literal["open", "auto", "contacts_only", "block_all"]
    agent_name: str | None = None
    registration_token: str | None = None


class HandshakeArgs(Args):
    project_key: str | None = ProjectKey
    to_agent: str = Field(validation_alias=AliasChoices("to_agent", "target"))
    agent_name: str | None = Field(None, validation_alias=AliasChoices("agent_name", "requester"),
                                   description="Requester; defaults to this session's agent.")
    reason: str = ""
    auto_accept: bool = False
    target_registration_token: str | None = Field(None, description="Needed for auto_accept.")
    welcome_subject: str | None = None
    welcome_body: str | None = None
    ttl_seconds: int = APPROVAL_TTL_SECONDS
    registration_token: str | None = None


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=False, category="contacts")
    async def request_contact(services: Services, args: RequestContactArgs) -> dict[str, Any]:
        """Ask to be allowed to write to an agent (pending link + an ack_required intro message)."""
        key = await project_of(services, args.project_key)
        return await services.contacts.request(
            current_session.get(), key, args.from_agent, args.to_agent, args.reason,
            args.ttl_seconds, args.registration_token,
        )

    @tools.tool(core=False, category="contacts")
    async def respond_contact(services: Services, args: RespondContactArgs) -> dict[str, Any]:
        """Accept or decline a contact request made to you (declined: that agent can no longer write)."""
        key = await project_of(services, args.project_key)
        return await services.contacts.respond(
            current_session.get(), key, args.to_agent, args.from_agent, args.accept,
            args.ttl_seconds, args.registration_token,
        )

    @tools.tool(core=False, category="contacts", read_only=True)
    async def list_contacts(services: Services, args: ListContactsArgs) -> dict[str, Any]:
        """Your contact links (incoming and outgoing) with status and expiry, and your contact policy."""
        key = await project_of(services, args.project_key)
        return await services.contacts.list(
            current_session.get(), key, args.agent_name, args.registration_token
        )

    @tools.tool(core=False, category="contacts", idempotent=True)
    async def set_contact_policy(services: Services, args: SetPolicyArgs) -> dict[str, Any]:
        """Who may write to you: open | auto (default: everyone) | contacts_only | block_all."""
        key = await project_of(services, args.project_key)
        return await services.contacts.set_policy(
            current_session.get(), key, args.agent_name, args.policy, args.registration_token
        )

    @tools.tool(core=False, category="workflow_macros")
    async def macro_contact_handshake(services: Services, args: HandshakeArgs) -> dict[str, Any]:
        """Request contact, approve it too when you hold the target's token (auto_accept), and send a welcome."""
        key = await project_of(services, args.project_key)
        return await services.contacts.handshake(
            current_session.get(), key, args.agent_name, args.to_agent, args.reason, args.auto_accept,
            args.target_registration_token, args.registration_token, args.welcome_subject, args.welcome_body,
            args.ttl_seconds,
        )
