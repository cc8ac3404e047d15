"""Agent lifecycle tools (upstream HEAD and the fork's delete_agent): retire, unretire, deregister,
hard delete. Thin adapters over maild/services/lifecycle.py; all in the extended set."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.project_default import ProjectKey, project_of
from maild.mcp_surface.registry import Args, ToolRegistry
from maild.services.sessions import current_session


class AgentArgs(Args):
    project_key: str | None = ProjectKey
    agent_name: str | None = Field(None, description="Defaults to this session's agent.")
    registration_token: str | None = None


class DeleteAgentArgs(Args):
    project_key: str | None = ProjectKey
    name: str


class UnretireArgs(Args):
    project_key: str | None = ProjectKey
    agent_name: str
    registration_token: str | None = None


class HardDeleteArgs(UnretireArgs):
    confirmation: str = Field(description="Must be 'I UNDERSTAND'.")


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=False, category="identity")
    async def retire_agent(services: Services, args: AgentArgs) -> dict[str, Any]:
        """Retire an agent: keeps its mail, frees its name, releases its reservations; it can no longer send."""
        key = await project_of(services, args.project_key)
        return await services.lifecycle.retire(
            current_session.get(), key, args.agent_name, args.registration_token
        )

    @tools.tool(core=False, category="identity")
    async def delete_agent(services: Services, args: DeleteAgentArgs) -> dict[str, Any]:
        """The fork's name for retire_agent (mail and history are kept; see hard_delete_agent)."""
        key = await project_of(services, args.project_key)
        return await services.lifecycle.retire(current_session.get(), key, args.name, None)

    @tools.tool(core=False, category="identity")
    async def unretire_agent(services: Services, args: UnretireArgs) -> dict[str, Any]:
        """Bring a retired agent back under its name (needs its token, and the name still free)."""
        key = await project_of(services, args.project_key)
        return await services.lifecycle.unretire(
            current_session.get(), key, args.agent_name, args.registration_token
        )

    @tools.tool(core=False, category="identity")
    async def deregister_agent(services: Services, args: AgentArgs) -> dict[str, Any]:
        """Stop receiving mail (contact policy block_all) while keeping the agent and its history."""
        key = await project_of(services, args.project_key)
        return await services.lifecycle.deregister(
            current_session.get(), key, args.agent_name, args.registration_token
        )

    @tools.tool(core=False, category="identity")
    async def hard_delete_agent(services: Services, args: HardDeleteArgs) -> dict[str, Any]:
        """Delete an agent and all the mail it sent, for good (confirmation='I UNDERSTAND')."""
        key = await project_of(services, args.project_key)
        return await services.lifecycle.hard_delete(
            current_session.get(), key, args.agent_name, args.confirmation, args.registration_token
        )
