"""`mailctl acks`: who owes which acknowledgement in this project: every pending one, or only those
overdue past ACK_TTL_SECONDS, with what the daemon's ack scanner did about each (docs/messaging.md).

Reads `resource://views/acks/<project>` as the operator, who sees all of the project's mail (with
--remote, as the token's agent, who sees what MESSAGE_VISIBILITY gives it). It acknowledges nothing:
`mailctl ack ID --as NAME` does.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_json_flag, add_subcommand, client, print_json, project_key

ESCALATED = {"message": "reminded", "file_reservation": "inbox leased", "log": "logged", "skipped": "not escalated"}


def age(seconds: int) -> str:
    """45 s, 12 min, 3 h, 2 d: enough to see who is late, in a narrow column."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit == "min" and seconds >= size):
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def state_of(item: dict[str, Any]) -> str:
    words = ["overdue" if item["overdue"] else "pending"]
    if item.get("read_at"):
        words.append("read")
    if item.get("escalation"):
        words.append(ESCALATED.get(item["escalation"]["action"], item["escalation"]["action"]))
    return ", ".join(words)


def cmd_acks(args: argparse.Namespace) -> int:
    key = urllib.parse.quote(project_key(args), safe="")
    query: dict[str, Any] = {"state": args.state, "limit": args.limit}
    agent = getattr(args, "agent", None)  # the global option: here it picks whose acks to list
    if agent:
        query["agent"] = agent
    if args.ttl is not None:
        query["ttl_seconds"] = args.ttl
    with client(args) as conn:
        result = conn.read_resource(f"resource://views/acks/{key}?{urllib.parse.urlencode(query)}")
    if args.json:
        print_json(result)
        return 0
    items = result["acks"]
    whose = f" owed by {agent}" if agent else ""
    view = output.View(
        title=f"{result['count']} {result['state']} acknowledgement(s){whose} in {result['project']}",
        columns=[output.Column("#", justify="right", width=6), output.Column("sent (UTC)", no_wrap=True, width=17),
                 output.Column("age", justify="right", width=7), output.Column("from", style="cyan", width=16),
                 output.Column("owed by", style="bold", width=16), output.Column("subject", width=32),
                 output.Column("state")],
        empty="nobody owes an acknowledgement",
        notes=[f"overdue: older than {age(result['ttl_seconds'])} (ACK_TTL_SECONDS or --ttl); "
               "`mailctl ack ID --as NAME --token=T` acknowledges"] if items else [],
    )
    for item in items:
        view.rows.append([f"#{item['message_id']}", output.when(item["created_ts"]), age(item["age_seconds"]),
                          item["from"], item["recipient"], item["subject"], state_of(item)])
        view.row_styles.append("red" if item["overdue"] else "")
    output.show(view)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "acks", "List who owes an acknowledgement: pending (all) or overdue (past the deadline).",
                       "mailctl acks overdue --agent GreenCastle --json")
    p.add_argument("state", nargs="?", default="pending", choices=["pending", "overdue"],
                   help="pending: every unacknowledged ack request; overdue: only those older than the deadline")
    p.add_argument("--agent", metavar="NAME", help="only what this agent owes")
    p.add_argument("--ttl", type=int, metavar="SECONDS", help="the deadline (default: the daemon's ACK_TTL_SECONDS)")
    p.add_argument("--limit", type=int, default=200, help="at most this many rows (default 200)")
    p.add_argument("--project", help="project key (default: the mailbox root path)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_acks)
