"""The Unix-socket transport: newline-delimited JSON-RPC 2.0, one MCP conversation per connection.

Framing and hygiene live here: frames over the size limit, invalid or too deeply nested JSON and
non-JSON-RPC objects get a JSON-RPC error on the same connection, which stays open (so does the
daemon). An optional first `maild/hello` notification goes to the session registry. Each frame is
decoded once: `tools/call`, `tools/list` and `resources/read` whose era is known go to the lean
dispatcher; everything else (handshakes, notifications, rare methods) to the SDK's `Server.run`,
started — and imported — only when a connection first needs it. Flow control: see flow.py;
reading the socket on asyncio: receiver.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream

from maild.mcp_surface.dispatch import LEAN_METHODS, LeanDispatcher, lean_request, modern_version
from maild.services.sessions import Session, Sessions, current_session
from maild.transport.flow import MAX_IN_FLIGHT, MAX_UNSENT_BYTES, InFlight
from maild.transport.receiver import Receiver, open_receiver
from shared.errors import MailError
from shared.protocol import (
    HELLO_METHOD,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LEGACY_PROTOCOL_VERSION,
    MAX_FRAME_BYTES,
    PARSE_ERROR,
)

if TYPE_CHECKING:
    from mcp.server import Server
    from mcp.server.models import InitializationOptions
    from mcp.shared.message import SessionMessage

log = logging.getLogger(__name__)

_OVERSIZE = object()
SdkFactory = Callable[[], "tuple[Server[Any], InitializationOptions]"]


class LineReader:
    """Split a byte stream into lines, refusing (but skipping past) lines over `limit` bytes."""

    def __init__(self, stream: Receiver, limit: int) -> None:
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
                if newline + 1 == len(self._buffer):
                    self._buffer = bytearray()  # drained: an idle connection keeps no spent capacity
                else:
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
                # Appended without a local name: a chunk held while awaiting the next one would
                # stay alive for as long as the connection idles (a waiter's whole request).
                self._buffer += await self._stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return None


def _error_frame(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    frame = {"jsonrpc": "2.0", "id": request_id, "error": error}
    return json.dumps(frame).encode() + b"\n"


def encode(frame: dict[str, Any]) -> bytes:
    """One JSON line, UTF-8 as the SDK writes it (non-ASCII text is not escaped)."""
    try:
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate in some text: escaped JSON is still valid JSON
        return json.dumps(frame, separators=(",", ":"), default=str).encode() + b"\n"


def _request_id(obj: Any) -> Any:
    """The id of a request frame if it is a valid JSON-RPC id (str or int), else None."""
    found = obj.get("id") if isinstance(obj, dict) else None
    return found if isinstance(found, str | int) and not isinstance(found, bool) else None


@dataclass
class ConnectionCounter:
    """Live connection count plus a callback, so the lifecycle can run its idle timer."""

    on_change: Callable[[int], None]
    count: int = 0

    def add(self, delta: int) -> None:
        self.count += delta
        self.on_change(self.count)


class _Connection:
    """One client connection's state: its writer, flow control, era, and (lazily) its SDK session."""

    def __init__(self, stream: anyio.abc.SocketStream, tg: anyio.abc.TaskGroup, sdk: SdkFactory,
                 flow: InFlight) -> None:
        self.stream = stream
        self.tg = tg
        self.flow = flow
        self.legacy_version: str | None = None  # set once the SDK answered this connection's initialize
        self.initialize_id: Any = None
        self.lean_scopes: dict[Any, anyio.CancelScope] = {}
        self.fast_path = True
        self._sdk_factory = sdk
        self._sdk_in: MemoryObjectSendStream[Any] | None = None
        self._send_lock: anyio.Lock | None = None  # made at the first answer: idle waiters need none
        self._raw: socket.socket | None = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)  # noqa: S610 - anyio
        self._broken = False
        # Requests run on worker tasks that outlive them: a task per request cost ~7 % of the
        # daemon's time under 16 clients. Workers wait here for the next request once idle.
        self._jobs_in, self._jobs_out = anyio.create_memory_object_stream[tuple[Any, tuple[Any, ...]]](math.inf)
        self._idle = 0

    def submit(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run `fn(*args)` concurrently with the reader, on an idle worker task or a new one."""
        if self._idle:
            self._idle -= 1  # claimed now: a second submit before the worker wakes must not count on it
            self._jobs_in.send_nowait((fn, args))
        else:
            self.tg.start_soon(self._work, fn, args)

    async def _work(self, fn: Callable[..., Awaitable[None]], args: tuple[Any, ...]) -> None:
        while True:
            await fn(*args)
            self._idle += 1
            try:
                fn, args = await self._jobs_out.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return

    def close_jobs(self) -> None:
        """No more requests: idle workers end (call once the connection's requests are answered)."""
        self._jobs_in.close()
        self._jobs_out.close()

    async def send(self, data: bytes) -> None:
        """Write one frame; after the client has gone, writes are dropped (answers still count as done).

        A frame is first offered straight to the (non-blocking) socket when no other frame is being
        written: the stream's own send yields to the event loop twice (the lock, the stream), so the
        64 waiters one commit wakes were each encoded before the first answer left. Only what the
        socket does not take at once waits for writability, in order, under the lock."""
        if self._broken:
            return
        if self._send_lock is None:
            self._send_lock = anyio.Lock(fast_acquire=True)
        self.flow.queued(len(data))
        try:
            # Nobody else writing: straight into the socket's buffer, without the lock's and the
            # stream's yields to the loop (two loop rounds per answer, ~5 % of a send's loop CPU).
            # Whatever the buffer cannot take goes through the stream, still holding the lock.
            self._send_lock.acquire_nowait()
        except anyio.WouldBlock:
            try:
                async with self._send_lock:
                    await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._broken = True
            finally:
                self.flow.sent(len(data))
            return
        try:
            sent = self._send_now(data)
            if sent < len(data):
                await self.stream.send(data[sent:])
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._broken = True
        finally:
            self._send_lock.release()
            self.flow.sent(len(data))

    def _send_now(self, data: bytes) -> int:
        """Bytes written without waiting (0 when the buffer is full or there is no raw socket)."""
        if self._raw is None:
            return 0
        try:
            return self._raw.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:  # the peer is gone: as the stream would say
            raise anyio.BrokenResourceError from exc

    async def to_sdk(self, message: SessionMessage) -> None:
        if self._sdk_in is None:
            self._sdk_in = self._start_sdk()
        await self._sdk_in.send(message)

    def _start_sdk(self) -> MemoryObjectSendStream[Any]:
        from mcp.shared.message import SessionMessage

        server, init_options = self._sdk_factory()
        in_send, in_recv = anyio.create_memory_object_stream[SessionMessage | Exception](MAX_IN_FLIGHT)
        out_send, out_recv = anyio.create_memory_object_stream[SessionMessage](MAX_IN_FLIGHT)

        async def run() -> None:
            async with out_send:
                await server.run(in_recv, out_send, init_options)

        self.tg.start_soon(self._pump_out, out_recv)
        self.tg.start_soon(run)
        return in_send

    async def _pump_out(self, out_recv: Any) -> None:
        from mcp import types

        async with out_recv:
            async for item in out_recv:
                message = item.message
                try:
                    payload = message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
                except ValueError:  # a lone surrogate echoed back (an id, a name): escaped JSON instead
                    payload = encode(message.model_dump(mode="python", by_alias=True, exclude_unset=True))
                if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                    if (isinstance(message, types.JSONRPCResponse) and self.initialize_id is not None
                            and message.id == self.initialize_id):
                        # Only the era the golden test covers; older versions' answers are sieved
                        # differently by the SDK (no structuredContent in 2024-11-05), so it keeps them.
                        version = message.result.get("protocolVersion")
                        self.legacy_version = version if version == LEGACY_PROTOCOL_VERSION else None
                    await self.send(payload)
                    self.flow.answered(message.id)
                else:
                    await self.send(payload)

    async def close_sdk(self) -> None:
        if self._sdk_in is not None:
            await self._sdk_in.aclose()


class UnixTransport:
    def __init__(
        self,
        sdk: SdkFactory,
        sessions: Sessions,
        counter: ConnectionCounter,
        lean: LeanDispatcher | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_unsent_bytes: int = MAX_UNSENT_BYTES,
    ) -> None:
        """`sdk` builds the SDK server on first use; `lean` None sends every frame to the SDK."""
        self._sdk = sdk
        self._sessions = sessions
        self._counter = counter
        self._lean = lean
        self._max_frame = max_frame_bytes
        self._max_in_flight = max_in_flight
        self._max_unsent = max_unsent_bytes

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
        async with anyio.create_task_group() as tg:
            conn = _Connection(stream, tg, self._sdk, InFlight(self._max_in_flight, self._max_unsent))
            try:
                await self._read_frames(conn, session)
                self._sessions.hang_up(session)  # long waits (wait_for_mail) end now: nobody will read them
                await conn.flow.wait_drained()  # EOF from the client: answer what it already asked
                await conn.close_sdk()
            finally:
                conn.close_jobs()

    async def _read_frames(self, conn: _Connection, session: Session) -> None:
        source, watched = open_receiver(conn.stream)
        reader = LineReader(source, self._max_frame)
        first = True
        try:
            while True:
                line = await reader.next()
                if line is None:
                    return
                first = await self._on_line(conn, session, line, first)
                # Not bound while awaiting the next line: an idle connection (a client in wait_for_mail)
                # would otherwise keep its last request, raw and decoded, alive for as long as it waits.
                del line
        finally:
            if watched is not None:
                watched.close()  # before the socket closes: the loop must not watch a closed fd

    async def _on_line(self, conn: _Connection, session: Session, line: bytes | object, first: bool) -> bool:
        """Handle one frame; returns whether the next frame is still the connection's first."""
        if line is _OVERSIZE:
            await conn.send(_error_frame(None, INVALID_REQUEST, f"frame exceeds {self._max_frame} bytes"))
            return first
        assert isinstance(line, bytes)
        if not line.strip():
            return first
        try:
            obj = json.loads(line)
        except RecursionError:
            await conn.send(_error_frame(None, PARSE_ERROR, "Parse error: JSON nested too deeply"))
            return first
        except (ValueError, UnicodeDecodeError) as exc:
            await conn.send(_error_frame(None, PARSE_ERROR, f"Parse error: {exc}"))
            return first
        if first and isinstance(obj, dict) and obj.get("method") == HELLO_METHOD and "id" not in obj:
            params = obj.get("params")
            params = params if isinstance(params, dict) else {}
            conn.fast_path = params.get("fast_path") is not False  # false: the SDK answers everything
            try:
                await self._sessions.hello(session, params)
            except MailError as exc:  # e.g. disk full: tell the client (a notification has no id)
                await conn.send(_error_frame(None, INTERNAL_ERROR, f"hello failed: {exc.message}",
                                             exc.to_dict()))
            return False
        await self._dispatch(conn, obj)
        return False

    async def _dispatch(self, conn: _Connection, obj: Any) -> None:
        request_id = _request_id(obj)
        if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
            await conn.send(_error_frame(request_id, INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message"))
            return
        method = obj.get("method")
        if self._lean is not None and conn.fast_path and method in LEAN_METHODS and request_id is not None:
            version = conn.legacy_version or modern_version(obj.get("params"))
            if version is not None:
                await conn.flow.admit(request_id)
                conn.submit(self._run_lean, conn, lean_request(obj), version, request_id)
                return
        if method == "notifications/cancelled":
            if self._cancel_lean(conn, obj):
                return
            # The SDK sends no answer to a request it cancels: release its in-flight slot here.
            params = obj.get("params")
            conn.flow.answered(params.get("requestId") if isinstance(params, dict) else None)
        await self._to_sdk(conn, obj, request_id)

    async def _to_sdk(self, conn: _Connection, obj: dict[str, Any], request_id: Any, admitted: bool = False) -> None:
        from mcp import types
        from mcp.shared.message import SessionMessage
        from pydantic import ValidationError

        try:
            message = types.jsonrpc_message_adapter.validate_python(obj, by_name=False)
        except (ValidationError, RecursionError):
            if admitted:
                conn.flow.answered(request_id)
            await conn.send(_error_frame(request_id, INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message"))
            return
        if isinstance(message, types.JSONRPCRequest):
            if not admitted:
                await conn.flow.admit(message.id)
            if message.method == "initialize":
                conn.initialize_id = message.id
        try:
            await conn.to_sdk(SessionMessage(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            if isinstance(message, types.JSONRPCRequest):
                conn.flow.answered(message.id)
                await conn.send(_error_frame(message.id, INTERNAL_ERROR, "the MCP session of this connection ended"))

    async def _run_lean(self, conn: _Connection, obj: dict[str, Any], version: str, request_id: Any) -> None:
        assert self._lean is not None
        answered = True
        # The finally covers the cancelled case too (notifications/cancelled): a cancelled request
        # gets no answer, but must still release its in-flight slot, or EOF would wait for it forever.
        try:
            with anyio.CancelScope() as scope:
                conn.lean_scopes[request_id] = scope
                try:
                    response = await self._lean.answer(obj, version)
                except Exception:  # the top of a request: log it, answer it, keep the connection
                    log.exception("request %r (%s) failed", request_id, obj.get("method"))
                    response = {"jsonrpc": "2.0", "id": request_id,
                                "error": {"code": INTERNAL_ERROR, "message": "Internal server error"}}
                if response is None:  # not the common case after all: the SDK answers it (and releases it)
                    answered = False
                    await self._to_sdk(conn, obj, request_id, admitted=True)
                else:
                    await conn.send(self._encode_answer(response, request_id))
        finally:
            conn.lean_scopes.pop(request_id, None)
            if answered:
                conn.flow.answered(request_id)

    @staticmethod
    def _encode_answer(response: dict[str, Any], request_id: Any) -> bytes:
        try:
            return encode(response)
        except (TypeError, ValueError, RecursionError):
            log.exception("could not encode the answer to request %r", request_id)
            return _error_frame(request_id, INTERNAL_ERROR, "Internal server error")

    @staticmethod
    def _cancel_lean(conn: _Connection, obj: dict[str, Any]) -> bool:
        """A client's `notifications/cancelled` for a request the lean path is running."""
        params = obj.get("params")
        target = params.get("requestId") if isinstance(params, dict) else None
        scope = conn.lean_scopes.get(target)
        if scope is None:
            return False
        scope.cancel()
        return True

