"""`mailctl archive clone URL DIR` and `mailctl archive checkout DIR`: readable working copies of the archive
(`archive save` / `archive restore`, the lossless share preset, are registered by mailctl/cli/share.py).

The archive itself is a bare repository (.mcp_mail/archive) that only maild writes; people browse
a working copy instead: `checkout` makes (or fast-forwards) one from this mailbox's archive,
`clone` makes one from a mirror on a git server (`archive_remote`). Both run the `git` command;
they never write to the archive or the mirror.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from mailctl.cli import output, share
from mailctl.cli.common import add_json_flag, add_subcommand, mailbox, print_json
from shared.errors import InvalidArgument, NotFound, StorageError


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except OSError as exc:
        raise StorageError(f"cannot run git ({exc}); install git") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.strip().splitlines()[-2:]) or f"exit status {done.returncode}"
        raise StorageError(f"git {args[0]} failed: {detail}")
    return done.stdout


def working_copy(source: str, target: Path) -> str:
    """Clone `source` into `target`, or fast-forward `target` when it is already a clone of it."""
    if (target / ".git").is_dir():
        _git("-C", str(target), "pull", "-q", "--ff-only", source, "main")
        return "updated"
    if target.exists() and any(target.iterdir()):
        raise InvalidArgument(f"{target} exists and is not empty; choose a new directory")
    _git("clone", "-q", "--branch", "main", source, str(target))
    return "created"


def _head(target: Path) -> str:
    return _git("-C", str(target), "rev-parse", "HEAD").strip()


def cmd_checkout(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    if not (paths.archive / "HEAD").exists():
        raise NotFound(f"no archive at {paths.archive} yet; it appears after the first message")
    target = Path(args.dir).expanduser().resolve()
    what = working_copy(str(paths.archive), target)
    if args.json:
        print_json({"action": what, "dir": str(target), "source": str(paths.archive), "head": _head(target)})
        return 0
    output.say(f"{what} {target} from {paths.archive} (read it; `mailctl archive checkout {args.dir}` again "
               "brings it up to date)", "green")
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    target = Path(args.dir).expanduser().resolve()
    what = working_copy(args.url, target)
    if args.json:
        print_json({"action": what, "dir": str(target), "source": args.url, "head": _head(target)})
        return 0
    output.say(f"{what} {target} from {args.url}", "green")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(sub, "archive", "Browse the git archive: working copies of it or of its mirror.",
                            "mailctl archive checkout ~/mail-archive")
    actions = parser.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    checkout = add_subcommand(actions, "checkout", "Make (or update) a readable working copy of this mailbox's "
                              "archive in DIR.", "mailctl archive checkout ~/mail-archive")
    checkout.add_argument("dir", help="directory for the working copy (created; updated when it is one)")
    add_json_flag(checkout)
    checkout.set_defaults(handler=cmd_checkout)
    clone = add_subcommand(actions, "clone", "Make a readable working copy of an archive mirror (archive_remote).",
                           "mailctl archive clone git@example.com:team/mail-archive.git ~/mail-archive")
    clone.add_argument("url", help="the mirror's git URL (ssh, https, git:// or a path)")
    clone.add_argument("dir", help="directory for the working copy")
    add_json_flag(clone)
    clone.set_defaults(handler=cmd_clone)
    share.register_archive(actions)  # archive save / restore: the share pipeline's lossless preset
