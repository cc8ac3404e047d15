"""`mailctl http revoke` / `mailctl http revoked`: the HTTP bridge's deny list of JWTs, as the operator.

Calls the extended tools revoke_token and list_revoked_tokens over this mailbox's Unix socket (the
daemon refuses agents' JWTs). Does not start or configure the bridge (`mailctl serve-http`).
"""

from __future__ import annotations

import argparse

from mailctl.cli import output
from mailctl.cli.common import add_subcommand, client, print_json
from shared.errors import InvalidArgument


def cmd_revoke(args: argparse.Namespace) -> int:
    if not args.jti and not args.agent:
        raise InvalidArgument("name what to revoke: --jti ID (one token) and/or --agent NAME (all its tokens)")
    arguments = {"jti": args.jti, "agent": args.agent, "undo": args.undo,
                 **({"reason": args.reason} if args.reason else {})}
    with client(args) as conn:
        result = conn.call_tool("revoke_token", {k: v for k, v in arguments.items() if v is not None})
    if args.json:
        print_json(result)
        return 0
    done = result.get("unrevoked" if args.undo else "revoked", [])
    verb = "no longer refused" if args.undo else "refused from now on"
    for entry in done:
        print(f"{entry['kind']} {entry['value']}: {verb}")
    if args.undo and not done:
        print("nothing to undo: not revoked")
    print(f"{result['count']} revocation(s) in force")
    return 0


def cmd_revoked(args: argparse.Namespace) -> int:
    with client(args) as conn:
        result = conn.call_tool("list_revoked_tokens", {})
    if args.json:
        print_json(result)
        return 0
    view = output.View(
        title="revoked HTTP tokens" + (" (shared through Redis)" if result.get("shared") else ""),
        columns=[output.Column("kind", width=6), output.Column("value", style="cyan", width=40),
                 output.Column("since", width=22), output.Column("reason")],
        empty="no revoked tokens",
    )
    for entry in result["revoked"]:
        view.rows.append([entry["kind"], entry["value"], output.when(entry.get("revoked_ts")),
                          entry.get("reason") or ""])
    output.show(view)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "http", "The HTTP bridge's revoked tokens (start the bridge with `mailctl serve-http`).",
                       "mailctl http revoke --agent BlueLake --reason 'laptop stolen'")
    actions = p.add_subparsers(dest="http_command", metavar="ACTION", required=True)
    q = add_subcommand(actions, "revoke", "Refuse a JWT (--jti) or every JWT of an agent (--agent) from now on.",
                       "mailctl http revoke --jti 3f2a... --reason 'leaked in a CI log'")
    q.add_argument("--jti", help="the token's jti claim")
    q.add_argument("--agent", help="refuse every token whose agent claim names this agent")
    q.add_argument("--reason", help="why (shown by `mailctl http revoked`)")
    q.add_argument("--undo", action="store_true", help="lift the revocation instead")
    q.add_argument("--json", action="store_true", help="print the raw JSON result")
    q.set_defaults(handler=cmd_revoke)
    q = add_subcommand(actions, "revoked", "List the revoked tokens and agents.", "mailctl http revoked --json")
    q.add_argument("--json", action="store_true", help="print the raw JSON result")
    q.set_defaults(handler=cmd_revoked)
