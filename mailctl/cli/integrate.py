"""`mailctl integrate`: one command that gives coding clients Agent Mail (MCP server, agent, hooks).

The work is in `mailctl.integrations` (engine: agents and the record; clients: each client's
files; configfile: careful edits). This module only parses arguments and prints outcomes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mailctl.cli.common import add_subcommand, mailbox, print_json
from mailctl.integrations import blurb, engine
from mailctl.integrations.clients import CLIENTS, Client, lookup
from shared.errors import InvalidArgument

STATUS_WORDS = {"written": "configured", "unchanged": "already configured, nothing changed",
                "removed": "removed", "not-integrated": "not integrated, nothing to remove",
                "would-write": "would change (dry run)", "would-remove": "would remove (dry run)"}


def chosen(args: argparse.Namespace, home: Path) -> list[Client]:
    if args.all and args.clients:
        raise InvalidArgument("give CLIENT names or --all, not both")
    if args.clients:
        return list(dict.fromkeys(lookup(name) for name in args.clients))
    if not args.all:
        raise InvalidArgument(f"name the clients to set up ({', '.join(CLIENTS)}) or use --all for every "
                              "installed one; `mailctl integrate status` shows what is installed")
    if args.remove:
        return engine.integrated_clients(mailbox(args))
    return [client for client in CLIENTS.values() if client.detected(home)]


def run(args: argparse.Namespace) -> int:
    home = Path.home()
    if args.blurb:
        print(blurb.section(), end="")
        return 0
    if args.write_blurb:
        changed = blurb.insert(Path(args.write_blurb))
        print(f"{args.write_blurb}: {'Agent Mail section written' if changed else 'already up to date'}")
        return 0
    if args.clients == ["status"]:
        return show_status(args, home)
    clients = chosen(args, home)
    paths = mailbox(args)
    if args.remove:
        outcomes = engine.remove(paths, clients, dry_run=args.dry_run, home=home)
    else:
        outcomes = engine.integrate(paths, clients, scope=args.scope, agent_name=args.agent_name,
                                    dry_run=args.dry_run, home=home)
    if args.json:
        print_json([o.to_dict() for o in outcomes])
        return 0
    if not outcomes:
        print("no client to set up: none detected (name one, e.g. `mailctl integrate claude-code`)")
    for o in outcomes:
        who = f" as {o.agent}" if o.agent and o.status != "not-integrated" else ""
        print(f"{o.title}{who} ({o.scope} scope): {STATUS_WORDS[o.status]}")
        for path in o.files:
            print(f"  {path}")
        for backup in o.backups:
            print(f"  backup: {backup}")
        for note in o.notes:
            print(f"  note: {note}")
        if args.dry_run and o.diff:
            print(o.diff, end="" if o.diff.endswith("\n") else "\n")
    return 0


def show_status(args: argparse.Namespace, home: Path) -> int:
    rows = engine.status(mailbox(args), home)
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        state = (f"integrated as {row['agent']} ({row['scope']} scope)" if row["integrated"]
                 else "installed, not integrated" if row["detected"] else "not detected")
        print(f"{row['client']:<12} {state}")
        for problem in row["problems"]:
            print(f"  problem: {problem}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "integrate",
        "Set up coding clients in one command: each gets the agent-mail MCP server (absolute mailctl path), its "
        "own agent and token, and hooks where it supports them (session start, unread hint, edit guard). "
        "Idempotent; merges into existing configs with a backup; --remove undoes only what it added. "
        f"Clients: {', '.join(CLIENTS)}. `mailctl integrate status` shows what is set up.",
        "mailctl integrate claude-code codex --dry-run",
    )
    parser.add_argument("clients", nargs="*", metavar="CLIENT", help="clients to set up, or `status`")
    parser.add_argument("--all", action="store_true", help="every detected client (with --remove: every integrated)")
    parser.add_argument("--agent-name", metavar="NAME", help="the agent name for the one CLIENT (default: generated)")
    parser.add_argument("--scope", choices=["project", "user"], default="project",
                        help="project files (default) or the user's config; clients with no project config use user")
    parser.add_argument("--dry-run", action="store_true", help="print the diff; write nothing, register nobody")
    parser.add_argument("--remove", action="store_true", help="remove what integrate added")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--blurb", action="store_true", help="print the AGENTS.md / CLAUDE.md section and exit")
    parser.add_argument("--write-blurb", metavar="FILE",
                        help="insert that section into FILE (idempotent, between markers)")
    parser.set_defaults(handler=run)
