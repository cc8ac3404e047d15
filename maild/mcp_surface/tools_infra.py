"""Infrastructure tools: `health_check`, `ensure_project` and `update_project_sibling`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry


class HealthCheckArgs(Args):
    pass


class EnsureProjectArgs(Args):
    human_key: str = Field(description="Repo path or project label.")


class UpdateProjectSiblingArgs(Args):
    project_key: str = Field(description="Repo path or project label.")
    other_project: str = Field(description="The sibling's key or slug.")
    status: Literal["confirmed", "dismissed", "suggested"] = Field(description="suggested undoes a decision.")


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=True, category="infrastructure", read_only=True, idempotent=True)
    async def health_check(services: Services, args: HealthCheckArgs) -> dict[str, Any]:
        """Live daemon health (database, archive queue, uptime, version). Use when a mail tool misbehaves."""
        return await services.health.check()

    @tools.tool(core=True, category="infrastructure", idempotent=True)
    async def ensure_project(services: Services, args: EnsureProjectArgs) -> dict[str, Any]:
        """Create the project if missing and return it. Idempotent: keys that slugify alike are one project."""
        return await services.projects.ensure(args.human_key)

    @tools.tool(core=False, category="infrastructure", idempotent=True)
    async def update_project_sibling(services: Services, args: UpdateProjectSiblingArgs) -> dict[str, Any]:
        """Confirm or dismiss a sibling project suggested in resource://project/{slug} (either side)."""
        return await services.siblings.update(args.project_key, args.other_project, args.status)
