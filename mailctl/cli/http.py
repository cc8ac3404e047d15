"""`mailctl serve-http`: (re)start this mailbox's daemon with the HTTP bridge enabled.

Returns once the bridge answers its liveness route *with this daemon's instance id* (another
maild, or any other program, answering on the port does not count), or fails at once with the
daemon's own reason (e.g. the port is taken) while maild keeps serving the Unix socket.
`--foreground` runs maild in this terminal instead (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from mailctl.cli.common import add_subcommand, mailbox, print_json
from shared.client import ensure_started, stop_daemon
from shared.config import HTTP_NO_AUTH_WARNING, load_settings
from shared.errors import DaemonUnavailable
from shared.paths import MailboxPaths, pid_alive, read_status

BRIDGE_START_TIMEOUT = 15.0


def liveness(host: str, port: int) -> dict[str, Any] | None:
    """The bridge's liveness answer (JSON), or None when nothing answers it with a 200."""
    import http.client  # lazily: every mailctl start (and each editor's shim) would pay ~20 ms for it

    probe = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host  # noqa: S104 - a probe, not a bind
    conn = http.client.HTTPConnection(probe, port, timeout=2)
    try:
        conn.request("GET", "/health/liveness")
        response = conn.getresponse()
        if response.status != 200:
            return None
        body = json.loads(response.read() or b"null")
    except (OSError, ValueError):
        return None
    finally:
        conn.close()
    return body if isinstance(body, dict) else None


def bridge_flags(host: str, port: int) -> list[str]:
    return ["--http", "--http-host", host, "--http-port", str(port)]


def wait_for_bridge(paths: MailboxPaths, timeout: float = BRIDGE_START_TIMEOUT) -> dict[str, Any]:
    """The running daemon's bridge once it serves (status file + a liveness answer from *this* daemon).
    Raises DaemonUnavailable with the daemon's reason when the bridge failed."""
    deadline = time.monotonic() + timeout
    last = "the daemon has not reported its bridge yet"
    while time.monotonic() < deadline:
        status = read_status(paths) or {}
        bridge = status.get("http")
        pid = status.get("pid")
        if isinstance(bridge, dict) and isinstance(pid, int) and pid_alive(pid):
            if bridge.get("state") == "failed":
                raise DaemonUnavailable(
                    f"the HTTP bridge could not start: {bridge.get('error')}. maild (pid {pid}) keeps serving "
                    "the Unix socket",
                    data={"http": bridge},
                )
            if bridge.get("state") == "serving":
                answer = liveness(str(bridge["host"]), int(bridge["port"]))
                if answer is not None and answer.get("instance") == status.get("instance"):
                    return {**bridge, "pid": pid}
                if answer is not None:
                    raise DaemonUnavailable(
                        f"port {bridge['port']} answers, but not from this mailbox's maild (pid {pid}): another "
                        "server holds it. Pick another port with --port"
                    )
                last = f"nothing answers on {bridge['host']}:{bridge['port']} yet"
        time.sleep(0.05)
    raise DaemonUnavailable(
        f"the HTTP bridge did not come up within {timeout:.0f} s ({last}); see `mailctl daemon logs`"
    )


def describe(bridge: dict[str, Any]) -> str:
    auth = ", ".join(bridge.get("auth") or []) or "none configured"
    return f"HTTP bridge serving at {bridge['url']} (auth: {auth})"


def report(bridge: dict[str, Any], as_json: bool) -> None:
    if not bridge.get("auth"):
        print(f"mailctl: warning: {HTTP_NO_AUTH_WARNING}", file=sys.stderr)
    if as_json:
        print_json(bridge)
        return
    print(f"{describe(bridge)}; maild pid {bridge['pid']} also serves the Unix socket")
    print("to keep it on across restarts: http_enabled = true in .mcp_mail/config.toml")


def run(args: argparse.Namespace) -> int:
    paths = mailbox(args)
    settings = load_settings(
        paths.state_dir if paths.state_dir.is_dir() else None,
        {"http_enabled": True, "http_host": args.host, "http_port": args.port},
    )
    flags = bridge_flags(settings.http_host, settings.http_port)
    stop_daemon(paths)
    if args.foreground:
        sys.stdout.flush()
        # This process becomes maild: its log on this terminal, Ctrl-C (or SIGTERM) to stop; it exits
        # with status 2 and one line if the bridge cannot start.
        command = [sys.executable, "-P", "-m", "maild", "--root", os.fspath(paths.root), *flags, "--http-required"]
        os.execv(sys.executable, command)  # noqa: S606 - our own interpreter and module
    ensure_started(paths, extra_args=flags)
    report(wait_for_bridge(paths), args.json)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "serve-http", "Restart maild with the HTTP bridge (auth settings: docs/http.md).",
        "mailctl serve-http --port 8765   # with HTTP_BEARER_TOKEN=... (or JWT settings) set",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; put TLS in a reverse proxy)")
    parser.add_argument("--port", type=int, help="port (default 8765)")
    parser.add_argument("--foreground", action="store_true",
                        help="run maild in this terminal (logs here, Ctrl-C stops it) instead of in the background")
    parser.add_argument("--json", action="store_true", help="print the bridge's state as JSON")
    parser.set_defaults(handler=run)
