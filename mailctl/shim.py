"""`mailctl mcp`: the stdio shim an editor spawns — a line relay between stdio and maild's socket.

Standard library only (no MCP SDK: importing it costs ~0.5 s and ~65 MB per agent). The daemon's
SDK server answers the protocol; the shim adds three things:
- a `maild/hello` first frame (stable session id, pid, parent pid, cwd, agent, its token, tools mode);
- survival of daemon restarts: on a dropped socket it answers in-flight requests with a retryable
  JSON-RPC error, reconnects (auto-starting maild), re-sends the hello (the daemon restores the
  session's identity binding by session id) and replays a legacy client's `initialize` +
  `notifications/initialized`, consuming the duplicate reply itself (a live answer also proves
  the new connection is served before anything is relayed on it);
- prompt exit on stdin EOF, SIGINT/SIGTERM, or the death of its parent (no ghost agents online).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, BinaryIO

from shared.client import connect, oversized_request
from shared.errors import DaemonUnavailable
from shared.paths import MailboxPaths, fallback_note, resolve_root
from shared.protocol import HELLO_METHOD, INVALID_REQUEST, MAX_FRAME_BYTES, RETRYABLE_DISCONNECT

REPLAY_ID = "mailctl-shim-replayed-initialize"
PARENT_POLL_SECONDS = 0.5
RECONNECT_TIMEOUT = 30.0
DRAIN_SECONDS = 5.0


class Shim:
    def __init__(self, paths: MailboxPaths, agent: str | None, tools: str | None,
                 stdin: BinaryIO, stdout: BinaryIO, token: str | None = None) -> None:
        self.paths = paths
        self.stdin = stdin
        self.stdout = stdout
        self.hello = {
            "session": os.urandom(16).hex(),  # as unguessable as uuid4, without importing uuid (and platform)
            "client": "shim",
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "cwd": os.getcwd(),  # noqa: PTH109 - pathlib costs import time here
            "agent": agent,
            "tools": tools,
            "token": token,  # proves `agent` is ours (the daemon binds a named agent only with proof)
        }
        self.parent = os.getppid()
        self.done = threading.Event()
        self._out_lock = threading.Lock()
        self._state = threading.Condition()
        self._sock: socket.socket | None = None
        self._generation = 0
        self._in_flight: dict[Any, None] = {}
        self._initialize: bytes | None = None
        self._initialized: bytes | None = None
        self.exit_code = 0

    # -- plumbing -------------------------------------------------------------------------------

    def write_out(self, line: bytes) -> None:
        with self._out_lock:
            self.stdout.write(line if line.endswith(b"\n") else line + b"\n")
            self.stdout.flush()

    def flush(self) -> None:
        with self._out_lock:
            self.stdout.flush()

    def _open(self) -> socket.socket:
        sock = connect(self.paths, timeout=RECONNECT_TIMEOUT)
        try:
            frame = {"jsonrpc": "2.0", "method": HELLO_METHOD, "params": self.hello}
            sock.sendall(json.dumps(frame).encode() + b"\n")
            if self._initialize is not None:
                replay = json.loads(self._initialize)
                replay["id"] = REPLAY_ID
                sock.sendall(json.dumps(replay).encode() + b"\n")
                # Wait for the replayed initialize's answer before relaying anything: a socket accepted
                # in the instant a dying daemon closes its listener looks connected but is already lost.
                self._await_replay(sock)
                if self._initialized is not None:
                    sock.sendall(self._initialized)
        except OSError as exc:  # that dying listener again (reset, broken pipe): try the next daemon
            sock.close()
            raise DaemonUnavailable(f"maild dropped the new connection ({exc})") from exc
        return sock

    @staticmethod
    def _await_replay(sock: socket.socket) -> None:
        sock.settimeout(RECONNECT_TIMEOUT)
        buffered = b""
        while b"\n" not in buffered:  # nothing else is sent before `initialized` goes out
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("maild closed the connection while the session was being restored")
            buffered += chunk
        sock.settimeout(None)

    def start(self) -> None:
        self._sock = self._open()
        self._generation += 1
        threading.Thread(target=self._pump_socket, args=(self._sock, self._generation), daemon=True).start()

    # -- client -> daemon ------------------------------------------------------------------------

    def pump_stdin(self) -> None:
        try:
            for line in self.stdin:
                if not line.strip():
                    continue
                if len(line) > MAX_FRAME_BYTES:
                    self._refuse_oversized(line)
                    continue
                self._note_outgoing(line)
                self._send(line if line.endswith(b"\n") else line + b"\n")
        except (OSError, ValueError):
            pass
        # EOF: the client is leaving. Give answers already asked for a moment to arrive
        # (`printf ... | mailctl mcp` in scripts), then exit.
        deadline = time.monotonic() + DRAIN_SECONDS
        with self._state:
            while self._in_flight and time.monotonic() < deadline and not self.done.is_set():
                self._state.wait(0.05)
        self.done.set()

    def _refuse_oversized(self, line: bytes) -> None:
        """maild would answer with `id: null`, which no client can match to its request: answer it here,
        with the request's id, and send nothing."""
        try:
            frame = json.loads(line)
        except ValueError:
            frame = None
        request_id = frame.get("id") if isinstance(frame, dict) else None
        if isinstance(frame, dict) and "id" not in frame:
            return  # an oversized notification: nobody waits for an answer
        refused = oversized_request(len(line))
        error = {"code": INVALID_REQUEST, "message": refused.message, "data": refused.data}
        self.write_out(json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode())

    def _note_outgoing(self, line: bytes) -> None:
        try:
            frame = json.loads(line)
        except ValueError:
            return  # the daemon answers malformed frames itself
        if not isinstance(frame, dict):
            return
        method = frame.get("method")
        if method == "initialize":
            self._initialize = line if line.endswith(b"\n") else line + b"\n"
        elif method == "notifications/initialized":
            self._initialized = line if line.endswith(b"\n") else line + b"\n"
        if method is not None and "id" in frame:
            with self._state:
                self._in_flight[_key(frame["id"])] = None

    def _send(self, line: bytes) -> None:
        while not self.done.is_set():
            with self._state:
                while self._sock is None and not self.done.is_set():
                    self._state.wait(0.5)
                sock = self._sock
            if sock is None:
                return
            try:
                sock.sendall(line)
            except OSError:
                self._lost(sock)
            else:
                return

    # -- daemon -> client ------------------------------------------------------------------------

    def _pump_socket(self, sock: socket.socket, generation: int) -> None:
        reader = sock.makefile("rb")
        try:
            for line in reader:
                self._deliver(line)
        except OSError:
            pass
        finally:
            reader.close()
        if not self.done.is_set():
            self._lost(sock)

    def _deliver(self, line: bytes) -> None:
        if b'"id"' in line:
            try:
                frame = json.loads(line)
            except ValueError:
                frame = None
            if isinstance(frame, dict) and "method" not in frame and "id" in frame:
                with self._state:
                    self._in_flight.pop(_key(frame["id"]), None)
                    self._state.notify_all()
        self.write_out(line)

    # -- reconnection ---------------------------------------------------------------------------

    def _lost(self, sock: socket.socket) -> None:
        with self._state:
            if self._sock is not sock:
                return  # someone else is already reconnecting
            self._sock = None
            pending, self._in_flight = list(self._in_flight), {}
        sock.close()
        for request_id in pending:
            error = {"code": RETRYABLE_DISCONNECT, "message": "maild restarted while this request was in flight; "
                     "retry it. It may have been done: retry send_message/reply_message with the same "
                     "idempotency_key so a committed send is not duplicated",
                     "data": {"retryable": True, "idempotency_key": "reuse it on send_message/reply_message"}}
            self.write_out(json.dumps({"jsonrpc": "2.0", "id": _unkey(request_id), "error": error}).encode())
        delay = 0.05
        while not self.done.is_set():
            try:
                fresh = self._open()
            except DaemonUnavailable as exc:
                if not exc.recoverable:  # e.g. a socket another user owns: retrying cannot help
                    print(f"mailctl mcp: {exc.message}", file=sys.stderr)
                    self.exit_code = 3
                    self.done.set()
                    return
                print(f"mailctl mcp: {exc.message}; retrying", file=sys.stderr)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            with self._state:
                self._sock = fresh
                self._generation += 1
                generation = self._generation
                self._state.notify_all()
            threading.Thread(target=self._pump_socket, args=(fresh, generation), daemon=True).start()
            return

    # -- lifetime -------------------------------------------------------------------------------

    def watch_parent(self) -> None:
        while not self.done.wait(PARENT_POLL_SECONDS):
            if os.getppid() != self.parent:
                self.done.set()

    def close(self) -> None:
        with self._state:
            sock, self._sock = self._sock, None
            self._state.notify_all()
        if sock is not None:
            sock.close()


