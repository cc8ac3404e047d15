"""`mailctl doctor [--fix] [--rebuild]`: check the setup (daemon, permissions, guard, client configs,
nested mailboxes) and the database against the Git archive."""

from __future__ import annotations

import argparse
import subprocess
import sys

from mailctl.cli.common import add_subcommand, mailbox, print_json
from mailctl.integrations.checks import environment_checks
from shared.client import DaemonClient, stop_daemon
from shared.errors import EXIT_TOOL_ERROR


def run(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    if args.rebuild:
        stop_daemon(paths)
        return subprocess.run([sys.executable, "-P", "-m", "maild", "rebuild", "--root", str(paths.root)],
                              check=False).returncode
    checks = environment_checks(paths)  # the setup around the mailbox (mailctl/integrations/checks.py)
    with DaemonClient(paths) as conn:
        report = conn.call_tool("archive_doctor", {"fix": args.fix})
    if args.json:
        print_json({**report, "checks": [c.to_dict() for c in checks]})
    else:
        for c in checks:
            print(f"{c.name}: {c.level.upper() if c.level != 'ok' else 'ok'} — {c.detail}")
        outbox, archive = report["outbox"], report["archive"]
        print(f"archive: {'ok' if archive.get('ok', True) else 'DEGRADED: ' + str(archive.get('last_error'))}")
        for slug, counts in sorted(report["projects"].items()):
            print(f"  {slug}: {counts['db']} messages in the database, {counts['archive']} in the archive")
        print(f"outbox: {outbox['depth']} pending, oldest {outbox['oldest_lag_seconds'] or 0} s")
        if report["missing_count"]:
            print(f"missing in archive: {report['missing_count']} (e.g. {report['messages_missing_in_archive'][:5]})"
                  + (f"; re-queued {report['fixed']['requeued_messages']}" if args.fix else "; run with --fix"))
        if report["extra_count"]:
            print(f"archive files without a database row: {report['extra_count']}; `mailctl doctor --rebuild` "
                  "rebuilds the database from the archive")
    if any(c.level == "fail" for c in checks):
        return EXIT_TOOL_ERROR
    return 0 if report["ok"] or (args.fix and not report["extra_count"]) else EXIT_TOOL_ERROR


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "doctor",
        "Check the setup (daemon, permissions, guard, client configs, nested mailboxes) and the database against "
        "the Git archive; repair what is safe.", "mailctl doctor --fix"
    )
    parser.add_argument("--fix", action="store_true", help="re-queue archive writes for missing messages")
    parser.add_argument("--rebuild", action="store_true",
                        help="stop maild and rebuild the database from the archive alone (keeps a backup)")
    parser.add_argument("--json", action="store_true", help="print the raw report")
    parser.set_defaults(handler=run)
