"""Resource subscriptions for the SDK server, both eras: mail that finds the agent.

2025-era `resources/subscribe`/`unsubscribe`, and the 2026-07-28 era's `subscriptions/listen`
stream (whose frames only the SDK's ListenHandler writes; we authorise the URIs first).
A subscription to `resource://inbox/{agent}` (the bound agent's, or another's with `?agent_token=`)
makes the daemon send `notifications/resources/updated` for that URI on the subscriber's own
connection whenever mail for the agent commits. The routing (who gets what, hang-up cleanup) lives
in services/waiting.py; this module only adapts it to the SDK's handlers and errors. Subscribing and
listening are connection-level acts, so the SDK serves them on every path (the lean dispatcher
declines them).
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
MAX_LISTENERS = 1024  # open subscriptions/listen streams per daemon; more are refused

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


def listen_handler(
    services: Services, resources: ResourceRegistry, in_session: Callable[[Any], AbstractAsyncContextManager[None]]
) -> Handler:
    """The SDK handler for `subscriptions/listen`: each requested inbox URI is authorised exactly as
    `resources/subscribe` is (all or none), then the stream gets ResourceUpdated for it until the
    client ends the listen or hangs up. The SDK's shared bus would let any stream ask for any URI,
    so every stream gets its own bus, fed only by the waiters router's notifications for its URIs."""
    from mcp import types
    from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated
    from mcp.shared.exceptions import MCPError

    inbox = next(spec for spec in resources.all() if spec.template == SUBSCRIBABLE)
    open_streams: set[object] = set()

    async def listen(
        ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        wanted = params.notifications
        uris = list(dict.fromkeys(wanted.resource_subscriptions or ()))
        for uri in uris:
            if inbox.match(uri) is None:
                raise MCPError(INVALID_PARAMS, f"only {SUBSCRIBABLE} can be listened to, not {uri!r}",
                               data={"uri": uri})
        if len(open_streams) >= MAX_LISTENERS:
            raise MCPError(INVALID_PARAMS, f"{MAX_LISTENERS} listen streams are already open; end one first",
                           data={"limit": MAX_LISTENERS})
        # List changes are never published (the tool and resource lists are fixed while the daemon
        # runs), so the ack honours only the inbox URIs rather than promising what never comes.
        only_inboxes = params.model_copy(update={"notifications": types.SubscriptionFilter(
            resource_subscriptions=uris or None)})
        bus = InMemorySubscriptionBus()  # also the key of this stream's subscriptions in the router
        stream = ListenHandler(bus, max_subscriptions=1)
        ender = _EndAtHangUp(stream)
        mine: Session | None = None
        subscribed: list[str] = []
        open_streams.add(bus)
        try:
            async with in_session(ctx):
                mine = current_session.get()
                for uri in uris:
                    found = inbox.match(uri)
                    assert found is not None  # matched above

                    async def notify(uri: str = uri) -> None:
                        await bus.publish(ResourceUpdated(uri=uri))

                    try:
                        await services.waiters.subscribe(mine, uri, found["agent"], found.get("agent_token"),
                                                         notify, bus)
                    except MailError as exc:
                        payload = error_payload(exc)
                        raise MCPError(INVALID_PARAMS, payload["message"], data={"uri": uri, **payload}) from None
                    subscribed.append(uri)
            if mine is not None:
                # The socket transport answers every request before it lets a closed connection go,
                # and a listen is answered only when its stream ends: end it when the client hangs up.
                mine.waits.add(ender)
                if mine.hung_up:
                    return types.SubscriptionsListenResult()
            result: types.SubscriptionsListenResult = await stream(ctx, only_inboxes)
            return result
        finally:
            for uri in subscribed:
                services.waiters.unsubscribe(mine, uri, bus)
            if mine is not None:
                mine.waits.discard(ender)
            open_streams.discard(bus)

    return listen


class _EndAtHangUp:
    """Sits in the session's `waits`, which Sessions.hang_up wakes: ends a listen stream gracefully."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def wake(self) -> None:
        self._stream.close()


def _over_http(session: Session | None) -> bool:
    """A bridge identity's session, shared by its MCP sessions: subscriptions are keyed by the latter."""
    return session is not None and session.client == "http"
