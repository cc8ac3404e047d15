"""`archive_doctor`: the DB <-> archive check behind `mailctl doctor`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.archive.blob_check import check_blobs
from maild.archive.doctor import diagnose
from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry


class ArchiveDoctorArgs(Args):
    fix: bool = Field(False, description="Re-queue archive writes for messages the archive lacks; restore "
                      "missing or corrupt attachment blobs from the archive and delete orphan blobs.")


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=False, category="infrastructure")
    async def archive_doctor(services: Services, args: ArchiveDoctorArgs) -> dict[str, Any]:
        """Check that every message has its archive file and vice versa, and attachment blobs against the
        database; report the archive queue lag."""
        report = await diagnose(services.store, services.archive_path, fix=args.fix)
        if services.attachments is not None:
            blobs = await check_blobs(services.store, services.attachments.blobs, services.archive_path, fix=args.fix)
            report.update(blobs=blobs, ok=report["ok"] and blobs["ok"])
        return {**report, "archive": (await services.health.check())["archive"]}
