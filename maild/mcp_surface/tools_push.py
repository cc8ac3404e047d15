"""Mail that finds the agent: the `wait_for_mail` tool (a long poll woken by the sender's commit).

The waiting itself (no polling, no database connection held, hang-up and cancel safety) lives in
services/waiting.py; this module only declares the tool's arguments and description.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry
from maild.services.sessions import current_session


class WaitForMailArgs(Args):
    project_key: str = Field(description="Repo path or project label.")
    agent_name: str | None = Field(None, description="Defaults to this session's agent.")
    timeout_seconds: float = Field(60, description="1-300.")
    since_id: int | None = Field(None, description="Return mail with a larger id (default: only new mail).")
    limit: int = Field(20, ge=1, le=1000)
    include_bodies: bool = False
    registration_token: str | None = None


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=False, category="messaging", read_only=True)
    async def wait_for_mail(services: Services, args: WaitForMailArgs) -> dict[str, Any]:
        """Block until new mail for you arrives (or timeout_seconds pass: empty result, timed_out true).
        Pass the answer's last_id as since_id next time so nothing is missed between calls."""
        return await services.waiters.wait(
            current_session.get(), args.project_key, args.agent_name, args.registration_token,
            patience=args.timeout_seconds, since_id=args.since_id, limit=args.limit,
            include_bodies=args.include_bodies,
        )
