"""Build the MCP `Server` (the SDK's low-level one) over the tool and resource registries.

One `Server` object serves every connection (the transport calls `server.run` per connection) and
both protocol eras. The caller's session comes from `current_session`, set by the transport.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from maild.mcp_surface import (
    resources_attachments,
    resources_mail,
    resources_tooling,
    tools_archive,
    tools_contacts,
    tools_identity,
    tools_infra,
    tools_lifecycle,
    tools_messaging,
    tools_meta,
    tools_push,
    tools_reservations,
    tools_revocations,
    tools_search,
    tools_slots,
)
from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import (
    ResourceOutput,
    ResourceRegistry,
    ToolOutput,
    ToolRegistry,
    error_payload,
    to_text,
)
from maild.mcp_surface.subscriptions import listen_handler, subscription_handlers
from maild.services.sessions import current_session
from shared import __version__
from shared.errors import MailError, NotFound
from shared.protocol import INVALID_PARAMS

if TYPE_CHECKING:
    from mcp import types
    from mcp.server import Server
    from mcp.server.context import ServerRequestContext
    from mcp.server.models import InitializationOptions

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Agent Mail: coordinate with other coding agents in this repository. Register once "
    "(register_agent), then send_message / fetch_inbox / acknowledge_message; reserve files before "
    "editing shared paths (file_reservation_paths). Inbox reads never mark mail read."
)


def build_registries() -> tuple[ToolRegistry, ResourceRegistry]:
    tools, resources = ToolRegistry(), ResourceRegistry()
    tools_infra.register(tools)
    tools_identity.register(tools)
    tools_lifecycle.register(tools)
    tools_contacts.register(tools)
    tools_messaging.register(tools)
    tools_push.register(tools)
    tools_meta.register(tools)
    tools_archive.register(tools)
    tools_reservations.register(tools, resources)
    tools_reservations.register_guard(tools)
    tools_slots.register(tools, resources)
    resources_mail.register(resources)
    resources_attachments.register(resources)
    tools_search.register(tools, resources)
    resources_tooling.register(tools, resources)
    tools_revocations.register(tools)
    return tools, resources


def tools_mode_for_request(services: Services) -> str:
    session = current_session.get()
    mode = session.tools_mode if session is not None and session.tools_mode else services.settings.tools_mode
    return "extended" if mode == "extended" else "core"


def sdk_factory(
    services: Services, tools: ToolRegistry, resources: ResourceRegistry
) -> Callable[[], tuple[Server[Any], InitializationOptions]]:
    """Build the SDK server on first use, once: importing the SDK costs most of a cold start."""
    built: list[tuple[Server[Any], InitializationOptions]] = []

    def get() -> tuple[Server[Any], InitializationOptions]:
        if not built:
            from mcp.server.lowlevel.server import NotificationOptions

            server = build_server(services, tools, resources)
            options = server.create_initialization_options(
                NotificationOptions(tools_changed=True, resources_changed=True)
            )
            built.append((server, options))
        return built[0]

    return get


def build_server(services: Services, tools: ToolRegistry, resources: ResourceRegistry) -> Server[Any]:
    from mcp import types
    from mcp.server import Server
    from mcp.shared.exceptions import MCPError

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=spec.name,
                    description=spec.description,
                    input_schema=spec.input_schema(),
                    annotations=types.ToolAnnotations(
                        read_only_hint=spec.read_only,
                        destructive_hint=False,
                        idempotent_hint=spec.idempotent,
                        open_world_hint=False,
                    ),
                )
                for spec in tools.listed(tools_mode_for_request(services))
            ]
        )

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        async with http_session(ctx):
            return await run_tool(params)

    async def run_tool(params: types.CallToolRequestParams) -> types.CallToolResult:
        if tools.get(params.name) is None:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}", data={"tool": params.name})
        try:
            result = await tools.call(services, params.name, dict(params.arguments or {}))
        except MailError as exc:
            return tool_error(exc)
        except Exception as exc:
            log.exception("tool %s failed", params.name)
            return tool_error(exc)
        structured = result.structured if isinstance(result, ToolOutput) else result
        hint = await services.waiters.unread_hint(current_session.get(), structured)
        return tool_result(result, hint)  # only with a hint: an absent _meta stays absent (exclude_unset)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        static = [spec for spec in resources.all() if "{" not in spec.template]
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=s.template, name=s.name, description=s.description, mime_type="application/json")
                for s in static
            ]
        )

    async def list_templates(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templated = [spec for spec in resources.all() if "{" in spec.template]
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=s.template, name=s.name, description=s.description, mime_type="application/json"
                )
                for s in templated
            ]
        )

    @asynccontextmanager
    async def http_session(ctx: ServerRequestContext[Any]) -> AsyncIterator[None]:
        """Requests from the HTTP bridge carry the gate's identity; act as its session."""
        identity = http_identity(ctx.request)
        if identity is None:
            yield
            return
        session = services.sessions.for_http(str(identity["subject"]), identity.get("agent"))
        await services.agents.bind_requested(session)
        token = current_session.set(session)
        try:
            yield
        finally:
            current_session.reset(token)

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            async with http_session(ctx):
                result = await resources.read(services, params.uri)
        except NotFound as exc:
            payload = error_payload(exc)
            raise MCPError(INVALID_PARAMS, payload["message"], data={"uri": params.uri, **payload}) from None
        except MailError as exc:
            payload = error_payload(exc)
            raise MCPError(INVALID_PARAMS, payload["message"], data=payload) from None
        return resource_result(params.uri, result)

    subscribe, unsubscribe = subscription_handlers(services, resources, http_session)

    server: Server[Any] = Server(
        "agent-mail",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_subscriptions_listen=listen_handler(services, resources, http_session),
    )
    # The SDK's default OpenTelemetry middleware opens a span per message even with no exporter;
    # that is a measurable share of a ~1 ms send. We do not export traces, so drop it.
    server.middleware = [m for m in server.middleware if type(m).__name__ != "OpenTelemetryMiddleware"]
    return server


