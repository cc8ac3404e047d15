"""Mail commands for people and scripts: register, identity new, whois, send, reply, inbox, read, ack.

The CLI speaks as the operator identity `HumanOperator` (program `mailctl`), created on first use in
the project; the daemon reserves that name for the CLI. `--as NAME` (or AGENT_MAIL_NAME) acts as an
agent instead, and needs that agent's registration token (`--token` or AGENT_MAIL_TOKEN): the hello
carries it and the daemon binds the connection only if it matches. Trust model: docs/messaging.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from mailctl.cli.common import add_subcommand, mailbox, print_json
from shared.client import DaemonClient, version_note
from shared.errors import AuthenticationRequired, InvalidArgument, NotFound

OPERATOR_NAME = "HumanOperator"


def project_key(args: argparse.Namespace) -> str:
    return str(args.project or mailbox(args).root)


def acting_as(args: argparse.Namespace) -> str | None:
    """The agent this call acts as (None: the operator): --as, else AGENT_MAIL_NAME."""
    name = args.as_agent or os.environ.get("AGENT_MAIL_NAME") or None
    if name is not None and "".join(ch for ch in name if ch.isalnum()).lower() == OPERATOR_NAME.lower():
        return None
    return name


def operator_client(args: argparse.Namespace) -> DaemonClient:
    """A connection bound to the operator, or to --as NAME / AGENT_MAIL_NAME proven by its token."""
    paths = mailbox(args)
    note = version_note(paths)
    if note:
        print(f"mailctl: note: {note}", file=sys.stderr)
    hello: dict[str, Any] = {"client": "mailctl", "pid": os.getpid(), "ppid": os.getppid(), "cwd": str(Path.cwd())}
    agent = acting_as(args)
    if agent is not None:
        token = args.token or os.environ.get("AGENT_MAIL_TOKEN")
        if not token:
            source = "--as" if args.as_agent else "AGENT_MAIL_NAME"
            raise AuthenticationRequired(
                f"acting as {agent} ({source}) needs {agent}'s registration token: pass --token TOKEN or set "
                f"AGENT_MAIL_TOKEN; without {source} the CLI acts as {OPERATOR_NAME}"
            )
        hello.update(agent=agent, token=token)
    conn = DaemonClient(paths, hello=hello)
    if agent is None:
        conn.call_tool("register_agent", {"project_key": project_key(args), "program": "mailctl",
                                          "model": "human", "name": OPERATOR_NAME,
                                          "task_description": "a person at the command line"})
    return conn


def name_list(values: list[str] | None) -> list[str]:
    """Repeatable, comma-separated name options: --cc a,b --cc c -> [a, b, c]."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def read_body(body: str) -> str:
    return sys.stdin.read() if body == "-" else body


def add_identity_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="project key (default: the mailbox root path)")
    parser.add_argument("--as", dest="as_agent", metavar="NAME",
                        help="act as this agent instead of HumanOperator (default $AGENT_MAIL_NAME; needs --token)")
    parser.add_argument("--token", help="the agent's registration token (or $AGENT_MAIL_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")


def show(args: argparse.Namespace, result: Any, line: str) -> None:
    if args.json:
        print_json(result)
    else:
        print(line)


