"""The `mailctl` command line: one module per command group, one top-level error handler.

Errors from anywhere become one stderr line `mailctl: CODE: message` and an exit code:
0 ok, 1 a tool/domain error, 2 usage, 3 daemon unreachable, 141 output closed early (`| head`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mailctl.cli import (
    acks,
    agents,
    archive,
    attachment,
    call,
    completion,
    daemon,
    doctor,
    guard,
    hook,
    http,
    http_tokens,
    integrate,
    mail,
    mcp,
    reservations,
    search,
    share,
    slots,
    stats,
    watch,
    web,
)
from shared import __version__
from shared.errors import EXIT_DAEMON, EXIT_TOOL_ERROR, EXIT_USAGE, DaemonUnavailable, MailError
from shared.paths import USER_ROOT_ALIASES

# Each command group registers its subcommands; keep this list in README order.
GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    daemon.register,
    mail.register,
    attachment.register,
    agents.register,
    acks.register,
    reservations.register,
    watch.register,
    slots.register,
    mcp.register,
    doctor.register,
    stats.register,
    archive.register,
    guard.register,
    http.register,
    http_tokens.register,
    web.register,
    search.register,
    share.register,
    call.register,
    integrate.register,
    hook.register,
    completion.register,
]

# Accepted before *and* after the subcommand (editors write `mailctl mcp --root DIR`).
GLOBAL_OPTIONS = ("--root", "--agent", "--tools", "--remote", "--cacert")

# What a shell reports for a process killed by SIGPIPE (128 + 13), as `git log | head` exits.
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailctl",
        description="Agent Mail client: talk to the maild daemon of this repository (started on demand).",
        epilog="example: mailctl call health_check",
    )
    parser.add_argument("--root", help="mailbox root (default: $AGENT_MAIL_ROOT, else the git top-level)")
    parser.add_argument("--agent", help="act as this agent (same as $AGENT_MAIL_NAME)")
    parser.add_argument("--tools", choices=["core", "extended"], help="MCP tool set (same as $MCP_TOOLS_MODE)")
    parser.add_argument("--remote", metavar="URL", help="talk to a remote maild through its HTTP bridge "
                        "(same as $AGENT_MAIL_REMOTE; token in $AGENT_MAIL_HTTP_TOKEN)")
    parser.add_argument("--cacert", metavar="PEM", help="CA bundle that signs the bridge's TLS certificate "
                        "(same as $AGENT_MAIL_CACERT; default: the system's)")
    parser.add_argument("--version", action="version", version=f"mailctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in GROUPS:
        register(sub)
    accept_global_options(parser, parser)
    return parser


def accept_global_options(top: argparse.ArgumentParser, parser: argparse.ArgumentParser) -> None:
    """Give every subcommand the global options too. Their defaults are SUPPRESS, so a value given
    before the subcommand is not overwritten by the subcommand's default."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            for option in GLOBAL_OPTIONS:
                existing = child._option_string_actions.get(option)
                if existing is not None:
                    existing.default = argparse.SUPPRESS
                    continue
                model = top._option_string_actions[option]
                child.add_argument(option, default=argparse.SUPPRESS, choices=model.choices,
                                   help=argparse.SUPPRESS)
            accept_global_options(top, child)


def apply_global_options(args: argparse.Namespace) -> None:
    """`--root` must name an existing directory; `--agent`/`--tools` stand for their environment variables
    (AGENT_MAIL_NAME, MCP_TOOLS_MODE), which the commands and the hooks they start read."""
    root = getattr(args, "root", None)
    if root and root not in USER_ROOT_ALIASES and not Path(root).expanduser().is_dir():
        raise ValueError(f"--root {root}: no such directory; create it first (mkdir -p {root}) or fix the path")
    if getattr(args, "agent", None):
        os.environ["AGENT_MAIL_NAME"] = args.agent
    if getattr(args, "tools", None):
        os.environ["MCP_TOOLS_MODE"] = args.tools
    if getattr(args, "remote", None):
        os.environ["AGENT_MAIL_REMOTE"] = args.remote
    if getattr(args, "cacert", None):
        os.environ["AGENT_MAIL_CACERT"] = args.cacert


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # in the try: `mailctl --help | head -3` closes the pipe too
        apply_global_options(args)
        code: int = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader that went away (`| head`) shows up here
    except BrokenPipeError:
        # Nobody reads any more: say nothing, and point stdout at /dev/null so that the interpreter's
        # own flush at exit does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
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
