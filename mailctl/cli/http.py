"""`mailctl serve-http`: (re)start this mailbox's daemon with the HTTP bridge enabled.

Returns once the bridge answers its liveness route (or says why it does not), so a script can
use the URL it prints straight away.
"""

from __future__ import annotations

import argparse
import os
import time

from mailctl.cli.common import add_subcommand, mailbox
from shared.client import ensure_started, stop_daemon
from shared.config import load_settings
from shared.errors import DaemonUnavailable

BRIDGE_START_TIMEOUT = 15.0


def bridge_answers(host: str, port: int) -> bool:
    import http.client  # lazily: every mailctl start (and each editor's shim) would pay ~20 ms for it

    probe = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host  # noqa: S104 - a probe, not a bind
    conn = http.client.HTTPConnection(probe, port, timeout=2)
    try:
        conn.request("GET", "/health/liveness")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def run(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    stop_daemon(paths)
    os.environ["AGENT_MAIL_HTTP"] = "true"  # inherited by the daemon this process starts
    if args.host:
        os.environ["HTTP_HOST"] = args.host
    if args.port:
        os.environ["HTTP_PORT"] = str(args.port)
    settings = load_settings(paths.state_dir if paths.state_dir.is_dir() else None)
    ensure_started(paths)
    deadline = time.monotonic() + BRIDGE_START_TIMEOUT
    while not bridge_answers(settings.http_host, settings.http_port):
        if time.monotonic() >= deadline:
            raise DaemonUnavailable(
                f"maild started but its HTTP bridge does not answer on {settings.http_host}:{settings.http_port} "
                f"(port in use?); see `mailctl daemon logs`, or pick another port with --port")
        time.sleep(0.05)
    print(f"maild serves MCP over HTTP at http://{settings.http_host}:{settings.http_port}/mcp/ "
          "(and the Unix socket); set http_enabled = true in .mcp_mail/config.toml to keep it on across restarts")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "serve-http", "Restart maild with the HTTP bridge (auth settings: docs/http.md).",
        "mailctl serve-http --port 8765   # with HTTP_JWT_ENABLED=true HTTP_JWT_SECRET=...",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; put TLS in a reverse proxy)")
    parser.add_argument("--port", type=int, help="port (default 8765)")
    parser.set_defaults(handler=run)
