"""Reaching a remote maild through its HTTP bridge: one endpoint (URL, TLS, token, keep-alive pool)
and `RemoteClient`, the blocking client `mailctl --remote URL …` uses in place of the socket one.

Standard library only (`http.client`, `ssl`): the remote shim and the CLI must stay as light as the
socket ones. TLS is verified by default (system roots, or `--cacert` for a private CA); the token
comes from AGENT_MAIL_HTTP_TOKEN only, never from a flag (`ps` would show it). It does not relay
stdio (mailctl/remote.py does) and knows nothing of sessions beyond the `Mcp-Session-Id` header;
it opens a session's GET event stream and parses server-sent events, the shim decides what to do.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import select
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from shared.client import DaemonClient, envelope_meta
from shared.errors import (
    AuthenticationRequired,
    DaemonUnavailable,
    InvalidArgument,
    MailError,
    ProtocolError,
    from_dict,
)
from shared.protocol import MODERN_PROTOCOL_VERSION, PROTOCOL_VERSION_META_KEY

TOKEN_ENV = "AGENT_MAIL_HTTP_TOKEN"  # noqa: S105 - a variable name, not a secret
REMOTE_ENV = "AGENT_MAIL_REMOTE"
CACERT_ENV = "AGENT_MAIL_CACERT"
REQUEST_TIMEOUT = 120.0  # long enough for wait_for_mail; the bridge has its own deadline
STREAM_READ_TIMEOUT = 45.0  # the bridge pings an open event stream every 15 s: silence this long is a dead link
IDLE_SECONDS = 4.0  # hypercorn closes idle keep-alive connections after 5 s: never reuse one that old


class NotSent(Exception):
    """The request never left this machine (no connection): safe to send again."""


class Dropped(Exception):
    """The connection broke after the request was sent: it may or may not have run."""


class Endpoint:
    """A bridge URL with its TLS context and a pool of keep-alive connections (thread-safe)."""

    def __init__(self, url: str, token: str | None, cacert: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"--remote {url!r}: expected an http:// or https:// URL such as "
                                  "https://mail.example.com/mcp/")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path or "/mcp/"
        self.token = token
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                self.context = ssl.create_default_context(cafile=cacert)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(f"--cacert {cacert}: cannot load it as a PEM CA bundle ({exc})") from None
        elif cacert:
            raise InvalidArgument(f"--cacert needs an https:// URL; {url} is plain HTTP")
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn, since = self._idle.pop()
                if time.monotonic() - since < IDLE_SECONDS and not _closed_by_peer(conn):
                    return conn
                conn.close()
        return self._new_connection(REQUEST_TIMEOUT)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((conn, time.monotonic()))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def post(self, body: bytes, headers: dict[str, str],
             timeout: float | None = None) -> tuple[int, dict[str, str], bytes]:
        """POST one JSON-RPC frame (waiting at most `timeout`, default REQUEST_TIMEOUT). Raises NotSent (no
        connection), Dropped (lost mid-request), or MailError for a certificate or host that TLS refuses."""
        sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        conn.timeout = REQUEST_TIMEOUT if timeout is None else timeout
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        try:
            if conn.sock is None:
                conn.connect()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise DaemonUnavailable(
                f"the TLS certificate of {self.host}:{self.port} was refused ({exc.verify_message}); pass "
                "--cacert PEM for a private CA, or check the host name in the URL") from None
        except ssl.SSLError as exc:
            conn.close()
            raise DaemonUnavailable(f"TLS with {self.host}:{self.port} failed ({exc.reason}); is it an https "
                                    "endpoint?") from None
        except OSError as exc:
            conn.close()
            raise NotSent(f"cannot reach {self.host}:{self.port} ({exc.strerror or exc})") from None
        try:
            conn.request("POST", self.path, body=body, headers=sent)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Dropped(f"the connection to {self.host}:{self.port} broke ({exc})") from None
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        if response.will_close:
            conn.close()
        else:
            self._release(conn)
        return response.status, reply_headers, payload


    def open_stream(self, headers: dict[str, str], timeout: float | None = STREAM_READ_TIMEOUT,
                    body: bytes | None = None
                    ) -> tuple[int, dict[str, str], http.client.HTTPResponse, http.client.HTTPConnection]:
        """GET the session's server-to-client stream on a connection of its own (never pooled: it stays
        open); with `body`, POST it instead (a 2026-07-28 `subscriptions/listen`, whose answer is a stream).
        Returns the status, headers, the response to read events from, and the connection to close.
        Raises NotSent (no connection or no answer) or MailError for a certificate TLS refuses."""
        sent = {"Accept": "text/event-stream", **headers}
        if body is not None:
            sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        conn = self._new_connection(timeout)
        try:
            conn.connect()
            conn.request("GET" if body is None else "POST", self.path, body=body, headers=sent)
            response = conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise DaemonUnavailable(f"the TLS certificate of {self.host}:{self.port} was refused "
                                    f"({exc.verify_message})") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise NotSent(f"cannot open the event stream at {self.host}:{self.port} ({exc})") from None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response, conn

    def _new_connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def sse_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, bytes, str | None]]:
    """(event type, data, id) for each event of a text/event-stream body, until it ends. Comments
    (`: ping`) are skipped; an event without data (the SDK's priming event) still yields its id."""
    event, event_id, seen = "message", None, False
    data: list[bytes] = []
    while True:
        line = response.readline()
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if seen:
                yield event, b"\n".join(data), event_id
            event, event_id, seen, data = "message", None, False, []
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"data":
            data.append(value)
            seen = True
        elif name == b"event":
            event, seen = value.decode("utf-8", "replace"), True
        elif name == b"id":
            event_id, seen = value.decode("utf-8", "replace"), True


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable has been closed (or broken) by the server."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def routing_headers(frame: dict[str, Any]) -> dict[str, str]:
    """The headers a 2026-07-28 request carries beside its envelope (the bridge checks they agree)."""
    params = frame.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(version, str) or not isinstance(frame.get("method"), str):
        return {}
    assert isinstance(params, dict)
    headers = {"MCP-Protocol-Version": version, "Mcp-Method": frame["method"]}
    name = params.get("name") if frame["method"] in ("tools/call", "prompts/get") else params.get("uri")
    if isinstance(name, str) and frame["method"] in ("tools/call", "prompts/get", "resources/read"):
        headers["Mcp-Name"] = name
    return headers


def refused(status: int, endpoint: Endpoint) -> MailError | None:
    """The error for an HTTP refusal the gate answers before MCP (None: let the JSON-RPC body speak)."""
    where = f"the bridge at {endpoint.url}"
    if status == 401:
        hint = ("set AGENT_MAIL_HTTP_TOKEN to its bearer token or a JWT it trusts" if not endpoint.token
                else "the token in AGENT_MAIL_HTTP_TOKEN is wrong, expired or not trusted there")
        return AuthenticationRequired(f"{where} refused the credentials (HTTP 401): {hint}")
    if status == 403:
        return AuthenticationRequired(f"{where} refused this call (HTTP 403): the token lacks the writer role, "
                                      "or the Origin is not allowed")
    if status == 421:
        return InvalidArgument(f"{where} does not serve this host name (HTTP 421): add it to HTTP_ALLOWED_HOSTS")
    if status == 429:
        return MailError(f"{where} rate-limited this call (HTTP 429): slow down and retry")
    if status == 404:
        return InvalidArgument(f"{where} has no MCP endpoint at {endpoint.path} (HTTP 404): the path is usually /mcp/")
    return None


class RemoteClient(DaemonClient):
    """`DaemonClient` over the HTTP bridge, stateless: every call is one POST with its own envelope."""

    def __init__(self, url: str, *, token: str | None = None, cacert: str | None = None) -> None:
        self.endpoint = Endpoint(url, token if token is not None else os.environ.get(TOKEN_ENV) or None,
                                 cacert or os.environ.get(CACERT_ENV) or None)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.endpoint.close()

    def request(self, method: str, params: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> dict[str, Any]:
        body = dict(params or {})
        body["_meta"] = {**body.get("_meta", {}), **envelope_meta()}
        frame = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": body}
        headers = routing_headers(frame)
        headers["MCP-Protocol-Version"] = MODERN_PROTOCOL_VERSION
        try:
            status, _, payload = self.endpoint.post(json.dumps(frame, separators=(",", ":")).encode(), headers, timeout)
        except NotSent as exc:
            raise DaemonUnavailable(f"{exc}; is the bridge running (mailctl http on) and the URL right?") from None
        except Dropped as exc:
            raise DaemonUnavailable(f"{exc}; the call may or may not have run, check before retrying") from None
        problem = refused(status, self.endpoint)
        if problem is not None:
            raise problem
        try:
            reply = json.loads(payload)
        except ValueError:
            raise ProtocolError(f"the bridge answered HTTP {status} with a body that is not JSON") from None
        if "error" in reply:
            err = reply["error"]
            detail = err.get("data")
            if isinstance(detail, dict) and isinstance(detail.get("code"), str):
                raise from_dict(detail)
            raise ProtocolError(f"{err.get('message')} (JSON-RPC {err.get('code')})", data=err)
        result: dict[str, Any] = reply["result"]
        return result
