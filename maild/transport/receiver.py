"""A socket's bytes as they arrive, read by one callback the event loop keeps for the connection's life.

anyio's `receive()` on asyncio yields once, then registers the socket with the selector, waits, and
unregisters it — for every frame a client sends one at a time. Under 16 clients that cycle (the
selector's lookups build a KeyError message with the socket's repr each time) was ~25 % of the
daemon's loop CPU per send. Here the socket stays registered; the callback reads what is there into
a bounded buffer and wakes the connection's reader. Past `HIGH_WATER` unconsumed bytes it stops
reading until they are taken, so a client that floods us still fills the kernel's buffers and
blocks (flow.py). Asyncio only: elsewhere (trio) `open_receiver` hands back anyio's stream.
This module only reads; framing is unix.py's LineReader, writing stays on the anyio stream.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import anyio
import anyio.abc
import sniffio

CHUNK = 65536
HIGH_WATER = 4 * CHUNK


class Receiver(Protocol):
    async def receive(self, max_bytes: int = CHUNK) -> bytes: ...


class LoopReceiver:
    """Bytes from a non-blocking socket the asyncio loop watches continuously; `close()` before the
    socket is closed."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._failed: OSError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._watching = False
        self._closed = False

    def _watch(self) -> None:
        if not self._watching and not self._closed and not self._eof:
            self._loop.add_reader(self._fd, self._on_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # reset by the peer: an end like EOF, reported as a broken stream
            self._failed, data = exc, b""
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered >= HIGH_WATER:
                self._unwatch()  # the reader is behind (flow control holds it): let the kernel buffer fill
        else:
            self._eof = True
            self._unwatch()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
        """Everything buffered so far (at least one byte), as anyio's receive would return it.
        `max_bytes` is ignored: the buffer is bounded by HIGH_WATER already."""
        while not self._chunks:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._failed is not None:
                raise anyio.BrokenResourceError from self._failed
            if self._eof:
                raise anyio.EndOfStream
            self._watch()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        self._watch()  # a pause at HIGH_WATER ends once its bytes are taken
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        self._unwatch()
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def open_receiver(stream: anyio.abc.SocketStream) -> tuple[Receiver, LoopReceiver | None]:
    """The connection's byte source: a LoopReceiver on asyncio (returned twice: the second to close
    before the socket), else the stream itself."""
    if sniffio.current_async_library() != "asyncio":
        return stream, None
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)  # noqa: S610 - anyio, not Django
    if sock is None:
        return stream, None
    receiver = LoopReceiver(sock, asyncio.get_running_loop())
    return receiver, receiver
