"""`mailctl call TOOL [k=v ...]`, `mailctl tools [NAME]` and `mailctl resource [URI]`: the raw MCP surface.

`call` prints a tool's structured result as JSON (it is the scripting interface). It fills in
`project_key` with the mailbox's project when the tool takes one and none was given, acts as
`--as NAME --token T` (or AGENT_MAIL_NAME / AGENT_MAIL_TOKEN) like the mail commands, and answers
an unknown tool name with the closest real ones.
"""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_identity_flags, add_json_flag, add_subcommand, client, print_json, project_key
from shared.client import DaemonClient
from shared.errors import InvalidArgument, NotFound


def parse_pairs(pairs: list[str], json_args: str | None) -> dict[str, Any]:
    """`k=v` pairs; a value that parses as JSON (numbers, true, lists) is taken as JSON."""
    arguments: dict[str, Any] = {}
    if json_args:
        try:
            loaded = json.loads(json_args)
        except ValueError as exc:
            raise InvalidArgument(f"--json must be a JSON object: {exc}") from None
        if not isinstance(loaded, dict):
            raise InvalidArgument("--json must be a JSON object such as '{\"human_key\": \"/repo\"}'")
        arguments.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"expected key=value, got {pair!r}")
        try:
            arguments[key] = json.loads(raw)
        except ValueError:
            arguments[key] = raw
    return arguments


def catalog(conn: DaemonClient) -> list[dict[str, Any]]:
    """Every tool the daemon has, core and extended, each with `core`, `category` and `inputSchema`."""
    listed = conn.request("tools/list").get("tools", [])
    extended = {t["name"]: t for t in conn.call_tool("list_extended_tools").get("tools", [])}
    tools = []
    for tool in listed:
        if tool["name"] not in extended:
            tools.append({**tool, "core": True, "category": ""})
    for name, tool in extended.items():
        tools.append({"name": name, "description": tool["description"], "inputSchema": tool["input_schema"],
                      "core": False, "category": tool["category"]})
    return sorted(tools, key=lambda t: str(t["name"]))


def unknown_tool(name: str, names: list[str]) -> NotFound:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return NotFound(f"unknown tool {name!r}; {hint}`mailctl tools` lists them all", data={"tool": name})


def run(args: argparse.Namespace) -> int:
    arguments = parse_pairs(args.pairs, args.json_args)
    with client(args) as conn:
        tools = {t["name"]: t for t in catalog(conn)}
        spec = tools.get(args.tool)
        if spec is None:
            raise unknown_tool(args.tool, list(tools))
        if "project_key" in spec["inputSchema"].get("properties", {}) and "project_key" not in arguments:
            arguments["project_key"] = project_key(args)
        print_json(conn.call_tool(args.tool, arguments))
    return 0


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _parameters(schema: dict[str, Any]) -> list[list[str]]:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type", "any")
        kind = "|".join(kind) if isinstance(kind, list) else str(kind)
        rows.append([name + ("" if name in required else "?"), kind, _first_line(prop.get("description", ""))])
    return rows


def list_tools(args: argparse.Namespace) -> int:
    with client(args) as conn:
        tools = catalog(conn)
    if args.name:
        found = next((t for t in tools if t["name"] == args.name), None)
        if found is None:
            raise unknown_tool(args.name, [t["name"] for t in tools])
        if args.json:
            print_json(found)
            return 0
        output.say(f"{found['name']} ({'core' if found['core'] else 'extended'})", "bold")
        output.say(found["description"])
        output.show(output.View(columns=[output.Column("parameter", style="cyan", width=24),
                                         output.Column("type", width=16), output.Column("description")],
                                rows=_parameters(found["inputSchema"]), empty="(no parameters)",
                                notes=["? optional; project_key defaults to this mailbox's project in `mailctl call`"]))
        return 0
    if args.json:
        print_json(tools)
        return 0
    output.show(output.View(
        columns=[output.Column("tool", style="cyan", width=30, no_wrap=True), output.Column("set", width=8),
                 output.Column("what it does")],
        rows=[[t["name"], "core" if t["core"] else "extended", _first_line(t["description"])] for t in tools],
        notes=[f"{len(tools)} tools; `mailctl tools NAME` shows one tool's parameters, "
               "`mailctl call NAME k=v` runs it"],
    ))
    return 0


def read_resource(args: argparse.Namespace) -> int:
    with client(args) as conn:
        if args.uri:
            print_json(conn.read_resource(args.uri))
            return 0
        static = conn.request("resources/list").get("resources", [])
        templates = conn.request("resources/templates/list").get("resourceTemplates", [])
    rows = [[r["uri"], _first_line(r.get("description", ""))] for r in static]
    rows += [[t["uriTemplate"], _first_line(t.get("description", ""))] for t in templates]
    if args.json:
        print_json({"resources": static, "resourceTemplates": templates})
        return 0
    output.show(output.View(columns=[output.Column("resource", style="cyan", width=44, no_wrap=True),
                                     output.Column("what it holds")], rows=rows,
                            notes=["read one with `mailctl resource URI`, e.g. mailctl resource resource://projects"]))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub,
        "call",
        "Call a tool by name and print its result as JSON (exit 1 with the error code on failure). "
        "project_key defaults to this mailbox's project.",
        "mailctl call ensure_project human_key=/home/me/app",
    )
    parser.add_argument("tool", help="tool name, e.g. health_check (`mailctl tools` lists them)")
    parser.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="arguments; values parse as JSON if they can")
    parser.add_argument("--json", dest="json_args", metavar="ARGS", help="arguments as one JSON object")
    add_identity_flags(parser, json_flag=False)
    parser.set_defaults(handler=run)

    parser = add_subcommand(sub, "tools", "List every tool the daemon offers (core and extended), or one tool's "
                            "parameters.", "mailctl tools send_message")
    parser.add_argument("name", nargs="?", help="show this tool's parameters")
    add_json_flag(parser)
    parser.set_defaults(handler=list_tools)

    parser = add_subcommand(sub, "resource", "Read an MCP resource and print it as JSON; without a URI, list "
                            "the resources.", "mailctl resource resource://agents/my-app")
    parser.add_argument("uri", nargs="?", help="resource URI, e.g. resource://projects")
    add_json_flag(parser)
    parser.set_defaults(handler=read_resource)
