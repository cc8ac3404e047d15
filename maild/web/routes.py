"""The web mailbox's pages: each handler reads through the services, then renders a template.

URLs follow the reference's `/mail/...` shape: `/mail` (all mail), `/mail/projects`,
`/mail/{project}`, `…/inbox/{agent}`, `…/message/{id}`, `…/thread/{id}`, `…/search`,
`…/reservations`, `…/overdue`, `…/compose`, `…/attachment/{sha256}` (an attachment's bytes), and
`/mail/archive[/{sha}]`. Posts answer with a 303 to the page they came from (post/redirect/get), so
reloading never re-sends a form.
"""

from __future__ import annotations

import mimetypes

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from maild.archive.history import commit_detail, recent_commits
from maild.mcp_surface.context import Services
from maild.services.mail_views import to_int
from maild.services.overview import Overview
from maild.store import utcnow
from maild.web import templates
from maild.web.app import Page, WebApp, html
from shared.errors import MailError, NotFound

# A blob's address is its content hash: the bytes at one URL never change.
ATTACHMENT_CACHE = "private, max-age=31536000, immutable"
SEARCH_LIMIT = 20  # bm25 + a snippet per hit: cost grows with the page size (docs/search.md)


def _services(request: Request) -> tuple[Services, Overview]:
    web: WebApp = request.app.state.web
    return web.services, web.overview


def _web(request: Request) -> WebApp:
    web: WebApp = request.app.state.web
    return web


async def unified(request: Request, page: Page) -> Response:
    services, overview = _services(request)
    messages = await overview.recent(page.agent_id, 50)
    projects = (await services.views.projects())["projects"]
    return html(templates.unified_inbox(messages, projects))


