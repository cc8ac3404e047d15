"""The client library shared by `mailctl` and the stdio shim: reach maild, starting it if needed.

Standard library only (plus fasteners for the spawn lock). Auto-start is race-safe: clients take a
spawn lock, re-check, and only then spawn; the daemon's own instance lock makes any extra daemon
exit at once. Requests use the MCP 2026-07-28 era, where every request carries its own envelope,
so a one-shot call is a single frame with no handshake.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import __version__
from shared.errors import DaemonUnavailable, MailError, ProtocolError, from_dict
from shared.paths import MailboxPaths, pid_alive, read_status
from shared.protocol import (
    CLIENT_CAPABILITIES_META_KEY,
    HELLO_METHOD,
    MODERN_PROTOCOL_VERSION,
    PROTOCOL_VERSION_META_KEY,
)

if TYPE_CHECKING:  # subprocess and signal load lazily: hooks and shims that find maild running never need them
    import subprocess

DEFAULT_START_TIMEOUT = 15.0

# Daemons this process spawned. maild outlives us by design; keeping the handles avoids
# Popen's "still running" warning when they would otherwise be garbage-collected, and lets a
# long-lived client (the shim, a test run) reap the ones that exited instead of keeping zombies.
_SPAWNED: list[subprocess.Popen[bytes]] = []


def reap_spawned() -> list[int]:
    """Wait for the daemons this process spawned that have exited; the pids still running."""
    running = []
    for proc in list(_SPAWNED):
        if proc.poll() is None:
            running.append(proc.pid)
        else:
            _SPAWNED.remove(proc)
    return running


def try_connect(path: Path) -> socket.socket | None:
    """Connect to the daemon's socket, or None if nobody listens (missing or stale socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(
            f"cannot reach {path}: {exc.strerror}; make sure {path.parent} is a directory you own"
        ) from None
    return sock


