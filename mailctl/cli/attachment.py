"""`mailctl attachment get` and the path handling behind `mailctl send --attach`.

The daemon resolves attachment paths against the mailbox root; a person types them relative to
their current directory, so `attach_paths` turns each into a root-relative path (or an absolute
one outside the root, which the daemon refuses unless ALLOW_ABSOLUTE_ATTACHMENT_PATHS is set).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from mailctl.cli.common import add_identity_flags, add_subcommand, print_json
from mailctl.cli.mail import operator_client
from shared.errors import InvalidArgument


def attach_paths(root: Path, files: list[str] | None) -> list[str]:
    """--attach FILE values, relative to the mailbox root when they are inside it."""
    out = []
    for name in files or []:
        path = Path(os.path.normpath(Path.cwd() / name))  # lexical: a symlink is the daemon's to judge
        try:
            out.append(str(path.relative_to(root.resolve())))
        except ValueError:
            out.append(str(path))
    return out


def cmd_get(args: argparse.Namespace) -> int:
    with operator_client(args) as conn:
        result = conn.request("resources/read", {"uri": f"resource://attachment/{args.sha256}"})
    parts = [part for part in result.get("contents", []) if "blob" in part]
    if not parts:
        raise InvalidArgument(f"attachment {args.sha256} came back without content; check the sha256")
    data = base64.b64decode(parts[0]["blob"])
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    target = Path(args.output)
    target.write_bytes(data)
    if args.json:
        print_json({"sha256": args.sha256, "media_type": parts[0].get("mimeType"), "bytes": len(data),
                    "path": str(target)})
    else:
        print(f"wrote {len(data)} bytes ({parts[0].get('mimeType')}) to {target}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_subcommand(sub, "attachment", "Fetch attachments of messages by their sha256.",
                           "mailctl attachment get 3f2a…c9 -o shot.webp")
    commands = group.add_subparsers(dest="attachment_command", metavar="COMMAND", required=True)
    p = add_subcommand(commands, "get", "Write an attachment's bytes to a file (or - for stdout).",
                       "mailctl attachment get 3f2a…c9 -o shot.webp")
    p.add_argument("sha256", help="the attachment's sha256 (from a message's attachments)")
    p.add_argument("-o", "--output", required=True, help="file to write, or - for stdout")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_get)

