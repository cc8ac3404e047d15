"""The bundle's offline viewer: pre-rendered static HTML pages plus a chunked search index.

Pages: `index.html` (projects, agents, the first page of threads), `threads/NNNN.html` (paged thread
lists, newest activity first), `t/<aa>/<key>.html` (one page per thread, bodies rendered by the web
UI's sanitising markdown renderer). Search: `search/terms-<shard>.js` (term -> message ids, sharded
by the term's first two characters) and `search/meta-NNNN.js` (id -> subject, sender, date, page),
loaded lazily by `viewer/app.js` as script files — fetch() of local JSON is refused on file://,
script tags are not. No inline script or style anywhere, so the strict CSP holds.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from maild.share.output import Output
from maild.store.snapshot import Snapshot
from maild.web import render
from maild.web.render import esc, markdown

STATIC = Path(__file__).with_name("static")
THREADS_PER_PAGE = 100
META_PER_FILE = 2000
TERM = re.compile(r"[^\W_]{2,40}", re.UNICODE)
PARALLEL_FROM = 2000  # threads; below this, starting worker processes costs more than it saves
Placements = dict[str, dict[str, Any]]
ThreadItems = list[tuple[tuple[str, str], list[dict[str, Any]]]]
STATE = "viewer/threads.json"  # thread page -> digest of what it was rendered from (for `update`)
# Pages depend on this code and the renderer's: a change to either re-renders every thread.
CODE_DIGEST = hashlib.sha256(b"".join(Path(m).read_bytes() for m in (__file__, str(render.__file__)))).hexdigest()[:16]
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'")


def thread_file(slug: str, key: str) -> str:
    digest = hashlib.sha256(f"{slug}\0{key}".encode()).hexdigest()[:20]
    return f"t/{digest[:2]}/{digest}.html"


def shard_of(term: str) -> str:
    """The index file holding a term: its first two characters, hex-encoded (safe on any host)."""
    return term[:2].encode().hex()


def page(title: str, body: str, depth: int, *, search: bool = True) -> str:
    up = "../" * depth
    form = ('<form id="search" role="search"><input id="q" type="search" placeholder="Search all messages" '
            'aria-label="Search"><button type="submit">Search</button></form><ol id="results"></ol>'
            if search else "")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><link rel="stylesheet" href="{up}viewer/style.css"></head>'
            f'<body data-root="{up}"><header><a href="{up}index.html">Agent Mail bundle</a>{form}</header>'
            f'<main>{body}</main><script src="{up}viewer/app.js"></script></body></html>\n')


def write(snap: Snapshot, out: Output, placements: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Render every page and the search index into `out`; return counts for the manifest. When `out`
    updates a bundle, a thread page whose inputs did not change (same digest) is kept as it is."""
    for name in ("app.js", "style.css"):
        out.write(f"viewer/{name}", (STATIC / name).read_bytes())
    recipients = snap.recipients()
    threads: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    postings: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    metas: list[list[Any]] = []
    shards: dict[str, str] = {}  # a term's first two characters -> its shard (400k look-ups at 100k messages)
    for row in snap.messages():
        key = row["thread_id"] or f"msg:{row['id']}"
        row["to"] = recipients.get(row["id"], [])
        threads[(row["project_slug"], key)].append(row)
        target = thread_file(row["project_slug"], key)
        metas.append([row["id"], row["subject"], row["sender"], row["created_ts"], f"{target}#m{row['id']}"])
        for term in set(TERM.findall(f"{row['subject']} {row['body_md']} {row['sender']}".lower())):
            head = term[:2]
            shard = shards.get(head) or shards.setdefault(head, shard_of(head))
            postings[shard][term].append(row["id"])
    old = _old_state(out)
    state: dict[str, str] = {}
    stale: ThreadItems = []
    for item in threads.items():
        rel = thread_file(*item[0])
        state[rel] = _digest(item, placements)
        if old.get(rel) != state[rel] or not out.keep(rel):
            stale.append(item)
    _render_threads(out, stale, placements)
    first = ""
    ordered = sorted(threads.items(), key=lambda item: item[1][-1]["created_ts"], reverse=True)
    pages = max(1, -(-len(ordered) // THREADS_PER_PAGE))
    for number in range(pages):
        chunk = ordered[number * THREADS_PER_PAGE:(number + 1) * THREADS_PER_PAGE]
        listing = _thread_list(chunk, number, pages, depth=1)
        out.write(f"threads/{number + 1:04d}.html", page(f"Threads, page {number + 1}", listing, 1))
        if number == 0:
            first = _thread_list(chunk, number, pages, depth=0)
    out.write("index.html", page("Agent Mail bundle", _overview(snap) + first, 0))
    for shard, terms in postings.items():
        _script(out, f"search/terms-{shard}.js", "terms", shard, terms)
    for start in range(0, len(metas), META_PER_FILE):
        _script(out, f"search/meta-{start // META_PER_FILE:04d}.js", "meta", start // META_PER_FILE,
                metas[start:start + META_PER_FILE])
    out.write("search/config.js", "window.mailIndex.config("
              + json.dumps({"meta_per_file": META_PER_FILE, "messages": len(metas),
                            "ids": [m[0] for m in metas[::META_PER_FILE]]}) + ");\n")
    out.write(STATE, json.dumps({"code": CODE_DIGEST, "threads": state}, separators=(",", ":")))
    return {"threads": len(threads), "messages": len(metas), "thread_pages": pages,
            "index_shards": len(postings), "meta_files": -(-len(metas) // META_PER_FILE),
            "threads_rendered": len(stale)}


def _old_state(out: Output) -> dict[str, str]:
    """The digests the previous bundle's pages were made from, if it is intact and by this code."""
    if not out.previous or not out.previous.get(STATE):
        return {}
    path = out.root / STATE
    try:
        raw = path.read_bytes()
        value = json.loads(raw)
    except (OSError, ValueError):
        return {}
    if hashlib.sha256(raw).hexdigest() != out.previous[STATE] or not isinstance(value, dict):
        return {}
    threads = value.get("threads")
    return threads if value.get("code") == CODE_DIGEST and isinstance(threads, dict) else {}


def _digest(item: tuple[tuple[str, str], list[dict[str, Any]]], placements: Placements) -> str:
    """Everything a thread page is made from: its messages (recipients included) and attachments."""
    (slug, key), rows = item
    used = sorted({str(a.get("sha256")) for row in rows for a in json.loads(row["attachments"] or "[]")})
    text = json.dumps([slug, key, rows, [placements.get(sha) for sha in used]], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _render_threads(out: Output, items: ThreadItems, placements: Placements) -> None:
    """Thread pages: rendering costs ~0.2-1 ms a message, so big exports use every core."""
    workers = min(os.cpu_count() or 1, 8)
    if len(items) < PARALLEL_FROM or workers < 2:
        out.record(*_render_batch(str(out.root), items, placements))
        return
    size = -(-len(items) // (workers * 4))
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    # spawn, not fork: the parent holds an apsw connection and threads; workers need neither.
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_render_batch, str(out.root), batch, _used(batch, placements)) for batch in batches]
        for job in jobs:
            out.record(*job.result())


def _used(batch: ThreadItems, placements: Placements) -> Placements:
    shas = {str(a.get("sha256")) for _key, rows in batch for row in rows
            for a in json.loads(row["attachments"] or "[]")}
    return {sha: placements[sha] for sha in shas if sha in placements}


def _render_batch(root: str, batch: ThreadItems, placements: Placements) -> tuple[dict[str, str], int, int]:
    # Only stale or new pages come here, so each is written (no previous state to compare with).
    local = Output(Path(root))
    for (slug, key), rows in batch:
        local.write(thread_file(slug, key), _thread_page(slug, key, rows, placements))
    return local.files, local.written, local.unchanged


def _script(out: Output, rel: str, kind: str, name: object, value: Any) -> None:
    # JSON inside a script: "</" and U+2028/9 escaped so no message text can end the script early.
    # Keys sorted: a shard's bytes must not depend on set order, or every update rewrites it.
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=True).replace("</", "<\\/")
    out.write(rel, f"window.mailIndex.{kind}({json.dumps(name)},{text});\n")


def _overview(snap: Snapshot) -> str:
    agents: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for agent in snap.agents():
        agents[agent["project_slug"]].append(agent)
    parts = ['<section id="projects"><h1>Projects</h1>']
    for project in snap.projects():
        names = ", ".join(f'<span class="agent">{esc(a["name"])}</span>' for a in agents[project["slug"]])
        parts.append(f'<article class="project"><h2>{esc(project["slug"])}</h2>'
                     f'<p class="key">{esc(project["human_key"])}</p><p>Agents: {names or "none"}</p></article>')
    parts.append("</section>")
    return "".join(parts)


def _thread_list(chunk: list[tuple[tuple[str, str], list[dict[str, Any]]]], number: int, pages: int,
                 depth: int) -> str:
    up = "../" * depth
    items = []
    for (slug, key), rows in chunk:
        last = rows[-1]
        items.append(f'<li><a class="thread" href="{up}{thread_file(slug, key)}">{esc(rows[0]["subject"])}</a> '
                     f'<span class="meta">{esc(slug)} · {len(rows)} message{"s" if len(rows) != 1 else ""} · '
                     f'{esc(last["sender"])} · {esc(last["created_ts"][:16].replace("T", " "))}</span></li>')
    nav = []
    if number > 0:
        nav.append(f'<a rel="prev" href="{up}threads/{number:04d}.html">Newer</a>')
    nav.append(f"<span>page {number + 1} of {pages}</span>")
    if number + 1 < pages:
        nav.append(f'<a rel="next" href="{up}threads/{number + 2:04d}.html">Older</a>')
    return (f'<section id="threads"><h1>Threads</h1><ol class="threads">{"".join(items)}</ol>'
            f'<nav class="pager">{" ".join(nav)}</nav></section>')


def _thread_page(slug: str, key: str, rows: list[dict[str, Any]], placements: dict[str, dict[str, Any]]) -> str:
    parts = [f'<h1 class="subject">{esc(rows[0]["subject"])}</h1><p class="meta">{esc(slug)} · thread {esc(key)}</p>']
    for row in rows:
        to = ", ".join(f'{esc(r["name"])}{" (cc)" if r["kind"] == "cc" else ""}' for r in row["to"])
        parts.append(f'<article class="message" id="m{row["id"]}"><h2>{esc(row["subject"])}</h2>'
                     f'<p class="meta">{esc(row["sender"])} → {to or "—"} · {esc(row["created_ts"])} · '
                     f'{esc(row["importance"])}</p><div class="body">{markdown(row["body_md"])}</div>'
                     f'{_attachments(json.loads(row["attachments"] or "[]"), placements)}</article>')
    return page(rows[0]["subject"], "".join(parts), 2)  # t/<aa>/<key>.html


def _attachments(atts: list[dict[str, Any]], placements: dict[str, dict[str, Any]]) -> str:
    if not atts:
        return ""
    items = []
    for meta in atts:
        place = placements.get(str(meta.get("sha256")), {})
        if not place and meta.get("data_base64"):
            place = {"mode": "inline"}  # an image the sender inlined: its bytes are in the metadata
        name = esc(meta.get("name") or meta.get("sha256") or "attachment")
        mode = place.get("mode", "missing")
        size = f' <span class="meta">{esc(place.get("bytes", meta.get("bytes", "")))} bytes, {esc(mode)}</span>'
        if mode == "copied":
            items.append(f'<li><a href="../../{esc(place["path"])}">{name}</a>{size}</li>')
        elif mode == "inline" and (place.get("data_uri") or meta.get("data_base64")):
            uri = place.get("data_uri") or f'data:{meta.get("media_type", "")};base64,{meta["data_base64"]}'
            if str(meta.get("media_type", "")).startswith("image/"):
                items.append(f'<li><img alt="{name}" src="{esc(uri)}"> {name}{size}</li>')
            else:
                items.append(f'<li><a download="{name}" href="{esc(uri)}">{name}</a>{size}</li>')
        else:
            items.append(f"<li>{name}{size}</li>")
    return f'<ul class="attachments">{"".join(items)}</ul>'