def cmd_register(args: argparse.Namespace) -> int:
    with DaemonClient(mailbox(args)) as conn:
        if args.name and not args.force:
            try:
                existing = conn.call_tool("whois", {"project_key": project_key(args), "agent_name": args.name,
                                                    "include_recent_commits": False})
            except NotFound:
                existing = None
            if existing is not None:
                raise InvalidArgument(
                    f"{existing['name']} already exists: registering it again from the CLI retires it and revokes "
                    f"its registration token (its agent would have to re-register). Pass --force to do that, or "
                    "pick another --name"
                )
        result = conn.call_tool("register_agent", {
            "project_key": project_key(args), "program": args.program, "model": args.model,
            **({"name": args.name} if args.name else {}), "task_description": args.task or "",
            **({"force_reclaim": True} if args.force else {}),
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


def cmd_identity_new(args: argparse.Namespace) -> int:
    with DaemonClient(mailbox(args)) as conn:
        conn.call_tool("ensure_project", {"human_key": project_key(args)})
        result = conn.call_tool("create_agent_identity", {
            "project_key": project_key(args), "program": args.program, "model": args.model,
            **({"name_hint": args.name_hint} if args.name_hint else {}), "task_description": args.task or "",
        })
    show(args, result, f"created {result['name']}\ntoken (shown once): {result['registration_token']}")
    return 0


def sent_line(payload: dict[str, Any]) -> str:
    return f"sent #{payload['id']} from {payload['from']} to {', '.join(payload['to'] + payload['cc'])}"


def cmd_send(args: argparse.Namespace) -> int:
    body = read_body(args.body)
    with operator_client(args) as conn:
        result = conn.call_tool("send_message", {
            "project_key": project_key(args),
            "to": name_list([args.to]),
            "subject": args.subject,
            "body_md": body,
            "cc": name_list(args.cc), "bcc": name_list(args.bcc),
            "importance": args.importance, "ack_required": args.ack,
            **({"thread_id": args.thread} if args.thread else {}),
        })
    show(args, result, sent_line(result["deliveries"][0]["payload"]))
    return 0


def cmd_reply(args: argparse.Namespace) -> int:
    body = read_body(args.body)
    with operator_client(args) as conn:
        result = conn.call_tool("reply_message", {
            "project_key": project_key(args), "message_id": args.message_id, "body_md": body,
            **({"to": name_list(args.to)} if args.to else {}),
            "cc": name_list(args.cc), "bcc": name_list(args.bcc),
        })
    show(args, result, f"{sent_line(result)} in thread {result['thread_id']}")
    return 0


def cmd_inbox(args: argparse.Namespace) -> int:
    with operator_client(args) as conn:
        result = conn.call_tool("fetch_inbox", {
            "project_key": project_key(args), "limit": args.limit, "urgent_only": args.urgent,
            "include_bodies": args.bodies, **({"since_ts": args.since} if args.since else {}),
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
    with operator_client(args) as conn:
        result = conn.call_tool(tool, {"project_key": project_key(args), "message_id": args.message_id})
    show(args, result, f"#{args.message_id} {'acknowledged' if tool == 'acknowledge_message' else 'read'}")
    return 0


def add_profile_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--program", required=True, help="the agent's client program")
    parser.add_argument("--model", required=True, help="the agent's model")
    parser.add_argument("--task", help="what the agent works on")
    parser.add_argument("--project", help="project key (default: the mailbox root path)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_identity_commands(sub)
    register_mail_commands(sub)


def register_identity_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "register", "Register an agent identity and print its one-time token.",
                       "mailctl register --program codex --model gpt-5 --name BlueLake")
    add_profile_flags(p)
    p.add_argument("--name", help="wanted name (default: a generated Adjective+Noun)")
    p.add_argument("--force", action="store_true", help="take the name even if the agent exists (revokes its token)")
    p.set_defaults(handler=cmd_register)

    group = add_subcommand(sub, "identity", "Manage agent identities (create_agent_identity).",
                           "mailctl identity new --program codex --model gpt-5")
    identity = group.add_subparsers(dest="identity_command", metavar="COMMAND", required=True)
    p = add_subcommand(identity, "new", "Create a brand-new agent identity (never reuses a name) and print its token.",
                       "mailctl identity new --program codex --model gpt-5 --name-hint BlueLake")
    add_profile_flags(p)
    p.add_argument("--name-hint", help="wanted name (default: a generated Adjective+Noun)")
    p.set_defaults(handler=cmd_identity_new)

    p = add_subcommand(sub, "whois", "Show an agent's profile and presence.", "mailctl whois BlueLake")
    p.add_argument("name", help="agent name (any case; blue-lake works)")
    p.add_argument("--project", help="project key (default: the mailbox root path)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")
    p.set_defaults(handler=cmd_whois)


def register_mail_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "send", "Send a message (as HumanOperator unless --as).",
                       "mailctl send BlueLake 'Please review' 'The auth PR is ready.' --importance high --ack")
    p.add_argument("to", help="recipient(s), comma-separated; Name@project-slug for another project")
    p.add_argument("subject", help="subject line")
    p.add_argument("body", help="markdown body, or - to read stdin")
    p.add_argument("--cc", action="append", help="cc recipient(s), comma-separated (repeatable)")
    p.add_argument("--bcc", action="append", help="bcc recipient(s), comma-separated (repeatable)")
    p.add_argument("--importance", default="normal", choices=["low", "normal", "high", "urgent"])
    p.add_argument("--ack", action="store_true", help="ask the recipients to acknowledge")
    p.add_argument("--thread", help="thread id to join, e.g. FEAT-12 or a message id")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_send)

    p = add_subcommand(sub, "reply", "Reply in a message's thread (to its sender unless --to; Re: added once).",
                       "mailctl reply 42 'Done, see commit abc123.' --cc GreenCastle")
    p.add_argument("message_id", type=int, help="the message to answer")
    p.add_argument("body", help="markdown body, or - to read stdin")
    p.add_argument("--to", action="append", help="recipient(s) instead of the original sender (repeatable)")
    p.add_argument("--cc", action="append", help="cc recipient(s), comma-separated (repeatable)")
    p.add_argument("--bcc", action="append", help="bcc recipient(s), comma-separated (repeatable)")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_reply)

    p = add_subcommand(sub, "inbox", "List your mail, newest first (never marks it read).",
                       "mailctl inbox --limit 10 --urgent --since 2026-01-01T00:00:00Z --bodies")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--urgent", action="store_true", help="only high/urgent")
    p.add_argument("--since", help="only messages strictly newer than this ISO-8601 time")
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