async def projects(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    listing = (await services.views.projects())["projects"]
    return html(templates.projects_page(listing))


async def project(request: Request, page: Page) -> Response:
    services, overview = _services(request)
    slug = request.path_params["project"]
    details = await services.views.project(slug)
    threads = await overview.threads(page.agent_id, slug)
    return html(templates.project_page(details, details["agents"], threads))


async def inbox(request: Request, page: Page) -> Response:
    _, overview = _services(request)
    slug, agent = request.path_params["project"], request.path_params["agent"]
    listing = await overview.inbox(page.agent_id, agent)
    changed = request.query_params.get("marked")
    notice = f'<p class="notice">{int(changed)} marked read.</p>' if changed and changed.isdigit() else ""
    return html(templates.inbox_page(slug, listing, page.csrf, notice))


async def mark(request: Request, page: Page, *, everything: bool) -> Response:
    _, overview = _services(request)
    slug, agent = request.path_params["project"], request.path_params["agent"]
    ids: list[int] | None = None
    if not everything:
        form = await request.form()
        ids = [to_int(str(v), "message id", 0, 1, 2**62) for v in form.getlist("id")]
    changed = await overview.mark_read(page.agent_id, agent, ids)
    return RedirectResponse(templates.url(slug, "inbox", agent, marked=changed), status_code=303)


async def mark_selected(request: Request, page: Page) -> Response:
    return await mark(request, page, everything=False)


async def mark_all(request: Request, page: Page) -> Response:
    return await mark(request, page, everything=True)


async def message(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    found = await services.views.message(page.session, request.path_params["mid"])
    return html(templates.message_page(request.path_params["project"], found))


async def thread(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    thread_id = request.path_params["thread_id"]
    found = await services.views.thread(page.session, thread_id, True)
    return html(templates.thread_page(request.path_params["project"], thread_id, found))


async def attachment(request: Request, page: Page) -> Response:
    """An attachment's bytes, for a viewer who may read a message carrying it (the MCP resource's own
    check, services.attachments). Raster images show inline; anything else (SVG, HTML, PDF, ...) is
    only ever a download, so nothing a sender chose can run or render on our origin."""
    services, _ = _services(request)
    if services.attachments is None:
        raise NotFound("attachments are disabled in this daemon")
    sha = request.path_params["sha256"]
    media_type, data = await services.attachments.read_blob(page.session, sha)
    headers = {"cache-control": ATTACHMENT_CACHE, "x-content-type-options": "nosniff"}
    if media_type not in templates.RASTER:
        ext = mimetypes.guess_extension(media_type) or ".bin"
        headers["content-disposition"] = f'attachment; filename="{sha.strip().lower()[:16]}{ext}"'
    return Response(data, media_type=media_type, headers=headers)


async def search(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    slug = request.path_params["project"]
    query = request.query_params.get("q", "").strip()
    results = None
    if query:
        results = await services.search.search(
            slug, query, viewer=page.agent_id, limit=SEARCH_LIMIT, include_bodies=False)
    return html(templates.search_page(slug, query, results))


async def reservations(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    slug = request.path_params["project"]
    rows = await services.reservations.listing(slug, active_only=False)
    rows.sort(key=lambda r: (r.get("released_ts") is not None, r["expires_ts"]))
    return html(templates.reservations_page(slug, rows[:500], utcnow()))


async def overdue(request: Request, page: Page) -> Response:
    _, overview = _services(request)
    slug = request.path_params["project"]
    default = _web(request).settings.ack_ttl_seconds // 60
    ttl = to_int(request.query_params.get("ttl"), "ttl", default, 0, 10**6)
    rows = await overview.ack_overdue(page.agent_id, slug, ttl)
    return html(templates.overdue_page(slug, rows, ttl))


async def compose(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    slug = request.path_params["project"]
    agents = (await services.views.agents(slug))["agents"]
    if request.method == "GET":
        return html(templates.compose_page(slug, agents, page.csrf))
    form = await request.form()
    to = [str(v) for v in form.getlist("to")]
    everyone = form.get("all") == "1"
    subject, body = str(form.get("subject", "")), str(form.get("body", ""))
    _, overview = _services(request)
    try:
        sent = await overview.overseer_send(page.session, slug, to, subject, body, everyone=everyone)
    except MailError as exc:
        if exc.code not in ("INVALID_ARGUMENT", "RECIPIENT_NOT_FOUND"):
            raise
        fields = {"to": to, "all": everyone, "subject": subject, "body": body}
        return html(templates.compose_page(slug, agents, page.csrf, exc.message, fields), 400)
    message_id = sent["deliveries"][0]["payload"]["id"]
    return RedirectResponse(templates.url(slug, "message", message_id), status_code=303)


async def archive(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    commits = await anyio.to_thread.run_sync(recent_commits, services.archive_path, 100)
    return html(templates.archive_page(commits))


async def commit(request: Request, page: Page) -> Response:
    services, _ = _services(request)
    detail = await anyio.to_thread.run_sync(commit_detail, services.archive_path,
                                            request.path_params["sha"])
    return html(templates.commit_page(detail))


ROUTES = [
    ("/mail", unified, ["GET"]),
    ("/mail/", unified, ["GET"]),
    ("/mail/projects", projects, ["GET"]),
    ("/mail/archive", archive, ["GET"]),
    ("/mail/archive/{sha}", commit, ["GET"]),
    ("/mail/{project}", project, ["GET"]),
    ("/mail/{project}/inbox/{agent}", inbox, ["GET"]),
    ("/mail/{project}/inbox/{agent}/mark-read", mark_selected, ["POST"]),
    ("/mail/{project}/inbox/{agent}/mark-all-read", mark_all, ["POST"]),
    ("/mail/{project}/message/{mid}", message, ["GET"]),
    ("/mail/{project}/thread/{thread_id}", thread, ["GET"]),
    ("/mail/{project}/attachment/{sha256}", attachment, ["GET"]),
    ("/mail/{project}/search", search, ["GET"]),
    ("/mail/{project}/reservations", reservations, ["GET"]),
    ("/mail/{project}/overdue", overdue, ["GET"]),
    ("/mail/{project}/compose", compose, ["GET", "POST"]),
]