def _log_tail(paths: MailboxPaths, lines: int = 1) -> str:
    try:
        text = paths.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def spawn_daemon(paths: MailboxPaths, extra_args: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start maild detached (own session), its stderr appended to the log file."""
    import subprocess

    try:
        paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = paths.log_file.open("ab")
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot prepare {paths.state_dir}: {exc.strerror}; check that the directory is writable"
        ) from None
    reap_spawned()
    with log:
        proc = subprocess.Popen(
            # -P: the daemon runs in the user's repository; a `shared/` or `maild/` folder there must
            # not shadow our packages (python -m would otherwise put the cwd first on sys.path).
            [sys.executable, "-P", "-m", "maild", "--root", os.fspath(paths.root), *(extra_args or [])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=paths.root,
            start_new_session=True,
            close_fds=True,
        )
    _SPAWNED.append(proc)
    return proc


def connect(
    paths: MailboxPaths, *, autostart: bool = True, timeout: float = DEFAULT_START_TIMEOUT
) -> socket.socket:
    """Connect to maild for `paths`, auto-starting it (once, even under races) when absent."""
    sock = try_connect(paths.socket)
    if sock is not None:
        return sock
    if not autostart:
        raise DaemonUnavailable(f"maild is not running for {paths.root}; start it with `mailctl daemon start`")
    import fasteners

    deadline = time.monotonic() + timeout
    try:
        paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DaemonUnavailable(f"cannot create {paths.state_dir}: {exc.strerror}; check permissions") from None
    spawn_lock = fasteners.InterProcessLock(os.fspath(paths.spawn_lock_file))
    try:
        acquired = spawn_lock.acquire(blocking=True, timeout=timeout)
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot write in {paths.state_dir}: {exc.strerror}; make it writable (chmod u+rwx) or move it away"
        ) from None
    if not acquired:
        raise DaemonUnavailable(f"timed out waiting for another client to start maild; see {paths.log_file}")
    try:
        sock = try_connect(paths.socket)
        if sock is not None:
            return sock
        proc = spawn_daemon(paths)
        return _wait_ready(paths, proc, deadline)
    finally:
        spawn_lock.release()


def _wait_ready(paths: MailboxPaths, proc: subprocess.Popen[bytes], deadline: float) -> socket.socket:
    delay = 0.005
    while True:
        sock = try_connect(paths.socket)
        if sock is not None:
            return sock
        code = proc.poll()
        if code not in (None, 0):
            reason = _log_tail(paths) or f"exit status {code}"
            raise DaemonUnavailable(f"maild failed to start: {reason} (log: {paths.log_file})")
        if time.monotonic() >= deadline:
            raise DaemonUnavailable(
                f"maild did not become ready in time; see {paths.log_file} (mailctl daemon logs)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def ensure_started(paths: MailboxPaths, timeout: float = DEFAULT_START_TIMEOUT) -> None:
    connect(paths, timeout=timeout).close()


def stop_daemon(paths: MailboxPaths, timeout: float = 10.0, *, force: bool = False) -> bool:
    """SIGTERM the daemon and wait for it to exit. Returns False if it was not running."""
    import signal

    status = read_status(paths)
    pid = status.get("pid") if status else None
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            if not force:
                raise DaemonUnavailable(f"maild (pid {pid}) did not stop within {timeout:.0f} s; retry with --force")
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            force = False
        time.sleep(0.02)
    reap_spawned()  # if we started it, it is our zombie now
    return True


def envelope_meta() -> dict[str, Any]:
    return {PROTOCOL_VERSION_META_KEY: MODERN_PROTOCOL_VERSION, CLIENT_CAPABILITIES_META_KEY: {}}


class DaemonClient:
    """A blocking JSON-RPC client over one socket connection (CLI, scripts, tests, hooks)."""

    def __init__(
        self,
        paths: MailboxPaths,
        *,
        autostart: bool = True,
        timeout: float = DEFAULT_START_TIMEOUT,
        hello: dict[str, Any] | None = None,
    ) -> None:
        self.paths = paths
        self._sock = connect(paths, autostart=autostart, timeout=timeout)
        self._reader = self._sock.makefile("rb")
        self._ids = itertools.count(1)
        if hello is not None:
            self._send({"jsonrpc": "2.0", "method": HELLO_METHOD, "params": hello})

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def _send(self, frame: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(frame, separators=(",", ":")).encode() + b"\n")

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self._ids)
        body = dict(params or {})
        body["_meta"] = {**body.get("_meta", {}), **envelope_meta()}
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": body})
        while True:
            line = self._reader.readline()
            if not line:
                raise DaemonUnavailable("maild closed the connection; retry (it restarts on demand)")
            reply = json.loads(line)
            if reply.get("id") != request_id:
                continue  # a notification, or a reply to an abandoned request
            if "error" in reply:
                err = reply["error"]
                detail = err.get("data")
                if isinstance(detail, dict) and isinstance(detail.get("code"), str):
                    raise from_dict(detail)  # a domain error carried by a protocol error (resources)
                raise ProtocolError(f"{err.get('message')} (JSON-RPC {err.get('code')})", data=err)
            result: dict[str, Any] = reply["result"]
            return result

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call a tool; returns its structured result or raises the tool's MailError."""
        result = self.request("tools/call", {"name": name, "arguments": arguments or {}})
        structured = result.get("structuredContent")
        if result.get("isError"):
            payload = (structured or {}).get("error") if isinstance(structured, dict) else None
            if isinstance(payload, dict):
                raise from_dict(payload)
            text = " ".join(c.get("text", "") for c in result.get("content", []))
            raise MailError(text or f"tool {name} failed")
        return structured

    def read_resource(self, uri: str) -> Any:
        result = self.request("resources/read", {"uri": uri})
        contents = result.get("contents") or [{}]
        return json.loads(contents[0].get("text") or "null")


def version_note(paths: MailboxPaths) -> str | None:
    """A one-line note when the running daemon is another version than this client."""
    status = read_status(paths)
    if status and status.get("version") not in (None, __version__):
        return (
            f"maild {status['version']} is running but this client is {__version__}; "
            "run `mailctl daemon restart` to upgrade it"
        )
    return None
