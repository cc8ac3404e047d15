"""Search and summary tools (upstream names and parameters) and the `resource://thread/{id}` view.

Thin adapters: they work out who is asking (the session's bound agent, or the operator when no
agent is bound) and hand over to maild/services/search.py and summaries.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.project_default import ProjectKey, project_of
from maild.mcp_surface.registry import Args, ResourceRegistry, ToolRegistry
from maild.services.agents import is_operator
from maild.services.messaging import parse_ts
from maild.services.search import SearchFilters, normalize_importance
from maild.services.sessions import current_session
from shared.errors import AuthenticationRequired

Query = Field(description='Words, "phrase", auth*, AND/OR/NOT, subject:x. Any text is safe.')
Limit = Field(default=20, ge=1, le=1000)
Importance = Field(default=None, description="low|normal|high|urgent (one or a list)")


class FilterArgs(Args):
    agent_filter: str | None = Field(default=None, description="Sent or received by this agent.")
    since_ts: str | None = Field(default=None, description="ISO-8601, inclusive.")
    until_ts: str | None = Field(default=None, description="ISO-8601, inclusive.")
    importance: list[str] | str | None = Importance
    thread_id: str | None = None
    order: Literal["relevance", "newest"] = "relevance"

    def filters(self) -> SearchFilters:
        return SearchFilters(
            agent=self.agent_filter or None,
            since_ts=parse_ts(self.since_ts, "since_ts"),
            until_ts=parse_ts(self.until_ts, "until_ts"),
            importance=normalize_importance(self.importance),
            thread_id=self.thread_id or None,
        )


class SearchMessagesArgs(FilterArgs):
    project_key: str | None = ProjectKey
    query: str = Query
    limit: int = Limit


class SearchMailboxArgs(FilterArgs):
    project_key: str | None = ProjectKey
    query: str = Query
    requesting_agent: str | None = None
    limit: int = Limit
    include_bodies: bool = True


class SummarizeThreadArgs(Args):
    project_key: str | None = ProjectKey
    thread_id: str = Field(description="Thread key, or the id of the thread's first message.")
    include_examples: bool = Field(default=False, description="Add up to 3 example messages.")
    llm_mode: bool = Field(default=True, description="Refine with the configured LLM if one is enabled.")
    llm_model: str | None = Field(default=None, description="litellm model name overriding LLM_DEFAULT_MODEL.")


class SummarizeThreadsArgs(Args):
    project_key: str | None = ProjectKey
    thread_ids: list[str] = Field(description="Thread keys or seed message ids.")
    llm_mode: bool = True
    llm_model: str | None = None
    per_thread_limit: int = Field(default=50, ge=1, le=500, description="Messages read per thread.")


async def viewer_for(services: Services, requesting_agent: str | None = None) -> int | None:
    """Whose mail the caller may search: its bound agent; else the operator (None) or a narrowing."""
    session = current_session.get()
    if session is not None and session.agent_id is not None:
        return session.agent_id
    if not is_operator(session):
        raise AuthenticationRequired(
            "searching mail needs an identity: call register_agent first (mailctl searches as the operator)"
        )
    if requesting_agent:
        return await services.search.agent_id(requesting_agent)
    return None


def register(tools: ToolRegistry, resources: ResourceRegistry) -> None:
    @tools.tool(core=False, category="search", read_only=True, idempotent=True)
    async def search_messages(services: Services, args: SearchMessagesArgs) -> list[dict[str, Any]]:
        """Full-text search of the project's mail you sent or received, best match first.

        Returns headers with relevance_score and a <mark> snippet; no bodies (see search_mailbox).
        """
        key = await project_of(services, args.project_key)
        found = await services.search.search(
            key, args.query, viewer=await viewer_for(services), filters=args.filters(),
            limit=args.limit, order=args.order, include_bodies=False,
        )
        keys = ("id", "subject", "importance", "ack_required", "created_ts", "thread_id", "from", "relevance_score",
                "subject_snippet")
        return [{**{k: m[k] for k in keys}, "snippet": m["body_snippet"]} for m in found]

    @tools.tool(core=True, category="search", read_only=True, idempotent=True)
    async def search_mailbox(services: Services, args: SearchMailboxArgs) -> list[dict[str, Any]]:
        """Search your project's mail, best match first, with <mark> snippets and relevance_score."""
        key = await project_of(services, args.project_key)
        return await services.search.search(
            key, args.query, viewer=await viewer_for(services, args.requesting_agent),
            filters=args.filters(), limit=args.limit, order=args.order, include_bodies=args.include_bodies,
        )

    @tools.tool(core=False, category="search", read_only=True)
    async def summarize_thread(services: Services, args: SummarizeThreadArgs) -> dict[str, Any]:
        """Summarise a thread: participants, key points, action items (open/done), mentions, code refs.

        An LLM refines it when the daemon has one configured; summary.llm_status says what happened.
        """
        key = await project_of(services, args.project_key)
        return await services.summaries.summarize_thread(
            key, args.thread_id, viewer=await viewer_for(services),
            include_examples=args.include_examples, llm_mode=args.llm_mode, llm_model=args.llm_model,
        )

    @tools.tool(core=False, category="search", read_only=True)
    async def summarize_threads(services: Services, args: SummarizeThreadsArgs) -> dict[str, Any]:
        """Summarise several threads at once, plus an aggregate of mentions, action items and key points."""
        key = await project_of(services, args.project_key)
        return await services.summaries.summarize_threads(
            key, args.thread_ids, viewer=await viewer_for(services),
            llm_mode=args.llm_mode, llm_model=args.llm_model, per_thread_limit=args.per_thread_limit,
        )
