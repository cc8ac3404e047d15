"""`mailctl agents`: list a project's agents (name, program, model, presence, unread, retired), and
retire or unretire one as the operator. Reads `resource://agents/<project>`; calls retire_agent and
unretire_agent. Does not register agents (`mailctl register`, `mailctl identity new`)."""

from __future__ import annotations

import argparse
import urllib.parse

from mailctl.cli import output
from mailctl.cli.common import add_subcommand, client, print_json, project_key


def cmd_list(args: argparse.Namespace) -> int:
    key = urllib.parse.quote(project_key(args), safe="")
    query = "?include_retired=true" if args.all else ""
    with client(args) as conn:
        result = conn.read_resource(f"resource://agents/{key}{query}")
    if args.json:
        print_json(result)
        return 0
    view = output.View(
        title=f"project {result['project']['slug']}",
        columns=[output.Column("agent", style="cyan", width=20), output.Column("program", width=12),
                 output.Column("model", width=14), output.Column("presence", width=24),
                 output.Column("unread", justify="right"), output.Column("state")],
        empty="no agents yet; `mailctl register --program P --model M` adds one",
    )
    for agent in result["agents"]:
        presence = "online" if agent.get("online") else f"last seen {output.when(agent.get('last_seen_ts'))}"
        view.rows.append([agent["name"], agent.get("program") or "-", agent.get("model") or "-", presence,
                          str(agent.get("unread_count", 0)), "retired" if agent.get("retired") else "active"])
        view.row_styles.append("dim" if agent.get("retired") else "green" if agent.get("online") else "")
    output.show(view)
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