def _key(request_id: Any) -> Any:
    return ("s", request_id) if isinstance(request_id, str) else ("n", request_id)


def _unkey(key: Any) -> Any:
    return key[1]


def main(root: str | None, agent: str | None, tools: str | None) -> int:
    """`mailctl mcp` from its options: the remote shim if AGENT_MAIL_REMOTE is set, else this relay
    for the mailbox `root` resolves to. The entry point calls it without loading the command line."""
    remote = os.environ.get("AGENT_MAIL_REMOTE")
    if remote:
        from mailctl.remote import run as run_remote

        # The bridge's token comes only from the environment too (AGENT_MAIL_HTTP_TOKEN).
        return run_remote(remote, os.environ.get("AGENT_MAIL_HTTP_TOKEN") or None,
                          os.environ.get("AGENT_MAIL_CACERT") or None)
    resolved = resolve_root(root)
    note = fallback_note(root, resolved)
    if note is not None:
        print(f"mailctl: {note}", file=sys.stderr)
    # The token comes only from the environment: a command-line flag would show it in `ps`.
    return run(MailboxPaths(resolved), agent or os.environ.get("AGENT_MAIL_NAME") or None,
               tools or os.environ.get("MCP_TOOLS_MODE") or None, os.environ.get("AGENT_MAIL_TOKEN") or None)


def run(paths: MailboxPaths, agent: str | None, tools: str | None, token: str | None = None) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    shim = Shim(paths, agent, tools, stdin, stdout, token)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: shim.done.set())
    try:
        shim.start()
    except DaemonUnavailable as exc:
        print(f"mailctl mcp: {exc.message}", file=sys.stderr)
        return 3
    threading.Thread(target=shim.pump_stdin, daemon=True).start()
    threading.Thread(target=shim.watch_parent, daemon=True).start()
    while not shim.done.wait(1.0):
        pass
    shim.close()
    shim.flush()
    # Reader threads may be blocked in stdin/socket reads; a normal interpreter shutdown would
    # wait on (or abort over) their buffered-IO locks. Leave at once: nothing is left to flush.
    os._exit(shim.exit_code)
