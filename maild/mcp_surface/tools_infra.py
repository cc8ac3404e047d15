"""Infrastructure tools: `health_check` and `ensure_project`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry


class HealthCheckArgs(Args):
    pass


class EnsureProjectArgs(Args):
    human_key: str = Field(description="Repo path or project label.")


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=True, category="infrastructure", read_only=True, idempotent=True)
    async def health_check(services: Services, args: HealthCheckArgs) -> dict[str, Any]:
        """Live daemon health (database, archive queue, uptime, version). Use when a mail tool misbehaves."""
        return await services.health.check()

    @tools.tool(core=True, category="infrastructure", idempotent=True)
    async def ensure_project(services: Services, args: EnsureProjectArgs) -> dict[str, Any]:
        """Create the project if missing and return it. Idempotent: keys that slugify alike are one project."""
        return await services.projects.ensure(args.human_key)
