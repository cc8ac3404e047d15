"""`mailctl guard install|uninstall|check`: the git hook that enforces exclusive reservations."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mailctl.cli import output
from mailctl.cli.common import add_json_flag, add_subcommand, mailbox, print_json
from shared import guard_install


def repo_root() -> Path:
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ValueError("run this inside a git repository")
    return Path(out.stdout.strip())


def install(args: argparse.Namespace) -> int:
    result = guard_install.install(repo_root(), mailbox(args).root, prepush=args.prepush, project_key=args.project)
    if args.json:
        print_json(result)
        return 0
    for hook in result["hooks"]:
        output.say(f"installed {hook}", "green")
    output.say(f"commits touching paths another agent reserved exclusively in project {result['project_key']} are "
               "now refused; set AGENT_MAIL_NAME so the guard knows who you are")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    result = guard_install.uninstall(repo_root())
    if args.json:
        print_json(result)
        return 0
    for hook in result["removed"]:
        output.say(f"removed {hook}", "green")
    if not result["removed"]:
        output.say("no agent-mail guard hook was installed here")
    return 0


def check(args: argparse.Namespace) -> int:
    from mailctl import guard

    stdin = "" if sys.stdin.isatty() else sys.stdin.read()
    return guard.check(mailbox(args).root, repo_root(), args.hook, stdin, project_key=args.project)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(sub, "guard", "Install the git hook that blocks commits on paths others reserved.",
                            "mailctl guard install --prepush")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = add_subcommand(actions, "install", "Install the pre-commit (and --prepush) chain runner.",
                       "mailctl guard install --prepush")
    p.add_argument("--prepush", action="store_true", help="also install the pre-push hook")
    add_json_flag(p)
    p.add_argument("--project", default=None, metavar="KEY",
                   help="project whose reservations apply (recorded as git config agentmail.project; "
                        "default: the repository's top-level path)")
    p.set_defaults(handler=install)
    p = add_subcommand(actions, "uninstall", "Remove our hooks, restoring any previous ones.",
                       "mailctl guard uninstall")
    add_json_flag(p)
    p.set_defaults(handler=uninstall)
    p = add_subcommand(actions, "check", "Check staged (or pushed) paths now; what the hook runs.",
                       "mailctl guard check   # as $AGENT_MAIL_NAME")
    p.add_argument("--hook", default="pre-commit", choices=list(guard_install.HOOKS),
                   help="which hook's paths to check")
    p.add_argument("--project", default=None, metavar="KEY",
                   help="check against this project (default: git config agentmail.project, else the top-level path)")
    p.set_defaults(handler=check)
