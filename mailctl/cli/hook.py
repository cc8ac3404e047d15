"""`mailctl hook <event>`: registered here for help and completeness; the console script sends
`mailctl hook ...` straight to `mailctl.hooks` without loading the rest of the CLI (see __main__)."""

from __future__ import annotations

import argparse

from mailctl import hooks
from mailctl.cli.common import add_subcommand


def run(args: argparse.Namespace) -> int:
    return hooks.run(args.event, getattr(args, "root", None), getattr(args, "agent", None), args.project)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "hook",
        "Run a coding client's hook: session-start (who you are + unread summary), unread (a hint when the "
        "unread count changed), edit-guard (deny edits to paths another agent reserved). Reads the client's "
        "hook JSON on stdin, prints the client's JSON answer. `mailctl integrate` installs these.",
        "mailctl hook edit-guard --agent BlueLake < pre-tool-use.json",
    )
    parser.add_argument("event", choices=hooks.EVENTS, help="session-start | unread | edit-guard")
    parser.add_argument("--project", default=None, help="project key the edit guard checks (default: the guard's)")
    parser.set_defaults(handler=run)
