"""The default `project_key` (issue 13): tools may omit it. A session bound to an agent uses that
agent's project; any other caller uses the mailbox root's path, as mailctl does. Prompts written for
upstream, which always pass it, keep working unchanged."""

from __future__ import annotations

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.services.sessions import current_session

ProjectKey = Field(None, description="Default: your project.")


async def project_of(services: Services, project_key: str | None) -> str:
    if project_key is not None:  # an explicit empty key is still refused downstream
        return project_key
    session = current_session.get()
    if session is not None and session.agent_id is not None:
        found = await services.agents.project_key_of(session.agent_id)
        if found is not None:
            return found
    return str(services.archive_path.parent.parent)
