"""`archive_doctor`: the DB <-> archive check behind `mailctl doctor`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.archive.doctor import diagnose
from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry


class ArchiveDoctorArgs(Args):
    fix: bool = Field(False, description="Re-queue archive writes for messages the archive lacks.")


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=False, category="infrastructure")
    async def archive_doctor(services: Services, args: ArchiveDoctorArgs) -> dict[str, Any]:
        """Check that every message has its archive file and vice versa; report the archive queue lag."""
        report = await diagnose(services.store, services.archive_path, fix=args.fix)
        return {**report, "archive": (await services.health.check())["archive"]}
