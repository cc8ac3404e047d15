"""The bridge's ASGI app: CORS outside, then one gate (Host/Origin, auth, RBAC, rate limit, deadline),
then the SDK's Streamable HTTP app.

CORS is the outermost layer so a browser's preflight is answered without credentials and every
answer, 401/403/429 included, carries the CORS grant for an allowed origin. The gate reads each
POST body once (bounded by the size limit), finds what is being asked (`tools/call` of which tool
— looking through `call_extended_tool` — or `resources/read`), then: 401 without valid
credentials, 403 when a reader asks for a writing tool, 429 with `Retry-After` when the caller's
bucket is empty. Refused requests (401/403) never consume tokens. The identity is attached to the
ASGI scope; the MCP surface turns it into an HTTP session bound to the token's agent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from maild.mcp_surface.dispatch import LEAN_METHODS, LeanDispatcher, modern_version
from maild.transport.http.auth import Authenticator, Identity, Revoked, Unauthorized
from maild.transport.http.ratelimit import Limit, MemoryLimiter, RedisLimiter
from maild.transport.unix import encode
from shared.config import Settings, csv
from shared.protocol import LEGACY_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSION

try:
    import orjson
except ImportError:  # an environment installed before orjson was a dependency: json does the work
    orjson = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Readiness = Callable[[], Awaitable[dict[str, Any]]]
IDENTITY_KEY = "agent_mail_identity"
DEFAULT_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
DEFAULT_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
READINESS_TIMEOUT_SECONDS = 5.0
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_APPEND_NEWLINE
                   if orjson is not None else 0)
_UNAUTHORIZED = (401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])


def pattern_regex(patterns: list[str]) -> re.Pattern[str]:
    """Host or Origin patterns as one regex: exact values, `*` (anything), or `base:*` (any port)."""
    parts = []
    for pattern in patterns:
        if pattern == "*":
            parts.append(".*")
        elif pattern.endswith(":*"):
            parts.append(re.escape(pattern[:-2]) + r":[0-9]+")
        else:
            parts.append(re.escape(pattern))
    return re.compile("|".join(parts) or "(?!)", re.IGNORECASE)


async def _respond(send: Send, status: int, body: dict[str, Any],
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


def decode(body: bytes) -> Any:
    """The POST body as JSON, or None when it is not JSON (the SDK then answers the parse error).

    Not orjson: it reads integers past 64 bits as floats without a word, so arguments would differ."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def encode_answer(frame: dict[str, Any]) -> bytes:
    """A lean answer as UTF-8 JSON: orjson where it writes what `encode` would mean (datetimes and
    dataclasses still go through `str`), `encode` for whatever orjson refuses."""
    if orjson is not None:
        try:
            return orjson.dumps(frame, default=str, option=_ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: big integers, lone surrogates, non-string keys
            pass
    return encode(frame)


def what_is_asked(frame: Any) -> tuple[str, str]:
    """(kind, name) of a JSON-RPC request: ("tools", tool), ("resources", uri) or ("other", method)."""
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


class TimedOut(Exception):
    pass


class Gate:
    def __init__(self, app: ASGIApp, settings: Settings, read_only_tools: Callable[[], set[str]],
                 limiter: MemoryLimiter | RedisLimiter, lean: LeanDispatcher | None = None,
                 revoked: Revoked | None = None) -> None:
        self._app = app
        self._lean = lean
        self._settings = settings
        self._auth = Authenticator(settings, revoked)
        self._read_only = read_only_tools
        self._limiter = limiter
        self._limits = {
            "tools": Limit(settings.http_rate_limit_tools_per_minute, settings.http_rate_limit_tools_burst),
            "resources": Limit(settings.http_rate_limit_resources_per_minute,
                               settings.http_rate_limit_resources_burst),
        }
        base = settings.http_path.rstrip("/") or "/mcp"
        self._mcp_paths = {"/mcp", "/mcp/", base, base + "/"}
        self._hosts = pattern_regex(csv(settings.http_allowed_hosts) or DEFAULT_HOSTS)
        self._origins = pattern_regex(csv(settings.http_cors_origins) or DEFAULT_ORIGINS)
        self._timeout = settings.http_request_timeout_seconds
        self._max_body = settings.http_max_body_bytes
        self._web: ASGIApp | None = None

    def mount_web(self, web: ASGIApp) -> None:
        """Serve the web mailbox under /mail; it authenticates its own requests (cookies, login page)."""
        self._web = web

    async def _serve_web(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[bytes, bytes] = dict(scope["headers"])
        if not self._hosts.fullmatch(headers.get(b"host", b"").decode("latin-1")):
            await _respond(send, 421, {"error": "invalid Host header"})
            return
        assert self._web is not None
        await self._web(scope, receive, send)

    @property
    def auth(self) -> Authenticator:
        return self._auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].rstrip("/") or scope["path"].startswith("/health/"):
            await self._app(scope, receive, send)
            return
        if self._web is not None and (scope["path"] == "/mail" or scope["path"].startswith("/mail/")):
            await self._serve_web(scope, receive, send)
            return
        if scope["path"] not in self._mcp_paths:
            await _respond(send, 404, {"error": "not found"})
            return
        scope["path"] = "/mcp"  # serve both /mcp and /mcp/ (and the configured HTTP_PATH)
        headers: dict[bytes, bytes] = dict(scope["headers"])  # ASGI servers send lower-case names
        # DNS-rebinding protection: a page on another site must not reach a local bridge.
        if not self._hosts.fullmatch(headers.get(b"host", b"").decode("latin-1")):
            await _respond(send, 421, {"error": "invalid Host header"})
            return
        origin = headers.get(b"origin")
        if origin is not None and not self._origins.fullmatch(origin.decode("latin-1")):
            await _respond(send, 403, {"error": "invalid Origin header"})
            return
        if scope["method"] != "POST":  # GET (server-to-client stream) and DELETE (end session): no deadline
            identity = await self._identify(scope, headers, send)
            if identity is None:
                return
            self._attach(scope, identity.subject, identity.role, identity.agent)
            await self._app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        phase = ["auth"]
        with anyio.move_on_after(self._timeout) as deadline:
            await self._post(scope, receive, tracked_send, headers, phase)
        if deadline.cancelled_caught and not started:
            if phase[0] == "body":
                await _respond(send, 408, {"error": f"the request body did not arrive within {self._timeout:g} s"})
            else:
                await _respond(send, 504, {"error": f"the request took longer than {self._timeout:g} s"})

    def address(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        """The caller's address for logs and rate limits: the peer, or — only when
        HTTP_TRUST_FORWARDED_FOR says a proxy we trust sits in front — the last X-Forwarded-For hop
        (the one that proxy appended; earlier hops are whatever the client claimed)."""
        client = scope.get("client")
        peer = client[0] if client else None
        if self._settings.http_trust_forwarded_for:
            forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",")[-1].strip()
            if forwarded:
                return forwarded
        return peer

    async def _identify(self, scope: Scope, headers: dict[bytes, bytes], send: Send) -> Identity | None:
        """The caller's verified identity, or None once a 401 (saying nothing more) has been sent."""
        client = scope.get("client")
        try:
            # The localhost rule looks at the real peer (and refuses any forwarded request) either way.
            return await self._auth.authenticate(headers, client[0] if client else None)
        except Unauthorized:
            log.info("HTTP 401 for %s (%s %s)", self.address(scope, headers), scope["method"], scope["path"])
            await _respond(send, *_UNAUTHORIZED)
            return None

    async def _post(self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes],
                    phase: list[str]) -> None:
        """Handle one POST; `phase` says how far it got (auth, body, app) if the deadline cuts it off."""
        identity = await self._identify(scope, headers, send)
        if identity is None:
            return
        phase[0] = "body"
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                await _respond(send, 413, {"error": "request body too large"})
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        frame = decode(body)
        kind, name = what_is_asked(frame)
        if (self._settings.http_rbac_enabled and identity.role != "writer" and kind == "tools"
                and name not in self._read_only()):
            await _respond(send, 403, {"error": "forbidden: this tool needs the writer role"})
            return
        if self._settings.http_rate_limit_enabled and kind in self._limits:
            allowed, wait = await self._limiter.take(f"{kind}:{name}:{identity.subject}", self._limits[kind])
            if not allowed:
                log.info("HTTP 429 for %s (%s, %s)", self.address(scope, headers), identity.subject, name)
                await _respond(send, 429, {"error": "rate limited"}, [(b"retry-after", str(wait).encode())])
                return
        self._attach(scope, identity.subject, identity.role, identity.agent)
        phase[0] = "app"
        if self._lean is not None:
            version = self._lean_version(frame, headers, scope["headers"])
            if version is not None and await self._answer_lean(scope, frame, version, send):
                return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._app(scope, replay, send)

    def _lean_version(self, frame: Any, headers: dict[bytes, bytes], raw: list[tuple[bytes, bytes]]) -> str | None:
        """The era in which the lean dispatcher may answer this POST, or None to leave it to the SDK.

        Only the plain case: one request for a lean method, no session, a JSON body. A 2026-07-28
        request must also carry routing headers that agree with its body (the SDK answers every
        mismatch); a request without that envelope is a stateless call (`HTTP_STATELESS`)."""
        if not isinstance(frame, dict) or frame.get("jsonrpc") != "2.0" or b"mcp-session-id" in headers:
            return None
        method, request_id, params = frame.get("method"), frame.get("id"), frame.get("params")
        if method not in LEAN_METHODS or not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return None
        if not headers.get(b"content-type", b"").lower().startswith(b"application/json"):
            return None
        header_version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
        version = modern_version(params)
        if version is None:
            if not self._settings.http_stateless or header_version == MODERN_PROTOCOL_VERSION:
                return None
            return header_version or LEGACY_PROTOCOL_VERSION
        if not self._settings.transport_fast_path or header_version != version:
            return None
        assert isinstance(params, dict)  # modern_version found the envelope in it
        routing = [key for key, _ in raw if key in (b"mcp-method", b"mcp-name")]
        name = params.get("name") if method == "tools/call" else None
        expected = [b"mcp-method"] + ([b"mcp-name"] if name is not None else [])
        if (
            method == "resources/read" or sorted(routing) != expected
            or headers.get(b"mcp-method", b"").decode("latin-1") != method
            or (name is not None and headers.get(b"mcp-name", b"").decode("latin-1") != name)
            or b"application/json" not in headers.get(b"accept", b"")
        ):
            return None
        return version

    async def _answer_lean(self, scope: Scope, frame: dict[str, Any], version: str, send: Send) -> bool:
        assert self._lean is not None
        identity = scope["state"][IDENTITY_KEY]
        response = await self._lean.answer_as(identity, frame, version)
        if response is None:
            return False
        status = 200
        error = response.get("error")
        if error is not None and version == MODERN_PROTOCOL_VERSION:
            from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS  # the SDK's own table

            status = ERROR_CODE_HTTP_STATUS.get(error["code"], 200)
        payload = encode_answer(response)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        return True

    @staticmethod
    def _attach(scope: Scope, subject: str, role: str, agent: str | None) -> None:
        # A plain dict: the MCP surface reads it without importing this transport.
        scope.setdefault("state", {})[IDENTITY_KEY] = {"subject": subject, "role": role, "agent": agent}

    def statistics(self) -> dict[str, Any]:
        return {"rate_limit": self._limiter.statistics(), "jwks_fetches": self._auth.jwks.fetches}


