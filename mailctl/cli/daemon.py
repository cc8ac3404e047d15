"""`mailctl daemon start|stop|status|restart|logs`: manage this mailbox's maild.

Plain lines for people, `--json` for scripts. `restart` keeps the HTTP bridge the old daemon
served (same address); `status` shows the bridge's state and why it failed, if it did.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from mailctl.cli import http
from mailctl.cli.common import add_subcommand, mailbox, print_json
from shared.client import DaemonClient, ensure_started, stop_daemon
from shared.errors import EXIT_DAEMON, DaemonUnavailable
from shared.paths import read_status


def _started(args: argparse.Namespace, extra_args: list[str] | None = None) -> int:
    paths = mailbox(args)
    started = time.perf_counter()
    ensure_started(paths, extra_args=extra_args)
    ready_ms = round(1000 * (time.perf_counter() - started))
    bridge = http.wait_for_bridge(paths) if extra_args else None
    status = read_status(paths) or {}
    if args.json:
        print_json({"running": True, "pid": status.get("pid"), "socket": status.get("socket"), "ready_ms": ready_ms,
                    "http": bridge or status.get("http")})
        return 0
    print(f"maild running: pid {status.get('pid')}, socket {status.get('socket')} (ready in {ready_ms} ms)")
    if bridge is not None:
        print(http.describe(bridge))
    elif isinstance(status.get("http"), dict):  # a bridge enabled in config.toml
        print(_bridge_line(status["http"]))
    return 0


def start(args: argparse.Namespace) -> int:
    return _started(args)


def stop(args: argparse.Namespace) -> int:
    stopped = stop_daemon(mailbox(args), force=args.force)
    if args.json:
        print_json({"stopped": stopped, "was_running": stopped})
    else:
        print("maild stopped" if stopped else "maild was not running")
    return 0


def restart(args: argparse.Namespace) -> int:
    """Stop then start, keeping the HTTP bridge (same address) if the old daemon served one."""
    paths = mailbox(args)
    bridge = (read_status(paths) or {}).get("http")
    flags = http.bridge_flags(str(bridge["host"]), int(bridge["port"])) if isinstance(bridge, dict) else None
    stop_daemon(paths, force=args.force)
    return _started(args, flags)


def _bridge_line(bridge: Any) -> str:
    if not isinstance(bridge, dict):
        return "HTTP bridge: off (mailctl serve-http starts it)"
    if bridge.get("state") == "failed":
        return f"HTTP bridge: FAILED: {bridge.get('error')}"
    auth = ", ".join(bridge.get("auth") or []) or "none configured: every request gets 401"
    return f"HTTP bridge: {bridge.get('state')} at {bridge.get('url')} (auth: {auth})"


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
        print(_bridge_line(report.get("http")))
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
    p = add_subcommand(actions, "start", "Start maild (no-op if running) and wait until it is ready.",
                       "mailctl daemon start")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=start)
    p = add_subcommand(actions, "stop", "Stop maild cleanly (SIGTERM, waits for exit).", "mailctl daemon stop")
    p.add_argument("--force", action="store_true", help="SIGKILL if it does not stop within 10 s")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=stop)
    p = add_subcommand(actions, "restart", "Stop then start maild (keeping its HTTP bridge, if it had one).",
                       "mailctl daemon restart")
    p.add_argument("--force", action="store_true", help="SIGKILL if it does not stop within 10 s")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=restart)
    p = add_subcommand(actions, "status", "Show whether maild runs, its live health and HTTP bridge (exit 3 if not).",
                       "mailctl daemon status --json")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=status)
    p = add_subcommand(actions, "logs", "Print the daemon log (.mcp_mail/maild.log).", "mailctl daemon logs -n 50 -f")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines to show (default 40)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.set_defaults(handler=logs)
