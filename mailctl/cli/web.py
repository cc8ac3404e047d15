"""`mailctl web`: open the live web mailbox — start the HTTP bridge if needed, print a login URL.

The URL carries a one-time secret (shared/weblogin.py): the first visit exchanges it for an
HttpOnly session cookie and the secret stops working. On a desktop the URL is also opened in the
browser (`--no-open` to skip). It does not configure auth for remote use: see docs/web.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from mailctl.cli.common import add_subcommand, mailbox, print_json
from mailctl.cli.http import bridge_flags, liveness, wait_for_bridge
from shared.client import ensure_started, stop_daemon
from shared.config import load_settings
from shared.paths import MailboxPaths, read_status
from shared.weblogin import create_login_secret


def _desktop() -> bool:
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def running_bridge(paths: MailboxPaths, port: int | None) -> dict[str, Any] | None:
    """This mailbox's bridge when it serves (on `port`, if given) and answers as this daemon."""
    status = read_status(paths) or {}
    bridge = status.get("http")
    if not isinstance(bridge, dict) or bridge.get("state") != "serving":
        return None
    if port is not None and int(bridge["port"]) != port:
        return None
    answer = liveness(str(bridge["host"]), int(bridge["port"]))
    return bridge if answer is not None and answer.get("instance") == status.get("instance") else None


def run(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    overrides: dict[str, Any] = {"http_enabled": True, **({"http_port": args.port} if args.port else {})}
    settings = load_settings(paths.state_dir if paths.state_dir.is_dir() else None, overrides)
    bridge = running_bridge(paths, args.port)
    started = bridge is None
    if bridge is None:
        # No bridge on this mailbox yet: (re)start the daemon with it, as `mailctl serve-http` does.
        stop_daemon(paths)
        ensure_started(paths, extra_args=bridge_flags(settings.http_host, settings.http_port))
        bridge = wait_for_bridge(paths)
    host, port = str(bridge["host"]), int(bridge["port"])
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
