"""`python -m maild.share …`: the share and archive commands that `mailctl share|archive` run.

This lives on the daemon side because exporting reads the database (apsw) and the blob store, which
mailctl must never import (docs/share.md). mailctl parses the arguments (shared/share_args.py) and
runs this module with `--args JSON`, on the same terminal, so progress and errors reach the user
directly. Run by hand it parses a command line itself. Errors print one line
`mailctl: CODE: message` and exit 1, as every mailctl command does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from maild.share import commands
from shared.errors import EXIT_TOOL_ERROR, MailError
from shared.share_args import add_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m maild.share",
                                     description="Share a mailbox as a static, signed bundle.")
    parser.add_argument("--root", help="mailbox root (default: $AGENT_MAIL_ROOT, else the git top-level)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON, no progress display")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, text: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name.replace(" ", "-"), help=text, description=text, epilog=f"example: {example}")

    add_commands(add)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    if argv[:1] == ["--args"]:  # from mailctl: its parsed arguments as JSON
        return argparse.Namespace(**json.loads(argv[1]))
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        result: dict[str, Any] = commands.run(args)
    except MailError as exc:
        print(f"mailctl: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
