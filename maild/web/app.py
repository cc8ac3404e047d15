"""The web mailbox as an ASGI app mounted on the HTTP bridge under /mail (docs/web.md).

Owns the request rules shared by every page: who the viewer is (auth.py), readers may only GET,
every POST carries the CSRF token and comes from our own origin, and every answer has the same
security headers (a CSP with no inline script and no remote origin). Pages live in routes.py,
the SSE stream in live.py. The bridge's gate has already checked the Host header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from maild.mcp_surface.context import Services
from maild.services.changes import ChangeFeed
from maild.services.overview import Overview
from maild.services.sessions import Session
from maild.transport.http.auth import Authenticator, Unauthorized
from maild.web import templates
from maild.web.auth import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Viewer, WebAuth
from shared.config import Settings
from shared.errors import AuthenticationRequired, InvalidArgument, MailError, NotFound

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make browsers post `Origin: null`
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
Handler = Callable[[Request, "Page"], Awaitable[Response]]


class Page:
    """What a handler knows about its caller: the viewer and the service session acting for them."""

    def __init__(self, viewer: Viewer, session: Session, agent_id: int | None) -> None:
        self.viewer = viewer
        self.session = session
        self.agent_id = agent_id  # None: the mailbox owner (sees everything, as the CLI operator)

    @property
    def csrf(self) -> str:
        return self.viewer.csrf


def html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status)


def error_response(request: Request, status: int, message: str) -> Response:
    if "text/html" in request.headers.get("accept", "") or request.method == "GET":
        return html(templates.error_page(status, message), status)
    return JSONResponse({"error": message}, status_code=status)


def _cookies(request: Request) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(request.headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header counts as no cookies
        return {}
    return {k: v.value for k, v in jar.items()}


class WebApp:
    def __init__(self, services: Services, changes: ChangeFeed, authenticator: Authenticator, settings: Settings,
                 state_dir: Path) -> None:
        from maild.web import live, routes  # routes need WebApp's helpers; import here to avoid a cycle

        self.services = services
        self.overview = Overview(services.store, services.agents, services.messaging,
                                 services.settings.message_visibility)
        self.changes = changes
        self.settings = settings
        self.auth = WebAuth(authenticator, state_dir, settings.web_login_ttl_seconds, settings.web_session_seconds)
        self._agent_ids: dict[str, int] = {}
        wrapped = [Route(path, self._guard(handler), methods=methods) for path, handler, methods in routes.ROUTES]
        self._app = Starlette(routes=[
            Route("/mail/login", self.login, methods=["GET"]),
            Route("/mail/logout", self._guard(self.logout), methods=["POST"]),
            Route("/mail/events", self._guard(live.events(changes)), methods=["GET"]),
            Mount("/mail/static", app=StaticFiles(directory=STATIC), name="static"),
            *wrapped,
        ])
        self._app.state.web = self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                # Server-Timing: the time to the first byte inside the daemon (tests/bench/bench_web.py).
                spent = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
                message["headers"] = [*message.get("headers", []), (b"server-timing", spent.encode()),
                                      *((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                                        if k.encode() not in present)]
            await send(message)

        await self._app(scope, receive, with_headers)

    async def _viewer_session(self, viewer: Viewer) -> tuple[Session, int | None]:
        identity = viewer.identity
        if identity.agent is None:
            return Session(id=f"web:{identity.subject}", client="mailctl"), None
        agent_id = self._agent_ids.get(identity.agent)
        if agent_id is None:
            agent_id = await self.services.search.agent_id(identity.agent)
            self._agent_ids[identity.agent] = agent_id
        return Session(id=f"http:{identity.subject}", client="http", agent_id=agent_id), agent_id

    def _guard(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            headers = {k.lower(): v for k, v in request.scope["headers"]}
            client = request.client.host if request.client else None
            cookies = _cookies(request)
            try:
                viewer = await self.auth.identify(headers, cookies, client)
            except Unauthorized:
                return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"www-authenticate": "Bearer"})
            if viewer is None:
                if request.method == "GET" and "text/event-stream" not in request.headers.get("accept", ""):
                    return html(templates.login_page(), 401)
                return JSONResponse({"error": "unauthorized: open the login link `mailctl web` prints"},
                                    status_code=401)
            if request.method == "POST":
                refusal = await self._post_refusal(request, viewer)
                if refusal is not None:
                    return refusal
            fresh_csrf = ""
            if not viewer.via_header and not viewer.csrf:
                # First page of this browser: the double-submit token its forms will carry.
                fresh_csrf = self.auth.new_csrf()
                viewer = Viewer(viewer.identity, viewer.via_header, fresh_csrf)
            try:
                session, agent_id = await self._viewer_session(viewer)
                response = await handler(request, Page(viewer, session, agent_id))
            except NotFound as exc:
                return error_response(request, 404, exc.message)
            except AuthenticationRequired as exc:
                return error_response(request, 403, exc.message)
            except InvalidArgument as exc:
                return error_response(request, 400, exc.message)
            except MailError as exc:
                log.warning("web %s %s: %s", request.method, request.url.path, exc.message)
                return error_response(request, 500, f"{exc.code}: {exc.message}")
            if fresh_csrf:
                response.set_cookie(CSRF_COOKIE, fresh_csrf, httponly=True, samesite="strict", path="/mail",
                                    secure=request.url.scheme == "https")
            return response

        return endpoint

    async def _post_refusal(self, request: Request, viewer: Viewer) -> Response | None:
        if self.settings.http_rbac_enabled and viewer.identity.role != "writer":
            return error_response(request, 403, "forbidden: this action needs the writer role")
        if viewer.via_header:
            return None
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is not None and origin != own:
            return error_response(request, 403, "refused: this form was posted from another site")
        form = await request.form()
        submitted = form.get(CSRF_FIELD)
        if not isinstance(submitted, str) or not self.auth.csrf_ok(viewer, submitted):
            return error_response(request, 403, "refused: the form's CSRF token is missing or stale; reload the "
                                                "page and submit again")
        return None

    async def login(self, request: Request) -> Response:
        cookie = self.auth.redeem(request.query_params.get("secret", ""))
        if cookie is None:
            return html(templates.login_page("This login link is not valid: it was used already, has expired, "
                                             "or was mistyped. Run `mailctl web` for a new one."), 401)
        response = Response(status_code=303, headers={"location": templates.url()})
        secure = request.url.scheme == "https"
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(self.auth.session_seconds), httponly=True,
                            samesite="strict", path="/mail", secure=secure)
        response.set_cookie(CSRF_COOKIE, self.auth.new_csrf(), httponly=True, samesite="strict", path="/mail",
                            secure=secure)
        return response

    async def logout(self, request: Request, page: Page) -> Response:
        self.auth.logout(_cookies(request).get(SESSION_COOKIE))
        response = html(templates.login_page("Signed out."))
        response.delete_cookie(SESSION_COOKIE, path="/mail")
        return response


def build_web(services: Services, changes: ChangeFeed, settings: Settings,
              state_dir: Path) -> Callable[[Authenticator], WebApp]:
    """What the bridge mounts: given the gate's authenticator, the web app."""

    def factory(authenticator: Authenticator) -> WebApp:
        return WebApp(services, changes, authenticator, settings, state_dir)

    return factory
