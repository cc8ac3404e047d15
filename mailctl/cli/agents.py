"""`mailctl agents`: list a project's agents (name, program, model, presence, unread, retired), and
retire or unretire one as the operator. Reads `resource://agents/<project>`; calls retire_agent and
unretire_agent. Does not register agents (`mailctl register`, `mailctl identity new`)."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from mailctl.cli.common import add_subcommand, client, print_json, project_key


def _rows(agents: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["NAME", "PROGRAM", "MODEL", "PRESENCE", "UNREAD", "STATE"]]
    for a in agents:
        presence = "online" if a.get("online") else f"last seen {a.get('last_seen_ts') or '-'}"
        rows.append([a["name"], a["program"] or "-", a["model"] or "-", presence, str(a.get("unread_count", 0)),
                     "retired" if a.get("retired") else "active"])
    return rows


def table(agents: list[dict[str, Any]]) -> str:
    rows = _rows(agents)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def cmd_list(args: argparse.Namespace) -> int:
    key = urllib.parse.quote(project_key(args), safe="")
    query = "?include_retired=true" if args.all else ""
    with client(args) as conn:
        result = conn.read_resource(f"resource://agents/{key}{query}")
    if args.json:
        print_json(result)
    elif not result["agents"]:
        print("no agents yet (register one: mailctl register --program P --model M)")
    else:
        print(table(result["agents"]))
    return 0


def _lifecycle(args: argparse.Namespace, tool: str, verb: str) -> int:
    with client(args) as conn:  # the operator: it may retire and unretire any agent
        result = conn.call_tool(tool, {"project_key": project_key(args), "agent_name": args.name})
    if args.json:
        print_json(result)
    else:
        extra = f" ({result['released_reservations']} reservation(s) released)" if result.get(
            "released_reservations") else ""
        print(f"{verb} {result['agent_name']}{extra}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "agents", "List the project's agents; retire or unretire one.",
                       "mailctl agents --all")
    p.add_argument("--all", action="store_true", help="include retired agents")
    p.add_argument("--project", help="project key (default: the mailbox root path)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")
    p.set_defaults(handler=cmd_list)
    actions = p.add_subparsers(dest="agents_command", metavar="ACTION", required=False)
    for name, tool, verb, text in (
        ("retire", "retire_agent", "retired", "Retire an agent: it keeps its mail, its name and leases are freed."),
        ("unretire", "unretire_agent", "unretired", "Bring a retired agent back under its name."),
    ):
        q = add_subcommand(actions, name, text, f"mailctl agents {name} BlueLake")
        q.add_argument("name", help="the agent's name")
        q.add_argument("--project", help="project key (default: the mailbox root path)")
        q.add_argument("--json", action="store_true", help="print the raw JSON result")
        q.set_defaults(handler=lambda a, t=tool, v=verb: _lifecycle(a, t, v))
