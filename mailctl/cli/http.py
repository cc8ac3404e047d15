"""`mailctl serve-http`: (re)start this mailbox's daemon with the HTTP bridge enabled."""

from __future__ import annotations

import argparse
import os

from mailctl.cli.common import add_subcommand, mailbox
from shared.client import ensure_started, stop_daemon


def run(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    stop_daemon(paths)
    os.environ["AGENT_MAIL_HTTP"] = "true"  # inherited by the daemon this process starts
    if args.host:
        os.environ["HTTP_HOST"] = args.host
    if args.port:
        os.environ["HTTP_PORT"] = str(args.port)
    ensure_started(paths)
    host = os.environ.get("HTTP_HOST", "127.0.0.1")
    port = os.environ.get("HTTP_PORT", "8765")
    print(f"maild serves MCP over HTTP at http://{host}:{port}/mcp/ (and the Unix socket); "
          "set http_enabled = true in .mcp_mail/config.toml to keep it on across restarts")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "serve-http", "Restart maild with the HTTP bridge (auth settings: docs/http.md).",
        "mailctl serve-http --port 8765   # with HTTP_JWT_ENABLED=true HTTP_JWT_SECRET=...",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; put TLS in a reverse proxy)")
    parser.add_argument("--port", type=int, help="port (default 8765)")
    parser.set_defaults(handler=run)
