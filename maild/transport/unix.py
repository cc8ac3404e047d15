"""The Unix-socket transport: newline-delimited JSON-RPC 2.0, one MCP server session per connection.

Framing and hygiene live here: frames over the size limit, invalid JSON and non-JSON-RPC objects
get a JSON-RPC error on the same connection, which stays open (so does the daemon). An optional
first `maild/hello` notification is consumed here and handed to the session registry; every
other frame goes to the SDK's `Server.run`, which answers MCP in whichever era the client speaks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream
from mcp import types
from mcp.server import Server
from mcp.server.models import InitializationOptions
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from maild.services.sessions import Session, Sessions, current_session
from shared.errors import MailError
from shared.protocol import HELLO_METHOD, INTERNAL_ERROR, INVALID_REQUEST, MAX_FRAME_BYTES, PARSE_ERROR

log = logging.getLogger(__name__)

_OVERSIZE = object()


class LineReader:
    """Split a byte stream into lines, refusing (but skipping past) lines over `limit` bytes."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._buffer = bytearray()
        self._discarding = False

    async def next(self) -> bytes | object | None:
        """The next line (without newline), `_OVERSIZE` for a refused one, or None at EOF."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                if self._discarding:
                    self._discarding = False
                    return _OVERSIZE
                if len(line) > self._limit:
                    return _OVERSIZE
                return line
            if len(self._buffer) > self._limit:
                self._buffer.clear()
                self._discarding = True
            try:
                chunk = await self._stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return None
            self._buffer += chunk


def _error_frame(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    frame = {"jsonrpc": "2.0", "id": request_id, "error": error}
    return json.dumps(frame).encode() + b"\n"


class PendingRequests:
    """Ids of requests handed to the server and not yet answered.

    A client may half-close its side right after its last request (`socat`, `printf | nc`):
    we keep the session open until those requests are answered instead of cancelling them.
    """

    def __init__(self) -> None:
        self._ids: set[Any] = set()
        self._drained = anyio.Event()
        self._drained.set()

    def add(self, request_id: Any) -> None:
        self._ids.add(request_id)
        self._drained = anyio.Event()

    def answered(self, request_id: Any) -> None:
        self._ids.discard(request_id)
        if not self._ids:
            self._drained.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()


@dataclass
class ConnectionCounter:
    """Live connection count plus a callback, so the lifecycle can run its idle timer."""

    on_change: Callable[[int], None]
    count: int = 0

    def add(self, delta: int) -> None:
        self.count += delta
        self.on_change(self.count)


class UnixTransport:
    def __init__(
        self,
        server: Server[Any],
        init_options: InitializationOptions,
        sessions: Sessions,
        counter: ConnectionCounter,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self._server = server
        self._init_options = init_options
        self._sessions = sessions
        self._counter = counter
        self._max_frame = max_frame_bytes

    async def serve(self, path: Path, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind `path` (mode 0600) and serve until cancelled. Only the lock holder may call this."""
        await anyio.Path(path).unlink(missing_ok=True)  # a stale socket of a dead daemon; we hold the lock
        old_umask = os.umask(0o177)
        try:
            listener = await anyio.create_unix_listener(path)
        finally:
            os.umask(old_umask)
        await anyio.Path(path).chmod(0o600)
        log.info("listening on %s", path)
        async with listener:
            task_status.started()
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        session = self._sessions.connect()
        current_session.set(session)
        self._counter.add(1)
        try:
            async with stream:
                await self._serve_connection(stream, session)
        except Exception:
            log.exception("connection %s failed", session.id)
        finally:
            self._counter.add(-1)
            with anyio.CancelScope(shield=True):
                await self._sessions.close(session)

    async def _serve_connection(self, stream: anyio.abc.SocketStream, session: Session) -> None:
        send_lock = anyio.Lock()

        async def send_raw(data: bytes) -> None:
            async with send_lock:
                await stream.send(data)

        to_server_send, to_server_recv = anyio.create_memory_object_stream[SessionMessage | Exception](64)
        from_server_send, from_server_recv = anyio.create_memory_object_stream[SessionMessage](64)
        pending = PendingRequests()

        async def pump_out() -> None:
            async with from_server_recv:
                async for item in from_server_recv:
                    if isinstance(item.message, types.JSONRPCResponse | types.JSONRPCError):
                        pending.answered(item.message.id)
                    payload = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                    try:
                        await send_raw(payload.encode() + b"\n")
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return  # the client left; drain nothing more

        async def pump_in() -> None:
            async with to_server_send:
                await self._read_frames(stream, session, to_server_send, send_raw, pending)
                await pending.wait_drained()  # EOF from the client: answer what it already asked

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_out)
            tg.start_soon(pump_in)
            await self._server.run(to_server_recv, from_server_send, self._init_options)
            tg.cancel_scope.cancel()

    async def _read_frames(
        self,
        stream: anyio.abc.SocketStream,
        session: Session,
        to_server: MemoryObjectSendStream[SessionMessage | Exception],
        send_raw: Callable[[bytes], Any],
        pending: PendingRequests,
    ) -> None:
        reader = LineReader(stream, self._max_frame)
        first = True
        while True:
            line = await reader.next()
            if line is None:
                return
            if line is _OVERSIZE:
                await send_raw(_error_frame(None, INVALID_REQUEST, f"frame exceeds {self._max_frame} bytes"))
                continue
            assert isinstance(line, bytes)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                await send_raw(_error_frame(None, PARSE_ERROR, f"Parse error: {exc}"))
                continue
            if first and isinstance(obj, dict) and obj.get("method") == HELLO_METHOD and "id" not in obj:
                first = False
                params = obj.get("params")
                try:
                    await self._sessions.hello(session, params if isinstance(params, dict) else {})
                except MailError as exc:  # e.g. disk full: tell the client (a notification has no id)
                    await send_raw(_error_frame(None, INTERNAL_ERROR, f"hello failed: {exc.message}",
                                                exc.to_dict()))
                continue
            first = False
            try:
                message = types.jsonrpc_message_adapter.validate_python(obj, by_name=False)
            except ValidationError:
                request_id = obj.get("id") if isinstance(obj, dict) else None
                if not isinstance(request_id, str | int) or isinstance(request_id, bool):
                    request_id = None
                await send_raw(
                    _error_frame(request_id, INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
                )
                continue
            if isinstance(message, types.JSONRPCRequest):
                pending.add(message.id)
            await to_server.send(SessionMessage(message))
