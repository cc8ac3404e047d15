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
from shared.errors import (
    DaemonUnavailable,
    InvalidArgument,
    UnsafeStateDir,
)
from shared.paths import MailboxPaths, pid_alive, read_status, verify_private
from shared.protocol import HELLO_METHOD, MAX_FRAME_BYTES
from shared.wire import answers, reply_result, tool_result, verify_peer
from shared.wire import envelope_meta as envelope_meta  # noqa: PLC0414 - re-exported (HTTP client, tests)

if TYPE_CHECKING:  # subprocess and signal load lazily: hooks and shims that find maild running never need them
    import subprocess

DEFAULT_START_TIMEOUT = 15.0
# How long a request may wait for its answer (`AGENT_MAIL_CLIENT_TIMEOUT` overrides): never forever.
DEFAULT_REQUEST_TIMEOUT = 300.0
REQUEST_TIMEOUT_ENV = "AGENT_MAIL_CLIENT_TIMEOUT"


def request_timeout() -> float:
    try:
        return float(os.environ.get(REQUEST_TIMEOUT_ENV) or DEFAULT_REQUEST_TIMEOUT)
    except ValueError:
        return DEFAULT_REQUEST_TIMEOUT


def oversized_request(size: int) -> InvalidArgument:
    """The error for a request over maild's frame limit (the client raises it, the shim answers with it)."""
    return InvalidArgument(
        f"this request is {size:,} bytes; maild accepts at most {MAX_FRAME_BYTES:,} bytes per request. "
        "Send less at once: put large content in a file and reference its path",
        data={"request_bytes": size, "limit_bytes": MAX_FRAME_BYTES},
    )


def check_frame_size(frame: bytes) -> None:
    """Refuse a request maild would refuse (it answers those with `id: null`) before sending it."""
    if len(frame) > MAX_FRAME_BYTES:
        raise oversized_request(len(frame))

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
    """Connect to the daemon's socket, or None if nobody listens (missing or stale socket).

    Only to a socket that is ours: its directory and the socket file must belong to this user and be
    writable by nobody else (checked before connecting), and the listening process must run as this
    user (`SO_PEERCRED`, checked after) — the hello that follows carries the agent's token."""
    verify_private(path.parent, "the state directory", fix_mode=True)
    verify_private(path, "the socket")
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
    try:
        verify_peer(sock, path)
    except UnsafeStateDir:
        sock.close()
        raise
    return sock


def _log_tail(paths: MailboxPaths, lines: int = 1) -> str:
    try:
        text = paths.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def spawn_daemon(paths: MailboxPaths, extra_args: list[str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start maild detached (own session), its stderr appended to the log file.

    Returns the process and the read end of its report pipe: a daemon that cannot start writes its
    reason there in full (the log may be unwritable — a full disk — or hold a traceback's last line)."""
    import subprocess

    try:
        paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = paths.log_file.open("ab")
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot prepare {paths.state_dir}: {exc.strerror}; check that the directory is writable"
        ) from None
    reap_spawned()
    report_read, report_write = os.pipe()
    with log:
        try:
            proc = subprocess.Popen(
                # -P: the daemon runs in the user's repository; a `shared/` or `maild/` folder there must
                # not shadow our packages (python -m would otherwise put the cwd first on sys.path).
                [sys.executable, "-P", "-m", "maild", "--root", os.fspath(paths.root),
                 "--report-fd", str(report_write), *(extra_args or [])],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=paths.root,
                start_new_session=True,
                close_fds=True,
                pass_fds=(report_write,),
            )
        except OSError:
            os.close(report_read)
            raise
        finally:
            os.close(report_write)
    _SPAWNED.append(proc)
    return proc, report_read


def connect(
    paths: MailboxPaths, *, autostart: bool = True, timeout: float = DEFAULT_START_TIMEOUT,
    extra_args: list[str] | None = None,
) -> socket.socket:
    """Connect to maild for `paths`, auto-starting it (once, even under races) when absent.
    `extra_args` are maild flags for a daemon this call starts (e.g. the HTTP bridge's)."""
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
        proc, report = spawn_daemon(paths, extra_args)
        try:
            return _wait_ready(paths, proc, report, deadline)
        finally:
            os.close(report)
    finally:
        spawn_lock.release()


def _read_report(fd: int) -> str:
    """What a daemon that exited wrote to its report pipe (its writer is closed: no blocking)."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks).decode("utf-8", "replace").strip().replace("\n", " | ")


def _wait_ready(paths: MailboxPaths, proc: subprocess.Popen[bytes], report: int, deadline: float) -> socket.socket:
    delay = 0.005
    while True:
        sock = try_connect(paths.socket)
        if sock is not None:
            return sock
        code = proc.poll()
        if code not in (None, 0):
            reason = _read_report(report) or _log_tail(paths) or f"exit status {code}"
            raise DaemonUnavailable(f"maild failed to start: {reason} (log: {paths.log_file})")
        if time.monotonic() >= deadline:
            raise DaemonUnavailable(
                f"maild did not become ready in time; see {paths.log_file} (mailctl daemon logs)"
            )
        time.sleep(delay)
        # At most 20 ms between tries: a 100 ms cap lost ~50 ms of every cold start on average.
        delay = min(delay * 2, 0.02)


def ensure_started(
    paths: MailboxPaths, timeout: float = DEFAULT_START_TIMEOUT, extra_args: list[str] | None = None
) -> None:
    connect(paths, timeout=timeout, extra_args=extra_args).close()


def stop_daemon(paths: MailboxPaths, timeout: float = 10.0, *, force: bool = False) -> bool:
    """SIGTERM the daemon and wait for it to exit. Returns False if it was not running."""
    import signal

    verify_private(paths.state_dir, "the state directory")  # its status file names the pid we signal
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
        data = json.dumps(frame, separators=(",", ":")).encode() + b"\n"
        check_frame_size(data)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise DaemonUnavailable(f"maild dropped the connection ({exc.strerror or exc}); retry") from None

    def request(self, method: str, params: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> dict[str, Any]:
        """Send one request and wait (at most `timeout`, default `request_timeout()`) for its answer.

        An error with `id: null` is maild refusing a frame it could not tie to a request (too large,
        unparsable, a failed hello): it is the answer, since nothing else will come."""
        request_id = next(self._ids)
        body = dict(params or {})
        body["_meta"] = {**body.get("_meta", {}), **envelope_meta()}
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": body})
        limit = request_timeout() if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                line = self._reader.readline()
            except TimeoutError:
                raise DaemonUnavailable(
                    f"maild did not answer {method} within {limit:g} s; see `mailctl daemon status` and "
                    f"`mailctl daemon logs` (${REQUEST_TIMEOUT_ENV} sets the limit)"
                ) from None
            except OSError as exc:
                raise DaemonUnavailable(f"maild dropped the connection ({exc.strerror or exc}); retry") from None
            if not line:
                raise DaemonUnavailable("maild closed the connection; retry (it restarts on demand)")
            reply = json.loads(line)
            if answers(reply, request_id):
                return reply_result(reply)

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call a tool; returns its structured result or raises the tool's MailError."""
        return tool_result(name, self.request("tools/call", {"name": name, "arguments": arguments or {}}))

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
