"""Attachment resources: `resource://attachment/{sha256}` (the bytes, as MCP blob content), and the
image parts a message or an inbox read adds when asked with `include_attachments`.

Thin adapters over maild/services/attachments.py, which decides who may read what.
"""

from __future__ import annotations

from typing import Any

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import ResourceOutput, ResourceRegistry
from maild.services.sessions import current_session
from shared.errors import InvalidArgument


def register(resources: ResourceRegistry) -> None:
    @resources.resource("resource://attachment/{sha256}", "attachment")
    async def attachment(services: Services, sha256: str) -> Any:
        """An attachment's bytes (blob content with its media type), for anyone who may read a message
        carrying it. The sha256 comes from a message's `attachments`."""
        media_type, data = await attachments_of(services).read_blob(current_session.get(), sha256)
        return ResourceOutput(None, [(f"resource://attachment/{sha256.strip().lower()}", media_type, data)])


def attachments_of(services: Services) -> Any:
    if services.attachments is None:
        raise InvalidArgument("attachments are disabled in this daemon")
    return services.attachments


async def with_images(services: Services, message: dict[str, Any]) -> ResourceOutput:
    """A message resource plus one blob part per image it carries (a multimodal client shows them)."""
    images = await attachments_of(services).images_for([message])
    return ResourceOutput(message, [(f"resource://attachment/{sha}", mime, data) for sha, mime, data in images])
