"""Helpers every command group uses: resolving the mailbox and printing results."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared.client import DaemonClient, version_note
from shared.paths import MailboxPaths, resolve_root

OPERATOR_CLIENT = "mailctl"


def mailbox(args: argparse.Namespace) -> MailboxPaths:
    return MailboxPaths(resolve_root(getattr(args, "root", None)))


def client(args: argparse.Namespace) -> DaemonClient:
    paths = mailbox(args)
    note = version_note(paths)
    if note:
        print(f"mailctl: note: {note}", file=sys.stderr)
    return DaemonClient(paths)


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
