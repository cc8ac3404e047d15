"""Tooling resources (upstream §2): what tools exist, how they are called, how they are doing.

`resource://tooling/directory`, `tooling/schemas`, `tooling/metrics`, `tooling/recent/{window_seconds}`,
`tooling/locks`, `tooling/capabilities/{agent}` and `resource://config/environment`. Every view is
derived from the tool registry and the live daemon (no hand-kept lists that drift from the code);
the figures come from maild/services/metrics.py, secrets are redacted by maild/services/environment.py.
"""

from __future__ import annotations

from typing import Any

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import ResourceRegistry, ToolRegistry, ToolSpec
from maild.services import environment, locks
from maild.services.mail_views import to_int
from maild.store import utcnow
from shared.config import csv

CLUSTERS = {
    "infrastructure": "Infrastructure & Workspace Setup",
    "identity": "Identity & Directory",
    "contacts": "Contacts",
    "messaging": "Messaging Lifecycle",
    "search": "Search & Summaries",
    "file_reservations": "File Reservations",
    "workflow_macros": "Workflow Macros",
    "meta": "Tool Discovery",
}
# Workflows as tool sequences; a step naming a tool that is not registered is dropped, not invented.
PLAYBOOKS = [
    ("start a session", "Check the daemon, take an identity and read what is waiting.",
     ["health_check", "register_agent", "fetch_inbox"]),
    ("answer mail", "Read, reply and acknowledge.", ["fetch_inbox", "reply_message", "acknowledge_message"]),
    ("edit shared files", "Reserve before editing, tell the others, release when done.",
     ["file_reservation_paths", "send_message", "release_file_reservations"]),
    ("catch up on a thread", "Find it, summarise it, then reply.", ["search_mailbox", "summarize_thread",
                                                                    "reply_message"]),
    ("wait for an answer", "Send, then block until mail arrives.", ["send_message", "wait_for_mail"]),
]
METRICS_URI = "resource://tooling/metrics"
MAX_WINDOW_SECONDS = 30 * 24 * 3600


def _type_of(schema: dict[str, Any]) -> str:
    """A parameter's type in a line: `string`, `integer`, `string|array`, `low|normal|high|urgent`."""
    if "enum" in schema:
        return "|".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind)
    if isinstance(kind, str):
        if kind == "array" and isinstance(schema.get("items"), dict) and "type" in schema["items"]:
            return f"array[{_type_of(schema['items'])}]"
        return kind
    options = schema.get("anyOf")
    if isinstance(options, list):
        return "|".join(_type_of(option) for option in options if isinstance(option, dict))
    return "any"


def _parameters(spec: ToolSpec) -> dict[str, Any]:
    schema = spec.input_schema()
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    return {
        "required": {name: _type_of(p) for name, p in properties.items() if name in required},
        "optional": {name: _type_of(p) for name, p in properties.items() if name not in required},
    }


def _summary(description: str) -> str:
    first = description.split("\n\n", 1)[0].replace("\n", " ")
    end = first.find(". ")
    return first if end < 0 else first[:end + 1]


