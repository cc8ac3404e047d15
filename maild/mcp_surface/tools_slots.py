"""Build slot tools (extended set) and the `resource://build_slots/{project}` resource: thin adapters
over maild/services/build_slots.py, with upstream's parameter names (including `branch`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.project_default import ProjectKey, project_of
from maild.mcp_surface.registry import Args, ResourceRegistry, ToolRegistry
from maild.services.mail_views import to_bool
from maild.services.sessions import current_session


class SlotArgs(Args):
    project_key: str | None = ProjectKey
    slot: str = Field(description="Slot name, e.g. frontend-build.")
    agent_name: str | None = None
    branch: str | None = Field(None, description="Your branch (default main); one lease per agent and branch.")
    registration_token: str | None = None


class AcquireArgs(SlotArgs):
    ttl_seconds: int = Field(3600, description="60..604800")
    exclusive: bool = True


class RenewArgs(SlotArgs):
    extend_seconds: int = 1800


def register(tools: ToolRegistry, resources: ResourceRegistry) -> None:
    @tools.tool(core=False, category="coordination")
    async def acquire_build_slot(services: Services, args: AcquireArgs) -> dict[str, Any]:
        """Lease a build slot before a build/test run (exclusive by default). On conflict nothing is
        granted: granted=false and conflicts name holder, branch and expiry."""
        key = await project_of(services, args.project_key)
        return await services.build_slots.acquire(
            current_session.get(), key, args.agent_name, args.registration_token, args.slot, args.branch,
            args.ttl_seconds, args.exclusive,
        )

    @tools.tool(core=False, category="coordination")
    async def renew_build_slot(services: Services, args: RenewArgs) -> dict[str, Any]:
        """Extend your lease to now + extend_seconds (never shortens it). SLOT_NOT_HELD if it ended."""
        key = await project_of(services, args.project_key)
        return await services.build_slots.renew(
            current_session.get(), key, args.agent_name, args.registration_token, args.slot, args.branch,
            args.extend_seconds,
        )

    @tools.tool(core=False, category="coordination", idempotent=True)
    async def release_build_slot(services: Services, args: SlotArgs) -> dict[str, Any]:
        """Release your lease on a build slot (released=false if you held none)."""
        key = await project_of(services, args.project_key)
        return await services.build_slots.release(
            current_session.get(), key, args.agent_name, args.registration_token, args.slot, args.branch,
        )

    @resources.resource("resource://build_slots/{project}", "build_slots")
    async def build_slots(services: Services, project: str, active_only: str | None = None) -> Any:
        """A project's build slot leases (expired ones marked); ?active_only=true for live ones only."""
        return await services.build_slots.listing(project, to_bool(active_only, "active_only"))
