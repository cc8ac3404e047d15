"""Mail commands for people and scripts: register, whois, send, inbox, read, ack.

The CLI speaks as a named operator identity (default `HumanOperator`, program `mailctl`), created
on first use in the project; `--as NAME --token TOKEN` (or AGENT_MAIL_NAME / AGENT_MAIL_TOKEN)
acts as another agent, which, like everywhere else, needs that agent's registration token.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mailctl.cli.common import add_subcommand, mailbox, print_json
from shared.client import DaemonClient, version_note

OPERATOR_NAME = "HumanOperator"


def project_key(args: argparse.Namespace) -> str:
    return str(args.project or mailbox(args).root)


def operator_client(args: argparse.Namespace) -> tuple[DaemonClient, dict[str, Any]]:
    """A connection bound to the operator (or to --as NAME with its token)."""
    paths = mailbox(args)
    note = version_note(paths)
    if note:
        print(f"mailctl: note: {note}")
    # AGENT_MAIL_NAME is the agent's own environment (as for the shim), so it binds the session;
    # `--as` is an explicit request to act as someone else and goes through the token check.
    own = None if args.as_agent else os.environ.get("AGENT_MAIL_NAME") or OPERATOR_NAME
    conn = DaemonClient(paths, hello={"client": "mailctl", "pid": os.getpid(), "ppid": os.getppid(),
                                      "cwd": str(Path.cwd()), "agent": own})
    if own == OPERATOR_NAME:
        conn.call_tool("register_agent", {"project_key": project_key(args), "program": "mailctl",
                                          "model": "human", "name": OPERATOR_NAME,
                                          "task_description": "a person at the command line"})
    extra: dict[str, Any] = {}
    if args.as_agent:
        extra = {"token": args.token or os.environ.get("AGENT_MAIL_TOKEN") or ""}
    return conn, extra


def add_identity_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="project key (default: the mailbox root path)")
    parser.add_argument("--as", dest="as_agent", metavar="NAME", help="act as this agent (needs --token)")
    parser.add_argument("--token", help="the agent's registration token (or $AGENT_MAIL_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")


def show(args: argparse.Namespace, result: Any, line: str) -> None:
    if args.json:
        print_json(result)
    else:
        print(line)


def cmd_register(args: argparse.Namespace) -> int:
    with DaemonClient(mailbox(args)) as conn:
        result = conn.call_tool("register_agent", {
            "project_key": project_key(args), "program": args.program, "model": args.model,
            **({"name": args.name} if args.name else {}), "task_description": args.task or "",
        })
    token = result.get("registration_token")
    show(args, result, f"registered {result['name']}" + (f"\ntoken (shown once): {token}" if token else ""))
    return 0


def cmd_whois(args: argparse.Namespace) -> int:
    with DaemonClient(mailbox(args)) as conn:
        result = conn.call_tool("whois", {"project_key": project_key(args), "agent_name": args.name})
    state = "online" if result["online"] else f"last seen {result['last_seen_ts']}"
    show(args, result, f"{result['name']} ({result['program']}, {result['model']}) — {state}\n"
                       f"{result['task_description']}".rstrip())
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    conn, extra = operator_client(args)
    body = args.body
    if body == "-":
        import sys

        body = sys.stdin.read()
    with conn:
        result = conn.call_tool("send_message", {
            "project_key": project_key(args),
            "to": [name.strip() for name in args.to.split(",")],
            "subject": args.subject,
            "body_md": body,
            "cc": args.cc or [], "importance": args.importance, "ack_required": args.ack,
            **({"thread_id": args.thread} if args.thread else {}),
            **({"sender_name": args.as_agent, "sender_token": extra["token"]} if extra else {}),
        })
    payload = result["deliveries"][0]["payload"]
    show(args, result, f"sent #{payload['id']} from {payload['from']} to {', '.join(payload['to'] + payload['cc'])}")
    return 0


def cmd_inbox(args: argparse.Namespace) -> int:
    conn, extra = operator_client(args)
    with conn:
        result = conn.call_tool("fetch_inbox", {
            "project_key": project_key(args), "limit": args.limit, "urgent_only": args.urgent,
            "include_bodies": args.bodies,
            **({"agent_name": args.as_agent, "registration_token": extra["token"]} if extra else {}),
        })
    if args.json:
        print_json(result)
        return 0
    print(f"{result['agent']}: {result['unread_count']} unread")
    for item in result["result"]:
        flags = ("*" if item["read_ts"] is None else " ") + ("!" if item["importance"] in ("high", "urgent") else " ")
        print(f"{flags} #{item['id']:<6} {item['created_ts'][:19]}  {item['from']:<20} {item['subject']}")
        if args.bodies:
            print("    " + item["body_md"].replace("\n", "\n    "))
    return 0


def mark(args: argparse.Namespace, tool: str) -> int:
    conn, extra = operator_client(args)
    with conn:
        result = conn.call_tool(tool, {
            "project_key": project_key(args), "message_id": args.message_id,
            **({"agent_name": args.as_agent, "registration_token": extra["token"]} if extra else {}),
        })
    show(args, result, f"#{args.message_id} {'acknowledged' if tool == 'acknowledge_message' else 'read'}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "register", "Register an agent identity and print its one-time token.",
                       "mailctl register --program codex --model gpt-5 --name BlueLake")
    p.add_argument("--program", required=True, help="the agent's client program")
    p.add_argument("--model", required=True, help="the agent's model")
    p.add_argument("--name", help="wanted name (default: a generated Adjective+Noun)")
    p.add_argument("--task", help="what the agent works on")
    p.add_argument("--project", help="project key (default: the mailbox root path)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")
    p.set_defaults(handler=cmd_register)

    p = add_subcommand(sub, "whois", "Show an agent's profile and presence.", "mailctl whois BlueLake")
    p.add_argument("name", help="agent name (any case; blue-lake works)")
    p.add_argument("--project", help="project key (default: the mailbox root path)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")
    p.set_defaults(handler=cmd_whois)

    p = add_subcommand(sub, "send", "Send a message (as HumanOperator unless --as).",
                       "mailctl send BlueLake 'Please review' 'The auth PR is ready.' --importance high")
    p.add_argument("to", help="recipient(s), comma-separated")
    p.add_argument("subject", help="subject line")
    p.add_argument("body", help="markdown body, or - to read stdin")
    p.add_argument("--cc", action="append", help="cc recipient (repeatable)")
    p.add_argument("--importance", default="normal", choices=["low", "normal", "high", "urgent"])
    p.add_argument("--ack", action="store_true", help="ask the recipients to acknowledge")
    p.add_argument("--thread", help="thread id to join")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_send, to_list=True)

    p = add_subcommand(sub, "inbox", "List your mail, newest first (never marks it read).",
                       "mailctl inbox --limit 10 --bodies")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--urgent", action="store_true", help="only high/urgent")
    p.add_argument("--bodies", action="store_true", help="show message bodies")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_inbox)

    p = add_subcommand(sub, "read", "Mark a message read.", "mailctl read 42")
    p.add_argument("message_id", type=int, help="message id")
    add_identity_flags(p)
    p.set_defaults(handler=lambda a: mark(a, "mark_message_read"))

    p = add_subcommand(sub, "ack", "Acknowledge a message (marks it read too).", "mailctl ack 42")
    p.add_argument("message_id", type=int, help="message id")
    add_identity_flags(p)
    p.set_defaults(handler=lambda a: mark(a, "acknowledge_message"))
