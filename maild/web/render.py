"""Turning agents' text into safe HTML: markdown via markdown-it-py, then bleach's allow-list.

Raw HTML in markdown is not parsed as HTML (markdown-it escapes it), and whatever the renderer
emits still goes through bleach: a short list of tags and attributes, links only to http(s) and
mailto, images only from our own origin (no remote origins: the CSP forbids them anyway). `esc`
escapes plain text for templates; `snippet` keeps only the search snippets' <mark> tags.
"""

from __future__ import annotations

import html
from functools import lru_cache

import bleach
from markdown_it import MarkdownIt

TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "img", "table", "thead", "tbody", "tr", "th", "td",
})
ATTRIBUTES = {"a": ["href", "title"], "img": ["src", "alt", "title"],
              "ol": ["start"]}
PROTOCOLS = frozenset({"http", "https", "mailto"})

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_md.enable("strikethrough")
_cleaner = bleach.Cleaner(tags=TAGS, attributes=ATTRIBUTES, protocols=PROTOCOLS, strip=True,
                          strip_comments=True)


def _safe_img(html_text: str) -> str:
    # bleach allows <img src="https://..."> by protocol; a remote image would leak that the page was
    # read (and the CSP blocks it anyway). Keep only same-origin (relative) images.
    if "<img" not in html_text:
        return html_text
    cleaner = bleach.Cleaner(tags=TAGS, attributes={**ATTRIBUTES, "img": _img_attr}, protocols=PROTOCOLS,
                             strip=True, strip_comments=True)
    return str(cleaner.clean(html_text))


def _img_attr(_tag: str, name: str, value: str) -> bool:
    if name == "src":
        return value.startswith("/") and not value.startswith("//")
    return name in ("alt", "title")


@lru_cache(maxsize=2048)
def markdown(text: str) -> str:
    """Sanitised HTML for a message body (cached: threads are re-rendered on every live update)."""
    return _safe_img(str(_cleaner.clean(_md.render(text))))


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def snippet(text: str | None) -> str:
    """A search snippet (raw text with <mark> … </mark> around hits) as safe HTML."""
    return esc(text or "").replace("&lt;mark&gt;", "<mark>").replace("&lt;/mark&gt;", "</mark>")
