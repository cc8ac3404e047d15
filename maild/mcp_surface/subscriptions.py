"""resources/subscribe and resources/unsubscribe for the SDK server: mail that finds the agent.

A subscription to `resource://inbox/{agent}` (the bound agent's, or another's with `?agent_token=`)
makes the daemon send `notifications/resources/updated` for that URI on the subscriber's own
connection whenever mail for the agent commits. The routing (who gets what, hang-up cleanup) lives
in services/waiting.py; this module only adapts it to the SDK's handlers and errors. Subscribing is
a connection-level act, so it is served by the SDK on every path (the lean dispatcher declines it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import ResourceRegistry, error_payload
from maild.services.sessions import Session, current_session
from shared.errors import MailError
from shared.protocol import INVALID_PARAMS

if TYPE_CHECKING:
    from mcp import types
    from mcp.server.context import ServerRequestContext

SUBSCRIBABLE = "resource://inbox/{agent}"

Handler = Callable[..., Awaitable[Any]]


def subscription_handlers(
    services: Services, resources: ResourceRegistry, in_session: Callable[[Any], AbstractAsyncContextManager[None]]
) -> tuple[Handler, Handler]:
    """The SDK handlers; `in_session(ctx)` makes a bridge request act as its HTTP identity's session."""
    from mcp import types
    from mcp.shared.exceptions import MCPError

    inbox = next(spec for spec in resources.all() if spec.template == SUBSCRIBABLE)

    async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        found = inbox.match(uri)
        if found is None:
            raise MCPError(INVALID_PARAMS, f"only {SUBSCRIBABLE} can be subscribed to, not {uri!r}", data={"uri": uri})
        session = ctx.session

        async def notify() -> None:
            await session.send_resource_updated(uri)

        try:
            async with in_session(ctx):
                mine = current_session.get()
                await services.waiters.subscribe(mine, uri, found["agent"], found.get("agent_token"), notify,
                                                 session if _over_http(mine) else None)
        except MailError as exc:
            payload = error_payload(exc)
            raise MCPError(INVALID_PARAMS, payload["message"], data=payload) from None
        return types.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        async with in_session(ctx):
            mine = current_session.get()
            services.waiters.unsubscribe(mine, str(params.uri), ctx.session if _over_http(mine) else None)
        return types.EmptyResult()

    return subscribe, unsubscribe


def _over_http(session: Session | None) -> bool:
    """A bridge identity's session, shared by its MCP sessions: subscriptions are keyed by the latter."""
    return session is not None and session.client == "http"
