"""Mail resources (upstream URIs). Agent views accept `?project=&limit=&since_ts=&agent_token=`."""

from __future__ import annotations

from typing import Any

from maild.mcp_surface import resources_attachments
from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import ResourceRegistry
from maild.services.mail_views import to_bool
from maild.services.sessions import current_session


def register(resources: ResourceRegistry) -> None:
    @resources.resource("resource://projects", "projects")
    async def projects(services: Services) -> Any:
        """All projects in this mailbox, in creation order."""
        return await services.views.projects()

    @resources.resource("resource://project/{slug}", "project")
    async def project(services: Services, slug: str) -> Any:
        """One project with its active agents and its sibling projects (score, rationale, status)."""
        found = await services.views.project(slug)
        return {**found, "siblings": await services.siblings.for_project(found["id"])}

    @resources.resource("resource://agents/{project}", "agents")
    async def agents(services: Services, project: str, include_retired: str | None = None) -> Any:
        """Active agents of a project with unread counts and presence; ?include_retired=true adds retired ones."""
        return await services.views.agents(project, to_bool(include_retired, "include_retired"))

    def mailbox(box: str, doc: str) -> None:
        async def view(services: Services, agent: str, **params: Any) -> Any:
            return await services.views.mailbox(current_session.get(), agent, params, box=box)

        view.__doc__ = doc
        # Declared parameters (for the registry's unknown-parameter check).
        view.__signature__ = _signature(  # type: ignore[attr-defined]
            ["project", "limit", "since_ts", "include_bodies", "urgent_only", "ttl_minutes", "ttl_seconds",
             "agent_token"]
        )
        top = ("inbox", "outbox", "mailbox", "mailbox-with-commits")
        template = f"resource://{box}/{{agent}}" if box in top else f"resource://views/{box}/{{agent}}"
        resources.resource(template, box)(view)

    mailbox("inbox", "An agent's inbox, newest first (never marks read). ?project=&limit=20&since_ts=")
    mailbox("outbox", "Messages an agent sent, newest first, with recipients. ?project=&limit=20")
    mailbox("urgent-unread", "High/urgent messages not yet read. ?project=&limit=20")
    mailbox("ack-required", "Messages awaiting your acknowledgement. ?project=&limit=20")
    mailbox("ack-overdue", "Acknowledgements pending longer than ttl_minutes (default 60). ?project=")
    mailbox("acks-stale", "Acknowledgements pending longer than ttl_seconds (default ACK_TTL_SECONDS), with "
            "read_at, age_seconds and what the ack scanner did (escalation). ?project=&ttl_seconds=&limit=20")
    mailbox("mailbox", "An agent's inbox with each message's archive_status (committed, pending, disabled) "
            "and the archive's head commit. ?project=&limit=20")
    mailbox("mailbox-with-commits", "An agent's inbox with the archive commit holding each message "
            "(commit: hexsha, summary, authored_ts; null while still pending). ?project=&limit=20")

    @resources.resource("resource://views/acks/{project}", "acks")
    async def acks(services: Services, project: str, state: str | None = None, agent: str | None = None,
                   ttl_seconds: str | None = None, limit: str | None = None) -> Any:
        """Who owes which acknowledgement in a project (one row per message and recipient, oldest first).
        ?state=pending|overdue (older than ttl_seconds, default ACK_TTL_SECONDS)&agent=&limit=200"""
        return await services.views.acks(current_session.get(), project, {
            "state": state, "agent": agent, "ttl_seconds": ttl_seconds, "limit": limit})

    @resources.resource("resource://message/{message_id}", "message")
    async def message(
        services: Services, message_id: str, project: str | None = None, include_attachments: str | None = None
    ) -> Any:
        """One message with body and recipients (any agent of its project may read it; bcc names stay private).
        ?include_attachments=true adds its images as blob parts."""
        found = await services.views.message(current_session.get(), message_id)
        if to_bool(include_attachments, "include_attachments"):
            return await resources_attachments.with_images(services, found)
        return found

    @resources.resource("resource://thread/{thread_id*}", "thread")
    async def thread(
        services: Services, thread_id: str, project: str | None = None, include_bodies: str | None = None
    ) -> Any:
        """A thread, oldest first (by thread id or the seed message id), as far as you may read it."""
        return await services.views.thread(current_session.get(), thread_id, to_bool(include_bodies, "include_bodies"))


def _signature(extra: list[str]) -> Any:
    import inspect

    params = [
        inspect.Parameter("services", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("agent", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ] + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in extra]
    return inspect.Signature(params)
