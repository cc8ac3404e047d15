"""Mail commands for people and scripts: register, identity new, whois, send, reply, inbox, show,
read, ack.

The CLI speaks as the operator identity `HumanOperator` (program `mailctl`), created on first use in
the project; the daemon reserves that name for the CLI. `--as NAME` (or AGENT_MAIL_NAME) acts as an
agent instead, and needs that agent's registration token (`--token` or AGENT_MAIL_TOKEN): the hello
carries it and the daemon binds the connection only if it matches. Trust model: docs/messaging.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import (
    OPERATOR_NAME,
    acting_as,
    add_identity_flags,
    add_json_flag,
    add_subcommand,
    client,
    mailbox,
    print_json,
    project_key,
)
from shared.client import DaemonClient
from shared.errors import InvalidArgument, NotFound

INBOX_LEGEND = "● unread   ! high/urgent   ack: ? requested, ✓ acknowledged"


def operator_client(args: argparse.Namespace) -> DaemonClient:
    """A CLI connection whose operator identity exists in the project (registered on first use)."""
    conn = client(args)
    if acting_as(args) is None and not os.environ.get("AGENT_MAIL_REMOTE"):  # remote: the token's identity
        try:
            conn.call_tool("register_agent", {"project_key": project_key(args), "program": "mailctl",
                                              "model": "human", "name": OPERATOR_NAME,
                                              "task_description": "a person at the command line"})
        except BaseException:
            conn.close()
            raise
    return conn


def name_list(values: list[str] | None) -> list[str]:
    """Repeatable, comma-separated name options: --cc a,b --cc c -> [a, b, c]."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def read_body(body: str) -> str:
    return sys.stdin.read() if body == "-" else body


def show(args: argparse.Namespace, result: Any, line: str, style: str = "green") -> None:
    if args.json:
        print_json(result)
    else:
        output.say(line, style)


def cmd_register(args: argparse.Namespace) -> int:
    with client(args) as conn:
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
    with client(args) as conn:
        result = conn.call_tool("whois", {"project_key": project_key(args), "agent_name": args.name})
    if args.json:
        print_json(result)
        return 0
    state = "online" if result["online"] else f"last seen {output.when(result['last_seen_ts'])}"
    facts = [("presence", state)]
    if result.get("task_description"):
        facts.append(("task", result["task_description"]))
    output.print_block(f"{result['name']} ({result['program']}, {result['model']})", facts)
    return 0


def cmd_identity_new(args: argparse.Namespace) -> int:
    with client(args) as conn:
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
            **attachments(args),
        })
    show(args, result, sent_line(result["deliveries"][0]["payload"]))
    for warning in result.get("warnings", []):
        print(f"mailctl: warning: {warning}", file=sys.stderr)
    return 0


def attachments(args: argparse.Namespace) -> dict[str, Any]:
    """--attach FILE (repeatable) and --no-convert, as send_message arguments."""
    if not args.attach:
        return {}
    from mailctl.cli.attachment import attach_paths

    paths = list(dict.fromkeys(attach_paths(mailbox(args).root, args.attach)))
    return {"attachment_paths": paths, **({"convert_images": False} if args.no_convert else {})}


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


def _ack_mark(item: dict[str, Any]) -> str:
    if item.get("ack_ts"):
        return "✓"
    return "?" if item.get("ack_required") else ""


