"""The bridge's ASGI app: the SDK's Streamable HTTP app behind one gate (auth, RBAC, rate limit).

The gate reads each POST body once (bounded by the size limit), finds what is being asked
(`tools/call` of which tool — looking through `call_extended_tool` — or `resources/read`), then:
401 without valid credentials, 403 when a reader asks for a writing tool, 429 with `Retry-After`
when the caller's bucket is empty. Refused requests (401/403) never consume tokens. The identity
is attached to the ASGI scope; the MCP surface turns it into an HTTP session bound to the token's
agent. Host/Origin validation (DNS rebinding) is the SDK's, configured here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from maild.transport.http.auth import Authenticator, Unauthorized
from maild.transport.http.ratelimit import Limit, MemoryLimiter, RedisLimiter
from shared.config import Settings, csv

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
IDENTITY_KEY = "agent_mail_identity"


async def _respond(send: Callable[[Any], Awaitable[None]], status: int, body: dict[str, Any],
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


def what_is_asked(body: bytes) -> tuple[str, str]:
    """(kind, name) of a JSON-RPC request: ("tools", tool), ("resources", uri) or ("other", method)."""
    try:
        frame = json.loads(body)
    except ValueError:
        return "other", "?"
    if not isinstance(frame, dict):
        return "other", "?"
    method = str(frame.get("method", ""))
    raw = frame.get("params")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if method == "tools/call":
        name = str(params.get("name", ""))
        if name == "call_extended_tool" and isinstance(params.get("arguments"), dict):
            name = str(params["arguments"].get("tool_name", name))  # judge the tool actually run
        return "tools", name
    if method == "resources/read":
        return "resources", str(params.get("uri", ""))
    return "other", method


class Gate:
    def __init__(self, app: ASGIApp, settings: Settings, read_only_tools: Callable[[], set[str]]) -> None:
        self._app = app
        self._settings = settings
        self._auth = Authenticator(settings)
        self._read_only = read_only_tools
        self._limiter: MemoryLimiter | RedisLimiter = (
            RedisLimiter(settings.http_rate_limit_redis_url)
            if settings.http_rate_limit_backend == "redis" else MemoryLimiter()
        )
        self._limits = {
            "tools": Limit(settings.http_rate_limit_tools_per_minute, settings.http_rate_limit_tools_burst),
            "resources": Limit(settings.http_rate_limit_resources_per_minute,
                               settings.http_rate_limit_resources_burst),
        }
        self._mcp_paths = {"/mcp", "/mcp/", settings.http_path.rstrip("/") or "/mcp",
                           (settings.http_path.rstrip("/") or "/mcp") + "/"}

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or not scope["path"].rstrip("/") or scope["path"].startswith("/health/"):
            await self._app(scope, receive, send)
            return
        if scope["path"] not in self._mcp_paths:
            await _respond(send, 404, {"error": "not found"})
            return
        scope["path"] = "/mcp"  # serve both /mcp and /mcp/ (and the configured HTTP_PATH)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        client = scope.get("client")
        try:
            identity = self._auth.authenticate(headers, client[0] if client else None)
        except Unauthorized:
            await _respond(send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])
            return
        body, more = b"", True
        if scope["method"] == "POST":
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self._settings.http_max_body_bytes:
                    await _respond(send, 413, {"error": "request body too large"})
                    return
            kind, name = what_is_asked(body)
            if (self._settings.http_rbac_enabled and identity.role != "writer" and kind == "tools"
                    and name not in self._read_only()):
                await _respond(send, 403, {"error": "forbidden: this tool needs the writer role"})
                return
            if self._settings.http_rate_limit_enabled and kind in self._limits:
                allowed, wait = await self._limiter.take(f"{kind}:{name}:{identity.subject}", self._limits[kind])
                if not allowed:
                    await _respond(send, 429, {"error": "rate limited"}, [(b"retry-after", str(wait).encode())])
                    return
        # A plain dict: the MCP surface reads it without importing this transport.
        scope.setdefault("state", {})[IDENTITY_KEY] = {
            "subject": identity.subject, "role": identity.role, "agent": identity.agent,
        }
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if scope["method"] == "POST" and not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        with anyio.move_on_after(self._settings.http_request_timeout_seconds if scope["method"] == "POST" else None):
            await self._app(scope, replay, send)


def build_app(server: Server[Any], settings: Settings, read_only_tools: Callable[[], set[str]]) -> ASGIApp:
    hosts = csv(settings.http_allowed_hosts) or ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = csv(settings.http_cors_origins) or ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                         allowed_origins=origins)

    async def liveness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def readiness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    inner: Starlette = server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=True,
        transport_security=security,
        max_request_body_size=settings.http_max_body_bytes,
        host=settings.http_host,
        custom_starlette_routes=[Route("/health/liveness", liveness), Route("/health/readiness", readiness)],
    )
    app: ASGIApp = inner
    if settings.http_cors_enabled:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(inner, allow_origins=csv(settings.http_cors_origins) or ["*"], allow_methods=["*"],
                             allow_headers=["*"], expose_headers=["Mcp-Session-Id", "Retry-After"])
    return Gate(app, settings, read_only_tools)


async def serve_http(
    app: ASGIApp, settings: Settings, stop: anyio.Event, done: anyio.Event,
    task_status: Any = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run hypercorn on the daemon's own event loop (asyncio or trio) until `stop` is set.

    hypercorn must be stopped through its shutdown trigger, not by cancellation (its asyncio
    worker fails on a cancelled shutdown); `done` tells the caller it has finished."""
    import sniffio
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 3.0
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as trio_serve

        runner: Any = trio_serve
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        runner = asyncio_serve
    log.info("HTTP bridge on http://%s:%d%s", settings.http_host, settings.http_port, settings.http_path)
    task_status.started()
    try:
        await runner(app, config, shutdown_trigger=stop.wait)
    finally:
        done.set()
