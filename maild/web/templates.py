"""The web mailbox's HTML: one layout and one function per page, built from escaped strings.

Every value that came from the database goes through `esc` (text) or `render.markdown` (bodies);
nothing here touches services or requests. Pages work without JavaScript: the script only swaps
in a fresh `#live` region when the change feed says something this page shows has changed
(`data-live` lists the kinds). Attachments show after each message's body: images as thumbnails,
other files as download links, both served by routes.attachment. A build-slots view plugs in where marked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from maild.web.render import esc, markdown, snippet

PREFIX = "/mail"
THUMB = 240  # px: the longer side of an inline thumbnail
RASTER = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")  # shown inline; never SVG


def url(*parts: object, **query: object) -> str:
    path = PREFIX + "".join("/" + quote(str(p), safe="") for p in parts)
    pairs = [f"{quote(k)}={quote(str(v), safe='')}" for k, v in query.items() if v not in (None, "")]
    return path + ("?" + "&".join(pairs) if pairs else "")


def when(ts: str | None) -> str:
    """A timestamp as people read it (the full one in a tooltip)."""
    if not ts:
        return "—"
    short = ts[:16].replace("T", " ")
    return f'<time datetime="{esc(ts)}" title="{esc(ts)}">{esc(short)}</time>'


def badge(importance: str) -> str:
    if importance in ("high", "urgent"):
        return f'<span class="badge {esc(importance)}">{esc(importance)}</span>'
    return ""


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(token)}">'


def layout(title: str, body: str, *, live: str = "", project: str | None = None, crumbs: str = "") -> str:
    nav = [f'<a href="{url()}">Inbox</a>', f'<a href="{url("projects")}">Projects</a>']
    if project:
        nav += [f'<a href="{url(project)}">{esc(project)}</a>',
                f'<a href="{url(project, "search")}">Search</a>',
                f'<a href="{url(project, "reservations")}">Reservations</a>',
                f'<a href="{url(project, "overdue")}">Ack overdue</a>',
                f'<a href="{url(project, "compose")}" class="compose">Compose</a>']
    nav.append(f'<a href="{url("archive")}">Archive</a>')
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)} · Agent Mail</title>"
        f"<link rel=\"icon\" href=\"{PREFIX}/static/favicon.svg\" type=\"image/svg+xml\">"
        f"<link rel=\"stylesheet\" href=\"{PREFIX}/static/style.css\">"
        f"<script src=\"{PREFIX}/static/live.js\" defer></script></head>"
        f"<body data-live=\"{esc(live)}\" data-events=\"{PREFIX}/events\">"
        f"<header><a class=\"brand\" href=\"{url()}\">✉ Agent Mail</a><nav>{''.join(nav)}</nav>"
        "<span id=\"live-status\" class=\"live-status\" title=\"live updates\"></span></header>"
        f"<main>{crumbs}<div id=\"live\">{body}</div></main></body></html>"
    )


def message_rows(messages: list[dict[str, Any]], *, project: str | None = None, select: bool = False,
                 show_project: bool = False) -> str:
    if not messages:
        return '<p class="empty">No messages yet.</p>'
    rows = []
    for m in messages:
        slug = m.get("project") or project or ""
        unread = m.get("read_ts") is None and "kind" in m
        check = (f'<td class="pick"><input type="checkbox" name="id" value="{m["id"]}" '
                 f'aria-label="select message {m["id"]}"></td>') if select else ""
        to = ", ".join(m.get("to", []))
        addressed = f'<span class="to">→ {esc(to)}</span>' if to else (
            f'<span class="to">{esc(m["kind"])}</span>' if m.get("kind") not in (None, "to") else "")
        where = f'<td class="proj"><a href="{url(slug)}">{esc(slug)}</a></td>' if show_project else ""
        ack = ' <span class="badge ack">ack</span>' if m.get("ack_required") and not m.get("ack_ts") else ""
        rows.append(
            f'<tr class="{"unread" if unread else ""}" data-id="{m["id"]}">{check}{where}'
            f'<td class="from">{esc(m["from"])}</td>'
            f'<td class="subj"><a href="{url(slug, "message", m["id"])}">{esc(m["subject"])}</a>'
            f'{badge(m["importance"])}{ack}{addressed}</td>'
            f'<td class="when">{when(m["created_ts"])}</td></tr>')
    head_pick = '<th class="pick"></th>' if select else ""
    head_proj = "<th>Project</th>" if show_project else ""
    return (f'<table class="mail"><thead><tr>{head_pick}{head_proj}<th>From</th><th>Subject</th>'
            f'<th>When</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def unified_inbox(messages: list[dict[str, Any]], projects: list[dict[str, Any]]) -> str:
    side = "".join(f'<li><a href="{url(p["slug"])}">{esc(p["slug"])}</a></li>' for p in projects)
    body = (f'<h1>All mail</h1><div class="split"><section>{message_rows(messages, show_project=True)}</section>'
            f'<aside><h2>Projects</h2><ul class="plain">{side or "<li>none yet</li>"}</ul></aside></div>')
    return layout("Inbox", body, live="mail read")


def projects_page(projects: list[dict[str, Any]]) -> str:
    items = "".join(
        f'<tr><td><a href="{url(p["slug"])}">{esc(p["slug"])}</a></td><td>{esc(p["human_key"])}</td>'
        f'<td>{when(p.get("created_at"))}</td></tr>' for p in projects)
    body = ("<h1>Projects</h1><table><thead><tr><th>Project</th><th>Key</th><th>Created</th></tr></thead>"
            f"<tbody>{items}</tbody></table>" if projects else '<h1>Projects</h1><p class="empty">No projects yet.</p>')
    return layout("Projects", body, live="mail")


def agents_table(project: str, agents: list[dict[str, Any]]) -> str:
    if not agents:
        return '<p class="empty">No agents registered yet.</p>'
    rows = []
    for a in agents:
        state = "online" if a.get("online") else "offline"
        unread = a.get("unread_count") or 0
        rows.append(
            f'<tr><td><span class="dot {state}" title="{state}"></span>'
            f'<a href="{url(project, "inbox", a["name"])}">{esc(a["name"])}</a></td>'
            f'<td>{esc(a.get("program"))}</td><td>{esc(a.get("model"))}</td>'
            f'<td>{"online" if a.get("online") else when(a.get("last_seen_ts"))}</td>'
            f'<td class="num">{f"<strong>{unread}</strong>" if unread else "0"}</td></tr>')
    return ("<table class=\"agents\"><thead><tr><th>Agent</th><th>Program</th><th>Model</th><th>Last seen</th>"
            f"<th>Unread</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def project_page(project: dict[str, Any], agents: list[dict[str, Any]], threads: list[dict[str, Any]]) -> str:
    slug = project["slug"]
    items = []
    for t in threads:
        last = t["last"]
        items.append(
            f'<li><a href="{url(slug, "thread", t["thread_id"])}">{esc(t["subject"])}</a>'
            f'<span class="meta">{t["count"]} message{"s" if t["count"] != 1 else ""} · {esc(", ".join(t["people"]))}'
            f' · last from {esc(last["from"])} {when(last["created_ts"])}</span></li>')
    body = (f'<h1>{esc(slug)}</h1><p class="meta">{esc(project.get("human_key"))}</p>'
            f'<h2>Agents</h2>{agents_table(slug, agents)}'
            f'<h2>Recent threads</h2><ul class="threads">{"".join(items) or "<li class=empty>No mail yet.</li>"}</ul>')
    # Build slots (a later issue) get their own section here.
    return layout(slug, body, live="mail read presence", project=slug)


def inbox_page(project: str, inbox: dict[str, Any], csrf: str, notice: str = "") -> str:
    agent = inbox["agent"]
    name = agent["name"]
    form_action = url(project, "inbox", name, "mark-read")
    body = (
        f'<h1>{esc(name)}&#39;s inbox <span class="count">{inbox["unread_count"]} unread</span></h1>'
        f'<p class="meta">{esc(agent.get("program"))} · {esc(agent.get("model"))} · '
        f'{esc(agent.get("task_description") or "")}</p>{notice}'
        f'<form method="post" action="{form_action}" class="marks">{csrf_field(csrf)}'
        f'{message_rows(inbox["messages"], project=project, select=True)}'
        '<div class="actions"><button type="submit">Mark selected read</button>'
        f'<button type="submit" formaction="{url(project, "inbox", name, "mark-all-read")}">Mark all read</button>'
        "</div></form>")
    return layout(f"{name} inbox", body, live="mail read", project=project)


def message_block(m: dict[str, Any], project: str) -> str:
    people = " · ".join(f"{k}: {esc(', '.join(m[k]))}" for k in ("to", "cc", "bcc") if m.get(k))
    thread = m.get("thread_id") or str(m["id"])
    return (
        f'<article class="message" id="m{m["id"]}"><header><h2>{esc(m["subject"])}{badge(m["importance"])}</h2>'
        f'<p class="meta"><strong>{esc(m["from"])}</strong> · {people} · {when(m["created_ts"])}'
        f' · <a href="{url(project, "message", m["id"])}">#{m["id"]}</a>'
        f' · <a href="{url(project, "thread", thread)}">thread</a></p></header>'
        f'<div class="body">{markdown(m.get("body_md") or "")}</div>{attachments_block(m, project)}</article>')


def size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MB"


def thumb_box(width: object, height: object) -> tuple[int, int] | None:
    """The thumbnail's size: the stored image scaled to fit THUMB px, never enlarged."""
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        return None
    scale = min(1.0, THUMB / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def attachments_block(m: dict[str, Any], project: str) -> str:
    """Thumbnails for images, download links for other files. A data: URI image inside the body has
    no stored blob (no sha256) and is left out: the body's own renderer drops it."""
    thumbs, files = [], []
    for meta in m.get("attachments") or []:
        sha = meta.get("sha256")
        if not isinstance(sha, str):
            continue
        href = url(project, "attachment", sha)
        name = str(meta.get("name") or sha[:12])
        media = str(meta.get("media_type") or "application/octet-stream")
        box = thumb_box(meta.get("width"), meta.get("height"))
        label = f"{esc(name)} · {esc(media)} · {size(int(meta.get('bytes') or 0))}"
        if media in RASTER and box is not None:
            thumbs.append(f'<a class="thumb" href="{href}" title="{label}"><img src="{href}" alt="{esc(name)}" '
                          f'width="{box[0]}" height="{box[1]}" loading="lazy"></a>')
        else:
            files.append(f'<li><a href="{href}" download="{esc(name)}">{esc(name)}</a> '
                         f'<span class="meta">{esc(media)} · {size(int(meta.get("bytes") or 0))}</span></li>')
    if not thumbs and not files:
        return ""
    return ('<section class="attachments" aria-label="attachments">'
            + (f'<div class="thumbs">{"".join(thumbs)}</div>' if thumbs else "")
            + (f'<ul class="files">{"".join(files)}</ul>' if files else "") + "</section>")


def message_page(project: str, m: dict[str, Any]) -> str:
    return layout(m["subject"], message_block(m, project), project=project)


def thread_page(project: str, thread_id: str, thread: dict[str, Any]) -> str:
    messages = thread["messages"]
    title = messages[0]["subject"] if messages else thread_id
    blocks = "".join(message_block(m, project) for m in messages) or '<p class="empty">Nothing in this thread.</p>'
    body = f'<h1>{esc(title)} <span class="count">{len(messages)} messages</span></h1>{blocks}'
    return layout(title, body, live="mail", project=project)


def search_page(project: str, query: str, results: list[dict[str, Any]] | None) -> str:
    form = (f'<form method="get" action="{url(project, "search")}" class="search" role="search">'
            f'<input type="search" name="q" value="{esc(query)}" autofocus '
            'placeholder="subject:deploy body:&quot;multi word&quot; &quot;a phrase&quot; words">'
            '<button type="submit">Search</button></form>'
            '<p class="hint">Syntax: <code>subject:foo</code>, <code>body:"multi word"</code>, '
            '<code>"exact phrase"</code>, bare words (all must match), <code>OR</code>, <code>NOT</code>, '
            '<code>prefix*</code>.</p>')
    if results is None:
        listing = ""
    elif not results:
        listing = '<p class="empty">No matches.</p>'
    else:
        more = (f'<p class="meta">The {len(results)} best matches; narrow the query to see others.</p>'
                if len(results) >= 20 else "")
        listing = more + "<ol class=\"results\">" + "".join(
            f'<li><a href="{url(project, "message", r["id"])}">{snippet(r.get("subject_snippet")) or esc(r["subject"])}'
            f'</a>{badge(r["importance"])}<span class="meta">{esc(r["from"])} · {when(r["created_ts"])}</span>'
            f'<p class="snippet">{snippet(r.get("body_snippet"))}</p></li>' for r in results) + "</ol>"
    return layout(f"Search {project}", f"<h1>Search</h1>{form}{listing}", project=project)


def reservations_page(project: str, rows: list[dict[str, Any]], now: str) -> str:
    if not rows:
        table = '<p class="empty">No file reservations.</p>'
    else:
        items = []
        for r in rows:
            if r.get("released_ts"):
                state = "released"
            elif r.get("expired") or r["expires_ts"] <= now:
                state = "stale"
            else:
                state = "active"
            items.append(
                f'<tr class="{state}"><td>{esc(r["agent"])}</td><td><code>{esc(r["path_pattern"])}</code></td>'
                f'<td>{"exclusive" if r["exclusive"] else "shared"}</td><td>{esc(r.get("reason"))}</td>'
                f'<td>{when(r["expires_ts"])}</td><td><span class="state {state}">{state}</span></td></tr>')
        table = ("<table><thead><tr><th>Holder</th><th>Pattern</th><th>Mode</th><th>Reason</th><th>Expires</th>"
                 f"<th>State</th></tr></thead><tbody>{''.join(items)}</tbody></table>")
    return layout(f"Reservations {project}", f"<h1>File reservations</h1>{table}", live="reservations presence",
                  project=project)


def overdue_page(project: str, rows: list[dict[str, Any]], ttl: int) -> str:
    form = (f'<form method="get" class="inline">Older than <input type="number" name="ttl" min="0" value="{ttl}">'
            ' minutes <button type="submit">Show</button></form>')
    if not rows:
        table = '<p class="empty">Nobody owes an acknowledgement.</p>'
    else:
        table = ("<table><thead><tr><th>Waiting on</th><th>Message</th><th>From</th><th>Sent</th></tr></thead><tbody>"
                 + "".join(f'<tr><td><a href="{url(project, "inbox", r["recipient"])}">{esc(r["recipient"])}</a></td>'
                           f'<td><a href="{url(project, "message", r["id"])}">{esc(r["subject"])}</a></td>'
                           f'<td>{esc(r["from"])}</td><td>{when(r["created_ts"])}</td></tr>' for r in rows)
                 + "</tbody></table>")
    # An ack alone changes no counter: it shows up as its archive receipt (kind "archive").
    return layout(f"Ack overdue {project}", f"<h1>Acknowledgements overdue</h1>{form}{table}", live="mail read archive",
                  project=project)


def compose_page(project: str, agents: list[dict[str, Any]], csrf: str, error: str = "",
                 form: dict[str, Any] | None = None) -> str:
    form = form or {}
    chosen = set(form.get("to", []))
    boxes = "".join(
        f'<label class="pick"><input type="checkbox" name="to" value="{esc(a["name"])}"'
        f'{" checked" if a["name"] in chosen else ""}> {esc(a["name"])}</label>'
        for a in agents if a["name"] != "HumanOperator")
    err = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = (
        "<h1>Message the agents</h1>"
        '<p class="meta">Sent as <strong>HumanOperator</strong> with <em>high</em> importance. The agents are '
        "told to pause and put your instructions first.</p>" + err +
        f'<form method="post" action="{url(project, "compose")}" class="compose">{csrf_field(csrf)}'
        f'<fieldset><legend>To</legend>{boxes or "<em>No agents yet.</em>"}'
        f'<label class="pick all"><input type="checkbox" name="all" value="1"'
        f'{" checked" if form.get("all") else ""}> all agents of {esc(project)}</label></fieldset>'
        '<label>Subject <input type="text" name="subject" required maxlength="512" '
        f'value="{esc(form.get("subject", ""))}">'
        '</label><label>Message (markdown) <textarea name="body" rows="10" required>'
        f'{esc(form.get("body", ""))}</textarea></label><button type="submit">Send</button></form>')
    return layout(f"Compose {project}", body, project=project)


def archive_page(commits: list[dict[str, Any]]) -> str:
    if not commits:
        table = '<p class="empty">The archive has no commits yet.</p>'
    else:
        table = ("<table><thead><tr><th>Commit</th><th>Summary</th><th>Files</th><th>When</th></tr></thead><tbody>"
                 + "".join(f'<tr><td><a href="{url("archive", c["sha"])}"><code>{esc(c["short"])}</code></a></td>'
                           f'<td>{esc(c["summary"])}</td><td class="num">{c["files"]}</td>'
                           f'<td>{when(c["authored_ts"])}</td></tr>' for c in commits)
                 + "</tbody></table>")
    return layout("Archive", f"<h1>Archive commits</h1>{table}", live="archive")


def commit_page(c: dict[str, Any]) -> str:
    files = []
    for f in c["files"]:
        lines = []
        for line in f["diff"].splitlines():
            kind = "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx"
            lines.append(f'<span class="{kind}">{esc(line)}</span>')
        files.append(f'<section class="file"><h3><code>{esc(f["path"])}</code></h3>'
                     f'<pre class="diff">{"".join(lines)}</pre></section>')
    more = '<p class="meta">(diff truncated)</p>' if c["truncated"] else ""
    body = (f'<h1>{esc(c["summary"])}</h1><p class="meta"><code>{esc(c["sha"])}</code> · {esc(c["author"])} · '
            f'{when(c["authored_ts"])}</p>{"".join(files) or "<p class=empty>No markdown changes.</p>"}{more}')
    return layout(f"Commit {c['sha'][:12]}", body)


def login_page(reason: str = "") -> str:
    body = ("<h1>Sign in</h1>" + (f'<p class="error">{esc(reason)}</p>' if reason else "") +
            "<p>This mailbox needs a login link. On the machine that runs it, run</p>"
            "<pre>mailctl web</pre><p>and open the one-time URL it prints (it works once, for a few minutes).</p>")
    return layout("Sign in", body)


def error_page(status: int, message: str) -> str:
    return layout(f"Error {status}", f'<h1>{status}</h1><p class="error">{esc(message)}</p>')
