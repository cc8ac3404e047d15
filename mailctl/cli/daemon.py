"""`mailctl daemon start|stop|status|restart|logs`: manage this mailbox's maild."""

from __future__ import annotations

import argparse
import sys
import time

from mailctl.cli.common import add_subcommand, mailbox, print_json
from shared.client import DaemonClient, ensure_started, stop_daemon
from shared.errors import EXIT_DAEMON, DaemonUnavailable
from shared.paths import read_status


def start(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    started = time.perf_counter()
    ensure_started(paths)
    status = read_status(paths) or {}
    print(
        f"maild running: pid {status.get('pid')} socket {status.get('socket')} "
        f"(ready in {1000 * (time.perf_counter() - started):.0f} ms)"
    )
    return 0


def stop(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    if stop_daemon(paths, force=args.force):
        print("maild stopped")
    else:
        print("maild was not running")
    return 0


def restart(args: argparse.Namespace) -> int:
    stop(args)
    return start(args)


def status(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    try:
        with DaemonClient(paths, autostart=False) as conn:
            report = conn.call_tool("health_check")
    except DaemonUnavailable:
        if args.json:
            print_json({"running": False, "root": str(paths.root)})
        else:
            print(f"maild is not running for {paths.root}")
        return EXIT_DAEMON
    if args.json:
        print_json({"running": True, **report})
    else:
        print(
            f"maild {report['version']} running: pid {report['pid']}, up {report['uptime_seconds']:.0f} s, "
            f"{report['sessions']['live']} session(s), archive queue {report['archive']['queue_depth']}, "
            f"status {report['status']}"
        )
    return 0


def logs(args: argparse.Namespace) -> int:
    path = mailbox(args).log_file
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        print(f"no log yet at {path}", file=sys.stderr)
        return 0
    with handle:
        for line in handle.readlines()[-args.lines :]:
            sys.stdout.write(line)
        while args.follow:
            line = handle.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(sub, "daemon", "Manage the maild daemon of this mailbox.", "mailctl daemon status")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_subcommand(actions, "start", "Start maild (no-op if running) and wait until it is ready.",
                   "mailctl daemon start").set_defaults(handler=start)
    p = add_subcommand(actions, "stop", "Stop maild cleanly (SIGTERM, waits for exit).", "mailctl daemon stop")
    p.add_argument("--force", action="store_true", help="SIGKILL if it does not stop within 10 s")
    p.set_defaults(handler=stop)
    p = add_subcommand(actions, "restart", "Stop then start maild.", "mailctl daemon restart")
    p.add_argument("--force", action="store_true", help="SIGKILL if it does not stop within 10 s")
    p.set_defaults(handler=restart)
    p = add_subcommand(actions, "status", "Show whether maild runs, with its live health (exit 3 if not).",
                       "mailctl daemon status --json")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=status)
    p = add_subcommand(actions, "logs", "Print the daemon log (.mcp_mail/maild.log).", "mailctl daemon logs -n 50 -f")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines to show (default 40)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.set_defaults(handler=logs)
