"""`mailctl web`: open the live web mailbox — start the HTTP bridge if needed, print a login URL.

The URL carries a one-time secret (shared/weblogin.py): the first visit exchanges it for an
HttpOnly session cookie and the secret stops working. On a desktop the URL is also opened in the
browser (`--no-open` to skip). It does not configure auth for remote use: see docs/web.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from mailctl.cli.common import add_subcommand, mailbox, print_json
from mailctl.cli.http import BRIDGE_START_TIMEOUT, bridge_answers
from shared.client import ensure_started, stop_daemon
from shared.config import load_settings
from shared.errors import DaemonUnavailable
from shared.paths import read_status
from shared.weblogin import create_login_secret


def _desktop() -> bool:
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    if args.port:
        os.environ["HTTP_PORT"] = str(args.port)
    settings = load_settings(paths.state_dir if paths.state_dir.is_dir() else None)
    host, port = settings.http_host, settings.http_port
    started = False
    if read_status(paths) is None or not bridge_answers(host, port):
        # No bridge on this mailbox yet: (re)start the daemon with it, as `mailctl serve-http` does.
        stop_daemon(paths)
        os.environ["AGENT_MAIL_HTTP"] = "true"  # inherited by the daemon this process starts
        ensure_started(paths)
        deadline = time.monotonic() + BRIDGE_START_TIMEOUT
        while not bridge_answers(host, port):
            if time.monotonic() >= deadline:
                raise DaemonUnavailable(
                    f"maild started but its HTTP bridge does not answer on {host}:{port} (port in use?); "
                    "see `mailctl daemon logs`, or pick another port with --port")
            time.sleep(0.05)
        started = True
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a URL to visit, not a bind
    base = f"http://{shown}:{port}/mail"
    login = f"{base}/login?secret={create_login_secret(paths.state_dir)}"
    minutes = settings.web_login_ttl_seconds / 60
    if args.json:
        print_json({"url": base, "login_url": login, "bridge_started": started,
                    "login_ttl_seconds": settings.web_login_ttl_seconds})
    else:
        print(f"Web mailbox: {base}")
        print(f"Open this one-time login link within {minutes:g} minutes (it works once):\n  {login}")
    if not args.no_open and not args.json and _desktop():
        import webbrowser

        webbrowser.open(login)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "web", "Open the live web mailbox: start the HTTP bridge if needed and print a one-time login URL.",
        "mailctl web            # prints http://127.0.0.1:8765/mail/login?secret=...",
    )
    parser.add_argument("--port", type=int, help="bridge port when it has to be started (default 8765)")
    parser.add_argument("--no-open", action="store_true", help="do not open a browser, only print the URL")
    parser.add_argument("--json", action="store_true", help="print {url, login_url, ...} as JSON")
    parser.set_defaults(handler=run)