def register(tools: ToolRegistry, resources: ResourceRegistry) -> None:
    # Building every tool's JSON Schema costs ~30-100 ms (pydantic); the registry is complete once
    # the daemon serves, so each tool's parameter summary is made once.
    summaries: dict[str, dict[str, Any]] = {}

    def parameters(spec: ToolSpec) -> dict[str, Any]:
        found = summaries.get(spec.name)
        if found is None:
            found = summaries[spec.name] = _parameters(spec)
        return found

    def category_of() -> dict[str, str]:
        return {spec.name: spec.category for spec in tools.all()}

    @resources.resource("resource://tooling/directory", "tooling-directory")
    async def directory(services: Services) -> Any:
        """Tools grouped by cluster (summary, required parameters, core or extended, call counts), playbooks."""
        calls = {row["name"]: row["calls"] for row in services.metrics.tools()}
        clusters: dict[str, list[dict[str, Any]]] = {}
        for spec in tools.all():
            clusters.setdefault(spec.category, []).append({
                "name": spec.name,
                "summary": _summary(spec.description),
                "core": spec.core,
                "read_only": spec.read_only,
                "idempotent": spec.idempotent,
                "required": sorted(parameters(spec)["required"]),
                "calls": calls.get(spec.name, 0),
            })
        known = {spec.name for spec in tools.all()}
        return {
            "clusters": [{"name": name, "title": CLUSTERS.get(name, name.replace("_", " ").title()), "tools": entries}
                         for name, entries in sorted(clusters.items())],
            "playbooks": [{"name": name, "when": when, "steps": [s for s in steps if s in known]}
                          for name, when, steps in PLAYBOOKS],
            "total": len(known),
            "core_mode_note": "in core mode, reach extended tools through call_extended_tool",
            "metrics_uri": METRICS_URI,
            "schemas_uri": "resource://tooling/schemas",
        }

    @resources.resource("resource://tooling/schemas", "tooling-schemas")
    async def schemas(services: Services) -> Any:
        """Every tool's parameters in a line each: required and optional names with their types."""
        return {"tools": {spec.name: {"core": spec.core, **parameters(spec)} for spec in tools.all()},
                "full_schemas": "tools/list (or list_extended_tools in core mode)"}

    @resources.resource("resource://tooling/metrics", "tooling-metrics")
    async def metrics(services: Services) -> Any:
        """Per tool: calls, errors, p50/p95/max latency (kept across daemon restarts), busiest first."""
        categories = category_of()
        rows = [{**row, "cluster": categories.get(row["name"], "unknown")} for row in services.metrics.tools()]
        return {"generated_at": utcnow(), "totals": services.metrics.summary(), "tools": rows,
                "recording": services.metrics.statistics()}

    @resources.resource("resource://tooling/recent/{window_seconds}", "tooling-recent")
    async def recent(services: Services, window_seconds: str, agent: str | None = None,
                     project: str | None = None) -> Any:
        """Who called which tool in the last window_seconds, newest first (never arguments). ?agent=&project="""
        window = to_int(window_seconds, "window_seconds", 300, 1, MAX_WINDOW_SECONDS)
        categories = category_of()
        entries = await services.metrics.describe_recent(window, agent or None, project or None)
        for entry in entries:
            entry["cluster"] = categories.get(entry["tool"], "unknown")
        return {"window_seconds": window, "count": len(entries), "capacity": services.metrics.statistics()["capacity"],
                "entries": entries}

    @resources.resource("resource://tooling/locks", "tooling-locks")
    async def lock_files(services: Services) -> Any:
        """The daemon's lock files (instance, spawn, status, socket, archive git locks): holder pid, alive or stale."""
        return locks.report(services.paths)

    @resources.resource("resource://tooling/capabilities/{agent}", "tooling-capabilities")
    async def capabilities(services: Services, agent: str, project: str | None = None) -> Any:
        """What an agent may do: tool clusters and tools, the HTTP reader role's tools, and the token rule."""
        profile = await services.agents.profile(agent, project or None)
        by_cluster: dict[str, list[str]] = {}
        for spec in tools.all():
            by_cluster.setdefault(spec.category, []).append(spec.name)
        readers = sorted({s.name for s in tools.all() if s.read_only}
                         | set(csv(services.settings.http_rbac_readonly_tools)))
        return {
            "agent": profile["name"],
            "project": profile["project_slug"],
            "active": profile["is_active"],
            "online": profile["online"],
            "contact_policy": profile["contact_policy"],
            "attachments_policy": profile["attachments_policy"],
            "capabilities": sorted(by_cluster),
            "tools": by_cluster,
            "http_reader_tools": readers,
            "rules": [
                "every registered agent may call every tool; there is no per-agent allow list",
                "acting as another agent needs that agent's registration token",
                "over HTTP a reader role may call only http_reader_tools",
            ],
        }

    @resources.resource("resource://config/environment", "config-environment")
    async def config_environment(services: Services) -> Any:
        """The daemon's effective settings and paths; tokens, secrets, API keys and URL credentials redacted."""
        return environment.describe(services.settings, services.paths)
