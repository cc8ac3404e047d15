"""Identity tools: register_agent, create_agent_identity, whois."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from maild.mcp_surface.context import Services
from maild.mcp_surface.project_default import ProjectKey, project_of
from maild.mcp_surface.registry import Args, ToolRegistry
from maild.services.sessions import current_session


class RegisterAgentArgs(Args):
    project_key: str | None = ProjectKey
    program: str = Field(description="Your client, e.g. claude-code.")
    model: str = Field(description="Your model, e.g. opus-4.")
    name: str | None = Field(None, description="Wanted name (e.g. BlueLake); omit for a generated one.")
    task_description: str = ""
    force_reclaim: bool = Field(False, description="Take the name even from an online holder.")
    registration_token: str | None = None
    rebind: bool = False
    auto_fetch_inbox: bool = False
    inbox_limit: int = Field(10, ge=1, le=1000)
    # Upstream's parameters, accepted but not advertised (every listed parameter costs tokens in the
    # core tools/list, which must stay under 2,000).
    attachments_policy: SkipJsonSchema[str] = "auto"
    inbox_urgent_only: SkipJsonSchema[bool] = False
    inbox_since_ts: SkipJsonSchema[str | None] = None
    inbox_include_bodies: SkipJsonSchema[bool] = False


class CreateAgentIdentityArgs(Args):
    project_key: str | None = ProjectKey
    program: str
    model: str
    name_hint: str | None = None
    task_description: str = ""
    attachments_policy: str = "auto"


class WhoisArgs(Args):
    project_key: str | None = ProjectKey
    agent_name: str
    include_recent_commits: bool = True
    commit_limit: int = 5


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=True, category="identity")
    async def register_agent(services: Services, args: RegisterAgentArgs) -> dict[str, Any]:
        """Register your agent and bind this session to it (once, at start); later calls act as it.
        Keep the registration_token returned on creation: it is shown once."""
        key = await project_of(services, args.project_key)
        session = current_session.get()
        agent = await services.agents.register(
            session, key, args.program, args.model, args.name, args.task_description,
            args.attachments_policy, force_reclaim=args.force_reclaim, token=args.registration_token,
            rebind=args.rebind,
        )
        if not args.auto_fetch_inbox:
            return agent
        inbox = await services.messaging.fetch_inbox(
            session, key, agent["name"], args.registration_token or agent.get("registration_token"),
            limit=args.inbox_limit, urgent_only=args.inbox_urgent_only,
            include_bodies=args.inbox_include_bodies, since_ts=args.inbox_since_ts,
        )
        return {"agent": agent, "inbox": inbox["result"], "unread_count": inbox["unread_count"]}

    @tools.tool(core=False, category="identity")
    async def create_agent_identity(services: Services, args: CreateAgentIdentityArgs) -> dict[str, Any]:
        """Create a brand-new agent identity (never reuses an active one) and bind this session to it."""
        key = await project_of(services, args.project_key)
        return await services.agents.register(
            current_session.get(), key, args.program, args.model, args.name_hint,
            args.task_description, args.attachments_policy, force_reclaim=False, token=None, always_new=True,
        )

    @tools.tool(core=True, category="identity", read_only=True)
    async def whois(services: Services, args: WhoisArgs) -> dict[str, Any]:
        """Profile of an agent: program, model, task, online/last_seen, recent archive commits."""
        key = await project_of(services, args.project_key)
        return await services.agents.whois(
            key, args.agent_name, args.include_recent_commits, args.commit_limit
        )
