"""Lazy loading (the fork's MCP_TOOLS_MODE=core): two meta tools reach the extended tools.

In core mode `tools/list` shows the core tools plus these two, which keeps the schema cost an
agent pays every turn small; `extended` mode lists everything.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry
from shared.errors import NotFound


class ListExtendedToolsArgs(Args):
    pass


class CallExtendedToolArgs(Args):
    tool_name: str = Field(description="An extended tool's name, from list_extended_tools.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="That tool's arguments.")


def register(tools: ToolRegistry) -> None:
    def extended() -> list[Any]:
        return [spec for spec in tools.all() if not spec.core]

    @tools.tool(core=True, category="meta", read_only=True, idempotent=True)
    async def list_extended_tools(services: Services, args: ListExtendedToolsArgs) -> dict[str, Any]:
        """List the extended tools (reservations, search, summaries, acks, macros…) callable through
        call_extended_tool, with their categories and descriptions."""
        specs = extended()
        by_category: dict[str, list[str]] = {}
        for spec in specs:
            by_category.setdefault(spec.category, []).append(spec.name)
        return {
            "total": len(specs),
            "by_category": by_category,
            "tools": [
                {"name": s.name, "category": s.category, "description": s.description,
                 "input_schema": s.input_schema()}
                for s in specs
            ],
        }

    @tools.tool(core=True, category="meta")
    async def call_extended_tool(services: Services, args: CallExtendedToolArgs) -> Any:
        """Call an extended tool by name with its arguments; returns that tool's result unchanged."""
        if args.tool_name not in {spec.name for spec in extended()}:
            raise NotFound(
                f"Unknown extended tool: {args.tool_name}. Use list_extended_tools to see the available ones",
                data={"tool_name": args.tool_name},
            )
        return await tools.call(services, args.tool_name, args.arguments)