def http_identity(request: Any) -> dict[str, Any] | None:
    """The identity the HTTP bridge's gate attached to this request (None for socket requests)."""
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    found = state.get("agent_mail_identity") if isinstance(state, dict) else None
    return found if isinstance(found, dict) else None


def tool_result(result: Any, meta: dict[str, Any] | None = None) -> types.CallToolResult:
    """A tool's return value as MCP content: its JSON as text (and structured), then any images;
    `meta` (the unread hint) goes in `_meta` only when there is one."""
    from mcp import types

    images: list[tuple[str, bytes]] = []
    if isinstance(result, ToolOutput):
        images, result = result.images, result.structured
    structured = result if isinstance(result, dict) else {"result": result}
    content: list[types.ContentBlock] = [types.TextContent(type="text", text=to_text(structured))]
    content += [types.ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime)
                for mime, data in images]
    if meta is not None:
        return types.CallToolResult(content=content, structured_content=structured, _meta=meta)
    return types.CallToolResult(content=content, structured_content=structured)


def resource_result(uri: str, result: Any) -> types.ReadResourceResult:
    """A resource's value as MCP contents: JSON text, then any binary parts as blobs."""
    from mcp import types

    output = result if isinstance(result, ResourceOutput) else ResourceOutput(result, [])
    contents: list[types.TextResourceContents | types.BlobResourceContents] = []
    if output.data is not None:
        contents.append(types.TextResourceContents(uri=uri, text=to_text(output.data), mime_type="application/json"))
    contents += [types.BlobResourceContents(uri=part_uri, blob=base64.b64encode(data).decode(), mime_type=mime)
                 for part_uri, mime, data in output.blobs]
    return types.ReadResourceResult(contents=contents)


def tool_error(exc: BaseException) -> types.CallToolResult:
    from mcp import types

    payload = error_payload(exc)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{payload['code']}: {payload['message']}")],
        structured_content={"error": payload},
        is_error=True,
    )