def build_app(server: Server[Any], settings: Settings, read_only_tools: Callable[[], set[str]],
              readiness: Readiness | None = None, lean: LeanDispatcher | None = None,
              web: Callable[[Authenticator], ASGIApp] | None = None, instance: str | None = None,
              revoked: Revoked | None = None) -> ASGIApp:
    """The whole bridge app. `readiness` reports the daemon's health (`database.ok` decides);
    `lean` answers stateless calls (and, with `transport_fast_path`, 2026-07-28 ones) itself;
    `web` builds the web mailbox (maild/web) from the gate's authenticator; `instance` (in the
    status file) lets `mailctl serve-http` tell its own daemon from another; `revoked(jti, agent)`
    is the deny list (services/revocations.py)."""
    memory = MemoryLimiter(settings.http_rate_limit_max_buckets)
    limiter: MemoryLimiter | RedisLimiter = (
        RedisLimiter(settings.http_rate_limit_redis_url, memory) if settings.http_rate_limit_backend == "redis"
        else memory
    )
    gate: Gate

    async def liveness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive", **({"instance": instance} if instance else {})})

    async def ready(request: Request) -> JSONResponse:
        report: dict[str, Any] = {}
        if readiness is not None:
            with anyio.move_on_after(READINESS_TIMEOUT_SECONDS):
                report = await readiness()
        else:
            report = {"database": {"ok": True}}
        database_ok = report.get("database", {}).get("ok") is True
        archive = report.get("archive", {})
        body = {
            "status": "ready" if database_ok else "not ready",
            "database": {"ok": database_ok},
            "archive": {k: archive[k] for k in ("ok", "queue_depth", "lag_p99_seconds") if k in archive},
            **gate.statistics(),
        }
        return JSONResponse(body, status_code=200 if database_ok else 503)

    inner: Starlette = server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=True,
        # Host and Origin are checked by the gate (one place, `*` and port wildcards); the SDK
        # still checks Content-Type.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=settings.http_max_body_bytes,
        host=settings.http_host,
        custom_starlette_routes=[Route("/health/liveness", liveness), Route("/health/readiness", ready)],
    )
    gate = Gate(inner, settings, read_only_tools, limiter, lean, revoked)
    if web is not None:
        gate.mount_web(web(gate.auth))
    if not settings.http_cors_enabled:
        return gate
    from starlette.middleware.cors import CORSMiddleware

    origins = pattern_regex(csv(settings.http_cors_origins) or DEFAULT_ORIGINS).pattern
    cors: ASGIApp = CORSMiddleware(
        gate, allow_origin_regex=origins, allow_methods=["GET", "POST", "DELETE", "OPTIONS"], allow_headers=["*"],
        expose_headers=["Mcp-Session-Id", "Mcp-Protocol-Version", "Retry-After", "WWW-Authenticate"],
    )
    return cors
