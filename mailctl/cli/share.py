"""`mailctl share export|verify|decrypt|preview|update|keygen` and `mailctl archive save|restore`.

The arguments are defined in shared/share_args.py; the work runs in `python -m maild.share`, a child
process on the same terminal, because exporting reads the database and the blob store (apsw and
maild stay out of the light client). No daemon is needed: the export snapshots the database file
through SQLite's backup API, which is consistent while a daemon writes. See docs/share.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from mailctl.cli.common import add_json_flag, add_subcommand, mailbox
from shared.share_args import add_commands

HIDDEN = ("handler", "share_command", "command", "agent", "tools")


def run(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k not in HIDDEN}
    values["command"] = args.share_command
    values["root"] = str(mailbox(args).root)
    values.setdefault("json", False)
    # The child inherits stdin/stdout/stderr: rich progress, preview's Ctrl-C and errors go straight through.
    return subprocess.call([sys.executable, "-m", "maild.share", "--args", json.dumps(values)])


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    share = add_subcommand(sub, "share", "publish a mailbox: a scrubbed, signed static bundle with a viewer",
                           "mailctl share export -o ./bundle")
    share_sub = share.add_subparsers(dest="share_group", metavar="COMMAND", required=True)
    archive = add_subcommand(sub, "archive", "save the whole mailbox losslessly, or restore a save",
                             "mailctl archive save -o backup")
    archive_sub = archive.add_subparsers(dest="archive_group", metavar="COMMAND", required=True)

    def add(name: str, text: str, example: str) -> argparse.ArgumentParser:
        group, _, leaf = name.rpartition(" ")
        child = add_subcommand(archive_sub if group == "archive" else share_sub, leaf, text, example)
        add_json_flag(child)
        child.set_defaults(handler=run, share_command=name.replace(" ", "-"))
        return child

    add_commands(add)
