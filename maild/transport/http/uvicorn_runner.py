"""How the bridge runs uvicorn on asyncio: its configuration, its life inside the daemon's loop,
and one write per fixed-length answer.

uvicorn with httptools (llhttp, in C) costs far less CPU per request than hypercorn + h11 (see
docs/http.md for the figures), so the asyncio daemon serves the bridge with it; trio keeps
hypercorn (server.py), since uvicorn runs on asyncio only. The daemon owns the lifecycle: the socket
is bound exactly as hypercorn binds it (bridge.check_bind), uvicorn neither installs signal handlers
nor configures logging, and it stops when the daemon's `stop` event is set.
As with hypercorn (server.py), a fixed-length answer's status line and headers wait for its body,
so both leave in one `send` (one wake-up of the client); streamed answers start at once.
This module does not own the ASGI app (app.py) or the choice of server (server.serve_http).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import anyio
import uvicorn
from uvicorn.protocols.http import httptools_impl

from shared.config import Settings

log = logging.getLogger(__name__)
MAX_HEAD_BYTES = 16 * 1024  # a request's line and headers, as hypercorn's h11_max_incomplete_size
GRACEFUL_SECONDS = 3.0  # as hypercorn's graceful_timeout: open streams get this long, then are cancelled
KEEP_ALIVE_SECONDS = 5.0  # hypercorn's default keep_alive_timeout: an idle connection closes after it
DATE_REFRESH_SECONDS = 1.0  # uvicorn builds its Date header once a second


def parser_name() -> str:
    """httptools where installed (a C parser), else uvicorn's pure-Python h11 protocol."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def config_for(app: Any, settings: Settings, http: str | None = None) -> uvicorn.Config:
    http = http or parser_name()
    config = uvicorn.Config(
        app,
        http=BoundedHttpToolsProtocol if http == "httptools" else http,
        ws="none",  # the bridge serves no WebSocket
        lifespan="on",  # the SDK's session manager runs in the app's lifespan (as under hypercorn)
        log_config=None,  # the daemon configured logging already
        access_log=False,
        server_header=False,  # no version banner, as with hypercorn
        proxy_headers=False,  # the gate alone decides whether X-Forwarded-For is trusted
        timeout_keep_alive=int(KEEP_ALIVE_SECONDS),
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
    config.load()
    return config


class HeldWrites:
    """A connection's transport for one answer: while `hold` is set, what is written waits, and
    leaves with the next write (or before a close)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self.hold = False

    def write(self, data: bytes) -> None:
        if self.hold:
            self.hold = False
            self._held = data
            return
        held, self._held = self._held, None
        self._transport.write(data if held is None else held + data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info...: the real transport's
        return getattr(self._transport, name)


class CoalescingCycle(httptools_impl.RequestResponseCycle):
    """uvicorn's httptools request cycle, holding a fixed-length answer's headers until its body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport = HeldWrites(self.transport)  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        transport: HeldWrites = self.transport  # type: ignore[assignment]
        if (message["type"] == "http.response.start" and not self.response_started
                and any(name.lower() == b"content-length" for name, _ in message.get("headers", ()))):
            transport.hold = True
        await super().send(message)
        if self.response_complete:
            transport.flush()  # a HEAD answer writes no body: its headers still go out


class BoundedHttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on a request's head: httptools buffers a header
    until it ends, with no limit of its own, so a client could grow the daemon's memory without end.
    Past MAX_HEAD_BYTES (give or take one read) the request gets a 400 and the connection closes."""

    _awaiting_head = True
    _head_bytes = 0
    _heads = 0

    def data_received(self, data: bytes) -> None:
        heads = self._heads
        super().data_received(data)
        if self._heads != heads:
            self._head_bytes = 0
        elif self._awaiting_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.send_400_response("Request header fields too large.")

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._awaiting_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True


def install() -> None:
    """Make uvicorn's httptools protocol build CoalescingCycle (it looks the name up in its module
    for every request)."""
    setattr(httptools_impl, "RequestResponseCycle", CoalescingCycle)  # noqa: B010 - not an exported hook


class EmbeddedServer(uvicorn.Server):
    """uvicorn's server, run by the daemon: stops on `stop` instead of polling every 0.1 s."""

    def __init__(self, config: uvicorn.Config, stop: anyio.Event) -> None:
        super().__init__(config)
        self._stop = stop

    async def main_loop(self) -> None:
        while not await self.on_tick(0):  # tick 0: refresh the Date header
            with anyio.move_on_after(DATE_REFRESH_SECONDS):
                await self._stop.wait()
            self.should_exit = self._stop.is_set()


async def serve_uvicorn(app: Any, settings: Settings, stop: anyio.Event, http: str | None = None) -> None:
    """Serve `app` on the bridge's address until `stop` is set, then shut down gracefully."""
    from hypercorn.config import Config as HypercornConfig

    bind = HypercornConfig()
    bind.bind = [f"{settings.http_host}:{settings.http_port}"]
    created = bind.create_sockets()  # OSError if the address is taken: bridge.run_bridge reports it
    sockets = list(created.insecure_sockets)
    config = config_for(app, settings, http)
    if config.http is BoundedHttpToolsProtocol:
        install()
    server = EmbeddedServer(config, stop)
    server.lifespan = config.lifespan_class(config)
    try:
        try:
            await server.startup(sockets=sockets)
        except SystemExit as exc:  # uvicorn exits when the app's lifespan startup fails: the daemon must not
            raise RuntimeError("the bridge app's lifespan startup failed (see the log above)") from exc
        await server.main_loop()
    finally:
        if server.started:
            await server.shutdown(sockets=sockets)
        for sock in sockets:
            sock.close()
