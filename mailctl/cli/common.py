"""Helpers every command group uses: resolving the mailbox, connecting as the CLI, printing JSON.

Every CLI connection opens with a `maild/hello` saying `client: mailctl`, so the daemon treats it
as the operator (or as `--as NAME` proven by its token) and words its error hints as CLI commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from shared.client import DaemonClient, version_note
from shared.errors import AuthenticationRequired
from shared.paths import MailboxPaths, fallback_note, resolve_root

OPERATOR_CLIENT = "mailctl"
OPERATOR_NAME = "HumanOperator"

_noted_user_root = False


def mailbox(args: argparse.Namespace) -> MailboxPaths:
    """The mailbox of this invocation; says once on stderr when it falls back to the user-level one."""
    global _noted_user_root  # noqa: PLW0603 - "once per invocation" is process state by nature
    root = resolve_root(getattr(args, "root", None))
    note = None if _noted_user_root else fallback_note(getattr(args, "root", None), root)
    if note is not None:
        _noted_user_root = True
        print(f"mailctl: {note}", file=sys.stderr)
    return MailboxPaths(root)


def project_key(args: argparse.Namespace) -> str:
    """`--project`, else the mailbox root's path (the project agents of this repo register under)."""
    return str(getattr(args, "project", None) or mailbox(args).root)


def acting_as(args: argparse.Namespace) -> str | None:
    """The agent this call acts as (None: the operator): --as, else AGENT_MAIL_NAME. Only commands
    that take `--as` act as an agent; the others (search, thread, whois…) always speak as the operator."""
    if not hasattr(args, "as_agent"):
        return None
    name = args.as_agent or os.environ.get("AGENT_MAIL_NAME") or None
    if name is not None and "".join(ch for ch in name if ch.isalnum()).lower() == OPERATOR_NAME.lower():
        return None
    return name


def client(args: argparse.Namespace, *, autostart: bool = True) -> DaemonClient:
    """A connection that speaks as the operator, or as --as NAME / AGENT_MAIL_NAME proven by its token.
    With --remote URL (AGENT_MAIL_REMOTE) it is the remote bridge, speaking as its token's identity."""
    remote = os.environ.get("AGENT_MAIL_REMOTE")
    if remote:
        from shared.remote import RemoteClient

        return RemoteClient(remote)
    paths = mailbox(args)
    note = version_note(paths)
    if note:
        print(f"mailctl: note: {note}", file=sys.stderr)
    hello: dict[str, Any] = {"client": OPERATOR_CLIENT, "pid": os.getpid(), "ppid": os.getppid(),
                             "cwd": str(Path.cwd())}
    agent = acting_as(args)
    if agent is not None:
        token = getattr(args, "token", None) or os.environ.get("AGENT_MAIL_TOKEN")
        if not token:
            source = "--as" if getattr(args, "as_agent", None) else "AGENT_MAIL_NAME"
            raise AuthenticationRequired(
                f"acting as {agent} ({source}) needs {agent}'s registration token: pass --token TOKEN or set "
                f"AGENT_MAIL_TOKEN; without {source} the CLI acts as {OPERATOR_NAME}"
            )
        hello.update(agent=agent, token=token)
    return DaemonClient(paths, hello=hello, autostart=autostart)


def add_identity_flags(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--project", help="project key (default: the mailbox root path)")
    parser.add_argument("--as", dest="as_agent", metavar="NAME",
                        help="act as this agent instead of HumanOperator (default $AGENT_MAIL_NAME; needs --token)")
    parser.add_argument("--token", help="the agent's registration token (or $AGENT_MAIL_TOKEN)")
    if json_flag:
        add_json_flag(parser)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, sort_keys=False)
    sys.stdout.write("\n")


def add_subcommand(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str, example: str
) -> argparse.ArgumentParser:
    """Every command has a help line and an example (a test fails otherwise)."""
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"example: {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
