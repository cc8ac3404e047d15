"""`mailctl share export|verify|decrypt|preview|update|keygen` and `mailctl archive save|restore`.

The arguments are defined in shared/share_args.py; the work runs in `python -m maild.share`, which
this process becomes (exec), because exporting reads the database and the blob store (apsw and
maild stay out of the light client). No daemon is needed: the export snapshots the database file
through SQLite's backup API, which is consistent while a daemon writes. See docs/share.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mailctl.cli.common import add_json_flag, add_subcommand, mailbox
from shared.share_args import add_commands

HIDDEN = ("handler", "share_command", "command", "agent", "tools", "share_group", "archive_command")


def run(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k not in HIDDEN}
    values["command"] = args.share_command
    values["root"] = str(mailbox(args).root)
    values.setdefault("json", False)
    # Replace this process (same pid, same terminal): rich progress, signals (preview's Ctrl-C, a
    # supervisor's SIGTERM) and errors reach maild.share directly, and no child is left behind.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "maild.share", "--args", json.dumps(values)])  # noqa: S606 - our own interpreter, no shell


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    share = add_subcommand(sub, "share", "publish a mailbox: a scrubbed, signed static bundle with a viewer",
                           "mailctl share export -o ./bundle")
    _register({"": share.add_subparsers(dest="share_group", metavar="COMMAND", required=True)})


def register_archive(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`mailctl archive save|restore`, beside archive checkout/clone (mailctl/cli/archive.py owns the group)."""
    _register({"archive": actions})


def _register(groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]]) -> None:
    """Add the commands of shared/share_args.py that belong to `groups` ("" is `share`, "archive")."""

    def add(name: str, text: str, example: str) -> argparse.ArgumentParser:
        group, _, leaf = name.rpartition(" ")
        if group not in groups:
            return argparse.ArgumentParser(add_help=False)  # another group registers it
        child = add_subcommand(groups[group], leaf, text, example)
        add_json_flag(child)
        child.set_defaults(handler=run, share_command=name.replace(" ", "-"))
        return child

    add_commands(add)
