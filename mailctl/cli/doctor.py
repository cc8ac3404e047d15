"""`mailctl doctor [--fix] [--rebuild [--yes]]`: check the setup (daemon, permissions, guard, client
configs, nested mailboxes), the database against the Git archive, and attachment blobs against the
database.

`--rebuild` replaces the database with one rebuilt from the archive (the old file is kept as a
backup), so it asks first; `--yes` is for scripts, and without a terminal to ask on it refuses.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_json_flag, add_subcommand, client, mailbox, print_json
from mailctl.integrations.checks import environment_checks
from shared.client import stop_daemon
from shared.errors import EXIT_TOOL_ERROR, EXIT_USAGE
from shared.paths import MailboxPaths


def confirm_rebuild(paths: MailboxPaths) -> bool:
    """Ask on the terminal; no terminal (a script, CI) means no, with a pointer to --yes."""
    if not sys.stdin.isatty():
        print("mailctl: doctor --rebuild replaces the database; pass --yes to confirm from a script",
              file=sys.stderr)
        return False
    print(f"This stops maild and rebuilds {paths.db} from the archive at {paths.archive}.\n"
          "The current database is kept as a backup next to it.", file=sys.stderr)
    try:
        answer = input("Rebuild now? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def rebuild(paths: MailboxPaths, *, as_json: bool, from_url: str | None = None) -> int:
    """Run `maild rebuild` (its progress bar on stderr) and show the JSON result it prints."""
    source = ["--from", from_url] if from_url else []
    done = subprocess.run([sys.executable, "-P", "-m", "maild", "rebuild", "--root", str(paths.root), *source],
                          stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        return done.returncode  # maild said why on stderr
    if as_json:
        sys.stdout.write(done.stdout)
        return 0
    result = json.loads(done.stdout)
    counts = ", ".join(f"{count} {what}" for what, count in result["rebuilt"].items())
    output.say(f"rebuilt {result['database']} from the archive: {counts}", "green")
    if result.get("previous_database"):
        output.say(f"the previous database is kept as {result['previous_database']}")
    output.say("maild starts again on the next command")
    return 0


def show_blobs(blobs: dict[str, Any], *, fixing: bool) -> None:
    """Attachment blobs against the database: what is wrong and how to fix it."""
    if blobs["ok"]:
        output.say(f"attachment blobs: ok ({blobs['checked']} checked)", "green")
        return
    output.say(f"attachment blobs: {blobs['checked']} checked", "bold red")
    fixed = blobs.get("fixed")
    if blobs["missing_count"] or blobs["corrupt_count"]:
        print(f"  missing: {blobs['missing_count']}, content not matching its sha256: {blobs['corrupt_count']} "
              f"(e.g. {(blobs['missing'] + blobs['corrupt'])[:3]})")
        if fixed is None:
            print("  run `mailctl doctor --fix` to copy them back from the archive")
        else:
            print(f"  restored {fixed['restored']} from the archive")
            lost = fixed["unrecoverable"]
            if lost:
                print(f"  not in the archive either: {len(lost)} (e.g. {lost[:3]}); "
                      "the messages keep their metadata, the bytes are lost — ask the sender to send them again")
    if blobs["orphan_count"]:
        print(f"  files no message carries: {blobs['orphan_count']} (e.g. {blobs['orphans'][:3]})")
        print(f"  removed {fixed['orphans_removed']}" if fixed is not None
              else "  run `mailctl doctor --fix` to delete them")


def run(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    if args.rebuild:
        if not (args.yes or confirm_rebuild(paths)):
            print("mailctl: rebuild cancelled; nothing changed", file=sys.stderr)
            return EXIT_USAGE
        stop_daemon(paths)
        return rebuild(paths, as_json=args.json, from_url=args.from_url)
    checks = environment_checks(paths)  # the setup around the mailbox (mailctl/integrations/checks.py)
    with client(args) as conn:
        report = conn.call_tool("archive_doctor", {"fix": args.fix})
    if args.json:
        print_json({**report, "checks": [c.to_dict() for c in checks]})
    else:
        for c in checks:
            print(f"{c.name}: {c.level.upper() if c.level != 'ok' else 'ok'} — {c.detail}")
        outbox, archive = report["outbox"], report["archive"]
        if archive.get("ok", True):
            output.say("archive: ok", "green")
        else:
            output.say(f"archive: DEGRADED: {archive.get('last_error')}", "bold red")
        for slug, counts in sorted(report["projects"].items()):
            print(f"  {slug}: {counts['db']} messages in the database, {counts['archive']} in the archive")
        print(f"outbox: {outbox['depth']} pending, oldest {outbox['oldest_lag_seconds'] or 0} s")
        if report["missing_count"]:
            print(f"missing in archive: {report['missing_count']} (e.g. {report['messages_missing_in_archive'][:5]})"
                  + (f"; re-queued {report['fixed']['requeued_messages']}" if args.fix else "; run with --fix"))
        if report["extra_count"]:
            print(f"archive files without a database row: {report['extra_count']}; `mailctl doctor --rebuild` "
                  "rebuilds the database from the archive")
        if "blobs" in report:
            show_blobs(report["blobs"], fixing=args.fix)
    if any(c.level == "fail" for c in checks):
        return EXIT_TOOL_ERROR
    blobs_lost = bool(report.get("blobs", {}).get("fixed", {}).get("unrecoverable"))
    return 0 if report["ok"] or (args.fix and not report["extra_count"] and not blobs_lost) else EXIT_TOOL_ERROR


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "doctor",
        "Check the setup (daemon, permissions, guard, client configs, nested mailboxes), the database against "
        "the Git archive and attachment blobs against the database; repair what is safe.",
        "mailctl doctor --fix   # mailctl doctor --rebuild --yes in a script",
    )
    parser.add_argument("--fix", action="store_true",
                        help="re-queue archive writes for missing messages; restore missing or corrupt attachment "
                             "blobs from the archive and delete orphan blobs")
    parser.add_argument("--rebuild", action="store_true",
                        help="stop maild and rebuild the database from the archive alone (keeps a backup)")
    parser.add_argument("--from", dest="from_url", metavar="URL",
                        help="with --rebuild: fetch the archive from this git mirror first (a lost machine)")
    parser.add_argument("--yes", "-y", action="store_true", help="rebuild without asking (for scripts)")
    add_json_flag(parser)
    parser.set_defaults(handler=run)
