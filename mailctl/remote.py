"""`mailctl mcp --remote URL`: the stdio shim relaying an editor to a remote maild's HTTP bridge.

Standard library only, like the socket shim (mailctl/shim.py), with the same guarantees over
Streamable HTTP (JSON responses, keep-alive connections from shared/remote.py):
- each request is one POST on a worker thread (a long `wait_for_mail` does not hold up the rest);
  `initialize` goes first and alone, so its session id is known before anything else is relayed;
- a request whose connection broke after it was sent gets the retryable JSON-RPC error; one that
  never left (bridge down) waits for the bridge, with backoff, up to RECONNECT_TIMEOUT;
- a bridge that forgot the session (restart: HTTP 404) gets the client's `initialize` and
  `notifications/initialized` replayed, and the request is sent again in the new session;
- 401/403 become a JSON-RPC error saying what to fix; the shim exits with its parent or on EOF;
- a session's GET event stream is held open and what the bridge pushes on it (resources/updated,
  list_changed, server requests) is copied to stdout. A dropped stream reconnects (with Last-Event-ID
  when the bridge numbers events); a forgotten session is restored with the client's subscriptions.
  Either way, when pushes may have been missed, the client gets an `updated` for each subscription.
- a 2026-07-28 `subscriptions/listen` is POSTed on a connection of its own and its SSE answer (the
  stream) is copied to stdout as it comes; the client's `notifications/cancelled` for it closes that
  connection (ending the stream on the bridge), and a stream that breaks gets the retryable error.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, BinaryIO

from shared.errors import MailError
from shared.protocol import RETRYABLE_DISCONNECT
from shared.remote import Dropped, Endpoint, NotSent, refused, routing_headers, sse_events

PARENT_POLL_SECONDS = 0.5
RECONNECT_TIMEOUT = 30.0
DRAIN_SECONDS = 5.0
REPLAY_ID = "mailctl-remote-replayed-initialize"
RESUBSCRIBE_ID = "mailctl-remote-resubscribe"
STREAM_RETRY_MAX = 2.0  # seconds between attempts to reopen the event stream, at most
REFUSED = -32001  # JSON-RPC code for a refusal by the bridge's gate; `data.code` carries ours


class Lost(Exception):
    """The bridge is gone for longer than RECONNECT_TIMEOUT."""


class RemoteShim:
    def __init__(self, endpoint: Endpoint, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.endpoint = endpoint
        self.stdin = stdin
        self.stdout = stdout
        self.parent = os.getppid()
        self.done = threading.Event()
        self._out_lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._session: str | None = None
        self._session_generation = 0
        self._protocol: str | None = None
        self._initialize: dict[str, Any] | None = None
        self._initialized: bytes | None = None
        self._pending = 0
        self._state = threading.Condition()
        self._subscriptions: dict[str, None] = {}  # resources the client subscribed to, in order
        self._listener: threading.Thread | None = None
        self._listens: dict[str, http.client.HTTPConnection | None] = {}  # open listen streams by request id

    def write_out(self, frame: dict[str, Any] | bytes) -> None:
        line = frame if isinstance(frame, bytes) else json.dumps(frame, separators=(",", ":")).encode()
        with self._out_lock:
            self.stdout.write(line.rstrip(b"\n") + b"\n")
            self.stdout.flush()

    # -- client -> bridge ------------------------------------------------------------------------

    def pump_stdin(self) -> None:
        try:
            for line in self.stdin:
                if line.strip():
                    self._dispatch(line)
        except (OSError, ValueError):
            pass
        deadline = time.monotonic() + DRAIN_SECONDS  # `printf ... | mailctl mcp --remote`: let answers arrive
        with self._state:
            while self._pending and time.monotonic() < deadline and not self.done.is_set():
                self._state.wait(0.05)
        self.done.set()

    def _dispatch(self, line: bytes) -> None:
        try:
            frame = json.loads(line)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            self._relay(line, None)  # the bridge answers malformed frames itself
            return
        method = frame.get("method")
        if method == "initialize":
            self._initialize = frame
            self._relay(line, frame)  # alone: the session id must be known before anything else goes
            return
        if method == "notifications/initialized":
            self._initialized = line
        if method == "notifications/cancelled" and self._end_listen(frame.get("params")):
            return  # a stream ends by closing it: there is no request left on the bridge to cancel
        if method is None or "id" not in frame:
            self._relay(line, frame)  # notifications and replies keep their order
            return
        if method == "subscriptions/listen":
            with self._state:
                self._listens[json.dumps(frame["id"])] = None
            threading.Thread(target=self._relay_listen, args=(line, frame), daemon=True).start()
            return
        with self._state:
            self._pending += 1
        threading.Thread(target=self._relay_counted, args=(line, frame), daemon=True).start()

    def _relay_counted(self, line: bytes, frame: dict[str, Any]) -> None:
        try:
            self._relay(line, frame)
        finally:
            with self._state:
                self._pending -= 1
                self._state.notify_all()

    def _relay(self, line: bytes, frame: dict[str, Any] | None) -> None:
        request_id = frame.get("id") if frame is not None and "method" in frame else None
        try:
            status, headers, payload = self._post(line, frame)
        except Dropped:
            if request_id is not None:
                self._error(request_id, RETRYABLE_DISCONNECT, "the connection to the bridge broke while this "
                            "request was in flight; retry it", {"retryable": True})
            return
        except Lost as exc:
            if request_id is not None:
                self._error(request_id, RETRYABLE_DISCONNECT, str(exc), {"retryable": True})
            return
        except MailError as exc:
            print(f"mailctl mcp: {exc.code}: {exc.message}", file=sys.stderr)
            if request_id is not None:
                self._error(request_id, REFUSED, exc.message, {"code": exc.code, "message": exc.message})
            return
        problem = refused(status, self.endpoint)
        if problem is not None and request_id is not None:
            print(f"mailctl mcp: {problem.code}: {problem.message}", file=sys.stderr)
            self._error(request_id, REFUSED, problem.message, {"code": problem.code, "message": problem.message})
            return
        method = frame.get("method") if frame is not None else None
        if method == "initialize" and status == 200:
            self._adopt_session(headers, payload)
        elif method in ("resources/subscribe", "resources/unsubscribe") and status == 200:
            self._note_subscription(method, frame, payload)
        if payload.strip() and request_id is not None:
            self.write_out(payload)

    def _relay_listen(self, line: bytes, frame: dict[str, Any]) -> None:
        """Copy one listen stream to stdout until it ends; no read timeout (the bridge sends nothing
        while no mail comes), so a bridge that vanishes is noticed by TCP or at the client's cancel."""
        request_id, key = frame["id"], json.dumps(frame["id"])
        answered = False
        try:
            status, headers, response, conn = self.endpoint.open_stream(self._headers(frame), None, body=line)
        except (NotSent, MailError) as exc:
            with self._state:
                self._listens.pop(key, None)
            self._error(request_id, RETRYABLE_DISCONNECT, f"{exc}; listen again", {"retryable": True})
            return
        with self._state:
            if key not in self._listens:  # cancelled while it was being opened
                conn.close()
                return
            self._listens[key] = conn
        try:
            problem = refused(status, self.endpoint)
            if problem is not None:
                self._error(request_id, REFUSED, problem.message, {"code": problem.code, "message": problem.message})
                answered = True
            elif not headers.get("content-type", "").startswith("text/event-stream"):
                payload = response.read()  # refused before the stream began: one JSON answer
                if payload.strip():
                    self.write_out(payload)
                    answered = True
            else:
                for kind, data, _ in sse_events(response):
                    if kind == "message" and data.strip():
                        self.write_out(data)
                        answered = answered or _answers(data, request_id)
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            conn.close()
            with self._state:
                ended_here = key in self._listens  # else the client cancelled it
                self._listens.pop(key, None)
        if not answered and ended_here and not self.done.is_set():
            self._error(request_id, RETRYABLE_DISCONNECT, "the listen stream from the bridge broke; listen again",
                        {"retryable": True})

    def _end_listen(self, params: Any) -> bool:
        """The client cancelled a listen: close its stream. False when the id is not an open listen."""
        key = json.dumps(params.get("requestId")) if isinstance(params, dict) else None
        with self._state:
            if key not in self._listens:
                return False
            conn = self._listens.pop(key)
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the relaying thread's read
        return True

    def _post(self, line: bytes, frame: dict[str, Any] | None) -> tuple[int, dict[str, str], bytes]:
        """POST, waiting out a bridge that is down and re-opening a session it forgot."""
        delay = 0.05
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            generation = self._session_generation
            headers = self._headers(frame)
            try:
                status, reply_headers, payload = self.endpoint.post(line, headers)
            except NotSent as exc:
                if self.done.is_set() or time.monotonic() > deadline:
                    raise Lost(f"{exc}; gave up after {RECONNECT_TIMEOUT:.0f} s, retry later") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if status == 404 and "Mcp-Session-Id" in headers and self._initialize is not None:
                self._restore(generation)  # the bridge restarted and forgot the session
                if time.monotonic() > deadline:
                    raise Lost("the bridge keeps forgetting the session; retry later")
                continue
            return status, reply_headers, payload

    def _headers(self, frame: dict[str, Any] | None) -> dict[str, str]:
        headers = routing_headers(frame) if frame is not None else {}
        if self._session is not None and frame is not None and frame.get("method") != "initialize":
            headers["Mcp-Session-Id"] = self._session
            if self._protocol and "MCP-Protocol-Version" not in headers:
                headers["MCP-Protocol-Version"] = self._protocol
        return headers

    def _adopt_session(self, headers: dict[str, str], payload: bytes) -> None:
        self._session = headers.get("mcp-session-id") or None
        try:
            version = json.loads(payload)["result"]["protocolVersion"]
        except (ValueError, KeyError, TypeError):
            version = None
        self._protocol = version if isinstance(version, str) else None
        self._session_generation += 1
        if self._session is not None and self._listener is None:
            self._listener = threading.Thread(target=self.listen, daemon=True)
            self._listener.start()

    def _note_subscription(self, method: str, frame: dict[str, Any] | None, payload: bytes) -> None:
        """Remember what the client subscribed to, so a restored session can subscribe again."""
        params = frame.get("params") if frame is not None else None
        uri = params.get("uri") if isinstance(params, dict) else None
        try:
            succeeded = "result" in json.loads(payload)
        except (ValueError, TypeError):
            succeeded = False
        if isinstance(uri, str) and succeeded:
            if method == "resources/subscribe":
                self._subscriptions[uri] = None
            else:
                self._subscriptions.pop(uri, None)

    def _restore(self, generation: int) -> None:
        """Open a new session by replaying the client's handshake (once, however many threads saw 404)."""
        with self._session_lock:
            if self._session_generation != generation:
                return  # another thread already restored it
            assert self._initialize is not None
            replay = json.dumps({**self._initialize, "id": REPLAY_ID}).encode()
            try:
                status, headers, payload = self.endpoint.post(replay, routing_headers(self._initialize))
                if status != 200:
                    raise Lost(f"the bridge refused to restore the session (HTTP {status}); restart the client")
                self._adopt_session(headers, payload)
                if self._initialized is not None:
                    self.endpoint.post(self._initialized, self._headers({"method": "notifications/initialized"}))
                for n, uri in enumerate(list(self._subscriptions)):
                    frame = {"jsonrpc": "2.0", "id": f"{RESUBSCRIBE_ID}-{n}", "method": "resources/subscribe",
                             "params": {"uri": uri}}
                    self.endpoint.post(json.dumps(frame).encode(), self._headers(frame))
            except (NotSent, Dropped) as exc:  # the request itself was not run: the client may retry it
                raise Lost(f"the bridge went away while the session was being restored ({exc}); retry") from None

    def _look_again(self) -> None:
        """An `updated` for each subscribed resource: pushes may have been missed, the client re-reads."""
        for uri in list(self._subscriptions):
            self.write_out({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}})

    def _error(self, request_id: Any, code: int, message: str, data: dict[str, Any]) -> None:
        self.write_out({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message,
                                                                      "data": data}})

    # -- bridge -> client -------------------------------------------------------------------------

    def listen(self) -> None:
        """Hold the session's GET event stream open and copy each message on it to stdout.

        A stream that ends or goes silent (no ping within the read timeout) is reopened, with
        Last-Event-ID when the bridge numbers its events, so nothing pushed meanwhile is lost. A session
        the bridge forgot (404) is restored here too, so an idle client keeps its notifications."""
        delay, last_id, stream_session, opened = 0.05, None, None, False
        while not self.done.is_set():
            session, generation = self._session, self._session_generation
            if session != stream_session:
                last_id, stream_session = None, session  # event ids belong to one session
            status, events, last_id = self._stream_once(session, last_id, reopened=opened)
            opened = opened or status == 200
            if status == 404 and self._initialize is not None:
                with contextlib.suppress(Lost):  # still away: the next attempt tries again
                    self._restore(generation)
                    continue  # open the new session's stream at once: its pushes start now
            elif status in (400, 401, 403, 405, 406):
                print(f"mailctl mcp: the bridge refused the event stream (HTTP {status}); server "
                      "notifications will not arrive", file=sys.stderr)
                return
            if events:
                delay = 0.05
            else:  # refused, unreachable or ended at once: back off before the next attempt
                self.done.wait(delay)
                delay = min(delay * 2, STREAM_RETRY_MAX)

    def _stream_once(self, session: str | None, last_id: str | None, *,
                     reopened: bool) -> tuple[int, int, str | None]:
        """Open the stream once and relay it until it ends: (HTTP status or 0, events seen, last event id).
        A stream reopened without Last-Event-ID may have missed pushes: the client is told to look again."""
        headers = {"Mcp-Session-Id": session or ""}
        if self._protocol:
            headers["MCP-Protocol-Version"] = self._protocol
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            status, _, response, conn = self.endpoint.open_stream(headers)
        except (NotSent, MailError):
            return 0, 0, last_id
        events = 0
        try:
            if status == 200:
                if reopened and last_id is None:
                    self._look_again()
                for kind, data, event_id in sse_events(response):
                    events += 1
                    last_id = event_id or last_id
                    if kind == "message" and data.strip():
                        self.write_out(data)
                if events == 0:
                    last_id = None  # the bridge no longer holds that event: start afresh
        except (OSError, http.client.HTTPException):
            pass  # a broken or silent stream: the caller opens it again
        finally:
            conn.close()
        return status, events, last_id

    # -- lifetime -------------------------------------------------------------------------------

    def watch_parent(self) -> None:
        while not self.done.wait(PARENT_POLL_SECONDS):
            if os.getppid() != self.parent:
                self.done.set()


def _answers(data: bytes, request_id: Any) -> bool:
    """Whether an SSE message is the final answer (result or error) to `request_id`."""
    try:
        message = json.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("id") == request_id and "method" not in message


def run(url: str, token: str | None, cacert: str | None) -> int:
    try:
        endpoint = Endpoint(url, token, cacert)
    except MailError as exc:
        print(f"mailctl mcp: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    shim = RemoteShim(endpoint, sys.stdin.buffer, sys.stdout.buffer)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: shim.done.set())
    threading.Thread(target=shim.pump_stdin, daemon=True).start()
    threading.Thread(target=shim.watch_parent, daemon=True).start()
    while not shim.done.wait(1.0):
        pass
    endpoint.close()
    with shim._out_lock:
        sys.stdout.flush()
    os._exit(0)  # worker threads may be blocked in reads; nothing is left to flush
