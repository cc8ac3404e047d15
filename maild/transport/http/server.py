"""Which server runs the bridge (`serve_http`: uvicorn on asyncio unless HTTP_SERVER says otherwise,
see uvicorn_runner.py; hypercorn on trio), and how hypercorn runs: its configuration, and one write
per fixed-length HTTP/1.1 answer.

hypercorn writes an answer's status line and headers as soon as the app starts the response, and
the body in a second write: two `send` syscalls (and two wake-ups of the client) for every small
JSON answer, the largest single cost of a stateless call on loopback. Answers whose length is known
(`content-length`) hold their headers back until the first body bytes, so both leave in one write.
Streamed answers (SSE, chunked) keep hypercorn's own behaviour: their headers go out at once.
On asyncio, each connection's keep-alive timer is armed lazily: hypercorn cancels and recreates a
timer task around every request (two tasks, a lock and several loop turns each time); a cheap timer
handle now stands in until the connection has really been idle for `IDLE_GRACE_SECONDS`.
This module does not own the ASGI app (app.py) or the daemon's lifecycle (maild/app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio
import h11
import hypercorn.asyncio.tcp_server
import hypercorn.protocol
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h11 import H11Protocol

from shared.config import Settings

log = logging.getLogger(__name__)
IDLE_GRACE_SECONDS = 0.5  # taken off hypercorn's keep-alive timeout, so an idle connection still closes on time


class CoalescingH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, holding a fixed-length answer's headers until its body."""

    _held: bytes | None = None

    async def _send_h11_event(self, event: Any) -> None:
        if isinstance(event, h11.Response) and any(name == b"content-length" for name, _ in event.headers):
            try:
                self._held = self.connection.send(event)
            except h11.LocalProtocolError:  # as hypercorn: ignored once the peer broke the protocol
                if self.connection.their_state != h11.ERROR:
                    raise
            return
        held, self._held = self._held, None
        if held is None:
            await super()._send_h11_event(event)
            return
        try:
            data = self.connection.send(event) or b""
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            data = b""
        await self.send(RawData(data=held + data))

    async def stream_send(self, event: Any) -> None:
        if isinstance(event, StreamClosed) and self._held is not None:
            held, self._held = self._held, None  # the app ended without a body: the headers still go out
            await self.send(RawData(data=held))
        await super().stream_send(event)


class LazyIdleTask:
    """hypercorn's asyncio per-connection "single task" (the keep-alive timer), started only after
    IDLE_GRACE_SECONDS without a request: between requests of a busy connection, stop and restart
    cost a timer handle instead of creating, cancelling and awaiting tasks."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._lock = asyncio.Lock()

    async def restart(self, task_group: Any, action: Callable[[], Any]) -> None:
        await self.stop()

        def spawn() -> None:
            self._timer = None
            self._task = task_group._task_group.create_task(action())  # as hypercorn's own

        self._timer = asyncio.get_running_loop().call_later(IDLE_GRACE_SECONDS, spawn)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            async with self._lock:
                task, self._task = self._task, None
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


def install() -> None:
    """Make hypercorn build HTTP/1.1 connections with CoalescingH11Protocol and asyncio keep-alive
    timers with LazyIdleTask (it looks both names up in its own modules each time a connection opens)."""
    setattr(hypercorn.protocol, "H11Protocol", CoalescingH11Protocol)  # noqa: B010 - hypercorn does not export it
    setattr(hypercorn.asyncio.tcp_server, "AsyncioSingleTask", LazyIdleTask)  # noqa: B010 - nor this


def config_for(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 3.0
    config.include_server_header = False  # one header less to build and validate per answer, no version banner
    return config


async def serve_http(
    app: Any, settings: Settings, stop: anyio.Event, done: anyio.Event,
    task_status: Any = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the bridge on the daemon's own event loop until `stop` is set: uvicorn on asyncio
    (HTTP_SERVER auto, uvicorn or uvicorn-h11), hypercorn on trio or with HTTP_SERVER=hypercorn.

    hypercorn must be stopped through its shutdown trigger, not by cancellation (its asyncio
    worker fails on a cancelled shutdown); `done` tells the caller it has finished."""
    import sniffio

    library = sniffio.current_async_library()
    choice = settings.http_server
    if library == "asyncio" and choice in ("auto", "uvicorn", "uvicorn-h11"):
        from maild.transport.http.uvicorn_runner import parser_name, serve_uvicorn

        http = "h11" if choice == "uvicorn-h11" else parser_name()
        log.info("HTTP bridge on http://%s:%d%s (uvicorn, %s)", settings.http_host, settings.http_port,
                 settings.http_path, http)
        task_status.started()
        try:
            await serve_uvicorn(app, settings, stop, http)
        finally:
            done.set()
        return
    if library == "trio" and choice.startswith("uvicorn"):
        log.warning("HTTP_SERVER=%s runs on asyncio only; this trio daemon serves the bridge with hypercorn", choice)
    install()
    config = config_for(settings)
    if library == "trio":
        from hypercorn.trio import serve as trio_serve

        runner: Any = trio_serve
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        runner = asyncio_serve
        config.keep_alive_timeout -= IDLE_GRACE_SECONDS  # LazyIdleTask starts the timer that much later
    log.info("HTTP bridge on http://%s:%d%s (hypercorn)", settings.http_host, settings.http_port, settings.http_path)
    task_status.started()
    try:
        await runner(app, config, shutdown_trigger=stop.wait)
    finally:
        done.set()
