"""The `mailctl` command line: one module per command group, one top-level error handler.

Errors from anywhere become one stderr line `mailctl: CODE: message` and an exit code:
0 ok, 1 a tool/domain error, 2 usage, 3 daemon unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from mailctl.cli import agents, call, daemon, doctor, guard, http, mail, mcp, search
from shared import __version__
from shared.errors import EXIT_DAEMON, EXIT_TOOL_ERROR, EXIT_USAGE, DaemonUnavailable, MailError

# Each command group registers its subcommands; keep this list in README order.
GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    daemon.register,
    mail.register,
    agents.register,
    mcp.register,
    doctor.register,
    guard.register,
    http.register,
    search.register,
    call.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailctl",
        description="Agent Mail client: talk to the maild daemon of this repository (started on demand).",
        epilog="example: mailctl call health_check",
    )
    parser.add_argument("--root", help="mailbox root (default: $AGENT_MAIL_ROOT, else the git top-level)")
    parser.add_argument("--version", action="version", version=f"mailctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in GROUPS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except DaemonUnavailable as exc:
        print(f"mailctl: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_DAEMON
    except MailError as exc:
        print(f"mailctl: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    except ValueError as exc:
        print(f"mailctl: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code