def cmd_inbox(args: argparse.Namespace) -> int:
    with operator_client(args) as conn:
        result = conn.call_tool("fetch_inbox", {
            "project_key": project_key(args), "limit": args.limit, "urgent_only": args.urgent,
            "include_bodies": args.bodies, **({"since_ts": args.since} if args.since else {}),
        })
    if args.json:
        print_json(result)
        return 0
    items = result["result"]
    if not output.is_tty():
        # Script-friendly and stable: flags (`*` unread, `!` high/urgent), id, time, sender, subject.
        print(f"{result['agent']}: {result['unread_count']} unread")
        for item in items:
            flags = ("*" if item["read_ts"] is None else " ") + ("!" if item["importance"] in ("high", "urgent")
                                                                 else " ")
            print(f"{flags} #{item['id']:<6} {item['created_ts'][:19]}  {item['from']:<20} {item['subject']}")
            if args.bodies:
                print("    " + item["body_md"].replace("\n", "\n    "))
        return 0
    view = output.View(
        title=f"{result['agent']}: {result['unread_count']} unread",
        columns=[output.Column("", style="bold yellow", no_wrap=True), output.Column("#", justify="right"),
                 output.Column("when (UTC)", no_wrap=True), output.Column("from", style="cyan"),
                 output.Column("subject"), output.Column("thread", style="dim"),
                 output.Column("ack", justify="center")],
        empty="no mail",
        notes=[INBOX_LEGEND] if items else [],
    )
    for item in items:
        urgent = item["importance"] in ("high", "urgent")
        mark = ("●" if item["read_ts"] is None else " ") + ("!" if urgent else " ")
        subject = item["subject"] + (("\n" + item["body_md"]) if args.bodies and item.get("body_md") else "")
        view.rows.append([mark, str(item["id"]), output.when(item["created_ts"]), item["from"], subject,
                          item.get("thread_id") or "", _ack_mark(item)])
        view.row_styles.append(("bold " if item["read_ts"] is None else "") + ("red" if urgent else ""))
    output.show(view)
    return 0


def message_facts(message: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [("from", message["from"]), ("to", ", ".join(message.get("to") or []) or "-")]
    for kind in ("cc", "bcc"):
        if message.get(kind):
            facts.append((kind, ", ".join(message[kind])))
    facts.append(("date", output.when(message["created_ts"]) + " UTC"))
    if message.get("thread_id"):
        facts.append(("thread", str(message["thread_id"])))
    extras = [message["importance"]] if message.get("importance") not in (None, "normal") else []
    if message.get("ack_required"):
        extras.append("ack requested")
    if extras:
        facts.append(("flags", ", ".join(extras)))
    return facts


def cmd_show(args: argparse.Namespace) -> int:
    with client(args) as conn:
        message = conn.read_resource(f"resource://message/{args.message_id}")
    if args.json:
        print_json(message)
        return 0
    output.print_block(f"#{message['id']}  {message['subject']}", message_facts(message), message.get("body_md", ""))
    return 0


def mark(args: argparse.Namespace, tool: str) -> int:
    acknowledge = tool == "acknowledge_message"
    with operator_client(args) as conn:
        result = conn.call_tool(tool, {"project_key": project_key(args), "message_id": args.message_id})
        message = conn.read_resource(f"resource://message/{args.message_id}")
    if args.json:
        print_json({**result, "message": {k: v for k, v in message.items() if k != "body_md"}})
        return 0
    verb = "acknowledged" if acknowledge else "marked read"
    stamp = result.get("acknowledged_at") if acknowledge else result.get("read_at")
    output.say(f"{verb} #{message['id']} {message['subject']!r} from {message['from']} "
               f"({output.when(message['created_ts'])}); {'ack' if acknowledge else 'read'} time {stamp}", "green")
    return 0


def add_profile_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--program", required=True, help="the agent's client program")
    parser.add_argument("--model", required=True, help="the agent's model")
    parser.add_argument("--task", help="what the agent works on")
    parser.add_argument("--project", help="project key (default: the mailbox root path)")
    add_json_flag(parser)


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
    add_json_flag(p)
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
    p.add_argument("--attach", action="append", metavar="FILE",
                   help="attach a file inside the repository (repeatable); images become WebP")
    p.add_argument("--no-convert", action="store_true", help="store attached images as they are")
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

    p = add_subcommand(sub, "show", "Print one message in full: headers, then its body exactly as sent "
                       "(never marks it read).", "mailctl show 42")
    p.add_argument("message_id", type=int, help="message id")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_show)

    p = add_subcommand(sub, "read", "Mark a message read and say which one it was.", "mailctl read 42")
    p.add_argument("message_id", type=int, help="message id")
    add_identity_flags(p)
    p.set_defaults(handler=lambda a: mark(a, "mark_message_read"))

    p = add_subcommand(sub, "ack", "Acknowledge a message (marks it read too).", "mailctl ack 42")
    p.add_argument("message_id", type=int, help="message id")
    add_identity_flags(p)
    p.set_defaults(handler=lambda a: mark(a, "acknowledge_message"))
